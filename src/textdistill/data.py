"""Reading labelled text, label maps, tokenization and batching.

Readers (TSV, CSV, JSONL, HF ``datasets``) return :class:`TextData`: plain columns of text, optional text pair and
label *names*. Labels become ids through a :class:`LabelSet` that is stored with the model (``id2label``).
Text is tokenized once per tokenizer; batches are padded dynamically and grouped by length.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import os
import re
import sys
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from itertools import chain
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from textdistill.config import DataConfig
from textdistill.errors import TextDistillError
from textdistill.files import bad_byte, read_bytes
from textdistill.losses import IGNORE_INDEX
from textdistill.ner import TAGGED_FORMATS, align_labels, blank_ids, read_tagged, sentence_tags, tag_order


@dataclass
class TextData:
    """One split: ``texts[i]`` (and ``pairs[i]``) with label name ``labels[i]``; ``rows[i]`` is its line in ``source``.

    Multi-label: ``labels[i]`` is the list of its label names. Token classification: ``words[i]`` are the sentence's
    words (``texts[i]`` joins them with spaces), ``labels[i]`` their tags, and ``rows[i]`` the line of the first word
    (``word_per_line``, CoNLL: word ``j`` is on line ``rows[i] + j``; else, token_lines: the whole sentence is on
    line ``rows[i]``).
    """

    texts: list[str]
    labels: list[Any]
    pairs: list[str] | None = None
    source: str = "<memory>"
    rows: list[int] = field(default_factory=list)
    words: list[list[str]] | None = None
    word_per_line: bool = True

    def __len__(self) -> int:
        return len(self.texts)

    def head(self, n: int | None) -> "TextData":
        if n is None or n >= len(self):
            return self
        return self.select(range(n))

    def select(self, index: Sequence[int]) -> "TextData":
        """The rows at ``index``, in that order."""
        pick = list(index)
        return TextData(
            [self.texts[i] for i in pick],
            [self.labels[i] for i in pick],
            [self.pairs[i] for i in pick] if self.pairs else None,
            self.source,
            [self.rows[i] for i in pick] if self.rows else [],
            [self.words[i] for i in pick] if self.words is not None else None,
            self.word_per_line,
        )

    def cap(self, n: int | None, setting: str, classes: bool = True, seed: int = 0) -> "TextData":
        """At most ``n`` rows: the first ``n`` (as HF's run_glue takes them), unless those lack classes the split has
        (a file sorted by label): then ``n`` rows drawn at random with a fixed seed, kept in file order, and one line
        on stderr saying so. A cap must shrink the data, never silently drop whole classes."""
        if n is None or n >= len(self):
            return self
        if not classes or not all(isinstance(label, str) for label in self.labels):
            return self.head(n)  # multi-label, tags, scores: no classes to lose, the head as asked
        classes, kept = set(self.labels), set(self.labels[:n])
        if kept == classes:
            return self.head(n)
        pick = sorted(np.random.default_rng(seed).choice(len(self), size=n, replace=False).tolist())
        drawn = self.select(pick)
        print(
            f"data: {self.source}: its first {n:,} rows hold {len(kept)} of its {len(classes)} classes (sorted by "
            f"label?); "
            f"{setting} takes {n:,} rows drawn at random instead ({len(set(drawn.labels))} classes)",
            file=sys.stderr,
        )
        return drawn


# --------------------------------------------------------------------------------------------------------------------
# Readers


# Extensions of plain text files that may hold delimited rows (format auto): their delimiter is detected.
TEXT_SUFFIXES = {".txt", ".text", ".dat", ".data", ".label", ""}


def _detect_format(path: Path, fmt: str) -> str:
    """data.format, or (auto) the extension's: tsv, csv, jsonl, or txt (a plain text file: delimited, the delimiter
    detected; read as tsv where it is a tab, else as csv)."""
    if fmt != "auto":
        return fmt
    suffix = path.suffix.lower()
    for name, suffixes in (("tsv", {".tsv", ".tab"}), ("csv", {".csv"}), ("jsonl", {".jsonl", ".ndjson", ".json"})):
        if suffix in suffixes:
            return name
    if suffix in TEXT_SUFFIXES:
        return "txt"
    raise TextDistillError(
        f"{path}: cannot tell the format from the extension {suffix!r}; set data.format to tsv, csv or jsonl"
    )


def _shown(value: str, n: int = 60) -> str:
    """``repr(value)``, of at most its first ``n`` characters (then ``...``): a value named in a one-line message."""
    return repr(value) if len(value) <= n else repr(value[:n]) + "..."


def _names(names: Sequence[str], n: int = 20) -> str:
    """A list of names as ``repr`` shows it, cut to its first ``n`` names (each cut to 40 characters)."""
    names = list(names)
    more = f", ... ({len(names)} in all)" if len(names) > n else ""
    return "[" + ", ".join(_shown(x, 40) for x in names[:n]) + more + "]"


def _printable(text: str) -> str:
    """``text`` on one line: characters that do not print (a line break in a quoted header) escaped as repr does."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


_BOMS = (
    (codecs.BOM_UTF8, "UTF-8", "utf-8"),
    (codecs.BOM_UTF16_LE, "UTF-16", "utf-16"),
    (codecs.BOM_UTF16_BE, "UTF-16", "utf-16"),
)


def _read_text(path: Path, encoding: str) -> str:
    """The file as text in ``encoding`` (data.encoding). A leading byte-order mark is dropped; a UTF-8 or UTF-16 one
    in a file read in another encoding (where it would become letters: ``ï»¿``) is an error, and so are bad bytes."""
    raw = read_bytes(path)
    try:
        name = codecs.lookup(encoding).name
    except LookupError:
        raise TextDistillError(f"data.encoding: unknown encoding {encoding!r}") from None
    utf8 = name in ("utf-8", "utf-8-sig")
    for bom, kind, fix in _BOMS:
        if raw.startswith(bom) and not utf8 and not name.startswith(("utf-16", "utf-32")):
            raise TextDistillError(
                f"{path}:1: the file starts with a {kind} byte-order mark but data.encoding is "
                f"{encoding!r}; set data.encoding: {fix}"
            )
    try:
        text = raw.decode("utf-8-sig" if utf8 else encoding)
    except UnicodeDecodeError as exc:
        line, byte = bad_byte(raw, exc)
        raise TextDistillError(
            f"{path}:{line}: text is not valid {encoding} (byte {byte}); convert the file or set data.encoding"
        ) from None
    return text[1:] if text.startswith("\ufeff") else text  # UTF-16-LE/BE, UTF-32-LE/BE: the mark decodes as U+FEFF


def _column_index(header: list[str] | None, column: str | int, path: Path, what: str) -> int:
    if isinstance(column, int):
        return column
    if header is None:
        raise TextDistillError(
            f"{path}: data.{what} is {column!r} but the file has no header (data.has_header: false); use a column index"
        )
    if column not in header:
        raise TextDistillError(f"{path}: column {column!r} ({what}) not found; the header has {_names(header)}")
    return header.index(column)


def _csv_hint(message: str) -> str:
    if "expected after" in message:
        return 'text after a closing quote? a quote inside a quoted field is written twice ("")'
    return "an unclosed quote?"


class _Rows:
    """A ``csv.reader``'s records, each with the file line it starts on; its parse errors (a field over the csv
    module's size limit, as a stray opening quote makes of the rest of a CSV file; text after a closing quote) are
    TextDistillErrors naming the file and line."""

    def __init__(self, reader: Any, path: Path) -> None:
        self.reader, self.path = reader, path

    def __iter__(self) -> "_Rows":
        return self

    def __next__(self) -> tuple[int, list[str]]:
        start = self.reader.line_num + 1
        try:
            return start, next(self.reader)
        except csv.Error as exc:
            raise TextDistillError(
                f"{self.path}:{start}: cannot split the row into columns ({exc}); {_csv_hint(str(exc))}"
            ) from None


def _fields(n: int) -> str:
    return f"{n} field" if n == 1 else f"{n} fields"


