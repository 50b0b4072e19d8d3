"""Typed run configuration.

One YAML file describes one run. It is read with ``yaml.safe_load`` (no tags that execute code), validated by
pydantic models that forbid unknown keys, and can be overridden from the command line with dotted ``key=value``
pairs. Relative paths in the file are resolved against the file's folder, so a config works from any working dir.

Training hyper-parameters reuse the names of HF ``TrainingArguments``.
"""

from __future__ import annotations

import codecs
import copy
import math
import os
import reprlib
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from textdistill.errors import TextDistillError

# Where the shared datasets live; ``${TEXTDISTILL_DATA}`` in a path expands to this.
DEFAULT_DATA_DIR = "../shared/data"


class _Strict(BaseModel):
    # Unknown keys are errors; so are NaN and infinite numbers (.nan in YAML), which no setting means.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)
    # the YAML file a run config was read from (None for a dict or objects): an output folder may not replace it
    _config_file: str | None = PrivateAttr(default=None)


class HFDatasetConfig(_Strict):
    """A dataset from the HF ``datasets`` library: a hub name, a loading script/folder, or a ``save_to_disk`` folder."""

    path: str
    name: str | None = None
    train_split: str = "train"
    validation_split: str = "validation"
    test_split: str | None = None  # scored at the end of a distill run (held out: never used to pick a checkpoint)


