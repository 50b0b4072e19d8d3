"""The Python front door: :func:`distill`, :func:`train_teacher` and :func:`evaluate` with objects or files.

Beside a config (a YAML path, a dict or a config object) they take what a notebook holds: a teacher or student as a
model object with its tokenizer, or a folder / hub id / catalogue name; data as a pandas DataFrame, a
``datasets.Dataset`` (or a ``DatasetDict`` with its splits), a list of dicts, a dict of columns, or a file path; and
any config section as a keyword (``distill={"temperature": 2.0}``, ``student={"num_layers": 3}``)::

    import textdistill
    result = textdistill.distill(teacher=model, tokenizer=tok, train=df_train, validation=df_dev, text_column="review")
    result.student("a fine film")  # or result.student_model, result.tokenizer, result.report, result.save("out/")

In-memory data is written once to a file named by its content hash under textdistill's cache (``inputs/``), and a
model object is saved once to a folder named by its weights' hash (``models/``): the run folder's config names
them, so a rerun in a notebook finds the same files (and the teacher-output cache its entries) and ``--resume``
works as for files. Every check of the CLI runs before any training and fails with the same one-line
:class:`~textdistill.errors.TextDistillError`.
"""

from __future__ import annotations

import copy
import hashlib
import html
import json
import os
import shutil
from pathlib import Path
from typing import Any, Mapping

from textdistill.errors import TextDistillError

SPLITS = ("train", "validation", "test")
FILE_KEYS = {"train": "train_file", "validation": "validation_file", "test": "test_file"}


# --------------------------------------------------------------------------------------------------------------------
# Objects -> files


def cache_root() -> Path:
    """textdistill's cache folder (``TEXTDISTILL_CACHE``, default ``~/.cache/textdistill``)."""
    from textdistill.cache import default_cache_dir

    return default_cache_dir().parent


def _rows(data: Any, where: str) -> list[dict[str, Any]]:
    """The rows of an in-memory table: a pandas DataFrame, a ``datasets.Dataset``, a list of dicts, a dict of
    columns."""
    if hasattr(data, "to_dict") and hasattr(data, "columns") and hasattr(data, "iloc"):  # pandas, without importing it
        rows = data.to_dict(orient="records")
    elif hasattr(data, "features") and hasattr(data, "to_list"):  # datasets.Dataset: class labels become their names
        return _named_labels(data, where)
    elif isinstance(data, Mapping):
        columns = {k: list(v) for k, v in data.items()}
        lengths = {len(v) for v in columns.values()}
        if len(lengths) > 1:
            raise TextDistillError(
                f"{where}: the columns differ in length ({', '.join(f'{k}: {len(v)}' for k, v in columns.items())})"
            )
        rows = [dict(zip(columns, values)) for values in zip(*columns.values())]
    elif isinstance(data, (list, tuple)):
        rows = list(data)
        for i, row in enumerate(rows):
            if not isinstance(row, Mapping):
                raise TextDistillError(
                    f"{where}: row {i} is a {type(row).__name__}; expected a dict of column -> value"
                )
    else:
        raise TextDistillError(
            f"{where}: expected a file path, a pandas DataFrame, a datasets.Dataset, a list of "
            f"dicts or a "
            f"dict of columns; got {type(data).__name__}"
        )
    if not rows:
        raise TextDistillError(f"{where}: no rows")
    return [{str(k): _plain(v, where, i) for k, v in row.items()} for i, row in enumerate(rows)]


def _named_labels(ds: Any, where: str) -> list[dict[str, Any]]:
    """A ``datasets.Dataset``'s rows, its ClassLabel columns as label names (as a saved dataset is read)."""
    from datasets import ClassLabel

    rows = ds.to_list()
    if not rows:
        raise TextDistillError(f"{where}: no rows")
    for name, feature in ds.features.items():
        if isinstance(feature, ClassLabel):
            for row in rows:
                if row[name] is not None and row[name] >= 0:
                    row[name] = feature.int2str(row[name])
    return [{str(k): _plain(v, where, i) for k, v in row.items()} for i, row in enumerate(rows)]


def _plain(value: Any, where: str, row: int) -> Any:
    """A JSON value: numpy scalars and NaN (pandas' missing value) as Python's."""
    if hasattr(value, "item") and not isinstance(value, (list, dict, str)):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v, where, row) for v in value]
    raise TextDistillError(
        f"{where}: row {row} holds a {type(value).__name__}; expected text, numbers or lists of them"
    )


