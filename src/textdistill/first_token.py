"""The last encoder layer computed for the first token alone, where nothing reads the other positions.

A BERT-style sequence classifier reads one position of its encoder's output: the pooler (or classification head)
takes ``[CLS]``, position 0. Every other position of the *last* layer is computed and thrown away: its query
projection, attention rows, output projection and feed-forward block (about 83% of a layer's products: of its 12
``d x d`` blocks per token, 2 are the keys and values, and the other 10 are thrown away). :func:`first_token_only`
computes the last layer's keys and values for every position, as before, and its query, attention, output
projection and feed-forward block for position 0 alone. The logits are the same (to float rounding) and so are their
gradients; a 2-layer student does about 40% fewer multiply-adds per step, a 6-layer teacher about 14% fewer.
textdistill's multi-task student is one such classifier too: each task's head reads the pooler or position 0. So
is MPNet's (its head reads ``<s>``), whose layers add a relative position bias: they are cut by a forward of their own.

It holds only while the caller reads the logits alone: the last layer's hidden states and attention maps then have
one position, so it is never on while intermediate losses, feature taps or hidden-state caches read a model. The
loop puts it on for a sequence-classification student whose objective reads only logits (and for the teacher it
runs online), the cache builder for a teacher whose logits alone are cached. Off those classes (token
classification, LSTM and CNN students, causal LMs) it changes nothing.

Dropout in the last layer is drawn for the rows that are computed: the same distribution for position 0, fewer
draws, so a seeded run's masks differ from those of the full layer.
"""

from __future__ import annotations

import contextlib
import math
import types
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.bert.modeling_bert import eager_attention_forward

from textdistill.dropout import FAST_SDPA

# Sequence classifiers whose heads read position 0 of their encoder (textdistill's multi-task model: the pooler or
# position 0, for every task), and the encoders of BERT layout (layer.attention.self.{query,key,value},
# layer.attention.output, layer.feed_forward_chunk) under them: the ones this module knows how to cut.
CLASSIFIERS = frozenset(
    {
        "BertForSequenceClassification",
        "RobertaForSequenceClassification",
        "XLMRobertaForSequenceClassification",
        "ElectraForSequenceClassification",
        "MPNetForSequenceClassification",
        "MultiTaskModel",
    }
)
ENCODERS = frozenset({"BertModel", "RobertaModel", "XLMRobertaModel", "ElectraModel"})
# MPNet's layers (attention.attn.{q,k,v,o}, intermediate, output) add a relative position bias to their scores and
# always attend eagerly: cut by a forward of their own
MPNET_ENCODERS = frozenset({"MPNetModel"})
# attention functions that take a [B, 1, L] query against [B, L] keys with a 4-d mask sliced to its first row
ATTENTION = frozenset({"eager", "sdpa", FAST_SDPA})


def _cut_point(model: nn.Module) -> tuple[nn.Module, Callable[..., Any]] | None:
    """The last encoder layer of ``model`` and the forward that computes it for position 0 alone, when
    :func:`first_token_only` can cut it; else None."""
    model = getattr(model, "_orig_mod", model)  # torch.compile'd: the module it wraps
    if type(model).__name__ not in CLASSIFIERS:
        return None
    base = getattr(model, model.base_model_prefix, None)
    encoder = type(base).__name__
    if encoder not in ENCODERS and encoder not in MPNET_ENCODERS:
        return None
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
        return None
    layer = layers[-1]
    if encoder in MPNET_ENCODERS:
        return (layer, mpnet_first_token_forward) if hasattr(layer.attention, "attn") else None
    config = base.config
    if config.is_decoder or getattr(config, "add_cross_attention", False):
        return None
    if getattr(config, "_attn_implementation", None) not in ATTENTION:
        return None
    if not all(hasattr(layer, a) for a in ("attention", "feed_forward_chunk")):
        return None
    if not all(hasattr(layer.attention, a) for a in ("self", "output")):
        return None
    return layer, first_token_forward


