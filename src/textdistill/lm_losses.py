"""Token-level losses for generative (causal language model) distillation, as small pure functions.

Shapes: logits are ``[..., V]`` (usually ``[B, L, V]``); every divergence returns one value per position, shape
``[...]``; :func:`masked_mean` then averages over the completion tokens only.

Conventions shared by every divergence here:

* ``p_t = softmax(t / T)`` (teacher), ``p_s = softmax(s / T)`` (student); both logits are divided by the same
  temperature ``T``, and the divergence is **multiplied by T^2**, as in Hinton et al. (2015) and
  :func:`textdistill.losses.kd_kl_loss`: the gradient with respect to the student's logits shrinks like ``1/T^2`` as
  ``T`` grows, and the factor keeps it on the same scale at every temperature (see ``losses.py``). At ``T = 1`` the
  factor is 1, so the values are the plain divergences (e.g. total variation is then in ``[0, 1]``).
* Computed in float32 whatever the input dtype (bf16 and fp16 logits are upcast first; float64 stays float64),
  from ``log_softmax`` (stable for logits of any finite magnitude), with mixtures formed in log space
  (``logaddexp``). Log-probabilities are clamped at the dtype's most negative finite value, so ``-inf`` logits (a
  token masked out in both models) give finite values and gradients instead of ``nan``.
* Argument order follows ``losses.py``: student first, teacher second.

Shift convention for causal LMs (HF style): ``labels`` has the same length as ``input_ids`` (prompt and padding set to
``ignore_index``), and the logits at position ``i`` predict token ``i + 1``. So ``logits[:, :-1]`` is compared with
``labels[:, 1:]`` (:func:`shift_for_next_token`), and :func:`completion_mask` marks, on the unshifted positions, those
whose next token is a completion token.

References: Hinton et al. 2015 (KD, T^2); Gu et al. 2024, MiniLLM (reverse KL); Agarwal et al. 2024, "On-Policy
Distillation of Language Models: Learning from Self-Generated Mistakes" (GKD, generalised JSD, Eq. 1); Ko et al. 2024,
DistiLLM (skew KL / skew reverse KL); Wen et al. 2023, f-divergence minimisation for sequence-level KD (total
variation).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

IGNORE_INDEX = -100  # HF's label for positions no loss looks at (prompt, padding)


# --------------------------------------------------------------------------------------------------------------------
# Helpers


def _upcast(x: torch.Tensor) -> torch.Tensor:
    """float32 for half/bfloat16/float32 inputs, float64 kept as is."""
    return x if x.dtype == torch.float64 else x.float()


def _log_probs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``log_softmax(logits / T)`` in float32 (at least), clamped at the most negative finite value (no ``-inf``)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    lp = F.log_softmax(_upcast(logits) / temperature, dim=-1)
    return lp.clamp_min(torch.finfo(lp.dtype).min)


def _kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """``KL(p || q) = sum_v p_v (log p_v - log q_v)`` along the last dimension, from log-probabilities."""
    return (log_p.exp() * (log_p - log_q)).sum(dim=-1)


def _log_mix(log_a: torch.Tensor, log_b: torch.Tensor, weight_a: float) -> torch.Tensor:
    """``log(w a + (1 - w) b)`` from ``log a`` and ``log b``, in log space (``logaddexp``); ``w`` in ``[0, 1]``."""
    if weight_a == 0.0:
        return log_b
    if weight_a == 1.0:
        return log_a
    return torch.logaddexp(log_a + math.log(weight_a), log_b + math.log1p(-weight_a))


def _check_open_unit(name: str, value: float) -> None:
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must be in (0, 1), got {value}")


# --------------------------------------------------------------------------------------------------------------------
# Per-token divergences: student logits s, teacher logits t ``[..., V]`` -> ``[...]``


def forward_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Forward KL ``T^2 * KL(p_t || p_s) = T^2 * sum_v p_t(v) log(p_t(v) / p_s(v))`` per position.

    Mass-covering: the student is penalised wherever the teacher has mass it lacks. The usual KD loss (Hinton et al.
    2015); per position it is what :func:`textdistill.losses.kd_kl_loss` averages.
    """
    return temperature**2 * _kl(_log_probs(teacher_logits, temperature), _log_probs(student_logits, temperature))


