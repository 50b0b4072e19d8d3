"""DistillationTrainer (issue 30): transformers.Trainer with textdistill's loss; parity with textdistill's own loop,
a short run end to end, and a resume from a checkpoint."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from textdistill.config import DistillConfig
from textdistill.errors import TextDistillError
from textdistill.objective import DistillationObjective

transformers = pytest.importorskip("transformers")
from transformers import (  # noqa: E402
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    TrainingArguments,
)

from textdistill.integrations.transformers import OBJECTIVE_FILE, DistillationTrainer  # noqa: E402


def _models(tiny_bert: str, narrow: bool = False) -> tuple:
    """The tiny teacher and a 2-layer student: cut from it, or (``narrow``) 16 wide, so hidden matches need a
    projection."""
    torch.manual_seed(0)
    teacher = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2)
    if narrow:
        config = transformers.AutoConfig.from_pretrained(
            tiny_bert, num_labels=2, num_hidden_layers=2, hidden_size=16, num_attention_heads=2, intermediate_size=32
        )
        student = AutoModelForSequenceClassification.from_config(config)
    else:
        student = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2, num_hidden_layers=2)
    return teacher, student, AutoTokenizer.from_pretrained(tiny_bert)


def _data(tok, sst2_dir: Path, n: int = 48) -> list[dict]:
    lines = (sst2_dir / "train.tsv").read_text(encoding="utf-8").splitlines()[1 : 1 + n]
    rows = []
    for line in lines:
        text, label = line.split("\t")
        rows.append({**tok(text, truncation=True, max_length=32), "labels": int(label)})
    return rows


def _args(out: Path, **kw) -> TrainingArguments:
    base = dict(
        output_dir=str(out),
        per_device_train_batch_size=8,
        learning_rate=1e-3,
        report_to=[],
        use_cpu=True,
        logging_steps=2,
        save_strategy="no",
        seed=0,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    return TrainingArguments(**{**base, **kw})


def test_the_trainer_loss_and_gradients_are_textdistills(tiny_bert: str, sst2_dir: Path, tmp_path: Path) -> None:
    teacher, student, tok = _models(tiny_bert)
    student.eval()  # no dropout: both sides see the same forward
    rows = _data(tok, sst2_dir, 8)
    inputs = DataCollatorWithPadding(tok)(rows)
    cfg = {"temperature": 3.0, "alpha": 0.7}
    trainer = DistillationTrainer(
        model=student,
        teacher=teacher,
        args=_args(tmp_path),
        distill=cfg,
        data_collator=DataCollatorWithPadding(tok),
        train_dataset=rows,
    )
    student.train(False)
    student.training = True  # compute_loss's training path, with dropout still off (eval-mode submodules)
    loss = trainer.compute_loss(student, dict(inputs))
    grads = torch.autograd.grad(loss, [p for p in student.parameters() if p.requires_grad], allow_unused=True)
    ours = DistillationObjective(DistillConfig(**cfg), teacher)
    batch = {"student": {k: v for k, v in inputs.items() if k != "labels"}, "labels": inputs["labels"]}
    terms = ours(student, batch, 0.0)
    assert torch.allclose(loss, terms["loss"], atol=1e-6)
    theirs = torch.autograd.grad(terms["loss"], [p for p in student.parameters() if p.requires_grad], allow_unused=True)
    for a, b in zip(grads, theirs):
        assert (a is None and b is None) or torch.allclose(a, b, atol=1e-6)
    # and the closed form: alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE
    with torch.no_grad():
        s = student(**batch["student"]).logits
        t = teacher(**batch["student"]).logits
        kl = F.kl_div(F.log_softmax(s / 3.0, -1), F.log_softmax(t / 3.0, -1), log_target=True, reduction="batchmean")
        expected = 0.7 * 9.0 * kl + 0.3 * F.cross_entropy(s, inputs["labels"])
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-5)


def test_a_short_run_trains_logs_its_terms_and_resumes(tiny_bert: str, sst2_dir: Path, tmp_path: Path) -> None:
    teacher, student, tok = _models(tiny_bert, narrow=True)
    rows = _data(tok, sst2_dir)
    distill = {
        "temperature": 2.0,
        "alpha": 0.5,
        "layer_map": [{"strategy": "last", "feature": "hidden", "loss": "mse"}],
    }
    args = _args(tmp_path / "out", max_steps=6, save_strategy="steps", save_steps=3, eval_strategy="no")
    trainer = DistillationTrainer(
        model=student,
        teacher=teacher,
        args=args,
        distill=distill,
        data_collator=DataCollatorWithPadding(tok),
        train_dataset=rows,
    )
    result = trainer.train()
    assert trainer.state.global_step == 6 and math.isfinite(result.training_loss)
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert logged and all({"kd", "ce", "intermediate"} <= h.keys() for h in logged)
    assert (tmp_path / "out" / "checkpoint-3" / OBJECTIVE_FILE).is_file()  # the projection's state, with the student's
    projection_params = {id(p) for p in trainer.objective.parameters()}
    optimised = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert projection_params <= optimised  # the intermediate term's parameters train with the student

    # resumed from step 3 with a fresh trainer: it runs steps 4..6 only and ends where the uninterrupted run did
    teacher2, student2, _ = _models(tiny_bert, narrow=True)
    again = DistillationTrainer(
        model=student2,
        teacher=teacher2,
        args=args,
        distill=distill,
        data_collator=DataCollatorWithPadding(tok),
        train_dataset=rows,
    )
    again.train(resume_from_checkpoint=str(tmp_path / "out" / "checkpoint-3"))
    assert again.state.global_step == 6
    steps = [h["step"] for h in again.state.log_history if "loss" in h]
    assert steps == [h["step"] for h in logged] == [2, 4, 6]  # step 2's record comes back with the checkpoint
    for (name, a), b in zip(student.state_dict().items(), student2.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-5), name


def test_bad_settings_are_one_line_errors(tiny_bert: str, sst2_dir: Path, tmp_path: Path) -> None:
    teacher, student, tok = _models(tiny_bert)
    with pytest.raises(
        TextDistillError, match=r"^distill=: invalid config: temperature: Input should be greater than 0 \(got -1\)$"
    ):
        DistillationTrainer(model=student, teacher=teacher, args=_args(tmp_path), distill={"temperature": -1})
    with pytest.raises(TextDistillError, match=r"^distill=: invalid config: loss: "):
        DistillationTrainer(model=student, teacher=teacher, args=_args(tmp_path), distill={"loss": "cosine"})
    trainer = DistillationTrainer(model=student, teacher=teacher, args=_args(tmp_path))
    with pytest.raises(TextDistillError, match="the batches carry no 'labels'"):
        trainer.compute_loss(student.train(), {"input_ids": torch.tensor([[2, 5, 3]])})
