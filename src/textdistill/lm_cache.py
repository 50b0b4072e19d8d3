"""Offline teacher for generative distillation: the teacher's top-k next-token log-probabilities on every completion
token of the training set, computed once and kept in the teacher-output cache (:mod:`textdistill.cache`).

Per completion token (the positions :func:`textdistill.lm_losses.completion_mask` selects, in order) the cache holds
the ``k`` most probable token ids (``uint16`` when the vocabulary fits, as SmolLM2's 49,152 tokens do, else
``int32``) and their log-probabilities under the **full** softmax at the run's temperature (``float16``):
``k * (2 + 2)`` bytes per token, e.g. 256 for k = 64. ``offsets[i]:offsets[i + 1]`` are example ``i``'s rows. The
loss (:func:`textdistill.lm_losses.forward_kl_topk`) keeps the teacher's missing mass ``1 - sum_k p`` as one bucket
against the student's mass outside those ``k`` tokens, so nothing is renormalised away.

The entry's key covers the teacher's weights, the exact token ids and labels (so the completion positions), ``k``
and the temperature; an entry is written atomically and checked (sizes, sha256) when read (see textdistill.cache).
"""

from __future__ import annotations

import hashlib
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from textdistill.cache import TeacherCache, fingerprint_inputs, fingerprint_model
from textdistill.config import GenerativeCacheConfig
from textdistill.data import Collator, DistillDataset, ordered_batches
from textdistill.errors import TextDistillError
from textdistill.lm_losses import completion_mask, topk_teacher
from textdistill.lm_models import final_hidden, output_head
from textdistill.progress import progress

VALUE_DTYPE = np.float16


def index_dtype(vocab_size: int) -> type[np.integer]:
    """The smallest index type that holds every token id: uint16 up to 65,536 tokens, else int32."""
    return np.uint16 if vocab_size <= 2**16 else np.int32


@dataclass
class TopKTargets:
    """The teacher's top-k targets of a dataset: ``indices`` / ``logprobs`` ``[tokens, k]`` (completion tokens of all
    examples, in order) and ``offsets`` ``[examples + 1]``; ``targets[i]`` is example ``i``'s ``(indices, logprobs)``
    as tensors (int64, float32)."""

    indices: np.ndarray
    logprobs: np.ndarray
    offsets: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        return torch.from_numpy(self.indices[a:b].astype(np.int64)), torch.from_numpy(
            self.logprobs[a:b].astype(np.float32)
        )

    @property
    def tokens(self) -> int:
        return int(self.offsets[-1])

    @property
    def k(self) -> int:
        return int(self.indices.shape[1])

    @property
    def bytes_per_token(self) -> int:
        return self.k * (self.indices.dtype.itemsize + self.logprobs.dtype.itemsize)


@dataclass
class TopKCollator(Collator):
    """The generative collator for a dataset carrying :class:`TopKTargets` (its ``teacher_logits``): adds
    ``batch["teacher_topk"] = (indices, logprobs)`` ``[B, L, k]``, each example's rows placed at its completion
    positions (zeros elsewhere, which the loss's mask never reads)."""

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        targets = [it.pop("teacher_logits") for it in items]
        batch = super().__call__(items)
        mask = completion_mask(batch["labels"])
        b, length = mask.shape
        k = targets[0][0].shape[-1]
        indices = torch.zeros(b, length, k, dtype=torch.long)
        logprobs = torch.zeros(b, length, k, dtype=torch.float32)
        for row, (idx, lp) in enumerate(targets):
            where = mask[row].nonzero().squeeze(-1)
            if where.numel() != idx.shape[0]:
                raise ValueError(
                    f"cached teacher targets: {idx.shape[0]} rows for an example of {where.numel()} completion tokens"
                )
            indices[row, where], logprobs[row, where] = idx, lp
        batch["teacher_topk"] = (indices, logprobs)
        return batch