class DataConfig(_Strict):
    train_file: str | None = None
    validation_file: str | None = None  # scores every evaluation and picks the kept checkpoint
    test_file: str | None = None  # optional held-out split: teacher, student and twin are scored on it once, at the end
    hf_dataset: HFDatasetConfig | None = None
    # auto: from the extension (.tsv/.tab, .csv, .jsonl/.ndjson/.json; .txt, .text, .dat, .data, .label or none: a
    # delimited file, its delimiter detected). Files with a tag per token (token_classification;
    # UTF-8, a byte-order mark is fine) come in two layouts: conll: a token per line (``token ... tag`` columns, blank
    # lines between sentences, -DOCSTART- lines skipped; e.g. CoNLL-2003, Weibo NER's .bmes); token_lines: a sentence
    # per line, its tokens, a TAB, then its tags, tokens and tags each separated by spaces (e.g. Resume NER's
    # .char.bmes); a line with more tokens than tags, or fewer, is an error naming it.
    format: Literal["auto", "tsv", "csv", "jsonl", "conll", "token_lines"] = "auto"
    encoding: str = "utf-8"
    # Whether line 1 names the columns; unset: true when a column is given by name, else detected from the training
    # file (a header names a column as the lists below do, or sits over a column of numbers or of repeating labels;
    # a value of line 1 that recurs below it in its column, or a number in line 1, makes it data).
    has_header: bool | None = None
    # Column names, or 0-based column indices for header-less files. Unset: detected from the training file (the
    # validation and test files must then be laid out alike). A header's names win: "text" and "label" as always,
    # else one of the common names (text: sentence, sentence1, text_a, question, review, content, utterance...;
    # label: labels, category, class, intent, sentiment, target, score...); without such a name the label column is
    # the one whose values repeat (few distinct short values; regression: the one column of numbers) and the text
    # column the longest text. A pair column (text_pair_column) is detected only by its name (sentence2, text_b,
    # question2, hypothesis, or the "2" twin of the text column's "1": "#1 String" and "#2 String"), only when the
    # text column is detected under another name than "text". A guess that is not safe (two candidates) is an error
    # naming the setting to give. What was detected is printed ("data: FILE: ..."), unless it is the old default
    # layout (header, "text", "label", the extension's delimiter).
    text_column: str | Annotated[int, Field(ge=0)] | None = None
    text_pair_column: str | Annotated[int, Field(ge=0)] | None = None
    label_column: str | Annotated[int, Field(ge=0)] | None = None
    # classification: labels are class names; regression: labels are numbers (STS-B), one output, MSE;
    # token_classification: a tag per word (NER; format conll or token_lines); multi_label: each text has a set of
    # labels (sigmoid outputs): a JSON list in JSONL, names joined by ``label_separator`` in TSV/CSV (an empty field:
    # no label).
    task_type: Literal["classification", "regression", "token_classification", "multi_label"] = "classification"
    # token_classification: the files' tagging scheme, and which sub-word pieces of a word carry its tag in training.
    # tag_scheme: iob1 (I- opens an entity; B- only between two of one type), iob2 (B- opens every entity; an I- that
    # continues nothing is an error) or bioes (prefixes B-, I-, M-, E-, S-: BIOES, BMES and BIO with S- for
    # single-token entities; S-X reads as B-X, M-X and E-X as I-X, and a continuation that continues nothing opens an
    # entity). Any scheme is read as IOB2 (entity spans unchanged); a tag with another prefix is an error naming its
    # line. label_alignment: first: a word's first piece with text (past a bare sentencepiece "▁") carries the tag,
    # the others are masked; all: every piece, B- continued as I-. Dev scores always read the first piece.
    tag_scheme: Literal["iob1", "iob2", "bioes"] = "iob2"
    label_alignment: Literal["first", "all"] = "first"
    label_separator: str = Field(",", min_length=1)
    # tsv and csv files: the one character between fields (e.g. ";" or "|"). Unset: with format tsv or csv, a tab or a
    # comma; with format auto, detected per file: the extension's (tab for .tsv, comma for .csv) when it splits line 1,
    # else the one of ",", ";", tab and "|" that splits each of the first 50 rows into as many fields (two that do
    # are an error). Every row has as many fields as the header (or, without a header, as the first row): another
    # count is an error naming the line. tsv fields are never quoted (a quote is text); csv fields may be quoted
    # ("a; b", "say ""hi""").
    delimiter: str | None = None
    # classification, multi_label: label spellings to read as another label, applied to the train, validation and test
    # labels before they are checked, e.g. {Pos: pos, "1.0": "1"}; a label is looked up once (no chains). Labels that
    # differ only in case, invisible characters at their ends or numeric spelling (pos/Pos, 1/1.0) are an error that
    # names both, unless mapped to one spelling here. Surrounding whitespace is always dropped from labels.
    label_map: dict[str, str] | None = None
    max_length: int = Field(128, gt=0, le=8192)
    max_train_samples: int | None = Field(None, gt=0)
    max_eval_samples: int | None = Field(None, gt=0)

    @field_validator("delimiter")
    @classmethod
    def _one_character(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if len(value) != 1:
            raise ValueError(f"must be one character, e.g. ',', ';', '|' or a tab (\"\\t\"), not {len(value)}")
        if value in '"\r\n':
            raise ValueError("a quote or a line break cannot separate fields; e.g. ',', ';', '|' or a tab (\"\\t\")")
        return value

    @field_validator("label_map", mode="before")
    @classmethod
    def _label_names(cls, value: Any) -> Any:
        """Keys and values as label names: YAML numbers (1: pos, 1.0: "1") become their text; whitespace is dropped."""
        if not isinstance(value, dict):
            return value
        out: dict[str, str] = {}
        for key, name in value.items():
            for what, v in (("key", key), ("value", name)):
                if isinstance(v, bool) or not isinstance(v, (str, int, float)):
                    raise ValueError(
                        f"a {what} must be a label name (text or a number), got {type(v).__name__} {str(v)[:40]!r}"
                    )
            key, name = str(key).strip(), str(name).strip()
            if not key or not name:
                raise ValueError(f"an empty label name ({key!r}: {name!r}); map a label spelling to a label")
            if key in out:
                raise ValueError(f"{key!r} is mapped twice")
            out[key] = name
        return out

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown text encoding {value!r} (e.g. utf-8, latin-1, cp1252)") from None
        return value

    @model_validator(mode="after")
    def _one_source(self) -> "DataConfig":
        has_files = self.train_file is not None or self.validation_file is not None
        if self.hf_dataset is not None and has_files:
            raise ValueError("give either train_file/validation_file or hf_dataset, not both")
        if self.hf_dataset is not None and self.test_file is not None:
            raise ValueError("test_file: with hf_dataset, name the split (hf_dataset.test_split)")
        if self.hf_dataset is None and (self.train_file is None or self.validation_file is None):
            raise ValueError("train_file and validation_file are both required (or give hf_dataset)")
        if self.format in ("conll", "token_lines") and self.task_type != "token_classification":
            raise ValueError(f"format: {self.format} files hold a tag per token: set task_type: token_classification")
        if (
            self.task_type == "token_classification"
            and self.hf_dataset is None
            and self.format not in ("conll", "token_lines")
        ):
            raise ValueError(
                "task_type: token_classification reads CoNLL files: set format: conll (a token per "
                "line), or "
                "token_lines (a sentence per line: tokens, a TAB, tags), or give hf_dataset with a tokens "
                "column and a tag-sequence column"
            )
        if self.task_type == "token_classification" and self.text_pair_column is not None:
            raise ValueError("text_pair_column: token_classification tags one sentence, not a pair")
        if self.delimiter is not None and self.format not in ("auto", "tsv", "csv"):
            raise ValueError(f"delimiter: separates the fields of tsv and csv files, not of format: {self.format}")
        if self.label_map is not None and self.task_type not in ("classification", "multi_label"):
            raise ValueError(
                f"label_map: renames classification and multi_label labels, not those of task_type: {self.task_type}"
            )
        return self


TRACKER_PACKAGES = {"tensorboard": ("tensorboard", "tensorboardX"), "mlflow": ("mlflow",), "wandb": ("wandb",)}


FALLBACK_LEARNING_RATE = 1e-4


class TrainingConfig(_Strict):
    """Optimisation settings; names follow HF ``TrainingArguments``."""

    # None: chosen by short trials on dev (textdistill.tuning) in one-task runs; multi-task and generative runs use
    # FALLBACK_LEARNING_RATE where none is given
    learning_rate: float | None = Field(None, gt=0, le=1.0)
    per_device_train_batch_size: int = Field(32, gt=0, le=65536)
    per_device_eval_batch_size: int = Field(128, gt=0, le=65536)
    num_train_epochs: float = Field(3.0, gt=0, le=1000)
    max_steps: int | None = Field(None, gt=0)
    gradient_accumulation_steps: int = Field(1, gt=0, le=4096)
    warmup_ratio: float = Field(0.1, ge=0, le=1)
    weight_decay: float = Field(0.01, ge=0, le=1)
    max_grad_norm: float | None = Field(1.0, gt=0)
    adam_epsilon: float = Field(1e-8, gt=0)
    eval_steps: int | None = Field(None, gt=0, description="evaluate every N optimizer steps; None = every epoch")
    # Stop when this many evaluations in a row are no better than the best one (the best weights are kept), so that
    # num_train_epochs is a cap, not a guess; None: train every step.
    early_stopping_patience: int | None = Field(2, ge=1, le=1000)
    # Stop at the first step after this many minutes of training (the best evaluated weights are kept); None: no cap.
    max_train_minutes: float | None = Field(None, gt=0)
    # Write a checkpoint (model, optimizer, scheduler, random states, position in the data) every N optimizer steps,
    # and after every evaluation; `--resume` continues from the last one. None: after evaluations only.
    save_steps: int | None = Field(None, gt=0)
    # Experiment trackers (through accelerate): each loss term, the learning rate and the eval metrics per step, in
    # logs/tracking/<model>; [] for none. mlflow and wandb must be installed.
    report_to: list[Literal["tensorboard", "mlflow", "wandb"]] = Field(default_factory=lambda: ["tensorboard"])

    @field_validator("report_to")
    @classmethod
    def _trackers_installed(cls, names: list[str]) -> list[str]:
        import importlib.util

        for name in names:
            if not any(importlib.util.find_spec(pkg) for pkg in TRACKER_PACKAGES[name]):
                raise ValueError(
                    f"{name} is not installed; pip install {TRACKER_PACKAGES[name][0]} (or leave it out of report_to)"
                )
        return names

    logging_steps: int = Field(20, gt=0)
    group_by_length: bool = True
    # auto: under `accelerate launch`, the precision it was given (--mixed_precision or accelerate's config; its own
    # default is no); else bf16 on a CUDA GPU that has it, and none on the CPU (bf16 gained little there:
    # docs/RESULTS.md)
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = "auto"
    dataloader_num_workers: int = Field(0, ge=0, le=64)
    # torch.compile the trained model (through accelerate's dynamo plugin); the backend is torch's name for it.
    torch_compile: bool = False
    torch_compile_backend: Literal["inductor", "aot_eager", "eager", "cudagraphs"] = "inductor"
    # inductor's mode: reduce-overhead replays CUDA graphs (for small students whose steps are launch-bound on a GPU)
    torch_compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = "default"
    # On the CPU (not compiled), dropout masks four per 64-bit random number of a fast generator seeded from torch's,
    # instead of torch's one draw per element (textdistill.dropout): the same Bernoulli masks, and a tenth or more off
    # a small student's step. False: torch's dropout.
    fast_dropout: bool = True
    # A sequence classifier whose loss reads only logits (no intermediate losses) computes its last encoder layer for
    # the [CLS] position alone, the rest of that layer being read by nothing (textdistill.first_token): the same
    # logits and gradients, about 40% less arithmetic for a 2-layer student. The loop's online teacher too. False: the
    # full last layer.
    first_token_only: bool = True
    # On the CPU under Linux (glibc), malloc serves blocks up to 1 GiB from its heap and keeps freed ones while the loop
    # runs, its thresholds put back after it (textdistill.cpu_malloc): a large tensor made at every step (a word
    # embedding's dense gradient) then reuses memory instead of faulting in fresh pages. False: malloc as it was.
    reuse_cpu_memory: bool = True

    @model_validator(mode="after")
    def _compile_mode_needs_inductor(self) -> "TrainingConfig":
        if self.torch_compile_mode != "default" and self.torch_compile_backend != "inductor":
            raise ValueError(
                f"torch_compile_mode: {self.torch_compile_mode} is a mode of the inductor backend, not of "
                f"torch_compile_backend: {self.torch_compile_backend}"
            )
        return self


class TeacherTrainingConfig(TrainingConfig):
    """The teacher's training settings: the same keys, with defaults that train it until its dev metric stops
    improving (num_train_epochs a cap of 10, early stopping after 2 evaluations without a better one, at most 60
    minutes), so that the teacher a student learns from is converged, whatever the size of the data."""

    num_train_epochs: float = Field(10.0, gt=0, le=1000)
    max_train_minutes: float | None = Field(60.0, gt=0)


class TeacherConfig(_Strict):
    # A local folder, a hub id, or a catalogue name such as ``all-MiniLM-L6-v2`` (see textdistill.models).
    model: str
    # Fine-tune the model on the task first (``textdistill train``); False = it is already fine-tuned.
    finetune: bool = False
    training: "TeacherTrainingConfig" = Field(default_factory=lambda: TeacherTrainingConfig())


class StudentConfig(_Strict):
    """How to make the student. Exactly one of: ``layers``, ``num_layers``, ``model``, ``config_overrides``,
    ``architecture``."""

    layers: list[int] | None = None  # keep these teacher layers (0-based), initialised from them
    num_layers: int | None = Field(None, gt=0)  # keep this many teacher layers, spread evenly
    model: str | None = None  # any HF checkpoint (folder or hub id); its own tokenizer
    config_overrides: dict[str, Any] | None = None  # teacher's config with these changes, randomly initialised
    # A non-transformer student: {type: bilstm | textcnn | mlp, tokenizer: teacher | words, ...}; its keys are
    # validated by textdistill.students (errors name student.architecture.<key>).
    architecture: dict[str, Any] | None = None
    # Keep only the word pieces the run's text uses (training, validation and test texts, the transfer set): the
    # student's tokenizer and embedding rows are cut to them (textdistill.vocab); segmentation and outputs on that text
    # are unchanged. For a student made from the teacher (layers, num_layers, config_overrides).
    prune_vocabulary: bool = False
    training: TrainingConfig = Field(default_factory=TrainingConfig)

    @model_validator(mode="after")
    def _one_recipe(self) -> "StudentConfig":
        recipes = ("layers", "num_layers", "model", "config_overrides", "architecture")
        given = [k for k in recipes if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(recipes)}" + (f" (got {given})" if given else ""))
        if self.prune_vocabulary and given[0] in ("model", "architecture"):
            raise ValueError(
                f"prune_vocabulary: cuts the teacher's vocabulary for a student made from the teacher "
                f"(layers, num_layers "
                f"or config_overrides); a student.{given[0]} student has a vocabulary of its own"
            )
        if self.layers is not None:
            if not self.layers:
                raise ValueError("layers must not be empty")
            if any(i < 0 for i in self.layers) or len(set(self.layers)) != len(self.layers):
                raise ValueError(f"layers must be distinct non-negative indices, got {self.layers}")
        return self


class Schedule(_Strict):
    """A value that moves from ``start`` to ``end`` over training (``constant`` keeps ``start``)."""

    kind: Literal["constant", "linear", "cosine"] = "linear"
    start: float
    end: float

    def at(self, progress: float) -> float:
        p = min(max(progress, 0.0), 1.0)
        if self.kind == "constant":
            return self.start
        if self.kind == "linear":
            return self.start + (self.end - self.start) * p
        return self.end + (self.start - self.end) * 0.5 * (1 + math.cos(math.pi * p))


Scheduled = float | Schedule


def value_at(value: Scheduled, progress: float) -> float:
    """The value of a constant or a :class:`Schedule` at ``progress`` in [0, 1] of training."""
    return value.at(progress) if isinstance(value, Schedule) else float(value)


_LOSSES_FOR = {"hidden": ("mse", "cosine", "pkd"), "attention": ("kl", "mse"), "module": ("mse", "cosine", "pkd")}


class LayerMatch(_Strict):
    """One intermediate match: a student feature learns the teacher's.

    ``hidden``: layer numbers index HF ``hidden_states`` (0 = embedding output, i = output of block i, -1 = last).
    ``attention``: block numbers 1..N (-1 = last); maps with different head counts are compared head-averaged.
    ``module``: the output of any submodule named by its dotted path (forward hook), e.g. a CNN's ``pool``.
    A learned linear projection maps the student's width to the teacher's when they differ (``projection``).
    """

    feature: Literal["hidden", "attention", "module"] = "hidden"
    teacher_layer: int | None = None
    student_layer: int | None = None
    teacher_module: str | None = None
    student_module: str | None = None
    loss: Literal["mse", "cosine", "pkd", "kl"] = "mse"
    weight: Scheduled = 1.0
    projection: bool = True

    @model_validator(mode="after")
    def _consistent(self) -> "LayerMatch":
        if self.loss not in _LOSSES_FOR[self.feature]:
            raise ValueError(
                f"loss {self.loss!r} does not apply to {self.feature}; use one of {list(_LOSSES_FOR[self.feature])}"
            )
        if self.feature == "module":
            if not self.teacher_module or not self.student_module:
                raise ValueError("feature 'module' needs teacher_module and student_module (dotted module paths)")
        elif self.teacher_layer is None or self.student_layer is None:
            raise ValueError(f"feature {self.feature!r} needs teacher_layer and student_layer")
        return self


class LayerMapConfig(_Strict):
    """Generate the usual layer maps instead of writing each match:

    ``uniform``: student block j <-> teacher block round(j * N / M) (TinyBERT); ``skip``: j <-> j * (N // M) for
    j < M (BERT-PKD skip; the last layer is left to the logits); ``last_k``: the student's blocks <-> the teacher's last
    M blocks; ``last``: last <-> last; ``kept``: each block of a student made from teacher layers <-> its source.
    """

    strategy: Literal["uniform", "skip", "last_k", "last", "kept"] = "uniform"
    feature: Literal["hidden", "attention"] = "hidden"
    loss: Literal["mse", "cosine", "pkd", "kl"] = "mse"
    weight: Scheduled = 1.0
    projection: bool = True
    include_embeddings: bool = False  # also match hidden layer 0 (embedding output), as TinyBERT does

    @model_validator(mode="after")
    def _consistent(self) -> "LayerMapConfig":
        if self.loss not in _LOSSES_FOR[self.feature]:
            raise ValueError(
                f"loss {self.loss!r} does not apply to {self.feature}; use one of {list(_LOSSES_FOR[self.feature])}"
            )
        return self


class MiniLMConfig(_Strict):
    """MiniLM (Wang et al. 2020): the last layer's self-attention distributions (KL) and value relations (KL of
    ``softmax(V V^T / sqrt(d))``). Student width may differ from the teacher's; no projection is needed."""

    attention_weight: Scheduled = 1.0
    value_weight: Scheduled = 1.0
    teacher_layer: int = -1
    student_layer: int = -1
    relation_heads: int | None = Field(None, gt=0)  # default: the teacher's head count


class CacheSettings(_Strict):
    """Where precomputed teacher outputs are kept (textdistill.cache)."""

    # Keep precomputed teacher logits on disk, keyed by the teacher's weights and the exact inputs, and reuse them
    # across epochs and runs (textdistill.cache). cache_dir default: $TEXTDISTILL_CACHE or ~/.cache/textdistill.
    teacher_cache: bool = True
    cache_dir: str | None = None
    cache_dtype: Literal["float32", "float16"] = "float32"
    cache_topk: int | None = Field(None, gt=0)  # keep only the k largest log-probabilities per example


class DistillConfig(CacheSettings):
    """The distillation objective.

    ``loss: kl``  -> alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y)   (Hinton et al. 2015)
    ``loss: mse`` -> alpha * MSE(s, t) + (1 - alpha) * CE(s, y)                                (Tang et al. 2019)
    plus ``sum(weight_i * intermediate_i)`` over the layer matches and MiniLM terms. ``temperature``, ``alpha`` and
    every weight may be a :class:`Schedule`.
    """

    loss: Literal["kl", "mse"] = "kl"
    temperature: Annotated[float, Field(gt=0, le=100)] | Schedule = 2.0
    alpha: Annotated[float, Field(ge=0, le=1)] | Schedule = 0.9
    intermediate: list[LayerMatch] = Field(default_factory=list)
    layer_map: list[LayerMapConfig] = Field(default_factory=list)
    minilm: MiniLMConfig | None = None
    # TinyBERT's two stages from one config: first this many epochs of intermediate losses only, then the student's
    # num_train_epochs of prediction-layer distillation (logits KD + CE).
    intermediate_epochs: float = Field(0.0, ge=0, le=1000)
    # precompute: the teacher labels the training set once before training (exact: no dropout, no augmentation);
    # online: a teacher forward pass for every student batch; auto: precompute unless intermediate features are used.
    teacher_outputs: Literal["auto", "precompute", "online"] = "auto"
    # Token classification: logits = token-level KD on the teacher's per-token distributions (the student must share
    # the teacher's tokenizer); pseudo_labels = sequence-level KD: the teacher tags the training words and the student
    # learns those tags (any tokenizer; the gold tags are not used).
    token_targets: Literal["logits", "pseudo_labels"] = "logits"
    # Also train the same student, same init and budget, on hard labels only, for the report: what the KD loss adds.
    baseline: bool = True
    # And a second twin cut from the teacher's pretrained checkpoint (before fine-tuning), labels only: what the whole
    # teacher adds. auto: when the teacher is fine-tuned here and the student is cut from its layers (same cost as the
    # twin).
    pretrained_twin: Literal["auto", True, False] = "auto"
    # Before distilling, check that the teacher beats what the labels alone give the student (a short labels-only
    # run); a teacher fine-tuned here that does not is trained further once. Classification tasks.
    guard: bool = True

    @model_validator(mode="after")
    def _check(self) -> "DistillConfig":
        t, a = self.temperature, self.alpha
        if isinstance(t, Schedule) and min(t.start, t.end) <= 0:
            raise ValueError(f"temperature schedule must stay above 0, got {t.start} -> {t.end}")
        if isinstance(a, Schedule) and not (0 <= min(a.start, a.end) and max(a.start, a.end) <= 1):
            raise ValueError(f"alpha schedule must stay in [0, 1], got {a.start} -> {a.end}")
        if self.intermediate_epochs and not self.uses_intermediate:
            raise ValueError("intermediate_epochs needs intermediate matches, a layer_map or minilm")
        if self.uses_intermediate and self.teacher_outputs == "precompute":
            raise ValueError("intermediate features need the teacher online: set teacher_outputs to auto or online")
        if self.token_targets == "pseudo_labels" and self.uses_intermediate:
            raise ValueError(
                "token_targets: pseudo_labels trains on the teacher's tags alone; intermediate losses "
                "need token_targets: logits"
            )
        return self

    @property
    def uses_intermediate(self) -> bool:
        return bool(self.intermediate or self.layer_map or self.minilm)

    @property
    def online(self) -> bool:
        return self.teacher_outputs == "online" or (self.teacher_outputs == "auto" and self.uses_intermediate)


CLASSIFICATION_METRICS = ("accuracy", "f1", "macro_f1", "mcc")
REGRESSION_METRICS = ("pearson", "spearman", "corr")
TOKEN_METRICS = ("entity_f1", "entity_precision", "entity_recall", "token_accuracy")
MULTI_LABEL_METRICS = ("micro_f1", "macro_f1", "subset_accuracy")
METRICS_BY_TASK = {
    "classification": CLASSIFICATION_METRICS,
    "regression": REGRESSION_METRICS,
    "token_classification": TOKEN_METRICS,
    "multi_label": MULTI_LABEL_METRICS,
}


def task_metric(data: DataConfig, metric: str | None, key: str) -> str:
    """The metric a task is scored by: ``metric``, checked against the task type, or the type's default (the first
    of :data:`METRICS_BY_TASK`: accuracy, pearson, entity_f1, micro_f1)."""
    allowed = METRICS_BY_TASK[data.task_type]
    if metric is None:
        return allowed[0]
    if metric not in allowed:
        raise ValueError(f"{key}: {metric!r} does not apply to a {data.task_type} task; use one of {list(allowed)}")
    return metric


AnyMetric = Literal[
    "accuracy",
    "f1",
    "macro_f1",
    "mcc",
    "pearson",
    "spearman",
    "corr",
    "entity_f1",
    "entity_precision",
    "entity_recall",
    "token_accuracy",
    "micro_f1",
    "subset_accuracy",
]


class LoadingConfig(_Strict):
    """How models are read. Weights load from safetensors only, unless ``allow_pickle`` (then pickled ``.bin`` / ``.pt``
    files load through ``torch.load(weights_only=True)``: tensors only, never code); code shipped with a model on the
    hub runs only with ``trust_remote_code``."""

    allow_pickle: bool = False
    trust_remote_code: bool = False


class EvalConfig(_Strict):
    # classification: accuracy | f1 (class 1 of two) | macro_f1 | mcc (Matthews); regression: pearson | spearman |
    # corr (their mean, as GLUE reports STS-B); token_classification: entity_f1 | entity_precision | entity_recall
    # (seqeval's entity-level scores) | token_accuracy; multi_label: micro_f1 | macro_f1 | subset_accuracy.
    # None: the task type's first.
    metric: AnyMetric | None = None
    # Also export the student to ONNX (fp32 and int8) and report each form's metric, logit difference and speed.
    export_onnx: bool = False
    latency_repeats: int = Field(20, gt=0, le=10000)
    latency_samples: int = Field(256, gt=0)


class TransferConfig(_Strict):
    """Data distillation: the teacher labels a transfer set and the student learns from it (textdistill.distilled).

    The transfer set is the labelled training examples (``include_train``; gold labels for the hard term), ``variants``
    augmented copies of each (textdistill.augment: ``mask``, ``pos``, ``neighbour``, ``delete`` per word, then
    ``ngram``), and the texts of ``unlabeled_file`` (one per line; a pair as TEXT<TAB>PAIR). The teacher's
    probabilities (temperature 1) are kept for the KD term; ``min_confidence`` / ``max_entropy`` drop unsure texts.
    The dataset is written to ``output`` (default ``<output_dir>.distilled``), resumable and reused by later runs.
    """

    variants: int = Field(0, ge=0, le=1000)
    mask: float = Field(0.1, ge=0, le=1)
    pos: float = Field(0.0, ge=0, le=1)
    neighbour: float = Field(0.0, ge=0, le=1)
    delete: float = Field(0.0, ge=0, le=1)
    ngram: float = Field(0.25, ge=0, le=1)
    ngram_max: int = Field(5, ge=1, le=100)
    neighbours_k: int = Field(10, ge=1, le=1000)
    pos_model: str = "en_core_web_sm"
    unlabeled_file: str | None = None
    # lines: one text per line (TEXT<TAB>PAIR for pairs); data: a .tsv/.csv/.jsonl file read like data.train_file
    # (same settings and detection), its text column(s) only, labels ignored
    unlabeled_format: Literal["lines", "data"] = "lines"
    max_unlabeled: int | None = Field(None, gt=0)  # at most this many of its texts (after those in the training set)
    include_train: bool = True
    # More fine-tuned teachers (folders, hub ids) that label with the run's teacher, as an ensemble fused by
    # ``fusion`` (mean_probs | mean_logits | confidence); ``min_agreement``: the fraction of them that must agree.
    extra_teachers: list[str] = Field(default_factory=list)
    fusion: Literal["mean_probs", "mean_logits", "confidence"] = "mean_probs"
    min_agreement: float | None = Field(None, ge=0, le=1)
    min_confidence: float | None = Field(None, ge=0, le=1)
    max_entropy: float | None = Field(None, ge=0)
    topk: int | None = Field(None, gt=0)
    shard_size: int = Field(2048, gt=0)
    output: str | None = None

    @model_validator(mode="after")
    def _something(self) -> "TransferConfig":
        if not (self.variants or self.unlabeled_file or self.include_train):
            raise ValueError("the transfer set is empty: set variants, unlabeled_file or include_train")
        if self.min_agreement is not None and not self.extra_teachers:
            raise ValueError("min_agreement: agreement needs several teachers (extra_teachers)")
        return self


class RunConfig(_Strict):
    output_dir: str = "runs/default"
    overwrite_output_dir: bool = False
    seed: int = Field(42, ge=0, lt=2**32)  # numpy's seeds are 0 .. 2**32 - 1
    data: DataConfig
    teacher: TeacherConfig | None = None  # required by train and distill, not by evaluate
    student: StudentConfig | None = None
    distill: DistillConfig = Field(default_factory=DistillConfig)
    transfer: TransferConfig | None = None  # data distillation: train the student on a teacher-labelled transfer set
    eval: EvalConfig = Field(default_factory=EvalConfig)
    loading: LoadingConfig = Field(default_factory=LoadingConfig)

    @model_validator(mode="after")
    def _metric_fits_the_task(self) -> "RunConfig":
        self.eval.metric = task_metric(self.data, self.eval.metric, "eval.metric")
        if self.distill.pretrained_twin is True and not (
            self.teacher is not None
            and self.teacher.finetune
            and self.student is not None
            and (self.student.layers is not None or self.student.num_layers is not None)
            and self.distill.baseline
        ):
            raise ValueError(
                "distill.pretrained_twin: needs the twin (distill.baseline), a teacher fine-tuned here "
                "(teacher.finetune: true) and a student cut from its layers (student.layers or "
                "num_layers)"
            )
        t = self.transfer
        if t is not None and self.data.task_type == "token_classification":
            extra = [
                k
                for k in ("variants", "extra_teachers", "min_agreement", "min_confidence", "max_entropy", "topk")
                if getattr(t, k)
            ]
            if extra or not t.unlabeled_file:
                raise ValueError(
                    "transfer: for token_classification the teacher tags the sentences of "
                    "unlabeled_file (words split "
                    f"on whitespace); {', '.join(extra) or 'unlabeled_file missing'}: not for token tasks"
                )
        elif t is not None and self.data.task_type != "classification":
            raise ValueError(
                f"transfer: data distillation labels classes; a {self.data.task_type} task is not supported yet"
            )
        if self.distill.token_targets == "pseudo_labels" and self.data.task_type != "token_classification":
            raise ValueError("distill.token_targets: pseudo_labels applies to token_classification tasks")
        if self.data.task_type == "token_classification":
            if self.student is not None and self.student.architecture is not None:
                raise ValueError(
                    "student.architecture: token_classification students are transformers (layers, "
                    "num_layers, "
                    "model or config_overrides); BiLSTM / TextCNN / MLP taggers are not built"
                )
            if self.eval.export_onnx:
                raise ValueError(
                    "eval.export_onnx: ONNX export covers sentence classifiers; not a token_classification task"
                )
        return self

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


# --------------------------------------------------------------------------------------------------------------------
# Task distillation: several tasks (each with one or more teachers) -> one multi-task student


class TaskConfig(_Strict):
    """One task of a multi-task run: its data, its teachers (an ensemble when several) and how they are fused.

    ``fusion`` (textdistill.ensemble): mean_probs | mean_logits | weighted (``teacher_weights``) | dev_score (weights
    from each teacher's dev score) | confidence (per example); ``objective``: KL to the fused target (``fused``) or
    the weighted mean of the per-teacher KLs (``mean_kl``). A regression task fuses the teachers' scores by their
    (weighted) mean.
    """

    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_-]*$", max_length=64)
    data: DataConfig
    teachers: list[TeacherConfig]
    fusion: Literal["mean_probs", "mean_logits", "weighted", "dev_score", "confidence"] = "mean_probs"
    objective: Literal["fused", "mean_kl"] = "fused"
    teacher_weights: list[Annotated[float, Field(ge=0)]] | None = None
    metric: AnyMetric | None = None  # default: accuracy, or pearson for regression

    @model_validator(mode="after")
    def _check(self) -> "TaskConfig":
        if self.data.task_type in ("token_classification", "multi_label"):
            raise ValueError(
                f"task {self.name!r}: multi-task students have sentence classification and regression "
                f"heads; "
                f"a {self.data.task_type} task runs on its own (data:, teacher:)"
            )
        if not self.teachers:
            raise ValueError(f"task {self.name!r} has no teachers; give at least one (teachers: [{{model: ...}}])")
        if self.fusion == "weighted":
            if self.teacher_weights is None or len(self.teacher_weights) != len(self.teachers):
                raise ValueError(
                    f"task {self.name!r}: fusion 'weighted' needs teacher_weights, one per teacher "
                    f"({len(self.teachers)})"
                )
            if sum(self.teacher_weights) <= 0:
                raise ValueError(f"task {self.name!r}: teacher_weights must have a positive sum")
        elif self.teacher_weights is not None:
            raise ValueError(
                f"task {self.name!r}: teacher_weights apply to fusion 'weighted' only (fusion is {self.fusion!r})"
            )
        if self.data.task_type == "regression" and self.fusion in ("confidence", "mean_logits"):
            raise ValueError(
                f"task {self.name!r}: fusion {self.fusion!r} needs class probabilities; a regression "
                f"task fuses "
                "scores with mean_probs (the mean), weighted or dev_score"
            )
        if self.data.task_type == "regression" and self.objective == "mean_kl":
            raise ValueError(
                f"task {self.name!r}: objective 'mean_kl' needs class probabilities; a regression task "
                f"learns the fused score"
            )
        metric = task_metric(self.data, self.metric, f"task {self.name!r}: metric")
        if metric != self.metric:  # (assignment validates the model again)
            self.metric = metric
        return self


