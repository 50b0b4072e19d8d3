"""Named-entity recognition data and scoring (token-level distillation builds on these).

- :func:`read_conll`: CoNLL files (``token ... tag`` columns, blank lines between sentences, ``-DOCSTART-`` lines),
  IOB1 or IOB2, returned in IOB2; a bad line is an error naming the file and line.
- :func:`align_labels`: word tags onto sub-word tokens (``first``: the first piece of a word carries its tag, the
  other pieces and special tokens get ``IGNORE``; ``all``: every piece carries it, ``B-`` continued as ``I-``).
- :func:`entities` and :func:`entity_scores`: spans and entity-level precision / recall / F1 per type and overall,
  as seqeval's default (CoNLL-eval) mode counts them.
- :func:`predict_entities`: entity spans (type, text, character offsets, score) of raw text from a saved token
  classifier (``textdistill predict``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from textdistill.errors import TextDistillError
from textdistill.losses import IGNORE_INDEX

IGNORE = IGNORE_INDEX  # the label of positions no loss or metric looks at (HF convention)


@dataclass
class Sentence:
    tokens: list[str]
    tags: list[str]
    line: int  # the file line of its first token


@dataclass
class ConllData:
    sentences: list[Sentence]
    source: str
    tag_names: list[str] = field(default_factory=list)  # every IOB2 tag seen, "O" first, then sorted


def iob1_to_iob2(tags: Sequence[str]) -> list[str]:
    """IOB1 (``I-`` opens an entity unless it continues one of the same type; ``B-`` only between two adjacent
    entities of one type) to IOB2 (every entity opens with ``B-``)."""
    out: list[str] = []
    prev = "O"
    for tag in tags:
        if tag.startswith("I-") and (prev == "O" or prev[2:] != tag[2:]):
            tag = "B-" + tag[2:]
        out.append(tag)
        prev = tag
    return out


def _check_tag(tag: str, path: Path, line: int) -> None:
    if tag != "O" and not (len(tag) > 2 and tag[:2] in ("B-", "I-")):
        raise TextDistillError(f"{path}:{line}: tag {tag!r} is not O, B-TYPE or I-TYPE")


def read_conll(path: str | os.PathLike, scheme: str = "iob1", tag_column: int = -1, columns: int | None = None) -> ConllData:
    """Sentences of a CoNLL file. Every non-blank line must have the same number of whitespace-separated columns
    (``columns``, or that of the first line); ``tag_column`` picks the tag (default: the last)."""
    if scheme not in ("iob1", "iob2"):
        raise TextDistillError(f"scheme: iob1 or iob2, got {scheme!r}")
    from textdistill.data import bad_byte, read_bytes

    p = Path(path)
    raw = read_bytes(p)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, byte = bad_byte(raw, exc)
        raise TextDistillError(f"{p}:{line}: not valid UTF-8 (byte {byte}); convert the file to UTF-8") from None
    sentences: list[Sentence] = []
    tokens: list[str] = []
    tags: list[str] = []
    start = 0

    def flush() -> None:
        if tokens:
            sentences.append(Sentence(list(tokens), iob1_to_iob2(tags) if scheme == "iob1" else list(tags), start))
            tokens.clear()
            tags.clear()

    for n, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            flush()
            continue
        if parts[0] == "-DOCSTART-":
            flush()
            continue
        if columns is None:
            columns = len(parts)
            if columns < 2:
                raise TextDistillError(f"{p}:{n}: expected a token and a tag (at least 2 columns), got 1")
        if len(parts) != columns:
            raise TextDistillError(f"{p}:{n}: expected {columns} columns like the first line, got {len(parts)}")
        _check_tag(parts[tag_column], p, n)
        if scheme == "iob2" and parts[tag_column].startswith("I-") and (not tags or tags[-1][2:] != parts[tag_column][2:]):
            raise TextDistillError(f"{p}:{n}: {parts[tag_column]} follows {tags[-1] if tags else 'a sentence start'}: "
                                   "not valid IOB2 (is the file IOB1? set data.tag_scheme: iob1)")  # fmt: skip
        if not tokens:
            start = n
        tokens.append(parts[0])
        tags.append(parts[tag_column])
    flush()
    if not sentences:
        raise TextDistillError(f"{p}: no sentences (empty file)")
    return ConllData(sentences, str(p), tag_order({t for s in sentences for t in s.tags}))


def tag_order(tags: set[str] | Sequence[str]) -> list[str]:
    """Tag names in a stable order: ``O`` first, then by entity type, ``B-`` before ``I-``."""
    return ["O"] + sorted(set(tags) - {"O"}, key=lambda t: (t[2:], t[:2]))


def align_labels(word_ids: Sequence[int | None], word_tags: Sequence[int], tag_names: Sequence[str], mode: str = "first") -> list[int]:
    """Per sub-word token: its word's tag id, or :data:`IGNORE` (special tokens; in ``first`` mode also a word's later
    pieces). ``word_ids`` is a fast tokenizer's ``word_ids()``. In ``all`` mode a ``B-X`` word's later pieces get
    ``I-X`` (when the label set has it), so the pieces still read as one entity."""
    if mode not in ("first", "all"):
        raise TextDistillError(f"label alignment: first or all, got {mode!r}")
    index = {t: i for i, t in enumerate(tag_names)}
    out: list[int] = []
    prev: int | None = None
    for w in word_ids:
        if w is None:
            out.append(IGNORE)
        elif w != prev:
            out.append(word_tags[w])
        elif mode == "first":
            out.append(IGNORE)
        else:
            tag = tag_names[word_tags[w]]
            out.append(index.get("I-" + tag[2:], word_tags[w]) if tag.startswith("B-") else word_tags[w])
        prev = w
    return out


def entities(tags: Sequence[str]) -> set[tuple[str, int, int]]:
    """``(type, start, end)`` spans (end exclusive) of an IOB2 sequence, read as seqeval's default mode reads it: an
    ``I-X`` after ``O`` or after another type starts an entity too."""
    spans: set[tuple[str, int, int]] = set()
    kind, start = None, 0
    for i, tag in enumerate(list(tags) + ["O"]):
        prefix, t = (tag[:1], tag[2:]) if tag != "O" else ("O", None)
        ends = kind is not None and (prefix in ("O", "B") or t != kind)
        if ends:
            spans.add((kind, start, i))
            kind = None
        if prefix in ("B", "I") and kind is None:
            kind, start = t, i
    return spans


def entity_scores(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict[str, dict[str, float]]:
    """Entity-level precision, recall, F1 and support per type and ``overall`` (micro), over sentences."""
    if len(gold) != len(pred) or any(len(g) != len(p) for g, p in zip(gold, pred)):
        raise ValueError("gold and predicted tag sequences differ in length")
    counts: dict[str, list[int]] = {}  # type -> [true positives, predicted, gold]
    for g, p in zip(gold, pred):
        gs, ps = entities(g), entities(p)
        for kind in {e[0] for e in gs | ps}:
            c = counts.setdefault(kind, [0, 0, 0])
            c[0] += len({e for e in gs if e[0] == kind} & {e for e in ps if e[0] == kind})
            c[1] += sum(e[0] == kind for e in ps)
            c[2] += sum(e[0] == kind for e in gs)
    total = [sum(c[i] for c in counts.values()) for i in range(3)]

    def prf(tp: int, npred: int, ngold: int) -> dict[str, float]:
        precision = tp / npred if npred else 0.0
        recall = tp / ngold if ngold else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return {"precision": precision, "recall": recall, "f1": f1, "support": float(ngold)}

    out = {kind: prf(*c) for kind, c in sorted(counts.items())}
    out["overall"] = prf(*total)
    return out


def predict_entities(
    model: Any, tokenizer: Any, texts: Sequence[str], batch_size: int = 32, max_length: int = 256
) -> list[list[dict[str, Any]]]:
    """Entity spans of raw ``texts`` from a token classifier: per text a list of ``{"type", "text", "start", "end",
    "score"}`` (character offsets into the text, end exclusive; score: the mean probability of the words' tags).

    Words are the tokenizer's pre-tokenized words (whitespace and punctuation); each word reads its first piece, as
    in training. Text beyond ``max_length`` tokens is not tagged."""
    import torch

    if not getattr(tokenizer, "is_fast", False):
        raise TextDistillError("entity prediction needs a fast tokenizer (word ids and character offsets)")
    names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    model.eval()
    out: list[list[dict[str, Any]]] = []
    for start in range(0, len(texts), batch_size):
        chunk = list(texts[start : start + batch_size])
        enc = tokenizer(chunk, truncation=True, max_length=max_length, padding=True, return_offsets_mapping=True, return_tensors="pt")
        offsets = enc.pop("offset_mapping")
        with torch.inference_mode():
            probs = model(**enc).logits.float().softmax(-1)
        for i, text in enumerate(chunk):
            spans: dict[int, list[int]] = {}  # word -> [first char, last char, first token]
            for t, w in enumerate(enc.word_ids(i)):
                if w is None:
                    continue
                a, b = offsets[i, t].tolist()
                if w not in spans:
                    spans[w] = [a, b, t]
                spans[w][1] = b
            words = sorted(spans)
            conf, tag_ids = probs[i, [spans[w][2] for w in words]].max(-1)
            tags = [names[j] for j in tag_ids.tolist()]
            found = []
            for kind, a, b in sorted(entities(tags), key=lambda e: e[1]):
                lo, hi = spans[words[a]][0], spans[words[b - 1]][1]
                found.append({"type": kind, "text": text[lo:hi], "start": lo, "end": hi, "score": round(float(conf[a:b].mean()), 4)})
            out.append(found)
    return out
