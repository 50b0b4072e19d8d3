"""Teacher ensembles and multi-task training: fusing several teachers' outputs, and choosing which task trains next.

Teacher outputs come stacked as ``[K, B, C]`` (K teachers, B examples, C classes; regression: ``[K, B]`` or
``[K, B, 1]``). Every function here is pure and works on any batch shape after the teacher axis.

Fusion of soft targets (``fusion``):

- ``mean_probs``: ``p = mean_k softmax(t_k / T)``;
- ``mean_logits``: ``p = softmax(mean_k t_k / T)``;
- ``weighted``: ``p = sum_k w_k softmax(t_k / T)`` with fixed weights (normalised to sum to one);
- ``dev_score``: the same with ``w_k`` proportional to each teacher's dev score;
- ``confidence``: per example, ``w_k(x)`` proportional to teacher k's largest probability on ``x``.

The student then learns either the fused target (``objective: fused``: ``T^2 KL(p || softmax(s / T))``) or each
teacher in turn (``objective: mean_kl``: ``sum_k w_k T^2 KL(softmax(t_k / T) || softmax(s / T))``).
"""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F

from textdistill.losses import kl_to_target

FUSIONS = ("mean_probs", "mean_logits", "weighted", "dev_score", "confidence")
OBJECTIVES = ("fused", "mean_kl")
SAMPLINGS = ("proportional", "size_power", "round_robin")