class MultiTaskDistillConfig(CacheSettings):
    """``alpha * soft + (1 - alpha) * hard`` per task, on one-task batches drawn by ``sampling``.

    ``sampling``: proportional (to the tasks' sizes), size_power (size^tau; tau < 1 flattens toward uniform),
    round_robin. ``anneal``: teacher annealing (BAM!), the target moves from the fused teachers to the gold label.
    """

    temperature: float = Field(2.0, gt=0, le=100)
    alpha: float = Field(0.9, ge=0, le=1)
    anneal: bool = False
    sampling: Literal["proportional", "size_power", "round_robin"] = "proportional"
    tau: float = Field(1.0, ge=0, le=10)
    baseline: bool = True  # also train the same student on the gold labels only, for the report


class MultiTaskRunConfig(_Strict):
    """Task distillation (``tasks:``) and teacher ensembles (a task with several teachers): one student, a head per
    task. The student's encoder is made by ``student`` (layers / num_layers / config_overrides / model) from
    ``student_from`` (a model folder, hub id or catalogue name; default: the first task's first teacher)."""

    output_dir: str = "runs/multitask"
    overwrite_output_dir: bool = False
    seed: int = Field(42, ge=0, lt=2**32)  # numpy's seeds are 0 .. 2**32 - 1
    tasks: list[TaskConfig]
    student_from: str | None = None
    student: StudentConfig
    distill: MultiTaskDistillConfig = Field(default_factory=MultiTaskDistillConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    loading: LoadingConfig = Field(default_factory=LoadingConfig)

    @model_validator(mode="after")
    def _check(self) -> "MultiTaskRunConfig":
        if not self.tasks:
            raise ValueError("tasks: give at least one task")
        names = [t.name for t in self.tasks]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"tasks: two tasks are named {twice[0]!r}; task names must be unique")
        if self.student.architecture is not None:
            raise ValueError(
                "student.architecture: a multi-task student is a transformer encoder; use layers, "
                "num_layers, "
                "config_overrides or model"
            )
        if self.eval.metric is not None:
            raise ValueError("eval.metric: a multi-task run scores each task by its own metric (tasks[i].metric)")
        if self.student.prune_vocabulary:
            raise ValueError("student.prune_vocabulary: not available for multi-task students yet (one-task runs only)")
        return self

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