def _read_delimited(path: Path, cfg: DataConfig, layout: "Layout", text: str, limit: int | None = None) -> TextData:
    """A TSV or CSV file read as ``layout`` says: every row has as many fields as the header (no header: as the first
    row), else an error naming the line; a header may not name a column twice. ``layout.label`` None: texts only
    (``labels`` stays empty); ``limit``: stop after that many rows."""
    delimiter = layout.delimiter
    assert delimiter is not None
    # GLUE-style TSVs hold unbalanced quotes inside sentences: tsv fields are never quoted; csv fields may be, strictly
    # (text after a closing quote, or a quote never closed, is an error rather than glued onto the field)
    quoted = layout.fmt == "csv"
    quoting = csv.QUOTE_MINIMAL if quoted else csv.QUOTE_NONE
    reader = _Rows(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting, strict=quoted), path)
    sep = "tab" if delimiter == "\t" else repr(delimiter)
    header = None
    width: int | None = None  # fields in every row: the header's, or (no header) the first row's
    if layout.has_header:
        line, header = next(reader, (0, None))
        if header is None:
            raise TextDistillError(f"{path}: file is empty; expected a header and at least one row")
        header = [h.strip() for h in header]
        for i, name in enumerate(header):
            if name in header[:i]:
                raise TextDistillError(
                    f"{path}:{line}: the header names column {_shown(name, 40)} twice (columns "
                    f"{header.index(name) + 1} and {i + 1}); give each column its own name"
                )
        width = len(header)
        where = f"the header has {width} ({_cut(', '.join(_printable(h) for h in header), 60)})"
    columns = {"text_column": _column_index(header, layout.text, path, "text_column")}
    if layout.label is not None:
        columns["label_column"] = _column_index(header, layout.label, path, "label_column")
    if layout.pair is not None:
        columns["text_pair_column"] = _column_index(header, layout.pair, path, "text_pair_column")
    needed = max(columns.values()) + 1
    no_header = "data.has_header: false" if "has_header" not in layout.detected else "no header row"
    texts, labels, pairs, rows = [], [], [], []
    for line, record in reader:
        if not record or all(not c.strip() for c in record):
            continue
        if len(record) < needed:
            context = f" ({where})" if width is not None else ""
            raise TextDistillError(
                f"{path}:{line}: expected at least {needed} columns, got {len(record)}{context}; {_fewer_hint(quoted)}"
            )
        if width is None:
            width, where = len(record), f"line {line} has {len(record)} ({no_header})"
        elif len(record) != width:
            hint = _more_hint(quoted, sep) if len(record) > width else _fewer_hint(quoted)
            raise TextDistillError(f"{path}:{line}: {_fields(len(record))} where {where}; {hint}")
        text = record[columns["text_column"]].strip()
        if not text:
            raise TextDistillError(f"{path}:{line}: empty text")
        if "label_column" in columns:
            label = record[columns["label_column"]].strip()
            if cfg.task_type == "multi_label":
                labels.append([x.strip() for x in label.split(cfg.label_separator) if x.strip()])
            elif not label:
                raise TextDistillError(f"{path}:{line}: empty label")
            else:
                labels.append(label)
        texts.append(text)
        rows.append(line)
        if "text_pair_column" in columns:
            pairs.append(record[columns["text_pair_column"]].strip())
        if limit is not None and len(texts) >= limit:
            break
    return TextData(texts, labels, pairs if layout.pair is not None else None, str(path), rows)


def _cut(text: str, n: int) -> str:
    return text if len(text) <= n else text[:n] + "..."


def _more_hint(quoted: bool, sep: str) -> str:
    if quoted:
        return f"an unquoted {sep} inside a text? put that text in double quotes"
    return (
        f"a {sep} inside a text? tsv fields are never quoted: take it out of the text (or write csv, the text in "
        f"double quotes)"
    )


def _fewer_hint(quoted: bool) -> str:
    if quoted:
        return "a field missing, or a line break inside an unquoted text? put that text in double quotes"
    return "a field missing, or a line break inside a text?"


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise _DuplicateKey(key)
        obj[key] = value
    return obj