@torch.no_grad()
def compute_topk_targets(
    teacher: nn.Module,
    dataset: DistillDataset,
    collator: Collator,
    batch_size: int,
    k: int,
    temperature: float,
    chunk_size: int,
) -> TopKTargets:
    """The teacher's top-k log-probabilities (temperature ``temperature``) on every completion token of ``dataset``,
    its LM head applied ``chunk_size`` positions at a time (no ``[B, L, V]`` logits)."""

    was = teacher.training
    teacher.eval()
    device = next(teacher.parameters()).device
    weight, bias = output_head(teacher)
    itype = index_dtype(weight.shape[0])
    indices: list[np.ndarray] = []
    logprobs: list[np.ndarray] = []
    counts: list[int] = []
    with progress((len(dataset) + batch_size - 1) // batch_size, "teacher top-k") as bar:
        for batch in ordered_batches(dataset, collator, batch_size, device):
            hidden = final_hidden(teacher, batch["student"])
            mask = completion_mask(batch["labels"])
            counts += mask.sum(-1).tolist()
            rows = hidden[mask]  # [tokens, H], row-major: example by example, position by position
            for start in range(0, rows.shape[0], chunk_size):
                idx, lp = topk_teacher(F.linear(rows[start : start + chunk_size], weight, bias), k, temperature)
                indices.append(idx.cpu().numpy().astype(itype))
                logprobs.append(lp.cpu().numpy().astype(VALUE_DTYPE))
            bar.update(1)
    teacher.train(was)
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    empty = np.zeros((0, k))
    return TopKTargets(
        np.concatenate(indices or [empty.astype(itype)]),
        np.concatenate(logprobs or [empty.astype(VALUE_DTYPE)]),
        offsets,
    )


def fingerprint_labels(dataset: DistillDataset) -> str:
    h = hashlib.sha256()
    for labels in dataset.labels:
        h.update(np.asarray(labels, dtype=np.int64).tobytes() + b"|")
    return h.hexdigest()


def cached_topk_targets(
    cfg: GenerativeCacheConfig,
    teacher: nn.Module,
    name: str,
    dataset: DistillDataset,
    collator: Collator,
    batch_size: int,
    temperature: float,
    chunk_size: int,
) -> tuple[TopKTargets, dict[str, Any]]:
    """The training set's top-k teacher targets from the teacher-output cache, computed and stored on a miss; and
    what it took (``status`` hit / miss / rebuilt, ``seconds``, ``path``, ``tokens``, ``bytes_per_token``)."""
    started = time.perf_counter()
    cache = TeacherCache(cfg.dir, key="generative.teacher_cache.dir")
    cache.check()
    teacher_fp = fingerprint_model(teacher)
    inputs, labels = fingerprint_inputs(dataset.student), fingerprint_labels(dataset)
    spec = f"lm-topk|{teacher_fp}|{inputs}|{labels}|k={cfg.top_k}|T={temperature!r}"
    key = "lm-" + hashlib.sha256(spec.encode()).hexdigest()[:32]
    expect = {"kind": "lm_topk", "count": len(dataset), "top_k": cfg.top_k}
    existed = (cache.root / key).exists() or (cache.root / key).is_symlink()
    names = {"indices", "logprobs", "offsets"}
    arrays = cache.load_arrays(key, expect, names)
    status = "hit"
    if arrays is None:
        computed = compute_topk_targets(teacher, dataset, collator, batch_size, cfg.top_k, temperature, chunk_size)
        manifest = {
            **expect,
            "temperature": temperature,
            "tokens": computed.tokens,
            "teacher": name,
            "teacher_fingerprint": teacher_fp,
        }
        cache.store_arrays(
            key, {"indices": computed.indices, "logprobs": computed.logprobs, "offsets": computed.offsets}, manifest
        )
        arrays = cache.load_arrays(key, expect, names)  # what later runs read
        if arrays is None:
            raise TextDistillError(
                f"generative.teacher_cache.dir: the entry {cache.root / key} could not be read back once written"
            )
        status = "rebuilt" if existed else "miss"
    targets = TopKTargets(arrays["indices"], arrays["logprobs"], arrays["offsets"])
    entry = cache.root / key
    stored = sum(f.stat().st_size for f in entry.glob("*.npy"))
    info = {
        "status": status,
        "seconds": time.perf_counter() - started,
        "path": str(entry),
        "top_k": targets.k,
        "tokens": targets.tokens,
        "bytes_per_token": targets.bytes_per_token,
        "stored_bytes_per_token": stored / max(targets.tokens, 1),
    }
    print(
        f"teacher top-{targets.k} targets: cache {status} ({entry}, {targets.tokens:,} tokens, "
        f"{targets.bytes_per_token} bytes/token, {info['seconds']:.1f} s)",
        file=sys.stderr,
    )
    return targets, info
