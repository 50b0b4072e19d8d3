"""The training loop's speed options: torch.compile through accelerate, the teacher held in half precision on a GPU;
and the loop on a GPU (skipped where no CUDA device is present, as in CI)."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from textdistill import train as train_module
from textdistill.config import DistillConfig, LayerMatch, TrainingConfig
from textdistill.data import Collator, DistillDataset
from textdistill.features import IntermediateLosses
from textdistill.objective import DistillationObjective, hard_label_objective
from textdistill.train import clip_in_step, held_teacher_dtype, train_loop

NO_DROPOUT = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}


def bert(layers: int, seed: int, hidden: int = 16, **config: float) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=100,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=32,
        num_labels=2,
        **config,
    )
    return BertForSequenceClassification(cfg)


def data(n: int = 24) -> DistillDataset:
    g = torch.Generator().manual_seed(0)
    feats = [
        {"input_ids": [1, *torch.randint(5, 100, (int(k),), generator=g).tolist(), 2]}
        for k in torch.randint(2, 10, (n,), generator=g)
    ]
    return DistillDataset(feats, torch.randint(0, 2, (n,), generator=g).tolist())


def run(student, teacher, args: TrainingConfig, tmp: Path) -> tuple[DistillationObjective, list[str]]:
    objective = DistillationObjective(DistillConfig(temperature=2.0, alpha=0.5), teacher)
    train_loop(
        student,
        data(),
        Collator(0),
        args,
        objective,
        lambda m: {"accuracy": 0.0},
        "accuracy",
        0,
        tmp / "log.jsonl",
        teacher=teacher,
        keep_best=False,
    )
    return objective, (tmp / "log.jsonl").read_text().splitlines()


ARGS = TrainingConfig(
    learning_rate=1e-3, per_device_train_batch_size=8, num_train_epochs=1, logging_steps=1, warmup_ratio=0.0
)


def test_compiled_student_trains_like_the_eager_one(tmp_path: Path) -> None:
    teacher = bert(2, 0).eval()
    # without dropout: the two runs' masks need not match (on the CPU the eager loop draws its own, see
    # textdistill.dropout; on a GPU the traced graph may pick another attention kernel, whose dropout draws differ)
    no_dropout = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    eager, compiled = bert(1, 1, **no_dropout), bert(1, 1, **no_dropout)
    run(eager, teacher, ARGS, tmp_path / "eager")
    run(
        compiled,
        teacher,
        ARGS.model_copy(update={"torch_compile": True, "torch_compile_backend": "aot_eager"}),
        tmp_path / "c",
    )
    assert not hasattr(compiled, "_orig_mod")  # the caller's model object is trained in place, never replaced
    for (name, a), (_, b) in zip(eager.state_dict().items(), compiled.state_dict().items()):
        assert torch.allclose(a, b, atol=1e-5), name
    moved = max(
        (p - q).abs().max().item() for p, q in zip(bert(1, 1, **no_dropout).parameters(), compiled.parameters())
    )
    assert moved > 1e-4  # it did train


@pytest.mark.parametrize("max_norm", [0.05, 1e3])  # clipping, and a norm too large to clip
def test_clipping_inside_the_fused_step_updates_as_clipping_first(max_norm: float) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(20, 12), torch.nn.Tanh(), torch.nn.Linear(12, 3))
    ours, ref = copy.deepcopy(model), copy.deepcopy(model)
    opt_ours, opt_ref = (torch.optim.AdamW(m.parameters(), lr=1e-2, weight_decay=0.1, fused=True) for m in (ours, ref))
    for _ in range(4):
        x = torch.randn(8, 20)
        for m in (ours, ref):
            m(x).pow(2).sum().backward()
        norm = math.sqrt(sum(float(p.grad.pow(2).sum()) for p in ours.parameters()))
        torch.nn.utils.clip_grad_norm_(ref.parameters(), max_norm)
        opt_ref.step()
        clip_in_step(opt_ours, list(ours.parameters()), max_norm)
        assert math.isclose(float(opt_ours.grad_scale), max(1.0, (norm + 1e-6) / max_norm), rel_tol=1e-5)
        opt_ours.step()
        for opt in (opt_ours, opt_ref):
            opt.zero_grad(set_to_none=True)
    for a, b in zip(ours.parameters(), ref.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def test_the_loop_clips_in_the_fused_step_as_clip_grad_norm_would(tmp_path: Path, monkeypatch) -> None:
    teacher = bert(2, 0).eval()
    no_dropout = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    args = ARGS.model_copy(update={"max_grad_norm": 0.01})  # far below these gradients' norms: every step clips
    fused, unclipped = bert(1, 1, **no_dropout), bert(1, 1, **no_dropout)
    run(fused, teacher, args, tmp_path / "fused")
    run(unclipped, teacher, args.model_copy(update={"max_grad_norm": None}), tmp_path / "none")
    calls: list[float] = []

    def clip_first(optimizer, params, max_norm: float) -> None:  # the gradients rewritten, then a plain step
        calls.append(max_norm)
        torch.nn.utils.clip_grad_norm_(params, max_norm)

    monkeypatch.setattr(train_module, "clip_in_step", clip_first)
    classic = bert(1, 1, **no_dropout)
    run(classic, teacher, args, tmp_path / "classic")
    assert calls == [0.01] * 3  # the loop clips through clip_in_step, at each of its 3 steps
    for (name, a), (_, b), (_, c) in zip(
        fused.state_dict().items(), classic.state_dict().items(), unclipped.state_dict().items()
    ):
        assert torch.allclose(a, b, atol=1e-6), name
    assert max((a - c).abs().max().item() for a, c in zip(fused.parameters(), unclipped.parameters())) > 1e-4


def test_half_precision_teacher_copy_leaves_the_callers_teacher_alone(tmp_path: Path, monkeypatch) -> None:
    assert held_teacher_dtype("bf16", torch.device("cpu")) is torch.bfloat16
    assert held_teacher_dtype("fp16", torch.device("cpu")) is None
    assert held_teacher_dtype("no", torch.device("cuda")) is None
    assert held_teacher_dtype("bf16", torch.device("cuda")) is torch.bfloat16
    assert held_teacher_dtype("fp16", torch.device("cuda")) is torch.float16
    seen: list[torch.dtype] = []
    monkeypatch.setattr("textdistill.train.held_teacher_dtype", lambda mp, dev: torch.bfloat16)  # as with bf16
    teacher = bert(2, 0).eval()
    before = copy.deepcopy(teacher.state_dict())
    teacher.register_forward_hook(lambda m, i, o: seen.append(next(m.parameters()).dtype))  # deep-copied with the model
    objective, log = run(bert(1, 1), teacher, ARGS, tmp_path)
    assert seen and set(seen) == {torch.bfloat16}  # every teacher forward of the loop ran the bf16 copy
    assert objective.teacher is teacher  # handed back at the end
    assert all(torch.equal(before[k], v.cpu()) and v.dtype == torch.float32 for k, v in teacher.state_dict().items())
    losses = [json.loads(line)["loss"] for line in log if '"loss"' in line]
    assert len(losses) == 3 and all(math.isfinite(x) and x > 0 for x in losses)  # 24 examples, batches of 8


def test_auto_precision_is_the_launchers_else_bf16_on_a_gpu_else_none(monkeypatch) -> None:
    from textdistill.train import resolve_mixed_precision

    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    monkeypatch.delenv("ACCELERATE_USE_CPU", raising=False)
    assert TrainingConfig().mixed_precision == "auto"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_mixed_precision("auto") == "no"  # the CPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert resolve_mixed_precision("auto") == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert resolve_mixed_precision("auto") == "no"  # a GPU without bf16 (before Ampere)
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "FP16")  # accelerate launch --mixed_precision fp16
    assert resolve_mixed_precision("auto") == "fp16"
    monkeypatch.setenv("ACCELERATE_USE_CPU", "1")
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "")
    assert resolve_mixed_precision("auto") == "no"  # told to use the CPU
    assert [resolve_mixed_precision(p) for p in ("no", "fp16", "bf16")] == ["no", "fp16", "bf16"]  # as set


@pytest.mark.parametrize("backend", ["nope"])
def test_unknown_compile_backend_is_a_config_error(backend: str) -> None:
    with pytest.raises(ValueError, match="torch_compile_backend"):
        TrainingConfig(torch_compile=True, torch_compile_backend=backend)


def test_loops_of_different_precisions_run_in_one_process(tmp_path: Path) -> None:
    # a teacher fine-tuned in fp32, then a student in bf16: accelerate's process-wide state refused the second
    # ("AcceleratorState has already been initialized and cannot be changed")
    teacher = bert(2, 0).eval()
    for i, precision in enumerate(("no", "bf16", "no")):
        _, log = run(bert(1, 1), teacher, ARGS.model_copy(update={"mixed_precision": precision}), tmp_path / str(i))
        assert len([line for line in log if '"loss"' in line]) == 3


def test_loop_reports_a_rate_without_its_warm_up_steps(tmp_path: Path) -> None:
    from textdistill.train import WARMUP_STEPS

    teacher = bert(2, 0).eval()
    objective = DistillationObjective(DistillConfig(), teacher)
    args = ARGS.model_copy(update={"per_device_train_batch_size": 2, "logging_steps": 5})  # 12 steps
    result = train_loop(
        bert(1, 1),
        data(),
        Collator(0),
        args,
        objective,
        lambda m: {"accuracy": 0.0},
        "accuracy",
        0,
        tmp_path / "log.jsonl",
        teacher=teacher,
        keep_best=False,
    )
    assert result.steps == 12 and result.samples == 24
    assert result.steady_samples == 2 * (12 - WARMUP_STEPS) and 0 < result.steady_seconds < result.step_seconds
    assert result.steady_samples_per_second == pytest.approx(result.steady_samples / result.steady_seconds)
    short = train_loop(
        bert(1, 1),
        data(8),
        Collator(0),
        args,
        objective,
        lambda m: {"accuracy": 0.0},
        "accuracy",
        0,
        tmp_path / "short.jsonl",
        teacher=teacher,
        keep_best=False,
    )
    assert short.steps == 4 and short.steady_samples_per_second == 0.0  # too short to leave the warm-up out


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("precision", ["no", "bf16"])
def test_intermediate_distillation_runs_on_the_gpu(tmp_path: Path, precision: str) -> None:
    # the teacher is handed over on the CPU, as the pipeline loads it; before the fix the projections' setup ran it
    # there on a batch already on the GPU ("Expected all tensors to be on the same device")
    teacher, student = bert(2, 0, hidden=32).eval(), bert(1, 1)
    matches = [
        LayerMatch(feature="hidden", teacher_layer=2, student_layer=1, loss="mse"),
        LayerMatch(feature="attention", teacher_layer=2, student_layer=1, loss="kl"),
    ]
    objective = DistillationObjective(DistillConfig(), teacher, IntermediateLosses(matches, None, student, teacher))
    args = TrainingConfig(
        learning_rate=1e-3,
        per_device_train_batch_size=16,
        num_train_epochs=2,
        logging_steps=1,
        mixed_precision=precision,
        dataloader_num_workers=1,
    )
    result = train_loop(
        student,
        data(64),
        Collator(0),
        args,
        objective,
        lambda m: {"accuracy": 0.5},
        "accuracy",
        0,
        tmp_path / "log.jsonl",
        teacher=teacher,
    )
    assert next(student.parameters()).device.type == "cuda"
    assert next(objective.parameters()).device.type == "cuda"  # the hidden-width projection (16 -> 32)
    logged = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines() if '"loss"' in line]
    assert len(logged) == 8 and all(math.isfinite(r["loss"]) and r["hidden_1_2_mse"] > 0 for r in logged)
    assert result.steps == 8 and result.samples == 128 and result.samples_per_second > 0


def test_collator_says_which_sides_have_no_padding() -> None:
    same = [{"input_ids": [2, 5, 6, 3]}, {"input_ids": [2, 7, 8, 3]}]
    mixed = [{"input_ids": [2, 5, 3]}, {"input_ids": [2, 7, 8, 3]}]
    batch = Collator(0, 0)([{"student": s, "teacher": t, "labels": 1} for s, t in zip(same, mixed)])
    assert batch["unpadded"] == {"student": True, "teacher": False}
    assert batch["teacher"]["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 1, 1, 1]]
    assert Collator(0)([{"student": s, "labels": 0} for s in mixed])["unpadded"] == {"student": False}


def test_unpadded_batches_reach_transformers_models_without_a_mask(monkeypatch) -> None:
    """On a GPU, no padded row: a transformers model (the student, the online teacher, compiled or not) is called
    without its mask, with the same logits and losses as with the all-ones mask; a padded side, or a model that is not
    a transformers model, keeps it. On the CPU batches keep their masks. (The CPU stands in for the GPU here.)"""
    student, teacher = bert(2, 0, hidden=32, **NO_DROPOUT), bert(3, 1, hidden=32, **NO_DROPOUT).eval()
    seen: list[object] = []
    for m in (student, teacher):
        m.register_forward_pre_hook(
            lambda mod, args, kwargs: seen.append(kwargs.get("attention_mask")), with_kwargs=True
        )
    g = torch.Generator().manual_seed(0)
    items = [
        {"student": {"input_ids": torch.randint(5, 100, (7,), generator=g).tolist()}, "labels": i % 2} for i in range(6)
    ]
    batch = Collator(0)(items)
    assert batch["unpadded"] == {"student": True}
    objective = DistillationObjective(DistillConfig(temperature=2.0, alpha=0.5), teacher)
    assert "attention_mask" in train_module.model_inputs(student, batch)  # on the CPU
    monkeypatch.setattr(train_module, "MASKLESS_DEVICES", frozenset({"cpu"}))
    terms = objective(student, batch)
    assert seen == [None, None]  # the teacher's call, then the student's
    masked = objective(student, {k: v for k, v in batch.items() if k != "unpadded"})
    assert all(isinstance(m, torch.Tensor) for m in seen[2:]) and len(seen) == 4
    for k in terms:
        assert torch.allclose(terms[k], masked[k], atol=1e-6), k
    inputs = train_module.model_inputs(torch.compile(student), batch)
    assert "attention_mask" not in inputs and set(inputs) == {"input_ids"}
    padded = Collator(0)([*items[:5], {"student": {"input_ids": [2, 3]}, "labels": 0}])
    assert "attention_mask" in train_module.model_inputs(student, padded)
    plain = torch.nn.Linear(2, 2)  # not a transformers model: None may not mean "attend everywhere" to it
    assert "attention_mask" in train_module.model_inputs(plain, batch)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_unpadded_batches_run_without_a_mask_on_the_gpu() -> None:
    student = bert(2, 0, hidden=32, **NO_DROPOUT).cuda()
    seen: list[object] = []
    student.register_forward_pre_hook(
        lambda mod, args, kwargs: seen.append(kwargs.get("attention_mask")), with_kwargs=True
    )
    batch = Collator(0)([{"student": {"input_ids": [2, 7, 8, 9, 3]}, "labels": i % 2} for i in range(4)])
    batch = train_module._to_device(batch, torch.device("cuda"))
    full = student(**batch["student"]).logits
    terms = hard_label_objective(student, batch)
    assert seen[-1] is None and torch.allclose(
        terms["ce"], torch.nn.functional.cross_entropy(full, batch["labels"]), atol=1e-5
    )
