"""The last encoder layer cut to the first token (textdistill.first_token): the same logits and gradients as the full
layer, for the classes it knows; nothing changed for the others; put back on leaving; used by the loop only when the
objective reads logits alone."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertForTokenClassification,
    ElectraConfig,
    ElectraForSequenceClassification,
    MPNetConfig,
    MPNetForSequenceClassification,
    RobertaConfig,
    RobertaForSequenceClassification,
    XLMRobertaConfig,
    XLMRobertaForSequenceClassification,
)

from textdistill.config import DistillConfig, LayerMatch, TrainingConfig
from textdistill.data import Collator, DistillDataset
from textdistill.dropout import attention_function, fast_cpu_dropout
from textdistill.features import MAPS_ATTENTION, IntermediateLosses, eager_attention_with_maps
from textdistill.first_token import can_cut, first_token_only
from textdistill.metrics import measure_speed, predict_logits
from textdistill.objective import DistillationObjective, hard_label_objective
from textdistill.train import reads_logits_only, train_loop

NO_DROPOUT = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
SMALL = {
    "vocab_size": 100,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 64,
    "num_labels": 3,
    "max_position_embeddings": 40,
    "pad_token_id": 1,
}
CLASSES = {
    "bert": (BertConfig, BertForSequenceClassification),
    "roberta": (RobertaConfig, RobertaForSequenceClassification),
    "xlm-roberta": (XLMRobertaConfig, XLMRobertaForSequenceClassification),
    "electra": (ElectraConfig, ElectraForSequenceClassification),
}


def make(kind: str, impl: str, seed: int = 0, **extra):
    config_class, model_class = CLASSES[kind]
    torch.manual_seed(seed)
    return model_class(config_class(**SMALL, **NO_DROPOUT, attn_implementation=impl, **extra))


def batch(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 100, (5, 11), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0  # padded rows: the first token's attention row must ignore them as the full layer's does
    mask[3, 2:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def logits_and_grads(model, inputs, module=None) -> tuple[torch.Tensor, list[torch.Tensor]]:
    module = module if module is not None else model  # model: what to call; module: whose gradients to read
    module.zero_grad(set_to_none=True)
    logits = model(**inputs).logits
    (logits * torch.linspace(-1, 2, logits.numel()).view_as(logits)).sum().backward()
    grads = [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in module.parameters()]
    return logits.detach(), grads


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
@pytest.mark.parametrize("kind", sorted(CLASSES))
def test_cut_layer_gives_the_full_layers_logits_and_gradients(kind: str, impl: str) -> None:
    model = make(kind, impl).train()
    inputs = batch()
    full_logits, full_grads = logits_and_grads(model, inputs)
    layer = model.base_model.encoder.layer[-1]
    with first_token_only(model) as changed:
        assert changed == [model]
        cut_logits, cut_grads = logits_and_grads(model, inputs)
        assert model.base_model(**inputs).last_hidden_state.shape == (5, 1, 32)  # one position left
    assert torch.allclose(cut_logits, full_logits, atol=1e-6)
    assert not torch.equal(full_logits[0], full_logits[1])  # the rows differ: the comparison is not vacuous
    for (name, _), a, b in zip(model.named_parameters(), full_grads, cut_grads):
        assert torch.allclose(a, b, atol=1e-6), name
    # the last layer's query, output and feed-forward weights get gradients from position 0 alone: still nonzero
    assert layer.output.dense.weight.grad.abs().sum() > 0
    assert "forward" not in vars(layer)  # put back
    assert model.base_model(**inputs).last_hidden_state.shape == (5, 11, 32)


def test_fast_dropout_attention_and_mid_context_switches() -> None:
    model = make("bert", "sdpa").train()
    inputs = batch(1)
    reference = model(**inputs).logits.detach()
    from transformers.masking_utils import eager_mask

    maps = attention_function(MAPS_ATTENTION, eager_attention_with_maps, eager_mask)  # (registered only while used)
    with maps, fast_cpu_dropout(model, True), first_token_only(model) as changed:
        assert changed == [model] and model.config._attn_implementation != "sdpa"  # textdistill's own sdpa
        assert torch.allclose(model(**inputs).logits, reference, atol=1e-6)
        model.config._attn_implementation = MAPS_ATTENTION  # an attention it does not cut for: full layer
        out = model(**inputs, output_hidden_states=True)
        assert out.hidden_states[-1].shape == (5, 11, 32)
        assert torch.allclose(out.logits, reference, atol=1e-6)


def test_models_it_does_not_know_are_left_alone() -> None:
    token = BertForTokenClassification(BertConfig(**SMALL, **NO_DROPOUT))
    lstm = torch.nn.LSTM(4, 4)
    decoder = BertForSequenceClassification(BertConfig(**SMALL, is_decoder=True))
    for model in (token, lstm, decoder, None):
        assert not can_cut(model)
    with first_token_only(token, lstm, decoder, None) as changed:
        assert changed == []
        assert token(**batch()).logits.shape == (5, 11, 3)  # every token still classified
    model = make("bert", "eager")
    with first_token_only(model, enabled=False) as changed:
        assert changed == []
    with first_token_only(model, model) as changed:  # the same model twice: cut once, put back once
        assert changed == [model]
    assert "forward" not in vars(model.bert.encoder.layer[-1])


def test_mpnet_is_cut_with_its_position_bias_and_gives_the_full_logits_and_gradients() -> None:
    """MPNet's last layer adds a relative position bias and an additive mask to its scores: the cut takes their first
    rows, so logits and gradients match the full layer on padded rows; asked for attentions, it gives the first row."""
    torch.manual_seed(0)
    model = MPNetForSequenceClassification(MPNetConfig(**SMALL, **NO_DROPOUT)).train()
    inputs = batch(1)
    assert can_cut(model)
    full, full_grads = logits_and_grads(model, inputs)
    with first_token_only(model) as changed:
        cut, cut_grads = logits_and_grads(model, inputs)
        probs = model.mpnet.encoder.layer[-1](torch.randn(5, 11, 32), output_attentions=True)[1]
    assert changed == [model] and "forward" not in vars(model.mpnet.encoder.layer[-1])
    assert torch.allclose(cut, full, atol=1e-5)
    for a, b in zip(full_grads, cut_grads):
        assert torch.allclose(a, b, atol=1e-5)
    assert probs.shape == (5, 4, 1, 11)


def test_the_layer_is_put_back_when_the_body_raises() -> None:
    model = make("roberta", "eager")
    with pytest.raises(RuntimeError, match="boom"), first_token_only(model):
        raise RuntimeError("boom")
    assert "forward" not in vars(model.roberta.encoder.layer[-1])


def test_predict_logits_cuts_and_matches_the_full_model(monkeypatch) -> None:
    model = make("bert", "sdpa")
    g = torch.Generator().manual_seed(3)
    feats = [
        {"input_ids": [2, *torch.randint(5, 100, (int(k),), generator=g).tolist(), 3]}
        for k in torch.randint(1, 20, (13,), generator=g)
    ]
    data = DistillDataset(feats, [0] * 13)
    cut = predict_logits(model, data, Collator(1), 4)
    with torch.no_grad():
        full = torch.cat([model(input_ids=torch.tensor([f["input_ids"]])).logits for f in feats])
    assert torch.allclose(cut, full, atol=1e-5)
    seen: list[tuple[int, ...]] = []
    model.bert.pooler.register_forward_hook(lambda m, i, o: seen.append(tuple(i[0].shape)))
    predict_logits(model, data, Collator(1), 4)
    assert seen and all(s[1] == 1 for s in seen)  # the pooler saw one position per example


def test_measure_speed_times_the_model_as_asked_and_puts_it_back() -> None:
    """By default the latency columns time the model as transformers runs it (every position reaches the pooler's
    input); with first_token=True, as the ONNX export computes it (one position). Afterwards the layer and the
    training mode are as they were."""
    model = make("bert", "sdpa").train()
    feats = [{"input_ids": [2, *range(5, 5 + k), 3]} for k in (4, 9, 2, 7)]
    seen: list[tuple[int, ...]] = []
    model.bert.pooler.register_forward_hook(lambda m, i, o: seen.append(tuple(i[0].shape)))
    for cut in (False, True):
        seen.clear()
        speed = measure_speed(model, feats, 1, repeats=2, batch_size=4, first_token=cut)
        assert speed["latency_ms_batch1"] > 0 and speed["throughput_batch4"] > 0
        assert len(seen) == 2 * 2 + 2 * 2  # 2 warm-ups and 2 repeats, at batch 1 and at batch 4
        assert all(s[1] == 1 for s in seen) if cut else all(s[1] > 1 for s in seen)
        assert "forward" not in vars(model.bert.encoder.layer[-1]) and model.training


def test_the_loop_cuts_only_for_objectives_that_read_logits_alone(tmp_path: Path, monkeypatch) -> None:
    teacher = make("bert", "sdpa", seed=5).eval()
    assert reads_logits_only(hard_label_objective)
    assert reads_logits_only(DistillationObjective(DistillConfig(), teacher))
    inter = IntermediateLosses(
        [LayerMatch(feature="hidden", teacher_layer=2, student_layer=2, loss="mse")],
        None,
        make("bert", "sdpa"),
        teacher,
    )
    assert not reads_logits_only(DistillationObjective(DistillConfig(), teacher, inter))
    assert not reads_logits_only(lambda model, batch, progress: {})

    g = torch.Generator().manual_seed(0)
    feats = [
        {"input_ids": [2, *torch.randint(5, 100, (int(k),), generator=g).tolist(), 3]}
        for k in torch.randint(2, 12, (24,), generator=g)
    ]
    data = DistillDataset(feats, torch.randint(0, 3, (24,), generator=g).tolist())
    args = TrainingConfig(
        learning_rate=1e-3, per_device_train_batch_size=8, num_train_epochs=1, logging_steps=1, warmup_ratio=0.0
    )
    shapes: dict[str, list[int]] = {"student": [], "teacher": []}

    def fit(cut: bool, name: str) -> BertForSequenceClassification:
        student = make("bert", "sdpa", seed=1)
        for role, model in (("student", student), ("teacher", teacher)):
            model.bert.pooler.register_forward_hook(lambda m, i, o, role=role: shapes[role].append(i[0].shape[1]))
        train_loop(
            student,
            data,
            Collator(1),
            args.model_copy(update={"first_token_only": cut}),
            DistillationObjective(DistillConfig(temperature=2.0, alpha=0.5), teacher),
            lambda m: {"accuracy": 0.0},
            "accuracy",
            0,
            tmp_path / f"{name}.jsonl",
            teacher=teacher,
            keep_best=False,
        )
        return student

    full = fit(False, "full")
    assert min(shapes["student"]) > 1 and min(shapes["teacher"]) > 1
    shapes = {"student": [], "teacher": []}
    cut = fit(True, "cut")
    assert set(shapes["student"]) == {1} and set(shapes["teacher"]) == {1}  # both models ran the cut layer
    for (name, a), (_, b) in zip(full.state_dict().items(), cut.state_dict().items()):
        assert torch.allclose(a, b, atol=1e-5), name
    assert (
        max((a - b).abs().max().item() for a, b in zip(make("bert", "sdpa", seed=1).parameters(), cut.parameters()))
        > 1e-4
    )
    assert "forward" not in vars(cut.bert.encoder.layer[-1]) and "forward" not in vars(teacher.bert.encoder.layer[-1])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["all-MiniLM-L6-v2", "all-mpnet-base-v2"])
def test_real_teacher_gives_the_same_logits_cut(sst2_dir: Path, name: str) -> None:
    from textdistill.data import LabelSet
    from textdistill.errors import TextDistillError
    from textdistill.models import load_classifier

    try:
        model, tok, _ = load_classifier(name, LabelSet(("0", "1")), "teacher.model", require_trained_head=False)
    except TextDistillError as exc:
        pytest.skip(str(exc))
    model.eval()
    lines = (sst2_dir / "dev.tsv").read_text(encoding="utf-8").splitlines()[1:33]
    inputs = tok([line.split("\t")[0] for line in lines], padding=True, return_tensors="pt")
    assert int(inputs["attention_mask"].sum()) < inputs["attention_mask"].numel()  # padded rows among them
    with torch.inference_mode():
        full = model(**inputs).logits
        with first_token_only(model) as changed:
            cut = model(**inputs).logits
    assert changed == [model]
    assert torch.allclose(cut, full, atol=1e-5)


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_multitask_student_is_cut_for_every_task(impl: str) -> None:
    from textdistill.multitask import MultiTaskObjective, TaskSpec, multitask_from_encoder, uniform_spec

    encoder = make("bert", impl).bert
    model = multitask_from_encoder(
        encoder, [{"name": "sst2", "labels": ["0", "1"]}, {"name": "stsb", "labels": None}], 0.0
    ).train()
    inputs = batch(2)
    for task in ("sst2", "stsb"):
        full, full_grads = logits_and_grads(lambda **kw: model(**kw, task=task), inputs, model)
        with first_token_only(model) as changed:
            assert changed == [model]
            cut, cut_grads = logits_and_grads(lambda **kw: model(**kw, task=task), inputs, model)
        assert full.shape == (5, 2 if task == "sst2" else 1)
        assert torch.allclose(cut, full, atol=1e-6)
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(full_grads, cut_grads))
    assert reads_logits_only(MultiTaskObjective([uniform_spec("sst2", 1), TaskSpec("stsb", regression=True)]))
