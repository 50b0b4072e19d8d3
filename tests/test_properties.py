"""Property tests (hypothesis): config loading and the readers either return a result or raise TextDistillError
with a one-line message, whatever the input; never any other exception."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from textdistill.config import DataConfig, config_from_dict, load_config
from textdistill.data import LabelSet, read_corpus, read_file
from textdistill.errors import TextDistillError
from textdistill.ner import read_conll

SETTINGS = settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
FEW = settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

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

KEYS = ["output_dir", "seed", "data", "teacher", "student", "distill", "eval", "transfer", "tasks", "train_file",
        "validation_file", "test_file", "format", "task_type", "text_column", "label_column", "text_pair_column",
        "encoding", "max_length", "model", "finetune", "training", "learning_rate", "num_train_epochs", "layers",
        "num_layers", "architecture", "temperature", "alpha", "intermediate", "layer_map", "minilm", "kind", "start",
        "end", "metric", "name", "teachers", "fusion", "hf_dataset", "path", "temprature", "student_from"]  # fmt: skip
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["${TEXTDISTILL_DATA}/sst2/dev.tsv", "~/x.tsv", "a.tsv", "conll", "token_classification", "regression",
                     "kl", "linear", "pearson", "uniform", "hidden", "all-MiniLM-L6-v2", "../x", "/", ".", "", "a" * 300,
                     "x\x00y"]),  # fmt: skip
)
keys = st.one_of(st.sampled_from(KEYS), st.text(max_size=8), st.integers(-3, 3), st.booleans(), st.none())
yamlish = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=5), max_leaves=25)

VALID = {
    "data": {"train_file": "train.tsv", "validation_file": "dev.tsv"},
    "teacher": {"model": "all-MiniLM-L6-v2"},
    "student": {"num_layers": 2},
    "distill": {"temperature": 2.0, "alpha": 0.5},
}
PATHS = [("seed",), ("output_dir",), ("data",), ("data", "format"), ("data", "task_type"), ("data", "train_file"),
         ("data", "text_column"), ("data", "encoding"), ("data", "max_length"), ("data", "hf_dataset"), ("teacher",),
         ("teacher", "model"), ("teacher", "training"), ("student",), ("student", "layers"), ("student", "architecture"),
         ("student", "training", "learning_rate"), ("distill", "temperature"), ("distill", "alpha"),
         ("distill", "intermediate"), ("distill", "layer_map"), ("distill", "minilm"), ("eval", "metric"), ("transfer",),
         ("tasks",), ("student_from",)]  # fmt: skip


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


YAML_PIECES = list("ab1:-_ []{},!&*#|>'\"\n\t.e?%@`~/=") + ["data:", "\n  ", "!!python/object/apply:os.system", "!!int ", "!!bool ",
                                                            "!!timestamp ", "2024-13-45", "0x_", "&a ", "*a", "<<: ", "---", "..."]  # fmt: skip
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
@example(yaml.safe_dump({**VALID, "teacher": {"model": "m" * 300}, "data": {"train_file": "t" * 300, "validation_file": "v\x00"}}))
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


override_keys = st.one_of(st.text(max_size=12), st.lists(st.sampled_from(KEYS + ["0", "1", "-1", "99"]), min_size=1, max_size=4).map(".".join))
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

CELL = st.one_of(st.text(max_size=12), st.sampled_from(["text", "label", "0", "1", "2.5", "nan", "", " ", '"', '"a,b"', "a\tb"]))


@st.composite
def delimited_bytes(draw: st.DrawFn, delimiter: str) -> bytes:
    """Rows of cells (a header most of the time), or raw bytes, in one of a few encodings."""
    if draw(st.integers(0, 4)) == 0:
        return draw(st.binary(max_size=200))
    rows = draw(st.lists(st.lists(CELL, max_size=4), max_size=6))
    if draw(st.booleans()):
        rows.insert(0, ["text", "label"])
    text = "\n".join(delimiter.join(r) for r in rows) + draw(st.sampled_from(["", "\n", "\r\n"]))
    return text.encode(draw(st.sampled_from(["utf-8", "utf-8-sig", "latin-1", "utf-16"])), errors="replace")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["text", "label", "pair", "x"]), inner, max_size=4),
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
        "encoding": draw(st.sampled_from(["utf-8", "latin-1", "utf-16"])),
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
@given(st.sampled_from(["tsv", "csv"]).flatmap(lambda f: st.tuples(st.just(f), delimited_bytes("\t" if f == "tsv" else ","), data_configs(f))))
@example(("csv", b'text,label\n"' + b"a" * 200_000 + b"\n", DataConfig(train_file="x", validation_file="x")))
@example(("tsv", b"a\tb\n", DataConfig(train_file="x", validation_file="x", has_header=False, text_column=0, label_column=7)))
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
    st.tuples(st.text(min_size=1, max_size=6), st.sampled_from(["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "PER", "B-", "I-X"])).map(" ".join),
    st.sampled_from(["", " ", "-DOCSTART- -X- O O", "a b c", "a", "x NNP B-NP O"]),
    st.text(max_size=15),
)


@SETTINGS
@given(st.one_of(st.lists(TOKEN_LINE, max_size=12).map("\n".join), st.text(max_size=100)), st.sampled_from(["iob1", "iob2"]))
def test_read_conll_on_any_text(tmp_path: Path, text: str, scheme: str) -> None:
    p = _fresh(tmp_path, "data.conll")
    p.write_bytes(text.encode("utf-8", errors="surrogatepass"))
    conll = _returns_or_explains(lambda: read_conll(p, scheme))
    if conll is not None:
        assert conll.sentences and all(len(s.tokens) == len(s.tags) for s in conll.sentences)
    cfg = DataConfig(train_file="x", validation_file="x", format="conll", task_type="token_classification", tag_scheme=scheme)
    _read_and_encode(p, cfg)


@FEW
@given(st.binary(max_size=200))
def test_read_conll_on_any_bytes(tmp_path: Path, content: bytes) -> None:
    p = _fresh(tmp_path, "data.conll")
    p.write_bytes(content)
    _returns_or_explains(lambda: read_conll(p, "iob2"))


@SETTINGS
@given(st.one_of(st.binary(max_size=200), st.lists(st.text(max_size=15), max_size=6).map(lambda ls: "\n".join(ls).encode("utf-8", "surrogatepass"))),
       st.booleans(), st.none() | st.integers(1, 5))  # fmt: skip
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
    call = {"read_file": lambda p: read_file(p, cfg), "read_conll": read_conll, "read_corpus": lambda p: read_corpus(p, False)}[reader]
    for path in (tmp_path / "missing.tsv", tmp_path, tmp_path / ("n" * 300 + ".tsv"), tmp_path / "nul\x00.tsv"):
        with pytest.raises(TextDistillError):
            call(path)
