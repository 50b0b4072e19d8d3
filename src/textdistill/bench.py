"""``textdistill bench``: how fast a config distills and how fast its teacher and student run.

Distillation throughput (training samples/s) with the teacher online and with its outputs cached, through the
same training loop a real run uses; teacher and student CPU latency at batch 1 and throughput at batch 32; the
process's peak memory. Each throughput is the median over ``repeats`` fresh runs of ``steps`` optimizer steps.
The teacher's head need not be trained: speed does not depend on it.
"""

from __future__ import annotations

import copy
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from textdistill.config import RunConfig
from textdistill.data import Collator, LabelSet, load_splits
from textdistill.errors import TextDistillError
from textdistill.metrics import measure_speeds, predict_logits
from textdistill.models import count_parameters, load_classifier, pad_id
from textdistill.objective import DistillationObjective
from textdistill.pipeline import (
    _dataset,
    _make_student,
    _teacher_cfg,
    _texts,
    _used_ids,
    as_config,
)
from textdistill.runfolder import machine_info
from textdistill.train import resolve_mixed_precision, train_loop
from textdistill.vocab import check_prunable


def _peak_memory_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def bench(
    cfg: RunConfig | dict | str, overrides: list[str] | None = None, steps: int = 30, repeats: int = 3
) -> dict[str, Any]:
    cfg = as_config(cfg, overrides)
    if cfg.student is None:
        raise TextDistillError("student: required for bench")
    if cfg.distill.uses_intermediate:
        raise TextDistillError(
            "bench: intermediate features need the teacher online; bench measures logits distillation"
        )
    teacher_cfg = _teacher_cfg(cfg)
    train, dev = load_splits(cfg.data)
    teacher, ttok, labels = load_classifier(
        teacher_cfg.model, LabelSet.from_data(train, cfg.data.task_type), "teacher.model", require_trained_head=False
    )
    teacher.eval().requires_grad_(False)
    args = cfg.student.training
    batch = args.per_device_train_batch_size * args.gradient_accumulation_steps
    subset = train.head(steps * batch)
    if len(subset) < steps * batch:
        raise TextDistillError(
            f"bench: {steps} steps of {batch} need {steps * batch} training examples, the data has {len(subset)}"
        )
    keep_ids = None
    if cfg.student.prune_vocabulary:  # as a run would cut it: the pieces of the benched examples and of dev
        check_prunable(ttok)
        keep_ids = _used_ids(ttok, [subset, dev])
    student, stok, recipe = _make_student(cfg, teacher, ttok, labels, _texts(train), keep_ids)
    train_set = _dataset(stok, subset, labels, cfg.data.max_length, ttok)
    collator = Collator(pad_id(stok), pad_id(ttok))
    loop_args = args.model_copy(update={"max_steps": steps, "eval_steps": None, "logging_steps": steps})
    metric = cfg.eval.metric

    t0 = time.perf_counter()
    logits = predict_logits(teacher, train_set, collator, args.per_device_eval_batch_size, side="teacher")
    cache_build_seconds = time.perf_counter() - t0
    rates: dict[str, list[float]] = {"online": [], "cached": []}
    steady: dict[str, list[float]] = {"online": [], "cached": []}  # the same runs after their warm-up steps
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats):
            for mode in ("online", "cached"):
                online = mode == "online"
                result = train_loop(
                    copy.deepcopy(student),
                    train_set if online else train_set.with_teacher_logits(logits),
                    collator,
                    loop_args,
                    DistillationObjective(cfg.distill, teacher if online else None),
                    lambda m: {metric: 0.0},
                    metric,
                    cfg.seed + r,
                    Path(tmp) / f"{mode}{r}.jsonl",
                    desc=f"bench {mode}",
                    teacher=teacher if online else None,
                )
                rates[mode].append(result.samples_per_second)
                steady[mode].append(result.steady_samples_per_second)
    dev_t = _dataset(ttok, dev, labels, cfg.data.max_length)
    dev_s = _dataset(stok, dev, labels, cfg.data.max_length)
    n = cfg.eval.latency_samples
    speeds = measure_speeds(
        {"teacher": (teacher, dev_t.student[:n], pad_id(ttok)), "student": (student, dev_s.student[:n], pad_id(stok))},
        cfg.eval.latency_repeats,
    )  # timed in turns
    speed_t, speed_s = speeds["teacher"], speeds["student"]
    online, cached = statistics.median(rates["online"]), statistics.median(rates["cached"])
    s_online, s_cached = statistics.median(steady["online"]), statistics.median(steady["cached"])
    return {
        "config": {
            "teacher": teacher_cfg.model,
            "student": recipe,
            "batch_size": batch,
            "steps": steps,
            "repeats": repeats,
            "max_length": cfg.data.max_length,
            "mixed_precision": resolve_mixed_precision(args.mixed_precision),
            "torch_compile": args.torch_compile_mode if args.torch_compile else None,
        },
        "distill_samples_per_second": {"online": online, "cached": cached, "runs": rates},
        "cache_speedup": cached / online if online else None,
        # each repeat runs online then cached, back to back: the median of their ratios is less moved by a CPU whose
        # speed drifts between repeats than the ratio of the two medians
        "paired_cache_speedup": statistics.median(c / o for o, c in zip(rates["online"], rates["cached"]))
        if all(rates["online"])
        else None,
        # after each run's first train.WARMUP_STEPS steps (start-up and compilation left out); 0 for shorter runs
        "steady_samples_per_second": {"online": s_online, "cached": s_cached, "runs": steady},
        "steady_cache_speedup": s_cached / s_online if s_online else None,
        "cache_build_seconds": cache_build_seconds,
        "teacher": {"params": count_parameters(teacher), **speed_t},
        "student": {"params": count_parameters(student), **speed_s},
        "speedup_batch1": speed_t["latency_ms_batch1"] / speed_s["latency_ms_batch1"],
        "speedup_batch32": speed_s["throughput_batch32"] / speed_t["throughput_batch32"],
        "peak_memory_mb": _peak_memory_mb(),
        "machine": machine_info(),
    }
