"""Regression tasks (GLUE STS-B): numeric labels, one output, MSE distillation, Pearson/Spearman; bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import textdistill
from textdistill.config import config_from_dict, data_dir
from textdistill.data import Collator, LabelSet, TextData
from textdistill.errors import TextDistillError
from textdistill.losses import distillation_loss, hard_label_loss

STSB = Path(data_dir()) / "glue_stsb"


@pytest.fixture(scope="module")
def stsb_dir() -> Path:
    if not (STSB / "train.tsv").is_file():
        pytest.skip(f"shared STS-B data not found at {STSB} (set TEXTDISTILL_DATA)")
    return STSB


def stsb_config(tiny_bert: str, stsb: Path, out: Path) -> dict:
    fast = {"num_train_epochs": 2, "per_device_train_batch_size": 16, "learning_rate": 1e-3, "logging_steps": 5}
    return {
        "output_dir": str(out),
        "seed": 3,
        "data": {
            "train_file": str(stsb / "train.tsv"),
            "validation_file": str(stsb / "dev.tsv"),
            "text_column": "sentence1",
            "text_pair_column": "sentence2",
            "label_column": "score",
            "task_type": "regression",
            "max_length": 64,
            "max_train_samples": 192,
            "max_eval_samples": 96,
        },
        "teacher": {"model": tiny_bert, "finetune": True, "training": fast},
        "student": {"layers": [0, 3], "training": fast},
        "distill": {"alpha": 0.5},
        "eval": {"latency_repeats": 2, "latency_samples": 16},
    }


def test_regression_losses_are_mse() -> None:
    s, t, y = torch.tensor([[1.0], [2.0]]), torch.tensor([[2.0], [2.0]]), torch.tensor([3.0, 2.0])
    assert torch.allclose(hard_label_loss(s, y), torch.tensor((4.0 + 0.0) / 2))
    terms = distillation_loss(s, t, y, kind="kl", temperature=4.0, alpha=0.25)  # kl means nothing on one output
    assert torch.allclose(terms["kd"], torch.tensor(0.5)) and torch.allclose(terms["ce"], torch.tensor(2.0))
    assert torch.allclose(terms["loss"], torch.tensor(0.25 * 0.5 + 0.75 * 2.0))


def test_scores_are_parsed_and_batched_as_floats() -> None:
    data = TextData(texts=["a", "b"], labels=["4.750", "0"], pairs=None, source="x.tsv", rows=[2, 3])
    labels = LabelSet.from_data(data, "regression")
    assert len(labels) == 1 and labels.regression and labels.encode(data) == [4.75, 0.0]
    batch = Collator(0)(
        [{"student": {"input_ids": [1]}, "labels": 4.75}, {"student": {"input_ids": [1, 2]}, "labels": 0.0}]
    )
    assert batch["labels"].dtype == torch.float32
    bad = TextData(texts=["a", "b"], labels=["1.0", "high"], pairs=None, source="x.tsv", rows=[2, 3])
    with pytest.raises(TextDistillError, match=r"x.tsv:3: label 'high' is not a number \(regression task\)"):
        labels.encode(bad)


def test_metric_must_fit_the_task(tmp_path: Path) -> None:
    cfg = {"data": {"train_file": "a.tsv", "validation_file": "b.tsv", "task_type": "regression"}}
    assert config_from_dict(cfg).eval.metric == "pearson"
    with pytest.raises(TextDistillError, match="'accuracy' does not apply to a regression task"):
        config_from_dict({**cfg, "eval": {"metric": "accuracy"}})
    with pytest.raises(TextDistillError, match="'spearman' does not apply to a classification task"):
        config_from_dict({"data": {"train_file": "a.tsv", "validation_file": "b.tsv"}, "eval": {"metric": "spearman"}})


def test_stsb_distills_end_to_end(tiny_bert: str, stsb_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForSequenceClassification

    report = textdistill.distill(stsb_config(tiny_bert, stsb_dir, tmp_path / "run"))
    assert report["metric"] == "pearson"
    for side in ("teacher", "student", "baseline"):
        m = report[side]["metrics"]
        assert {"pearson", "spearman", "corr", "mse"} <= m.keys()
        assert -1.0 <= m["pearson"] <= 1.0 and m["corr"] == pytest.approx((m["pearson"] + m["spearman"]) / 2)
    student = AutoModelForSequenceClassification.from_pretrained(tmp_path / "run" / "student")
    assert student.config.num_labels == 1 and student.config.problem_type == "regression"
    steps = [json.loads(line) for line in (tmp_path / "run" / "logs" / "student.jsonl").read_text().splitlines()]
    train = [s for s in steps if "kd" in s]
    assert train and all(s["loss"] == pytest.approx(0.5 * s["kd"] + 0.5 * s["ce"], rel=1e-4) for s in train)
    # a regression teacher is refused for a classification task, by name
    cfg = stsb_config(tiny_bert, stsb_dir, tmp_path / "again")
    cfg["data"]["task_type"] = "classification"
    cfg["teacher"] = {"model": str(tmp_path / "run" / "teacher"), "finetune": False}
    with pytest.raises(TextDistillError, match="is a regression model but the task is classification"):
        textdistill.distill(cfg)
