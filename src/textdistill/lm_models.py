"""Causal language models for generative distillation: loading a teacher or student (any HF
``AutoModelForCausalLM``), making a student from the teacher's layers or changed config, and reading the LM head
and final hidden states that the chunked token-level losses of :mod:`textdistill.lm_losses` work from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from textdistill.config import GenerativeStudentConfig
from textdistill.errors import TextDistillError
from textdistill.models import (
    _quiet_loading,
    changed_config,
    load_tokenizer,
    loading_kwargs,
    resolve_model_path,
    spread_layers,
    student_from_teacher,
)


def pad_id_of(tokenizer: Any) -> int:
    """The padding id: the tokenizer's pad token, else its EOS (causal LMs often have no pad token), else 0."""
    for token_id in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return int(token_id)
    return 0


def dequantised_gguf(config: Any, path: str) -> bool:
    """A folder of float weights whose config still names the GGUF file they were read from (a SmolLM2 folder
    prepared before the catalogue dropped that note, or one saved by hand): no quantizer is needed to load them."""
    q = getattr(config, "quantization_config", None)
    method = q.get("quant_method") if isinstance(q, dict) else getattr(q, "quant_method", None)
    folder = Path(path)
    return str(method) in ("gguf", "QuantizationMethod.GGUF") and folder.is_dir() and not any(folder.glob("*.gguf"))


def load_causal_lm(name: str, role: str) -> tuple[nn.Module, Any]:
    """An ``AutoModelForCausalLM`` (float32) and its tokenizer from a folder, hub id or catalogue name."""
    from transformers import AutoConfig, AutoModelForCausalLM

    path = resolve_model_path(name, role)
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=loading_kwargs(path, role)["trust_remote_code"])
        if dequantised_gguf(config, path):  # its quantizer would refuse to save the student
            del config.quantization_config
        with _quiet_loading(errors_only=False):
            model = AutoModelForCausalLM.from_pretrained(
                path, config=config, dtype=torch.float32, **loading_kwargs(path, role)
            )
    except (OSError, ValueError, KeyError) as exc:
        raise TextDistillError(
            f"{role}: cannot load {name} as a causal language model: {str(exc).splitlines()[0]}"
        ) from None
    return model, load_tokenizer(path, role)


def causal_student_from_teacher(teacher: nn.Module, layers: list[int]) -> nn.Module:
    """A copy of ``teacher`` keeping only its decoder ``layers`` (in that order), initialised from them.

    ``config.num_hidden_layers`` is set, the kept attention modules' ``layer_idx`` renumbered and
    ``config.layer_types`` (per-layer attention kinds, when the config has them) cut to the kept layers, so the KV
    cache of ``generate`` works; tied input/output embeddings stay tied (one copied tensor)."""
    student = student_from_teacher(teacher, layers)  # deep copy, layer_idx renumbered, num_hidden_layers set
    types = getattr(student.config, "layer_types", None)
    if isinstance(types, (list, tuple)) and len(types) == teacher.config.num_hidden_layers:
        student.config.layer_types = [types[i] for i in layers]
    return student.requires_grad_(True).train()


def causal_student_from_config(teacher: nn.Module, changes: dict[str, Any]) -> nn.Module:
    """A randomly initialised model of the teacher's architecture, its config with ``changes``
    (:func:`textdistill.models.changed_config`). Where the width is the teacher's, the word embeddings (and a tied
    head) start as the teacher's."""
    from transformers import AutoModelForCausalLM

    if "vocab_size" in changes:
        raise TextDistillError(
            "student.config_overrides.vocab_size: the vocabulary is the teacher's tokenizer's; a "
            "student with another vocabulary needs its own tokenizer (student.model)"
        )
    config = changed_config(teacher.config, changes)
    try:
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    except (ValueError, TypeError, RuntimeError) as exc:
        raise TextDistillError(f"student.config_overrides: invalid model config: {str(exc).splitlines()[0]}") from None
    if config.hidden_size == teacher.config.hidden_size:
        with torch.no_grad():
            model.get_input_embeddings().weight.copy_(teacher.get_input_embeddings().weight)
    return model.train()


