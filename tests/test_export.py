"""ONNX export and int8 quantization, checked against the PyTorch model."""

import json
import subprocess
import sys

import pytest
import torch

pytest.importorskip("onnxruntime")

from textdistill.config import DataConfig  # noqa: E402
from textdistill.data import DistillDataset, LabelSet, read_file, tokenize  # noqa: E402
from textdistill.export import export_student  # noqa: E402
from textdistill.models import load_classifier  # noqa: E402


@pytest.fixture(scope="module")
def dev_slice(tiny_bert, sst2_dir):
    model, tok, labels = load_classifier(tiny_bert, LabelSet(("0", "1")), "teacher", require_trained_head=True)
    data = read_file(sst2_dir / "dev.tsv", DataConfig(train_file="x", validation_file="x")).head(96)
    return model, tok, DistillDataset(tokenize(tok, data, 64), labels.encode(data))


def test_export_matches_pytorch(dev_slice, tmp_path):
    model, tok, ds = dev_slice
    impl = model.config._attn_implementation
    forms = export_student(model, ds, tok.pad_token_id, tmp_path, "accuracy", repeats=3)
    assert model.config._attn_implementation == impl  # exported with eager attention, then given back its own
    assert list(forms) == ["pytorch fp32", "pytorch fp32 cut", "onnx fp32", "onnx int8"]
    assert (tmp_path / "model.onnx").is_file() and (tmp_path / "model.int8.onnx").is_file()
    assert forms["pytorch fp32"]["max_abs_logit_diff"] == 0.0
    assert forms["pytorch fp32 cut"]["max_abs_logit_diff"] < 1e-5  # the last layer for [CLS] alone, as exported
    assert forms["onnx fp32"]["max_abs_logit_diff"] < 1e-4
    assert forms["onnx fp32"]["metrics"] == forms["pytorch fp32"]["metrics"]
    assert forms["onnx int8"]["size_bytes"] < forms["onnx fp32"]["size_bytes"]
    assert forms["onnx int8"]["max_abs_logit_diff"] < 0.5
    assert forms["onnx int8"]["throughput_batch32"] > 0


def test_textcnn_student_exports(sst2_dir, tmp_path):
    from textdistill.students import TextCNNConfig, TextCNNForSequenceClassification, build_word_tokenizer

    data = read_file(sst2_dir / "dev.tsv", DataConfig(train_file="x", validation_file="x")).head(64)
    tok = build_word_tokenizer(data.texts)
    torch.manual_seed(0)
    model = TextCNNForSequenceClassification(
        TextCNNConfig(vocab_size=len(tok), embedding_dim=16, num_filters=4, num_labels=2)
    )
    ds = DistillDataset(tokenize(tok, data, 64), LabelSet(("0", "1")).encode(data))
    forms = export_student(model, ds, tok.pad_token_id, tmp_path, "accuracy", repeats=2)
    assert forms["onnx fp32"]["max_abs_logit_diff"] < 1e-4


def test_bilstm_student_on_a_bert_tokenizer_exports(dev_slice, tmp_path):
    """A BiLSTM never reads token_type_ids, so the exporter drops that input: the ONNX session must be fed only the
    graph's own inputs (this raised "Invalid input name: token_type_ids" before). Padded batches take the packed
    path."""
    from textdistill.students import BiLSTMConfig, BiLSTMForSequenceClassification

    _, tok, plain = dev_slice
    # as a BERT tokenizer that returns segment ids gives them (the real MiniLM teacher's does)
    ds = DistillDataset([{**f, "token_type_ids": [0] * len(f["input_ids"])} for f in plain.student], plain.labels)
    torch.manual_seed(0)
    config = BiLSTMConfig(
        vocab_size=len(tok), embedding_dim=16, hidden_size=8, num_labels=2, pad_token_id=tok.pad_token_id
    )
    forms = export_student(
        BiLSTMForSequenceClassification(config), ds, tok.pad_token_id, tmp_path, "accuracy", repeats=2
    )
    assert forms["onnx fp32"]["max_abs_logit_diff"] < 1e-4
    assert forms["onnx fp32"]["metrics"] == forms["pytorch fp32"]["metrics"]
    assert forms["onnx int8"]["max_abs_logit_diff"] < 0.5