def reverse_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Reverse KL ``T^2 * KL(p_s || p_t) = T^2 * sum_v p_s(v) log(p_s(v) / p_t(v))`` per position.

    Mode-seeking: the student is penalised for mass where the teacher has little (MiniLLM, Gu et al. 2024).
    """
    return temperature**2 * _kl(_log_probs(student_logits, temperature), _log_probs(teacher_logits, temperature))


def jsd(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0, beta: float = 0.5
) -> torch.Tensor:
    """Generalised Jensen-Shannon divergence of GKD (Agarwal et al. 2024, Eq. 1), per position::

        JSD_beta = T^2 * [ beta * KL(p_t || m) + (1 - beta) * KL(p_s || m) ],   m = beta * p_t + (1 - beta) * p_s

    with ``beta`` in (0, 1) (``log m`` by ``logaddexp``). This is the convention of TRL's
    ``GKDTrainer.generalized_jsd_loss`` (mixture weight ``beta`` on the teacher, ``beta`` on ``KL(p_t || m)``).

    Limits: both ends tend to 0, but proportionally to the two KLs:
    ``JSD_beta / beta -> KL(p_t || p_s)`` (forward) as ``beta -> 0``, and ``JSD_beta / (1 - beta) -> KL(p_s || p_t)``
    (reverse) as ``beta -> 1``. (TRL special-cases ``beta = 0`` / ``1`` to the unscaled forward / reverse KL; here use
    :func:`forward_kl` / :func:`reverse_kl` for those.) Symmetric in (student, teacher) at ``beta = 0.5``, where it is
    the ordinary JSD; more generally ``jsd(s, t, beta) == jsd(t, s, 1 - beta)``. Bounded by the binary entropy
    ``T^2 * h(beta) = T^2 * (-beta log beta - (1 - beta) log(1 - beta))`` (``log 2`` at ``beta = 0.5``).
    """
    _check_open_unit("beta", beta)
    lp_s, lp_t = _log_probs(student_logits, temperature), _log_probs(teacher_logits, temperature)
    log_m = _log_mix(lp_t, lp_s, beta)
    return temperature**2 * (beta * _kl(lp_t, log_m) + (1.0 - beta) * _kl(lp_s, log_m))


def skew_kl(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0, alpha: float = 0.1
) -> torch.Tensor:
    """Skew KL of DistiLLM (Ko et al. 2024): ``T^2 * KL(p_t || alpha * p_t + (1 - alpha) * p_s)`` per position.

    ``alpha`` in ``[0, 1)`` (DistiLLM uses 0.1); ``alpha = 0`` is the forward KL. Mixing some teacher into the student
    keeps the ratio bounded: the value is at most ``T^2 * log(1 / alpha)``, and the gradients stay stable.
    """
    if not 0.0 <= alpha < 1.0:
        raise ValueError(f"alpha must be in [0, 1), got {alpha}")
    lp_s, lp_t = _log_probs(student_logits, temperature), _log_probs(teacher_logits, temperature)
    return temperature**2 * _kl(lp_t, _log_mix(lp_t, lp_s, alpha))


def skew_reverse_kl(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0, alpha: float = 0.1
) -> torch.Tensor:
    """Skew reverse KL of DistiLLM (Ko et al. 2024): ``T^2 * KL(p_s || alpha * p_s + (1 - alpha) * p_t)``.

    ``alpha`` in ``[0, 1)``; ``alpha = 0`` is the reverse KL; at most ``T^2 * log(1 / alpha)``.
    """
    if not 0.0 <= alpha < 1.0:
        raise ValueError(f"alpha must be in [0, 1), got {alpha}")
    lp_s, lp_t = _log_probs(student_logits, temperature), _log_probs(teacher_logits, temperature)
    return temperature**2 * _kl(lp_s, _log_mix(lp_s, lp_t, alpha))


def tv(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Total variation distance ``T^2 * 0.5 * sum_v |p_t(v) - p_s(v)|`` per position (in ``[0, T^2]``; ``[0, 1]`` at
    ``T = 1``). Symmetric, bounded (Wen et al. 2023)."""
    p_s = _log_probs(student_logits, temperature).exp()
    p_t = _log_probs(teacher_logits, temperature).exp()
    return temperature**2 * 0.5 * (p_t - p_s).abs().sum(dim=-1)


TOKEN_DIVERGENCES: dict[str, Callable[..., torch.Tensor]] = {
    "forward_kl": forward_kl,
    "reverse_kl": reverse_kl,
    "jsd": jsd,
    "skew_kl": skew_kl,
    "skew_reverse_kl": skew_reverse_kl,
    "tv": tv,
}


