"""Distillation losses as small pure functions.

Every function takes logits of shape ``[..., num_classes]`` (sentence level ``[B, C]`` or token level
``[B, L, C]``); softmax is always over the last dimension, and an optional boolean ``mask`` of shape ``[...]``
selects the positions that count (the mean is over those positions only).

Why ``T^2``: the gradient of ``KL(softmax(t/T) || softmax(s/T))`` with respect to the student logits ``s`` is
``(softmax(s/T) - softmax(t/T)) / T``, and for large ``T`` those probability differences themselves shrink like
``1/T`` (``softmax(z/T) ~ 1/C + z/(C*T)``), so the gradient scales like ``1/T^2``. Multiplying the loss by ``T^2``
keeps the soft-target gradient on the same scale whatever the temperature, so ``alpha`` keeps its meaning when ``T``
changes (Hinton et al. 2015, section 2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``values`` (shape ``[...]``) over positions where ``mask`` is true (all positions when None)."""
    if mask is None:
        return values.mean()
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp_min(1.0)


def soft_targets(teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """The teacher's temperature-scaled output distribution ``softmax(t / T)``."""
    return F.softmax(teacher_logits.float() / temperature, dim=-1)


def kd_kl_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """``T^2 * KL(softmax(t/T) || softmax(s/T))``, averaged over (masked) positions."""
    log_p_s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_p_t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=-1)
    return temperature**2 * _masked_mean(kl, mask)


def soft_cross_entropy(
    student_logits: torch.Tensor, target_probs: torch.Tensor, temperature: float = 1.0, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """``T^2 * H(p, softmax(s/T))`` for given target probabilities ``p`` (e.g. fused soft targets).

    Equals :func:`kd_kl_loss` plus ``T^2 * H(p)``, which has no gradient in the student.
    """
    log_p_s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    ce = -(target_probs.float() * log_p_s).sum(dim=-1)
    return temperature**2 * _masked_mean(ce, mask)


def logits_mse_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean squared error between raw logits (Tang et al. 2019), mean over classes and (masked) positions."""
    se = (student_logits.float() - teacher_logits.float()).pow(2).mean(dim=-1)
    return _masked_mean(se, mask)


def hard_label_loss(student_logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy with gold class ids, averaged over (masked) positions."""
    ce = F.cross_entropy(student_logits.float().flatten(0, -2), labels.flatten(), reduction="none").view(labels.shape)
    return _masked_mean(ce, mask)


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    kind: str = "kl",
    temperature: float = 1.0,
    alpha: float = 0.5,
    mask: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """``alpha * soft + (1 - alpha) * hard``; returns every term (``kd``, ``ce``) and their weighted sum ``loss``.

    ``kind="kl"``: soft = ``T^2 * KL(teacher_T || student_T)``; ``kind="mse"``: soft = MSE on logits (T unused).
    """
    if kind == "kl":
        soft = kd_kl_loss(student_logits, teacher_logits, temperature, mask)
    elif kind == "mse":
        soft = logits_mse_loss(student_logits, teacher_logits, mask)
    else:
        raise ValueError(f"unknown distillation loss {kind!r}; expected 'kl' or 'mse'")
    terms = {"kd": soft}
    total = alpha * soft
    if alpha < 1.0:
        terms["ce"] = hard_label_loss(student_logits, labels, mask)
        total = total + (1.0 - alpha) * terms["ce"]
    terms["loss"] = total
    return terms
