"""Vocabulary pruning (as TextPruner does): a student keeps only the word pieces its task's text uses.

A student made from a multilingual teacher's layers keeps the teacher's whole embedding matrix (multilingual-e5-small:
250,002 pieces x 384, 96 M of a 4-layer student's 103 M parameters), though one task's text uses a few thousand of
them. :func:`used_token_ids` collects the ids a set of texts produces; :func:`prune_vocabulary` makes a tokenizer
whose vocabulary is only those pieces (ids renumbered in the old order) and slices the model's embedding rows to
match.

The property that makes this safe: **on the texts the ids were chosen from, the pruned tokenizer produces exactly the
same pieces, and the pruned model exactly the same outputs.**

- Unigram (XLM-R, e5): the Viterbi segmentation of a text is the best-scoring path through the lattice of pieces that
  match it. Pruning keeps every piece of that path with its score and only removes other candidates, so the path stays
  the best (ties too: the candidates are visited in the same order). The unknown token's score is the lowest piece
  score minus 10, so the piece with the lowest score is kept as well: that score, and any fallback to the unknown
  token, stay as they were (a character whose own piece was pruned may now meet the unknown token, but that path
  scores below the one with the character's piece, which lost already).
- WordPiece (BERT, MiniLM): greedy longest match; the match chosen at each step is kept, and pruning only removes
  longer candidates that did not exist, so each step picks the same piece. A word that became ``[UNK]`` stays
  ``[UNK]``.

On other text a pruned piece falls back to another segmentation (shorter pieces) or to the unknown token.
Special tokens, every added token, the unknown token and every id up to the pad id (RoBERTa-style models count their
position ids from the pad id) are always kept.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn

from textdistill.errors import TextDistillError

SUPPORTED_MODELS = ("Unigram", "WordPiece")
_MARK = "_textdistill_pruned_from"
_BATCH = 2048


@dataclass(frozen=True)
class PrunedFrom:
    """What a pruned tokenizer was cut from: ``source`` (the tokenizer) and ``old_ids[new_id]``, each kept piece's id
    there."""

    source: Any
    old_ids: tuple[int, ...]

    def to_source(self, ids: Sequence[int]) -> list[int]:
        """Ids of this tokenizer as the source tokenizer numbers the same pieces."""
        return [self.old_ids[i] for i in ids]


# --------------------------------------------------------------------------------------------------------------------
# Which ids a task uses


def special_token_ids(tokenizer: Any) -> set[int]:
    """Every special and added token's id, and the unknown token's."""
    ids = set(tokenizer.all_special_ids) | set(getattr(tokenizer, "added_tokens_decoder", {}))
    if tokenizer.unk_token_id is not None:
        ids.add(tokenizer.unk_token_id)
    return ids


def _batches(items: Sequence[Any], size: int = _BATCH) -> Iterable[slice]:
    return (slice(start, start + size) for start in range(0, len(items), size))


def used_token_ids(
    tokenizer: Any,
    texts: Sequence[str],
    pairs: Sequence[str] | None = None,
    words: Sequence[Sequence[str]] | None = None,
) -> set[int]:
    """The ids ``tokenizer`` produces on ``texts`` (with their ``pairs``) and on ``words`` (sentences of pre-split
    words, tokenized with ``is_split_into_words=True`` as :func:`textdistill.data.tokenize_words` does), untruncated
    (truncation only cuts the pieces), plus :func:`special_token_ids`."""
    if pairs is not None and len(pairs) != len(texts):
        raise ValueError(f"{len(texts)} texts but {len(pairs)} pairs")
    used = special_token_ids(tokenizer)

    def add(encoding: Any) -> None:
        used.update(itertools.chain.from_iterable(encoding["input_ids"]))

    for part in _batches(texts):
        add(tokenizer(list(texts[part]), list(pairs[part]) if pairs is not None else None, verbose=False))
    for part in _batches(words or []):
        add(tokenizer([list(w) for w in words[part]], is_split_into_words=True, verbose=False))  # type: ignore[index]
    return used


# --------------------------------------------------------------------------------------------------------------------
# The tokenizer's JSON


def _backend_state(tokenizer: Any) -> dict[str, Any]:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise TextDistillError(
            f"vocabulary pruning needs a fast tokenizer (tokenizers library); {type(tokenizer).__name__} is not"
        )
    return json.loads(backend.to_str())


def tokenizer_model_type(tokenizer: Any) -> str:
    """The tokenizers model of a fast tokenizer: Unigram, WordPiece, BPE, WordLevel."""
    return str(_backend_state(tokenizer)["model"]["type"])


def check_prunable(tokenizer: Any) -> None:
    """A :class:`TextDistillError` unless the tokenizer's model is one :func:`prune_vocabulary` can cut."""
    _require_supported(tokenizer_model_type(tokenizer))


def _require_supported(kind: str) -> None:
    if kind not in SUPPORTED_MODELS:
        raise TextDistillError(
            f"student.prune_vocabulary: pruning supports {' and '.join(SUPPORTED_MODELS)} "
            f"tokenizers (XLM-R / e5, "
            f"BERT / MiniLM); this teacher's tokenizer is a {kind} model"
        )


