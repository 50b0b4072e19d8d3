"""Intermediate-layer losses (closed forms), layer maps, feature taps, schedules, and runs that use them."""

import math

import pytest
import torch
from test_end_to_end import tiny_config
from test_train import bert
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

import textdistill
from textdistill.config import LayerMapConfig, LayerMatch, Schedule, value_at
from textdistill.data import LabelSet
from textdistill.dropout import release_attention_function
from textdistill.errors import TextDistillError
from textdistill.features import (
    MAPS_ATTENTION,
    FeatureTaps,
    IntermediateLosses,
    generate_matches,
    resolve_matches,
    use_map_attention,
)
from textdistill.losses import (
    attention_kl_loss,
    attention_mse_loss,
    hidden_cosine_loss,
    hidden_mse_loss,
    merge_heads,
    patient_loss,
    relation,
    value_relation_loss,
)
from textdistill.models import load_classifier


def test_hidden_mse_and_cosine_with_mask():
    s = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [9.0, 9.0]]])
    t = torch.tensor([[[1.0, 2.0], [0.0, 0.0], [0.0, 0.0]]])
    mask = torch.tensor([[True, True, False]])
    # positions: (0 + 4)/2 = 2, (0 + 4)/2 = 2 -> mean 2; the masked third position is ignored
    assert hidden_mse_loss(s, t, mask).item() == pytest.approx(2.0)
    # cos([1,0],[1,2]) = 1/sqrt(5); cos([0,2],[0,0]) = 0 (zero vector)
    expected = ((1 - 1 / math.sqrt(5)) + 1.0) / 2
    assert hidden_cosine_loss(s, t, mask).item() == pytest.approx(expected, rel=1e-5)


def test_patient_loss_normalises():
    s = torch.tensor([[3.0, 0.0], [0.0, 1.0]])
    t = torch.tensor([[10.0, 0.0], [1.0, 0.0]])
    # first pair: same direction -> 0; second: orthogonal unit vectors -> |(0,1)-(1,0)|^2 = 2
    assert patient_loss(s, t).item() == pytest.approx(1.0)


def test_attention_kl_closed_form_and_padding():
    t = torch.tensor([[[[0.5, 0.5, 0.0], [0.9, 0.1, 0.0], [0.3, 0.3, 0.4]]]])
    s = torch.tensor([[[[0.25, 0.75, 0.0], [0.5, 0.5, 0.0], [0.1, 0.1, 0.8]]]])
    mask = torch.tensor([[True, True, False]])
    kl0 = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    kl1 = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)
    assert attention_kl_loss(s, t, mask).item() == pytest.approx((kl0 + kl1) / 2, rel=1e-5)
    # MSE over valid (query, key) pairs only: 2 x 2 pairs
    se = (0.25**2 + 0.25**2 + 0.4**2 + 0.4**2) / 4
    assert attention_mse_loss(s, t, mask).item() == pytest.approx(se, rel=1e-5)


def test_merge_heads_keeps_distributions():
    a = torch.softmax(torch.randn(2, 12, 5, 5), dim=-1)
    m = merge_heads(a, 4)
    assert m.shape == (2, 4, 5, 5)
    assert torch.allclose(m.sum(-1), torch.ones(2, 4, 5))
    assert torch.allclose(m[:, 0], a[:, :3].mean(1))
    with pytest.raises(ValueError, match="cannot merge 12 attention heads into 5"):
        merge_heads(a, 5)


def test_value_relation_closed_form():
    torch.manual_seed(0)
    v_t, v_s = torch.randn(1, 3, 4), torch.randn(1, 3, 8)  # widths differ; relations are 3 x 3
    mask = torch.tensor([[True, True, True]])
    rel_t = torch.softmax(v_t @ v_t.transpose(1, 2) / math.sqrt(4), -1)
    rel_s = torch.softmax(v_s @ v_s.transpose(1, 2) / math.sqrt(8), -1)
    expected = (rel_t * (rel_t.log() - rel_s.log())).sum(-1).mean()
    assert value_relation_loss(v_s, v_t, heads=1, mask=mask).item() == pytest.approx(expected.item(), rel=1e-5)
    assert value_relation_loss(v_t, v_t, heads=2, mask=mask).item() == pytest.approx(0.0, abs=1e-6)
    # padded keys get no probability
    r = relation(v_t, 1, torch.tensor([[True, True, False]])).exp()
    assert torch.allclose(r[..., 2], torch.zeros(1, 1, 3))


def test_schedules():
    assert value_at(2.0, 0.7) == 2.0
    lin = Schedule(kind="linear", start=4.0, end=1.0)
    assert (lin.at(0), lin.at(0.5), lin.at(1)) == (4.0, 2.5, 1.0)
    cos = Schedule(kind="cosine", start=1.0, end=0.0)
    assert cos.at(0) == pytest.approx(1.0) and cos.at(0.5) == pytest.approx(0.5) and cos.at(1) == pytest.approx(0.0)
    assert cos.at(0.25) > 0.75  # cosine stays high longer than linear
    assert Schedule(kind="constant", start=3.0, end=0.0).at(0.9) == 3.0


