"""Distillation inside ``transformers.Trainer``: :class:`DistillationTrainer`.

A ``Trainer`` subclass, built the way TRL's trainers are: ``TrainingArguments``, callbacks, logging, checkpoints,
``resume_from_checkpoint`` and several GPUs are the Trainer's; the loss is textdistill's own
(:class:`textdistill.objective.DistillationObjective`, the objective of ``textdistill distill``), configured by the
same ``distill:`` section as a YAML run::

    from textdistill.integrations.transformers import DistillationTrainer

    trainer = DistillationTrainer(
        model=student, teacher=teacher, args=TrainingArguments("out", num_train_epochs=3),
        train_dataset=train, eval_dataset=dev, processing_class=tokenizer,
        distill={"temperature": 2.0, "alpha": 0.9, "layer_map": [{"strategy": "uniform", "feature": "hidden"}]},
    )
    trainer.train()

Each term of the loss (``kd``, ``ce``, the intermediate ones) is logged beside ``loss``. Temperatures and weights given
as schedules follow the Trainer's progress (``global_step / max_steps``). Intermediate matches that need a learned
projection (widths differ) get it from the first training batch, before the optimizer is made; the projection is
trained with the student and saved in each checkpoint (``textdistill_objective.pt``), so a resumed run continues with
it. The evaluation loss is the student's own loss on the labels (what ``model(**batch).loss`` gives).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import Trainer, TrainerCallback

from textdistill.config import DistillConfig
from textdistill.errors import TextDistillError
from textdistill.features import IntermediateLosses, resolve_matches
from textdistill.objective import DistillationObjective

OBJECTIVE_FILE = "textdistill_objective.pt"


def distill_config(distill: DistillConfig | dict[str, Any] | None) -> DistillConfig:
    """The ``distill:`` section as a config object (its checks and errors are a YAML run's)."""
    if isinstance(distill, DistillConfig):
        return distill
    from pydantic import ValidationError

    from textdistill.config import _format_validation_error

    try:
        return DistillConfig(**(distill or {}))
    except ValidationError as exc:  # one line, as a YAML run's: "distill=: invalid config: temperature: ..."
        raise TextDistillError(_format_validation_error("distill=", exc)) from None


class _ObjectiveCallback(TrainerCallback):
    """The objective's own parameters (projections) alongside the model's: their gradients cleared after each
    optimizer step (the Trainer clears only the model's), their state written into each checkpoint folder."""

    def __init__(self, trainer: "DistillationTrainer") -> None:
        self.trainer = trainer

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.trainer.objective.zero_grad(set_to_none=True)

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        objective = self.trainer.objective
        if state.is_world_process_zero and any(True for _ in objective.parameters()):
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if folder.is_dir():
                torch.save(objective.state_dict(), folder / OBJECTIVE_FILE)


class DistillationTrainer(Trainer):
    """``transformers.Trainer`` that trains ``model`` (the student) on ``teacher``'s soft targets mixed with the
    labels, and on its hidden states / attentions where ``distill`` asks for them. ``distill``: the ``distill:``
    section of a textdistill config (``loss``, ``temperature``, ``alpha``, ``intermediate``, ``layer_map``,
    ``minilm``), as a dict or a :class:`~textdistill.config.DistillConfig`."""

    def __init__(
        self, *args: Any, teacher: nn.Module, distill: DistillConfig | dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        if teacher is None:
            raise TextDistillError("DistillationTrainer: teacher= is required (the model to distil from)")
        self.distill_config = distill_config(distill)
        self.teacher = teacher.eval().requires_grad_(False)
        intermediate = None
        if self.distill_config.uses_intermediate:
            matches = resolve_matches(
                self.distill_config.intermediate, self.distill_config.layer_map, teacher, self.model, None
            )
            intermediate = IntermediateLosses(matches, self.distill_config.minilm, self.model, teacher)
        self.objective = DistillationObjective(self.distill_config, teacher, intermediate)
        self._terms: dict[str, list[float]] = defaultdict(list)
        self._set_up = intermediate is None
        self._resumed: Path | None = None  # the checkpoint's objective state, loaded once the projections exist
        self.add_callback(_ObjectiveCallback(self))

    # the objective's batches: textdistill's layout ({"student": inputs, "labels": labels})
    @staticmethod
    def as_batch(inputs: dict[str, Any]) -> dict[str, Any]:
        if "labels" not in inputs:
            raise TextDistillError(
                "DistillationTrainer: the batches carry no 'labels' (the hard-label term needs "
                "them; "
                "keep the label column in the dataset, named 'labels' or 'label')"
            )
        return {"student": {k: v for k, v in inputs.items() if k != "labels"}, "labels": inputs["labels"]}

    def _place(self, device: torch.device) -> None:
        if next(self.teacher.parameters()).device != device:
            self.teacher.to(device)
        self.objective.to(device)

    def _setup_objective(self, model: nn.Module) -> None:
        """Projections are made from the shapes of one real batch, before the optimizer (which must train them); a
        resumed run then loads their trained state. The random state is put back after: the batch drawn here changes
        neither the data order nor the dropout masks of the run (a resumed run sees the same ones)."""
        if self._set_up:
            return
        with torch.random.fork_rng(devices=[]):
            batch = next(iter(self.get_train_dataloader()))
            device = next(model.parameters()).device
            self._place(device)
            batch = self.as_batch({k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()})
            self.objective.setup(model, batch)
        if self._resumed is not None:
            self.objective.load_state_dict(torch.load(self._resumed, map_location=device, weights_only=True))
        self._set_up = True

    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        model = model if model is not None else self.model
        self._setup_objective(model)
        optimizer = super().create_optimizer(model) if model is not None else super().create_optimizer()
        own = [p for p in self.objective.parameters() if p.requires_grad]
        if own:
            optimizer.add_param_group({"params": own, "weight_decay": 0.0})
        return optimizer

    def train(self, resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any) -> Any:
        if resume_from_checkpoint:
            from transformers.trainer_utils import get_last_checkpoint

            folder = (
                get_last_checkpoint(self.args.output_dir) if resume_from_checkpoint is True else resume_from_checkpoint
            )
            saved = Path(folder) / OBJECTIVE_FILE if folder else None
            self._resumed = saved if saved is not None and saved.is_file() else None
        try:
            return super().train(resume_from_checkpoint, *args, **kwargs)
        finally:
            if self.objective.intermediate is not None:
                self.objective.intermediate.close()  # the feature taps' hooks leave the models with the run

    def compute_loss(
        self, model: nn.Module, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        if not model.training:  # evaluation: the student's own loss on the labels, and its outputs for the metrics
            outputs = model(**inputs)
            return (outputs.loss, outputs) if return_outputs else outputs.loss
        self._place(next(model.parameters()).device)
        progress = self.state.global_step / max(1, self.state.max_steps)
        terms = self.objective(model, self.as_batch(inputs), progress)
        for name, value in terms.items():
            if name != "loss":
                self._terms[name].append(float(value.detach()))
        return (terms["loss"], None) if return_outputs else terms["loss"]

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        if "loss" in logs and self._terms:  # the terms' means over the steps since the last log, beside the loss
            logs.update({name: sum(v) / len(v) for name, v in self._terms.items() if v})
            self._terms.clear()
        super().log(logs, *args, **kwargs)


__all__ = ["OBJECTIVE_FILE", "DistillationTrainer", "distill_config"]