def _model_unk_id(model: dict[str, Any]) -> int | None:
    if model["type"] == "Unigram":
        return model.get("unk_id")
    return model["vocab"].get(model.get("unk_token"))


def _map_processor(node: dict[str, Any] | None, fn: Callable[[int], int]) -> dict[str, Any] | None:
    """The post-processor with each special token id it holds replaced by ``fn(id)`` (TemplateProcessing,
    RobertaProcessing, BertProcessing, and Sequence of them; the others hold no ids)."""
    if node is None:
        return None
    kind = node.get("type")
    if kind == "Sequence":
        return {**node, "processors": [_map_processor(p, fn) for p in node["processors"]]}
    if kind == "TemplateProcessing":
        specials = {
            name: {**spec, "ids": [fn(i) for i in spec["ids"]]} for name, spec in node["special_tokens"].items()
        }
        return {**node, "special_tokens": specials}
    if kind in ("RobertaProcessing", "BertProcessing"):
        return {**node, "sep": [node["sep"][0], fn(node["sep"][1])], "cls": [node["cls"][0], fn(node["cls"][1])]}
    return node


def _processor_ids(node: dict[str, Any] | None) -> set[int]:
    seen: set[int] = set()
    _map_processor(node, lambda i: seen.add(i) or i)  # type: ignore[func-returns-value]
    return seen


def _config_token_ids(config: Any) -> dict[str, int]:
    return {
        k: v
        for k in ("pad_token_id", "bos_token_id", "eos_token_id", "sep_token_id")
        if isinstance(v := getattr(config, k, None), int)
    }


def _required_ids(tokenizer: Any, state: dict[str, Any], model: nn.Module) -> set[int]:
    """Ids kept whatever the texts: special and added tokens, the unknown piece, the post-processor's and the
    padding's ids, every id up to the pad ids (RoBERTa-style position ids start after the pad id, so it must not move),
    the model config's token ids and, for Unigram, the lowest-scoring piece (the unknown token's score derives from
    it)."""
    required = special_token_ids(tokenizer) | _processor_ids(state.get("post_processor"))
    required |= {t["id"] for t in state.get("added_tokens") or []}
    unk = _model_unk_id(state["model"])
    if unk is not None:
        required.add(unk)
    padding = state.get("padding") or {}
    pads = [
        i
        for i in (tokenizer.pad_token_id, padding.get("pad_id"), getattr(model.config, "pad_token_id", None))
        if isinstance(i, int)
    ]
    required |= set(range(max(pads, default=-1) + 1))
    required |= set(_config_token_ids(model.config).values())
    if state["model"]["type"] == "Unigram":
        scores = [score for _, score in state["model"]["vocab"]]
        required.add(min(range(len(scores)), key=scores.__getitem__))
    return required


def _pruned_model(model: dict[str, Any], kept: list[int], new_id: dict[int, int]) -> dict[str, Any]:
    """The tokenizers ``model`` section with only the ``kept`` pieces, renumbered."""
    if model["type"] == "Unigram":
        vocab = model["vocab"]
        unk = model.get("unk_id")
        return {
            **model,
            "vocab": [vocab[i] for i in kept if i < len(vocab)],
            "unk_id": None if unk is None else new_id[unk],
        }
    pieces = sorted(((new_id[i], piece) for piece, i in model["vocab"].items() if i in new_id))
    return {**model, "vocab": {piece: i for i, piece in pieces}}


def _pruned_state(state: dict[str, Any], kept: list[int], new_id: dict[int, int]) -> dict[str, Any]:
    """The whole tokenizer JSON with ids renumbered: model, added tokens, post-processor, padding."""
    out = {**state, "model": _pruned_model(state["model"], kept, new_id)}
    out["added_tokens"] = [{**t, "id": new_id[t["id"]]} for t in state.get("added_tokens") or []]
    out["post_processor"] = _map_processor(state.get("post_processor"), new_id.__getitem__)
    if state.get("padding"):
        out["padding"] = {**state["padding"], "pad_id": new_id[state["padding"]["pad_id"]]}
    return out


