"""Generative distillation: a causal-LM teacher into a smaller causal student (any HF ``AutoModelForCausalLM``).

* **Data** (:func:`read_lm_jsonl`, :func:`tokenize_lm`): JSONL rows ``{"prompt", "completion"}`` or ``{"text"}``
  (all completion), tokenized as ``prompt (with the tokenizer's special prefix, e.g. BOS) + completion + EOS``; the
  labels are ``-100`` on the prompt and the padding, so every loss reads the completion's tokens only.
* **Student** (:func:`causal_student_from_teacher`, :func:`build_causal_student`): the teacher's decoder layers kept
  (initialised from them, tied embeddings kept, KV-cache indices renumbered), or any causal LM checkpoint. Token-level
  losses need the teacher's vocabulary (:func:`check_token_level`); sequence-level KD works with any.
* **Objective** for the one training loop (:class:`GenerativeObjective`): ``alpha * D_T + (1 - alpha) * CE`` over the
  completion tokens, ``D_T`` a divergence of :mod:`textdistill.lm_losses` computed by ``chunked_token_loss`` from the
  final hidden states and LM heads (the ``[B, L, V]`` logits are never materialised; the CE too, as the forward KL
  to a one-hot target: :func:`lm_loss`). With ``on_policy`` = GKD's lambda, that share of batches has its completions
  replaced by the student's own samples, scored by the teacher. With ``generative.teacher_cache`` the teacher's top-k
  targets come with each batch from the teacher-output cache (:mod:`textdistill.lm_cache`) and the teacher does not
  run while training. Sequence-level KD (:func:`teacher_completions`): the teacher completes every training prompt
  once, before training.
* **Evaluation**: held-out perplexity (:func:`perplexity`), agreement with the teacher's greedy next token
  (:func:`next_token_agreement`), divergence to the teacher (:func:`divergence_to_teacher`), generation speed
  (:func:`generation_speed`), parameters; :func:`distill_generative` runs it all and writes the run folder.
"""

from __future__ import annotations

import functools
import math
import statistics
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from textdistill.config import GenerativeDistillConfig, GenerativeRunConfig
from textdistill.data import Collator, DistillDataset, collate_labels, json_lines, ordered_batches, pad_features
from textdistill.errors import TextDistillError
from textdistill.files import bad_byte, read_bytes
from textdistill.lm_losses import IGNORE_INDEX, chunked_token_loss, completion_mask
from textdistill.lm_models import (
    build_causal_student,
    check_lm_head,
    final_hidden,
    load_causal_lm,
    output_head,
    pad_id_of,
    vocabulary_mismatch,
)
from textdistill.outdir import releases_locks

# --------------------------------------------------------------------------------------------------------------------
# Data


@dataclass
class LMData:
    """Examples of a JSONL file: ``prompts[i]`` ("" for a text row) and ``completions[i]``; ``rows[i]`` is the line
    in ``source``. ``ends[i]`` False: the completion was cut (by a generation limit), so no EOS follows it."""

    prompts: list[str]
    completions: list[str]
    rows: list[int]
    source: str
    ends: list[bool] | None = None

    def __len__(self) -> int:
        return len(self.completions)

    def head(self, n: int | None) -> "LMData":
        if n is None or n >= len(self):
            return self
        return LMData(
            self.prompts[:n], self.completions[:n], self.rows[:n], self.source, self.ends[:n] if self.ends else None
        )

    def text_rows(self) -> list[int]:
        """The lines of the rows without a prompt."""
        return [r for p, r in zip(self.prompts, self.rows) if not p]


def _row(obj: Any, where: str) -> tuple[str, str]:
    """(prompt, completion) of one parsed JSONL row; a row of another shape is an error naming ``where``."""
    if not isinstance(obj, dict):
        raise TextDistillError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    if "text" in obj and ("prompt" in obj or "completion" in obj):
        raise TextDistillError(
            f"{where}: a row has either 'text' or 'prompt' + 'completion', not both; keys are {sorted(obj)}"
        )
    keys = ("text",) if "text" in obj else ("prompt", "completion")
    if keys == ("prompt", "completion") and not ("prompt" in obj or "completion" in obj):
        raise TextDistillError(
            f"{where}: expected {{'prompt': ..., 'completion': ...}} or {{'text': ...}}; keys are {sorted(obj)}"
        )
    for key in keys:
        if key not in obj:
            raise TextDistillError(f"{where}: missing key {key!r}; keys are {sorted(obj)}")
        if not isinstance(obj[key], str):
            raise TextDistillError(f"{where}: {key!r} must be a string, got {type(obj[key]).__name__}")
    completion = obj[keys[-1]]
    if not completion.strip():
        raise TextDistillError(f"{where}: empty {keys[-1]!r}")
    return ("" if keys == ("text",) else obj["prompt"]), completion


