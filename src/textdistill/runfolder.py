"""The run folder every run kind writes: ``<output_dir>.partial`` while the run works, the lock that keeps a second
process out, the saved models, ``metrics.json`` and the reports, and the rename to ``output_dir`` when the run is
complete (so a failed or interrupted run never leaves a folder that looks finished). The safety rules it applies
(what may be replaced, what is protected) are :mod:`textdistill.outdir`'s."""

from __future__ import annotations

import errno
import json
import os
import platform
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

from textdistill.config import AnyRunConfig, EvalConfig
from textdistill.data import DistillDataset
from textdistill.errors import TextDistillError
from textdistill.metrics import measure_speed
from textdistill.models import count_parameters, folder_size_bytes, save_model
from textdistill.outdir import (
    MARKER,
    FolderLock,
    check_output,
    check_replaceable,
    protected_paths,
    release_lock_of,
    shown,
    write_marker,
)
from textdistill.train import process_state


def guard_output(
    cfg: AnyRunConfig,
    output: str | os.PathLike,
    what: str,
    is_folder: bool = True,
    inputs: list[tuple[str, str]] | None = None,
) -> None:
    """Refuse, before any work, an output that is (or, for a folder, contains or lies above) an input of ``cfg``,
    its config file, the working folder or a cache (:func:`textdistill.outdir.check_output`)."""
    protected = protected_paths(cfg.model_dump(mode="json"), cfg._config_file, inputs or [])
    check_output(output, protected, what, is_folder=is_folder)


