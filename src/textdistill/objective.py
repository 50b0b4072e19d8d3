"""The classic objectives for the one training loop (:mod:`textdistill.train`): plain fine-tuning with the gold
labels, and distillation (soft targets mixed with the labels, plus the intermediate matches of
:mod:`textdistill.features`). Each is a callable ``(model, batch, progress) -> {term: tensor}``."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from textdistill.config import DistillConfig, value_at
from textdistill.features import Features, IntermediateLosses
from textdistill.losses import distillation_loss, hard_label_loss
from textdistill.train import model_inputs


def hard_label_objective(model: nn.Module, batch: dict[str, Any], progress: float = 0.0) -> dict[str, torch.Tensor]:
    """Plain fine-tuning: cross-entropy with the gold labels."""
    logits = model(**model_inputs(model, batch)).logits
    ce = hard_label_loss(logits, batch["labels"])
    return {"loss": ce, "ce": ce}


hard_label_objective.reads_logits_only = True  # type: ignore[attr-defined]  (its models' last layer may be cut: first_token)


class DistillationObjective(nn.Module):
    """``alpha * soft + (1 - alpha) * CE`` (+ the weighted intermediate terms) against teacher logits that come with
    the batch (precomputed) or from an online teacher forward pass (eval mode, no gradients).

    ``use_logits=False`` trains the intermediate terms alone (TinyBERT's first stage).
    """

    def __init__(
        self,
        cfg: DistillConfig,
        teacher: nn.Module | None = None,
        intermediate: IntermediateLosses | None = None,
        use_logits: bool = True,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self._teacher = [teacher]  # in a list: not a submodule, so never trained, saved or moved by the loop
        self.intermediate = intermediate
        self.use_logits = use_logits
        if teacher is None and intermediate is not None:
            raise ValueError("intermediate losses need the teacher online")

    @property
    def teacher(self) -> nn.Module | None:
        return self._teacher[0]

    @property
    def reads_logits_only(self) -> bool:
        """No intermediate losses: only the models' logits are read."""
        return self.intermediate is None

    def hold_teacher(self, teacher: nn.Module) -> None:
        """Use ``teacher`` (e.g. a bf16 copy of the same model) from now on."""
        self._teacher[0] = teacher

    def _teacher_features(self, batch: dict[str, Any]) -> Features | None:
        if self.teacher is None:
            return None
        side = "teacher" if "teacher" in batch else "student"
        inputs = batch[side]
        with torch.inference_mode():
            if self.intermediate is not None:
                feats = self.intermediate.features(self.teacher, inputs, "teacher")
            else:
                logits = self.teacher(**model_inputs(self.teacher, batch, side)).logits
                feats = Features(logits=logits, mask=inputs["attention_mask"].bool())
        # leave inference mode: clone what the student's graph will touch
        return Features(
            logits=feats.logits.float().clone(),
            mask=feats.mask.clone(),
            hidden=tuple(h.clone() for h in feats.hidden),
            attentions=tuple(a.clone() for a in feats.attentions),
            modules={k: v.clone() for k, v in feats.modules.items()},
        )

    def setup(self, model: nn.Module, batch: dict[str, Any]) -> None:
        """Check the intermediate matches on one real batch and create their projections (before the optimizer)."""
        if self.intermediate is None:
            return
        with torch.no_grad():
            s = self.intermediate.features(model, batch["student"], "student")
            t = self._teacher_features(batch)
        assert t is not None
        self.intermediate.setup(s, t)

    def forward(self, model: nn.Module, batch: dict[str, Any], progress: float = 0.0) -> dict[str, torch.Tensor]:
        t = self._teacher_features(batch)
        if self.intermediate is not None:
            s = self.intermediate.features(model, batch["student"], "student")
        else:
            s = Features(
                logits=model(**model_inputs(model, batch)).logits, mask=batch["student"]["attention_mask"].bool()
            )
        terms: dict[str, torch.Tensor] = {}
        total = s.logits.new_zeros((), dtype=torch.float32)
        if self.use_logits:
            teacher_logits = batch["teacher_logits"] if "teacher_logits" in batch else t.logits  # type: ignore[union-attr]
            terms = distillation_loss(
                s.logits,
                teacher_logits,
                batch["labels"],
                kind=self.cfg.loss,
                temperature=value_at(self.cfg.temperature, progress),
                alpha=value_at(self.cfg.alpha, progress),
            )
            total = terms["loss"]
        if self.intermediate is not None:
            inter = self.intermediate(s, t, progress)
            total = total + inter["intermediate"]
            terms.update(inter)
        terms["loss"] = total
        return terms
