"""Token-level distillation (NER) and multi-label classification: losses against hand computations, readers,
alignment and truncation, metrics against seqeval / scikit-learn, and runs end to end through the CLI on tiny models
over real CoNLL-2003 sentences."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import make_tiny_bert

import textdistill
from textdistill.config import DataConfig, data_dir, load_config
from textdistill.data import Collator, LabelSet, TextData, collate_labels, read_file, tokenize_words
from textdistill.errors import TextDistillError
from textdistill.losses import IGNORE_INDEX, binary_kd_loss, distillation_loss, hard_label_loss
from textdistill.metrics import multi_label_metrics, token_metrics

CONLL = Path(data_dir()) / "conll2003"
TAGS = ("O", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "B-ORG", "I-ORG", "B-PER", "I-PER")


def require_conll() -> Path:
    if not (CONLL / "iob2" / "eng.train").is_file():
        pytest.skip(f"shared CoNLL-2003 data not found at {CONLL}")
    return CONLL


# --------------------------------------------------------------------------------------------------------------------
# Losses


def test_masked_token_kd_matches_a_hand_computation() -> None:
    """Two sentences, four positions; only the labelled positions count (padding and later word pieces masked)."""
    torch.manual_seed(0)
    s, t = torch.randn(2, 4, 3), torch.randn(2, 4, 3)
    labels = torch.tensor([[IGNORE_INDEX, 1, IGNORE_INDEX, 2], [IGNORE_INDEX, 0, IGNORE_INDEX, IGNORE_INDEX]])
    temperature, alpha = 2.0, 0.7
    kl_terms, ce_terms = [], []
    for b, i in [(0, 1), (0, 3), (1, 1)]:  # the labelled positions, by hand
        p = [math.exp(x / temperature) for x in t[b, i].tolist()]
        q = [math.exp(x / temperature) for x in s[b, i].tolist()]
        p = [x / sum(p) for x in p]
        q = [x / sum(q) for x in q]
        kl_terms.append(sum(pi * math.log(pi / qi) for pi, qi in zip(p, q)))
        logq1 = s[b, i].tolist()
        lse = math.log(sum(math.exp(x) for x in logq1))
        ce_terms.append(lse - logq1[int(labels[b, i])])
    kd = temperature**2 * sum(kl_terms) / 3
    ce = sum(ce_terms) / 3
    terms = distillation_loss(s, t, labels, temperature=temperature, alpha=alpha)
    assert terms["kd"].item() == pytest.approx(kd, rel=1e-5)
    assert terms["ce"].item() == pytest.approx(ce, rel=1e-5)
    assert terms["loss"].item() == pytest.approx(alpha * kd + (1 - alpha) * ce, rel=1e-5)
    # the masked positions do not matter at all: change them and nothing moves
    s2, t2 = s.clone(), t.clone()
    s2[0, 0] += 100.0
    t2[1, 2] -= 50.0
    again = distillation_loss(s2, t2, labels, temperature=temperature, alpha=alpha)
    assert again["loss"].item() == pytest.approx(terms["loss"].item(), rel=1e-6)


def test_binary_kd_closed_form_and_zero_at_agreement() -> None:
    s, t = torch.tensor([[0.5, -2.0, 3.0]]), torch.tensor([[1.0, -1.0, 0.0]])
    temperature = 2.0
    expected = 0.0
    for si, ti in zip(s[0].tolist(), t[0].tolist()):
        p, q = 1 / (1 + math.exp(-ti / temperature)), 1 / (1 + math.exp(-si / temperature))
        expected += p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))
    expected = temperature**2 * expected / 3
    assert binary_kd_loss(s, t, temperature).item() == pytest.approx(expected, rel=1e-5)
    assert binary_kd_loss(t, t, temperature).item() == pytest.approx(0.0, abs=1e-6)
    assert torch.isfinite(binary_kd_loss(torch.tensor([[200.0]]), torch.tensor([[-200.0]]), 1.0))


def test_multi_label_terms_are_binary() -> None:
    s, t = torch.tensor([[0.5, -2.0], [1.0, 1.0]]), torch.tensor([[1.0, -1.0], [0.0, 2.0]])
    gold = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    terms = distillation_loss(s, t, gold, temperature=2.0, alpha=0.6)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(s, gold)
    assert terms["ce"].item() == pytest.approx(bce.item(), rel=1e-6)
    assert terms["kd"].item() == pytest.approx(binary_kd_loss(s, t, 2.0).item(), rel=1e-6)
    assert hard_label_loss(s, gold).item() == pytest.approx(bce.item(), rel=1e-6)
    # a regression batch (scores [B] against logits [B, 1]) is still MSE, not multi-label
    assert hard_label_loss(torch.tensor([[1.0], [2.0]]), torch.tensor([0.0, 2.0])).item() == pytest.approx(0.5)


# --------------------------------------------------------------------------------------------------------------------
# Data


def _conll_config(folder: Path, **extra) -> DataConfig:
    return DataConfig(
        task_type="token_classification",
        format="conll",
        train_file=str(folder / "eng.train"),
        validation_file=str(folder / "eng.testa"),
        **extra,
    )


def test_conll_reads_through_the_data_config_and_bad_tags_name_their_line(write) -> None:
    folder = require_conll() / "iob1"
    cfg = _conll_config(folder, tag_scheme="iob1")
    train = read_file(folder / "eng.train", cfg)
    assert len(train) == 14041 and train.words is not None
    labels = LabelSet.from_data(train, "token_classification")
    assert labels.names == TAGS
    ids = labels.encode(train)
    assert [labels.names[i] for i in ids[0]] == train.labels[0] and len(ids[0]) == len(train.words[0])
    # a dev tag the training tags lack: named with its own file line
    bad = write("dev.txt", "Peter B-PER\nsaid O\nhello B-GREETING\n")
    dev = read_file(bad, cfg.model_copy(update={"tag_scheme": "iob2"}))
    with pytest.raises(TextDistillError, match=r"dev.txt:3: tag 'B-GREETING' is not among the training tags"):
        labels.encode(dev)


def test_token_config_errors() -> None:
    with pytest.raises(ValueError, match="token_classification reads CoNLL files: set format: conll"):
        DataConfig(task_type="token_classification", train_file="a", validation_file="b")
    with pytest.raises(ValueError, match="set task_type: token_classification"):
        DataConfig(format="conll", train_file="a", validation_file="b")


def test_word_tokens_align_and_truncation_warns_with_a_count(tiny_bert: str) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_bert)
    words = [["Peter", "Blair", "visited", "Washingtonians"], ["the", "film"]]
    tags = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "O"]]
    data = TextData([" ".join(w) for w in words], tags, source="x.conll", rows=[1, 6], words=words)
    labels = LabelSet(TAGS, "token_classification")
    ids = labels.encode(data)
    out = tokenize_words(tok, data, ids, labels.names, max_length=64)
    for feats, lab, sent in zip(out.features, out.labels, ids):
        assert len(lab) == len(feats["input_ids"]) and lab[0] == lab[-1] == IGNORE_INDEX
        assert [x for x in lab if x != IGNORE_INDEX] == sent  # one labelled piece per word, in order
    assert out.dropped == [[], []]
    with pytest.warns(
        UserWarning,
        match=r"x.conll: 1 of 2 sentences are longer than max_length=5 tokens .* words "
        r"cut, the first at line 1",
    ):
        cut = tokenize_words(tok, data, ids, labels.names, max_length=5)
    kept = [x for x in cut.labels[0] if x != IGNORE_INDEX]
    assert kept + cut.dropped[0] == ids[0] and cut.dropped[0]
    # a batch pads tags with IGNORE_INDEX to the batch's token length
    batch = Collator(0)([{"student": f, "labels": lab} for f, lab in zip(out.features, out.labels)])
    assert batch["labels"].shape == batch["student"]["input_ids"].shape
    assert (batch["labels"][batch["student"]["attention_mask"] == 0] == IGNORE_INDEX).all()


def test_multi_label_readers(write) -> None:
    tsv = write("m.tsv", "text\tlabel\nEU and Peter\tORG,PER\nnothing here\t\nParis\tLOC\n")
    cfg = DataConfig(task_type="multi_label", train_file=str(tsv), validation_file=str(tsv))
    data = read_file(tsv, cfg)
    assert data.labels == [["ORG", "PER"], [], ["LOC"]]
    labels = LabelSet.from_data(data, "multi_label")
    assert labels.names == ("LOC", "ORG", "PER")
    assert labels.encode(data) == [[0.0, 1.0, 1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]
    assert collate_labels(labels.encode(data), 0).dtype == torch.float32
    jsonl = write("m.jsonl", '{"text": "EU", "label": ["ORG"]}\n{"text": "x", "label": "ORG"}\n')
    with pytest.raises(TextDistillError, match=r"m.jsonl:2: 'label' must be a list of label names"):
        read_file(jsonl, cfg.model_copy(update={"train_file": str(jsonl)}))


# --------------------------------------------------------------------------------------------------------------------
# Metrics


def test_token_metrics_match_seqeval_and_count_cut_words_as_missed() -> None:
    from seqeval.metrics import classification_report

    names = list(TAGS)
    idx = {t: i for i, t in enumerate(names)}
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O", "B-MISC", "I-MISC"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG"], ["I-ORG", "O", "B-MISC", "O"]]
    # logits at each word's first piece; the other pieces are IGNORE_INDEX and must not be read
    labels, logits = [], torch.zeros(2, 10, len(names))
    for i, (g, p) in enumerate(zip(gold, pred)):
        lab = [IGNORE_INDEX]
        for j, (gt, pt) in enumerate(zip(g, p)):
            logits[i, len(lab), idx[pt]] = 5.0
            lab += [idx[gt], IGNORE_INDEX]
        labels.append(lab + [IGNORE_INDEX])
    ours = token_metrics(logits, labels, names)
    ref = classification_report(gold, pred, output_dict=True, zero_division=0)
    assert ours["entity_f1"] == pytest.approx(ref["micro avg"]["f1-score"])
    assert ours["entity_precision"] == pytest.approx(ref["micro avg"]["precision"])
    for kind in ("LOC", "MISC", "ORG", "PER"):
        assert ours[f"f1_{kind}"] == pytest.approx(ref[kind]["f1-score"]), kind
    assert ours["token_accuracy"] == pytest.approx(5 / 8)
    # a sentence cut by truncation: its lost words are gold entities the model did not find
    cut = token_metrics(logits, labels, names, dropped=[[idx["B-PER"]], []])
    ref_cut = classification_report(
        [gold[0] + ["B-PER"], gold[1]], [pred[0] + ["O"], pred[1]], output_dict=True, zero_division=0
    )
    assert (
        cut["entity_recall"] == pytest.approx(ref_cut["micro avg"]["recall"])
        and cut["entity_recall"] < ours["entity_recall"]
    )


def test_multi_label_metrics_match_scikit_learn() -> None:
    from sklearn.metrics import accuracy_score, f1_score

    torch.manual_seed(1)
    logits = torch.randn(50, 4)
    gold = (torch.rand(50, 4) > 0.6).float()
    ours = multi_label_metrics(logits, gold)
    pred = (logits > 0).int().numpy()
    assert ours["micro_f1"] == pytest.approx(f1_score(gold.int().numpy(), pred, average="micro"))
    assert ours["macro_f1"] == pytest.approx(f1_score(gold.int().numpy(), pred, average="macro", zero_division=0))
    assert ours["subset_accuracy"] == pytest.approx(accuracy_score(gold.int().numpy(), pred))


# --------------------------------------------------------------------------------------------------------------------
# End to end (tiny models, real CoNLL sentences)


def _fast() -> dict:
    return {"num_train_epochs": 2, "per_device_train_batch_size": 16, "learning_rate": 2e-3, "logging_steps": 5}


def ner_config(teacher: str, out: Path, **student) -> dict:
    folder = require_conll() / "iob2"
    return {
        "output_dir": str(out),
        "seed": 3,
        "data": {
            "task_type": "token_classification",
            "format": "conll",
            "train_file": str(folder / "eng.train"),
            "validation_file": str(folder / "eng.testa"),
            "test_file": str(folder / "eng.testb"),
            "max_length": 64,
            "max_train_samples": 300,
            "max_eval_samples": 120,
        },
        "teacher": {"model": teacher, "finetune": True, "training": _fast()},
        "student": {**(student or {"layers": [0, 3]}), "training": _fast()},
        "distill": {"temperature": 2.0, "alpha": 0.8},
        "eval": {"latency_repeats": 2, "latency_samples": 16},
    }


@pytest.fixture(scope="module")
def ner_run(tiny_bert: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ner") / "run"
    cfg = tmp_path_factory.mktemp("ner-cfg") / "ner.yaml"
    import yaml

    cfg.write_text(yaml.safe_dump(ner_config(tiny_bert, out)), encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "textdistill", "distill", "-c", str(cfg)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Entity F1 per type" in proc.stdout and "Held-out test" in proc.stdout
    return out


def test_ner_distillation_through_the_cli(ner_run: Path) -> None:
    from transformers import AutoModelForTokenClassification

    metrics = json.loads((ner_run / "metrics.json").read_text())
    assert metrics["metric"] == "entity_f1" and metrics["data"]["task_type"] == "token_classification"
    for side in ("teacher", "student", "baseline"):
        m = metrics[side]["metrics"]
        assert {"entity_f1", "entity_precision", "entity_recall", "token_accuracy"} <= m.keys()
        assert 0.0 <= m["entity_f1"] <= 1.0 and m["token_accuracy"] > 0.5  # "O" alone is ~83% of CoNLL tokens
        assert 0.0 <= metrics[side]["test_metrics"]["entity_f1"] <= 1.0
    student = AutoModelForTokenClassification.from_pretrained(ner_run / "student")
    assert (
        student.config.num_hidden_layers == 2
        and student.config.id2label[0] == "O"
        and len(student.config.id2label) == 9
    )
    steps = [json.loads(line) for line in (ner_run / "logs/student.jsonl").read_text().splitlines()]
    losses = [s for s in steps if "kd" in s]
    assert losses and all(s["loss"] == pytest.approx(0.8 * s["kd"] + 0.2 * s["ce"], rel=1e-4) for s in losses)
    card = (ner_run / "student" / "README.md").read_text()
    assert "pipeline_tag: token-classification" in card and "AutoModelForTokenClassification" in card
    # a saved tagger scores again through `textdistill evaluate`: the same dev numbers
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "textdistill",
            "evaluate",
            str(ner_run / "student"),
            "-c",
            str(ner_run / "config.yaml"),
            "--no-speed",
            "--json",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    again = json.loads(proc.stdout)["metrics"]
    assert again["entity_f1"] == pytest.approx(metrics["student"]["metrics"]["entity_f1"], abs=1e-9)


def test_predict_entity_spans(ner_run: Path) -> None:
    from textdistill.multitask import predict

    text = "Peter Blair flew to Washington on Monday ."
    out = predict(ner_run / "teacher", None, [text])
    assert isinstance(out[0], list)
    for e in out[0]:
        assert (
            text[e["start"] : e["end"]] == e["text"]
            and e["type"] in {"LOC", "MISC", "ORG", "PER"}
            and 0 < e["score"] <= 1
        )
    proc = subprocess.run(
        [sys.executable, "-m", "textdistill", "predict", str(ner_run / "student"), "--json", text],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)[0]["text"] == text


def test_a_student_with_another_tokenizer_is_refused_then_learns_pseudo_labels(tiny_bert: str, tmp_path: Path) -> None:
    folder = require_conll() / "iob2"
    lines = (folder / "eng.train").read_text(encoding="utf-8").splitlines()[:4000]
    other = make_tiny_bert(
        tmp_path / "cased", [" ".join(x.split()[:1]) for x in lines if x.strip()], 600, lowercase=False
    )
    cfg = ner_config(tiny_bert, tmp_path / "run", model=other)
    with pytest.raises(
        TextDistillError, match="token-level distillation needs the student to tokenize like the teacher"
    ):
        textdistill.distill(cfg)
    assert not (tmp_path / "run").exists()
    cfg["distill"]["token_targets"] = "pseudo_labels"
    report = textdistill.distill(cfg)
    logs = [json.loads(line) for line in (tmp_path / "run" / "logs" / "student.jsonl").read_text().splitlines()]
    assert all("kd" not in s for s in logs) and any("ce" in s for s in logs)  # the teacher's tags, as hard labels
    assert report["student"]["recipe"] == "checkpoint" and 0.0 <= report["student"]["metrics"]["entity_f1"] <= 1.0


def test_ner_data_distillation_tags_unlabeled_sentences(tiny_bert: str, tmp_path: Path) -> None:
    """The teacher tags unlabeled sentences word by word; the student learns from them and the labelled set, its twin
    from the labelled set alone."""
    folder = require_conll() / "iob2"
    from textdistill.ner import read_conll

    sents = [" ".join(s.tokens) for s in read_conll(folder / "eng.train", "iob2").sentences]
    pool = sents[300:450] + sents[:5]  # 5 training sentences: left out
    (tmp_path / "pool.txt").write_text("\n".join(pool) + "\n", encoding="utf-8")
    new = sum(p not in set(sents[:300]) for p in pool)
    assert new <= 150
    cfg = ner_config(tiny_bert, tmp_path / "run")
    cfg["data"].pop("test_file")
    cfg["transfer"] = {"unlabeled_file": str(tmp_path / "pool.txt")}
    report = textdistill.distill(cfg)
    t = report["data"]["transfer"]
    assert t["kept_by_source"] == {"train": 300, "pool": new} and t["kept"] == 300 + new
    assert "teacher-labelled texts" in (tmp_path / "run" / "report.md").read_text()
    student_steps = max(
        r["step"] for r in map(json.loads, (tmp_path / "run/logs/student.jsonl").read_text().splitlines())
    )
    twin_steps = max(
        r["step"] for r in map(json.loads, (tmp_path / "run/logs/baseline.jsonl").read_text().splitlines())
    )
    assert student_steps == 2 * math.ceil((300 + new) / 16) and twin_steps == 2 * math.ceil(300 / 16)
    cfg["transfer"]["variants"] = 3
    with pytest.raises(TextDistillError, match="variants: not for token tasks"):
        textdistill.distill(cfg)


def test_multi_label_distillation_framed_from_conll(tiny_bert: str, tmp_path: Path) -> None:
    """No public multi-label set is in the shared data: CoNLL sentences labelled with the entity types they contain."""
    from textdistill.ner import entities, read_conll

    folder = require_conll() / "iob2"
    for split, n in (("eng.train", 400), ("eng.testa", 150)):
        sents = read_conll(folder / split, "iob2").sentences[:n]
        rows = [{"text": " ".join(s.tokens), "labels": sorted({e[0] for e in entities(s.tags)})} for s in sents]
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    cfg = {
        "output_dir": str(tmp_path / "run"),
        "seed": 5,
        "data": {
            "task_type": "multi_label",
            "train_file": str(tmp_path / "eng.train.jsonl"),
            "validation_file": str(tmp_path / "eng.testa.jsonl"),
            "label_column": "labels",
            "max_length": 64,
        },
        "teacher": {"model": tiny_bert, "finetune": True, "training": _fast()},
        "student": {"layers": [0, 3], "training": _fast()},
        "distill": {"temperature": 2.0, "alpha": 0.5},
        "eval": {"latency_repeats": 2, "latency_samples": 16},
    }
    report = textdistill.distill(cfg)
    assert report["metric"] == "micro_f1" and report["data"]["labels"] == ["LOC", "MISC", "ORG", "PER"]
    for side in ("teacher", "student", "baseline"):
        assert {"micro_f1", "macro_f1", "subset_accuracy"} <= report[side]["metrics"].keys()
    logs = [json.loads(line) for line in (tmp_path / "run" / "logs" / "student.jsonl").read_text().splitlines()]
    assert all(s["loss"] == pytest.approx(0.5 * s["kd"] + 0.5 * s["ce"], rel=1e-4) for s in logs if "kd" in s)
    from textdistill.multitask import predict

    out = predict(tmp_path / "run" / "student", None, ["EU rejects German call", "Peter Blair"])
    assert all(isinstance(o, list) and set(o) <= {"LOC", "MISC", "ORG", "PER"} for o in out)
    assert "binary KL per label" in (tmp_path / "run" / "report.md").read_text()


def test_token_configs_refuse_what_is_not_built(tiny_bert: str, tmp_path: Path) -> None:
    cfg = ner_config(tiny_bert, tmp_path / "run")
    cfg["student"] = {"architecture": {"type": "bilstm"}}
    with pytest.raises(TextDistillError, match="token_classification students are transformers"):
        textdistill.distill(cfg)
    path = tmp_path / "c.yaml"
    path.write_text(
        "data: {train_file: a.tsv, validation_file: b.tsv}\ndistill: {token_targets: pseudo_labels}\n", encoding="utf-8"
    )
    with pytest.raises(TextDistillError, match="pseudo_labels applies to token_classification"):
        load_config(path)