# --------------------------------------------------------------------------------------------------------------------
# Generative distillation: a causal-LM teacher into a smaller causal student (textdistill.generative)


class GenerativeDataConfig(_Strict):
    """JSONL files, one example per line: ``{"prompt": ..., "completion": ...}`` (the loss reads the completion's
    tokens only) or ``{"text": ...}`` (all of it is completion: plain language-model distillation)."""

    train_file: str
    validation_file: str  # held-out perplexity, agreement with the teacher; picks the kept checkpoint
    max_length: int = Field(256, gt=1, le=32768)  # prompt + completion tokens; longer rows are cut (one warning)
    max_train_samples: int | None = Field(None, gt=0)
    max_eval_samples: int | None = Field(None, gt=0)


class GenerativeTeacherConfig(_Strict):
    model: str  # any AutoModelForCausalLM: a folder, a hub id or a catalogue name (SmolLM2-135M-Instruct)


class GenerativeStudentConfig(_Strict):
    """Exactly one of ``layers`` / ``num_layers`` (the teacher's decoder layers kept, initialised from them; the
    teacher's tokenizer), ``config_overrides`` (the teacher's config with these fields changed, e.g. ``{hidden_size:
    384, num_hidden_layers: 8}``: a smaller model of the teacher's architecture, randomly initialised, the teacher's
    tokenizer; its embeddings are the teacher's where the widths match) or ``model`` (any AutoModelForCausalLM with
    its own tokenizer)."""

    layers: list[int] | None = None
    num_layers: int | None = Field(None, gt=0)
    config_overrides: dict[str, Any] | None = None
    model: str | None = None
    training: TrainingConfig = Field(
        default_factory=lambda: TrainingConfig(
            learning_rate=1e-4, num_train_epochs=1, per_device_train_batch_size=8, per_device_eval_batch_size=16
        )
    )

    @model_validator(mode="after")
    def _one_recipe(self) -> "GenerativeStudentConfig":
        given = [k for k in ("layers", "num_layers", "config_overrides", "model") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of layers, num_layers, config_overrides, model" + (f" (got {given})" if given else "")
            )
        if self.config_overrides is not None and not self.config_overrides:
            raise ValueError(
                "config_overrides: give the fields of the teacher's config to change, e.g. {num_hidden_layers: 8}"
            )
        if self.layers is not None and (
            not self.layers or any(i < 0 for i in self.layers) or len(set(self.layers)) != len(self.layers)
        ):
            raise ValueError(f"layers must be distinct non-negative indices, got {self.layers}")
        return self


