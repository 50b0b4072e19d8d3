"""Experiment tracking through accelerate: TensorBoard by default (every loss term, the learning rate and the eval
metric per step); a tracker that is not installed is one clear error."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_end_to_end import tiny_config

import textdistill
from textdistill.errors import TextDistillError


def _quick(tiny_bert: str, sst2_dir: Path, out: Path) -> dict:
    cfg = tiny_config(tiny_bert, sst2_dir, out)
    cfg["teacher"].update(model=tiny_bert, finetune=False)
    cfg["distill"]["baseline"] = False
    cfg["student"]["training"]["num_train_epochs"] = 1
    return cfg


def test_tensorboard_gets_every_loss_term_and_the_eval_metric(tiny_bert: str, sst2_dir: Path, tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    textdistill.distill(_quick(tiny_bert, sst2_dir, tmp_path / "run"))
    runs = list((tmp_path / "run" / "logs" / "tracking" / "student").rglob("events.out.tfevents.*"))
    assert runs, "no TensorBoard event file"
    tags: set[str] = set()
    for f in runs:
        acc = EventAccumulator(str(f.parent))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
        if "kd" in acc.Tags()["scalars"]:
            steps = [e.step for e in acc.Scalars("kd")]
            assert steps == sorted(steps) and steps[0] == 5  # logging_steps: 5
    assert {"loss", "kd", "ce", "lr", "eval_accuracy"} <= tags


def test_a_tracker_that_is_not_installed_is_named_with_its_pip_command(
    tiny_bert: str, sst2_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    cfg = _quick(tiny_bert, sst2_dir, tmp_path / "run")
    cfg["student"]["training"]["report_to"] = ["tensorboard", "wandb"]
    with pytest.raises(
        TextDistillError,
        match=r"student.training.report_to: wandb is not installed; pip install "
        r"wandb",
    ):
        textdistill.distill(cfg)
    assert not (tmp_path / "run.partial").exists()  # refused with the config, before any work
    cfg["student"]["training"]["report_to"] = []
    textdistill.distill(cfg)
    assert not (tmp_path / "run" / "logs" / "tracking").exists()