def normalised_weights(weights: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """``w / sum(w)``; weights must be non-negative with a positive sum."""
    w = torch.as_tensor(weights, dtype=torch.float32)
    if w.dim() != 1 or len(w) == 0:
        raise ValueError(f"teacher weights must be a non-empty list, got shape {tuple(w.shape)}")
    if (w < 0).any() or not torch.isfinite(w).all() or float(w.sum()) <= 0:
        raise ValueError(f"teacher weights must be non-negative with a positive sum, got {w.tolist()}")
    return w / w.sum()


def teacher_weights(
    num_teachers: int, fusion: str, weights: Sequence[float] | None = None, dev_scores: Sequence[float] | None = None
) -> torch.Tensor:
    """The fixed per-teacher weights ``[K]`` of a fusion (uniform for the means and for ``confidence``, whose
    per-example weights come from :func:`confidence_weights`)."""
    if fusion not in FUSIONS:
        raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
    if fusion == "weighted":
        if weights is None or len(weights) != num_teachers:
            raise ValueError(f"fusion 'weighted' needs one weight per teacher ({num_teachers}), got {weights}")
        return normalised_weights(weights)
    if fusion == "dev_score":
        if dev_scores is None or len(dev_scores) != num_teachers:
            raise ValueError(f"fusion 'dev_score' needs one dev score per teacher ({num_teachers}), got {dev_scores}")
        return normalised_weights(dev_scores)
    return torch.full((num_teachers,), 1.0 / num_teachers)


def _expand(weights: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``[K]`` or ``[K, B...]`` weights broadcast against ``[K, B..., C]`` outputs."""
    w = weights.to(like.device, torch.float32)
    return w.reshape(w.shape + (1,) * (like.dim() - w.dim()))


def confidence_weights(teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Per-example weights ``[K, B...]``: each teacher's largest probability, normalised over the teachers."""
    conf = F.softmax(teacher_logits.float() / temperature, dim=-1).amax(dim=-1)
    return conf / conf.sum(dim=0, keepdim=True)


def example_weights(
    teacher_logits: torch.Tensor, fusion: str, weights: torch.Tensor, temperature: float
) -> torch.Tensor:
    """The weights of a fusion for these outputs: ``[K, B...]`` for ``confidence``, else the fixed ``[K]``."""
    return confidence_weights(teacher_logits, temperature) if fusion == "confidence" else weights


def fuse_soft_targets(
    teacher_logits: torch.Tensor, fusion: str, temperature: float, weights: torch.Tensor
) -> torch.Tensor:
    """The fused target distribution ``[B..., C]`` from stacked teacher logits ``[K, B..., C]``."""
    if fusion == "mean_logits":
        fused = (_expand(weights, teacher_logits) * teacher_logits.float()).sum(dim=0)
        return F.softmax(fused / temperature, dim=-1)
    w = example_weights(teacher_logits, fusion, weights, temperature)
    probs = F.softmax(teacher_logits.float() / temperature, dim=-1)
    return (_expand(w, probs) * probs).sum(dim=0)


def fuse_regression(teacher_outputs: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted mean of the teachers' scores: ``[K, B]`` or ``[K, B, 1]`` -> ``[B]``."""
    out = teacher_outputs.float().reshape(teacher_outputs.shape[0], -1)
    return (weights.to(out.device, torch.float32).reshape(-1, 1) * out).sum(dim=0)


def ensemble_kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    *,
    temperature: float,
    fusion: str = "mean_probs",
    weights: torch.Tensor | None = None,
    objective: str = "fused",
) -> torch.Tensor:
    """KD from K teachers ``[K, B, C]`` to a student ``[B, C]``: KL to the fused target, or the weighted mean of the
    per-teacher KLs (``mean_kl``; with ``confidence`` the weights are per example)."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    k = teacher_logits.shape[0]
    w = teacher_weights(k, "mean_probs") if weights is None else weights
    if objective == "fused":
        return kl_to_target(student_logits, fuse_soft_targets(teacher_logits, fusion, temperature, w), temperature)
    ew = _expand(example_weights(teacher_logits, fusion, w, temperature), teacher_logits[..., 0])  # [K, B]
    log_q = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_p = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    per = (log_p.exp() * (log_p - log_q.unsqueeze(0))).sum(dim=-1)  # [K, B]: each teacher's KL per example
    return temperature**2 * (ew * per).sum(dim=0).mean()


def annealed_target(teacher_target: torch.Tensor, gold: torch.Tensor, progress: float) -> torch.Tensor:
    """Teacher annealing (Clark et al. 2019, BAM!): ``progress * gold + (1 - progress) * teacher``.

    Classification: ``teacher_target`` is a distribution ``[B, C]`` and ``gold`` class ids ``[B]``; regression: both
    are scores ``[B]``. ``progress`` goes from 0 (the teacher alone) to 1 (the gold label alone).
    """
    lam = min(max(float(progress), 0.0), 1.0)
    if teacher_target.dim() == gold.dim() + 1:
        gold = F.one_hot(gold.long(), teacher_target.shape[-1]).to(teacher_target.dtype)
    return lam * gold.to(teacher_target.dtype) + (1 - lam) * teacher_target


# --------------------------------------------------------------------------------------------------------------------
# Task sampling


def task_probabilities(sizes: Sequence[int], strategy: str = "proportional", tau: float = 1.0) -> list[float]:
    """How often each task's batch comes next: ``proportional`` to its size, ``size_power`` to size^tau (tau < 1
    flattens toward uniform, as in MT-DNN / T5 mixing), ``round_robin`` equal turns."""
    if strategy not in SAMPLINGS:
        raise ValueError(f"task sampling must be one of {SAMPLINGS}, got {strategy!r}")
    if not sizes or any(s <= 0 for s in sizes):
        raise ValueError(f"every task needs training examples, got sizes {list(sizes)}")
    if strategy == "round_robin":
        return [1.0 / len(sizes)] * len(sizes)
    power = tau if strategy == "size_power" else 1.0
    if power < 0 or not math.isfinite(power):
        raise ValueError(f"tau must be a non-negative number, got {tau}")
    raw = [float(s) ** power for s in sizes]
    return [r / sum(raw) for r in raw]


def task_schedule(num_batches: Sequence[int], strategy: str, tau: float, seed: int) -> Iterator[int]:
    """The task of each batch in one epoch. An epoch has as many batches as all tasks together
    (``sum(num_batches)``); ``round_robin`` cycles through the tasks in order, the others draw each batch's task at
    random with :func:`task_probabilities` (computed from the batch counts), seeded."""
    total = sum(num_batches)
    if strategy == "round_robin":
        k = len(num_batches)
        return iter([i % k for i in range(total)])
    probs = torch.tensor(task_probabilities(num_batches, strategy, tau))
    g = torch.Generator().manual_seed(seed)
    return iter(torch.multinomial(probs, total, replacement=True, generator=g).tolist())
