"""Property tests (hypothesis): config loading and the readers either return a result or raise TextDistillError
with a one-line message, whatever the input; never any other exception."""

from __future__ import annotations

import codecs
import csv
import io
import itertools
import json
import math
import re
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from textdistill.config import DataConfig, config_from_dict, load_config
from textdistill.data import LABEL_NAMES, TEXT_NAMES, LabelSet, TextData, load_splits, read_corpus, read_file
from textdistill.errors import TextDistillError
from textdistill.ner import read_conll

SETTINGS = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
FEW = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

_files = itertools.count()


def _fresh(folder: Path, name: str) -> Path:
    """A new file name per example (hypothesis reuses the test's tmp_path)."""
    sub = folder / f"ex{next(_files)}"
    sub.mkdir()
    return sub / name


def _returns_or_explains(call: Callable[[], Any]) -> Any:
    """Run ``call``: its result, or None when it raised TextDistillError with a one-line message."""
    try:
        return call()
    except TextDistillError as exc:
        message = str(exc)
        assert message and "\n" not in message, f"not one line: {message!r}"
        return None


# --------------------------------------------------------------------------------------------------------------------
# Configs

KEYS = [
    "output_dir",
    "seed",
    "data",
    "teacher",
    "student",
    "distill",
    "eval",
    "transfer",
    "tasks",
    "train_file",
    "validation_file",
    "test_file",
    "format",
    "task_type",
    "text_column",
    "label_column",
    "text_pair_column",
    "encoding",
    "max_length",
    "model",
    "finetune",
    "training",
    "learning_rate",
    "num_train_epochs",
    "layers",
    "num_layers",
    "architecture",
    "temperature",
    "alpha",
    "intermediate",
    "layer_map",
    "minilm",
    "kind",
    "start",
    "end",
    "metric",
    "name",
    "teachers",
    "fusion",
    "hf_dataset",
    "path",
    "temprature",
    "student_from",
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(
        [
            "${TEXTDISTILL_DATA}/sst2/dev.tsv",
            "~/x.tsv",
            "a.tsv",
            "conll",
            "token_classification",
            "regression",
            "kl",
            "linear",
            "pearson",
            "uniform",
            "hidden",
            "all-MiniLM-L6-v2",
            "../x",
            "/",
            ".",
            "",
            "a" * 300,
            "x\x00y",
        ]
    ),
)
keys = st.one_of(st.sampled_from(KEYS), st.text(max_size=8), st.integers(-3, 3), st.booleans(), st.none())
yamlish = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=5), max_leaves=25
)

VALID = {
    "data": {"train_file": "train.tsv", "validation_file": "dev.tsv"},
    "teacher": {"model": "all-MiniLM-L6-v2"},
    "student": {"num_layers": 2},
    "distill": {"temperature": 2.0, "alpha": 0.5},
}
PATHS = [
    ("seed",),
    ("output_dir",),
    ("data",),
    ("data", "format"),
    ("data", "task_type"),
    ("data", "train_file"),
    ("data", "text_column"),
    ("data", "encoding"),
    ("data", "max_length"),
    ("data", "hf_dataset"),
    ("teacher",),
    ("teacher", "model"),
    ("teacher", "training"),
    ("student",),
    ("student", "layers"),
    ("student", "architecture"),
    ("student", "training", "learning_rate"),
    ("distill", "temperature"),
    ("distill", "alpha"),
    ("distill", "intermediate"),
    ("distill", "layer_map"),
    ("distill", "minilm"),
    ("eval", "metric"),
    ("transfer",),
    ("tasks",),
    ("student_from",),
]


@st.composite
def mutated_configs(draw: st.DrawFn) -> dict:
    """A valid config with a few keys set to arbitrary values (reaches the validators a random dict never does)."""
    raw = json.loads(json.dumps(VALID))
    for path in draw(st.lists(st.sampled_from(PATHS), min_size=1, max_size=3)):
        node = raw
        for key in path[:-1]:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        node[path[-1]] = draw(yamlish)
    return raw


