"""The teacher's outputs over a training set, computed once: from the teacher-output cache (:mod:`textdistill.cache`)
when it holds them, else by running the teacher (and stored there). The soft targets every classic and multi-task
run distils from."""

from __future__ import annotations

import sys
import time

import torch
from torch import nn

from textdistill.cache import TeacherCache
from textdistill.config import CacheSettings
from textdistill.data import Collator, DistillDataset
from textdistill.metrics import predict_logits
from textdistill.train import process_state


def soft_targets(
    d: CacheSettings,
    name: str,
    teacher: nn.Module,
    train_set: DistillDataset,
    collator: Collator,
    batch_size: int,
    info: dict,
) -> torch.Tensor:
    """Teacher logits over the training set, once: from the teacher-output cache when it holds them (``d``: the
    cache settings; ``name``: the teacher as the config names it, kept with the cache entry)."""

    def compute() -> torch.Tensor:
        return predict_logits(teacher, train_set, collator, batch_size, "teacher", "soft targets")

    started = time.perf_counter()
    if not d.teacher_cache:
        logits = compute()
        info["soft_targets"] = {"cache": "off", "seconds": time.perf_counter() - started}
        return logits
    cache = TeacherCache(d.cache_dir, d.cache_dtype, d.cache_topk)
    features = train_set.teacher or train_set.student
    with process_state().main_process_first():  # the main process fills the cache; the others then read it
        result = cache.get_or_compute(teacher, features, teacher.config.num_labels, compute, {"teacher": name})
    info["soft_targets"] = {"cache": result.status, "seconds": result.seconds, "path": result.path}
    print(
        f"soft targets: teacher-output cache {result.status} ({result.path}, {result.seconds:.1f} s)", file=sys.stderr
    )
    return result.logits
