"""The learning rate, chosen when the config gives none: a few short runs of the real loop, scored on dev.

Each candidate rate trains the model for the same short budget (a third of an epoch, 30 to 150 optimizer steps) from
the same starting weights and random state, and is scored on (up to 1,000 examples of) the dev set. Short runs favour
large rates: a large rate is ahead after a few steps and often worse over a whole run (on SST-2, 3e-4 led 1e-4 by 1.5
points after 42 steps and left the teacher at 79.5 where 1e-4 reaches 86.6). So the chosen rate is the smallest whose
score is within one standard error of the difference from the best one (``sqrt(2 p (1 - p) / n)`` for a score ``p``
on ``n`` dev examples: a gap that noise alone makes), among the rates that learned something: a score above the
untrained model's by more than one example's worth (a rate too small to move in a few steps still shows the
untrained score, a majority-class guess: on MRPC, 3e-5's trial sat at 68.4, the share of the majority class). The
grids stop where fine-tuning practice does. The trials run on the model itself, whose weights (and the objective's,
such as intermediate-layer projections) are put back after each, so forward hooks and feature taps see the model
they were made for.

The choice is written to ``logs/<name>-learning-rate.json`` in the run folder (how it was chosen, every trial's
score), and a resumed run reads it back instead of searching again.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from textdistill.config import TrainingConfig
from textdistill.data import Collator, DistillDataset
from textdistill.train import Objective, process_state, train_loop

# Pretrained transformers (teachers, students cut from them) fine-tune at 1e-5 .. 3e-4; word-level students
# (BiLSTM, TextCNN, MLP) trained from scratch or from copied embeddings want 1e-3 and more.
TRANSFORMER_RATES = (3e-5, 1e-4, 3e-4)
CLASSIC_RATES = (3e-4, 1e-3, 3e-3)
MIN_TRIAL_STEPS, MAX_TRIAL_STEPS = 30, 150
MAX_TRIAL_DEV = 1000


def candidate_rates(model: nn.Module) -> tuple[float, ...]:
    from textdistill.students import ClassicStudent

    return CLASSIC_RATES if isinstance(model, ClassicStudent) else TRANSFORMER_RATES


def trial_steps(train_examples: int, args: TrainingConfig) -> int:
    """A third of an epoch, 30 to 150 steps; never more than the run itself takes (``max_steps``)."""
    per_epoch = math.ceil(train_examples / (args.per_device_train_batch_size * args.gradient_accumulation_steps))
    steps = max(MIN_TRIAL_STEPS, min(MAX_TRIAL_STEPS, math.ceil(per_epoch / 3)))
    return min(steps, args.max_steps) if args.max_steps else steps


def short_run(args: TrainingConfig, rate: float, steps: int) -> TrainingConfig:
    """``args`` for a throwaway run of ``steps`` steps at ``rate``, scored once at its end: no checkpoints, no
    early stop, no time cap, no tracker."""
    update = {
        "learning_rate": rate,
        "max_steps": steps,
        "eval_steps": steps,
        "save_steps": None,
        "early_stopping_patience": None,
        "max_train_minutes": None,
        "report_to": [],
    }
    return args.model_copy(update=update)


def choose_learning_rate(
    name: str,
    model: nn.Module,
    train_set: DistillDataset,
    dev_set: DistillDataset,
    collator: Collator,
    args: TrainingConfig,
    objective: Objective,
    evaluate: Callable[[nn.Module, DistillDataset], dict[str, float]],
    metric: str,
    seed: int,
    log_dir: Path,
    teacher: nn.Module | None = None,
) -> dict[str, Any]:
    """The learning rate for ``model`` (see the module's text); returns ``{"learning_rate", "how", "trials", ...}``."""
    record = log_dir / f"{name}-learning-rate.json"
    if record.is_file():  # a resumed run: the search was done before the interruption
        return json.loads(record.read_text(encoding="utf-8"))
    steps = trial_steps(len(train_set), args)
    dev = dev_set if len(dev_set) <= MAX_TRIAL_DEV else _head(dev_set, MAX_TRIAL_DEV)
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    before = evaluate(model, dev)[metric]  # the untrained score: a trial must learn beyond it to count
    model.train()
    start_objective = (
        {k: v.detach().clone() for k, v in objective.state_dict().items()} if isinstance(objective, nn.Module) else None
    )
    trials = []
    try:
        for rate in candidate_rates(model):
            trial = short_run(args, rate, steps)
            with tempfile.TemporaryDirectory(prefix="textdistill-lr-") as tmp:
                result = train_loop(
                    model,
                    train_set,
                    collator,
                    trial,
                    objective,
                    lambda m: evaluate(m, dev),
                    metric,
                    seed,
                    Path(tmp) / "log.jsonl",
                    desc=f"{name} lr {rate:g}",
                    teacher=teacher,
                    keep_best=False,
                )
            score = result.evals[-1][f"eval_{metric}"]
            trials.append({"learning_rate": rate, metric: score if math.isfinite(score) else None})
            model.load_state_dict(start)
            if start_objective is not None:
                _restore(objective, start_objective)  # type: ignore[arg-type]
    finally:
        model.load_state_dict(start)
        if start_objective is not None:
            _restore(objective, start_objective)  # type: ignore[arg-type]
        model.train()
    untrained = before if before is not None and math.isfinite(before) else None
    chosen, margin = pick_rate(trials, metric, len(dev), min(candidate_rates(model)), untrained)
    out = {
        "learning_rate": chosen,
        "how": f"search: {len(trials)} rates, {steps} steps each, scored on {len(dev)} dev "
        f"examples; the smallest within {margin:.4f} of the best of those above the untrained score",
        "metric": metric,
        "untrained": untrained,
        "trials": trials,
        "trial_steps": steps,
        "margin": margin,
    }
    if process_state().is_main_process:  # every process ran the same trials (together, under DDP): one writes
        log_dir.mkdir(parents=True, exist_ok=True)
        tmp_record = record.with_name(f"{record.name}.{os.getpid()}.tmp")
        tmp_record.write_text(json.dumps(out, indent=1), encoding="utf-8")
        tmp_record.replace(record)
    shown = ", ".join(
        f"{t['learning_rate']:g}: {t[metric]:.4f}" if t[metric] is not None else f"{t['learning_rate']:g}: diverged"
        for t in trials
    )
    if process_state().is_main_process:
        print(
            f"[{name}] learning rate {out['learning_rate']:g} chosen by {steps}-step trials on dev ({metric}: {shown})",
            file=sys.stderr,
        )
    return out


def pick_rate(
    trials: list[dict[str, Any]], metric: str, n: int, fallback: float, start: float | None = None
) -> tuple[float, float]:
    """(the smallest rate scoring within the noise margin of the best trial, that margin). Only trials that learned
    something count: a score above the untrained model's (``start``) by more than one example's worth; a rate still
    at the starting score (a majority-class guess) is not "as good" as one that learned. When no trial learned, the
    largest rate that did not diverge is taken (the one that moves most in the full run); a diverged trial (None) is
    never chosen, and with every trial diverged the smallest rate is. The margin is one standard error of the difference
    of two scores ``p`` on ``n`` examples, ``sqrt(2 p (1 - p) / n)``, with ``p`` the best score clipped to [0, 1]
    (accuracy, F1, and on the same scale MCC and correlations)."""
    scored = [t for t in trials if t[metric] is not None]
    if not scored:
        return fallback, 0.0
    best = max(t[metric] for t in scored)
    p = min(max(best, 0.0), 1.0)
    margin = math.sqrt(2 * p * (1 - p) / max(n, 1))
    learned = [t for t in scored if start is None or t[metric] > start + 1 / max(n, 1)]
    if not learned:
        return max(t["learning_rate"] for t in scored), margin
    return min(t["learning_rate"] for t in learned if t[metric] >= best - margin), margin


def _restore(objective: nn.Module, start: dict[str, torch.Tensor]) -> None:
    """The objective's weights as they were before a trial; those it made during the trial (projections are made
    from the first batch's shapes) are drawn afresh, so no trial's training leaks into the next or into the run."""
    made = [k for k in objective.state_dict() if k not in start]
    objective.load_state_dict(start, strict=False)
    for name, module in objective.named_modules():
        if (
            name
            and any(k.startswith(name + ".") and "." not in k[len(name) + 1 :] for k in made)
            and hasattr(module, "reset_parameters")
        ):
            module.reset_parameters()


def _head(dataset: DistillDataset, n: int) -> DistillDataset:
    """The first ``n`` examples of ``dataset`` (dev order is fixed, so every trial scores the same ones)."""
    logits = dataset.teacher_logits[:n] if isinstance(dataset.teacher_logits, torch.Tensor) else None
    dropped = dataset.dropped[:n] if dataset.dropped is not None else None
    teacher = dataset.teacher[:n] if dataset.teacher is not None else None
    return DistillDataset(dataset.student[:n], dataset.labels[:n], teacher, logits, dataset.label_names, dropped)