_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def json_lines(path: str | os.PathLike, text: str) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) of each non-blank line of a JSONL file's ``text``; a line that is not JSON, or an
    object that gives a key twice (JSON keeps the last silently), is an error naming the file and line. Lines end at
    CR, LF or CRLF only: U+2028 and the like are text inside a JSON string."""
    for line_no, line in enumerate(_LINE_BREAK.split(text), start=1):
        if not line.strip():
            continue
        try:
            yield line_no, json.loads(line, object_pairs_hook=_unique_keys)
        except json.JSONDecodeError as exc:
            raise TextDistillError(f"{path}:{line_no}: not valid JSON ({exc.msg})") from None
        except _DuplicateKey as exc:
            raise TextDistillError(
                f"{path}:{line_no}: the object gives the key {_shown(exc.args[0], 40)} twice; give each key once"
            ) from None
        except (ValueError, RecursionError) as exc:  # an integer of more than 4300 digits; nesting too deep
            raise TextDistillError(
                f"{path}:{line_no}: not readable JSON ({exc.__class__.__name__}: {_cut(str(exc), 80)})"
            ) from None


def _read_jsonl(path: Path, cfg: DataConfig, layout: "Layout", text: str, limit: int | None = None) -> TextData:
    """A JSONL file, an object per line, read as ``layout`` says (its keys); ``layout.label`` None: texts only."""
    keys = {"text_column": layout.text}
    if layout.label is not None:
        keys["label_column"] = layout.label
    if layout.pair is not None:
        keys["text_pair_column"] = layout.pair
    for what, key in keys.items():
        if not isinstance(key, str):
            raise TextDistillError(f"{path}: data.{what} must be a key name for JSONL, got {key!r}")
    texts, labels, pairs, rows = [], [], [], []
    for line_no, obj in json_lines(path, text):
        if not isinstance(obj, dict):
            raise TextDistillError(f"{path}:{line_no}: expected a JSON object, got {type(obj).__name__}")
        values = {}
        for what, key in keys.items():
            if key not in obj:
                raise TextDistillError(
                    f"{path}:{line_no}: missing key {key!r} ({what}); keys are {_names(sorted(obj))}"
                )
            value = obj[key]
            if what == "label_column" and cfg.task_type == "multi_label":
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    got = (
                        type(value).__name__
                        if not isinstance(value, list)
                        else "a list holding " + next(type(v).__name__ for v in value if not isinstance(v, str))
                    )
                    raise TextDistillError(
                        f"{path}:{line_no}: {key!r} must be a list of label names (multi_label), got {got}"
                    )
                values[what] = [v.strip() for v in value if v.strip()]
                continue
            scores = what == "label_column" and cfg.task_type == "regression"  # a score may be a JSON number: 4.5
            if not isinstance(value, (str, int, float) if scores else (str, int)) or isinstance(value, bool):
                kinds = "a string or number" if scores else "a string or integer"
                raise TextDistillError(f"{path}:{line_no}: {key!r} must be {kinds}, got {type(value).__name__}")
            values[what] = repr(value) if isinstance(value, float) else str(value).strip()
        if not values["text_column"]:
            raise TextDistillError(f"{path}:{line_no}: empty text")
        if "label_column" in values:
            if not values["label_column"] and cfg.task_type != "multi_label":
                raise TextDistillError(f"{path}:{line_no}: empty label")
            labels.append(values["label_column"])
        texts.append(values["text_column"])
        rows.append(line_no)
        if "text_pair_column" in values:
            pairs.append(values["text_pair_column"])
        if limit is not None and len(texts) >= limit:
            break
    return TextData(texts, labels, pairs if layout.pair is not None else None, str(path), rows)


# --------------------------------------------------------------------------------------------------------------------
# Layout: the delimiter, the header row and the columns of a data file, detected where the config leaves them unset

DELIMITER_CHOICES = (",", ";", "\t", "|")
DEFAULT_DELIMITERS = {"tsv": "\t", "csv": ","}
# Common column names (compared case-folded, spaces and hyphens as "_"). "text" and "label" always win.
TEXT_NAMES = (
    "text",
    "sentence",
    "sentence1",
    "sentence_a",
    "text_a",
    "question",
    "question1",
    "review",
    "content",
    "utterance",
    "document",
    "premise",
    "comment",
    "tweet",
    "message",
    "body",
    "query",
)
PAIR_NAMES = ("sentence2", "sentence_b", "text_b", "question2", "hypothesis", "text_pair")
LABEL_NAMES = (
    "label",
    "labels",
    "gold_label",
    "category",
    "class",
    "intent",
    "sentiment",
    "polarity",
    "emotion",
    "topic",
    "target",
    "score",
    "rating",
    "stars",
)
NAMED_PAIRS = (("question", "sentence"),)  # two text names that make a pair (GLUE QNLI), besides the numbered twins
OTHER_NAMES = ("id", "idx", "index", "qid", "guid", "uid", "source", "genre", "title", "lang", "language", "split")
_KNOWN_NAMES = frozenset(TEXT_NAMES + PAIR_NAMES + LABEL_NAMES + OTHER_NAMES)
SNIFF_ROWS = 50  # the rows a detected delimiter must split evenly
SAMPLE_ROWS = 1000  # the rows whose values tell the header row and the columns


@dataclass(frozen=True)
class Layout:
    """How a data file is read: ``fmt`` tsv, csv or jsonl, its ``delimiter``, whether line 1 is a header, and the text,
    label (None: texts only) and pair columns (names, or 0-based indices; JSONL: keys). ``detected``: the settings
    (``delimiter``, ``has_header``, ``text_column``, ``label_column``, ``text_pair_column``) that detection chose;
    ``kind``: what the extension says (tsv, csv, jsonl, txt); ``width``: the fields of line 1 (delimited files)."""

    fmt: str
    delimiter: str | None
    has_header: bool
    text: str | int
    label: str | int | None
    pair: str | int | None = None
    detected: frozenset[str] = frozenset()
    kind: str = ""
    width: int | None = None
    source: str = ""

    def departs(self) -> bool:
        """Whether a detected setting differs from the old defaults (tab for .tsv, comma for .csv, a header, "text",
        "label", no pair): a file laid out so was read before without any setting, and still is, silently."""
        old = {
            "delimiter": DEFAULT_DELIMITERS.get(self.kind),
            "has_header": True,
            "text_column": "text",
            "label_column": "label",
        }
        mine = {
            "delimiter": self.delimiter,
            "has_header": self.has_header,
            "text_column": self.text,
            "label_column": self.label,
        }
        return any(mine.get(k) != old.get(k) for k in self.detected if k in old) or "text_pair_column" in self.detected

    def describe(self) -> str:
        """e.g. ``delimiter ',', header row, text column 'review', label column 'sentiment'``."""

        def col(c: str | int) -> str:
            return _shown(c, 40) if isinstance(c, str) else str(c)

        what = "key" if self.fmt == "jsonl" else "column"
        parts = []
        if self.fmt != "jsonl":
            parts.append(f"delimiter {_sep(self.delimiter or ',')}")
            parts.append("header row" if self.has_header else "no header row (columns by 0-based index)")
        parts.append(f"text {what} {col(self.text)}")
        if self.pair is not None:
            parts.append(f"pair {what} {col(self.pair)}")
        if self.label is not None:
            parts.append(f"label {what} {col(self.label)}")
        return ", ".join(parts)


def _fold(name: str) -> str:
    return re.sub(r"[\s\-]+", "_", name.strip().casefold())


def _sep(delimiter: str) -> str:
    return "tab" if delimiter == "\t" else repr(delimiter)


def _is_number(value: str) -> bool:
    return _NUMBER.fullmatch(value.strip()) is not None


def _twin(name: str) -> str | None:
    """The name a second text column of a pair has beside ``name``: its one ``1`` as ``2`` (``sentence1`` ->
    ``sentence2``, ``#1 String`` -> ``#2 String``), or a last ``a`` after ``_``, ``-`` or a space as ``b``
    (``text_a`` -> ``text_b``); None for other names."""
    ones = list(re.finditer(r"(?<!\d)1(?!\d)", name))
    if len(ones) == 1:
        return name[: ones[0].start()] + "2" + name[ones[0].end() :]
    m = re.fullmatch(r"(.*[_\- ])([aA])", name)
    return m[1] + ("b" if m[2] == "a" else "B") if m else None


def _split_rows(text: str, delimiter: str, quoted: bool, limit: int) -> tuple[list[list[str]], bool]:
    """The first ``limit`` non-blank records as the reader splits them, and whether the csv module failed on the
    records after them (a quote never closed, text after a closing quote)."""
    quoting = csv.QUOTE_MINIMAL if quoted else csv.QUOTE_NONE
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting, strict=quoted)
    rows: list[list[str]] = []
    try:
        for record in reader:
            if record and any(c.strip() for c in record):
                rows.append(record)
                if len(rows) >= limit:
                    break
    except csv.Error:
        return rows, True
    return rows, False


def _quoted(kind: str, delimiter: str) -> bool:
    """Whether fields may be quoted: csv files; plain text files unless tab-separated (read as tsv)."""
    return kind == "csv" or (kind == "txt" and delimiter != "\t")


def _all(items: list[Any]) -> str:
    return "both" if len(items) == 2 else "all"


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _sniff_delimiter(path: Path, text: str, kind: str, one_column: bool = False) -> str | None:
    """The delimiter of a file that does not give it (format auto): the one of ``,`` ``;`` tab ``|`` that splits each
    of the first SNIFF_ROWS rows into the same number, two or more, of fields (quotes respected in csv files); two
    that do are an error. Where none does, the extension's (tab for .tsv, comma for .csv) if it splits line 1, as such
    files were always read (the row that disagrees is then an error naming its line); else an error naming the file.
    ``one_column``: a file that none splits evenly is one column of text (None), not an error."""
    default = DEFAULT_DELIMITERS.get(kind)
    if not text.strip():  # an empty file: the reader says so
        return default or "\t"
    even: dict[str, int] = {}
    uneven: dict[str, tuple[int, int]] = {}
    for d in DELIMITER_CHOICES:
        rows, failed = _split_rows(text, d, _quoted(kind, d), SNIFF_ROWS)
        if not rows or len(rows[0]) < 2:
            continue
        widths = {len(r) for r in rows}
        if len(widths) == 1 and not failed:
            even[d] = len(rows[0])
        else:
            uneven[d] = (min(widths), max(widths))
    if len(even) == 1:
        return next(iter(even))
    if len(even) > 1:
        both = "both" if len(even) == 2 else "all"
        counts = _and([f"{_sep(d)} {n}" for d, n in even.items()])
        raise TextDistillError(
            f"{path}: cannot tell the delimiter ({_and([_sep(d) for d in even])} {both} split "
            f"every row "
            f"evenly: {counts} fields); set data.delimiter"
        )
    if default in uneven:
        return default
    if one_column:
        return None
    if not uneven:
        raise TextDistillError(
            f"{path}: one column only: none of ',', ';', tab, '|' splits line 1 into fields; a "
            f"data file "
            "needs a text column and a label column (set data.delimiter if another character "
            "separates "
            "them)"
        )
    d, (low, high) = next(iter(uneven.items()))
    how = (
        (f"{_sep(d)} gives {low} to {high} fields per row")
        if low != high
        else f"{_sep(d)} stops at a quote never closed"
    )
    raise TextDistillError(
        f"{path}: cannot tell the delimiter: none of ',', ';', tab, '|' splits the first "
        f"{SNIFF_ROWS} rows "
        f"evenly ({how}); set data.delimiter"
    )


def _repeats(values: list[str], task_type: str) -> bool:
    """Whether a column looks like labels: short values (none empty, but for multi_label), of which some repeat: at
    least two distinct, at most half as many as rows (or two)."""
    n = len(values)
    if n < 2 or max(len(v) for v in values) > 60 or (task_type != "multi_label" and not all(values)):
        return False
    distinct = len(set(values))
    return 2 <= distinct < n and distinct <= max(2, n // 2)


def _may_repeat(values: list[str], task_type: str) -> bool:
    """Whether a column might hold labels too (looser than :func:`_repeats`): short values (none empty, but for
    multi_label) of which at most four in five are distinct, or all alike (a file of one class); in fewer than ten
    rows, numbers too (classes that have not yet recurred)."""
    n = len(values)
    if n < 2 or max(len(v) for v in values) > 60 or (task_type != "multi_label" and not all(values)):
        return False
    return len(set(values)) <= 0.8 * n or (n < 10 and _numbers(values))


def _numbers(values: list[str]) -> bool:
    """Whether every non-empty value (and there is one) is a number."""
    filled = [v for v in values if v]
    return bool(filled) and all(_is_number(v) for v in filled)


def _scores(values: list[str]) -> bool:
    """Whether a column looks like regression targets: numbers, not all alike, and not whole numbers that are all
    distinct (an id or row index)."""
    if not values or not all(v and _is_number(v) for v in values) or len(set(values)) < 2:
        return False
    whole = all(_whole(Decimal(v)) for v in values)
    return not (whole and len(set(values)) == len(values))


def _mean_length(values: list[str]) -> float:
    return sum(len(v) for v in values) / len(values) if values else 0.0


def _header_row(path: Path, rows: list[list[str]], label: int | None, task_type: str, need_label: bool) -> bool:
    """Whether line 1 names the columns, by these rules in turn: a value of line 1 that recurs below it in its column,
    or a number in line 1, make it data; a common column name (text, label, sentence, id...) makes it a header; so
    do unique short names over a column of numbers, or over a column of labels (values that repeat, each on two of
    the 20 or more rows below or more, none of them line 1's) when line 1's value over the longest texts is at most
    half their mean length.
    Otherwise it is data for texts only (``need_label`` false), and an error naming the setting."""
    first = [f.strip() for f in rows[0]]
    width = len(first)
    body = [[c.strip() for c in r] for r in rows[1:] if len(r) == width]
    cols = [[r[i] for r in body] for i in range(width)]
    if any(v and v in set(cols[i]) for i, v in enumerate(first)):
        return False
    if any(v and _is_number(v) for v in first):
        return False
    if any(_fold(v) in _KNOWN_NAMES for v in first):
        return True
    named = [v for v in first if v]
    if len(set(named)) < len(named) or any(len(v) > 40 for v in first):
        return False
    if any(_numbers(c) for c in cols):
        return True
    labels = [
        i for i in ([label] if label is not None and label < width else range(width)) if _repeats(cols[i], task_type)
    ]
    texts = [i for i in range(width) if i not in labels]
    longest = max(texts, key=lambda i: _mean_length(cols[i]), default=None)
    short = longest is not None and len(first[longest]) <= 0.5 * _mean_length(cols[longest])
    if short and len(body) >= 20 and any(min(Counter(cols[i]).values()) >= 2 for i in labels):
        return True
    if not need_label:
        return False
    if label is None and not labels:
        _no_label_column(path, task_type)
    raise TextDistillError(
        f"{path}: cannot tell whether line 1 ({_cut(_printable(', '.join(first)), 60)}) is a "
        f"header row; "
        "set data.has_header"
    )


def _no_label_column(path: Path, task_type: str) -> None:
    if task_type == "regression":
        raise TextDistillError(
            f"{path}: no column of scores (numbers, not an index) to be the label column; set data.label_column"
        )
    raise TextDistillError(
        f"{path}: no column whose values repeat (a label column holds a few short values, each on "
        f"many "
        "rows); set data.label_column"
    )


def _choose_columns(
    path: Path,
    header: list[str] | None,
    cols: list[list[str]] | None,
    given: tuple[Any, Any, Any],
    task_type: str,
    need_label: bool,
) -> tuple[Any, Any, Any, set[str]]:
    """The text, label and pair columns (names with a header, else indices) where ``given`` (text, label, pair) leaves
    them None, and which of them were detected. Names first ("text" and "label" always win; else one common name;
    two are an error), then (``cols``: each column's values; None: names only) the values: the label column repeats
    (regression: holds scores), the text column is the longest text (another about as long is an error, but for the
    numbered twins of a pair). A pair only by name, only when the text column was detected under another name than
    "text". A column still unknown is None."""
    text, label, pair = given
    width = len(cols) if cols is not None else len(header or [])
    folds = [_fold(h) for h in header] if header is not None else []
    pair_named = {i for i, f in enumerate(folds) if f in PAIR_NAMES}

    def index(c: Any) -> int | None:
        if c is None:
            return None
        if isinstance(c, int):
            return c if c < width else None
        return header.index(c) if header is not None and c in header else None

    def show(indices: list[int]) -> str:
        return (
            ", ".join(_shown(header[i], 40) for i in indices)
            if header is not None
            else "columns " + _and([str(i) for i in indices])
        )

    def name(i: int | None, fallback: Any) -> Any:
        return fallback if i is None else header[i] if header is not None else i

    ti, li, pi = index(text), index(label), index(pair)
    if header is not None:
        if text is None:
            hits = [i for i, f in enumerate(folds) if f in TEXT_NAMES and i not in (li, pi)]
            exact = [i for i in hits if header[i] == "text"]
            named = [
                (a, b)
                for a in hits
                for b in hits
                if (folds[a], folds[b]) in NAMED_PAIRS or _twin(header[a]) == header[b]
            ]
            if exact or len(hits) == 1:
                ti = (exact or hits)[0]
            elif len(hits) == 2 and named and pair is None:
                ti, pi = named[0]
            elif hits:
                raise TextDistillError(
                    f"{path}: cannot tell the text column from {show(hits)} ({_all(hits)} text "
                    f"names); "
                    "set data.text_column"
                )
        if label is None:
            hits = [i for i, f in enumerate(folds) if f in LABEL_NAMES and i not in (ti, pi)]
            exact = [i for i in hits if header[i] == "label"]
            if exact or len(hits) == 1:
                li = (exact or hits)[0]
            elif hits and need_label:
                raise TextDistillError(
                    f"{path}: cannot tell the label column from {show(hits)} ({_all(hits)} label "
                    f"names); "
                    "set data.label_column"
                )
    skip: set[int] = set()  # texts only: columns that look like labels are no texts
    if cols is not None and label is None and li is None:
        regression = task_type == "regression"
        others = [i for i in range(width) if i not in (ti, pi) and i not in pair_named]
        found = [i for i in others if (_scores(cols[i]) if regression else _repeats(cols[i], task_type))]
        if len(found) == 1 and not regression:  # another column of short values that recur may be the labels as well
            found += [i for i in others if i != found[0] and _may_repeat(cols[i], task_type)]
        if not need_label:
            skip = set(found)
        elif not found:
            _no_label_column(path, task_type)
        elif len(found) > 1:
            found.sort()
            counts = _and([str(len(set(cols[i]))) for i in found])
            kinds = "hold scores" if regression else f"could be labels: {counts} distinct values"
            raise TextDistillError(
                f"{path}: cannot tell the label column from {show(found)} ({_all(found)} {kinds}); "
                "set data.label_column"
            )
        else:
            li = found[0]
    if cols is not None and label is None and li is not None and need_label and task_type == "classification":
        values = set(cols[li])
        if len(values) > 20 and _numbers(list(values)) and not all(_whole(Decimal(v)) for v in values):
            example = next(v for v in cols[li] if not _whole(Decimal(v)))
            raise TextDistillError(
                f"{path}: the label column {show([li])} holds scores ({len(values)} distinct "
                f"numbers, e.g. "
                f"{_shown(example, 20)}), not classes; set data.task_type: regression (or "
                "data.label_column)"
            )
    if cols is not None and text is None and ti is None:
        found = [i for i in range(width) if i not in (li, pi) and i not in skip | pair_named and not _numbers(cols[i])]
        found.sort(key=lambda i: -_mean_length(cols[i]))
        if not found:
            raise TextDistillError(
                f"{path}: no column of texts (the others hold numbers or labels); set data.text_column"
            )
        ti = found[0]
        if len(found) > 1 and _mean_length(cols[found[1]]) >= 0.5 * _mean_length(cols[ti]):
            a, b = found[0], found[1]
            if header is not None and pair is None and pi is None and _twin(header[a]) == header[b]:
                ti, pi = a, b
            elif header is not None and pair is None and pi is None and _twin(header[b]) == header[a]:
                ti, pi = b, a
            else:
                a, b = sorted((a, b))
                lengths = _and([f"{_mean_length(cols[i]):.0f}" for i in (a, b)])
                raise TextDistillError(
                    f"{path}: cannot tell the text column from {show([a, b])} (both long texts: "
                    f"{lengths} "
                    "characters on average); set data.text_column"
                )
        others = [i for i in found if i not in (ti, pi)]
        if not need_label and others:  # texts only: a column of text that no rule explains may be the texts' other part
            texts = sorted([ti] + others)
            raise TextDistillError(
                f"{path}: cannot tell the text column from {show(texts)} ({_all(texts)} hold "
                f"text); set "
                "data.text_column (or data.delimiter, for a file of one text per line)"
            )
    if text is None and pair is None and pi is None and header is not None and ti is not None and header[ti] != "text":
        hits = [i for i in sorted(pair_named) if i not in (ti, li)]
        twin = _twin(header[ti])
        if twin is not None and twin in header and header.index(twin) not in hits + [ti, li]:
            hits.append(header.index(twin))
        if len(hits) > 1:
            raise TextDistillError(
                f"{path}: cannot tell the pair column from {show(hits)} ({_all(hits)} second-text "
                f"names); "
                "set data.text_pair_column"
            )
        pi = hits[0] if hits else None
    detected = {k for k, v in (("text_column", text), ("label_column", label if need_label else 0)) if v is None}
    if pair is None and pi is not None:
        detected.add("text_pair_column")
    return name(ti, text), name(li, label) if need_label else None, name(pi, pair), detected


def _jsonl_keys(text: str, path: Path) -> list[str]:
    """The keys of a JSONL file's first object ([] where it has none, or is not JSON: the reader says so)."""
    try:
        for _, obj in json_lines(path, text):
            return [str(k) for k in obj] if isinstance(obj, dict) else []
    except TextDistillError:
        pass
    return []


def _jsonl_layout(path: Path, text: str, given: tuple[Any, Any, Any], task_type: str, need_label: bool) -> Layout:
    """A JSONL file's keys: given, else by name from its first object ("text" and "label" where none is named, as
    always: a missing key is then the reader's error naming the line)."""
    keys = _jsonl_keys(text, path)
    t, lab, pair, detected = _choose_columns(path, keys, None, given, task_type, need_label)
    t = "text" if t is None else t
    lab = ("label" if lab is None else lab) if need_label else None
    return Layout("jsonl", None, True, t, lab, pair, frozenset(detected), "jsonl", None, str(path))


def _given(cfg: DataConfig, text: Any = None, pair: Any = None) -> tuple[Any, Any, Any]:
    return (cfg.text_column if text is None else text, cfg.label_column, cfg.text_pair_column if pair is None else pair)


def _detect_layout(
    path: Path, text: str, cfg: DataConfig, kind: str, given: tuple[Any, Any, Any], need_label: bool = True
) -> Layout:
    """A file's layout: the config's settings, and what it leaves unset detected from the file itself."""
    if kind == "jsonl":
        return _jsonl_layout(path, text, given, cfg.task_type, need_label)
    detected: set[str] = set()
    if cfg.delimiter is not None:
        delimiter = cfg.delimiter
    elif cfg.format != "auto":
        delimiter = DEFAULT_DELIMITERS[kind]
    else:
        found = _sniff_delimiter(path, text, kind, one_column=not need_label)
        delimiter = found if found is not None else DEFAULT_DELIMITERS.get(kind, "\t")
        detected.add("delimiter")
    fmt = kind if kind != "txt" else "tsv" if delimiter == "\t" else "csv"
    rows, _ = _split_rows(text, delimiter, fmt == "csv", SAMPLE_ROWS)
    t, lab, pair = given
    if not need_label:
        lab = None
    if not rows:  # empty: the reader says so
        has_header = cfg.has_header if cfg.has_header is not None else True
        return Layout(
            fmt,
            delimiter,
            has_header,
            "text" if t is None else t,
            ("label" if lab is None else lab) if need_label else None,
            pair,
            frozenset(detected),
            kind,
            0,
            str(path),
        )
    width = len(rows[0])
    if width < 2 and need_label and (t is None or lab is None):
        raise TextDistillError(
            f"{path}: one column only: {_sep(delimiter)} splits no row into fields; a data file "
            f"needs a text "
            "column and a label column (set data.delimiter if another character separates them)"
        )
    if cfg.has_header is not None:
        has_header = cfg.has_header
    elif any(isinstance(c, str) for c in (t, lab, pair)):
        has_header = True  # a column given by name: line 1 names them
    else:
        has_header = _header_row(path, rows, lab if isinstance(lab, int) else None, cfg.task_type, need_label)
        detected.add("has_header")
    header = [h.strip() for h in rows[0]] if has_header else None
    body = [[c.strip() for c in r] for r in (rows[1:] if has_header else rows) if len(r) == width]
    cols = [[r[i] for r in body] for i in range(width)]
    t, lab, pair, chosen = _choose_columns(path, header, cols, (t, lab, pair), cfg.task_type, need_label)
    return Layout(fmt, delimiter, has_header, t, lab, pair, frozenset(detected | chosen), kind, width, str(path))


def _layout(
    path: Path, text: str, cfg: DataConfig, kind: str, given: tuple[Any, Any, Any], need_label: bool = True
) -> Layout:
    """:func:`_detect_layout`; where it fails on a file whose rows the delimiter splits unevenly, that row is the
    error."""
    try:
        return _detect_layout(path, text, cfg, kind, given, need_label)
    except TextDistillError as exc:
        if kind == "jsonl" or "cannot tell the delimiter" in str(exc) or "one column only" in str(exc):
            raise
        delimiter = cfg.delimiter or DEFAULT_DELIMITERS.get(kind)
        if delimiter is None or cfg.format == "auto":
            try:
                delimiter = _sniff_delimiter(path, text, kind) or delimiter
            except TextDistillError:
                raise exc from None
        assert delimiter is not None
        fmt = kind if kind != "txt" else "tsv" if delimiter == "\t" else "csv"
        raise (_uneven_first(path, text, delimiter, fmt) or exc) from None


def _uneven_first(path: Path, text: str, delimiter: str, fmt: str) -> TextDistillError | None:
    """Where a detection failed on a file whose rows are split unevenly: the first row with another number of fields
    than line 1, as the error to give instead (the cause, naming its line); None where the rows are even."""
    quoted = fmt == "csv"
    quoting = csv.QUOTE_MINIMAL if quoted else csv.QUOTE_NONE
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting, strict=quoted)
    width = None
    try:
        for n, record in enumerate(reader):
            if n >= SAMPLE_ROWS:
                break
            if not record or all(not c.strip() for c in record):
                continue
            if width is None:
                width = len(record)
            elif len(record) != width:
                hint = _more_hint(quoted, _sep(delimiter)) if len(record) > width else _fewer_hint(quoted)
                return TextDistillError(
                    f"{path}:{reader.line_num}: {_fields(len(record))} where line 1 has {width}; {hint}"
                )
    except csv.Error:
        return None
    return None


def _follow_layout(path: Path, text: str, cfg: DataConfig, kind: str, train: Layout) -> Layout:
    """Another split (validation, test) read as the training file was: its columns, header row and (if the config
    gives none) a delimiter detected on its own, or the training file's; a file that is laid out otherwise than what
    was detected on the training file is an error naming it."""
    if kind == "jsonl":
        return Layout(
            "jsonl", None, True, train.text, train.label, train.pair, train.detected, "jsonl", None, str(path)
        )
    if cfg.delimiter is not None:
        delimiter = cfg.delimiter
    elif cfg.format != "auto":
        delimiter = DEFAULT_DELIMITERS[kind]
    else:
        try:
            delimiter = _sniff_delimiter(path, text, kind) or "\t"
        except TextDistillError:  # unclear here: read as the training file is; the reader tells what does not fit
            delimiter = train.delimiter or DEFAULT_DELIMITERS.get(kind, "\t")
    fmt = kind if kind != "txt" else "tsv" if delimiter == "\t" else "csv"
    has_header = train.has_header
    layout = Layout(
        fmt, delimiter, has_header, train.text, train.label, train.pair, train.detected, kind, None, str(path)
    )
    rows, _ = _split_rows(text, delimiter, fmt == "csv", SAMPLE_ROWS)
    if not rows:
        return layout
    first = [f.strip() for f in rows[0]]
    other = f"{path}: laid out differently from {train.source}"
    if has_header:
        detected = {"text_column": train.text, "label_column": train.label, "text_pair_column": train.pair}
        for what, column in detected.items():
            named = isinstance(column, str) and (what in train.detected or "has_header" in train.detected)
            if named and column not in first:
                raise TextDistillError(
                    f"{other}: no column {_shown(str(column), 40)} (the {what.replace('_', ' ')} "
                    f"detected "
                    f"there); its line 1 has {_names(first, 8)}; give both files the same header "
                    f"(or set "
                    f"data.{what})"
                )
    elif "has_header" in train.detected:
        label = train.label if isinstance(train.label, int) else None
        try:
            header = _header_row(path, rows, label, cfg.task_type, False)
        except TextDistillError:
            header = False
        if header:
            shown = _cut(_printable(", ".join(first)), 60)
            raise TextDistillError(
                f"{other}: line 1 looks like a header row ({shown}) but the training file has "
                f"none; give "
                "both files a header row or neither (or set data.has_header)"
            )
        if train.width is not None and len(first) != train.width:
            raise TextDistillError(
                f"{other}: {_fields(len(first))} in line 1 here, {train.width} there (no header "
                f"row: columns "
                "are taken by position); write both files alike (or set data.text_column and "
                "data.label_column)"
            )
    return layout


_LAYOUTS: dict[tuple[Any, ...], Layout] = {}


def _train_layout(cfg: DataConfig) -> Layout | None:
    """The layout detected on ``data.train_file`` (None for tagged files), kept per file state and settings."""
    assert cfg.train_file is not None
    p = Path(cfg.train_file)
    try:
        stat = p.stat()
        key: tuple[Any, ...] | None = (
            str(p.resolve()),
            stat.st_size,
            stat.st_mtime_ns,
            cfg.model_dump_json(
                include={
                    "format",
                    "encoding",
                    "delimiter",
                    "has_header",
                    "text_column",
                    "label_column",
                    "text_pair_column",
                    "task_type",
                }
            ),
        )
    except OSError:
        key = None
    if key is not None and key in _LAYOUTS:
        return _LAYOUTS[key]

    kind = _detect_format(p, cfg.format)
    if kind in TAGGED_FORMATS:
        return None
    layout = _layout(p, _read_text(p, cfg.encoding), cfg, kind, _given(cfg))
    if key is not None:
        if len(_LAYOUTS) > 64:
            _LAYOUTS.clear()
        _LAYOUTS[key] = layout
    return layout


def data_layout(cfg: DataConfig) -> DataConfig:
    """``cfg`` with the layout detected on its training file written in: data.has_header and the text, label and pair
    columns, and data.delimiter where the extension's default is not it (e.g. to write a resolved config). A config
    of an HF dataset or of tagged files comes back as it is."""
    if cfg.hf_dataset is not None or cfg.train_file is None:
        return cfg
    layout = _train_layout(cfg)
    if layout is None:
        return cfg
    update: dict[str, Any] = {"text_column": layout.text, "label_column": layout.label, "text_pair_column": layout.pair}
    if layout.fmt != "jsonl":
        update["has_header"] = layout.has_header
        if layout.delimiter != DEFAULT_DELIMITERS.get(layout.kind):
            update["delimiter"] = layout.delimiter
    return cfg.model_copy(update=update)


def _announce(read: list[tuple[TextData, Layout | None]], task_type: str) -> None:
    """One line per file on stderr saying how it was read, where detection chose a layout that a config without
    these settings did not read before (not the header, "text", "label" and extension's delimiter)."""
    if not any(layout is not None and layout.departs() for _, layout in read):
        return
    train, first = read[0]
    assert first is not None
    shown: set[str] = set()
    for data, layout in read:
        if layout is None or data.source in shown:  # a file given as two splits: one line
            continue
        shown.add(data.source)
        if data is train:
            if task_type == "regression":
                count = " (scores)"
            elif task_type == "multi_label":
                count = f" ({len({n for names in data.labels for n in names})} labels)"
            else:
                count = f" ({len(set(data.labels))} classes)"
            settings = " / ".join(
                f"data.{k}"
                for k in ("delimiter", "has_header", "text_column", "text_pair_column", "label_column")
                if k in layout.detected
            )
            note = f" (detected; set {settings} to choose)" if settings else ""
            print(f"data: {data.source}: {layout.describe()}{count}{note}", file=sys.stderr)
        else:
            print(f"data: {data.source}: {layout.describe()} (as {first.source})", file=sys.stderr)


def _read_tagged(path: Path, fmt: str, cfg: DataConfig) -> TextData:
    """A file with a tag per token (conll or token_lines; :func:`textdistill.ner.read_tagged`), tags in IOB2."""

    tagged = read_tagged(path, fmt, cfg.tag_scheme, cfg.encoding)
    sents = tagged.sentences
    return TextData(
        [" ".join(s.tokens) for s in sents],
        [s.tags for s in sents],
        None,
        str(path),
        [s.line for s in sents],
        [s.tokens for s in sents],
        tagged.word_per_line,
    )


def _read_split(
    path: str | os.PathLike, cfg: DataConfig, train: Layout | None = None
) -> tuple[TextData, Layout | None]:
    """One split as the file spells it (before data.label_map and the label spelling check), and the layout it was
    read with (None: a tagged file). ``train``: the training file's layout, which this file must follow; None: the
    layout is detected on this file."""

    p = Path(path)
    kind = _detect_format(p, cfg.format)
    if kind in TAGGED_FORMATS:
        return _read_tagged(p, kind, cfg), None
    if kind == "jsonl" and cfg.delimiter is not None:
        raise TextDistillError(f"{p}: a JSONL file has no delimiter; data.delimiter is for tsv and csv files")
    text = _read_text(p, cfg.encoding)
    layout = _layout(p, text, cfg, kind, _given(cfg)) if train is None else _follow_layout(p, text, cfg, kind, train)
    data = _read_jsonl(p, cfg, layout, text) if layout.fmt == "jsonl" else _read_delimited(p, cfg, layout, text)
    if len(data) == 0:
        raise TextDistillError(f"{p}: no data rows")
    return data, layout


def read_file(path: str | os.PathLike, cfg: DataConfig) -> TextData:
    """Read one labelled split from a TSV, CSV, JSONL, CoNLL or token_lines file; every bad row is an error naming
    file and line. What the config leaves unset of the layout (delimiter, header row, columns) is detected on this
    file. Labels go through ``data.label_map``; spellings of one label (pos/Pos, 1/1.0) are an error."""
    data, _ = _read_split(path, cfg)
    normalise_labels([data], cfg)
    return data


def read_texts(
    path: str | os.PathLike,
    cfg: DataConfig,
    text_column: str | int | None = None,
    pair_column: str | int | None = None,
    limit: int | None = None,
) -> tuple[list[str], list[str] | None, list[int]]:
    """The texts (and their pairs) of an unlabeled .tsv/.csv/.jsonl data file, with the file line of each: read with
    the data config's encoding, delimiter and header settings, what it leaves unset detected as for the labelled
    files, and as strictly (every row as many fields as the header, no empty text). A label column, if any, is
    ignored; a file of one column is its texts (a first line named as a text column, e.g. ``text``, is its header).

    ``text_column`` / ``pair_column``: default data.text_column / data.text_pair_column; where those are unset too,
    detected (a pair only by its name: sentence2, text_b, ...; compare ``pairs is None`` with the task's). ``limit``:
    at most that many texts."""

    p = Path(path)
    kind = _detect_format(p, cfg.format)
    if kind in TAGGED_FORMATS:
        raise TextDistillError(f"{p}: unlabeled texts are read from tsv, csv or jsonl files, not {kind} (data.format)")
    if kind == "jsonl" and cfg.delimiter is not None:
        raise TextDistillError(f"{p}: a JSONL file has no delimiter; data.delimiter is for tsv and csv files")
    text = _read_text(p, cfg.encoding)
    layout = _layout(p, text, cfg, kind, _given(cfg, text_column, pair_column), need_label=False)
    data = (
        _read_jsonl(p, cfg, layout, text, limit)
        if layout.fmt == "jsonl"
        else _read_delimited(p, cfg, layout, text, limit)
    )
    if not data.texts:
        raise TextDistillError(f"{p}: no texts (no data rows)")
    return data.texts, data.pairs, data.rows


# --------------------------------------------------------------------------------------------------------------------
# Label spellings

_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def _core(name: str) -> str:
    """A label name without whitespace or invisible characters (a stray BOM, a zero-width space) at its ends."""
    core = name.strip()
    while core and unicodedata.category(core[0]) == "Cf":
        core = core[1:].strip()
    while core and unicodedata.category(core[-1]) == "Cf":
        core = core[:-1].strip()
    return core


def _number(core: str) -> Decimal | None:
    if not _NUMBER.fullmatch(core):
        return None
    try:
        return Decimal(core)
    except (InvalidOperation, ValueError):
        return None


def _whole(value: Decimal) -> bool:
    _, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)  # _NUMBER admits finite numbers only
    return exponent >= 0 or not any(digits[max(0, len(digits) + exponent) :])


def _spelling_keys(names: set[str]) -> dict[str, tuple[str, Any]]:
    """What two spellings of one label share: the name without whitespace or invisible characters at its ends,
    case-folded; or a whole number's value (class ids 1, 1.0, 01 and 1e0 are one). Where a label is a fraction
    (4.4: a score, and data.task_type likely regression), numbers are compared as written."""
    cores = {n: _core(n) for n in names}
    numbers = {n: _number(c) for n, c in cores.items()}
    scores = any(v is not None and not _whole(v) for v in numbers.values())
    return {
        n: ("number", v) if v is not None and not scores else ("text", cores[n].casefold()) for n, v in numbers.items()
    }


def _first_rows(data: TextData) -> dict[str, int]:
    """Each label name of a split (each name of a multi-label set) -> the index of its first example."""
    first: dict[str, int] = {}
    for i, label in enumerate(data.labels):
        for name in label if isinstance(label, list) else (label,):
            first.setdefault(name, i)
    return first


def normalise_labels(splits: Sequence[TextData], cfg: DataConfig, all_splits: bool = False) -> None:
    """Classification and multi-label splits: apply ``data.label_map`` to their labels (in place), then refuse two
    spellings of one label (case, invisible characters at the ends, numeric spelling) anywhere across ``splits``,
    naming both and where each first occurs. ``all_splits``: these are all the task's splits, so a label_map key that
    is none of their labels (a typo) is an error too."""
    if cfg.task_type not in ("classification", "multi_label"):
        return
    mapping = cfg.label_map or {}
    if mapping:
        used: set[str] = set()
        for data in splits:
            hits = mapping.keys() & _first_rows(data).keys()
            if hits:
                used |= hits
                data.labels = [
                    [mapping.get(n, n) for n in lab] if isinstance(lab, list) else mapping.get(lab, lab)
                    for lab in data.labels
                ]
        unused = [k for k in mapping if k not in used]
        if all_splits and unused:
            labels = sorted({n for d in splits for n in _first_rows(d)}, key=_sort_key)
            raise TextDistillError(
                f"data.label_map: {_shown(unused[0], 40)} is not a label of "
                f"{', '.join(d.source for d in splits)}; "
                f"their labels are {_names(labels)}"
            )
    firsts = [_first_rows(data) for data in splits]
    keys = _spelling_keys({name for first in firsts for name in first})
    seen: dict[tuple[str, Any], tuple[str, TextData, int]] = {}
    for data, first in zip(splits, firsts):
        for name, i in first.items():
            other, other_data, j = seen.setdefault(keys[name], (name, data, i))
            if other == name:
                continue
            row = data.rows[i] if data.rows else i
            other_row = other_data.rows[j] if other_data.rows else j
            where = f"line {other_row}" if other_data is data else f"{other_data.source}:{other_row}"
            how = "case/spacing" if _core(name).casefold() == _core(other).casefold() else "numeric spelling"
            mapped = " (as data.label_map spells it)" if name in mapping.values() else ""
            where += ", as data.label_map spells it" if other in mapping.values() else ""
            raise TextDistillError(
                f"{data.source}:{row}: label {_shown(name)}{mapped} differs only in {how} from "
                f"{_shown(other)} "
                f"({where}); make them one spelling or map them with data.label_map"
            )


def from_hf_dataset(ds: Any, cfg: DataConfig, source: str) -> TextData:
    """Convert a ``datasets.Dataset`` split; ``ClassLabel`` ids become their names. Token classification: the text
    column holds word lists and the label column tag sequences (``Sequence(ClassLabel)``, as HF's conll2003), read
    in ``data.tag_scheme`` and kept in IOB2; multi-label: the label column holds lists of labels. Labels go through
    ``data.label_map`` and the spelling check, as a file's do."""
    data = _from_hf(ds, cfg, source)
    normalise_labels([data], cfg)
    return data


def _from_hf(ds: Any, cfg: DataConfig, source: str) -> TextData:
    """:func:`from_hf_dataset` before data.label_map and the spelling check."""

    # an HF dataset's columns are "text" and "label" unless the config names others
    cfg = cfg.model_copy(
        update={
            "text_column": "text" if cfg.text_column is None else cfg.text_column,
            "label_column": "label" if cfg.label_column is None else cfg.label_column,
        }
    )
    columns = {"text_column": cfg.text_column, "label_column": cfg.label_column}
    if cfg.text_pair_column is not None:
        columns["text_pair_column"] = cfg.text_pair_column
    for what, col in columns.items():
        if col not in ds.column_names:
            raise TextDistillError(f"{source}: column {col!r} ({what}) not found; columns are {ds.column_names}")
    feature = ds.features[cfg.label_column]
    nested = cfg.task_type in ("token_classification", "multi_label")
    names = getattr(getattr(feature, "feature", None) if nested else feature, "names", None)

    def name(v: Any) -> str:  # surrounding whitespace dropped, as the file readers do
        return names[int(v)].strip() if names is not None and int(v) >= 0 else str(v).strip()

    raw = ds[cfg.label_column]
    labels: list[Any] = [[name(v) for v in seq] for seq in raw] if nested else [name(v) for v in raw]
    words = None
    if cfg.task_type == "token_classification":
        words = [[str(w) for w in ws] for ws in ds[cfg.text_column]]
        texts = [" ".join(ws) for ws in words]
    else:
        texts = [str(t).strip() for t in ds[cfg.text_column]]
    pairs = [str(t).strip() for t in ds[cfg.text_pair_column]] if cfg.text_pair_column is not None else None
    for i, (t, lab) in enumerate(zip(texts, labels)):
        if not t:
            raise TextDistillError(f"{source}: row {i}: empty text")
        if words is not None:
            if len(words[i]) != len(lab):
                raise TextDistillError(f"{source}: row {i}: {len(words[i])} words but {len(lab)} tags")
            if "-1" in lab:  # a tag id of -1: the split carries no tags (a test split without labels)
                raise TextDistillError(
                    f"{source}: row {i}: word {lab.index('-1') + 1} has no tag (-1; unlabelled split?)"
                )
            labels[i] = sentence_tags(lab, cfg.tag_scheme, f"{source}: row {i}")  # data.tag_scheme -> IOB2
        if not nested and lab in ("", "-1"):
            raise TextDistillError(f"{source}: row {i}: missing label (unlabelled split?)")
    if not texts:
        raise TextDistillError(f"{source}: no data rows")
    return TextData(texts, labels, pairs, source, list(range(len(texts))), words)


def _load_hf_splits(cfg: DataConfig) -> list[TextData]:
    import datasets

    spec = cfg.hf_dataset
    assert spec is not None
    path = Path(spec.path)
    try:
        if (path / "dataset_dict.json").exists():
            dsd = datasets.load_from_disk(str(path))
        else:
            dsd = datasets.load_dataset(spec.path, spec.name)
    except Exception as exc:  # datasets raises many types; all mean "could not load"
        raise TextDistillError(f"data.hf_dataset: cannot load {spec.path!r}: {str(exc).splitlines()[0]}") from None
    splits = []
    for split in (spec.train_split, spec.validation_split, spec.test_split):
        if split is None:
            continue
        if split not in dsd:
            raise TextDistillError(f"data.hf_dataset: {spec.path!r} has no split {split!r}; splits are {list(dsd)}")
        splits.append(_from_hf(dsd[split], cfg, f"{spec.path}[{split}]"))
    return splits


def read_corpus(path: str | os.PathLike, paired: bool, limit: int | None = None) -> tuple[list[str], list[str] | None]:
    """Unlabeled text, one per line (blank lines skipped); for sentence-pair tasks each line is TEXT<TAB>PAIR. A line
    with control characters (binary data), or with the wrong number of fields, is an error naming the line."""
    texts, pairs, _ = read_corpus_lines(path, paired, limit)
    return texts, pairs


def read_corpus_lines(
    path: str | os.PathLike, paired: bool, limit: int | None = None
) -> tuple[list[str], list[str] | None, list[int]]:
    """:func:`read_corpus`, with the file line of each text."""
    p = Path(path)
    texts: list[str] = []
    pairs: list[str] = []
    lines: list[int] = []
    for n, line in enumerate(_read_text(p, "utf-8").splitlines(), 1):
        if not line.strip():
            continue
        bad = next((c for c in line if unicodedata.category(c) == "Cc" and c != "\t"), None)
        if bad is not None:
            raise TextDistillError(
                f"{p}:{n}: not text (control character U+{ord(bad):04X}); expected one text per line"
            )
        fields = line.split("\t")
        if len(fields) != (2 if paired else 1):
            raise TextDistillError(
                f"{p}:{n}: expected {'TEXT<TAB>PAIR' if paired else 'one text (no tabs)'} per line, "
                f"got {len(fields)} tab-separated fields"
            )
        texts.append(fields[0])
        lines.append(n)
        if paired:
            pairs.append(fields[1])
        if limit is not None and len(texts) >= limit:
            break
    if not texts:
        raise TextDistillError(f"{p}: no texts (empty file)")
    return texts, pairs if paired else None, lines


def load_splits(cfg: DataConfig) -> tuple[TextData, TextData]:
    """Train and validation splits, each cut to ``max_*_samples`` when set. Their labels (and the test split's, read
    here for that) go through ``data.label_map`` and are checked together: two spellings of one label (pos/Pos,
    1/1.0) anywhere across them, or a label_map key that is no label, is an error."""
    if cfg.hf_dataset is not None:
        splits = _load_hf_splits(cfg)
        normalise_labels(splits, cfg, all_splits=True)
    else:
        assert cfg.train_file is not None and cfg.validation_file is not None
        first, layout = _read_split(cfg.train_file, cfg)
        read = [(first, layout)] + [
            _read_split(f, cfg, layout) for f in (cfg.validation_file, cfg.test_file) if f is not None
        ]
        splits = [data for data, _ in read]
        normalise_labels(splits, cfg, all_splits=True)
        _announce(read, cfg.task_type)  # only once every split is read and checked: an error stays the one line
    train, dev = splits[:2]
    single = cfg.task_type == "classification"
    return (
        train.cap(cfg.max_train_samples, "data.max_train_samples", single),
        dev.cap(cfg.max_eval_samples, "data.max_eval_samples", single),
    )


def load_test(cfg: DataConfig) -> TextData | None:
    """The held-out test split (``test_file`` or ``hf_dataset.test_split``), whole; None when the config has none."""
    if cfg.hf_dataset is not None:
        if cfg.hf_dataset.test_split is None:
            return None
        test = _load_hf_splits(cfg)[2]
        normalise_labels([test], cfg)
        return test
    if cfg.test_file is None:
        return None
    test, _ = _read_split(cfg.test_file, cfg, _train_layout(cfg) if cfg.train_file is not None else None)
    normalise_labels([test], cfg)
    return test


# --------------------------------------------------------------------------------------------------------------------
# Labels


def _sort_key(name: str) -> tuple[int, Any]:
    try:
        return (0, float(name))
    except ValueError:
        return (1, name)


# the HF config's problem_type of each task type (models and students both set it: it lives below them)
PROBLEM_TYPES = {
    "classification": "single_label_classification",
    "regression": "regression",
    "multi_label": "multi_label_classification",
    "token_classification": None,
}


@dataclass(frozen=True)
class LabelSet:
    """A task's label names (ids in this order) and its type (``DataConfig.task_type``): classification, regression
    (a single output ``score``), token_classification (a tag per word) or multi_label (a set of labels per text)."""

    names: tuple[str, ...]
    task_type: str = "classification"

    @property
    def regression(self) -> bool:
        return self.task_type == "regression"

    @classmethod
    def for_regression(cls) -> "LabelSet":
        return cls(("score",), "regression")

    @classmethod
    def from_data(cls, data: TextData, task_type: str = "classification") -> "LabelSet":
        if task_type == "regression":
            return cls.for_regression()
        if task_type == "token_classification":
            return cls(tuple(tag_order({t for tags in data.labels for t in tags})), task_type)
        if task_type == "multi_label":
            return cls(tuple(sorted({n for names in data.labels for n in names}, key=_sort_key)), task_type)
        return cls(tuple(sorted(set(data.labels), key=_sort_key)))

    @classmethod
    def from_model_config(cls, config: Any) -> "LabelSet | None":
        """The label names a fine-tuned model carries, or None when they are transformers' ``LABEL_i`` defaults."""
        if getattr(config, "problem_type", None) == "regression":
            return cls.for_regression()
        id2label = {int(k): str(v) for k, v in (getattr(config, "id2label", None) or {}).items()}
        names = tuple(id2label[i] for i in sorted(id2label))
        if not names or all(n == f"LABEL_{i}" for i, n in enumerate(names)):
            return None
        return cls(names, model_task_type(config))

    def __len__(self) -> int:
        return len(self.names)

    def columns_in(self, own: "LabelSet") -> list[int] | None:
        """Where each of these labels sits in a model's own label order ``own`` (to reorder its outputs); None when
        the order is the same, or for regression."""
        if self.regression or list(own.names) == list(self.names):
            return None
        return [own.names.index(n) for n in self.names]

    @property
    def label2id(self) -> dict[str, int]:
        return {n: i for i, n in enumerate(self.names)}

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.names))

    def _unknown(self, data: TextData, i: int, name: str, offset: int = 0) -> TextDistillError:
        """``offset``: the word of a sentence (token classification), on its own line or named by its place."""
        row = data.rows[i] if data.rows else i
        where = ""
        if data.word_per_line:
            row += offset
        else:
            where = f" (word {offset + 1})"
        what = "tag" if self.task_type == "token_classification" else "label"
        return TextDistillError(
            f"{data.source}:{row}: {what} {_shown(name)}{where} is not among the training {what}s {_names(self.names)}"
        )

    def encode(self, data: TextData) -> list[Any]:
        """Label ids (regression: the scores as numbers; token classification: a list of tag ids per sentence;
        multi-label: multi-hot lists of floats); a label the set lacks, or a score that is not a number, is an error
        naming the file and row (for a tag: its own line)."""
        if self.regression:
            scores = []
            for i, text in enumerate(data.labels):
                try:
                    value = float(text)
                except ValueError:
                    value = float("nan")
                if value != value or value in (float("inf"), float("-inf")):
                    row = data.rows[i] if data.rows else i
                    raise TextDistillError(f"{data.source}:{row}: label {text!r} is not a number (regression task)")
                scores.append(value)
            return scores
        index = self.label2id
        if self.task_type in ("token_classification", "multi_label"):
            out: list[Any] = []
            for i, names in enumerate(data.labels):
                bad = next((j for j, n in enumerate(names) if n not in index), None)
                if bad is not None:
                    raise self._unknown(data, i, names[bad], bad if self.task_type == "token_classification" else 0)
                if self.task_type == "token_classification":
                    out.append([index[n] for n in names])
                else:
                    hot = [0.0] * len(self)
                    for n in names:
                        hot[index[n]] = 1.0
                    out.append(hot)
            return out
        ids = []
        for i, name in enumerate(data.labels):
            if name not in index:
                raise self._unknown(data, i, name)
            ids.append(index[name])
        return ids