class RunFolder:
    """``<output_dir>.partial`` while the run works; renamed to ``output_dir`` by :meth:`commit`.

    Before any work it refuses an output folder that would replace something that is not a run folder (see
    :mod:`textdistill.outdir`: inputs, the config, the working folder, caches, a user's folder) and takes the run's
    lock, so that a second process given the same folder is refused at once. In a multi-process run
    (``accelerate launch``) only the main process writes, and locks.
    """

    def __init__(self, cfg: AnyRunConfig, resume: bool = False, kind: str = "distill") -> None:
        self.final = Path(cfg.output_dir)
        if self.final.name in ("", ".", ".."):
            raise TextDistillError(
                f"output_dir: {shown(cfg.output_dir)} names no folder of its own; give the run a "
                f"folder (e.g. runs/name)"
            )
        self.path = self.final.with_name(self.final.name + ".partial")
        self.cfg = cfg
        self.resume = resume
        self.kind = kind
        self.main = process_state().is_main_process
        self._exists(self.final)  # a name the file system refuses, a parent that is a file: one line, now
        for target in (self.final, self.path):
            guard_output(cfg, target, "output_dir")
        if self.main:
            FolderLock(self.final.with_name(self.final.name + ".partial.lock"), "output_dir").acquire()
        if resume:
            written = self.path / "config.yaml"
            if not written.is_file():
                raise TextDistillError(
                    f"--resume: no interrupted run to resume at {self.path} (nothing was checkpointed there)"
                )
            if written.read_text(encoding="utf-8") != cfg.to_yaml():
                raise TextDistillError(
                    f"--resume: the config differs from the interrupted run's ({written}); resume "
                    f"with the same "
                    "config and overrides"
                )
        else:
            if self._exists(self.final):
                if not cfg.overwrite_output_dir:
                    raise TextDistillError(
                        f"output_dir: {self.final} already exists; choose another or set overwrite_output_dir: true"
                    )
                check_replaceable(
                    self.final,
                    "output_dir",
                    "overwrite_output_dir replaces run folders only; delete it yourself or choose another output_dir",
                )
            check_replaceable(
                self.path,
                "output_dir",
                "a run starts its .partial folder afresh; move it away, or --resume the run it holds",
            )

    @staticmethod
    def _exists(path: Path) -> bool:
        """Whether ``path`` exists; a name the file system refuses (too long, a file where a folder must be) is a
        config error, not a crash halfway through the run."""
        try:
            path.with_name(path.name + ".partial").exists()  # the longer name, written first
            exists = path.exists()
        except OSError as exc:
            limit = (
                (f"; names of at most {os.pathconf('/', 'PC_NAME_MAX')} characters")
                if exc.errno == errno.ENAMETOOLONG
                else ""
            )
            raise TextDistillError(
                f"output_dir: {shown(path)}: cannot be used ({exc.strerror or exc}{limit})"
            ) from None
        except ValueError as exc:  # an embedded NUL
            raise TextDistillError(f"output_dir: {shown(path)}: cannot be used ({exc})") from None
        if not exists:  # the run will create it: its nearest existing ancestor must be a folder it may write in
            ancestor = next(a for a in path.absolute().parents if a.exists())
            if not ancestor.is_dir():
                raise TextDistillError(
                    f"output_dir: {shown(path)}: cannot be used (Not a directory: {ancestor} is a file)"
                )
            if not os.access(ancestor, os.W_OK | os.X_OK):
                raise TextDistillError(
                    f"output_dir: {shown(path)}: cannot be used (Permission denied: cannot write in {ancestor})"
                )
        return exists

    def open(self) -> "RunFolder":
        """Start the run's ``.partial`` folder afresh, or, resuming, keep it with its checkpoints."""
        if self.main and not self.resume:
            if self.path.exists():
                check_replaceable(self.path, "output_dir", "it changed since the run began")
                shutil.rmtree(self.path)
            self.path.mkdir(parents=True)
            write_marker(self.path, self.kind)  # first, so that the folder is known as a run folder from the start
            (self.path / "config.yaml").write_text(self.cfg.to_yaml(), encoding="utf-8")
        return self

    def checkpoints(self, name: str) -> Path:
        """Where the training loop of ``name`` keeps its checkpoints (removed when the run is committed)."""
        return self.path / "checkpoints" / name

    def save(self, name: str, model: nn.Module, tokenizer: Any, extra: dict[str, Any]) -> Path:
        if self.main:
            save_model(model, tokenizer, self.path / name, extra)
        return self.path / name

    def write_json(self, name: str, obj: Any) -> None:
        if not self.main:
            return
        tmp = self.path / (name + ".tmp")
        tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False), encoding="utf-8")
        tmp.replace(self.path / name)

    def finish(
        self,
        report: dict[str, Any],
        render: Any,
        started: float,
        extra: dict[str, Any] | None = None,
        html: bool = True,
    ) -> dict[str, Any]:
        """Add the run's time and machine to ``report``, write ``metrics.json``, ``report.md`` (``render(report)``),
        ``report.html`` (``html``) and each ``extra`` file (path in the run -> its renderer), commit the folder;
        returns the report with its ``output_dir``."""
        report["total_seconds"] = time.perf_counter() - started
        report["machine"] = machine_info()
        self.write_json("metrics.json", report)
        (self.path / "report.md").write_text(render(report), encoding="utf-8")
        if html:
            from textdistill.html_report import write_html_or_warn

            write_html_or_warn(self.path)  # report.html, the plots; a failure to draw only warns
        for name, make in (extra or {}).items():
            (self.path / name).write_text(make(report), encoding="utf-8")
        report["output_dir"] = str(self.commit())
        return report

    def commit(self) -> Path:
        if self.main:
            shutil.rmtree(self.path / "checkpoints", ignore_errors=True)  # the trained models are saved on their own
            if not (self.path / MARKER).is_file():  # a run resumed from a .partial of a version before the marker
                write_marker(self.path, self.kind)
            if os.path.lexists(self.final):
                check_replaceable(
                    self.final, "output_dir", f"it appeared while the run worked; the finished run stays in {self.path}"
                )
                shutil.rmtree(self.final)
            self.path.replace(self.final)
            release_lock_of(self.final.with_name(self.final.name + ".partial.lock"))
        return self.final


def profile(
    model: nn.Module,
    folder: Path | None,
    dev_set: DistillDataset,
    pad: int,
    ev: EvalConfig,
    metrics: dict,
    speed: dict | None = None,
) -> dict:
    """Metrics, size and CPU speed of a saved model, on the first ``latency_samples`` dev examples (``speed``: as
    measured already, side by side with another model by :func:`measure_speeds`)."""
    feats = dev_set.student[: ev.latency_samples]
    return {
        "metrics": metrics,
        "params": count_parameters(model),
        "size_bytes": folder_size_bytes(folder) if folder is not None else None,
        **(speed if speed is not None else measure_speed(model, feats, pad, repeats=ev.latency_repeats)),
    }


def machine_info() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
