"""Named-entity recognition data and scoring (token-level distillation builds on these).

- :func:`read_tagged`: one tagged file in either layout, tags read in a scheme and returned in IOB2 (the one dispatch
  the data loaders call): :func:`read_conll` (``token ... tag`` columns, blank lines between sentences,
  ``-DOCSTART-`` lines) or :func:`read_token_lines` (a sentence per line: tokens, a TAB, tags). Schemes: IOB1, IOB2
  or BIOES (which also reads BMES and BIO with ``S-``); a bad line is an error naming the file and line.
- :func:`align_labels`: word tags onto sub-word tokens (``first``: the first piece of a word carries its tag, the
  other pieces and special tokens get ``IGNORE``; ``all``: every piece carries it, ``B-`` continued as ``I-``). A
  piece that holds no character of its word (the bare ``▁`` a sentencepiece tokenizer puts before a CJK character)
  is passed over: the word's first piece with text carries the tag.
- :func:`entities` and :func:`entity_scores`: spans and entity-level precision / recall / F1 per type and overall,
  as seqeval's default (CoNLL-eval) mode counts them.
- :func:`predict_entities`: entity spans (type, text, character offsets, score) of raw text from a saved token
  classifier (``textdistill predict``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from textdistill.errors import TextDistillError
from textdistill.files import bad_byte, is_utf8, read_bytes
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
    word_per_line: bool = True  # False: a whole sentence sits on its line (token_lines), word j is not on line + j


SCHEMES = ("iob1", "iob2", "bioes")
TAGGED_FORMATS = ("conll", "token_lines")  # the data.format values of files holding a tag per token
# The prefixes each scheme reads (any tag may also be O). BIOES takes B/I/M/E/S, so it reads BIOES, BMES (M- in
# place of I-) and BIO files that mark single-token entities with S-.
PREFIXES = {"iob1": ("B", "I"), "iob2": ("B", "I"), "bioes": ("B", "I", "M", "E", "S")}


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


def bioes_to_iob2(tags: Sequence[str]) -> list[str]:
    """BIOES / BMES / BIO+S to IOB2: ``S-X`` -> ``B-X``, ``M-X`` and ``E-X`` -> ``I-X``. A well-formed sequence
    keeps its entity spans exactly. ``E-X`` and ``S-X`` close their entity, so a continuation tag (``I-``, ``M-``,
    ``E-``) after them, after ``O`` or after another type opens a new entity (``B-X``), as seqeval's default mode
    reads such a sequence (the real Weibo and Resume files hold a few entities that open with ``M-``)."""
    out: list[str] = []
    open_type: str | None = None  # the type of the entity a continuation tag would continue
    for tag in tags:
        if tag == "O":
            out.append(tag)
            open_type = None
            continue
        prefix, kind = tag[0], tag[2:]
        if prefix in ("I", "M", "E") and open_type == kind:
            out.append("I-" + kind)
        else:  # B-, S-, or a continuation that continues nothing
            out.append("B-" + kind)
        open_type = None if prefix in ("E", "S") else kind
    return out


def to_iob2(tags: Sequence[str], scheme: str) -> list[str]:
    """``tags`` in ``scheme`` (iob1, iob2 or bioes) as IOB2."""
    if scheme == "iob1":
        return iob1_to_iob2(tags)
    if scheme == "bioes":
        return bioes_to_iob2(tags)
    return list(tags)


def _check_scheme(scheme: str) -> None:
    if scheme not in SCHEMES:
        raise TextDistillError(f"scheme: iob1, iob2 or bioes, got {scheme!r}")


def _check_tag(tag: str, where: str, scheme: str = "iob2", word: int | None = None) -> None:
    """A tag is ``O`` or ``P-TYPE`` with a prefix ``P`` of ``scheme``; else an error naming ``where`` (file:line, or
    a dataset's row), the word's place when one line or row holds a whole sentence, and what the scheme expects."""
    prefixes = PREFIXES[scheme]
    if tag == "O" or (len(tag) > 2 and tag[1] == "-" and tag[0] in prefixes):
        return
    expected = ", ".join(f"{p}-TYPE" for p in prefixes[:-1]) + f" or {prefixes[-1]}-TYPE"
    place = f" (word {word})" if word is not None else ""
    hint = ""
    if scheme != "bioes" and len(tag) > 2 and tag[1] == "-" and tag[0] in PREFIXES["bioes"]:
        hint = "; BIOES or BMES tags? set data.tag_scheme: bioes"
    raise TextDistillError(f"{where}: tag {tag!r}{place} is not O, {expected} (tag scheme {scheme}{hint})")


def _check_iob2(tag: str, prev: str | None, where: str) -> None:
    """In IOB2 an ``I-X`` continues a ``B-X`` or ``I-X``; ``prev`` is the tag before it (None: sentence start)."""
    if tag.startswith("I-") and (prev is None or prev[2:] != tag[2:]):
        raise TextDistillError(
            f"{where}: {tag} follows {prev or 'a sentence start'}: "
            "not valid IOB2 (is the file IOB1? set data.tag_scheme: iob1)"
        )


def _read_text(path: str | os.PathLike, encoding: str = "utf-8") -> tuple[Path, str]:
    """A tagged file as text in ``encoding`` (data.encoding; UTF-8: a leading byte-order mark is dropped); bad bytes
    are an error naming the line."""
    p = Path(path)
    raw = read_bytes(p)
    utf8 = is_utf8(encoding)  # any spelling: utf8, u8, UTF-8-sig
    try:
        return p, raw.decode("utf-8-sig" if utf8 else encoding)
    except LookupError:
        raise TextDistillError(f"data.encoding: unknown encoding {encoding!r}") from None
    except UnicodeDecodeError as exc:
        line, byte = bad_byte(raw, exc)
        name = "UTF-8" if utf8 else encoding
        raise TextDistillError(
            f"{p}:{line}: not valid {name} (byte {byte}); convert the file or set data.encoding"
        ) from None


def _tagged_data(sentences: list[Sentence], path: Path, word_per_line: bool) -> ConllData:
    if not sentences:
        raise TextDistillError(f"{path}: no sentences (empty file)")
    return ConllData(sentences, str(path), tag_order({t for s in sentences for t in s.tags}), word_per_line)


def read_conll(
    path: str | os.PathLike,
    scheme: str = "iob1",
    tag_column: int = -1,
    columns: int | None = None,
    encoding: str = "utf-8",
) -> ConllData:
    """Sentences of a CoNLL file. Every non-blank line must have the same number of whitespace-separated columns
    (``columns``, or that of the first line); ``tag_column`` picks the tag (default: the last)."""
    _check_scheme(scheme)
    p, text = _read_text(path, encoding)
    sentences: list[Sentence] = []
    tokens: list[str] = []
    tags: list[str] = []
    start = 0

    def flush() -> None:
        if tokens:
            sentences.append(Sentence(list(tokens), to_iob2(tags, scheme), start))
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
        _check_tag(parts[tag_column], f"{p}:{n}", scheme)
        if scheme == "iob2":
            _check_iob2(parts[tag_column], tags[-1] if tags else None, f"{p}:{n}")
        if not tokens:
            start = n
        tokens.append(parts[0])
        tags.append(parts[tag_column])
    flush()
    return _tagged_data(sentences, p, True)


def read_token_lines(path: str | os.PathLike, scheme: str = "iob2", encoding: str = "utf-8") -> ConllData:
    """Sentences of a file with one sentence per line: its tokens, a TAB, then its tags (tokens and tags each
    separated by spaces; as the Resume NER files). Blank lines are skipped; a line without exactly one TAB, or whose
    token count differs from its tag count, is an error naming the file and line."""
    _check_scheme(scheme)
    p, text = _read_text(path, encoding)
    sentences: list[Sentence] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 2:
            got = (
                ("no TAB (is the file CoNLL, a token per line? set data.format: conll)")
                if len(fields) == 1
                else f"{len(fields) - 1} TABs"
            )
            raise TextDistillError(f"{p}:{n}: expected tokens, a TAB, then tags; got {got}")
        tokens, tags = fields[0].split(), fields[1].split()
        if len(tokens) != len(tags) or not tokens:
            raise TextDistillError(f"{p}:{n}: {_count(len(tokens), 'token')} but {_count(len(tags), 'tag')}")
        sentences.append(Sentence(tokens, sentence_tags(tags, scheme, f"{p}:{n}"), n))
    return _tagged_data(sentences, p, False)


def sentence_tags(tags: Sequence[str], scheme: str, where: str) -> list[str]:
    """One sentence's tags in ``scheme``, checked (an error names ``where`` and the word) and returned in IOB2."""
    _check_scheme(scheme)
    for j, tag in enumerate(tags):
        _check_tag(tag, where, scheme, word=j + 1)
        if scheme == "iob2":
            _check_iob2(tag, tags[j - 1] if j else None, where)
    return to_iob2(tags, scheme)


def _count(n: int, what: str) -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")


def read_tagged(
    path: str | os.PathLike, format: str = "conll", scheme: str = "iob2", encoding: str = "utf-8"
) -> ConllData:
    """One tagged file: ``format`` conll (:func:`read_conll`) or token_lines (:func:`read_token_lines`), tags in
    ``scheme`` (iob1, iob2 or bioes), returned in IOB2; text in ``encoding``."""
    if format == "conll":
        return read_conll(path, scheme, encoding=encoding)
    if format == "token_lines":
        return read_token_lines(path, scheme, encoding)
    raise TextDistillError(f"tagged file format: {' or '.join(TAGGED_FORMATS)}, got {format!r}")


def tag_order(tags: set[str] | Sequence[str]) -> list[str]:
    """Tag names in a stable order: ``O`` first, then by entity type, ``B-`` before ``I-``."""
    return ["O"] + sorted(set(tags) - {"O"}, key=lambda t: (t[2:], t[:2]))


def blank_ids(tokenizer: Any, ids: Iterable[int]) -> set[int]:
    """Of token ``ids``, those whose piece holds no character of text: the bare word-start marker a sentencepiece
    tokenizer (XLM-R: ``▁``) or a byte-level BPE (``Ġ``) puts before a word it cannot merge with it, as before most
    CJK characters. Read through the tokenizer's decoder (without one: ``▁`` is taken for a space)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    decoder = getattr(backend, "decoder", None)
    uniq = sorted(set(ids))
    out = set()
    for i, piece in zip(uniq, tokenizer.convert_ids_to_tokens(uniq)):
        if not isinstance(piece, str):
            continue
        text = decoder.decode([piece]) if decoder is not None else piece.replace("\u2581", " ")
        if not text.strip():
            out.add(i)
    return out


def align_labels(
    word_ids: Sequence[int | None],
    word_tags: Sequence[int],
    tag_names: Sequence[str],
    mode: str = "first",
    blank: Sequence[bool] | None = None,
) -> list[int]:
    """Per sub-word token: its word's tag id, or :data:`IGNORE` (special tokens; in ``first`` mode also a word's other
    pieces). ``word_ids`` is a fast tokenizer's ``word_ids()``. In ``all`` mode a ``B-X`` word's later pieces get
    ``I-X`` (when the label set has it), so the pieces still read as one entity.

    ``blank[t]`` marks a piece that holds no character of its word (:func:`blank_ids`): the tag goes on the word's
    first piece that is not blank (its first piece when all are), and blank pieces carry no tag in either mode."""
    if mode not in ("first", "all"):
        raise TextDistillError(f"label alignment: first or all, got {mode!r}")
    index = {t: i for i, t in enumerate(tag_names)}
    head: dict[int, int] = {}  # word -> the position that carries its tag
    for t, w in enumerate(word_ids):
        if w is None:
            continue
        if w not in head or (blank is not None and blank[head[w]] and not blank[t]):
            head[w] = t
    out: list[int] = []
    for t, w in enumerate(word_ids):
        if w is None:
            out.append(IGNORE)
        elif head[w] == t:
            out.append(word_tags[w])
        elif mode == "first" or (blank is not None and blank[t]):
            out.append(IGNORE)
        else:
            tag = tag_names[word_tags[w]]
            out.append(index.get("I-" + tag[2:], word_tags[w]) if tag.startswith("B-") else word_tags[w])
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


_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"  # kana and Han (Korean is written in words)
# Words as NER training data has them: a CJK character each (Chinese corpora tag characters), runs of letters and
# digits, and each other mark alone (as BERT's pre-tokenizer splits punctuation).
WORD = re.compile(f"[{_CJK}]|(?:(?![{_CJK}])[^\\W_])+|\\S")


def split_words(text: str) -> list[tuple[int, int]]:
    """Character spans of the words of raw ``text`` (see :data:`WORD`)."""
    return [m.span() for m in WORD.finditer(text)]


def predict_entities(
    model: Any, tokenizer: Any, texts: Sequence[str], batch_size: int = 32, max_length: int = 256
) -> list[list[dict[str, Any]]]:
    """Entity spans of raw ``texts`` from a token classifier: per text a list of ``{"type", "text", "start", "end",
    "score"}`` (character offsets into the text, end exclusive; score: the mean probability of the words' tags).

    The text is split into words as training data is (:func:`split_words`: a CJK character each, so Chinese text
    needs no spaces, with any tokenizer), tokenized as pre-split words, and each word reads its first piece that holds
    text (:func:`align_labels`), as in training. Words beyond ``max_length`` tokens are not tagged."""
    import torch

    if not getattr(tokenizer, "is_fast", False):
        raise TextDistillError("entity prediction needs a fast tokenizer (word ids)")
    names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    blanks: set[int] = set()  # token ids of pieces without text, of the ids seen so far
    seen: set[int] = set()
    model.eval()
    out: list[list[dict[str, Any]]] = []
    for start in range(0, len(texts), batch_size):
        chunk = list(texts[start : start + batch_size])
        spans = [split_words(text) for text in chunk]
        words = [
            [text[a:b] for a, b in sp] or ["."] for text, sp in zip(chunk, spans)
        ]  # "." stands in for an empty text
        enc = tokenizer(
            words, is_split_into_words=True, truncation=True, max_length=max_length, padding=True, return_tensors="pt"
        )
        with torch.inference_mode():
            probs = model(**enc).logits.float().softmax(-1)
        new = set(enc["input_ids"].flatten().tolist()) - seen
        blanks |= blank_ids(tokenizer, new)
        seen |= new
        for i, text in enumerate(chunk):
            read: dict[
                int, tuple[int, bool]
            ] = {}  # word -> (the token it reads, as in training; whether that is blank)
            for t, (w, tok) in enumerate(zip(enc.word_ids(i), enc["input_ids"][i].tolist())):
                if w is not None and (w not in read or (read[w][1] and tok not in blanks)):
                    read[w] = (t, tok in blanks)
            tagged = sorted(read) if spans[i] else []  # the words inside max_length
            if not tagged:
                out.append([])
                continue
            conf, tag_ids = probs[i, [read[w][0] for w in tagged]].max(-1)
            tags = [names[j] for j in tag_ids.tolist()]
            found = []
            for kind, a, b in sorted(entities(tags), key=lambda e: e[1]):
                lo, hi = spans[i][tagged[a]][0], spans[i][tagged[b - 1]][1]
                found.append(
                    {
                        "type": kind,
                        "text": text[lo:hi],
                        "start": lo,
                        "end": hi,
                        "score": round(float(conf[a:b].mean()), 4),
                    }
                )
            out.append(found)
    return out