def model_task_type(config: Any) -> str:
    """A HF model config's task type: from its ``problem_type``, or its architecture for token classifiers."""
    problem = getattr(config, "problem_type", None)
    if problem == "regression":
        return "regression"
    if problem == "multi_label_classification":
        return "multi_label"
    if any(a.endswith("ForTokenClassification") for a in getattr(config, "architectures", None) or []):
        return "token_classification"
    return "classification"


# --------------------------------------------------------------------------------------------------------------------
# Tokenization, datasets, batching

Features = dict[str, list[int]]


def tokenize(tokenizer: Any, data: TextData, max_length: int) -> list[Features]:
    """Tokenize every example once (no padding); keeps ``input_ids`` and ``token_type_ids`` when the model uses them."""
    enc = tokenizer(data.texts, data.pairs, truncation=True, max_length=max_length, padding=False)
    keys = [k for k in ("input_ids", "token_type_ids") if k in enc]
    return [{k: enc[k][i] for k in keys} for i in range(len(data))]


@dataclass
class WordTokens:
    """Sentences of words tokenized for token classification: ``labels[i]`` has a tag id or ``IGNORE_INDEX`` per
    token of ``features[i]``; ``dropped[i]`` are the tag ids of the words cut off by ``max_length``."""

    features: list[Features]
    labels: list[list[int]]
    dropped: list[list[int]]