def read_lm_jsonl(path: str | Path, limit: int | None = None) -> LMData:
    """The rows of a JSONL file (UTF-8, a byte-order mark is fine; blank lines skipped), at most ``limit``; a bad
    row is an error naming ``file:line``."""
    raw = read_bytes(path)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line, byte = bad_byte(raw, exc)
        raise TextDistillError(f"{path}:{line}: text is not valid UTF-8 (byte {byte})") from None
    prompts, completions, rows = [], [], []
    for line_no, obj in json_lines(path, text):
        if limit is not None and len(rows) >= limit:
            break
        prompt, completion = _row(obj, f"{path}:{line_no}")
        prompts.append(prompt)
        completions.append(completion)
        rows.append(line_no)
    if not rows:
        raise TextDistillError(f"{path}: no examples (empty file)")
    return LMData(prompts, completions, rows, str(path))


def fit_length(prompt: list[int], completion: list[int], max_length: int) -> tuple[list[int], list[int]] | None:
    """``(input_ids, labels)`` of ``prompt + completion`` cut to ``max_length`` tokens (from the end), labels
    ``IGNORE_INDEX`` on the prompt; None when no completion token would be predicted (the prompt fills it all)."""
    ids = (prompt + completion)[:max_length]
    labels = ([IGNORE_INDEX] * len(prompt) + completion)[:max_length]
    if not any(label != IGNORE_INDEX for label in labels[1:]):  # position 0 is never predicted
        return None
    return ids, labels


def tokenize_lm(tokenizer: Any, data: LMData, max_length: int) -> DistillDataset:
    """``data`` as a dataset for the training loop: features ``{"input_ids"}`` and per-token labels.

    The prompt is tokenized with the tokenizer's special tokens (a BOS, for Llama-style tokenizers), the completion
    without, followed by EOS (unless ``data.ends`` says it was cut). No chat template. Rows longer than
    ``max_length`` are cut, with one warning that counts them; a row whose completion is cut entirely is dropped.
    """
    eos = tokenizer.eos_token_id
    features, labels = [], []
    cut = dropped = 0
    prompts = tokenizer(data.prompts, add_special_tokens=True)["input_ids"]
    completions = tokenizer(data.completions, add_special_tokens=False)["input_ids"]
    for i, (p, c) in enumerate(zip(prompts, completions)):
        ends = data.ends[i] if data.ends is not None else True
        c = list(c) + ([eos] if eos is not None and ends else [])
        cut += len(p) + len(c) > max_length
        fitted = fit_length(list(p), c, max_length)
        if fitted is None:
            dropped += 1
            continue
        features.append({"input_ids": fitted[0]})
        labels.append(fitted[1])
    if cut:
        lost = f"; {dropped} lost their whole completion and were dropped" if dropped else ""
        warnings.warn(
            f"{data.source}: {cut} of {len(data)} rows are longer than data.max_length ({max_length} tokens) "
            f"and were truncated{lost}",
            stacklevel=2,
        )
    if not features:
        raise TextDistillError(
            f"{data.source}: no example keeps a completion token within data.max_length ({max_length})"
        )
    return DistillDataset(features, labels)


# --------------------------------------------------------------------------------------------------------------------
# Which losses apply


def check_token_level(cfg: GenerativeDistillConfig, mismatch: str | None) -> bool:
    """Whether the run has a token-level term; refuses what needs one when the vocabularies differ."""
    if mismatch is None:
        return True
    if cfg.on_policy > 0:
        raise TextDistillError(
            f"generative.on_policy: the teacher scores the student's samples token by token, "
            f"which needs "
            f"the student to share the teacher's vocabulary ({mismatch}); set on_policy: 0"
        )
    if cfg.teacher_cache is not None:
        raise TextDistillError(
            f"generative.teacher_cache: the cached top-k targets are the teacher's token ids, "
            f"which needs "
            f"the student to share the teacher's vocabulary ({mismatch}); drop teacher_cache"
        )
    if not cfg.sequence_kd:
        raise TextDistillError(
            f"token-level distillation needs the student to share the teacher's vocabulary "
            f"({mismatch}); "
            "use generative.sequence_kd: true (the student learns the teacher's completions in "
            "its own "
            "tokenization), or a student made from the teacher (student.layers / num_layers)"
        )
    return False


# --------------------------------------------------------------------------------------------------------------------
# Losses from hidden states