def build_causal_student(
    cfg: GenerativeStudentConfig, teacher: nn.Module, teacher_tokenizer: Any
) -> tuple[nn.Module, Any, dict[str, Any]]:
    """The student of ``cfg`` (kept teacher layers, the teacher's config changed, or a checkpoint); returns
    (model, tokenizer, recipe)."""
    if cfg.model is not None:
        model, tokenizer = load_causal_lm(cfg.model, "student.model")
        return model.train(), tokenizer, {"recipe": "checkpoint", "model": cfg.model}
    if cfg.config_overrides is not None:
        return (
            causal_student_from_config(teacher, cfg.config_overrides),
            teacher_tokenizer,
            {"recipe": "random init", "config_overrides": cfg.config_overrides},
        )
    layers = cfg.layers or spread_layers(teacher.config.num_hidden_layers, cfg.num_layers or 0)
    return (
        causal_student_from_teacher(teacher, layers),
        teacher_tokenizer,
        {"recipe": "teacher layers", "layers": layers},
    )


def output_head(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The LM head's ``(weight [V, H], bias [V] or None)`` (of the model inside a DDP / compile wrapper)."""
    from accelerate.utils import extract_model_from_parallel

    head = extract_model_from_parallel(model).get_output_embeddings()
    return head.weight, getattr(head, "bias", None)


def final_hidden(model: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """The last hidden states ``[B, L, H]`` (after the final norm: what the LM head reads), through the model's own
    forward (so DDP and autocast see it), with the logits of the last position only (``logits_to_keep=1``)."""
    out = model(
        input_ids=inputs["input_ids"],
        attention_mask=inputs["attention_mask"],
        output_hidden_states=True,
        logits_to_keep=1,
        use_cache=False,
    )
    return out.hidden_states[-1]


@torch.no_grad()
def check_lm_head(model: nn.Module, inputs: dict[str, torch.Tensor], role: str) -> None:
    """Chunked losses apply the LM head as ``hidden @ W.T + b``: check that this gives the model's own logits (not
    so with logit soft-capping or scaling, or a model whose last hidden state is not the head's input)."""
    was = model.training
    model.eval()
    out = model(
        input_ids=inputs["input_ids"],
        attention_mask=inputs["attention_mask"],
        output_hidden_states=True,
        logits_to_keep=1,
        use_cache=False,
    )
    model.train(was)
    weight, bias = output_head(model)
    mine = F.linear(out.hidden_states[-1][:, -1], weight, bias).float()
    theirs = out.logits[:, -1].float()
    if not torch.allclose(mine, theirs, rtol=1e-3, atol=1e-3 * (1.0 + float(theirs.abs().max()))):
        raise TextDistillError(
            f"{role}: the logits of {type(model).__name__} are not its last hidden state times "
            f"its LM head "
            "(logit soft-capping or scaling?); token-level losses computed by chunks do not "
            "cover it"
        )


def vocabulary_mismatch(
    teacher: nn.Module, teacher_tokenizer: Any, student: nn.Module, student_tokenizer: Any
) -> str | None:
    """None when token-level losses apply (the same token -> id map and the same number of logits); else why not."""
    t_rows, s_rows = output_head(teacher)[0].shape[0], output_head(student)[0].shape[0]
    if teacher_tokenizer is not student_tokenizer and teacher_tokenizer.get_vocab() != student_tokenizer.get_vocab():
        return f"teacher: {len(teacher_tokenizer):,} tokens, student: {len(student_tokenizer):,} tokens, other ids"
    if t_rows != s_rows:
        return f"teacher: {t_rows:,} logits, student: {s_rows:,}"
    return None