def _stand_ins(tokenizer: Any, data: TextData) -> list[list[str]]:
    """``data.words`` with the tokenizer's unknown token in place of each word it gives no piece at all (its
    normalizer removes every character: a lone variation selector or combining mark for an uncased BERT, a zero-width
    space for XLM-R), so that no word, and no tag, goes missing from the aligned labels. One warning counts them."""
    import warnings

    assert data.words is not None
    unique = sorted({w for ws in data.words for w in ws})
    if not unique:
        return data.words
    pieces = tokenizer([[w] for w in unique], is_split_into_words=True, add_special_tokens=False)["input_ids"]
    void = {w for w, ids in zip(unique, pieces) if not ids}
    if not void:
        return data.words
    i, j = next((i, j) for i, ws in enumerate(data.words) for j, w in enumerate(ws) if w in void)
    row = data.rows[i] if data.rows else i
    where = f"{data.source}:{row + j}" if data.word_per_line else f"{data.source}:{row} (word {j + 1})"
    word = data.words[i][j]
    shown = repr(word) if all(unicodedata.category(c)[0] in "LNPS" for c in word) else ascii(word)  # invisible: escaped
    unk = getattr(tokenizer, "unk_token", None)
    if not unk or not tokenizer([[unk]], is_split_into_words=True, add_special_tokens=False)["input_ids"][0]:
        raise TextDistillError(
            f"{where}: the tokenizer turns the word {shown} into no piece at all and has no unknown "
            "token to stand in for it; remove or replace such words"
        )
    warnings.warn(
        f"{data.source}: {len(void)} distinct words give the tokenizer no piece (the first: {shown} at "
        f"{where}); "
        f"each is read as {unk} so that its tag stays in place",
        stacklevel=3,
    )
    return [[unk if w in void else w for w in ws] for ws in data.words]