def divergence_kwargs(cfg: GenerativeDistillConfig) -> dict[str, float]:
    """The divergence's own parameter: ``beta`` for jsd, ``alpha`` (= ``skew_alpha``) for the skew KLs."""
    if cfg.divergence == "jsd":
        return {"beta": cfg.beta}
    if cfg.divergence in ("skew_kl", "skew_reverse_kl"):
        return {"alpha": cfg.skew_alpha}
    return {}


def next_tokens(labels: torch.Tensor) -> torch.Tensor:
    """``[B, L]`` the token each position predicts (``labels[:, i + 1]``; 0 where nothing is predicted)."""
    out = torch.zeros_like(labels)
    out[..., :-1] = labels[..., 1:].clamp_min(0)
    return out


def lm_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    labels: torch.Tensor,
    chunk_size: int = 1024,
    reduction: str = "mean",
) -> torch.Tensor:
    """Next-token cross-entropy over the completion tokens, by chunks of positions (no ``[B, L, V]`` logits).

    It is the forward KL to a one-hot teacher: a top-1 target (the label) of log-probability 0 and no mass left,
    which :func:`textdistill.lm_losses.forward_kl_topk` turns into exactly ``-log q(label)``."""
    target = next_tokens(labels).unsqueeze(-1)
    return chunked_token_loss(
        hidden,
        weight,
        completion_mask(labels),
        teacher_topk=(target, torch.zeros(target.shape, device=hidden.device)),
        divergence="forward_kl",
        chunk_size=chunk_size,
        student_bias=bias,
        reduction=reduction,  # type: ignore[arg-type]
    )


def kd_loss(
    student_hidden: torch.Tensor,
    student_head: tuple[torch.Tensor, torch.Tensor | None],
    teacher_hidden: torch.Tensor,
    teacher_head: tuple[torch.Tensor, torch.Tensor | None],
    labels: torch.Tensor,
    cfg: GenerativeDistillConfig,
    reduction: str = "mean",
) -> torch.Tensor:
    """``cfg.divergence`` (T^2-scaled) between the teacher's and the student's next-token distributions over the
    completion tokens, by chunks (``chunked_token_loss``); the teacher's tensors carry no gradient."""
    tb = teacher_head[1].detach() if teacher_head[1] is not None else None
    return chunked_token_loss(
        student_hidden,
        student_head[0],
        completion_mask(labels),
        teacher_hidden=teacher_hidden.detach(),
        teacher_weight=teacher_head[0].detach(),
        teacher_bias=tb,
        student_bias=student_head[1],
        divergence=cfg.divergence,
        temperature=cfg.temperature,
        chunk_size=cfg.chunk_size,
        reduction=reduction,  # type: ignore[arg-type]
        **divergence_kwargs(cfg),
    )


# --------------------------------------------------------------------------------------------------------------------
# Generation


def prompts_and_lengths(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor
) -> list[tuple[list[int], int]]:
    """Per row of a right-padded batch: its prompt (the tokens before the first predicted completion token; at least
    one, so a text row starts from its first token) and its completion's length."""
    out = []
    for ids, mask, lab in zip(input_ids.tolist(), attention_mask.tolist(), labels.tolist()):
        n = sum(mask)
        predicted = [i for i in range(1, n) if lab[i] != IGNORE_INDEX]
        start = predicted[0] if predicted else n
        out.append((ids[:start], len(predicted)))
    return out