def token_divergence(
    name: str, student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0, **kwargs: float
) -> torch.Tensor:
    """Per-position divergence ``name`` (a key of :data:`TOKEN_DIVERGENCES`); ``kwargs``: ``beta`` for ``jsd``,
    ``alpha`` for the skew KLs."""
    try:
        fn = TOKEN_DIVERGENCES[name]
    except KeyError:
        raise ValueError(
            f"unknown token divergence {name!r}; expected one of: {', '.join(TOKEN_DIVERGENCES)}"
        ) from None
    return fn(student_logits, teacher_logits, temperature, **kwargs)


# --------------------------------------------------------------------------------------------------------------------
# Masks and the next-token shift


def masked_mean(values: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of ``values`` (shape ``[...]``) over the positions where ``mask`` (same shape, bool or 0/1) is set; all
    positions when None; 0 when none is set. Masked positions contribute nothing, not even a ``nan`` or their
    gradient (``torch.where``, not a product)."""
    if mask is None:
        return values.mean()
    if mask.shape != values.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match values shape {tuple(values.shape)}")
    keep = mask.bool()
    total = torch.where(keep, values, torch.zeros_like(values)).sum()
    return total / keep.sum().clamp_min(1).to(total.dtype)


def completion_mask(labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Bool mask ``[..., L]`` of the positions whose next-token prediction is a completion token.

    ``labels``: HF-style, **unshifted** ``[..., L]`` (what ``model(input_ids, labels=labels)`` takes; prompt and padding
    set to ``ignore_index``). Position ``i``'s logits predict token ``i + 1``, so ``mask[..., i] = labels[..., i + 1]
    != ignore_index`` and the last position is always False. The mask is aligned with the model's full logits or
    hidden states ``[..., L, *]``; ``completion_mask(labels)[..., :-1]`` is ``shifted_labels != ignore_index`` for the
    shifted labels of :func:`shift_for_next_token`.
    """
    mask = torch.zeros(labels.shape, dtype=torch.bool, device=labels.device)
    mask[..., :-1] = labels[..., 1:] != ignore_index
    return mask


def shift_for_next_token(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Align causal-LM logits ``[..., L, V]`` with the tokens they predict: ``(logits[..., :-1, :], labels[..., 1:])``
    (HF's shift: position ``i`` predicts token ``i + 1``)."""
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} disagree on [..., L]")
    return logits[..., :-1, :], labels[..., 1:]


# --------------------------------------------------------------------------------------------------------------------
# Top-k teacher targets (offline cache)


def topk_teacher(logits: torch.Tensor, k: int, temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher's ``k`` most probable tokens per position: ``(indices [..., k] int64, logprobs [..., k])``, where
    ``logprobs`` are log-probabilities of the **full** softmax at temperature ``T`` (``log_softmax(t / T)`` over all
    ``V`` tokens, float32), sorted in decreasing order; ``1 - sum(exp(logprobs))`` is the mass left out."""
    if not 1 <= k <= logits.shape[-1]:
        raise ValueError(f"k must be in [1, {logits.shape[-1]}], got {k}")
    values, indices = _log_probs(logits, temperature).topk(k, dim=-1)
    return indices, values


def forward_kl_topk(
    student_logits: torch.Tensor, indices: torch.Tensor, teacher_logprobs: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """Forward KL when the teacher's distribution is known on its top ``k`` tokens only, per position.

    ``indices`` / ``teacher_logprobs`` ``[..., k]`` as returned by :func:`topk_teacher` at the **same** temperature
    (any integer / float dtype, e.g. int32 / fp16 from a cache). The teacher's missing mass
    ``p_rest = 1 - sum_k p_k`` is kept as one "rest" bucket and compared with the student's probability of all the
    other tokens ``q_rest = 1 - sum_k q_k`` (computed exactly, as a logsumexp over the non-top-k logits)::

        KL_k = T^2 * [ sum_{v in top-k} p_v log(p_v / q_v) + p_rest log(p_rest / q_rest) ]

    This is the exact KL between the two distributions coarse-grained to ``k + 1`` outcomes, so it equals the full
    ``T^2 * KL(p_t || p_s)`` when ``k = V`` (no rest) and, by the log-sum inequality, is ``>= 0`` and ``<=`` the full
    KL otherwise (only the teacher's shape inside the rest is unknown). Its gradient pushes the student's top-k
    probabilities to the teacher's and its total rest mass to ``p_rest``, without inventing how that mass is spread.
    """
    idx = indices.long()
    z = _upcast(student_logits) / temperature
    lse = torch.logsumexp(z, dim=-1, keepdim=True)
    log_q_k = z.gather(-1, idx) - lse
    log_p_k = _upcast(teacher_logprobs)
    top = (log_p_k.exp() * (log_p_k - log_q_k)).sum(dim=-1)

    # Teacher rest mass (clamped: rounding in a cached fp16 top-k may sum slightly above 1).
    log_p_in = torch.logsumexp(log_p_k, dim=-1).clamp_max(0.0)
    p_rest = -torch.expm1(log_p_in)
    has_p_rest = p_rest > 0
    log_p_rest = torch.where(has_p_rest, torch.log(torch.where(has_p_rest, p_rest, 1.0)), 0.0)
    # Student rest mass: logsumexp over the logits outside the top-k (rows with no rest get a harmless 0 row, so no
    # logsumexp of all -inf and no nan gradient).
    in_top = torch.zeros_like(z, dtype=torch.bool).scatter(-1, idx, True)
    no_rest = in_top.all(dim=-1, keepdim=True)
    z_rest = torch.where(no_rest, torch.zeros_like(z), z.masked_fill(in_top, float("-inf")))
    log_q_rest = (torch.logsumexp(z_rest, dim=-1, keepdim=True) - lse).squeeze(-1)
    rest = torch.where(has_p_rest & ~no_rest.squeeze(-1), p_rest * (log_p_rest - log_q_rest), 0.0)
    return temperature**2 * (top + rest)


def bytes_per_token(
    k: int,
    index_dtype: torch.dtype = torch.int32,
    value_dtype: torch.dtype = torch.float16,
    vocab_size: int | None = None,
) -> int:
    """Bytes a top-``k`` teacher target takes per token in a cache: ``k * (index bytes + value bytes)`` (e.g. k = 64,
    int32 + fp16: 384 bytes). With ``vocab_size``, checks that ``index_dtype`` can hold every token id: SmolLM2's
    49,152 tokens do not fit int16 (max 32,767) but fit uint16 (65,535) or int32."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if index_dtype.is_floating_point or index_dtype.is_complex or index_dtype == torch.bool:
        raise ValueError(f"index_dtype must be an integer dtype, got {index_dtype}")
    if not value_dtype.is_floating_point:
        raise ValueError(f"value_dtype must be a floating-point dtype, got {value_dtype}")
    if vocab_size is not None and torch.iinfo(index_dtype).max < vocab_size - 1:
        raise ValueError(f"{index_dtype} cannot hold token ids up to {vocab_size - 1}")
    return k * (index_dtype.itemsize + value_dtype.itemsize)


# --------------------------------------------------------------------------------------------------------------------
# Chunked computation from hidden states: the [B, L, V] logits are never materialised


def _chunk_loss_sum(
    rows: torch.Tensor,
    student_hidden: torch.Tensor,
    student_weight: torch.Tensor,
    student_bias: torch.Tensor | None,
    teacher_hidden: torch.Tensor | None,
    teacher_weight: torch.Tensor | None,
    teacher_bias: torch.Tensor | None,
    teacher_logits: torch.Tensor | None,
    topk_indices: torch.Tensor | None,
    topk_logprobs: torch.Tensor | None,
    divergence: str,
    temperature: float,
    divergence_kwargs: dict[str, float],
) -> torch.Tensor:
    """Sum of the divergence over the flattened positions ``rows`` (recomputed in the backward pass)."""
    s = F.linear(student_hidden.index_select(0, rows), student_weight, student_bias)
    if topk_indices is not None and topk_logprobs is not None:
        return forward_kl_topk(
            s, topk_indices.index_select(0, rows), topk_logprobs.index_select(0, rows), temperature
        ).sum()
    if teacher_logits is not None:
        t = teacher_logits.index_select(0, rows)
    else:
        assert teacher_hidden is not None and teacher_weight is not None
        t = F.linear(teacher_hidden.index_select(0, rows), teacher_weight, teacher_bias)
    return token_divergence(divergence, s, t, temperature, **divergence_kwargs).sum()


def chunked_token_loss(
    student_hidden: torch.Tensor,
    student_weight: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    teacher_hidden: torch.Tensor | None = None,
    teacher_weight: torch.Tensor | None = None,
    teacher_logits: torch.Tensor | None = None,
    teacher_topk: tuple[torch.Tensor, torch.Tensor] | None = None,
    divergence: str = "forward_kl",
    temperature: float = 1.0,
    chunk_size: int = 1024,
    student_bias: torch.Tensor | None = None,
    teacher_bias: torch.Tensor | None = None,
    reduction: Literal["mean", "sum"] = "mean",
    **divergence_kwargs: float,
) -> torch.Tensor:
    """A token divergence from the student's final hidden states and LM head, over chunks of positions.

    ``student_hidden`` ``[..., H]`` (e.g. ``[B, L, H]``, after the final norm) and ``student_weight`` ``[V, H]`` (the
    LM head, ``model.lm_head.weight``; optional ``student_bias`` ``[V]``) give the student logits
    ``hidden @ weight.T + bias``. The teacher is given by exactly one of:

    * ``teacher_hidden`` ``[..., H_t]`` + ``teacher_weight`` ``[V, H_t]`` (+ ``teacher_bias``): its head is applied per
      chunk too (pass tensors that do not require grad, e.g. computed under ``torch.no_grad``);
    * ``teacher_logits`` ``[..., V]``: precomputed (any dtype, e.g. bf16), rows are taken per chunk;
    * ``teacher_topk = (indices, logprobs)`` ``[..., k]`` from :func:`topk_teacher` (an offline cache): only
      ``divergence="forward_kl"``, computed by :func:`forward_kl_topk`.

    ``mask`` ``[...]`` (e.g. :func:`completion_mask`) selects the positions that count; only those are computed.
    Returns the mean over them of ``token_divergence(divergence, s, t, temperature, **divergence_kwargs)`` (or the sum,
    ``reduction="sum"``, e.g. to normalise by the token count of a whole gradient-accumulation step), exactly
    :func:`masked_mean` of the unchunked per-position values, with the same gradients.

    Memory: positions are processed ``chunk_size`` at a time and each chunk runs under
    ``torch.utils.checkpoint`` (non-reentrant), so its logits and log-probabilities are freed after the forward pass
    and recomputed in the backward pass. Peak extra memory is a few ``chunk_size x V`` float32 tensors (student and
    teacher logits, log-probs and their gradients for one chunk) instead of ``[B, L, V]`` for both models; e.g.
    chunk 1024 x V 49,152 x 4 bytes = 201 MB per tensor. The price is one more LM-head matmul per chunk in the backward
    pass. Heads with a logit transform beyond ``hidden @ W.T + b`` (e.g. soft-capping) are not covered.
    """
    sources = sum(x is not None for x in (teacher_hidden, teacher_logits, teacher_topk))
    if sources != 1 or (teacher_hidden is None) != (teacher_weight is None):
        raise ValueError("give exactly one teacher: teacher_hidden + teacher_weight, teacher_logits or teacher_topk")
    if teacher_topk is not None and divergence != "forward_kl":
        raise ValueError(f"teacher_topk supports divergence='forward_kl' only, got {divergence!r}")
    if divergence not in TOKEN_DIVERGENCES:
        raise ValueError(f"unknown token divergence {divergence!r}; expected one of: {', '.join(TOKEN_DIVERGENCES)}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")

    lead = student_hidden.shape[:-1]
    hs = student_hidden.reshape(-1, student_hidden.shape[-1])
    ht = None if teacher_hidden is None else teacher_hidden.reshape(-1, teacher_hidden.shape[-1])
    tl = None if teacher_logits is None else teacher_logits.reshape(-1, teacher_logits.shape[-1])
    ti = tp = None
    if teacher_topk is not None:
        ti = teacher_topk[0].reshape(-1, teacher_topk[0].shape[-1])
        tp = teacher_topk[1].reshape(-1, teacher_topk[1].shape[-1])
    if mask is None:
        rows = torch.arange(hs.shape[0], device=hs.device)
    else:
        if mask.shape != lead:
            raise ValueError(f"mask shape {tuple(mask.shape)} does not match positions {tuple(lead)}")
        rows = mask.reshape(-1).bool().nonzero().squeeze(-1)

    if rows.numel() == 0:  # no completion token: a zero that still has a (zero) gradient for the head
        return _upcast(student_weight).sum() * 0.0
    total = sum(
        checkpoint(
            _chunk_loss_sum,
            rows[start : start + chunk_size],
            hs,
            student_weight,
            student_bias,
            ht,
            teacher_weight,
            teacher_bias,
            tl,
            ti,
            tp,
            divergence,
            temperature,
            dict(divergence_kwargs),
            use_reentrant=False,
        )
        for start in range(0, rows.numel(), chunk_size)
    )
    assert isinstance(total, torch.Tensor)
    if reduction == "sum":
        return total
    return total / rows.numel()