TokenDivergence = Literal["forward_kl", "reverse_kl", "jsd", "skew_kl", "skew_reverse_kl", "tv"]


class GenerativeCacheConfig(_Strict):
    """``generative.teacher_cache``: the teacher's ``top_k`` next-token log-probabilities on every completion token of
    the training set, computed once and kept in the teacher-output cache (``dir``; default $TEXTDISTILL_CACHE or
    ~/.cache/textdistill, then ``teacher-outputs``); training then runs without the teacher (textdistill.lm_cache).
    ``top_k * 4`` bytes per token (uint16 ids, float16 log-probabilities) for vocabularies up to 65,536 tokens."""

    top_k: int = Field(64, ge=1, le=4096)
    dir: str | None = None


class GenerativeDistillConfig(_Strict):
    """The ``generative:`` section (its presence makes a run generative).

    ``loss = alpha * D_T(teacher || student) + (1 - alpha) * CE(completion tokens)``, ``D_T`` a token-level
    divergence of :mod:`textdistill.lm_losses` (T^2-scaled) over the completion tokens. ``beta``: the mixture weight
    of ``jsd`` (GKD's generalised JSD); ``skew_alpha``: that of ``skew_kl`` / ``skew_reverse_kl`` (DistiLLM).
    ``sequence_kd``: the teacher completes every training prompt once before training (``sampling``: greedy, or
    sampled with the run's seed; at most ``max_new_tokens``) and the student learns those completions instead of the
    file's. ``on_policy``: GKD's lambda, the share of batches whose completions are the student's own samples
    (as long as the batch's completions), scored by the teacher. ``teacher_cache``: the teacher's top-k targets
    computed once and cached (forward_kl only; see :class:`GenerativeCacheConfig`); without it the teacher runs
    alongside the student at every step.
    """

    divergence: TokenDivergence = "forward_kl"
    temperature: float = Field(1.0, gt=0, le=100)
    alpha: float = Field(0.5, ge=0, le=1)
    beta: float = Field(0.5, gt=0, lt=1)
    skew_alpha: float = Field(0.1, ge=0, lt=1)
    chunk_size: int = Field(1024, gt=0)  # positions per LM-head chunk: [B, L, V] logits are never all in memory
    sequence_kd: bool = False
    sampling: Literal["greedy", "sample"] = "greedy"
    on_policy: float = Field(0.0, ge=0, le=1)
    max_new_tokens: int = Field(64, gt=0, le=8192)
    teacher_cache: GenerativeCacheConfig | None = None

    @model_validator(mode="after")
    def _cache_fits(self) -> "GenerativeDistillConfig":
        if self.teacher_cache is None:
            return self
        if self.divergence != "forward_kl":
            raise ValueError(
                f"teacher_cache keeps the teacher's top-k tokens, from which only forward_kl can be "
                f"computed; "
                f"got divergence {self.divergence!r} (drop teacher_cache to run the teacher online)"
            )
        if self.on_policy > 0:
            raise ValueError(
                "teacher_cache holds the teacher's targets for the training set; on_policy samples are "
                "new "
                "text the teacher must score online (set on_policy: 0 or drop teacher_cache)"
            )
        return self