@pytest.mark.parametrize(
    "strategy, expected",
    [
        ("uniform", [(2, 1), (4, 2), (6, 3)]),
        ("skip", [(2, 1), (4, 2)]),
        ("last_k", [(4, 1), (5, 2), (6, 3)]),
        ("last", [(6, 3)]),
        ("kept", [(1, 1), (3, 2), (6, 3)]),
    ],
)
def test_layer_map_generators(strategy, expected):
    matches = generate_matches(LayerMapConfig(strategy=strategy), teacher_layers=6, student_layers=3, kept=[0, 2, 5])
    assert [(m.teacher_layer, m.student_layer) for m in matches] == expected


def test_layer_map_embeddings_and_bad_config():
    ms = generate_matches(LayerMapConfig(strategy="last", include_embeddings=True), 6, 2, None)
    assert [(m.teacher_layer, m.student_layer) for m in ms] == [(0, 0), (6, 2)]
    with pytest.raises(TextDistillError, match="strategy 'kept' needs a student made from teacher layers"):
        generate_matches(LayerMapConfig(strategy="kept"), 6, 2, None)
    with pytest.raises(ValueError, match="loss 'kl' does not apply to hidden"):
        LayerMatch(feature="hidden", teacher_layer=1, student_layer=1, loss="kl")


def test_feature_tap_unknown_module_lists_nearest(tiny_bert):
    model, _, _ = load_classifier(tiny_bert, LabelSet(("0", "1")), "teacher", require_trained_head=False)
    with pytest.raises(
        TextDistillError,
        match=r"student: no module named 'bert.encoder.layer.0.atention' .*nearest: "
        r"\['bert.encoder.layer.0.attention'",
    ):
        FeatureTaps(model, ["bert.encoder.layer.0.atention"], "student")
    taps = FeatureTaps(model, ["bert.pooler", "bert.encoder.layer.1.output"], "teacher")
    model(input_ids=torch.tensor([[2, 8, 9, 3]]))
    assert taps.outputs["bert.pooler"].shape == (1, 32)
    assert taps.outputs["bert.encoder.layer.1.output"].shape == (1, 4, 32)
    taps.close()


def test_student_attention_maps_are_taken_before_attention_dropout():
    """HF's eager attention returns its maps after dropout; the objective must see the distributions before it.

    With no other dropout, a training-mode student that is a copy of the eval-mode teacher has the teacher's very maps,
    so attention KL is 0. Taken after dropout (p=0.5), the rows would not sum to 1 and KL would be about
    p * 27.6 nats (log of the 1e-12 floor) per row."""
    teacher, student = (bert(2, 0, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.5) for _ in range(2))
    student.load_state_dict(teacher.state_dict())
    teacher.eval()
    student.train()
    match = LayerMatch(feature="attention", teacher_layer=2, student_layer=2, loss="kl")
    objective = IntermediateLosses([match], None, student, teacher)
    ids = torch.tensor([[1, 5, 9, 7, 3, 0, 0], [1, 4, 4, 8, 2, 6, 3]])
    inputs = {"input_ids": ids, "attention_mask": (ids > 0).long()}
    s, t = objective.features(student, inputs, "student"), objective.features(teacher, inputs, "teacher")
    rows = s.attentions[1].sum(-1)[inputs["attention_mask"].bool()[:, None].expand(-1, 2, -1)]
    assert torch.allclose(rows, torch.ones_like(rows), atol=1e-5)
    assert objective(s, t, 0.0)["attention_2_2_kl"].item() == pytest.approx(0.0, abs=1e-5)
    # the output still went through attention dropout: two training passes differ, and match HF's eager attention
    # pass for pass (same random draws)
    torch.manual_seed(3)
    ours = student(**inputs).logits
    assert not torch.allclose(ours, student(**inputs).logits)
    assert MAPS_ATTENTION in ALL_ATTENTION_FUNCTIONS
    objective.close()
    assert student.config._attn_implementation != MAPS_ATTENTION and MAPS_ATTENTION not in ALL_ATTENTION_FUNCTIONS
    student.set_attn_implementation("eager")
    torch.manual_seed(3)
    assert torch.allclose(ours, student(**inputs).logits, atol=1e-6)


def test_map_attention_matches_eager_in_eval_and_falls_back_for_mpnet():
    from transformers import MPNetConfig, MPNetForSequenceClassification

    model = bert(2, 0).eval()  # BERT's default attention dropout, 0.1
    ids = torch.tensor([[1, 5, 9, 7, 3, 0], [1, 4, 4, 8, 2, 3]])
    inputs = {"input_ids": ids, "attention_mask": (ids > 0).long()}
    reference = model(**inputs).logits
    assert use_map_attention(model) is True
    assert torch.allclose(model(**inputs).logits, reference, atol=1e-6)
    model.set_attn_implementation("sdpa")  # given back, and the attention function with it (registered while used)
    release_attention_function(MAPS_ATTENTION)
    assert MAPS_ATTENTION not in ALL_ATTENTION_FUNCTIONS
    mpnet = MPNetForSequenceClassification(
        MPNetConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    )
    assert use_map_attention(mpnet) is False
    assert mpnet.config._attn_implementation == "eager"
    matches = resolve_matches([], [LayerMapConfig(strategy="last", feature="attention", loss="kl")], mpnet, mpnet, None)
    with pytest.warns(
        UserWarning,
        match=r"student MPNetForSequenceClassification takes no custom attention "
        r"function: .*p=0\.1",
    ):
        IntermediateLosses(matches, None, mpnet, bert(2, 0)).close()


