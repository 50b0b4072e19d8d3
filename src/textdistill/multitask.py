"""Task distillation: one student with a shared encoder and a head per task, trained on every task's (fused) teacher
outputs through the same training loop as everything else.

- :class:`MultiTaskModel` (``model_type: textdistill-multitask``): any HF encoder (``AutoModel``) + one linear head per
  task on the pooled ``[CLS]`` vector; saved and loaded with the HF Auto classes (``AutoModel.from_pretrained``),
  the task list (names, label names, classification or regression) in its config. ``model(..., task="sst2")``.
- :class:`MultiTaskDataset`: the tasks' examples side by side; its batches hold one task each, the task of each batch
  drawn by :func:`textdistill.ensemble.task_schedule` (proportional, size^tau, round-robin).
- :class:`MultiTaskObjective`: per task, KD on its teachers' fused soft targets (or the mean of per-teacher KLs),
  MSE on fused scores for regression, optional teacher annealing, mixed with the gold labels.
- :func:`predict`: a saved multi-task student labels raw text for any of its tasks by name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

from textdistill.data import DistillDataset, LabelSet, model_task_type
from textdistill.ensemble import (
    annealed_target,
    ensemble_kd_loss,
    fuse_regression,
    fuse_soft_targets,
    kl_to_target,
    task_schedule,
    teacher_weights,
)
from textdistill.errors import TextDistillError
from textdistill.losses import hard_label_loss
from textdistill.models import fit_max_length, load_saved_classifier, loading_kwargs, resolve_model_path
from textdistill.ner import predict_entities
from textdistill.train import model_inputs

# --------------------------------------------------------------------------------------------------------------------
# The model


class MultiTaskConfig(PretrainedConfig):
    """``encoder``: the shared encoder's config as a dict (with its ``model_type``); ``tasks``: one entry per task,
    ``{"name", "labels": [label names] | None (regression)}``."""

    model_type = "textdistill-multitask"
    encoder: dict | None = None
    tasks: list | None = None
    classifier_dropout: float | int = 0.1
    initializer_range: float | int = 0.02

    def encoder_config(self) -> PretrainedConfig:
        spec = dict(self.encoder or {})
        return AutoConfig.for_model(spec.pop("model_type"), **spec)

    def task(self, name: str) -> dict:
        for t in self.tasks or []:
            if t["name"] == name:
                return t
        raise KeyError(f"no task {name!r}; this model has {[t['name'] for t in self.tasks or []]}")


class MultiTaskModel(PreTrainedModel):
    config_class = MultiTaskConfig
    base_model_prefix = "encoder"

    def __init__(self, config: MultiTaskConfig) -> None:
        super().__init__(config)
        enc = config.encoder_config()
        self.encoder = AutoModel.from_config(enc)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.heads = nn.ModuleDict(
            {
                t["name"]: nn.Linear(enc.hidden_size, len(t["labels"]) if t.get("labels") else 1)
                for t in config.tasks or []
            }
        )
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear) and any(module is h for h in self.heads.values()):
            module.weight.data.normal_(0.0, self.config.initializer_range)
            module.bias.data.zero_()
        elif hasattr(self.encoder, "_init_weights"):
            self.encoder._init_weights(module)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        task: str | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> SequenceClassifierOutput:
        if task is None:
            if len(self.heads) != 1:
                raise ValueError(f"task= is required: this model has tasks {list(self.heads)}")
            task = next(iter(self.heads))
        if task not in self.heads:
            raise KeyError(f"no task {task!r}; this model has {list(self.heads)}")
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        out = self.encoder(**inputs)
        pooled = getattr(out, "pooler_output", None)
        if pooled is None:
            pooled = out.last_hidden_state[:, 0]
        logits = self.heads[task](self.dropout(pooled))
        loss = hard_label_loss(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)


AutoConfig.register(MultiTaskConfig.model_type, MultiTaskConfig, exist_ok=True)
AutoModel.register(MultiTaskConfig, MultiTaskModel, exist_ok=True)


def multitask_from_encoder(
    encoder: PreTrainedModel, tasks: Sequence[dict], classifier_dropout: float = 0.1
) -> MultiTaskModel:
    """A multi-task model whose shared encoder starts as a copy of ``encoder`` (e.g. a student's base model made from
    teacher layers); the heads start random."""
    enc_cfg = encoder.config.to_dict()
    for key in ("id2label", "label2id", "num_labels", "problem_type", "architectures", "finetuning_task"):
        enc_cfg.pop(key, None)
    config = MultiTaskConfig(encoder=enc_cfg, tasks=[dict(t) for t in tasks], classifier_dropout=classifier_dropout)
    model = MultiTaskModel(config)
    missing, unexpected = model.encoder.load_state_dict(encoder.state_dict(), strict=False)
    if unexpected or [k for k in missing if "pooler" not in k]:
        raise ValueError(f"encoder weights do not fit: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return model


# --------------------------------------------------------------------------------------------------------------------
# Data: one task per batch


class MultiTaskDataset(Dataset):
    """The tasks' datasets side by side; item ``j`` is an example of one task, with ``task`` (its index)."""

    def __init__(self, tasks: Sequence[DistillDataset], sampling: str = "proportional", tau: float = 1.0) -> None:
        self.tasks = list(tasks)
        self.sampling, self.tau = sampling, tau
        self.offsets = [0]
        for ds in self.tasks:
            self.offsets.append(self.offsets[-1] + len(ds))

    def __len__(self) -> int:
        return self.offsets[-1]

    def __getitem__(self, j: int) -> dict[str, Any]:
        k = next(i for i in range(len(self.tasks)) if j < self.offsets[i + 1])
        return {**self.tasks[k][j - self.offsets[k]], "task": k}

    def lengths(self) -> list[int]:
        return [n for ds in self.tasks for n in ds.lengths()]

    def loader(
        self,
        collator: Any,
        batch_size: int,
        group_by_length: bool,
        seed: int,
        num_workers: int = 0,
        pin_memory: bool = False,
    ) -> DataLoader:
        """How the training loop batches this dataset (instead of its default shuffled batches)."""
        sampler = MultiTaskBatchSampler(
            [len(ds) for ds in self.tasks],
            batch_size,
            self.sampling,
            self.tau,
            seed,
            [ds.lengths() for ds in self.tasks] if group_by_length else None,
        )
        return DataLoader(
            self,
            batch_sampler=sampler,
            collate_fn=collator,
            num_workers=num_workers,
            pin_memory=pin_memory,
            persistent_workers=num_workers > 0,
        )