@SETTINGS
@given(st.one_of(yamlish, mutated_configs()))
@example({"tasks": 5, "student": {"num_layers": 2}})
@example({"tasks": [{"teachers": 3, "name": "a", "data": {}}], "student": {"num_layers": 2}})
@example({"data": {"train_file": "a", "validation_file": "b", "text_column": -1}})
@example({**VALID, "seed": -1})
@example({**VALID, "distill": {"temperature": {"kind": "linear", "start": math.nan, "end": 1.0}}})
def test_config_from_dict_validates_or_explains(raw: Any) -> None:
    _returns_or_explains(lambda: config_from_dict(raw))


YAML_PIECES = list("ab1:-_ []{},!&*#|>'\"\n\t.e?%@`~/=") + [
    "data:",
    "\n  ",
    "!!python/object/apply:os.system",
    "!!int ",
    "!!bool ",
    "!!timestamp ",
    "2024-13-45",
    "0x_",
    "&a ",
    "*a",
    "<<: ",
    "---",
    "...",
]
yaml_text = st.one_of(
    st.text(max_size=200),
    st.lists(st.sampled_from(YAML_PIECES), max_size=40).map("".join),
    yamlish.map(lambda v: yaml.safe_dump(v, allow_unicode=True)),
    mutated_configs().map(lambda v: yaml.safe_dump(v, allow_unicode=True)),
)


@SETTINGS
@given(yaml_text)
@example("seed: 2024-13-45\n")
@example("!!int")
@example("a: !!bool\n")
@example("a: !!int abc\n")
@example("a: &x [*x]\n")
@example("[" * 3000)
@example("data: !!python/object/apply:os.system ['true']\n")
@example(
    yaml.safe_dump(
        {**VALID, "teacher": {"model": "m" * 300}, "data": {"train_file": "t" * 300, "validation_file": "v\x00"}}
    )
)
def test_load_config_on_any_text(tmp_path: Path, text: str) -> None:
    p = _fresh(tmp_path, "config.yaml")
    p.write_text(text, encoding="utf-8")
    _returns_or_explains(lambda: load_config(p))


@FEW
@given(st.binary(max_size=200))
@example(b"seed: 1\n\xff\xfe")
def test_load_config_on_any_bytes(tmp_path: Path, content: bytes) -> None:
    p = _fresh(tmp_path, "config.yaml")
    p.write_bytes(content)
    _returns_or_explains(lambda: load_config(p))


override_keys = st.one_of(
    st.text(max_size=12), st.lists(st.sampled_from(KEYS + ["0", "1", "-1", "99"]), min_size=1, max_size=4).map(".".join)
)
overrides = st.one_of(st.text(max_size=30), st.tuples(override_keys, yaml_text).map("=".join))


@SETTINGS
@given(st.lists(overrides, max_size=4))
@example(["student.num_layers"])
@example(["data.train_file.x=1"])
@example(["tasks=[{}]", "tasks.0.data.train_file=[1]"])
@example(["tasks=[]", "tasks.0=1"])
@example(["seed=2024-13-45"])
def test_load_config_with_any_overrides(tmp_path: Path, extra: list[str]) -> None:
    p = tmp_path / "config.yaml"
    if not p.exists():
        p.write_text(yaml.safe_dump(VALID), encoding="utf-8")
    _returns_or_explains(lambda: load_config(p, extra))


# --------------------------------------------------------------------------------------------------------------------
# Readers

DELIMITERS = [",", ";", "\t", "|"]
CELL = st.one_of(
    st.text(max_size=12), st.sampled_from(["text", "label", "0", "1", "2.5", "nan", "", " ", '"', '"a,b"', "a\tb"])
)


