"""The one training loop.

Fine-tuning a teacher, distilling a student and training its no-distillation twin all run through
:func:`train_loop`; what differs is the *objective*, a callable ``(model, batch) -> {term: tensor}`` whose ``loss``
entry is optimised and whose every entry is logged. Devices, mixed precision, gradient accumulation and several
processes come from HF accelerate.
"""

from __future__ import annotations

import copy
import io
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import torch
from torch import nn

from textdistill.config import DistillConfig, TrainingConfig, value_at
from textdistill.data import Collator, DistillDataset, train_loader
from textdistill.features import Features, IntermediateLosses
from textdistill.losses import distillation_loss, hard_label_loss
from textdistill.progress import progress


class Objective(Protocol):
    """``(model, batch, progress in [0, 1]) -> {term: scalar}``; the ``loss`` entry is optimised, all are logged.

    An objective that is an ``nn.Module`` may own trainable parameters (projections): the loop trains them too.
    """

    def __call__(self, model: nn.Module, batch: dict[str, Any], progress: float) -> dict[str, torch.Tensor]: ...


def hard_label_objective(model: nn.Module, batch: dict[str, Any], progress: float = 0.0) -> dict[str, torch.Tensor]:
    """Plain fine-tuning: cross-entropy with the gold labels."""
    logits = model(**batch["student"]).logits
    ce = hard_label_loss(logits, batch["labels"])
    return {"loss": ce, "ce": ce}


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

    def hold_teacher(self, teacher: nn.Module) -> None:
        """Use ``teacher`` (e.g. a bf16 copy of the same model) from now on."""
        self._teacher[0] = teacher

    def _teacher_features(self, batch: dict[str, Any]) -> Features | None:
        if self.teacher is None:
            return None
        inputs = batch.get("teacher", batch["student"])
        with torch.inference_mode():
            if self.intermediate is not None:
                feats = self.intermediate.features(self.teacher, inputs, "teacher")
            else:
                feats = Features(logits=self.teacher(**inputs).logits, mask=inputs["attention_mask"].bool())
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
            s = Features(logits=model(**batch["student"]).logits, mask=batch["student"]["attention_mask"].bool())
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


@dataclass
class LoopResult:
    best_metric: float
    best_step: int
    steps: int
    seconds: float
    evals: list[dict[str, Any]] = field(default_factory=list)
    samples: int = 0  # training examples seen (all processes)
    step_seconds: float = 0.0  # wall time of the training steps alone (evaluation excluded)

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.step_seconds if self.step_seconds else 0.0


NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")