def left_pad(prompts: Sequence[list[int]], pad_id: int, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Prompts left-padded (what ``generate`` continues): ``input_ids`` and ``attention_mask``."""
    longest = max(len(p) for p in prompts)
    ids = [[pad_id] * (longest - len(p)) + list(p) for p in prompts]
    mask = [[0] * (longest - len(p)) + [1] * len(p) for p in prompts]
    return {"input_ids": torch.tensor(ids, device=device), "attention_mask": torch.tensor(mask, device=device)}


def cut_completion(tokens: list[int], eos_id: int | None, limit: int | None = None) -> list[int]:
    """Generated tokens up to the first EOS (kept), at most ``limit``."""
    if eos_id is not None and eos_id in tokens:
        tokens = tokens[: tokens.index(eos_id) + 1]
    return tokens[:limit] if limit is not None else tokens


@torch.no_grad()
def generate_completions(
    model: nn.Module,
    prompts: Sequence[list[int]],
    max_new_tokens: int,
    pad_id: int,
    eos_id: int | None,
    sample: bool,
    limits: Sequence[int] | None = None,
) -> list[list[int]]:
    """Continue each prompt (one batch, left-padded): greedy, or sampled from the full distribution (temperature 1,
    no top-k / top-p: the model's own distribution, as GKD samples). Returns each row's new tokens up to its first
    EOS, at most ``limits[i]``. The model is in eval mode meanwhile and is put back as it was."""
    from accelerate.utils import extract_model_from_parallel

    net = extract_model_from_parallel(model)
    device = next(net.parameters()).device
    inputs = left_pad(prompts, pad_id, device)
    options: dict[str, Any] = (
        {"do_sample": True, "temperature": 1.0, "top_k": 0, "top_p": 1.0} if sample else {"do_sample": False}
    )
    was = net.training
    net.eval()
    try:
        out = net.generate(**inputs, max_new_tokens=max_new_tokens, pad_token_id=pad_id, eos_token_id=eos_id, **options)
    finally:
        net.train(was)
    new = out[:, inputs["input_ids"].shape[1] :].tolist()
    return [cut_completion(row, eos_id, limits[i] if limits is not None else None) for i, row in enumerate(new)]


def joined_batch(
    prompts: Sequence[list[int]], completions: Sequence[list[int]], pad_id: int, device: torch.device | str = "cpu"
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """``prompt + completion`` rows, right-padded: (model inputs, labels with the prompt and padding masked)."""
    features = [{"input_ids": list(p) + list(c)} for p, c in zip(prompts, completions)]
    inputs = pad_features(features, pad_id)
    labels = collate_labels(
        [[IGNORE_INDEX] * len(p) + list(c) for p, c in zip(prompts, completions)], inputs["input_ids"].shape[1]
    )
    return {k: v.to(device) for k, v in inputs.items()}, labels.to(device)


def teacher_completions(
    teacher: nn.Module,
    dataset: DistillDataset,
    collator: Collator,
    batch_size: int,
    cfg: GenerativeDistillConfig,
    pad_id: int,
    eos_id: int | None,
    seed: int,
) -> tuple[list[list[int]], list[list[int]]]:
    """Sequence-level KD targets: the teacher completes each example's prompt (greedy, or sampled from the seed),
    at most ``cfg.max_new_tokens`` tokens; returns (prompts, completions) as token ids, in the dataset's order."""
    device = next(teacher.parameters()).device
    prompts: list[list[int]] = []
    completions: list[list[int]] = []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for batch in ordered_batches(dataset, collator, batch_size, device):
            inputs = batch["student"]
            rows = [p for p, _ in prompts_and_lengths(inputs["input_ids"], inputs["attention_mask"], batch["labels"])]
            prompts += rows
            completions += generate_completions(
                teacher, rows, cfg.max_new_tokens, pad_id, eos_id, cfg.sampling == "sample"
            )
    return prompts, completions


def dataset_from_ids(prompts: Sequence[list[int]], completions: Sequence[list[int]], max_length: int) -> DistillDataset:
    """A training set of ``prompt + completion`` token ids (completions that fit nothing are dropped)."""
    fitted = [
        f for f in (fit_length(list(p), list(c), max_length) for p, c in zip(prompts, completions)) if f is not None
    ]
    return DistillDataset([{"input_ids": ids} for ids, _ in fitted], [labels for _, labels in fitted])


def retokenized(data: LMData, completions: Sequence[list[int]], teacher_tokenizer: Any, eos_id: int | None) -> LMData:
    """``data`` with the teacher's completions as text (for a student with another tokenizer); ``ends`` marks
    those the teacher finished with EOS (the others were cut by ``max_new_tokens``)."""
    texts = [teacher_tokenizer.decode(c, skip_special_tokens=True) for c in completions]
    ends = [eos_id is not None and bool(c) and c[-1] == eos_id for c in completions]
    return LMData(data.prompts, texts, data.rows, f"{data.source} (teacher completions)", ends)


# --------------------------------------------------------------------------------------------------------------------
# Objectives for train.train_loop


def lm_objective(
    model: nn.Module, batch: dict[str, Any], progress: float = 0.0, chunk_size: int = 1024
) -> dict[str, torch.Tensor]:
    """Language modelling alone: cross-entropy on the completion tokens (the no-distillation twin; sequence-level KD
    with another vocabulary)."""
    lm = lm_loss(final_hidden(model, batch["student"]), *output_head(model), batch["labels"], chunk_size)
    return {"loss": lm, "lm": lm}


class GenerativeObjective(nn.Module):
    """``alpha * D_T(teacher || student) + (1 - alpha) * CE`` over the completion tokens, the teacher online (eval
    mode, no gradients), for :func:`textdistill.train.train_loop`. Logged per step: ``loss``, ``kd`` (the
    divergence), ``lm`` (the cross-entropy) and ``on_policy`` (1 for a batch of the student's own samples, so its
    mean is their share).

    With probability ``cfg.on_policy`` (GKD's lambda) a batch's completions are replaced by the student's samples
    (from the batch's prompts, each as long as the completion it replaces, or shorter at an EOS): ``kd`` is then the
    teacher's score of those, and ``lm`` stays the cross-entropy of the batch's own completions (the student's
    samples are no target to imitate).
    """

    def __init__(
        self, cfg: GenerativeDistillConfig, teacher: nn.Module | None, pad_id: int, eos_id: int | None
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self._teacher = [teacher]  # in a list: not a submodule, so never trained, saved or moved by the loop
        self.pad_id, self.eos_id = pad_id, eos_id

    @property
    def teacher(self) -> nn.Module | None:
        return self._teacher[0]

    def student_samples(
        self, model: nn.Module, inputs: dict[str, torch.Tensor], labels: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """The batch with each completion replaced by the student's sample from its prompt."""
        rows = prompts_and_lengths(inputs["input_ids"], inputs["attention_mask"], labels)
        prompts, lengths = [p for p, _ in rows], [n for _, n in rows]
        samples = generate_completions(
            model, prompts, max(lengths), self.pad_id, self.eos_id, sample=True, limits=lengths
        )
        return joined_batch(prompts, samples, self.pad_id, labels.device)

    def forward(self, model: nn.Module, batch: dict[str, Any], progress: float = 0.0) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        inputs, labels = batch["student"], batch["labels"]
        on_policy = cfg.on_policy > 0 and float(torch.rand(())) < cfg.on_policy
        kd_inputs, kd_labels = self.student_samples(model, inputs, labels) if on_policy else (inputs, labels)
        head = output_head(model)
        hidden = final_hidden(model, kd_inputs)
        grad = torch.is_grad_enabled()
        cached = batch.get("teacher_topk") if not on_policy else None
        with torch.set_grad_enabled(grad and cfg.alpha > 0):  # a term of weight 0 is logged, not back-propagated
            if cached is not None:  # the teacher's top-k targets from the cache (textdistill.lm_cache)
                kd = chunked_token_loss(
                    hidden,
                    head[0],
                    completion_mask(kd_labels),
                    teacher_topk=cached,
                    student_bias=head[1],
                    temperature=cfg.temperature,
                    chunk_size=cfg.chunk_size,
                )
            else:
                if self.teacher is None:
                    raise ValueError(
                        "GenerativeObjective without a teacher needs the batch's cached targets (teacher_topk)"
                    )
                with torch.no_grad():
                    teacher_hidden = final_hidden(self.teacher, kd_inputs)
                kd = kd_loss(hidden, head, teacher_hidden, output_head(self.teacher), kd_labels, cfg)
        with torch.set_grad_enabled(grad and cfg.alpha < 1):
            if on_policy:  # the cross-entropy reads the batch's own completions
                hidden = final_hidden(model, inputs)
            lm = lm_loss(hidden, *head, labels, cfg.chunk_size)
        loss = cfg.alpha * kd + (1 - cfg.alpha) * lm
        return {"loss": loss, "kd": kd, "lm": lm, "on_policy": torch.tensor(float(on_policy))}


# --------------------------------------------------------------------------------------------------------------------
# Evaluation


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


class _EvalMode:
    """Eval mode for the models inside the block; each is put back as it was."""

    def __init__(self, *models: nn.Module) -> None:
        self.models = models
        self.states = [m.training for m in models]

    def __enter__(self) -> None:
        for m in self.models:
            m.eval()

    def __exit__(self, *exc: Any) -> None:
        for m, was in zip(self.models, self.states):
            m.train(was)


@torch.no_grad()
def completion_nll(
    model: nn.Module, dataset: DistillDataset, collator: Collator, batch_size: int, chunk_size: int = 1024
) -> tuple[float, int]:
    """(Mean negative log-likelihood per completion token, number of those tokens) over ``dataset``."""
    total, count = 0.0, 0
    with _EvalMode(model):
        for batch in ordered_batches(dataset, collator, batch_size, _device(model)):
            labels = batch["labels"]
            total += float(
                lm_loss(final_hidden(model, batch["student"]), *output_head(model), labels, chunk_size, reduction="sum")
            )
            count += int(completion_mask(labels).sum())
    return total / max(count, 1), count


def perplexity(
    model: nn.Module, dataset: DistillDataset, collator: Collator, batch_size: int, chunk_size: int = 1024
) -> float:
    """Perplexity on the completion tokens: ``exp`` of the mean negative log-likelihood per token."""
    return math.exp(completion_nll(model, dataset, collator, batch_size, chunk_size)[0])


def _argmax(hidden: torch.Tensor, head: tuple[torch.Tensor, torch.Tensor | None], chunk_size: int) -> torch.Tensor:
    """The most probable token of each row of ``hidden`` ``[N, H]``, by chunks of rows."""
    parts = [F.linear(hidden[i : i + chunk_size], *head).argmax(-1) for i in range(0, hidden.shape[0], chunk_size)]
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long, device=hidden.device)


@torch.no_grad()
def next_token_agreement(
    student: nn.Module,
    teacher: nn.Module,
    dataset: DistillDataset,
    collator: Collator,
    batch_size: int,
    chunk_size: int = 1024,
) -> float:
    """The share of completion positions where the student's most probable next token is the teacher's (both
    read the same tokens: the models share a vocabulary)."""
    same, count = 0, 0
    with _EvalMode(student, teacher):
        for batch in ordered_batches(dataset, collator, batch_size, _device(student)):
            mask = completion_mask(batch["labels"])
            s = final_hidden(student, batch["student"])[mask]
            t = final_hidden(teacher, {k: v.to(_device(teacher)) for k, v in batch["student"].items()})[
                mask.to(_device(teacher))
            ]
            same += int(
                (
                    _argmax(s, output_head(student), chunk_size)
                    == _argmax(t, output_head(teacher), chunk_size).to(s.device)
                ).sum()
            )
            count += int(mask.sum())
    return same / max(count, 1)


@torch.no_grad()
def divergence_to_teacher(
    student: nn.Module,
    teacher: nn.Module,
    dataset: DistillDataset,
    collator: Collator,
    batch_size: int,
    cfg: GenerativeDistillConfig,
) -> float:
    """``cfg.divergence`` at ``cfg.temperature`` from the teacher to the student, mean per completion token."""
    total, count = 0.0, 0
    with _EvalMode(student, teacher):
        for batch in ordered_batches(dataset, collator, batch_size, _device(student)):
            labels = batch["labels"]
            teacher_hidden = final_hidden(teacher, {k: v.to(_device(teacher)) for k, v in batch["student"].items()}).to(
                labels.device
            )
            s = final_hidden(student, batch["student"])
            head_t = tuple(x.to(labels.device) if x is not None else None for x in output_head(teacher))
            total += float(kd_loss(s, output_head(student), teacher_hidden, head_t, labels, cfg, reduction="sum"))  # type: ignore[arg-type]
            count += int(completion_mask(labels).sum())
    return total / max(count, 1)


@torch.no_grad()
def generation_speed(
    model: nn.Module, prompts: Sequence[list[int]], new_tokens: int, repeats: int, pad_id: int
) -> dict[str, float]:
    """Greedy generation speed at batch 1: each prompt continued by exactly ``new_tokens`` tokens (EOS ignored, so
    every model generates as many), a warm-up, then the median over ``repeats`` passes of tokens per second."""
    device = _device(model)
    kwargs = {"max_new_tokens": new_tokens, "min_new_tokens": new_tokens, "do_sample": False, "pad_token_id": pad_id}

    def one_pass() -> float:
        start = time.perf_counter()
        for p in prompts:
            model.generate(**left_pad([p], pad_id, device), **kwargs)
        return time.perf_counter() - start

    with _EvalMode(model):
        model.generate(**left_pad([prompts[0]], pad_id, device), **{**kwargs, "max_new_tokens": 2, "min_new_tokens": 2})
        seconds = statistics.median(one_pass() for _ in range(repeats))
    return {
        "tokens_per_second": len(prompts) * new_tokens / seconds,
        "speed_prompts": len(prompts),
        "speed_new_tokens": new_tokens,
    }


def speed_prompts(dataset: DistillDataset, collator: Collator, n: int) -> list[list[int]]:
    """The prompts of the first ``n`` examples (a text row's: its first token)."""
    batch = collator([dataset[i] for i in range(min(n, len(dataset)))])
    return [
        p
        for p, _ in prompts_and_lengths(
            batch["student"]["input_ids"], batch["student"]["attention_mask"], batch["labels"]
        )
    ]


# --------------------------------------------------------------------------------------------------------------------
# The run


@dataclass
class _Side:
    """One model as the report measures it: its tokenizer's view of the validation set."""

    model: nn.Module
    tokenizer: Any
    dev: DistillDataset
    collator: Collator


def _profile(
    side: _Side, teacher: _Side | None, folder: Path | None, cfg: GenerativeRunConfig, token_level: bool
) -> dict[str, Any]:
    """Perplexity, agreement and divergence with the teacher (token-level runs), generation speed, parameters."""
    from textdistill.models import count_parameters, folder_size_bytes

    bs, chunk = cfg.student.training.per_device_eval_batch_size, cfg.generative.chunk_size
    nll, tokens = completion_nll(side.model, side.dev, side.collator, bs, chunk)
    out: dict[str, Any] = {
        "params": count_parameters(side.model),
        "size_bytes": folder_size_bytes(folder) if folder else None,
        "nll": nll,
        "perplexity": math.exp(nll),
        "eval_tokens": tokens,
    }
    if teacher is not None and token_level:
        out["agreement"] = next_token_agreement(side.model, teacher.model, side.dev, side.collator, bs, chunk)
        out["divergence_to_teacher"] = divergence_to_teacher(
            side.model, teacher.model, side.dev, side.collator, bs, cfg.generative
        )
    ev = cfg.eval
    prompts = speed_prompts(side.dev, side.collator, ev.speed_prompts)
    out.update(
        generation_speed(side.model, prompts, ev.speed_new_tokens, ev.speed_repeats, side.collator.student_pad_id)
    )
    return out


def sequence_kd_set(
    cfg: GenerativeRunConfig, teacher: _Side, student_tokenizer: Any, data: LMData, same_ids: bool
) -> tuple[DistillDataset, dict[str, Any]]:
    """The student's training set of sequence-level KD: each prompt of ``teacher.dev`` (the training set as the
    teacher reads it) with the teacher's completion, as token ids (``same_ids``: one vocabulary) or as text the
    student's tokenizer reads; and what the generation took."""
    started = time.perf_counter()
    tok = teacher.tokenizer
    batch_size = cfg.student.training.per_device_eval_batch_size
    prompts, completions = teacher_completions(
        teacher.model,
        teacher.dev,
        teacher.collator,
        batch_size,
        cfg.generative,
        teacher.collator.student_pad_id,
        tok.eos_token_id,
        cfg.seed,
    )
    if same_ids:  # no detokenization
        out = dataset_from_ids(prompts, completions, cfg.data.max_length)
    else:
        out = tokenize_lm(student_tokenizer, retokenized(data, completions, tok, tok.eos_token_id), cfg.data.max_length)
    info = {
        "sequences": len(completions),
        "mean_new_tokens": sum(map(len, completions)) / max(len(completions), 1),
        "seconds": time.perf_counter() - started,
    }
    print(
        f"sequence-level KD: the teacher completed {len(completions)} prompts in {info['seconds']:.1f} s",
        file=sys.stderr,
    )
    return out, info


@releases_locks
def distill_generative(cfg: GenerativeRunConfig, resume: bool = False) -> dict[str, Any]:
    """``textdistill distill`` of a ``generative:`` config: the teacher, the student (and its twin) trained by the
    one training loop, the report. Everything is read and checked (data, models, vocabularies) before training."""
    from accelerate.utils import set_seed

    from textdistill.models import resolve_model_path
    from textdistill.report import render_generative_report
    from textdistill.runfolder import RunFolder
    from textdistill.train import process_state, train_loop

    g, args = cfg.generative, cfg.student.training
    run = RunFolder(cfg, resume, kind="generative")
    train_data = read_lm_jsonl(cfg.data.train_file, cfg.data.max_train_samples)
    dev_data = read_lm_jsonl(cfg.data.validation_file, cfg.data.max_eval_samples)
    if g.sequence_kd and train_data.text_rows():
        raise TextDistillError(
            f"generative.sequence_kd: the teacher completes each prompt, but {train_data.source}:"
            f"{train_data.text_rows()[0]} is a text row (no prompt); give prompt/completion rows"
        )
    teacher, ttok = load_causal_lm(cfg.teacher.model, "teacher.model")
    teacher.eval().requires_grad_(False)
    set_seed(cfg.seed)
    student, stok, recipe = build_causal_student(cfg.student, teacher, ttok)
    token_level = check_token_level(g, vocabulary_mismatch(teacher, ttok, student, stok))
    tpad, spad = pad_id_of(ttok), pad_id_of(stok)
    tcol, scol = Collator(tpad), Collator(spad)
    teacher_dev = tokenize_lm(ttok, dev_data, cfg.data.max_length)
    gold_train = tokenize_lm(stok, train_data, cfg.data.max_length)
    dev = teacher_dev if stok is ttok else tokenize_lm(stok, dev_data, cfg.data.max_length)
    check_lm_head(student, next(ordered_batches(dev, scol, 2, _device(student)))["student"], "student")
    check_lm_head(teacher, next(ordered_batches(teacher_dev, tcol, 2, _device(teacher)))["student"], "teacher.model")
    run.open()
    started = time.perf_counter()
    teacher_side = _Side(teacher, ttok, teacher_dev, tcol)
    initial = (
        divergence_to_teacher(student, teacher, dev, scol, args.per_device_eval_batch_size, g) if token_level else None
    )

    train_set, info = gold_train, {}
    if g.sequence_kd:
        teacher_train = gold_train if stok is ttok else tokenize_lm(ttok, train_data, cfg.data.max_length)
        train_set, info = sequence_kd_set(cfg, _Side(teacher, ttok, teacher_train, tcol), stok, train_data, token_level)

    def evaluate(m: nn.Module) -> dict[str, float]:
        nll, _ = completion_nll(m, dev, scol, args.per_device_eval_batch_size, g.chunk_size)
        return {"neg_nll": -nll, "perplexity": math.exp(nll)}

    lm_only = functools.partial(lm_objective, chunk_size=g.chunk_size)
    online = token_level and g.teacher_cache is None
    # (with the cache the objective holds no teacher: the loss reads the batch's cached targets)
    objective: Any = (
        GenerativeObjective(g, teacher if online else None, spad, stok.eos_token_id) if token_level else lm_only
    )
    student_set, student_col, cache_info = train_set, scol, None
    if token_level and g.teacher_cache is not None:
        from textdistill.lm_cache import TopKCollator, cached_topk_targets

        with process_state().main_process_first():  # the main process fills the cache; the others then read it
            targets, cache_info = cached_topk_targets(
                g.teacher_cache,
                teacher,
                cfg.teacher.model,
                train_set,
                scol,
                args.per_device_eval_batch_size,
                g.temperature,
                g.chunk_size,
            )
        student_set, student_col = train_set.with_teacher_logits(targets), TopKCollator(spad)  # type: ignore[arg-type]

    def fit(name: str, model: nn.Module, data: DistillDataset, obj: Any, collator: Collator = scol) -> Any:
        return train_loop(
            model,
            data,
            collator,
            args,
            obj,
            evaluate,
            "neg_nll",
            cfg.seed,
            run.path / "logs" / f"{name}.jsonl",
            desc=name,
            teacher=teacher if obj is objective and online else None,
            checkpoint_dir=run.checkpoints(name),
            resume=run.resume,
        )

    result = fit("student", student, student_set, objective, student_col)
    run.save("student", student, stok, {"distilled_from": cfg.teacher.model, **recipe})
    twin = base = None
    if cfg.baseline:
        set_seed(cfg.seed)
        twin, _, _ = build_causal_student(cfg.student, teacher, ttok)
        base = fit("baseline", twin, gold_train, lm_only)
        run.save("baseline", twin, stok, {"trained_without_distillation": True, **recipe})
    if not run.main:
        return {"output_dir": str(run.final), "main_process": False}

    device = _device(student)
    teacher.to(device)
    teacher_path = Path(resolve_model_path(cfg.teacher.model, "teacher.model"))  # (a catalogue model: prepared by now)
    teacher_dir = teacher_path if teacher_path.is_dir() else None
    report: dict[str, Any] = {
        "kind": "generative",
        "data": {
            "train": train_data.source,
            "validation": dev_data.source,
            "train_examples": len(train_data),
            "validation_examples": len(dev_data),
            "max_length": cfg.data.max_length,
            "train_tokens": sum(len(f["input_ids"]) for f in train_set.student),
        },
        "generative": {
            **g.model_dump(),
            "token_level": token_level,
            **({"teacher_generation": info} if info else {}),
            **({"teacher_cache_result": cache_info} if cache_info else {}),
        },
        "teacher": {"model": cfg.teacher.model, **_profile(teacher_side, None, teacher_dir, cfg, token_level)},
        "student": {
            **recipe,
            "best_step": result.best_step,
            "steps": result.steps,
            "train_seconds": result.seconds,
            "divergence_to_teacher_initial": initial,
            **_profile(_Side(student, stok, dev, scol), teacher_side, run.path / "student", cfg, token_level),
        },
    }
    if twin is not None and base is not None:
        report["baseline"] = {
            "best_step": base.best_step,
            "steps": base.steps,
            "train_seconds": base.seconds,
            **_profile(_Side(twin, stok, dev, scol), teacher_side, run.path / "baseline", cfg, token_level),
        }
    t = report["teacher"]["tokens_per_second"]
    for side in ("student", "baseline"):
        if side in report:
            report[side]["speedup"] = report[side]["tokens_per_second"] / t
    return run.finish(report, render_generative_report, started)