@st.composite
def delimited_bytes(draw: st.DrawFn, delimiter: str) -> bytes:
    """Rows of cells (a header most of the time), or raw bytes, in one of a few encodings."""
    if draw(st.integers(0, 4)) == 0:
        return draw(st.binary(max_size=200))
    rows = draw(st.lists(st.lists(CELL, max_size=4), max_size=6))
    if draw(st.booleans()):
        rows.insert(0, ["text", "label"])
    text = "\n".join(delimiter.join(r) for r in rows) + draw(st.sampled_from(["", "\n", "\r\n"]))
    raw = text.encode(draw(st.sampled_from(["utf-8", "utf-8-sig", "latin-1", "utf-16"])), errors="replace")
    return draw(st.sampled_from([b"", codecs.BOM_UTF8])) + raw


# Files written from known rows (random delimiter, quotes, line breaks inside csv texts, byte-order marks, encodings,
# fields too many or too few, a column named twice, two spellings of one label): each is read back exactly, or,
# where the rows do not fit the format, refused with one line naming the file (and the line).

LABELS = ["pos", "neg", "0", "1", " pos", "neg "]
ODD_LABELS = ["Pos", "1.0", ""]  # another spelling of a class, or none
SPELLS = {
    "pos": "pos",
    "Pos": "pos",
    "neg": "neg",
    "0": "0",
    "1": "1",
    "1.0": "1",
}  # a stripped label -> the class it spells
ENCODINGS = {
    "utf-8": ["utf-8", "utf8", "u8", "UTF8", "UTF-8"],
    "utf-8-sig": ["utf-8-sig", "UTF-8-sig"],
    "latin-1": ["latin-1", "iso-8859-1"],
}


@st.composite
def written_files(draw: st.DrawFn) -> dict[str, Any]:
    fmt = draw(st.sampled_from(["tsv", "csv"]))
    delimiter = draw(st.sampled_from(DELIMITERS))
    encoding = draw(st.sampled_from(list(ENCODINGS)))
    bom = encoding != "utf-8-sig" and draw(st.integers(0, 3)) == 0  # a UTF-8 mark, in a latin-1 file too
    header, pair, label_first = draw(st.booleans()), draw(st.booleans()), draw(st.booleans())
    names = (["label", "text"] if label_first else ["text", "label"]) + (["pair"] if pair else [])
    # tsv fields are never quoted: a delimiter or line break in a "text" is, there, just another field or row
    forbidden = "" if fmt == "csv" else delimiter + "\r\n"
    specials = [c for c in "\"',;\t| \n\r" if c not in forbidden]
    alphabet = st.one_of(
        st.sampled_from(specials), st.sampled_from("ab z"), st.characters(codec="latin-1", exclude_characters=forbidden)
    )
    cell = st.lists(alphabet, min_size=draw(st.sampled_from([0, 1, 1, 1])), max_size=10).map("".join)
    label = st.sampled_from(LABELS + ODD_LABELS if draw(st.integers(0, 4)) == 0 else LABELS)
    rows = []
    for _ in range(draw(st.integers(0, 6))):
        row = {"text": draw(cell), "label": draw(label), "pair": draw(cell)}
        fields = [row[n] for n in names]
        change = draw(st.integers(0, 19))
        if change == 0:
            fields += draw(st.lists(cell, min_size=1, max_size=2))  # a field too many
        elif change == 1:
            fields.pop()  # a field too few
        rows.append(fields)
    head = list(names)
    if header and draw(st.integers(0, 9)) == 0:
        head[1] = head[0]  # a column named twice
    return {
        "fmt": fmt,
        "delimiter": delimiter,
        "encoding": encoding,
        "spelling": draw(st.sampled_from(ENCODINGS[encoding])),
        "bom": bom,
        "header": head if header else None,
        "names": names,
        "rows": rows,
        "pair": pair,
        "end": draw(st.sampled_from(["\n", "\r\n"])),
        "default_delimiter": draw(st.booleans()),
    }