def _write_once(folder: Path, name: str, write: Any) -> Path:
    """``folder/name``, written by ``write(tmp_path)`` unless it exists (written to a temporary name, then renamed)."""
    path = folder / name
    if path.exists():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{name}.{os.getpid()}.tmp"
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()
    return path


def data_file(data: Any, where: str) -> str:
    """A file path for ``data``: a path as it is; an in-memory table as ``<cache>/inputs/<sha256>.jsonl``."""
    if isinstance(data, (str, os.PathLike)):
        return os.fspath(data)
    text = "".join(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n" for row in _rows(data, where))
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]
    return str(_write_once(cache_root() / "inputs", f"{digest}.jsonl", lambda p: p.write_text(text, encoding="utf-8")))


def unlabeled_file(texts: Any, where: str = "unlabeled") -> tuple[str, str | None]:
    """(a file, its transfer.unlabeled_format) for text the teacher labels: a path as it is (format as configured);
    a list of strings as ``<cache>/inputs/<sha256>.txt``, a line each; a table as a data file (``data``: its text
    column is read)."""
    if isinstance(texts, (str, os.PathLike)):
        return os.fspath(texts), None
    if isinstance(texts, (list, tuple)) and texts and all(isinstance(t, str) for t in texts):
        for i, text in enumerate(texts):
            if "\n" in text or "\r" in text:
                raise TextDistillError(f"{where}: text {i} holds a line break; one text is one line of the file")
        body = "".join(t + "\n" for t in texts)
        digest = hashlib.sha256(body.encode("utf-8")).hexdigest()[:32]
        path = _write_once(cache_root() / "inputs", f"{digest}.txt", lambda p: p.write_text(body, encoding="utf-8"))
        return str(path), "lines"
    return data_file(texts, where), "data"


def model_folder(model: Any, tokenizer: Any, where: str) -> str:
    """A folder, hub id or catalogue name for ``model``: a string as it is; a model object saved with ``tokenizer`` to
    ``<cache>/models/<sha256 of its weights>/``."""
    if isinstance(model, (str, os.PathLike)):
        return os.fspath(model)
    from torch import nn

    if not isinstance(model, nn.Module) or not hasattr(model, "save_pretrained"):
        raise TextDistillError(
            f"{where}: expected a transformers model object, a folder or a hub id; got {type(model).__name__}"
        )
    if tokenizer is None:
        raise TextDistillError(f"{where}: a model object needs its tokenizer (tokenizer=...)")
    from textdistill.cache import fingerprint_model
    from textdistill.models import save_model

    digest = fingerprint_model(model)[:32]
    return str(_write_once(cache_root() / "models", digest, lambda p: save_model(model, tokenizer, p)))