def tokenize_words(
    tokenizer: Any,
    data: TextData,
    tag_ids: list[list[int]],
    names: Sequence[str],
    max_length: int,
    alignment: str = "first",
) -> WordTokens:
    """Tokenize pre-split words (``is_split_into_words``) and align each word's tag to its pieces
    (:func:`textdistill.ner.align_labels`). A sentence longer than ``max_length`` tokens is truncated, never an
    error: one warning counts them (their cut-off words count as missed entities in the scores).

    Every word keeps its tag: a word the tokenizer would drop is read as its unknown token, and the tag goes on the
    word's first piece that holds text, past a bare ``▁`` (an XLM-R-style tokenizer splits most CJK characters into
    ``▁`` + the character). A last word of which truncation kept only such a bare piece counts as cut."""
    import warnings

    assert data.words is not None
    if not getattr(tokenizer, "is_fast", False):
        raise TextDistillError(
            f"token classification needs a fast tokenizer (word ids); {type(tokenizer).__name__} is not"
        )
    words = _stand_ins(tokenizer, data)
    enc = tokenizer(words, truncation=True, max_length=max_length, padding=False, is_split_into_words=True)
    keys = [k for k in ("input_ids", "token_type_ids") if k in enc]
    blanks = blank_ids(tokenizer, {t for ids in enc["input_ids"] for t in ids})
    features, labels, dropped = [], [], []
    for i in range(len(data)):
        word_ids = list(enc.word_ids(i))
        ids = enc["input_ids"][i]
        blank = [t in blanks for t in ids] if blanks else None
        kept = max((w for w in word_ids if w is not None), default=-1) + 1
        if (
            blank is not None
            and kept
            and len(ids) >= max_length
            and all(b for w, b in zip(word_ids, blank) if w == kept - 1)
        ):
            word_ids = [None if w == kept - 1 else w for w in word_ids]  # only the last word's bare "▁" was kept
            kept -= 1
        features.append({k: enc[k][i] for k in keys})
        labels.append(align_labels(word_ids, tag_ids[i], names, alignment, blank))
        dropped.append(tag_ids[i][kept:])
    cut = [i for i, d in enumerate(dropped) if d]
    if cut:
        first = data.rows[cut[0]] if data.rows else cut[0]
        warnings.warn(
            f"{data.source}: {len(cut)} of {len(data)} sentences are longer than max_length={max_length} "
            f"tokens and "
            f"were truncated ({sum(len(dropped[i]) for i in cut)} words cut, the first at line {first}); "
            f"raise "
            "data.max_length to keep them",
            stacklevel=2,
        )
    return WordTokens(features, labels, dropped)