def adamw_param_groups(named: list[tuple[str, nn.Parameter]], weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on everything but biases and normalisation weights (BERT's convention)."""
    return [
        {"params": [p for n, p in named if not n.endswith(NO_DECAY)], "weight_decay": weight_decay},
        {"params": [p for n, p in named if n.endswith(NO_DECAY)], "weight_decay": 0.0},
    ]


def held_teacher_dtype(mixed_precision: str, device: torch.device) -> torch.dtype | None:
    """The dtype an online teacher is held in during training: that of the mixed precision (bf16 on GPU or CPU, fp16
    on GPU); otherwise None (as loaded). Autocast recasts weights that need no gradient at every step; holding them
    cast saves that work and half the teacher's memory (on a CPU with AMX, a bf16 MiniLM-L6 forward is ~2x faster
    held in bf16 than under autocast alone)."""
    if mixed_precision == "bf16" and device.type in ("cuda", "cpu"):
        return torch.bfloat16
    if mixed_precision == "fp16" and device.type == "cuda":
        return torch.float16
    return None


def use_cpu() -> bool:
    """No GPU (or ACCELERATE_USE_CPU set): run on the CPU, several processes over gloo when launched with torchrun or
    ``accelerate launch --multi_gpu``."""
    return not torch.cuda.is_available() or os.environ.get("ACCELERATE_USE_CPU", "").lower() in {"1", "true", "yes"}


def process_state() -> Any:
    """accelerate's process state (rank, world size), created the same way everywhere in this package."""
    from accelerate import PartialState

    return PartialState(cpu=use_cpu())


def _average_gradients(params: list[nn.Parameter]) -> None:
    import torch.distributed as dist

    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad /= dist.get_world_size()


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    return batch.to(device) if isinstance(batch, torch.Tensor) else batch


def train_loop(
    model: nn.Module,
    train_set: DistillDataset,  # or any dataset with a loader() method (MultiTaskDataset)
    collator: Collator,
    args: TrainingConfig,
    objective: Objective,
    evaluate: Callable[[nn.Module], dict[str, float]],
    metric: str,
    seed: int,
    log_path: Path,
    desc: str = "train",
    teacher: nn.Module | None = None,
    keep_best: bool = True,
) -> LoopResult:
    """Train ``model`` in place; at the end it holds the weights of its best evaluation (or its last weights when
    ``keep_best`` is False, e.g. after a stage that does not train the prediction layer).

    AdamW with linear warm-up and decay; evaluation every epoch or every ``eval_steps`` optimizer steps; each
    logged line of ``log_path`` (JSON) holds the step, epoch, learning rate and the mean of every loss term.
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from transformers import get_linear_schedule_with_warmup

    set_seed(seed)
    process_state()
    accelerator = Accelerator(
        mixed_precision=args.mixed_precision,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        cpu=use_cpu(),
        dynamo_backend=args.torch_compile_backend if args.torch_compile else "no",
    )
    on_gpu = accelerator.device.type == "cuda"
    # a dataset that batches itself (multi-task: one task per batch) says how; any other gets shuffled batches
    make_loader = getattr(train_set, "loader", None) or (lambda *a, **k: train_loader(train_set, *a, **k))
    loader = make_loader(
        collator, args.per_device_train_batch_size, args.group_by_length, seed, args.dataloader_num_workers,
        pin_memory=on_gpu,
    )  # fmt: skip
    if isinstance(objective, nn.Module):  # it may own trainable projections: set them up on one real batch
        objective.to(accelerator.device)
        if hasattr(objective, "setup"):
            first = collator([train_set[i] for i in range(min(len(train_set), args.per_device_train_batch_size))])
            objective.setup(model.to(accelerator.device), _to_device(first, accelerator.device))
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if isinstance(objective, nn.Module):
        named += [(f"objective.{n}", p) for n, p in objective.named_parameters() if p.requires_grad]
    groups = adamw_param_groups(named, args.weight_decay)
    params = [p for g in groups for p in g["params"]]
    # One fused kernel for the whole update, on GPU and CPU alike: on the CPU the per-tensor loop of the default AdamW
    # costs as much as the backward pass of a small student (its embedding matrix dominates); fused is ~5x faster.
    fused = accelerator.device.type in ("cuda", "cpu")
    optimizer = torch.optim.AdamW(groups, lr=args.learning_rate, eps=args.adam_epsilon, fused=fused)
    # accelerate steps a prepared scheduler once per process at each optimizer step, so the schedule is laid out over
    # the single-process step count; the loop itself counts steps on its own shard of the data.
    n_proc = accelerator.num_processes
    schedule_steps = args.max_steps * n_proc if args.max_steps else math.ceil(len(loader) / args.gradient_accumulation_steps * args.num_train_epochs)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(args.warmup_ratio * schedule_steps), schedule_steps)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    steps_per_epoch = math.ceil(len(loader) / args.gradient_accumulation_steps)
    total_steps = args.max_steps or math.ceil(steps_per_epoch * args.num_train_epochs)
    if teacher is not None:
        teacher.to(accelerator.device).eval()
        held = held_teacher_dtype(args.mixed_precision, accelerator.device)
        cast = held is not None and next(teacher.parameters()).dtype != held
        if cast and isinstance(objective, DistillationObjective) and objective.teacher is teacher:
            # the teacher only runs forward: the loop holds a half-precision copy (no weight casts at every step);
            # the caller's teacher stays as it was
            objective.hold_teacher(copy.deepcopy(teacher).to(held))

    best_metric, best_step, best_state = -math.inf, 0, None
    evals: list[dict[str, Any]] = []
    sums: dict[str, float] = {}
    count = 0
    step = 0
    started = time.perf_counter()

    eval_seconds = 0.0
    samples = 0

    def run_eval(epoch: float) -> None:
        nonlocal best_metric, best_step, best_state, eval_seconds
        eval_started = time.perf_counter()
        metrics = evaluate(accelerator.unwrap_model(model, keep_torch_compile=False))
        record = {"step": step, "epoch": round(epoch, 3), **{f"eval_{k}": v for k, v in metrics.items()}}
        evals.append(record)
        log.write(json.dumps(record) + "\n")
        log.flush()
        if metrics[metric] > best_metric:
            best_metric, best_step = metrics[metric], step
            if keep_best:
                best_state = {k: v.detach().to("cpu", copy=True) for k, v in accelerator.unwrap_model(model, keep_torch_compile=False).state_dict().items()}
        bar.write(f"[{desc}] step {step} epoch {epoch:.2f}: {metric}={metrics[metric]:.4f} (best {best_metric:.4f})")
        eval_seconds += time.perf_counter() - eval_started

    main = accelerator.is_main_process  # only the main process writes the log and shows progress
    if main:
        log_path.parent.mkdir(parents=True, exist_ok=True)
    extra = [p for p in objective.parameters() if p.requires_grad] if isinstance(objective, nn.Module) else []
    with (open(log_path, "a", encoding="utf-8") if main else io.StringIO()) as log, progress(total_steps, desc, quiet=not main) as bar:
        model.train()
        while step < total_steps:
            for batch in loader:
                with accelerator.accumulate(model):
                    with accelerator.autocast():
                        terms = objective(model, batch, step / total_steps)
                    accelerator.backward(terms["loss"])
                    if extra and accelerator.num_processes > 1 and accelerator.sync_gradients:
                        _average_gradients(extra)  # projections live outside the DDP-wrapped student
                    if accelerator.sync_gradients and args.max_grad_norm is not None:
                        accelerator.clip_grad_norm_(params, args.max_grad_norm)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                for k, v in terms.items():
                    sums[k] = sums.get(k, 0.0) + float(v.detach())
                count += 1
                samples += len(batch["labels"]) * accelerator.num_processes
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

    if teacher is not None and isinstance(objective, DistillationObjective):
        objective.hold_teacher(teacher)
    unwrapped = accelerator.unwrap_model(model, keep_torch_compile=False)
    if best_state is not None:
        unwrapped.load_state_dict(best_state)
    unwrapped.eval()
    seconds = time.perf_counter() - started
    return LoopResult(best_metric, best_step, step, seconds, evals, samples, seconds - eval_seconds)