class GenerativeEvalConfig(_Strict):
    """Generation speed: greedy, batch 1, ``speed_new_tokens`` new tokens after each of the first ``speed_prompts``
    validation prompts; the median of ``speed_repeats`` passes."""

    speed_prompts: int = Field(8, gt=0, le=10000)
    speed_new_tokens: int = Field(32, gt=0, le=8192)
    speed_repeats: int = Field(3, gt=0, le=1000)


class GenerativeRunConfig(_Strict):
    """A generative run (``generative:`` at the top level): a causal-LM teacher distilled into a causal student, and
    (``baseline``) the same student trained with the LM loss alone on the same tokens and budget."""

    output_dir: str = "runs/generative"
    overwrite_output_dir: bool = False
    seed: int = Field(42, ge=0, lt=2**32)
    data: GenerativeDataConfig
    teacher: GenerativeTeacherConfig
    student: GenerativeStudentConfig
    generative: GenerativeDistillConfig = Field(default_factory=GenerativeDistillConfig)
    baseline: bool = True
    eval: GenerativeEvalConfig = Field(default_factory=GenerativeEvalConfig)
    loading: LoadingConfig = Field(default_factory=LoadingConfig)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


AnyRunConfig = RunConfig | MultiTaskRunConfig | GenerativeRunConfig