# --------------------------------------------------------------------------------------------------------------------
# Keywords -> config


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``extra`` merged in, section by section (a nested dict merges; anything else replaces)."""
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(dict(value)) if isinstance(value, Mapping) else value
    return out


def _is_splits(data: Any) -> bool:
    """A ``DatasetDict``, or a dict whose values are tables (not a dict of columns, whose values are lists of
    values)."""
    if data is None or isinstance(data, (str, os.PathLike, list, tuple)) or not hasattr(data, "keys"):
        return False
    if hasattr(data, "columns") and hasattr(data, "iloc"):  # a DataFrame
        return False
    values = list(data.values())
    if not values:
        return False
    for value in values:
        if isinstance(value, (list, tuple)):
            if not value or not isinstance(value[0], Mapping):
                return False  # a column of values
        elif not (hasattr(value, "columns") or hasattr(value, "features") or isinstance(value, Mapping)):
            return False
    return True


def _splits_of(data: Any) -> dict[str, Any]:
    """A ``DatasetDict`` (or a dict of splits) given as ``train``: its train / validation / test splits."""
    names = {"train": ("train",), "validation": ("validation", "dev", "valid", "val"), "test": ("test",)}
    out = {}
    for split, spellings in names.items():
        found = next((s for s in spellings if s in data), None)
        if found is not None:
            out[split] = data[found]
    return out


def build_config(
    config: Any = None,
    *,
    teacher: Any = None,
    tokenizer: Any = None,
    student: Any = None,
    student_tokenizer: Any = None,
    train: Any = None,
    validation: Any = None,
    test: Any = None,
    text_column: str | int | None = None,
    text_pair_column: str | int | None = None,
    label_column: str | int | None = None,
    output_dir: str | os.PathLike | None = None,
    finetune_teacher: bool | None = None,
    unlabeled: Any = None,
    sections: Mapping[str, Any] | None = None,
) -> Any:
    """The run config (a dict, or ``config`` as given when no keyword changes it) that these arguments describe."""
    given = any(
        v is not None
        for v in (
            teacher,
            student,
            train,
            validation,
            test,
            text_column,
            text_pair_column,
            label_column,
            output_dir,
            finetune_teacher,
            unlabeled,
        )
    ) or bool(sections)
    if not given:
        if config is None:
            raise TextDistillError(
                "give a config (a YAML path, a dict or a config object), or train= and validation= (and teacher=)"
            )
        return config
    if config is None:
        base: dict[str, Any] = {"student": {"num_layers": 2}}
    elif isinstance(config, Mapping):
        base = copy.deepcopy(dict(config))
    else:
        from textdistill.config import load_config

        loaded = config if hasattr(config, "model_dump") else load_config(config)
        base = loaded.model_dump(mode="json", exclude_unset=True)
    if _is_splits(train):
        splits = _splits_of(train)
        if "train" not in splits:
            raise TextDistillError(f"train: a dict of splits needs a 'train' split; it has {sorted(train.keys())}")
        train = splits["train"]
        validation = validation if validation is not None else splits.get("validation")
        test = test if test is not None else splits.get("test")
    data = dict(base.get("data") or {})
    for split, value in (("train", train), ("validation", validation), ("test", test)):
        if value is not None:
            data[FILE_KEYS[split]] = data_file(value, split)
    for key, value in (
        ("text_column", text_column),
        ("text_pair_column", text_pair_column),
        ("label_column", label_column),
    ):
        if value is not None:
            data[key] = value
    base["data"] = data
    if teacher is not None:  # a model (object or name), or the teacher section with such a model
        section = dict(base.get("teacher") or {})
        given = dict(teacher) if isinstance(teacher, Mapping) else {"model": teacher}
        if "model" in given:
            model = given["model"]
            given["model"] = model_folder(model, tokenizer, "teacher.model")
            # a name is a pretrained encoder to fine-tune (as the CLI's --teacher); an object, the user's trained model
            given.setdefault("finetune", isinstance(model, (str, os.PathLike)))
        base["teacher"] = _merge(section, given)
    elif "teacher" not in base:
        base["teacher"] = {"model": "all-MiniLM-L6-v2", "finetune": True}
    if finetune_teacher is not None:
        base["teacher"]["finetune"] = finetune_teacher
    if student is not None:  # a model (object or name), or the student section (its model may be an object)
        given = dict(student) if isinstance(student, Mapping) else {"model": student}
        if "model" in given:
            given["model"] = model_folder(given["model"], student_tokenizer or tokenizer, "student.model")
        base["student"] = given
    if unlabeled is not None:  # text for the teacher to label (data distillation)
        path, fmt = unlabeled_file(unlabeled)
        transfer = dict(base.get("transfer") or {})
        transfer["unlabeled_file"] = path
        if fmt is not None:
            transfer["unlabeled_format"] = fmt
        base["transfer"] = transfer
    if output_dir is not None:
        base["output_dir"] = os.fspath(output_dir)
    elif "output_dir" not in base:
        base["output_dir"] = _default_output(data.get("train_file"))
    return _merge(base, sections or {})


def _default_output(train_file: str | None) -> str:
    if train_file is None:
        return "runs/run"
    path = Path(train_file)
    if path.parent.name == "inputs" and path.parent.parent == cache_root():
        return "runs/notebook"
    stem = path.resolve().parent.name if path.stem in ("train", "training") else path.stem
    return f"runs/{stem or 'run'}"


# --------------------------------------------------------------------------------------------------------------------
# The result


class RunResult(dict):
    """A run's report (the same dict as ``metrics.json``, so ``result["student"]["metrics"]`` works as before), with
    the trained student ready to call, the run folder, and its report as a table in a notebook."""

    @property
    def output_dir(self) -> Path:
        return Path(self["output_dir"])

    @property
    def metric(self) -> str | None:
        return self.get("metric")

    @property
    def metrics(self) -> dict[str, Any]:
        """Each model's dev metrics (teacher, student, twin, ...)."""
        return {k: v["metrics"] for k, v in self.items() if isinstance(v, dict) and isinstance(v.get("metrics"), dict)}

    @property
    def html_path(self) -> Path | None:
        path = self.output_dir / "report.html"
        return path if path.is_file() else None

    @property
    def report(self) -> str:
        """``report.md``: the headline and the table of the CLI."""
        path = self.output_dir / "report.md"
        return path.read_text(encoding="utf-8") if path.is_file() else ""

    def _loaded(self, name: str) -> tuple[Any, Any]:
        cache = self.__dict__.setdefault("_models", {})
        if name not in cache:
            from textdistill.multitask import load_for_prediction

            folder = self.output_dir / name
            if not (folder / "config.json").is_file():
                raise TextDistillError(f"{folder}: this run saved no {name} model")
            model, tokenizer = load_for_prediction(str(folder))
            cache[name] = (model.eval(), tokenizer)
        return cache[name]

    @property
    def student_model(self) -> Any:
        return self._loaded("student")[0]

    @property
    def tokenizer(self) -> Any:
        return self._loaded("student")[1]

    def student(self, texts: str | list[str], pairs: str | list[str] | None = None, task: str | None = None) -> Any:  # type: ignore[override]
        """The student's predictions for one text or a list (as :func:`predict`)."""
        return self.predict(texts, pairs, model="student", task=task)

    def predict(
        self,
        texts: str | list[str],
        pairs: str | list[str] | None = None,
        model: str = "student",
        task: str | None = None,
    ) -> Any:
        """Predictions of the run's ``model`` (student, teacher, baseline) for one text or a list."""
        net, tokenizer = self._loaded(model)
        return predict(net, texts, pairs, task=task, tokenizer=tokenizer)

    def save(self, folder: str | os.PathLike) -> Path:
        """Copy the student (an HF model folder, with its tokenizer) to ``folder``."""
        source, target = self.output_dir / "student", Path(folder)
        if target.exists():
            raise TextDistillError(f"save: {target} already exists; choose another folder")
        shutil.copytree(source, target)
        return target

    def __repr__(self) -> str:
        lines = [line for line in self.report.splitlines() if line.strip()]
        return "\n".join(lines[:12]) if lines else f"RunResult({self.get('output_dir')})"

    def _repr_html_(self) -> str:
        """The report's headline and first table, as HTML (a notebook shows it as the cell's output)."""
        return markdown_to_html(self.report)


