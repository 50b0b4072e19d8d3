"""The object API (issue 30): models, tokenizers and in-memory tables in; a result object out; the CLI's checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import textdistill
from textdistill.api import RunResult, build_config, data_file, markdown_to_html, model_folder
from textdistill.errors import TextDistillError

FAST = {"num_train_epochs": 1, "per_device_train_batch_size": 16, "learning_rate": 1e-3, "logging_steps": 5}


def _rows(sst2_dir: Path, start: int, n: int) -> list[dict]:
    lines = (sst2_dir / "train.tsv").read_text(encoding="utf-8").splitlines()[1 + start : 1 + start + n]
    return [{"review": t, "stars": "pos" if y == "1" else "neg"} for t, y in (line.split("\t") for line in lines)]


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TEXTDISTILL_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_tables_of_every_kind_become_one_file_named_by_their_content(cache: Path) -> None:
    pd = pytest.importorskip("pandas")
    datasets = pytest.importorskip("datasets")
    rows = [{"text": "good", "label": "pos"}, {"text": "bad", "label": "neg"}]
    paths = {
        "list": data_file(rows, "train"),
        "columns": data_file({"text": ["good", "bad"], "label": ["pos", "neg"]}, "train"),
        "pandas": data_file(pd.DataFrame(rows), "train"),
        "dataset": data_file(
            datasets.Dataset.from_dict(
                {"text": ["good", "bad"], "label": [1, 0]},
                features=datasets.Features(
                    {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])}
                ),
            ),
            "train",
        ),
    }
    assert len(set(paths.values())) == 1  # the same rows, the same file: a rerun finds it (and the cache its entries)
    path = Path(paths["list"])
    assert path.parent == cache / "inputs" and path.suffix == ".jsonl"
    assert [json.loads(line) for line in path.read_text().splitlines()] == rows
    assert data_file("data/train.tsv", "train") == "data/train.tsv"  # a path stays a path
    assert not list((cache / "inputs").glob(".*tmp"))  # written to a temporary name, then renamed


@pytest.mark.parametrize(
    "bad,says",
    [
        (
            42,
            "train: expected a file path, a pandas DataFrame, a datasets.Dataset, a list of dicts or a dict of "
            "columns; got int",
        ),
        ([], "train: no rows"),
        (["good"], "train: row 0 is a str; expected a dict of column -> value"),
        ({"text": ["a", "b"], "label": ["x"]}, "train: the columns differ in length (text: 2, label: 1)"),
        ([{"text": "a", "label": object()}], "train: row 0 holds a object; expected text, numbers or lists of them"),
    ],
)
def test_bad_tables_are_one_line_errors(cache: Path, bad, says: str) -> None:
    with pytest.raises(TextDistillError) as err:
        data_file(bad, "train")
    assert str(err.value) == says


def test_a_model_object_is_saved_once_by_its_weights(cache: Path, tiny_bert: str) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2)
    tok = AutoTokenizer.from_pretrained(tiny_bert)
    folder = Path(model_folder(model, tok, "teacher"))
    assert (
        folder.parent == cache / "models"
        and (folder / "config.json").is_file()
        and (folder / "tokenizer.json").is_file()
    )
    stamp = (folder / "config.json").stat().st_mtime_ns
    assert model_folder(model, tok, "teacher") == str(folder) and (folder / "config.json").stat().st_mtime_ns == stamp
    with pytest.raises(TextDistillError, match=r"^teacher: a model object needs its tokenizer \(tokenizer=\.\.\.\)$"):
        model_folder(model, None, "teacher")
    with pytest.raises(
        TextDistillError, match="teacher: expected a transformers model object, a folder or a hub id; got dict"
    ):
        model_folder({"a": 1}, tok, "teacher")


def test_keywords_build_the_config_and_win_over_a_given_one(cache: Path, tmp_path: Path) -> None:
    base = {
        "output_dir": "runs/x",
        "data": {"train_file": "a.tsv", "validation_file": "b.tsv", "max_length": 64},
        "teacher": {"model": "t", "finetune": False},
        "distill": {"temperature": 4.0, "alpha": 0.5},
    }
    cfg = build_config(
        base, validation=[{"text": "x", "label": "y"}], text_column="text", sections={"distill": {"temperature": 2.0}}
    )
    assert cfg["distill"] == {"temperature": 2.0, "alpha": 0.5}  # merged section by section
    assert (
        cfg["data"]["max_length"] == 64
        and cfg["data"]["train_file"] == "a.tsv"
        and cfg["data"]["text_column"] == "text"
    )
    assert Path(cfg["data"]["validation_file"]).parent == cache / "inputs"
    assert base["distill"]["temperature"] == 4.0  # the caller's dict is left as it was
    assert build_config(base) is base  # nothing to change: the config as given
    with pytest.raises(TextDistillError, match="give a config"):
        build_config(None)
    splits = build_config(None, train={"train": [{"text": "a", "label": "x"}], "dev": [{"text": "b", "label": "y"}]})
    assert splits["data"]["validation_file"] != splits["data"]["train_file"] and splits["output_dir"] == "runs/notebook"
    assert splits["teacher"] == {"model": "all-MiniLM-L6-v2", "finetune": True}  # the CLI's zero-config defaults


def test_distill_from_objects_returns_a_result_to_call(
    cache: Path, tiny_bert: str, sst2_dir: Path, tmp_path: Path
) -> None:
    pd = pytest.importorskip("pandas")
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    teacher = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2)
    tok = AutoTokenizer.from_pretrained(tiny_bert)
    train, dev = pd.DataFrame(_rows(sst2_dir, 0, 160)), pd.DataFrame(_rows(sst2_dir, 2000, 48))
    result = textdistill.distill(
        teacher={"model": teacher, "finetune": True, "training": FAST},
        tokenizer=tok,
        train=train,
        validation=dev,
        text_column="review",
        label_column="stars",
        output_dir=tmp_path / "run",
        seed=3,
        data={"max_length": 32},
        student={"layers": [0, 3], "training": FAST},
        distill={"temperature": 2.0, "guard": False, "pretrained_twin": False},
        eval={"latency_repeats": 2, "latency_samples": 8},
    )
    assert isinstance(result, RunResult) and result.output_dir == tmp_path / "run"
    assert result["student"]["metrics"] == result.metrics["student"]  # still the report dict of metrics.json
    assert set(result.metrics) >= {"teacher", "student", "baseline"}
    assert result.student("a gorgeous , witty , seductive movie .") in ("pos", "neg")
    assert len(result.predict(["fine", "awful"])) == 2
    assert result.student_model.config.num_hidden_layers == 2 and result.tokenizer is not None
    page = result._repr_html_()
    assert "<table>" in page and "student" in page and "<script" not in page
    saved = result.save(tmp_path / "mine")
    assert (saved / "config.json").is_file()
    with pytest.raises(TextDistillError, match="already exists"):
        result.save(tmp_path / "mine")
    assert result.predict(["fine", "awful"], model="teacher")[0] in ("pos", "neg")
    said = result.student(["fine", "awful", "so so"])
    assert textdistill.predict(result.output_dir / "student", ["fine", "awful", "so so"]) == said  # a folder
    assert textdistill.predict(result.student_model, "fine", tokenizer=result.tokenizer) == said[0]  # an object
    with pytest.raises(TextDistillError, match="pass the tokenizer"):
        textdistill.predict(result.student_model, "fine")
    scored = textdistill.evaluate(
        result.output_dir / "student", validation=dev, text_column="review", label_column="stars", speed=False
    )
    assert scored["examples"] == 48 and scored["metrics"]["accuracy"] == pytest.approx(
        result["student"]["metrics"]["accuracy"], abs=1e-9
    )
    written = (tmp_path / "run" / "config.yaml").read_text()
    assert str(cache / "models") in written and str(cache / "inputs") in written and "temperature: 2.0" in written


def test_bad_input_through_the_api_is_the_clis_error_before_any_training(
    cache: Path, tiny_bert: str, tmp_path: Path
) -> None:
    rows = [{"text": "good film", "label": "pos"}, {"text": "bad film", "label": "neg"}]
    with pytest.raises(TextDistillError, match="label 'meh' is not among the training labels"):
        textdistill.distill(
            teacher=tiny_bert, train=rows, validation=[{"text": "so so", "label": "meh"}], output_dir=tmp_path / "run"
        )
    assert not (tmp_path / "run").exists() and not (tmp_path / "run.partial").exists()


def test_markdown_report_to_html_escapes_and_keeps_tables() -> None:
    page = markdown_to_html(
        "# Run <x>\n\nThe student kept **98%**.\n\n| model | acc |\n|---|---|\n| **student** | 0.9 |\n"
    )
    assert "<h2>Run &lt;x&gt;</h2>" in page and "<th>model</th>" in page and "<td>student</td><td>0.9</td>" in page


def test_label_from_objects_and_a_list_of_texts(cache: Path, tiny_bert: str, sst2_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    teacher = AutoModelForSequenceClassification.from_pretrained(
        tiny_bert, num_labels=2, id2label={0: "neg", 1: "pos"}, label2id={"neg": 0, "pos": 1}
    )
    rows = _rows(sst2_dir, 0, 40)
    extra = ["an unseen sentence for the teacher", "and another one"]
    info = textdistill.label(
        teacher=teacher,  # an object: taken as the fine-tuned teacher
        tokenizer=AutoTokenizer.from_pretrained(tiny_bert),
        train=rows,
        validation=rows[:8],
        text_column="review",
        label_column="stars",
        unlabeled=extra,
        output=tmp_path / "labelled",
    )
    manifest = json.loads((tmp_path / "labelled" / "manifest.json").read_text())
    assert info["candidates"] == manifest["counts"]["candidates"] == len({r["review"] for r in rows}) + 2
    texts = [json.loads(line)["text"] for line in (tmp_path / "labelled" / "data.jsonl").read_text().splitlines()]
    assert set(extra) <= set(texts)
    with pytest.raises(TextDistillError, match="unlabeled: text 1 holds a line break"):
        build_config(None, train=rows, validation=rows, unlabeled=["one", "two\nlines"])


def test_a_rerun_from_the_same_objects_hits_the_teacher_output_cache(
    cache: Path, tiny_bert: str, sst2_dir: Path, tmp_path: Path
) -> None:
    """In-memory data and a model object become files named by their content: a notebook's second run finds the
    teacher's soft targets in the cache."""
    pd = pytest.importorskip("pandas")
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    teacher = AutoModelForSequenceClassification.from_pretrained(
        tiny_bert, num_labels=2, id2label={0: "neg", 1: "pos"}, label2id={"neg": 0, "pos": 1}
    )
    tok = AutoTokenizer.from_pretrained(tiny_bert)
    reports = []
    for i in range(2):
        train, dev = pd.DataFrame(_rows(sst2_dir, 0, 64)), pd.DataFrame(_rows(sst2_dir, 2000, 16))  # new objects
        reports.append(
            textdistill.distill(
                teacher=teacher,
                tokenizer=tok,
                train=train,
                validation=dev,
                text_column="review",
                label_column="stars",
                output_dir=tmp_path / f"run{i}",
                data={"max_length": 32},
                student={"layers": [0, 3], "training": FAST},
                distill={"baseline": False, "guard": False, "pretrained_twin": False},
                eval={"latency_repeats": 1, "latency_samples": 4},
            )
        )
    assert [r["teacher"]["soft_targets"]["cache"] for r in reports] == ["miss", "hit"]


def test_a_dict_is_columns_or_splits_by_what_it_holds(cache: Path) -> None:
    pd = pytest.importorskip("pandas")
    columns = {"text": ["good", "bad"], "label": ["pos", "neg"]}
    cfg = build_config(None, train=columns, validation=columns)
    assert cfg["data"]["train_file"] == cfg["data"]["validation_file"]  # one table, the same file
    frames = {"train": pd.DataFrame(columns), "validation": pd.DataFrame(columns).iloc[:1]}
    cfg = build_config(None, train=frames)  # splits of DataFrames: no truth value of a frame is ever asked
    assert cfg["data"]["train_file"] != cfg["data"]["validation_file"]