# --------------------------------------------------------------------------------------------------------------------
# Loading

_PATH_KEYS = (
    ("data", "train_file"),
    ("data", "validation_file"),
    ("data", "test_file"),
    ("transfer", "unlabeled_file"),
)  # output_dir stays relative to the working dir
_MODEL_KEYS = (("teacher", "model"), ("student", "model"))


def data_dir() -> str:
    """The shared-datasets folder: ``$TEXTDISTILL_DATA``, else ``../shared/data`` from the working directory or from
    the project checkout this package runs from."""
    if os.environ.get("TEXTDISTILL_DATA"):
        return os.path.abspath(os.path.expanduser(os.environ["TEXTDISTILL_DATA"]))
    candidates = [Path.cwd() / DEFAULT_DATA_DIR, Path(__file__).resolve().parents[2] / DEFAULT_DATA_DIR]
    for c in candidates:
        if c.is_dir():
            return os.path.normpath(c)
    return os.path.normpath(candidates[0])


def _expand(value: str) -> str:
    if "${TEXTDISTILL_DATA}" in value:
        value = value.replace("${TEXTDISTILL_DATA}", data_dir())
    return os.path.expanduser(value)


def _path_nodes(raw: dict) -> list[tuple[dict, str, bool]]:
    """Every (mapping, key, is_model) of a raw config that holds a path: a run's, and each task's and teacher's."""
    out: list[tuple[dict, str, bool]] = []

    def visit(root: Any, keys: tuple[tuple[str, str], ...], is_model: bool) -> None:
        for section, key in keys:
            node = root.get(section) if isinstance(root, dict) else None
            if isinstance(node, dict) and isinstance(node.get(key), str):
                out.append((node, key, is_model))

    visit(raw, _PATH_KEYS, False)
    visit(raw, _MODEL_KEYS, True)
    if isinstance(raw.get("student_from"), str):
        out.append((raw, "student_from", True))
    tasks = raw.get("tasks")
    for task in tasks if isinstance(tasks, list) else []:  # any other value is reported by validation
        if isinstance(task, dict):
            visit(task, _PATH_KEYS, False)
            teachers = task.get("teachers")
            for teacher in teachers if isinstance(teachers, list) else []:
                if isinstance(teacher, dict) and isinstance(teacher.get("model"), str):
                    out.append((teacher, "model", True))
    return out


def _resolve_relative(raw: dict, base: Path) -> None:
    """Make file paths relative to the config file's folder; model strings only when such a path exists."""
    for node, key, is_model in _path_nodes(raw):
        value = _expand(node[key])
        if not os.path.isabs(value):
            candidate = base / value
            if not is_model or os.path.exists(candidate):  # (os.path: False for a name too long to be a path)
                value = os.path.normpath(candidate)
        node[key] = value


class _YAMLProblem(Exception):
    """Why a YAML text could not be read, on one line; ``where`` is ``LINE:`` when the parser knows the line."""

    def __init__(self, message: str, line: int | None) -> None:
        super().__init__(" ".join(message.split()))
        self.where = f"{line}:" if line is not None else ""