def markdown_to_html(text: str) -> str:
    """The headline paragraph and the tables of a report.md as plain HTML (no dependency, escaped)."""
    out, table = [], []

    def flush() -> None:
        if table:
            rows = [
                [html.escape(c.strip().strip("*")) for c in row.strip().strip("|").split("|")]
                for row in table
                if not set(row.replace("|", "").strip()) <= {"-", ":", " "}
            ]
            head, body = rows[0], rows[1:]
            out.append(
                "<table><thead><tr>"
                + "".join(f"<th>{c}</th>" for c in head)
                + "</tr></thead><tbody>"
                + "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in body)
                + "</tbody></table>"
            )
            table.clear()

    for line in text.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        flush()
        if line.startswith("#"):
            level = min(len(line) - len(line.lstrip("#")) + 1, 4)
            out.append(f"<h{level}>{html.escape(line.lstrip('#').strip())}</h{level}>")
        elif line.strip():
            out.append(f"<p>{html.escape(line.strip())}</p>")
    flush()
    return "<div class='textdistill-report'>" + "\n".join(out) + "</div>"


# --------------------------------------------------------------------------------------------------------------------
# The commands


def distill(
    config: Any = None,
    overrides: list[str] | None = None,
    *,
    resume: bool = False,
    smoke: bool = False,
    teacher: Any = None,
    tokenizer: Any = None,
    student: Any = None,
    student_tokenizer: Any = None,
    train: Any = None,
    validation: Any = None,
    test: Any = None,
    text_column: str | int | None = None,
    text_pair_column: str | int | None = None,
    label_column: str | int | None = None,
    output_dir: str | os.PathLike | None = None,
    finetune_teacher: bool | None = None,
    unlabeled: Any = None,
    **sections: Any,
) -> RunResult:
    """Distil a student (``textdistill distill``) from a config, from objects and keywords, or both (keywords win).
    ``sections``: any config section or key (``distill={"temperature": 2.0}``, ``seed=1``). ``unlabeled``: text for
    the teacher to label (data distillation): a file, a list of strings or a table. Returns a :class:`RunResult`."""
    from textdistill import pipeline

    cfg = build_config(
        config,
        teacher=teacher,
        tokenizer=tokenizer,
        student=student,
        student_tokenizer=student_tokenizer,
        train=train,
        validation=validation,
        test=test,
        text_column=text_column,
        text_pair_column=text_pair_column,
        label_column=label_column,
        output_dir=output_dir,
        finetune_teacher=finetune_teacher,
        unlabeled=unlabeled,
        sections=sections,
    )
    return RunResult(pipeline.distill(cfg, overrides, resume=resume, smoke=smoke))