def test_cli_export(tiny_bert, sst2_dir, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"data:\n  train_file: {sst2_dir / 'train.tsv'}\n  validation_file: {sst2_dir / 'dev.tsv'}\n"
        "  max_eval_samples: 64\neval:\n  latency_repeats: 2\n"
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "textdistill",
            "export",
            tiny_bert,
            "-c",
            str(cfg),
            "-o",
            str(tmp_path / "onnx"),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert result["forms"]["onnx fp32"]["max_abs_logit_diff"] < 1e-4
    assert (tmp_path / "onnx" / "tokenizer.json").is_file()


def _intermediate_shapes(path, feed):
    """The runtime shapes of every feed-forward block's first product (``.../intermediate/dense/MatMul``)."""
    import onnx
    import onnxruntime as ort

    graph = onnx.load(str(path))
    names = [n.output[0] for n in graph.graph.node if n.op_type == "MatMul" and "intermediate/dense" in n.name]
    graph.graph.output.extend(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in names)
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    return [o.shape for o in session.run(names, {k: v.numpy() for k, v in feed.items()})]


@pytest.mark.parametrize("kind", ["bert", "mpnet"])
def test_export_computes_the_last_layer_for_cls_alone(tmp_path, kind):
    """The exported graph returns logits alone, so a BERT classifier's last layer runs for [CLS] alone (its
    feed-forward block sees one position, the layer before sees them all) and the logits still match the full
    PyTorch model on padded rows of different lengths. Export leaves the model in eval mode (it was left training:
    the exporter restored the mode of a fresh wrapper module, dropout on)."""
    from transformers import BertConfig, BertForSequenceClassification, MPNetConfig, MPNetForSequenceClassification

    from textdistill.data import pad_features
    from textdistill.export import export_onnx, onnx_forward

    torch.manual_seed(0)
    config_class, model_class = {
        "bert": (BertConfig, BertForSequenceClassification),
        "mpnet": (MPNetConfig, MPNetForSequenceClassification),
    }[kind]
    config = config_class(
        num_hidden_layers=2,
        hidden_size=64,
        num_attention_heads=4,
        intermediate_size=96,
        num_labels=3,
        vocab_size=500,
        pad_token_id=0,
    )
    model = model_class(config).eval()
    feats = [{"input_ids": [101, *range(200, 200 + n), 102], "token_type_ids": [0] * (n + 2)} for n in (3, 9, 14, 6)]
    if kind == "mpnet":  # no segment ids
        feats = [{"input_ids": f["input_ids"]} for f in feats]
    inputs = pad_features(feats, 0)
    with torch.no_grad():
        full = model(**inputs).logits
    path = export_onnx(model, feats, tmp_path / "model.onnx", 0)
    assert not model.training
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, full)
    got = onnx_forward(path, list(inputs))(inputs)
    assert (got - full).abs().max() < 1e-5
    feed = dict(inputs)
    assert _intermediate_shapes(path, feed) == [(4, 16, 96), (4, 1, 96)]