def _serialise(f: dict[str, Any]) -> tuple[bytes, list[int]]:
    """The file's bytes and the line each of ``f["rows"]`` starts on."""
    records = ([f["header"]] if f["header"] else []) + f["rows"]
    text, starts = "", []
    for record in records:
        starts.append(len(re.findall(r"\r\n|\r|\n", text)) + 1)
        if f["fmt"] == "csv":  # CRLF ends csv records: the writer then quotes a field holding a lone CR or LF
            out = io.StringIO()
            csv.writer(out, delimiter=f["delimiter"], lineterminator="\r\n").writerow(record)
            text += out.getvalue()
        else:
            text += f["delimiter"].join(record) + f["end"]
    raw = (codecs.BOM_UTF8 if f["bom"] else b"") + text.encode(f["encoding"])
    return raw, starts[1:] if f["header"] else starts


def _expected(f: dict[str, Any], starts: list[int]) -> TextData | None:
    """What the file holds, or None where it does not fit the format (the reader must refuse it)."""
    if f["bom"] and f["encoding"] == "latin-1":
        return None
    if f["header"] and len(set(f["header"])) < len(f["header"]):
        return None
    index = {n: i for i, n in enumerate(f["names"])}
    width = len(f["header"]) if f["header"] else None
    texts, labels, pairs, lines = [], [], [], []
    for record, line in zip(f["rows"], starts):
        if all(not c.strip() for c in record):
            continue  # a blank row
        if width is None:
            width = len(record)
        if len(record) != width or len(record) < len(f["names"]):
            return None
        text, label = record[index["text"]].strip(), record[index["label"]].strip()
        if not text or not label:
            return None
        texts.append(text)
        labels.append(label)
        pairs.append(record[index["pair"]].strip() if f["pair"] else "")
        lines.append(line)
    classes: dict[str, set[str]] = {}
    for label in labels:
        classes.setdefault(SPELLS.get(label, label), set()).add(label)
    if not texts or any(len(spellings) > 1 for spellings in classes.values()):
        return None
    return TextData(texts, labels, pairs if f["pair"] else None, rows=lines)


@SETTINGS
@given(written_files())
@example(
    {
        "fmt": "csv",
        "delimiter": ";",
        "encoding": "utf-8",
        "spelling": "u8",
        "bom": True,
        "header": ["label", "text"],
        "names": ["label", "text"],
        "rows": [["1", 'a; "b"\nc'], ["0", "d"]],
        "pair": False,
        "end": "\n",
        "default_delimiter": False,
    }
)
@example(
    {
        "fmt": "tsv",
        "delimiter": "\t",
        "encoding": "utf-8",
        "spelling": "UTF8",
        "bom": True,
        "header": None,
        "names": ["label", "text"],
        "rows": [["Pos", "a"], ["pos", "b"]],
        "pair": False,
        "end": "\r\n",
        "default_delimiter": True,
    }
)
def test_written_rows_are_read_back_exactly_or_refused(tmp_path: Path, f: dict[str, Any]) -> None:
    raw, starts = _serialise(f)
    p = _fresh(tmp_path, f"data.{f['fmt']}")
    p.write_bytes(raw)
    default = "\t" if f["fmt"] == "tsv" else ","
    column = (lambda n: n) if f["header"] else f["names"].index
    cfg = DataConfig(
        train_file="x",
        validation_file="x",
        format=f["fmt"],
        encoding=f["spelling"],
        has_header=f["header"] is not None,
        delimiter=None if f["default_delimiter"] and f["delimiter"] == default else f["delimiter"],
        text_column=column("text"),
        label_column=column("label"),
        text_pair_column=column("pair") if f["pair"] else None,
    )
    expected = _expected(f, starts)
    try:
        data = read_file(p, cfg)
    except TextDistillError as exc:
        message = str(exc)
        assert expected is None, f"a well-formed file was refused: {message}"
        assert "\n" not in message and message.startswith(str(p)), message
        line = re.match(re.escape(str(p)) + r":(\d+): ", message)
        assert line is None or 1 <= int(line[1]) <= raw.count(b"\n") + raw.count(b"\r") + 1, message
        return
    assert expected is not None, f"a malformed file was read: {data.texts} {data.labels}"
    assert (data.texts, data.labels, data.pairs, data.rows) == (
        expected.texts,
        expected.labels,
        expected.pairs,
        expected.rows,
    )


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["text", "label", "pair", "x"]), inner, max_size=4)
    ),
    max_leaves=10,
)