def _distill(tiny_bert, sst2_dir, tmp_path, distill: dict, student: dict | None = None):
    cfg = tiny_config(tiny_bert, sst2_dir, tmp_path / "run", **(student or {"layers": [0, 3]}))
    cfg["teacher"]["training"]["num_train_epochs"] = 1
    cfg["student"]["training"]["num_train_epochs"] = 1
    cfg["data"]["max_train_samples"] = 96
    cfg["distill"].update(baseline=False, **distill)
    return textdistill.distill(cfg)


def test_run_with_hidden_attention_and_minilm_terms(tiny_bert, sst2_dir, tmp_path):
    import json

    distill = {
        "layer_map": [
            {"strategy": "kept", "feature": "hidden", "loss": "mse", "include_embeddings": True},
            {
                "strategy": "last",
                "feature": "attention",
                "loss": "kl",
                "weight": {"kind": "linear", "start": 1.0, "end": 0.0},
            },
        ],
        "intermediate": [
            {"feature": "module", "teacher_module": "bert.pooler", "student_module": "bert.pooler", "loss": "pkd"}
        ],
        "minilm": {"attention_weight": 1.0, "value_weight": 1.0},
        "temperature": {"kind": "linear", "start": 4.0, "end": 1.0},
    }
    report = _distill(tiny_bert, sst2_dir, tmp_path, distill)
    steps = [json.loads(x) for x in (tmp_path / "run/logs/student.jsonl").read_text().splitlines()]
    terms = [s for s in steps if "loss" in s]
    keys = set(terms[0])
    for k in (
        "hidden_0_0_mse",
        "hidden_1_1_mse",
        "hidden_2_4_mse",
        "attention_2_4_kl",
        "module_bert.pooler_bert.pooler_pkd",
        "minilm_attention",
        "minilm_value",
        "intermediate",
        "kd",
        "ce",
    ):
        assert k in keys, (k, keys)
    assert len(report["student"]["intermediate"]) == 5
    # the teacher got its fused attention back: it is measured as it would be deployed
    assert report["teacher"]["latency_ms_batch1"] > 0


def test_projection_for_narrower_student_and_two_stages(tiny_bert, sst2_dir, tmp_path):
    import json

    distill = {"layer_map": [{"strategy": "uniform", "feature": "hidden"}], "intermediate_epochs": 1}
    student = {
        "config_overrides": {
            "num_hidden_layers": 2,
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_attention_heads": 2,
        }
    }
    _distill(tiny_bert, sst2_dir, tmp_path, distill, student)
    stage1 = [json.loads(x) for x in (tmp_path / "run/logs/student-stage1.jsonl").read_text().splitlines()]
    stage2 = [json.loads(x) for x in (tmp_path / "run/logs/student.jsonl").read_text().splitlines()]
    s1 = [s for s in stage1 if "loss" in s]
    s2 = [s for s in stage2 if "loss" in s]
    assert s1 and all("kd" not in s and "hidden_1_2_mse" in s for s in s1)  # stage 1: intermediate only
    assert s2 and all("kd" in s and "intermediate" not in s for s in s2)  # stage 2: prediction layer


@pytest.mark.parametrize(
    "distill, student, message",
    [
        (
            {"layer_map": [{"strategy": "uniform", "projection": False}]},
            {"config_overrides": {"num_hidden_layers": 2, "hidden_size": 16, "intermediate_size": 32}},
            r"widths differ \(student 16, teacher 32\) and projection is off",
        ),
        (
            {"intermediate": [{"feature": "hidden", "teacher_layer": 9, "student_layer": 1}]},
            None,
            r"teacher hidden layer 9 out of range \(0\.\.4",
        ),
        (
            {
                "intermediate": [
                    {
                        "feature": "module",
                        "teacher_module": "bert.pooler",
                        "student_module": "bert.encoder.layer.0.output",
                    }
                ]
            },
            None,
            r"shapes differ: student \(\d+, \d+, 32\) vs teacher \(\d+, 32\)",
        ),
        (
            {"intermediate": [{"feature": "module", "teacher_module": "bert.poolr", "student_module": "bert.pooler"}]},
            None,
            r"teacher: no module named 'bert.poolr'.*nearest: \['bert.pooler'",
        ),
    ],
)
def test_bad_intermediate_config_is_a_clear_error(tiny_bert, sst2_dir, tmp_path, distill, student, message):
    with pytest.raises(TextDistillError, match=message):
        _distill(tiny_bert, sst2_dir, tmp_path, distill, student)
    assert not (tmp_path / "run").exists() and not (tmp_path / "run.partial").exists()  # failed before any training
