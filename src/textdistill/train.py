"""The one training loop.

Fine-tuning a teacher, distilling a student and training its no-distillation twin all run through
:func:`train_loop`; what differs is the *objective*, a callable ``(model, batch) -> {term: tensor}`` whose ``loss``
entry is optimised and whose every entry is logged. Devices, mixed precision, gradient accumulation and several
processes come from HF accelerate.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import torch
from torch import nn

from textdistill.config import DistillConfig, TrainingConfig
from textdistill.data import Collator, DistillDataset, train_loader
from textdistill.losses import distillation_loss, hard_label_loss


class Objective(Protocol):
    def __call__(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]: ...


def hard_label_objective(model: nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Plain fine-tuning: cross-entropy with the gold labels."""
    logits = model(**batch["student"]).logits
    ce = hard_label_loss(logits, batch["labels"])
    return {"loss": ce, "ce": ce}


@dataclass
class DistillationObjective:
    """``alpha * soft + (1 - alpha) * CE`` against teacher logits that come with the batch (precomputed) or from an
    online teacher forward pass (eval mode, no gradients)."""

    cfg: DistillConfig
    teacher: nn.Module | None = None

    def teacher_logits(self, batch: dict[str, Any]) -> torch.Tensor:
        if "teacher_logits" in batch:
            return batch["teacher_logits"]
        if self.teacher is None:
            raise RuntimeError("batch has no precomputed teacher logits and no online teacher was given")
        with torch.inference_mode():
            return self.teacher(**batch.get("teacher", batch["student"])).logits.float().clone()

    def __call__(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        student_logits = model(**batch["student"]).logits
        return distillation_loss(
            student_logits,
            self.teacher_logits(batch),
            batch["labels"],
            kind=self.cfg.loss,
            temperature=self.cfg.temperature,
            alpha=self.cfg.alpha,
        )


@dataclass
class LoopResult:
    best_metric: float
    best_step: int
    steps: int
    seconds: float
    evals: list[dict[str, Any]] = field(default_factory=list)


def _progress(total: int, desc: str) -> Any:
    from tqdm.auto import tqdm

    interactive = sys.stderr.isatty()
    return tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True, mininterval=0.5 if interactive else 30.0)


def train_loop(
    model: nn.Module,
    train_set: DistillDataset,
    collator: Collator,
    args: TrainingConfig,
    objective: Objective,
    evaluate: Callable[[nn.Module], dict[str, float]],
    metric: str,
    seed: int,
    log_path: Path,
    desc: str = "train",
    teacher: nn.Module | None = None,
) -> LoopResult:
    """Train ``model`` in place; at the end it holds the weights of its best evaluation.

    AdamW with linear warm-up and decay; evaluation every epoch or every ``eval_steps`` optimizer steps; each
    logged line of ``log_path`` (JSON) holds the step, epoch, learning rate and the mean of every loss term.
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from transformers import get_linear_schedule_with_warmup

    set_seed(seed)
    accelerator = Accelerator(
        mixed_precision=args.mixed_precision, gradient_accumulation_steps=args.gradient_accumulation_steps
    )
    loader = train_loader(
        train_set, collator, args.per_device_train_batch_size, args.group_by_length, seed, args.dataloader_num_workers
    )
    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")
    groups = [
        {"params": [p for n, p in model.named_parameters() if not n.endswith(no_decay)], "weight_decay": args.weight_decay},
        {"params": [p for n, p in model.named_parameters() if n.endswith(no_decay)], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=args.learning_rate, eps=args.adam_epsilon)
    steps_per_epoch = math.ceil(len(loader) / args.gradient_accumulation_steps)
    total_steps = args.max_steps or math.ceil(steps_per_epoch * args.num_train_epochs)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(args.warmup_ratio * total_steps), total_steps)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    if teacher is not None:
        teacher.to(accelerator.device).eval()

    best_metric, best_step, best_state = -math.inf, 0, None
    evals: list[dict[str, Any]] = []
    sums: dict[str, float] = {}
    count = 0
    step = 0
    started = time.perf_counter()

    def run_eval(epoch: float) -> None:
        nonlocal best_metric, best_step, best_state
        metrics = evaluate(accelerator.unwrap_model(model))
        record = {"step": step, "epoch": round(epoch, 3), **{f"eval_{k}": v for k, v in metrics.items()}}
        evals.append(record)
        log.write(json.dumps(record) + "\n")
        log.flush()
        if metrics[metric] > best_metric:
            best_metric, best_step = metrics[metric], step
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in accelerator.unwrap_model(model).state_dict().items()}
        bar.write(f"[{desc}] step {step} epoch {epoch:.2f}: {metric}={metrics[metric]:.4f} (best {best_metric:.4f})")

    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", encoding="utf-8") as log, _progress(total_steps, desc) as bar:
        model.train()
        while step < total_steps:
            for batch in loader:
                with accelerator.accumulate(model):
                    with accelerator.autocast():
                        terms = objective(model, batch)
                    accelerator.backward(terms["loss"])
                    if accelerator.sync_gradients and args.max_grad_norm is not None:
                        accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                for k, v in terms.items():
                    sums[k] = sums.get(k, 0.0) + float(v.detach())
                count += 1
                if not accelerator.sync_gradients:
                    continue
                step += 1
                bar.update(1)
                if step % args.logging_steps == 0 or step == total_steps:
                    means = {k: v / count for k, v in sums.items()}
                    record = {"step": step, "epoch": round(step / steps_per_epoch, 3), "lr": scheduler.get_last_lr()[0], **means}
                    log.write(json.dumps(record) + "\n")
                    bar.set_postfix(loss=f"{means['loss']:.4f}")
                    sums, count = {}, 0
                if args.eval_steps is not None and step % args.eval_steps == 0:
                    run_eval(step / steps_per_epoch)
                if step >= total_steps:
                    break
            if args.eval_steps is None and step < total_steps:
                run_eval(step / steps_per_epoch)
        if not evals or evals[-1]["step"] != step:
            run_eval(step / steps_per_epoch)

    unwrapped = accelerator.unwrap_model(model)
    if best_state is not None:
        unwrapped.load_state_dict(best_state)
    unwrapped.eval()
    return LoopResult(best_metric, best_step, step, time.perf_counter() - started, evals)