def test_export_times_the_forms_in_turns_and_reports_medians(dev_slice, tmp_path, monkeypatch):
    """Speeds are timed side by side: each round times every form, in a rotated order, and a form's figure is the
    median of its rounds."""
    import textdistill.export as export_module

    model, tok, ds = dev_slice
    calls = iter(range(1, 13))

    def fake_speed(forward, features, pad, repeats):  # a form's rate is the number of the call that timed it
        rate = float(next(calls))
        return {"latency_ms_batch1": 1000 / rate, "throughput_batch32": rate, "threads": 2}

    monkeypatch.setattr(export_module, "measure_speed", fake_speed)
    forms = export_student(model, ds, tok.pad_token_id, tmp_path, "accuracy", repeats=1)
    # rounds (pytorch, cut, onnx fp32, int8), (cut, fp32, int8, pytorch), (fp32, int8, pytorch, cut): calls 1-12
    assert forms["pytorch fp32"]["throughput_batch32"] == 8.0  # calls 1, 8, 11
    assert forms["pytorch fp32 cut"]["throughput_batch32"] == 5.0  # calls 2, 5, 12
    assert forms["onnx fp32"]["throughput_batch32"] == 6.0  # calls 3, 6, 9
    assert forms["onnx int8"]["throughput_batch32"] == 7.0  # calls 4, 7, 10
    assert forms["onnx int8"]["throughput_vs_pytorch"] == pytest.approx(7 / 8)
    assert next(calls, None) is None  # no other call


def test_export_keeps_the_tracer_quiet_and_the_callers_filters(tmp_path, caplog):
    """The tracer's warnings (a tensor converted to a Python value, ...) and ONNX Runtime's pre-processing hint are
    dropped for the export alone: a warning after it still shows, and the caller's warning filters and the root
    logger come back as they were."""
    import logging
    import warnings

    from transformers import BertConfig, BertForSequenceClassification

    from textdistill.export import export_onnx, quantize_int8

    torch.manual_seed(0)
    config = BertConfig(
        num_hidden_layers=2, hidden_size=32, num_attention_heads=2, intermediate_size=64, num_labels=3, vocab_size=300
    )
    model = BertForSequenceClassification(config).eval()
    feats = [{"input_ids": [101, *range(200, 200 + n), 102], "token_type_ids": [0] * (n + 2)} for n in (3, 9)]
    filters, root_filters = list(warnings.filters), list(logging.getLogger().filters)
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.INFO):
        warnings.simplefilter("always")
        path = export_onnx(model, feats, tmp_path / "model.onnx", 0)
        quantize_int8(path, tmp_path / "model.int8.onnx")
        warnings.warn("after the export", UserWarning)
    assert [str(w.message) for w in caught] == ["after the export"]
    assert not [r for r in caplog.records if "pre-processing before quantization" in r.getMessage()]
    assert warnings.filters == filters and logging.getLogger().filters == root_filters
    assert (tmp_path / "model.int8.onnx").is_file()


def test_cli_export_table_lines_up_for_any_form_name(capsys):
    from textdistill.cli import _print_result

    def form(score: float, size: int | None, rate: float) -> dict:
        return {
            "metrics": {"accuracy": 0.9, "macro_f1": score},
            "metric_diff_points": 100 * (score - 0.5),
            "max_abs_logit_diff": 3.7e-9,
            "size_bytes": size,
            "latency_ms_batch1": 1.234,
            "throughput_batch32": rate,
            "throughput_vs_pytorch": rate / 100,
        }

    forms = {
        "pytorch fp32": form(0.5, None, 100.0),
        "pytorch fp32 cut": form(0.5, None, 107.0),
        "onnx int8 (a much longer form name)": form(0.49, 300_000, 1234.0),
    }
    _print_result("export", {"metric": "macro_f1", "forms": forms, "output_dir": "out"}, False)
    lines = capsys.readouterr().out.splitlines()
    table = [line for line in lines if line.startswith("|")]
    assert len(table) == 2 + len(forms) and lines[-1] == "run folder: out"
    assert len({tuple(i for i, c in enumerate(line) if c == "|") for line in table}) == 1  # every column lines up
    cells = [[c.strip() for c in line.split("|")[1:-1]] for line in table]
    assert cells[0][:3] == ["form", "macro_f1", "diff (pts)"]  # the metric the differences are of
    assert cells[3] == ["pytorch fp32 cut", "50.00", "+0.00", "3.7e-09", "-", "1.23", "107", "1.07x"]
    assert cells[4][:2] == ["onnx int8 (a much longer form name)", "49.00"] and cells[4][4] == "0.3"