class _SafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` (no tags that build Python objects) whose constructors fail as YAML errors with a line:
    PyYAML's own raise ValueError, KeyError, IndexError, AttributeError... for scalars such as ``2024-13-45``,
    ``0x_``, ``!!int`` (empty), ``!!int abc`` or ``!!bool x``."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except yaml.YAMLError:
            raise
        except Exception as exc:  # noqa: BLE001 (whatever a constructor raises, the scalar is not valid YAML)
            value = f"{node.value!r} " if isinstance(node, yaml.ScalarNode) else ""
            kind = node.tag.rsplit(":", 1)[-1]
            raise yaml.constructor.ConstructorError(
                None, None, f"{value}is not a valid {kind} ({exc})", node.start_mark
            ) from None

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        """A mapping; a key given twice is an error at its second line (PyYAML keeps the last one silently, so a
        setting written twice would be half ignored)."""
        seen: dict[tuple[str, str], int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                continue
            key = (key_node.tag, key_node.value)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key {key_node.value!r} given twice (first on line {seen[key] + 1})",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


MAX_CONFIG_VALUES = 100_000  # a config holds hundreds; a "billion laughs" document, aliases of aliases, billions


def _expanded_size(value: Any, limit: int) -> int:
    """How many values ``value`` holds once every alias is expanded, counted without expanding (each shared node's
    size is computed once); stops counting past ``limit``."""
    sizes: dict[int, int] = {}

    def size(v: Any) -> int:
        if not isinstance(v, (dict, list)):
            return 1
        if id(v) in sizes:
            return sizes[id(v)]
        sizes[id(v)] = limit + 1  # a node met again while being counted: a cycle, never a config
        items = [x for kv in v.items() for x in kv] if isinstance(v, dict) else v
        total = 1
        for x in items:
            total += size(x)
            if total > limit:
                break
        sizes[id(v)] = min(total, limit + 1)
        return sizes[id(v)]

    return size(value)


def _safe_load(text: str) -> Any:
    """``yaml.safe_load`` with every way it fails as a :class:`_YAMLProblem`; a document whose aliases expand to more
    than :data:`MAX_CONFIG_VALUES` values is refused before anything walks it (PyYAML shares aliased nodes, so it
    loads small, but validating or printing it would expand it)."""
    try:
        out = yaml.load(text, Loader=_SafeLoader)  # a SafeLoader: no tags that build Python objects
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise _YAMLProblem(
            str(getattr(exc, "problem", None) or exc), mark.line + 1 if mark is not None else None
        ) from None
    except RecursionError:
        raise _YAMLProblem("nested too deeply", None) from None
    try:
        too_big = _expanded_size(out, MAX_CONFIG_VALUES) > MAX_CONFIG_VALUES
    except RecursionError:
        raise _YAMLProblem("nested too deeply", None) from None
    if too_big:
        raise _YAMLProblem(
            f"its aliases expand to more than {MAX_CONFIG_VALUES:,} values (aliases of aliases, or a "
            f"value "
            "that contains itself); "
            "write the values out",
            None,
        )
    return out


SMOKE_EXAMPLES = 64


def smoke_config(raw: dict[str, Any]) -> dict[str, Any]:
    """The config of a smoke run: every step of ``raw``'s run on a few batches (the data cut to a few examples, each
    model trained 2 steps, short timings), into ``<output_dir>-smoke``, so that a config is checked end to end in a
    minute and never replaces the real run. Works on any run kind: each section is changed where it appears."""
    out = copy.deepcopy(raw)
    speed = (
        {"speed_prompts": 2, "speed_new_tokens": 4, "speed_repeats": 1}
        if "generative" in out
        else {"latency_repeats": 1, "latency_samples": 8}
    )

    def visit(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                visit(item)
        if not isinstance(node, dict):
            return
        for key, value in node.items():
            if key == "data" and isinstance(value, dict):
                for k in ("max_train_samples", "max_eval_samples"):
                    value[k] = min(value.get(k) or SMOKE_EXAMPLES, SMOKE_EXAMPLES)
            elif key == "training" and isinstance(value, dict):
                value.update(max_steps=2, eval_steps=None, save_steps=None)
            elif key == "eval" and isinstance(value, dict):
                value.update(speed)
            elif key == "transfer" and isinstance(value, dict):
                value.update(max_unlabeled=SMOKE_EXAMPLES, variants=min(int(value.get("variants") or 0), 1))
            visit(value)

    visit(out)
    if "eval" not in out:
        out["eval"] = dict(speed)
    out["output_dir"] = f"{out.get('output_dir') or RunConfig.model_fields['output_dir'].default}-smoke"
    out["overwrite_output_dir"] = True  # the last smoke run's folder (a run folder: nothing else is ever replaced)
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """``training.learning_rate=3e-5`` -> (["training", "learning_rate"], "3e-5"); values are parsed as YAML.

    Numbers YAML 1.1 leaves as strings (``3e-5``) are converted by the typed config when it is validated.
    """
    if "=" not in text:
        raise TextDistillError(f"override {text!r}: expected KEY=VALUE, e.g. student.training.num_train_epochs=2")
    key, value = text.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise TextDistillError(f"override {text!r}: empty key")
    try:
        parsed = _safe_load(value) if value.strip() else None
    except _YAMLProblem as exc:
        raise TextDistillError(f"override {text!r}: value is not valid YAML ({exc})") from None
    return parts, parsed


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    raw = copy.deepcopy(raw)
    for text in overrides:
        parts, value = parse_override(text)
        node: Any = raw
        for p, nxt_key in zip(parts[:-1], parts[1:]):
            key = _list_index(node, p, text)
            nxt = node[key] if isinstance(node, list) else node.get(key)
            if nxt is None:
                nxt = node[key] = {}
            if not isinstance(nxt, (dict, list)):
                raise TextDistillError(f"override {text!r}: {p!r} is not a section")
            node = nxt
        node[_list_index(node, parts[-1], text)] = value
    return raw


def _list_index(node: Any, part: str, text: str) -> Any:
    """A key into a mapping, or an index into a list (``tasks.1.data.max_train_samples=100``)."""
    if not isinstance(node, list):
        return part
    if not part.lstrip("-").isdigit() or not -len(node) <= int(part) < len(node):
        raise TextDistillError(f"override {text!r}: {part!r} is not an index of a list of {len(node)}")
    return int(part)


def _is_type_tag(part: Any) -> bool:
    """pydantic names the branch of a union in the error location (``float``, ``Schedule``, ``constrained-float``)."""
    return isinstance(part, str) and (
        part[:1].isupper() or part in {"float", "int", "str", "bool"} or "[" in part or "-" in part
    )


_SHORT = reprlib.Repr()  # a value shown in a message: cut at every level, so a huge value costs no time to show
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxstring, _SHORT.maxother = 2, 4, 4, 60, 60


def _format_validation_error(source: str, exc: ValidationError) -> str:
    problems = []
    by_loc: dict[str, list[Any]] = {}
    for err in exc.errors():
        # a value that may take several types (a number or a schedule) reports once per type: report it once
        parts = [
            p if isinstance(p, str) and p.isprintable() and p.strip() else str(p) if isinstance(p, int) else repr(p)
            for p in err["loc"]
            if not _is_type_tag(p)
        ]  # (a key such as "\n" shown quoted: one line)
        by_loc.setdefault(".".join(parts) or "(top level)", []).append(err)
    for loc, errs in by_loc.items():
        # of a union's errors, a broken constraint (a column index below 0) says more than "not a string"
        err = next((e for e in errs if not e["type"].endswith("_type")), errs[0])
        if err["type"] == "extra_forbidden":
            problems.append(f"{loc}: unknown key")
        elif err["type"] == "missing":
            problems.append(f"{loc}: required key is missing")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            shown = _SHORT.repr(err.get("input")) if not isinstance(err.get("input"), dict) else ""  # bounded work
            shown = shown if len(shown) <= 80 else shown[:77] + "..."
            problems.append(f"{loc}: {msg}" + (f" (got {shown})" if shown else ""))
    return f"{source}: invalid config: " + "; ".join(problems)


def config_from_dict(raw: Any, source: str = "<config>") -> AnyRunConfig:
    """A :class:`RunConfig`, a :class:`MultiTaskRunConfig` when the mapping has ``tasks``, a
    :class:`GenerativeRunConfig` when it has ``generative``."""
    if not isinstance(raw, dict):
        raise TextDistillError(f"{source}: expected a mapping of keys at the top level, got {type(raw).__name__}")
    if _expanded_size(raw, MAX_CONFIG_VALUES) > MAX_CONFIG_VALUES:  # a dict from Python may share its parts too
        raise TextDistillError(
            f"{source}: the config holds more than {MAX_CONFIG_VALUES:,} values (shared parts "
            f"counted "
            "each time they appear, or a value that contains itself)"
        )
    kind = GenerativeRunConfig if "generative" in raw else MultiTaskRunConfig if "tasks" in raw else RunConfig
    try:
        return kind.model_validate(raw)
    except ValidationError as exc:
        raise TextDistillError(_format_validation_error(source, exc)) from None


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> AnyRunConfig:
    """Read a YAML config (or start from ``{}`` when path is None), apply ``key=value`` overrides, validate."""
    raw: Any = {}
    base = Path.cwd()
    source = "<overrides>"
    if path is not None:
        p = Path(path)
        source = str(p)
        if not os.path.isfile(p):  # (os.path: False for a name the OS rejects, where Path.is_file raises)
            raise TextDistillError(f"{p}: config file not found")
        try:
            raw = _safe_load(p.read_text(encoding="utf-8"))
        except OSError as exc:  # no permission, an I/O error
            raise TextDistillError(f"{p}: cannot read the config file ({exc.strerror or exc})") from None
        except UnicodeDecodeError as exc:
            raise TextDistillError(f"{p}: config is not valid UTF-8 (byte {exc.start})") from None
        except _YAMLProblem as exc:
            raise TextDistillError(f"{p}:{exc.where} not valid YAML: {exc}") from None
        if raw is None:
            raise TextDistillError(f"{p}: config file is empty")
        if not isinstance(raw, dict):
            raise TextDistillError(f"{p}: expected a mapping of keys at the top level, got {type(raw).__name__}")
        base = p.resolve().parent
    raw = apply_overrides(raw, overrides or [])
    _resolve_relative(raw, base)
    cfg = config_from_dict(raw, source)
    cfg._config_file = None if path is None else os.path.abspath(path)
    return cfg