def train_teacher(
    config: Any = None,
    overrides: list[str] | None = None,
    *,
    resume: bool = False,
    smoke: bool = False,
    teacher: Any = None,
    tokenizer: Any = None,
    train: Any = None,
    validation: Any = None,
    test: Any = None,
    text_column: str | int | None = None,
    text_pair_column: str | int | None = None,
    label_column: str | int | None = None,
    output_dir: str | os.PathLike | None = None,
    **sections: Any,
) -> RunResult:
    """Fine-tune the teacher (``textdistill train``) from a config, objects and keywords; returns a
    :class:`RunResult`."""
    from textdistill import pipeline

    cfg = build_config(
        config,
        teacher=teacher,
        tokenizer=tokenizer,
        train=train,
        validation=validation,
        test=test,
        text_column=text_column,
        text_pair_column=text_pair_column,
        label_column=label_column,
        output_dir=output_dir,
        sections=sections,
    )
    return RunResult(pipeline.train_teacher(cfg, overrides, resume=resume, smoke=smoke))


def evaluate(
    model: Any,
    config: Any = None,
    overrides: list[str] | None = None,
    *,
    tokenizer: Any = None,
    validation: Any = None,
    test: Any = None,
    split: str = "validation",
    speed: bool = True,
    text_column: str | int | None = None,
    text_pair_column: str | int | None = None,
    label_column: str | int | None = None,
    **sections: Any,
) -> dict[str, Any]:
    """Score a saved model or a model object on a split (``textdistill evaluate``)."""
    from textdistill import pipeline

    folder = model_folder(model, tokenizer, "model")
    train = None
    if config is None:  # the validation data stands in for the training file, which evaluate does not read
        train = validation if validation is not None else test
    cfg = build_config(
        config,
        teacher=folder if config is None else None,
        train=train,
        validation=validation,
        test=test,
        text_column=text_column,
        text_pair_column=text_pair_column,
        label_column=label_column,
        sections=sections,
    )
    return pipeline.evaluate(folder, cfg, overrides, speed=speed, split=split)


def predict(
    model: Any,
    texts: str | list[str],
    pairs: str | list[str] | None = None,
    *,
    task: str | None = None,
    tokenizer: Any = None,
    max_length: int = 128,
) -> Any:
    """Label names (classification), scores (regression), lists of names (multi-label) or entity spans (NER) for one
    text or a list (``textdistill predict``). ``model``: a saved folder, or a model object with ``tokenizer``; a
    multi-task student takes ``task``."""
    from textdistill.multitask import predict as predict_all

    one = isinstance(texts, str)
    batch = [texts] if one else list(texts)
    second = None if pairs is None else ([pairs] if isinstance(pairs, str) else list(pairs))
    try:
        out = predict_all(
            model if not isinstance(model, os.PathLike) else os.fspath(model),
            task,
            batch,
            second,
            tokenizer=tokenizer,
            max_length=max_length,
        )
    except ValueError as exc:  # a missing tokenizer, texts and pairs of different lengths
        raise TextDistillError(str(exc)) from None
    return out[0] if one else out


def label(
    config: Any = None,
    output: str | os.PathLike | None = None,
    overrides: list[str] | None = None,
    *,
    teacher: Any = None,
    tokenizer: Any = None,
    train: Any = None,
    validation: Any = None,
    unlabeled: Any = None,
    text_column: str | int | None = None,
    text_pair_column: str | int | None = None,
    label_column: str | int | None = None,
    **sections: Any,
) -> dict[str, Any]:
    """The fine-tuned ``teacher`` labels the transfer set (the training texts, augmented variants, ``unlabeled``
    text) into a distilled dataset folder at ``output`` (``textdistill label``); returns its manifest."""
    from textdistill import pipeline

    cfg = build_config(
        config,
        teacher=teacher,
        tokenizer=tokenizer,
        train=train,
        validation=validation,
        text_column=text_column,
        text_pair_column=text_pair_column,
        label_column=label_column,
        finetune_teacher=False if teacher is not None and not isinstance(teacher, Mapping) else None,
        unlabeled=unlabeled,
        sections=sections,
    )
    return pipeline.label(cfg, os.fspath(output) if output is not None else None, overrides)