class DistillDataset(Dataset):
    """Examples for one split: student features, optional teacher features (other tokenizer), label, teacher logits.

    Token classification: ``labels[i]`` is a list (a tag id or ``IGNORE_INDEX`` per token), ``label_names`` the tag
    names and ``dropped`` the tags of words cut by truncation (scored as missed); teacher logits are ``[N, L, C]``.
    """

    def __init__(
        self,
        student: list[Features],
        labels: Sequence[Any],
        teacher: list[Features] | None = None,
        teacher_logits: torch.Tensor | None = None,
        label_names: Sequence[str] | None = None,
        dropped: list[list[int]] | None = None,
    ) -> None:
        if len(student) != len(labels) or (teacher is not None and len(teacher) != len(labels)):
            raise ValueError("student features, teacher features and labels must have the same length")
        self.student, self.teacher, self.labels = student, teacher, list(labels)
        self.teacher_logits = teacher_logits
        self.label_names = tuple(label_names) if label_names is not None else None
        self.dropped = dropped

    def __len__(self) -> int:
        return len(self.labels)

    def lengths(self) -> list[int]:
        return [len(f["input_ids"]) for f in self.student]

    def with_teacher_logits(self, logits: torch.Tensor) -> "DistillDataset":
        return DistillDataset(self.student, self.labels, self.teacher, logits, self.label_names, self.dropped)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item: dict[str, Any] = {"student": self.student[i], "labels": self.labels[i]}
        if self.teacher is not None:
            item["teacher"] = self.teacher[i]
        if self.teacher_logits is not None:
            item["teacher_logits"] = self.teacher_logits[i]
        return item


