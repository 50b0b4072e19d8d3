"""Non-transformer students: a BiLSTM (Tang et al. 2019), a TextCNN (Kim 2014) and a bag-of-embeddings MLP.

Each is an HF ``PreTrainedModel`` with its own config, registered with ``AutoConfig`` and
``AutoModelForSequenceClassification`` when this module is imported, so that after ``import textdistill.students``
a saved student loads back with ``AutoModelForSequenceClassification.from_pretrained(folder)``. They take the same
batches as a transformer student (``input_ids``, ``attention_mask``; ``token_type_ids`` is accepted and ignored) and
return a ``SequenceClassifierOutput``, so the one training loop needs no change.

All three share one layout, so a forward-hook feature tap can read any stage by its dotted path:

``embeddings`` (``nn.Embedding``, output ``[B, T, E]``) -> ``embedding_dropout`` -> ``encoder`` (BiLSTM: ``[B, T, 2H]``;
TextCNN: ``[B, T, K*F]``, position ``t`` = the window starting at ``t``; the MLP has none) -> ``pooler`` (masked max
or mean over time, ``[B, D]``: the sentence vector, also returned as ``hidden_states[0]`` with
``output_hidden_states=True``) -> ``classifier`` (dropout, hidden layers with ReLU, linear) -> logits.

Padding never changes a result: every stage masks the positions beyond a sequence's length. Batches are assumed to
be right-padded (as :func:`textdistill.data.pad_features` makes them); ``attention_mask=None`` means no padding.

Tokenizers: a student uses either the teacher's tokenizer (and may start from its word embeddings, see
:func:`init_embeddings_from_teacher`) or its own word vocabulary (:func:`build_word_tokenizer`).
:func:`build_classic_student` makes one from a plain spec dict.
"""

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)
from transformers import initialization as init
from transformers.modeling_outputs import SequenceClassifierOutput

from textdistill.data import PROBLEM_TYPES, LabelSet
from textdistill.errors import TextDistillError
from textdistill.losses import hard_label_loss

POOLINGS = ("max", "mean")
SPEC_KEY = "student.architecture"  # where the spec sits in the run config; error messages name keys under it

# --------------------------------------------------------------------------------------------------------------------
# Shared building blocks