def _rebuild_tokenizer(tokenizer: Any, state: dict[str, Any]) -> Any:
    """A ``PreTrainedTokenizerFast`` over the tokenizer JSON ``state``, with the same special tokens and settings."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    specials = {
        name: str(value)
        for name in tokenizer.SPECIAL_TOKENS_ATTRIBUTES
        if (value := getattr(tokenizer, name, None)) is not None
    }
    extra = [str(t) for t in getattr(tokenizer, "extra_special_tokens", None) or []]
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(json.dumps(state)),
        model_max_length=tokenizer.model_max_length,
        padding_side=tokenizer.padding_side,
        truncation_side=tokenizer.truncation_side,
        model_input_names=list(tokenizer.model_input_names),
        clean_up_tokenization_spaces=getattr(tokenizer, "clean_up_tokenization_spaces", False),
        **({"extra_special_tokens": extra} if extra else {}),
        **specials,
    )


# --------------------------------------------------------------------------------------------------------------------
# The model's embeddings


def _sliced(param: nn.Parameter, rows: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(param.detach()[rows].clone(), requires_grad=param.requires_grad)


def _replace_parameters(model: nn.Module, new: dict[int, nn.Parameter]) -> None:
    """Every reference to a parameter whose ``id`` is in ``new`` (tied ones included) now points to its new one."""
    for module in model.modules():
        for name, param in list(module._parameters.items()):
            if param is not None and id(param) in new:
                module._parameters[name] = new[id(param)]


def _slice_embeddings(model: nn.Module, kept: list[int], new_id: dict[int, int]) -> int:
    """Keep only the ``kept`` rows of the input embeddings and of an output embedding (weight and bias; tied
    parameters stay tied); returns the input embedding's row count before."""
    emb = model.get_input_embeddings()
    rows_before = emb.num_embeddings
    if kept[-1] >= rows_before:
        raise TextDistillError(
            f"vocabulary pruning: the tokenizer has id {kept[-1]} but the model has only {rows_before} embedding rows"
        )
    rows = torch.tensor(kept, dtype=torch.long, device=emb.weight.device)
    new = {id(emb.weight): _sliced(emb.weight, rows)}
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if out is not None:
        for param in (out.weight, getattr(out, "bias", None)):
            if param is not None and id(param) not in new:
                new[id(param)] = _sliced(param, rows)
        out.out_features = len(kept)
    _replace_parameters(model, new)
    emb.num_embeddings = len(kept)
    if emb.padding_idx is not None:
        emb.padding_idx = new_id.get(emb.padding_idx)
    parent = model.get_submodule(next(name.rpartition(".")[0] for name, m in model.named_modules() if m is emb))
    if isinstance(getattr(parent, "padding_idx", None), int):  # RoBERTa-style embeddings: position ids count from it
        parent.padding_idx = new_id[parent.padding_idx]
    return rows_before


# --------------------------------------------------------------------------------------------------------------------
# Pruning


def prune_vocabulary(
    model: nn.Module, tokenizer: Any, keep_ids: Iterable[int]
) -> tuple[nn.Module, Any, dict[str, Any]]:
    """Cut ``tokenizer`` and ``model`` (in place) down to the pieces ``keep_ids`` (plus the ids always kept, see the
    module docstring); returns (model, the new tokenizer, info: tokenizer model, vocabulary and parameters before and
    after).

    The new tokenizer is a ``PreTrainedTokenizerFast`` with the same special tokens and settings; ids are renumbered
    in the old order; ``model.config.vocab_size`` and its token ids follow. It remembers what it was cut from
    (:func:`pruned_from`)."""
    from textdistill.models import count_parameters

    state = _backend_state(tokenizer)
    _require_supported(state["model"]["type"])
    size = len(tokenizer)
    keep = set(keep_ids)
    outside = sorted(i for i in keep if not 0 <= i < size)
    if outside:
        raise TextDistillError(f"vocabulary pruning: ids {outside[:5]} are not ids of this tokenizer (0..{size - 1})")
    kept = sorted(keep | {i for i in _required_ids(tokenizer, state, model) if i < size})
    new_id = {old: new for new, old in enumerate(kept)}
    params_before = count_parameters(model)
    pruned = _rebuild_tokenizer(tokenizer, _pruned_state(state, kept, new_id))
    setattr(pruned, _MARK, PrunedFrom(tokenizer, tuple(kept)))
    rows_before = _slice_embeddings(model, kept, new_id)
    model.config.vocab_size = len(kept)
    for key, value in _config_token_ids(model.config).items():
        setattr(model.config, key, new_id.get(value))
    params_after = count_parameters(model)
    info = {
        "tokenizer_model": state["model"]["type"],
        "vocab_before": size,
        "vocab_after": len(kept),
        "embedding_rows_before": rows_before,
        "params_before": params_before,
        "params_after": params_after,
        "params_removed": params_before - params_after,
    }
    return model, pruned, info


def pruned_from(tokenizer: Any, source: Any) -> PrunedFrom | None:
    """How ``tokenizer`` was cut from ``source`` (the same object, or one with the same vocabulary), or None when it
    was not."""
    from textdistill.models import same_tokenizer

    mark = getattr(tokenizer, _MARK, None)
    if mark is None or not (mark.source is source or same_tokenizer(mark.source, source)):
        return None
    return mark


def source_features(
    tokenizer: Any, source: Any, features: list[dict[str, list[int]]]
) -> list[dict[str, list[int]]] | None:
    """``features`` made by the pruned ``tokenizer``, as ``source`` numbers the same pieces (on the texts the
    vocabulary was chosen from that is exactly what ``source`` produces); None unless ``tokenizer`` was cut from
    ``source``."""
    mark = pruned_from(tokenizer, source)
    if mark is None:
        return None
    return [{**f, "input_ids": mark.to_source(f["input_ids"])} for f in features]