@st.composite
def jsonl_bytes(draw: st.DrawFn) -> bytes:
    if draw(st.integers(0, 4)) == 0:
        return draw(st.binary(max_size=200))
    lines = draw(st.lists(st.one_of(json_values.map(json.dumps), st.text(max_size=20)), max_size=6))
    return "\n".join(lines).encode("utf-8")


@st.composite
def data_configs(draw: st.DrawFn, fmt: str) -> DataConfig:
    header = draw(st.booleans())
    column = st.sampled_from(["text", "label", "pair", "x"]) if header or fmt == "jsonl" else st.integers(-2, 4)
    kw = {
        "train_file": "x",
        "validation_file": "x",
        "has_header": header,
        "text_column": draw(column),
        "label_column": draw(column),
        "text_pair_column": draw(st.none() | column),
        "task_type": draw(st.sampled_from(["classification", "regression", "multi_label"])),
        "encoding": draw(st.sampled_from(["utf-8", "utf8", "u8", "latin-1", "utf-16"])),
        "delimiter": draw(st.none() | st.sampled_from(DELIMITERS)) if fmt != "jsonl" else None,
    }
    try:
        return DataConfig(**kw)
    except ValidationError:
        assume(False)
        raise


def _read_and_encode(p: Path, cfg: DataConfig) -> None:
    data = _returns_or_explains(lambda: read_file(p, cfg))
    if data is not None:
        assert len(data) > 0 and len(data.texts) == len(data.labels) == len(data.rows)
        labels = LabelSet.from_data(data, cfg.task_type)
        _returns_or_explains(lambda: labels.encode(data))


@SETTINGS
@given(
    st.sampled_from(["tsv", "csv"]).flatmap(
        lambda f: st.tuples(st.just(f), st.sampled_from(DELIMITERS).flatmap(delimited_bytes), data_configs(f))
    )
)
@example(("csv", b'text,label\n"' + b"a" * 200_000 + b"\n", DataConfig(train_file="x", validation_file="x")))
@example(
    ("tsv", b"a\tb\n", DataConfig(train_file="x", validation_file="x", has_header=False, text_column=0, label_column=7))
)
def test_read_delimited_on_any_bytes(tmp_path: Path, case: tuple[str, bytes, DataConfig]) -> None:
    fmt, content, cfg = case
    p = _fresh(tmp_path, f"data.{fmt}")
    p.write_bytes(content)
    _read_and_encode(p, cfg)


@SETTINGS
@given(jsonl_bytes(), data_configs("jsonl"))
@example(b'{"text": "a", "label": ' + b"1" * 5000 + b"}\n", DataConfig(train_file="x", validation_file="x"))
@example(b"[" * 100_000, DataConfig(train_file="x", validation_file="x"))
@example(b'{"text": "a", "label": 4.5}\n', DataConfig(train_file="x", validation_file="x", task_type="regression"))
def test_read_jsonl_on_any_bytes(tmp_path: Path, content: bytes, cfg: DataConfig) -> None:
    p = _fresh(tmp_path, "data.jsonl")
    p.write_bytes(content)
    _read_and_encode(p, cfg)


