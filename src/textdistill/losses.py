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

from collections.abc import Callable

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100  # the label of positions no loss or metric looks at (padding, special tokens, later word pieces)


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
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float = 1.0,
    mask: torch.Tensor | None = None,
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


def kl_to_target(
    student_logits: torch.Tensor, target_probs: torch.Tensor, temperature: float = 1.0, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """``T^2 * KL(p || softmax(s / T))`` for given target probabilities ``p`` (``0 log 0 = 0``), mean over examples."""
    log_q = F.log_softmax(student_logits.float() / temperature, dim=-1)
    return temperature**2 * _masked_mean(_row_kl(target_probs.float(), log_q), mask)


def logits_mse_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean squared error between raw logits (Tang et al. 2019), mean over classes and (masked) positions."""
    se = (student_logits.float() - teacher_logits.float()).pow(2).mean(dim=-1)
    return _masked_mean(se, mask)


def logits_mse_at(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float = 1.0,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """:func:`logits_mse_loss` in the soft-target signature (raw logits: ``temperature`` does not apply)."""
    return logits_mse_loss(student_logits, teacher_logits, mask)


def is_multi_label(student_logits: torch.Tensor, labels: torch.Tensor) -> bool:
    """Multi-label targets are multi-hot floats shaped like the logits ``[B, C]``; a regression task's scores are
    ``[B]`` against logits ``[B, 1]``; class ids are integers."""
    return labels.is_floating_point() and labels.shape == student_logits.shape


def label_mask(labels: torch.Tensor) -> torch.Tensor | None:
    """The positions that count for token-level labels ``[B, L]`` (not :data:`IGNORE_INDEX`); None for others."""
    return labels != IGNORE_INDEX if labels.dim() == 2 and not labels.is_floating_point() else None


def binary_kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float = 1.0,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Multi-label KD: ``T^2 * KL(Bernoulli(sigmoid(t/T)) || Bernoulli(sigmoid(s/T)))`` per label, mean over labels
    and (masked) examples. Written with log-sigmoids, so it stays finite for any logits."""
    s, t = student_logits.float() / temperature, teacher_logits.float() / temperature
    p = torch.sigmoid(t)
    kl = p * (F.logsigmoid(t) - F.logsigmoid(s)) + (1 - p) * (F.logsigmoid(-t) - F.logsigmoid(-s))
    return temperature**2 * _masked_mean(kl.mean(dim=-1), mask)


def hard_label_loss(
    student_logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """The task's own loss with gold labels: cross-entropy with class ids, averaged over (masked) positions (token
    labels ``[B, L]`` mask :data:`IGNORE_INDEX` themselves); multi-hot labels shaped like the logits: binary
    cross-entropy per label (multi-label); floating-point scores ``[B]`` (regression, logits ``[B, 1]``): MSE."""
    if is_multi_label(student_logits, labels):
        bce = F.binary_cross_entropy_with_logits(student_logits.float(), labels.float(), reduction="none").mean(dim=-1)
        return _masked_mean(bce, mask)
    if labels.is_floating_point():
        return F.mse_loss(student_logits.float().reshape(labels.shape), labels.float())
    if mask is None:
        mask = label_mask(labels)
    ce = F.cross_entropy(
        student_logits.float().flatten(0, -2), labels.flatten(), reduction="none", ignore_index=IGNORE_INDEX
    ).view(labels.shape)
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
    Regression (floating-point ``labels``): the student learns the teacher's scores, soft = MSE whatever ``kind``
    (a softmax over one output means nothing), hard = MSE to the gold scores. Multi-label (multi-hot ``labels`` shaped
    like the logits): soft = per-label binary KL at ``T`` (:func:`binary_kd_loss`), hard = binary cross-entropy.
    Token-level labels ``[B, L]`` (logits ``[B, L, C]``): both terms over the labelled positions only, unless ``mask``
    is given.
    """
    if mask is None:
        mask = label_mask(labels)
    if is_multi_label(student_logits, labels):
        kind = "binary_kl" if kind == "kl" else kind
    elif labels.is_floating_point():
        kind = "mse"
    if kind not in LOGIT_LOSSES:
        raise ValueError(f"unknown distillation loss {kind!r}; expected one of: {', '.join(LOGIT_LOSSES)}")
    soft = LOGIT_LOSSES[kind](student_logits, teacher_logits, temperature, mask)
    terms = {"kd": soft}
    total = alpha * soft
    if alpha < 1.0:
        terms["ce"] = hard_label_loss(student_logits, labels, mask)
        total = total + (1.0 - alpha) * terms["ce"]
    terms["loss"] = total
    return terms


# --------------------------------------------------------------------------------------------------------------------
# Intermediate-layer losses. Hidden states are ``[B, L, D]`` (token mask ``[B, L]``) or ``[B, D]``; attention maps
# are ``[B, heads, L, L]`` with rows that are distributions over keys. Widths are made equal beforehand (projection).


def hidden_mse_loss(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error per position (mean over the width), averaged over valid positions (TinyBERT, FitNets)."""
    return _masked_mean((student.float() - teacher.float()).pow(2).mean(dim=-1), mask)


def hidden_cosine_loss(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``1 - cos(s, t)`` per position, averaged over valid positions (DistilBERT's cosine embedding loss)."""
    return _masked_mean(1.0 - F.cosine_similarity(student.float(), teacher.float(), dim=-1), mask)


def patient_loss(student_cls: torch.Tensor, teacher_cls: torch.Tensor) -> torch.Tensor:
    """BERT-PKD: squared distance between L2-normalised ``[CLS]`` vectors ``[B, D]``, mean over the batch."""
    s = F.normalize(student_cls.float(), dim=-1)
    t = F.normalize(teacher_cls.float(), dim=-1)
    return (s - t).pow(2).sum(dim=-1).mean()


def pkd_loss(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`patient_loss` on the first position of hidden states ``[B, L, D]`` (or on ``[B, D]`` as they are); the
    feature-loss signature (``mask`` unused: one vector per example)."""
    return patient_loss(
        student[:, 0] if student.dim() == 3 else student, teacher[:, 0] if teacher.dim() == 3 else teacher
    )


def _row_kl(target: torch.Tensor, log_pred: torch.Tensor) -> torch.Tensor:
    """KL(target || pred) along the last dim for probability rows; zero-probability entries contribute 0."""
    return torch.where(target > 0, target * (target.clamp_min(1e-12).log() - log_pred), torch.zeros_like(target)).sum(
        -1
    )


def _query_mask(mask: torch.Tensor | None, heads: int) -> torch.Tensor | None:
    return None if mask is None else mask[:, None, :].expand(-1, heads, -1)


def attention_kl_loss(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """KL(teacher row || student row) of attention distributions, mean over heads and valid query positions.

    Inputs are attention probabilities ``[B, H, L, L]`` (MiniLM's self-attention distribution transfer, TinyBERT's
    attention loss with probabilities). Padded keys carry zero probability in both maps.
    """
    log_s = student.float().clamp_min(1e-12).log()
    kl = _row_kl(teacher.float(), log_s)  # [B, H, L]
    return _masked_mean(kl, _query_mask(mask, kl.shape[1]))


def attention_mse_loss(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """MSE between attention maps ``[B, H, L, L]`` over valid (query, key) pairs, mean over heads (TinyBERT)."""
    se = (student.float() - teacher.float()).pow(2)  # [B, H, L, L]
    if mask is None:
        return se.mean()
    pair = (mask[:, :, None] & mask[:, None, :])[:, None].expand_as(se)
    return _masked_mean(se, pair)


def merge_heads(attention: torch.Tensor, heads: int) -> torch.Tensor:
    """Average groups of attention heads ``[B, H, L, L] -> [B, heads, L, L]`` so maps with different head counts can
    be compared (H must be a multiple of ``heads``); rows stay distributions."""
    b, h, lq, lk = attention.shape
    if h == heads:
        return attention
    if h % heads:
        raise ValueError(f"cannot merge {h} attention heads into {heads}")
    return attention.view(b, heads, h // heads, lq, lk).mean(dim=2)


def relation(x: torch.Tensor, heads: int, mask: torch.Tensor | None = None) -> torch.Tensor:
    """MiniLM self-relation: split ``[B, L, D]`` into ``heads`` relation heads and return
    ``log_softmax(x_h x_h^T / sqrt(D / heads))`` as ``[B, heads, L, L]``; padded keys are excluded."""
    b, seq, d = x.shape
    if d % heads:
        raise ValueError(f"width {d} is not divisible by {heads} relation heads")
    xh = x.float().view(b, seq, heads, d // heads).transpose(1, 2)  # [B, heads, L, dh]
    scores = xh @ xh.transpose(-1, -2) / (d // heads) ** 0.5
    if mask is not None:
        scores = scores.masked_fill(~mask[:, None, None, :].bool(), torch.finfo(scores.dtype).min)
    return F.log_softmax(scores, dim=-1)


def value_relation_loss(
    student_values: torch.Tensor, teacher_values: torch.Tensor, heads: int, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """MiniLM's value-relation transfer: KL between the teacher's and the student's value self-relations
    (``softmax(V V^T / sqrt(d))`` per relation head), mean over heads and valid query positions. Widths may differ:
    only the ``L x L`` relations are compared."""
    log_t = relation(teacher_values, heads, mask)
    log_s = relation(student_values, heads, mask)
    kl = _row_kl(log_t.exp(), log_s)
    return _masked_mean(kl, _query_mask(mask, heads))


# --------------------------------------------------------------------------------------------------------------------
# One table per family: a loss is added by writing its function above and naming it here. The config's choices
# (distill.loss, intermediate[].loss) are checked against these names by tests/test_losses.py.

SoftLoss = Callable[[torch.Tensor, torch.Tensor, float, "torch.Tensor | None"], torch.Tensor]
FeatureLoss = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]

LOGIT_LOSSES: dict[str, SoftLoss] = {
    "kl": kd_kl_loss,  # (student, teacher, T, mask): the soft term of distillation_loss
    "mse": logits_mse_at,
    "binary_kl": binary_kd_loss,  # multi-label ("kl" becomes this where the labels are multi-hot)
}
FEATURE_LOSSES: dict[str, FeatureLoss] = {  # (student, teacher, mask): hidden states and tapped modules
    "mse": hidden_mse_loss,
    "cosine": hidden_cosine_loss,
    "pkd": pkd_loss,
}
ATTENTION_LOSSES: dict[str, FeatureLoss] = {  # (student, teacher, mask): attention maps [B, H, L, L]
    "kl": attention_kl_loss,
    "mse": attention_mse_loss,
}