def pad_features(features: list[Features], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest example of the batch and build the attention mask (``int64`` tensors ``[B, L]``).

    Each key's tokens of the whole batch are read into one flat array in a single pass and scattered through the
    mask, not padded row by row in Python: about 5x faster for a batch of 256 x 128 (1.7 against 8.5 ms on this
    project's CPU), which keeps data loader workers ahead of a fast GPU step."""
    positions = np.arange(max(len(f["input_ids"]) for f in features))
    out: dict[str, torch.Tensor] = {}
    for key in features[0]:
        lengths = np.fromiter((len(f[key]) for f in features), dtype=np.int64, count=len(features))
        mask = positions < lengths[:, None]
        flat = np.fromiter(chain.from_iterable(f[key] for f in features), dtype=np.int64, count=int(lengths.sum()))
        padded = np.full(mask.shape, pad_token_id if key == "input_ids" else 0, dtype=np.int64)
        padded[mask] = flat
        out[key] = torch.from_numpy(padded)
        if key == "input_ids":
            attention = mask
    out["attention_mask"] = torch.from_numpy(attention.astype(np.int64))
    return out


@dataclass
class Collator:
    student_pad_id: int
    teacher_pad_id: int | None = None

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        student = pad_features([it["student"] for it in items], self.student_pad_id)
        batch: dict[str, Any] = {
            "student": student,
            "labels": collate_labels([it["labels"] for it in items], student["input_ids"].shape[1]),
        }
        if "teacher" in items[0]:
            assert self.teacher_pad_id is not None
            batch["teacher"] = pad_features([it["teacher"] for it in items], self.teacher_pad_id)
        # which sides have no padded row, known here on the host: the loop then calls a model without its mask
        batch["unpadded"] = {
            side: bool(batch[side]["attention_mask"].all()) for side in ("student", "teacher") if side in batch
        }
        if "teacher_logits" in items[0]:
            logits = torch.stack([it["teacher_logits"] for it in items])
            batch["teacher_logits"] = (
                logits[:, : student["input_ids"].shape[1]] if logits.dim() == 3 else logits
            )  # tokens
        if "task" in items[0]:  # a multi-task batch holds one task
            tasks = {it["task"] for it in items}
            if len(tasks) != 1:
                raise ValueError(f"a batch mixes tasks {sorted(tasks)}; multi-task batches hold one task each")
            batch["task"] = tasks.pop()
        return batch


def collate_labels(labels: list[Any], length: int) -> torch.Tensor:
    """A batch of labels: class ids ``[B]`` (long), scores ``[B]`` or multi-hot rows ``[B, C]`` (float), or token tag
    ids padded with ``IGNORE_INDEX`` to the batch's token ``length`` ``[B, L]`` (long)."""
    first = labels[0]
    if isinstance(first, list) and (not first or isinstance(first[0], int)):  # token tags
        return torch.tensor([lab + [IGNORE_INDEX] * (length - len(lab)) for lab in labels], dtype=torch.long)
    floats = isinstance(first, float) or (isinstance(first, list) and isinstance(first[0], float))
    return torch.tensor(labels, dtype=torch.float if floats else torch.long)


def train_loader(
    dataset: DistillDataset,
    collator: Collator,
    batch_size: int,
    group_by_length: bool,
    seed: int,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """Shuffled batches; with ``group_by_length`` similar lengths share a batch (less padding), order still random.
    Workers (if any) stay alive across epochs; ``pin_memory`` for copies to a GPU that overlap compute. The order comes
    from ``loader.epoch_generator``, which the training loop seeds at each epoch (so a resumed run sees the same
    batches)."""
    generator = torch.Generator().manual_seed(seed)
    extra = {"num_workers": num_workers, "persistent_workers": num_workers > 0, "pin_memory": pin_memory}
    if group_by_length:
        from transformers.trainer_pt_utils import LengthGroupedSampler

        sampler = LengthGroupedSampler(batch_size, lengths=dataset.lengths(), generator=generator)
        loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=collator, **extra)
    else:
        loader = DataLoader(
            dataset, batch_size=batch_size, shuffle=True, generator=generator, collate_fn=collator, **extra
        )
    loader.epoch_generator = generator  # type: ignore[attr-defined]  (the loop seeds it per epoch: resumable order)
    return loader


def ordered_batches(
    dataset: DistillDataset, collator: Collator, batch_size: int, device: torch.device
) -> Iterator[dict[str, Any]]:
    """The dataset's examples in order, as padded batches on ``device``."""
    for start in range(0, len(dataset), batch_size):
        batch = collator([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
        yield {"student": {k: v.to(device) for k, v in batch["student"].items()}, "labels": batch["labels"].to(device)}