TOKEN_LINE = st.one_of(
    st.tuples(
        st.text(min_size=1, max_size=6), st.sampled_from(["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "PER", "B-", "I-X"])
    ).map(" ".join),
    st.sampled_from(["", " ", "-DOCSTART- -X- O O", "a b c", "a", "x NNP B-NP O"]),
    st.text(max_size=15),
)


@SETTINGS
@given(
    st.one_of(st.lists(TOKEN_LINE, max_size=12).map("\n".join), st.text(max_size=100)),
    st.sampled_from(["iob1", "iob2"]),
)
def test_read_conll_on_any_text(tmp_path: Path, text: str, scheme: str) -> None:
    p = _fresh(tmp_path, "data.conll")
    p.write_bytes(text.encode("utf-8", errors="surrogatepass"))
    conll = _returns_or_explains(lambda: read_conll(p, scheme))
    if conll is not None:
        assert conll.sentences and all(len(s.tokens) == len(s.tags) for s in conll.sentences)
    cfg = DataConfig(
        train_file="x", validation_file="x", format="conll", task_type="token_classification", tag_scheme=scheme
    )
    _read_and_encode(p, cfg)


@FEW
@given(st.binary(max_size=200))
def test_read_conll_on_any_bytes(tmp_path: Path, content: bytes) -> None:
    p = _fresh(tmp_path, "data.conll")
    p.write_bytes(content)
    _returns_or_explains(lambda: read_conll(p, "iob2"))


@SETTINGS
@given(
    st.one_of(
        st.binary(max_size=200),
        st.lists(st.text(max_size=15), max_size=6).map(lambda ls: "\n".join(ls).encode("utf-8", "surrogatepass")),
    ),
    st.booleans(),
    st.none() | st.integers(1, 5),
)
def test_read_corpus_on_any_bytes(tmp_path: Path, content: bytes, paired: bool, limit: int | None) -> None:
    p = _fresh(tmp_path, "corpus.txt")
    p.write_bytes(content)
    out = _returns_or_explains(lambda: read_corpus(p, paired, limit))
    if out is not None:
        texts, pairs = out
        assert texts and (pairs is None) != paired and (limit is None or len(texts) <= limit)


@pytest.mark.parametrize("reader", ["read_file", "read_conll", "read_corpus"])
def test_readers_explain_a_missing_or_folder_path(tmp_path: Path, reader: str) -> None:
    cfg = DataConfig(train_file="x", validation_file="x", format="tsv")
    call = {
        "read_file": lambda p: read_file(p, cfg),
        "read_conll": read_conll,
        "read_corpus": lambda p: read_corpus(p, False),
    }[reader]
    for path in (tmp_path / "missing.tsv", tmp_path, tmp_path / ("n" * 300 + ".tsv"), tmp_path / "nul\x00.tsv"):
        with pytest.raises(TextDistillError):
            call(path)


# --------------------------------------------------------------------------------------------------------------------
# Zero-config reading: random small tables of a text and a label column (and perhaps an id column), any of the four
# delimiters, with or without a header of common names. Detection gives the columns back, or refuses with one line
# naming the file; with a header it must always give them back, and it never picks wrongly in silence.

WORDS = [
    "film",
    "plot",
    "slow",
    "great",
    "dull",
    "warm",
    "cast",
    "ending",
    "funny",
    "bleak",
    "sharp",
    "long",
    "score",
    "wit",
    "heart",
    "mess",
    "joy",
    "scene",
    "story",
    "actors",
]
LABEL_SETS = [
    ["pos", "neg"],
    ["0", "1"],
    ["sports", "tech", "arts"],
    ["1", "2", "3", "4", "5"],
    ["card_lost", "top_up"],
]


@st.composite
def detect_tables(draw: st.DrawFn) -> dict[str, Any]:
    ext = draw(st.sampled_from(["csv", "tsv", "txt"]))
    delimiter = draw(st.sampled_from(DELIMITERS))
    quoted = ext == "csv" or (ext == "txt" and delimiter != "\t")
    label_set = draw(st.sampled_from(LABEL_SETS))
    if draw(st.booleans()):  # every label on two rows or more, as in real data
        n = draw(st.integers(2 * len(label_set), 24))
        extra = draw(
            st.lists(st.sampled_from(label_set), min_size=n - 2 * len(label_set), max_size=n - 2 * len(label_set))
        )
        labels = draw(st.permutations(label_set * 2 + extra))
    else:  # any labels at all: a class may be on one row only, or every row may have the same
        n = draw(st.integers(2, 24))
        labels = draw(st.lists(st.sampled_from(label_set), min_size=n, max_size=n))
    marks = [m for m in [",", ";", "|", '"', "'", "!"] if quoted or m != delimiter]
    word = st.one_of(st.sampled_from(WORDS), st.sampled_from(WORDS).map(lambda w: w + draw(st.sampled_from(marks))))
    texts = [" ".join(draw(st.lists(word, min_size=1, max_size=10))) for _ in range(n)]
    columns = {"text": texts, "label": labels}
    if draw(st.booleans()):
        start = draw(st.integers(0, 10**6))
        columns["id"] = [str(start + i) for i in range(n)]
    if draw(st.booleans()):  # another column of short values that repeat
        columns["source"] = draw(st.lists(st.sampled_from(["web", "news", "forum"]), min_size=n, max_size=n))
    order = draw(st.permutations(list(columns)))
    names = None
    if draw(st.booleans()):
        names = {
            "text": draw(st.sampled_from(TEXT_NAMES)),
            "label": draw(st.sampled_from(LABEL_NAMES)),
            "id": draw(st.sampled_from(["id", "idx", "index"])),
            "source": draw(st.sampled_from(["source", "genre"])),
        }
        names = {
            k: draw(st.sampled_from([v, v.upper(), v.capitalize()])) if v not in ("text", "label") else v
            for k, v in names.items()
        }
    return {
        "ext": ext,
        "delimiter": delimiter,
        "quoted": quoted,
        "columns": columns,
        "order": order,
        "names": names,
        "n": n,
    }


def _write_table(t: dict[str, Any]) -> str:
    records = ([[t["names"][c] for c in t["order"]]] if t["names"] else []) + [
        [t["columns"][c][i] for c in t["order"]] for i in range(t["n"])
    ]
    if t["quoted"]:
        out = io.StringIO()
        csv.writer(out, delimiter=t["delimiter"], lineterminator="\n").writerows(records)
        return out.getvalue()
    return "".join(t["delimiter"].join(r) + "\n" for r in records)


@SETTINGS
@given(detect_tables())
@example(
    {
        "ext": "csv",
        "delimiter": ";",
        "quoted": True,
        "n": 4,
        "order": ["text", "label"],
        "names": None,
        "columns": {
            "text": ["great, film x", "dull, plot y", "warm, cast z", "slow, wit w"],
            "label": ["pos", "neg", "pos", "neg"],
        },
    }
)
@example(
    {
        "ext": "txt",
        "delimiter": "|",
        "quoted": True,
        "n": 4,
        "order": ["label", "text"],
        "names": {"text": "REVIEW", "label": "Intent", "id": "id"},
        "columns": {
            "text": ["great film x", "dull plot y", "warm cast z", "slow wit w"],
            "label": ["a", "b", "a", "b"],
        },
    }
)
def test_detection_gives_the_columns_back_or_explains(tmp_path: Path, t: dict[str, Any]) -> None:
    p = _fresh(tmp_path, f"data.{t['ext']}")
    p.write_text(_write_table(t), encoding="utf-8")
    cfg = DataConfig(train_file=str(p), validation_file=str(p))
    try:
        train, _ = load_splits(cfg)
    except TextDistillError as exc:
        message = str(exc)
        assert "\n" not in message and message.startswith(str(p)), message
        assert t["names"] is None, f"a table with named columns was refused: {message}"
        return
    assert train.texts == [x.strip() for x in t["columns"]["text"]], "wrong text column"
    assert train.labels == t["columns"]["label"], "wrong label column"
    assert train.pairs is None