class MultiTaskBatchSampler(Sampler[list[int]]):
    """Batches of one task each. An epoch has as many batches as the tasks have together; the task of each batch
    follows :func:`task_schedule`. Within a task the order is shuffled each epoch (length-grouped when lengths are
    given); a task drawn more often than it has batches starts a new shuffled pass. Seeded: the same seed gives the
    same batches (several processes agree on them)."""

    def __init__(
        self,
        sizes: Sequence[int],
        batch_size: int,
        strategy: str,
        tau: float,
        seed: int,
        lengths: Sequence[Sequence[int]] | None = None,
    ) -> None:
        self.sizes, self.batch_size, self.strategy, self.tau, self.seed = list(sizes), batch_size, strategy, tau, seed
        self.lengths = lengths
        self.offsets = [sum(self.sizes[:k]) for k in range(len(self.sizes))]
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _num_batches(self) -> list[int]:
        return [-(-n // self.batch_size) for n in self.sizes]

    def __len__(self) -> int:
        return sum(self._num_batches())

    def _passes(self, k: int, g: torch.Generator) -> Iterator[list[int]]:
        while True:
            n = self.sizes[k]
            if self.lengths is not None:
                from transformers.trainer_pt_utils import get_length_grouped_indices

                order = get_length_grouped_indices(list(self.lengths[k]), self.batch_size, generator=g)
            else:
                order = torch.randperm(n, generator=g).tolist()
            for start in range(0, n, self.batch_size):
                yield [self.offsets[k] + i for i in order[start : start + self.batch_size]]

    def __iter__(self) -> Iterator[list[int]]:
        g = torch.Generator().manual_seed(self.seed + 1000003 * self.epoch)
        self.epoch += 1
        streams = [self._passes(k, g) for k in range(len(self.sizes))]
        for k in task_schedule(
            self._num_batches(), self.strategy, self.tau, int(torch.randint(0, 2**31 - 1, (1,), generator=g))
        ):
            yield next(streams[k])


# --------------------------------------------------------------------------------------------------------------------
# The objective


@dataclass
class TaskSpec:
    """How one task is distilled: its teachers' fusion and the KD settings."""

    name: str
    regression: bool = False
    fusion: str = "mean_probs"
    objective: str = "fused"  # fused | mean_kl
    weights: torch.Tensor = field(default_factory=lambda: torch.ones(1))  # per teacher, normalised
    temperature: float = 2.0
    alpha: float = 0.9
    anneal: bool = False  # teacher annealing: the target moves from the teachers to the gold label over training


class MultiTaskObjective(nn.Module):
    """``(model, batch, progress) -> terms`` for batches of one task: ``alpha * soft + (1 - alpha) * hard``.

    The batch's ``teacher_logits`` are the task's teachers' outputs ``[B, K, C]`` (cached). Without them (the
    no-distillation twin) only the hard term is trained. With ``anneal`` the soft target is
    ``progress * gold + (1 - progress) * fused``.
    """

    reads_logits_only = True  # the student's logits alone (the loop may cut its last layer: textdistill.first_token)

    def __init__(self, tasks: Sequence[TaskSpec]) -> None:
        super().__init__()
        self.tasks = list(tasks)

    def forward(self, model: nn.Module, batch: dict[str, Any], progress: float = 0.0) -> dict[str, torch.Tensor]:
        spec = self.tasks[int(batch["task"])]
        logits = model(**model_inputs(model, batch), task=spec.name).logits
        labels = batch["labels"]
        hard = hard_label_loss(logits, labels)
        if "teacher_logits" not in batch:
            return {"loss": hard, "ce": hard}
        t = batch["teacher_logits"].float().transpose(0, 1)  # [K, B, C]
        w = spec.weights.to(t.device)
        if spec.regression:
            target = fuse_regression(t, w)
            if spec.anneal:
                target = annealed_target(target, labels.float(), progress)
            soft = hard_label_loss(logits, target)  # MSE to the (annealed) fused score
        elif spec.anneal:
            target = annealed_target(fuse_soft_targets(t, spec.fusion, spec.temperature, w), labels, progress)
            soft = kl_to_target(logits, target, spec.temperature)
        else:
            soft = ensemble_kd_loss(
                logits, t, temperature=spec.temperature, fusion=spec.fusion, weights=w, objective=spec.objective
            )
        loss = spec.alpha * soft + (1 - spec.alpha) * hard
        return {"loss": loss, "kd": soft, "ce": hard}


def uniform_spec(name: str, num_teachers: int, **kwargs: Any) -> TaskSpec:
    """A :class:`TaskSpec` whose teacher weights are those of its fusion (``weights`` / ``dev_scores`` in kwargs)."""
    weights, dev_scores = kwargs.pop("teacher_weights", None), kwargs.pop("dev_scores", None)
    fusion = kwargs.get("fusion", "mean_probs")
    return TaskSpec(name=name, weights=teacher_weights(num_teachers, fusion, weights, dev_scores), **kwargs)


# --------------------------------------------------------------------------------------------------------------------
# Prediction


def load_for_prediction(folder: str | os.PathLike) -> tuple[nn.Module, Any]:
    """A saved student (multi-task, or any one-task classifier textdistill saves) and its tokenizer."""
    from transformers import AutoTokenizer

    import textdistill.students  # noqa: F401  (registers the BiLSTM / TextCNN / MLP configs: a saved one names its type)

    path = resolve_model_path(os.fspath(folder), "model")
    try:
        model_type = AutoConfig.from_pretrained(path).model_type
    except (OSError, ValueError) as exc:
        raise TextDistillError(f"model: cannot load {folder}: {str(exc).splitlines()[0]}") from None
    if model_type == MultiTaskConfig.model_type:
        return AutoModel.from_pretrained(path, **loading_kwargs(path, "model")), AutoTokenizer.from_pretrained(path)
    model, tokenizer, _ = load_saved_classifier(path)
    return model, tokenizer


def output_names(model: nn.Module, task: str | None) -> list[str] | None:
    """What a model's outputs mean for ``task``: label names, or None for a regression score. A multi-task model needs
    the task (unless it has one); a one-task model takes none."""
    if isinstance(model, MultiTaskModel):
        names = [t["name"] for t in model.config.tasks or []]
        if task is None and len(names) == 1:
            task = names[0]
        if task not in names:
            raise TextDistillError(
                f"task: {'give one' if task is None else f'no task {task!r}'}; this model has tasks {names}"
            )
        return model.config.task(task).get("labels")
    if task is not None:
        raise TextDistillError(f"task: {task!r} given, but this is a one-task model")
    labels = LabelSet.from_model_config(model.config)
    if labels is None:
        return [f"LABEL_{i}" for i in range(model.config.num_labels)]
    return None if labels.regression else list(labels.names)


@torch.inference_mode()
def predict(
    model: nn.Module | str | os.PathLike,
    task: str | None,
    texts: Sequence[str],
    pairs: Sequence[str] | None = None,
    tokenizer: Any = None,
    batch_size: int = 64,
    max_length: int = 128,
) -> list[Any]:
    """Label names (classification), scores (regression), lists of label names (multi-label) or entity spans (token
    classification: :func:`textdistill.ner.predict_entities`) for ``texts`` (and their ``pairs``) under ``task``.

    ``model`` is a saved folder (its tokenizer is loaded from it) or a model object with ``tokenizer``; a multi-task
    student predicts for any of its tasks by name, a one-task classifier takes ``task=None``."""
    if not isinstance(model, nn.Module):
        model, tokenizer = load_for_prediction(model)
    if tokenizer is None:
        raise ValueError("predict: pass the tokenizer with a model object")
    if pairs is not None and len(pairs) != len(texts):
        raise ValueError(f"predict: {len(texts)} texts but {len(pairs)} pairs")
    kind = "classification" if isinstance(model, MultiTaskModel) else model_task_type(model.config)
    max_length = fit_max_length(tokenizer, max_length, "--max-length")
    if kind == "token_classification":
        output_names(model, task)  # a task name given to a one-task model is an error here too
        return predict_entities(model, tokenizer, texts, batch_size, max_length)  # type: ignore[return-value]
    names = output_names(model, task)
    extra = {"task": task or next(iter(model.heads))} if isinstance(model, MultiTaskModel) else {}
    model.eval()
    out: list = []
    for start in range(0, len(texts), batch_size):
        enc = tokenizer(
            list(texts[start : start + batch_size]),
            list(pairs[start : start + batch_size]) if pairs else None,
            truncation=True,
            max_length=max_length,
            padding=True,
            return_tensors="pt",
        )
        logits = model(**enc, **extra).logits
        if kind == "multi_label":  # every label whose probability passes 0.5
            out += [[names[j] for j, on in enumerate(row) if on] for row in (logits > 0).tolist()]  # type: ignore[index]
        else:
            out += [names[i] for i in logits.argmax(-1).tolist()] if names is not None else logits.squeeze(-1).tolist()
    return out