def masked_pool(hidden: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """Pool ``hidden`` ``[B, T, D]`` over time where ``mask`` (``[B, T]`` or ``[B, T, D]``, true = keep) allows.

    ``max``: masked positions never win; ``mean``: average of the kept positions. A row with nothing kept gives 0.
    """
    keep = mask.bool()
    if keep.dim() == 2:
        keep = keep.unsqueeze(-1)
    keep = keep.expand_as(hidden)
    if mode == "max":
        pooled = hidden.masked_fill(~keep, torch.finfo(hidden.dtype).min).amax(dim=1)
        return torch.where(keep.any(dim=1), pooled, torch.zeros_like(pooled))
    if mode == "mean":
        total = hidden.masked_fill(~keep, 0.0).sum(dim=1)
        return total / keep.sum(dim=1).clamp(min=1).to(hidden.dtype)
    raise ValueError(f"pooling must be one of {POOLINGS}, got {mode!r}")


class MaskedPooling(nn.Module):
    """``(hidden [B, T, D], mask) -> [B, D]``: :func:`masked_pool` as a module, so a hook can tap the sentence
    vector."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        if mode not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {mode!r}")
        self.mode = mode

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return masked_pool(hidden, mask, self.mode)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"


def classifier_head(
    in_dim: int, hidden_sizes: list[int] | tuple[int, ...], num_labels: int, dropout: float
) -> nn.Sequential:
    """``dropout -> [linear -> ReLU -> dropout] per hidden size -> linear`` (no hidden sizes: dropout -> linear)."""
    layers: list[nn.Module] = [nn.Dropout(dropout)]
    for size in hidden_sizes:
        layers += [nn.Linear(in_dim, size), nn.ReLU(), nn.Dropout(dropout)]
        in_dim = size
    layers.append(nn.Linear(in_dim, num_labels))
    return nn.Sequential(*layers)


class BiLSTMEncoder(nn.Module):
    """``(embedded [B, T, E], lengths [B]) -> [B, T, 2H]``; packed, so padding is never read (and comes out as 0).

    A batch without padding (always the case at batch 1) skips packing: the result is the same and packing costs
    about a third of a short sentence's latency. Under tracing or compilation the packed path is always taken, so an
    exported graph handles padding."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int, dropout: float) -> None:
        super().__init__()
        self.lstm = nn.LSTM(
            input_size,
            hidden_size,
            num_layers,
            batch_first=True,
            bidirectional=True,
            dropout=dropout if num_layers > 1 else 0.0,
        )

    def forward(self, embedded: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        tracing = torch.jit.is_tracing() or torch.compiler.is_compiling()
        if not tracing and bool((lengths == embedded.shape[1]).all()):
            return self.lstm(embedded)[0]
        packed = pack_padded_sequence(embedded, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=embedded.shape[1])
        return out


class ConvEncoder(nn.Module):
    """Parallel ``Conv1d`` banks with ReLU: ``embedded [B, T, E] -> [B, T, K*F]`` (kernel-size blocks of F channels).

    Position ``t`` of a bank is the window ``[t, t + k)``. The input is zero-padded on the right by the largest
    kernel, so a sequence shorter than a kernel still yields one window (its tokens and zeros); the caller must zero
    padded positions first. Which windows are real is given by :meth:`window_mask`.
    """

    def __init__(self, input_size: int, kernel_sizes: list[int] | tuple[int, ...], num_filters: int) -> None:
        super().__init__()
        self.kernel_sizes = tuple(kernel_sizes)
        self.num_filters = num_filters
        self.convs = nn.ModuleList(nn.Conv1d(input_size, num_filters, k) for k in self.kernel_sizes)

    def forward(self, embedded: torch.Tensor) -> torch.Tensor:
        steps = embedded.shape[1]
        x = F.pad(embedded.transpose(1, 2), (0, max(self.kernel_sizes) - 1))
        maps = [conv(x)[..., :steps] for conv in self.convs]
        return torch.relu(torch.cat(maps, dim=1)).transpose(1, 2)

    def window_mask(self, lengths: torch.Tensor, steps: int) -> torch.Tensor:
        """``[B, T, K*F]`` true where the window lies inside the sequence (always the first one, however short)."""
        positions = torch.arange(steps, device=lengths.device)
        masks = [positions[None, :] <= (lengths - k).clamp(min=0)[:, None] for k in self.kernel_sizes]
        return torch.cat([m.unsqueeze(-1).expand(-1, -1, self.num_filters) for m in masks], dim=-1)


# --------------------------------------------------------------------------------------------------------------------
# Configs


class ClassicStudentConfig(PretrainedConfig):
    """Fields every non-transformer student has. ``num_labels``/``id2label``/``label2id`` come from the base class.

    ``initializer_range`` is the standard deviation of the random word-embedding init (linear and convolution
    weights use Xavier-uniform, LSTM weights Xavier-uniform with zero biases).
    """

    vocab_size: int = 30522
    embedding_dim: int = 300
    pad_token_id: int = 0
    dropout: float | int = 0.1
    initializer_range: float | int = 0.1


class BiLSTMConfig(ClassicStudentConfig):
    """BiLSTM student; ``classifier_hidden_size`` (None: ``hidden_size``) is the width of the head's hidden layer."""

    model_type = "textdistill-bilstm"
    hidden_size: int = 300
    num_layers: int = 1
    pooling: str = "max"
    classifier_hidden_size: int | None = None


class TextCNNConfig(ClassicStudentConfig):
    """TextCNN student: ``num_filters`` channels for each of ``kernel_sizes``."""

    model_type = "textdistill-textcnn"
    kernel_sizes: list[int] | tuple[int, ...] = (3, 4, 5)
    num_filters: int = 100


class MLPConfig(ClassicStudentConfig):
    """Bag-of-embeddings student: masked mean of the word embeddings, then ``hidden_sizes`` ReLU layers."""

    model_type = "textdistill-mlp"
    hidden_sizes: list[int] | tuple[int, ...] = (256,)


# --------------------------------------------------------------------------------------------------------------------
# Models


class ClassicStudent(PreTrainedModel):
    """Base of the three students: the word embeddings, weight init, and ``forward``.

    A subclass builds ``pooler`` and ``classifier`` (and ``encoder`` where it has one), calls ``post_init()`` and
    implements :meth:`sentence_vector`.
    """

    config_class = ClassicStudentConfig
    base_model_prefix = "textdistill"  # no separate base model; a name no weight starts with
    pooler: MaskedPooling
    classifier: nn.Sequential

    def __init__(self, config: ClassicStudentConfig) -> None:
        super().__init__(config)
        self.embeddings = nn.Embedding(config.vocab_size, config.embedding_dim, padding_idx=config.pad_token_id)
        self.embedding_dropout = nn.Dropout(config.dropout)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.embeddings = value

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
            if module.padding_idx is not None and not getattr(module.weight, "_is_hf_initialized", False):
                init.zeros_(module.weight[module.padding_idx])
        elif isinstance(module, (nn.Linear, nn.Conv1d)):
            init.xavier_uniform_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)
        else:
            super()._init_weights(module)  # LSTM: Xavier-uniform weights, zero biases

    def sentence_vector(self, embedded: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``embedded [B, T, E]`` (after dropout) and ``mask [B, T]`` (bool) -> the pooled vector ``[B, D]``."""
        raise NotImplementedError

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        **kwargs: Any,
    ) -> SequenceClassifierOutput:
        """Logits ``[B, num_labels]``; ``loss`` (cross-entropy) when ``labels`` are given; with
        ``output_hidden_states`` the pooled sentence vector as ``hidden_states[0]``. ``token_type_ids`` and other
        keyword arguments (``return_dict``, ...) are accepted and ignored: the output is always an object."""
        mask = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        embedded = self.embedding_dropout(self.embeddings(input_ids))
        pooled = self.sentence_vector(embedded, mask)
        logits = self.classifier(pooled)
        loss = hard_label_loss(logits, labels) if labels is not None else None  # CE, or MSE for regression scores
        if output_hidden_states is None:
            output_hidden_states = bool(self.config.output_hidden_states)
        hidden_states = (pooled,) if output_hidden_states else None
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=hidden_states)


class BiLSTMForSequenceClassification(ClassicStudent):
    """Tang et al. (2019): embeddings -> dropout -> packed BiLSTM -> masked max/mean pooling -> a head with one
    hidden layer."""

    config_class = BiLSTMConfig

    def __init__(self, config: BiLSTMConfig) -> None:
        super().__init__(config)
        self.encoder = BiLSTMEncoder(config.embedding_dim, config.hidden_size, config.num_layers, config.dropout)
        self.pooler = MaskedPooling(config.pooling)
        head_size = config.classifier_hidden_size or config.hidden_size
        self.classifier = classifier_head(2 * config.hidden_size, [head_size], config.num_labels, config.dropout)
        self.post_init()

    def sentence_vector(self, embedded: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.pooler(self.encoder(embedded, mask.sum(dim=1)), mask)


class TextCNNForSequenceClassification(ClassicStudent):
    """Kim (2014): embeddings -> parallel convolutions with ReLU -> masked max over time -> dropout -> linear."""

    config_class = TextCNNConfig

    def __init__(self, config: TextCNNConfig) -> None:
        super().__init__(config)
        self.encoder = ConvEncoder(config.embedding_dim, config.kernel_sizes, config.num_filters)
        self.pooler = MaskedPooling("max")
        features = config.num_filters * len(config.kernel_sizes)
        self.classifier = classifier_head(features, [], config.num_labels, config.dropout)
        self.post_init()

    def sentence_vector(self, embedded: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        embedded = embedded * mask.unsqueeze(-1).to(embedded.dtype)  # padding must look like the encoder's own zeros
        windows = self.encoder.window_mask(mask.sum(dim=1), embedded.shape[1])
        return self.pooler(self.encoder(embedded), windows)


class MLPForSequenceClassification(ClassicStudent):
    """Bag of embeddings: embeddings -> masked mean -> ReLU hidden layers with dropout -> linear."""

    config_class = MLPConfig

    def __init__(self, config: MLPConfig) -> None:
        super().__init__(config)
        self.pooler = MaskedPooling("mean")
        self.classifier = classifier_head(config.embedding_dim, config.hidden_sizes, config.num_labels, config.dropout)
        self.post_init()

    def sentence_vector(self, embedded: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.pooler(embedded, mask)


STUDENT_TYPES: dict[str, tuple[type[ClassicStudentConfig], type[ClassicStudent]]] = {
    "bilstm": (BiLSTMConfig, BiLSTMForSequenceClassification),
    "textcnn": (TextCNNConfig, TextCNNForSequenceClassification),
    "mlp": (MLPConfig, MLPForSequenceClassification),
}


def _register() -> None:
    """Make the Auto classes know the three model types (``exist_ok``: re-importing is harmless)."""
    for config_class, model_class in STUDENT_TYPES.values():
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        AutoModelForSequenceClassification.register(config_class, model_class, exist_ok=True)


_register()

# --------------------------------------------------------------------------------------------------------------------
# Tokenizer and embeddings

WORD_SPECIALS = ("[PAD]", "[UNK]", "[SEP]")  # ids 0, 1, 2


def build_word_tokenizer(
    texts: list[str], vocab_size: int = 30000, min_frequency: int = 1, lowercase: bool = True
) -> PreTrainedTokenizerFast:
    """A word-level tokenizer learnt from ``texts``: the ``vocab_size`` most frequent words (specials included)
    seen at least ``min_frequency`` times; ``[PAD]`` = 0, ``[UNK]`` = 1 (any other word), ``[SEP]`` = 2.

    Text is NFKC-normalised (and lowercased), split on whitespace and punctuation (each punctuation mark a word);
    each CJK character is a word of its own, so on Chinese text the student is character-level.
    A single text gets no special tokens; a pair is ``text [SEP] text_pair`` (token type 1 for the second part, not
    returned by default: the model inputs are ``input_ids`` and ``attention_mask``). Saves with ``save_pretrained``
    and loads back with ``AutoTokenizer.from_pretrained``.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    # BertNormalizer: control characters dropped, and every CJK character its own word (Chinese text has no spaces:
    # a Chinese word-level student is a character-level one); accents are kept
    chinese = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=False, lowercase=lowercase
    )
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), chinese])
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordLevelTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=list(WORD_SPECIALS)
    )
    tok.train_from_iterator(texts, trainer)
    ids = [tok.token_to_id(t) for t in WORD_SPECIALS]
    assert ids == [0, 1, 2], f"special tokens got ids {ids}"
    tok.post_processor = processors.TemplateProcessing(single="$A", pair="$A [SEP] $B:1", special_tokens=[("[SEP]", 2)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="[PAD]",
        unk_token="[UNK]",
        sep_token="[SEP]",
        model_input_names=["input_ids", "attention_mask"],
    )


@torch.no_grad()
def init_embeddings_from_teacher(student: nn.Module, teacher: nn.Module) -> dict[str, Any]:
    """Start the student's word embeddings from the teacher's input embeddings (same tokenizer, same vocabulary).

    Rows are copied as they are when the widths match. When the student is narrower, each row is the teacher's
    centred row projected on the top ``embedding_dim`` principal components of the teacher's embedding matrix
    (exact SVD); when it is wider, the teacher's rows fill the first columns and the rest are zero.
    Returns what was done, for the report. Raises :class:`TextDistillError` when the vocabularies differ in size
    (e.g. the student has its own word vocabulary).
    """
    source = teacher.get_input_embeddings().weight
    target = student.get_input_embeddings().weight
    (t_vocab, t_dim), (s_vocab, s_dim) = source.shape, target.shape
    if t_vocab != s_vocab:
        raise TextDistillError(
            f"{SPEC_KEY}.init_from_teacher: the student's vocabulary ({s_vocab}) is not the teacher's ({t_vocab}); "
            "teacher embeddings need tokenizer: teacher"
        )
    weights = source.detach().to(device="cpu", dtype=torch.float32)
    info: dict[str, Any] = {"source": "teacher input embeddings", "teacher_dim": t_dim, "student_dim": s_dim}
    if s_dim == t_dim:
        new, info["method"] = weights, "copy"
    elif s_dim > t_dim:
        new, info["method"] = F.pad(weights, (0, s_dim - t_dim)), "copy, zero-padded"
    else:
        centred = weights - weights.mean(dim=0, keepdim=True)
        _, singular, vh = torch.linalg.svd(centred, full_matrices=False)
        new = centred @ vh[:s_dim].T
        info["method"] = "pca"
        info["variance_kept"] = float(singular[:s_dim].square().sum() / singular.square().sum())
    target.copy_(new.to(target.dtype))
    return info


# --------------------------------------------------------------------------------------------------------------------
# Builder


def _fail(key: str, message: str) -> TextDistillError:
    return TextDistillError(f"{SPEC_KEY}.{key}: {message}")


def _positive_int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _fail(key, f"expected a positive integer, got {value!r}")
    return value


def _int_list(key: str, value: Any, allow_empty: bool) -> list[int]:
    if not isinstance(value, (list, tuple)) or (not value and not allow_empty):
        raise _fail(key, f"expected a {'' if allow_empty else 'non-empty '}list of positive integers, got {value!r}")
    return [_positive_int(key, v) for v in value]


def _dropout(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise _fail(key, f"expected a number in [0, 1), got {value!r}")
    return float(value)


def _choice(key: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        expected = " or ".join(repr(c) for c in choices)
        raise _fail(key, f"expected {expected}, got {value!r}")
    return value


def _flag(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _fail(key, f"expected true or false, got {value!r}")
    return value


# key -> (default, validator); a validator maps (key, value) to the checked value.
_COMMON_KEYS: dict[str, tuple[Any, Any]] = {
    "embedding_dim": (300, _positive_int),
    "dropout": (0.1, _dropout),
}
_WORD_KEYS: dict[str, tuple[Any, Any]] = {  # only with tokenizer: words
    "vocab_size": (30000, _positive_int),
    "min_frequency": (1, _positive_int),
    "lowercase": (True, _flag),
}
_TYPE_KEYS: dict[str, dict[str, tuple[Any, Any]]] = {
    "bilstm": {
        "hidden_size": (300, _positive_int),
        "num_layers": (1, _positive_int),
        "pooling": ("max", lambda k, v: _choice(k, v, POOLINGS)),
        "classifier_hidden_size": (None, _positive_int),
    },
    "textcnn": {
        "kernel_sizes": ([3, 4, 5], lambda k, v: _int_list(k, v, allow_empty=False)),
        "num_filters": (100, _positive_int),
    },
    "mlp": {
        "hidden_sizes": ([256], lambda k, v: _int_list(k, v, allow_empty=True)),
    },
}


def _check_spec(spec: dict[str, Any]) -> tuple[str, str, bool, dict[str, Any], dict[str, Any]]:
    """Validate ``spec`` -> (type, tokenizer, init_from_teacher, architecture fields, word-tokenizer options).

    A key set to None takes its default; a key of another student type or an unknown key is an error.
    """
    if not isinstance(spec, dict):
        raise TextDistillError(f"{SPEC_KEY}: expected a mapping, got {type(spec).__name__}")
    kind = _choice("type", spec.get("type"), tuple(STUDENT_TYPES))
    tokenizer = spec.get("tokenizer")
    tokenizer = "teacher" if tokenizer is None else _choice("tokenizer", tokenizer, ("teacher", "words"))
    own_keys = {**_COMMON_KEYS, **_TYPE_KEYS[kind]}
    known = {"type", "tokenizer", "init_from_teacher", *own_keys, *_WORD_KEYS}
    for key, value in spec.items():
        if key in known or value is None:
            if key in _WORD_KEYS and value is not None and tokenizer != "words":
                raise _fail(key, "only used with tokenizer: words")
            continue
        other = [name for name, keys in _TYPE_KEYS.items() if key in keys]
        if other:
            raise _fail(key, f"not a setting of type {kind!r} (it belongs to {' and '.join(repr(o) for o in other)})")
        raise _fail(key, f"unknown key; expected one of {sorted(known)}")

    def resolved(keys: dict[str, tuple[Any, Any]]) -> dict[str, Any]:
        out = {}
        for key, (default, check) in keys.items():
            value = spec.get(key)
            out[key] = copy.deepcopy(default) if value is None else check(key, value)
        return out

    init_from_teacher = spec.get("init_from_teacher")
    if init_from_teacher is None:
        init_from_teacher = tokenizer == "teacher"
    init_from_teacher = _flag("init_from_teacher", init_from_teacher)
    if init_from_teacher and tokenizer != "teacher":
        raise _fail("init_from_teacher", "needs tokenizer: teacher (a word vocabulary has no teacher embeddings)")
    return kind, tokenizer, init_from_teacher, resolved(own_keys), resolved(_WORD_KEYS)


def build_classic_student(
    spec: dict[str, Any],
    labels: LabelSet,
    teacher: nn.Module,
    teacher_tokenizer: Any,
    train_texts: list[str],
    seed: int,
) -> tuple[ClassicStudent, Any, dict[str, Any]]:
    """Make the non-transformer student described by ``spec``; returns (model, tokenizer, recipe for the report).

    ``spec`` keys: ``type`` (bilstm, textcnn, mlp); ``tokenizer`` ("teacher", default, or "words": a vocabulary
    learnt from ``train_texts`` with ``vocab_size``, ``min_frequency``, ``lowercase``); ``init_from_teacher``
    (default: true with the teacher's tokenizer); ``embedding_dim``, ``dropout``; per type ``hidden_size``,
    ``num_layers``, ``pooling``, ``classifier_hidden_size`` (bilstm), ``kernel_sizes``, ``num_filters`` (textcnn),
    ``hidden_sizes`` (mlp). Bad keys or values raise :class:`TextDistillError` naming ``student.architecture.<key>``.
    The same spec, data and seed give the same tokenizer and weights.
    """
    from accelerate.utils import set_seed

    kind, tokenizer_kind, init_from_teacher, arch, word_opts = _check_spec(spec)
    if kind == "bilstm" and arch["classifier_hidden_size"] is None:
        arch["classifier_hidden_size"] = arch["hidden_size"]
    if tokenizer_kind == "words":
        tokenizer = build_word_tokenizer(train_texts, **word_opts)
        vocab_size = len(tokenizer)
    else:
        tokenizer = teacher_tokenizer
        vocab_size = teacher.get_input_embeddings().weight.shape[0]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    config_class, model_class = STUDENT_TYPES[kind]
    config = config_class(
        vocab_size=vocab_size,
        pad_token_id=pad_id,
        id2label=labels.id2label,
        label2id=labels.label2id,
        problem_type=PROBLEM_TYPES[labels.task_type],
        **arch,
    )
    set_seed(seed)
    model = model_class(config)
    embedding_init: dict[str, Any] = {"method": "random"}
    if init_from_teacher:
        embedding_init = init_embeddings_from_teacher(model, teacher)
    recipe: dict[str, Any] = {
        "recipe": f"classic {kind}",
        "type": kind,
        "tokenizer": tokenizer_kind,
        "vocab_size": vocab_size,
        "embedding_init": embedding_init,
        "architecture": arch,
    }
    if tokenizer_kind == "words":
        recipe["word_tokenizer"] = word_opts  # as asked; the vocabulary may be smaller (``vocab_size`` above)
    return model, tokenizer, recipe
