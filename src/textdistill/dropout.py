"""Dropout with masks drawn four at a time on the CPU.

torch draws a CPU dropout mask with ``bernoulli_``: one call to its Mersenne Twister per element, and it gains nothing
from more threads. In the cached student's step (SST-2, two layers of 384, batch 32, two threads) its 8 masks took
17.4% of the time (``benchmarks/step_breakdown.py --profile``). Here each mask starts from one 64-bit draw of torch's
generator, which seeds numpy's SFC64 (a small chaotic generator, about twice as fast per 64 bits here); each of its
64-bit outputs is cut into four 16-bit uniforms, and an element is kept when its uniform is at least ``p``: a keep mask
with the same distribution (``p`` rounded to a multiple of 1/65536; 0.1 becomes 0.100006), applied as one product with
a float mask scaled by ``1 / (1 - p)``, as torch does. Seeded runs stay reproducible (torch's generator decides every
mask); the masks differ from torch's own.

:func:`fast_cpu_dropout` puts it in place for a training loop: it turns the model's ``nn.Dropout`` modules into
:class:`FastDropout` and moves an encoder that uses ``sdpa`` attention to :data:`FAST_SDPA` (the attention dropout of
fused attention is drawn by torch's ``bernoulli_`` as well); on leaving, both go back as they were. Off the CPU, and
outside the context, everything is torch's own dropout.

textdistill is a guest in its user's process: its attention functions are in transformers' registries
(``AttentionInterface`` / ``AttentionMaskInterface``) only while something uses them. :func:`attention_function`
registers one for the length of a block (nested and concurrent blocks share one registration, counted) and on
leaving the last block puts the registries back as they were; importing textdistill registers nothing.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

_LEVELS = 1 << 16  # uniforms of 16 bits
_ACTIVE: ContextVar[bool] = ContextVar("textdistill_fast_dropout", default=False)

# Encoders whose sdpa attention is moved to FAST_SDPA inside fast_cpu_dropout (bidirectional, no position bias)
ENCODER_TYPES = frozenset({"bert", "roberta", "xlm-roberta", "electra", "distilbert"})
FAST_SDPA = "textdistill_sdpa_fast_dropout"


def drop_levels(p: float) -> int:
    """How many of the 65,536 16-bit values drop an element: ``p`` rounded to a multiple of 1/65536."""
    return round(p * _LEVELS)


def _lanes(shape: torch.Size | tuple[int, ...], generator: torch.Generator | None) -> torch.Tensor:
    """Uniform int16 values of ``shape``: four per 64-bit output of an SFC64 generator seeded by one 64-bit draw of
    ``generator`` (torch's default CPU generator when None)."""
    n = math.prod(shape)
    seed = torch.empty((), dtype=torch.int64).random_(-(1 << 63), None, generator=generator).item() % (1 << 64)
    words = np.random.SFC64(seed).random_raw((n + 3) // 4)  # uint64: all four int16 lanes are uniform
    return torch.from_numpy(words.view(np.int16)[:n]).view(shape)


def _lowest_kept(p: float) -> int:
    return drop_levels(p) - _LEVELS // 2  # int16 runs from -32768: the lowest drop_levels(p) values drop


def keep_mask(shape: torch.Size | tuple[int, ...], p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """A boolean CPU mask of ``shape``, each element True with probability ``1 - drop_levels(p) / 65536``,
    independently, from the uniforms of :func:`_lanes`."""
    return _lanes(shape, generator) >= _lowest_kept(p)


def keep_values(
    shape: torch.Size | tuple[int, ...], p: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """:func:`keep_mask` as float32 ones and zeros, the same mask for the same draws.

    Made in float arithmetic, which the CPU vectorises (comparisons to a boolean and ``where`` are several times
    slower): an int16 value v becomes clamp(v - (lowest kept - 1), 0, 1), exactly 1 for a kept v, exactly 0 otherwise.
    """
    return _lanes(shape, generator).to(torch.float32).sub_(_lowest_kept(p) - 1).clamp_(0, 1)


def fast_dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """``nn.functional.dropout(x, p, training)``, with :func:`keep_mask`'s masks for CPU tensors inside
    :func:`fast_cpu_dropout`."""
    dropped = drop_levels(p)
    if not (training and _ACTIVE.get() and x.device.type == "cpu" and 0 < dropped < _LEVELS):
        return nn.functional.dropout(x, p, training)  # (p within 1/131072 of 0 or 1 too)
    scale = _LEVELS / (_LEVELS - dropped)
    # like torch's CPU dropout: one product with a scaled float mask (autograd keeps the mask for the backward)
    if x.dtype == torch.float32:  # (scale as a float32, as x * scale would round it)
        return x * keep_values(x.shape, p).mul_(scale)
    return x * keep_values(x.shape, p).to(x.dtype) * scale  # (reduced precision: scaled in float32, as x * scale is)


class FastDropout(nn.Dropout):
    """``nn.Dropout`` through :func:`fast_dropout` (``inplace`` is not kept: the result is a new tensor)."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return fast_dropout(input, self.p, self.training)


def attend(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None,
    dropout: float,
    training: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eager attention over ``[B, H, L, D]`` inputs with :func:`fast_dropout` on the distributions: the output
    ``[B, L, H, D]`` and the distributions before dropout. The mask is additive, boolean (True = attend) or None."""
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    groups = query.shape[1] // key.shape[1]
    if groups > 1:  # grouped-query attention: each key/value head serves `groups` query heads
        key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        mask = attention_mask[..., : key.shape[-2]]
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min) if mask.dtype == torch.bool else scores + mask
    maps = nn.functional.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    return torch.matmul(fast_dropout(maps, dropout, training), value).transpose(1, 2).contiguous(), maps


def sdpa_fast_dropout(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """HF's sdpa attention, except that with attention dropout on the CPU (inside :func:`fast_cpu_dropout`) it is
    :func:`attend`, since the fused kernel would draw its mask with ``bernoulli_``. Takes sdpa's masks (boolean,
    True = attend, or None)."""
    fast = dropout > 0 and _ACTIVE.get() and query.device.type == "cpu"  # HF's layers pass dropout 0 in evaluation
    causal = kwargs.get("is_causal")  # as sdpa_attention_forward decides it
    causal = (
        query.shape[2] > 1
        and attention_mask is None
        and (getattr(module, "is_causal", True) if causal is None else causal)
    )
    if not fast or causal or kwargs.get("position_bias") is not None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    return attend(query, key, value, attention_mask, scaling, dropout, training=True)[0], None


_MISSING = object()
_REGISTRY_LOCK = threading.Lock()
# name -> [blocks holding it, the attention function and the mask function that name had before (or _MISSING)]
_HELD: dict[str, list[Any]] = {}


def hold_attention_function(name: str, attention: Callable[..., Any], mask: Callable[..., Any]) -> None:
    """Register ``attention`` (and its ``mask`` function) under ``name`` with transformers, or count one more holder
    of it; :func:`release_attention_function` undoes it."""
    with _REGISTRY_LOCK:
        held = _HELD.get(name)
        if held is None:
            _HELD[name] = [
                1,
                AttentionInterface._global_mapping.get(name, _MISSING),
                AttentionMaskInterface._global_mapping.get(name, _MISSING),
            ]
            AttentionInterface.register(name, attention)
            AttentionMaskInterface.register(name, mask)
        else:
            held[0] += 1


def release_attention_function(name: str) -> None:
    """One holder of ``name`` less; the last one puts transformers' registries back as they were before the first."""
    with _REGISTRY_LOCK:
        held = _HELD.get(name)
        if held is None:
            return
        held[0] -= 1
        if held[0] > 0:
            return
        del _HELD[name]
        for registry, before in (
            (AttentionInterface._global_mapping, held[1]),
            (AttentionMaskInterface._global_mapping, held[2]),
        ):
            if before is _MISSING:
                registry.pop(name, None)
            else:
                registry[name] = before


@contextlib.contextmanager
def attention_function(name: str, attention: Callable[..., Any], mask: Callable[..., Any]) -> Iterator[None]:
    """Within the block, ``name`` is an attention implementation transformers knows (models may be switched to it);
    on leaving, the registries are as they were (once no other block holds it)."""
    hold_attention_function(name, attention, mask)
    try:
        yield
    finally:
        release_attention_function(name)


@contextlib.contextmanager
def fast_cpu_dropout(model: nn.Module, enabled: bool = True) -> Iterator[int]:
    """Within the block, ``model``'s dropout masks on the CPU come from :func:`keep_mask`; yields how many
    ``nn.Dropout`` modules were swapped. Nothing changes when not ``enabled``."""
    if not enabled:
        yield 0
        return
    swapped = [m for m in model.modules() if type(m) is nn.Dropout]
    moved: list[
        nn.Module
    ] = []  # HF encoders in the model (itself, or say a multi-task model's encoder), each config once
    hold_attention_function(FAST_SDPA, sdpa_fast_dropout, sdpa_mask)  # registered while the block runs
    token = _ACTIVE.set(True)
    try:  # (a failure half-way through the switch puts back what was switched)
        # the modules stay the same objects (their hooks, say a feature tap, stay on them): only their class changes
        for module in swapped:
            module.__class__ = FastDropout
        for module in model.modules():
            config = getattr(module, "config", None)
            if (
                getattr(config, "_attn_implementation", None) == "sdpa"
                and getattr(config, "model_type", None) in ENCODER_TYPES
                and hasattr(module, "set_attn_implementation")
            ):
                module.set_attn_implementation(FAST_SDPA)
                if config._attn_implementation == FAST_SDPA:  # type: ignore[union-attr]
                    moved.append(module)
        yield len(swapped)
    finally:
        _ACTIVE.reset(token)
        for module in swapped:
            module.__class__ = nn.Dropout
        try:
            for module in moved:
                module.set_attn_implementation("sdpa")
        finally:
            release_attention_function(FAST_SDPA)
