"""Checkpoints and --resume: a run killed mid-epoch (SIGKILL) or stopped by SIGTERM resumes and ends with exactly the
metrics of a run never interrupted (CPU, same seed); a full disk leaves the last good checkpoint intact."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from test_end_to_end import tiny_config
from test_generative import files  # noqa: F401  (a fixture)

import textdistill
from textdistill.errors import TextDistillError


def resumable_config(tiny_bert: str, sst2_dir: Path, out: Path) -> dict:
    cfg = tiny_config(tiny_bert, sst2_dir, out)
    for side in ("teacher", "student"):
        cfg[side]["training"].update(save_steps=3, logging_steps=2, num_train_epochs=3)
    return cfg


def _lines(run: Path, name: str) -> list[dict]:
    return [json.loads(line) for line in (run / "logs" / f"{name}.jsonl").read_text().splitlines()]


def _metrics(run: Path) -> dict:
    m = json.loads((run / "metrics.json").read_text())
    return {side: m[side]["metrics"] for side in ("teacher", "student", "baseline")}


@pytest.fixture(scope="module")
def uninterrupted(tiny_bert: str, sst2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("resume") / "whole"
    textdistill.distill(resumable_config(tiny_bert, sst2_dir, out))
    assert not (out / "checkpoints").exists()  # checkpoints are dropped when the run completes
    return out


def _start(cfg: dict, folder: Path) -> subprocess.Popen:
    path = folder / "run.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return subprocess.Popen(
        [sys.executable, "-m", "textdistill", "distill", "-c", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"the run ended before {path} appeared: {proc.stderr.read()[-2000:]}"  # type: ignore[union-attr]
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_stopped_run_resumes_to_the_same_metrics(
    uninterrupted: Path, tiny_bert: str, sst2_dir: Path, tmp_path: Path, sig
) -> None:
    out = tmp_path / "run"
    cfg = resumable_config(tiny_bert, sst2_dir, out)
    proc = _start(cfg, tmp_path)
    checkpoint = out.with_name("run.partial") / "checkpoints" / "student" / "checkpoint.pt"
    _wait_for(checkpoint, proc)  # the student is mid-training: the teacher is done, the twin not started
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=300)
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
    else:  # SIGTERM: a checkpoint at the next step, one line, exit 130
        assert proc.returncode == 130, err[-2000:]
        assert "training stopped by a signal: checkpoint at step" in err and "rerun with --resume" in err
    assert not out.exists()  # nothing that looks complete
    stopped_at = torch.load(checkpoint, weights_only=True)["step"]
    total = len(_lines(uninterrupted, "student"))
    assert 0 < stopped_at and len(_lines(out.with_name("run.partial"), "student")) < total

    report = textdistill.distill(cfg, resume=True)
    assert Path(report["output_dir"]) == out and not (out / "checkpoints").exists()
    assert _metrics(out) == _metrics(uninterrupted)  # identical, not close: same batches, same random states
    for name in ("teacher", "student", "baseline"):
        assert _lines(out, name) == _lines(uninterrupted, name), name  # every logged loss and evaluation, once


def test_resume_refuses_another_config_or_nothing_to_resume(tiny_bert: str, sst2_dir: Path, tmp_path: Path) -> None:
    cfg = resumable_config(tiny_bert, sst2_dir, tmp_path / "run")
    with pytest.raises(TextDistillError, match=r"--resume: no interrupted run to resume at .*run.partial"):
        textdistill.distill(cfg, resume=True)
    partial = tmp_path / "run.partial"
    partial.mkdir()
    (partial / "config.yaml").write_text("seed: 1\n", encoding="utf-8")
    with pytest.raises(TextDistillError, match="--resume: the config differs from the interrupted run's"):
        textdistill.distill(cfg, resume=True)


@pytest.mark.parametrize("error", ["OSError", "RuntimeError"])
def test_a_full_disk_keeps_the_last_good_checkpoint(
    tiny_bert: str, sst2_dir: Path, tmp_path: Path, monkeypatch, error: str
) -> None:
    """torch.save reports ENOSPC as an OSError or, from its zip writer, as a RuntimeError: either way the half-written
    file goes and the one line names the last good checkpoint. Resuming from a file that is not a checkpoint of ours,
    or whose tensors do not fit the model, is one line naming it."""
    import textdistill.train as train

    cfg = resumable_config(tiny_bert, sst2_dir, tmp_path / "run")
    cfg["teacher"]["finetune"] = False
    cfg["teacher"]["model"] = tiny_bert
    cfg["distill"]["baseline"] = False
    real_save, calls = torch.save, []

    def save(obj, path, *a, **k):
        calls.append(path)
        if len(calls) == 3:  # the third checkpoint finds the disk full
            Path(path).write_bytes(b"partial")
            if error == "RuntimeError":
                raise RuntimeError(
                    "[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed writing "
                    "file data/3: file write failed"
                )
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, path, *a, **k)

    monkeypatch.setattr(train.torch, "save", save)
    why = (
        (
            r"No space left on "
            r"device"
        )
        if error == "OSError"
        else (
            r"torch\.save: .*PytorchStreamWriter failed writing file.*; is the "
            r"disk full\?"
        )
    )
    with pytest.raises(
        TextDistillError,
        match=rf"checkpoint: cannot write .*checkpoint.pt \({why}\); "
        r"the last good checkpoint .*student/checkpoint\.pt \(step 6\) is "
        r"intact",
    ):
        textdistill.distill(cfg)
    folder = tmp_path / "run.partial" / "checkpoints" / "student"
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint.pt"]  # no half-written file left
    assert torch.load(folder / "checkpoint.pt", weights_only=True)["step"] == 6
    assert not (tmp_path / "run").exists()
    if error == "RuntimeError":
        return
    monkeypatch.setattr(train.torch, "save", real_save)
    checkpoint = folder / "checkpoint.pt"
    good = torch.load(checkpoint, weights_only=True)
    good["model"]["classifier.weight"] = torch.zeros(3, good["model"]["classifier.weight"].shape[1])
    torch.save(good, checkpoint)
    with pytest.raises(
        TextDistillError,
        match=r"--resume: .*student/checkpoint\.pt does not fit the model: "
        r"classifier\.weight has "
        r"shape \[3, 32\] there, \[2, 32\] in the model",
    ):
        textdistill.distill(cfg, resume=True)
    checkpoint.write_text("not a checkpoint\n", encoding="utf-8")
    with pytest.raises(
        TextDistillError,
        match=r"--resume: .*student/checkpoint\.pt is not a textdistill checkpoint "
        r"\(unreadable",
    ):
        textdistill.distill(cfg, resume=True)
    assert not (tmp_path / "run").exists()


def kill_and_resume(config, tmp_path: Path, after_kill=None) -> tuple[dict, dict]:
    """A whole run of ``config(out)``; the same run SIGKILLed after its student's first checkpoint and resumed:
    (whole report, resumed report), with the student's logs checked identical (every loss and evaluation, once).
    ``after_kill(partial_run_folder)`` runs between the kill and the resume."""
    whole = textdistill.distill(config(tmp_path / "whole"))
    out = tmp_path / "run"
    proc = _start(config(out), tmp_path)
    _wait_for(out.with_name("run.partial") / "checkpoints" / "student" / "checkpoint.pt", proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=300)
    assert len(_lines(out.with_name("run.partial"), "student")) < len(_lines(tmp_path / "whole", "student"))  # mid-run
    if after_kill is not None:
        after_kill(out.with_name("run.partial"))
    time.sleep(1.1)  # a resume comes later in real life; TensorBoard orders event files by their creation second
    resumed = textdistill.distill(config(out), resume=True)
    assert _lines(out, "student") == _lines(tmp_path / "whole", "student")
    return whole, resumed


def test_a_killed_multi_task_run_resumes_to_the_same_scores(tiny_bert: str, sst2_dir: Path, tmp_path: Path) -> None:
    from test_task_distill import two_tasks

    def config(out: Path) -> dict:
        cfg = two_tasks(tiny_bert, sst2_dir, out)
        cfg["student"]["training"].update(save_steps=2, logging_steps=1)
        return cfg

    whole, resumed = kill_and_resume(config, tmp_path)
    for name in whole["tasks"]:
        assert resumed["tasks"][name]["student"]["metrics"] == whole["tasks"][name]["student"]["metrics"], name


@pytest.mark.parametrize(
    "generative",
    [{"on_policy": 0.5, "divergence": "jsd"}, {"teacher_cache": {"top_k": 8}}],
    ids=["on-policy", "top-k-cache"],
)
def test_a_killed_generative_run_resumes_to_the_same_logs_and_scores(
    files,  # noqa: F811  (the fixture)
    tmp_path: Path,
    monkeypatch,
    generative: dict,
) -> None:
    """The on-policy draws and samples, and the cached top-k targets, come back the same after a kill."""
    from test_generative import run_config

    monkeypatch.setenv("TEXTDISTILL_CACHE", str(tmp_path / "cache"))  # (the subprocess inherits it)

    def config(out: Path) -> dict:
        cfg = run_config(files, out, **generative)
        cfg["student"]["training"].update(save_steps=2, logging_steps=1)
        cfg["baseline"] = False
        return cfg

    whole, resumed = kill_and_resume(config, tmp_path)
    for key in ("perplexity", "agreement", "divergence_to_teacher"):
        assert resumed["student"][key] == whole["student"][key], key


def test_tensorboard_has_each_step_once_after_a_resume(files, tmp_path: Path, monkeypatch) -> None:  # noqa: F811
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from test_generative import run_config

    def config(out: Path) -> dict:
        cfg = run_config(files, out)
        cfg["student"]["training"].update(save_steps=2, logging_steps=1, report_to=["tensorboard"])
        cfg["baseline"] = False
        return cfg

    def logged_past_the_checkpoint(partial: Path) -> None:
        """What a killed run's writer had flushed after its last checkpoint (SIGKILL usually loses it; not always)."""
        from torch.utils.tensorboard import SummaryWriter

        step = torch.load(partial / "checkpoints" / "student" / "checkpoint.pt", weights_only=True)["step"]
        with SummaryWriter(str(partial / "logs" / "tracking" / "student")) as writer:
            for s in range(step + 1, step + 4):
                writer.add_scalar("loss", 99.0, s)

    kill_and_resume(config, tmp_path, logged_past_the_checkpoint)

    def steps(run: Path) -> list[int]:
        acc = EventAccumulator(str(run / "logs" / "tracking" / "student"))  # its event files (the scalars)
        acc.Reload()
        return [e.step for e in acc.Scalars("loss")]

    assert steps(tmp_path / "run") == steps(tmp_path / "whole") == list(range(1, 13))  # each step once, in order