def _heads(
    hidden_states: torch.Tensor, query: nn.Module, key: nn.Module, value: nn.Module, size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Position 0 of ``hidden_states`` ``[B, 1, H]``, its query ``[B, heads, 1, size]`` and every position's keys and
    values ``[B, heads, L, size]``."""
    batch, length, _ = hidden_states.shape
    first = hidden_states[:, :1]
    q = query(first).view(batch, 1, -1, size).transpose(1, 2)
    k = key(hidden_states).view(batch, length, -1, size).transpose(1, 2)
    v = value(hidden_states).view(batch, length, -1, size).transpose(1, 2)
    return first, q, k, v


def _first_row(scores_term: torch.Tensor | None) -> torch.Tensor | None:
    """A 4-d mask or bias over ``[.., queries, keys]`` cut to the first query's row (one made for any query, with a
    single row, stays as it is)."""
    if scores_term is not None and scores_term.dim() == 4 and scores_term.shape[-2] > 1:
        return scores_term[:, :, :1]
    return scores_term


def first_token_forward(
    layer: nn.Module,
    hidden_states: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *_args: Any,
    **kwargs: Any,
) -> torch.Tensor:
    """A BERT layer's forward for position 0 alone: ``[B, L, H]`` in, ``[B, 1, H]`` out, equal to the full layer's
    ``[:, :1]``."""
    attn = layer.attention.self
    if attn.config._attn_implementation not in ATTENTION:  # switched since: the full layer
        return type(layer).forward(layer, hidden_states, attention_mask, *_args, **kwargs)
    kwargs = {k: v for k, v in kwargs.items() if k not in ("encoder_attention_mask", "cache", "past_key_values")}
    first, query, key, value = _heads(hidden_states, attn.query, attn.key, attn.value, attn.attention_head_size)
    attention_mask = _first_row(attention_mask)
    interface = ALL_ATTENTION_FUNCTIONS.get_interface(attn.config._attn_implementation, eager_attention_forward)
    out, _ = interface(
        attn,
        query,
        key,
        value,
        attention_mask,
        dropout=attn.dropout.p if attn.training else 0.0,
        scaling=attn.scaling,
        **kwargs,
    )
    out = out.reshape(first.shape[0], 1, -1).contiguous()  # shape[0], not len(): traced for ONNX, the batch varies
    return layer.feed_forward_chunk(layer.attention.output(out, first))


def mpnet_first_token_forward(
    layer: nn.Module,
    hidden_states: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    position_bias: torch.Tensor | None = None,
    output_attentions: bool = False,
    **kwargs: Any,
) -> tuple[torch.Tensor, ...]:
    """An MPNet layer's forward for position 0 alone: ``[B, L, H]`` in, ``([B, 1, H],)`` out, equal to the full
    layer's ``[:, :1]``. Its scores take the first row of the relative position bias and of the (additive) mask."""
    attn = layer.attention.attn
    first, query, key, value = _heads(hidden_states, attn.q, attn.k, attn.v, attn.attention_head_size)
    scores = torch.matmul(query, key.transpose(-1, -2)) / math.sqrt(attn.attention_head_size)
    for bias in (_first_row(position_bias), _first_row(attention_mask)):
        if bias is not None:
            scores = scores + bias
    probs = attn.dropout(nn.functional.softmax(scores, dim=-1))
    context = attn.o(torch.matmul(probs, value).transpose(1, 2).reshape(hidden_states.shape[0], 1, -1))
    attended = layer.attention.LayerNorm(layer.attention.dropout(context) + first)
    out = layer.output(layer.intermediate(attended), attended)
    return (out, probs) if output_attentions else (out,)


def can_cut(model: nn.Module | None) -> bool:
    """Whether :func:`first_token_only` would change ``model``."""
    return model is not None and _cut_point(model) is not None


@contextlib.contextmanager
def first_token_only(*models: nn.Module | None, enabled: bool = True) -> Iterator[list[nn.Module]]:
    """Within the context, each model that :func:`can_cut` computes its last layer for position 0 alone (its logits
    unchanged, its last hidden state of length 1); on leaving, the layers are as they were. Yields the models it
    changed. Weights, state dicts and saving are untouched: only the layer's ``forward`` is replaced."""
    changed: list[tuple[nn.Module, nn.Module]] = []
    try:
        for model in models if enabled else ():
            point = _cut_point(model) if model is not None else None
            if point is None or "forward" in vars(point[0]):  # not one it knows, or already cut (the same model twice)
                continue
            layer, cut = point
            layer.forward = types.MethodType(cut, layer)
            changed.append((model, layer))
        yield [m for m, _ in changed]
    finally:
        for _, layer in changed:
            vars(layer).pop("forward", None)
