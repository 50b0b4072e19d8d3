"""The one training loop.

Fine-tuning a teacher, distilling a student and training its no-distillation twin all run through
:func:`train_loop`; what differs is the *objective*, a callable ``(model, batch) -> {term: tensor}`` whose ``loss``
entry is optimised and whose every entry is logged. Devices, mixed precision, gradient accumulation and several
processes come from HF accelerate.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import dataclasses
import functools
import io
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import torch
from torch import nn
from transformers import PreTrainedModel

from textdistill.config import FALLBACK_LEARNING_RATE, TrainingConfig
from textdistill.cpu_malloc import reuse_freed_memory
from textdistill.data import Collator, DistillDataset, train_loader
from textdistill.dropout import fast_cpu_dropout
from textdistill.errors import TextDistillError
from textdistill.files import pickle_refusal
from textdistill.first_token import first_token_only
from textdistill.progress import progress


class Objective(Protocol):
    """``(model, batch, progress in [0, 1]) -> {term: scalar}``; the ``loss`` entry is optimised, all are logged.

    An objective that is an ``nn.Module`` may own trainable parameters (projections): the loop trains them too.
    """

    def __call__(self, model: nn.Module, batch: dict[str, Any], progress: float) -> dict[str, torch.Tensor]: ...


MASKLESS_DEVICES = frozenset({"cuda"})  # where model_inputs leaves out the mask of a batch with no padded row


def model_inputs(model: nn.Module, batch: dict[str, Any], side: str = "student") -> dict[str, torch.Tensor]:
    """``batch[side]`` as ``model``'s keyword arguments; on a GPU, without the attention mask when the collator found
    no padded row on that side and ``model`` is a transformers model (for which no mask means every position is
    attended, as the all-ones mask says). Its attention then runs without a mask (the flash kernel), and transformers
    does not check on the host whether the mask pads anything (a wait for the device at every forward pass). On the
    CPU neither applies (the mask is checked where it lies; side by side, no mask was no faster), so batches keep it."""
    inputs = batch[side]
    inner = getattr(model, "module", model)  # DistributedDataParallel
    inner = getattr(inner, "_orig_mod", inner)  # torch.compile
    ids = inputs.get("input_ids")
    maskless = (
        isinstance(ids, torch.Tensor) and ids.device.type in MASKLESS_DEVICES and isinstance(inner, PreTrainedModel)
    )
    if maskless and batch.get("unpadded", {}).get(side):
        return {k: v for k, v in inputs.items() if k != "attention_mask"}
    return inputs


def reads_logits_only(objective: Objective) -> bool:
    """Whether ``objective`` reads nothing of its models but their logits (so their last layer may be cut to the first
    token: :mod:`textdistill.first_token`): any objective whose ``reads_logits_only`` says so (plain fine-tuning
    does)."""
    return getattr(objective, "reads_logits_only", False) is True


@dataclass
class LoopResult:
    best_metric: float
    best_step: int
    steps: int
    seconds: float
    evals: list[dict[str, Any]] = field(default_factory=list)
    samples: int = 0  # training examples seen (all processes)
    step_seconds: float = 0.0  # wall time of the training steps alone (evaluation excluded)
    # the same after the first WARMUP_STEPS steps (start-up, loader workers, compilation and autotuning excluded)
    steady_samples: int = 0
    steady_seconds: float = 0.0
    # why training ended before its last step: "patience" (no better evaluation in early_stopping_patience ones),
    # "time" (max_train_minutes), or None (it ran its steps)
    stopped: str | None = None
    steps_per_epoch: int = 0
    training: dict[str, Any] = field(default_factory=dict)  # how it was trained, for the report (filled by its caller)

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.step_seconds if self.step_seconds else 0.0

    @property
    def steady_samples_per_second(self) -> float:
        return self.steady_samples / self.steady_seconds if self.steady_seconds else 0.0


WARMUP_STEPS = 10  # steps left out of LoopResult's steady-state rate (the first batches pay one-off costs)


NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")


def adamw_param_groups(named: list[tuple[str, nn.Parameter]], weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on everything but biases and normalisation weights (BERT's convention)."""
    return [
        {"params": [p for n, p in named if not n.endswith(NO_DECAY)], "weight_decay": weight_decay},
        {"params": [p for n, p in named if n.endswith(NO_DECAY)], "weight_decay": 0.0},
    ]


def resolve_mixed_precision(setting: str) -> str:
    """``training.mixed_precision`` as the loop runs it: ``auto`` is, under ``accelerate launch``, the precision the
    launcher was given (``ACCELERATE_MIXED_PRECISION``, which it always sets: ``no`` unless told otherwise); else bf16
    on a CUDA GPU that supports it, and no mixed precision on the CPU. Any other setting stands as it is."""
    if setting != "auto":
        return setting
    launched = os.environ.get("ACCELERATE_MIXED_PRECISION", "").lower()
    if launched in ("no", "fp16", "bf16"):
        return launched
    return "bf16" if not use_cpu() and torch.cuda.is_bf16_supported() else "no"


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


# --------------------------------------------------------------------------------------------------------------------
# A guest in the user's process: what a call changes in process-wide state is put back when it returns


def _accelerate_states(partial: bool) -> list[dict[str, Any]]:
    """accelerate's process-wide settings: each class shares one dict among all its instances (a user's Accelerator
    reads its settings there too); with ``partial``, the process state (device, process group) as well."""
    from accelerate.state import AcceleratorState, GradientState, PartialState

    return [AcceleratorState._shared_state, GradientState._shared_state] + (
        [PartialState._shared_state] if partial else []
    )


@contextlib.contextmanager
def kept_accelerate_state(partial: bool = False) -> Iterator[None]:
    """Within the block accelerate's settings may change (a loop resets them for its own precision and plugins); on
    leaving, its shared dicts hold again what they held before, in place. ``partial``: the process state too, unless
    a process group was started meanwhile (it stays, with the state that knows it)."""
    import torch.distributed as dist

    shared = _accelerate_states(partial)
    before = [dict(d) for d in shared]
    grouped = dist.is_available() and dist.is_initialized()
    try:
        yield
    finally:
        started = not grouped and dist.is_available() and dist.is_initialized()
        for d, saved in zip(shared, before):
            if partial and started and d is shared[-1]:
                continue
            d.clear()
            d.update(saved)


@contextlib.contextmanager
def kept_process_state() -> Iterator[None]:
    """Around a call of the Python API (``textdistill.distill`` and the rest): on leaving, Python's, NumPy's and
    torch's random states (runs seed them) and accelerate's settings and process state are as they were before."""
    states = random_states()
    try:
        with kept_accelerate_state(partial=True):
            yield
    finally:
        set_random_states(states)


def within(
    context: Callable[[], contextlib.AbstractContextManager[Any]], command: Callable[..., Any]
) -> Callable[..., Any]:
    """``command``, each call run within a fresh ``context()`` and a copy of the caller's context variables (so a
    setting the call makes there, such as the config's model-loading policy, ends with it)."""

    @functools.wraps(command)
    def call(*args: Any, **kwargs: Any) -> Any:
        def run() -> Any:
            with context():
                return command(*args, **kwargs)

        return contextvars.copy_context().run(run)

    return call


def as_guest(command: Callable[..., Any]) -> Callable[..., Any]:
    """``command`` run within :func:`kept_process_state` (what ``import textdistill`` hands out as its API)."""
    return within(kept_process_state, command)


def _average_gradients(params: list[nn.Parameter]) -> None:
    import torch.distributed as dist

    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad /= dist.get_world_size()


def clip_in_step(optimizer: torch.optim.Optimizer, params: list[nn.Parameter], max_norm: float) -> None:
    """``clip_grad_norm_(params, max_norm)`` left to the optimizer's next fused step: it divides each gradient by
    ``grad_scale`` as it reads it (the slot a GradScaler uses), so the gradients are not rewritten in a pass of
    their own. The update is the clipped one: ``grad_scale`` is 1 / torch's clip coefficient,
    max(1, (norm + 1e-6) / max_norm)."""
    grads = [p.grad for p in params if p.grad is not None]
    if grads and all(g.device.type == "cpu" and g.dtype == torch.float32 and g.is_contiguous() for g in grads):
        # BLAS dot products: about 1.5x faster than torch's norm kernel on the CPU (float32 sums of squares, as it has)
        norm = torch.stack([torch.dot(g.view(-1), g.view(-1)) for g in grads]).sum().sqrt()
    else:
        norm = torch.nn.utils.get_total_norm(grads, 2.0)
    optimizer.grad_scale = torch.clamp((norm.float() + 1e-6) / max_norm, min=1.0)  # type: ignore[attr-defined]


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    return batch.to(device) if isinstance(batch, torch.Tensor) else batch


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT / SIGTERM during training: a checkpoint was written at ``step``; ``--resume`` continues from it."""

    def __init__(self, step: int, folder: Path | None) -> None:
        where = (
            (f"checkpoint at step {step} in {folder}; rerun with --resume to continue") if folder else f"at step {step}"
        )
        super().__init__(f"training stopped by a signal: {where}")
        self.step, self.folder = step, folder


class Checkpoints:
    """A loop's checkpoints in ``folder``: ``checkpoint.pt`` (the latest, replaced atomically: a temporary file, then
    a rename) while training, ``final.pt`` (the trained weights and the loop's result) once it is done. Read back with
    ``torch.load(weights_only=True)``: tensors, numbers and strings only, never pickled code. A file that is not a
    checkpoint of ours (unreadable, a pickle of anything else, other keys) or whose tensors do not fit the model is an
    error naming it; a failed write (a full disk) removes its temporary file and names the last good checkpoint."""

    KEYS = {
        "checkpoint.pt": frozenset(
            {
                "step",
                "epoch",
                "batches",
                "model",
                "optimizer",
                "scheduler",
                "objective",
                "best_metric",
                "best_step",
                "best_state",
                "evals",
                "sums",
                "count",
                "samples",
                "elapsed",
                "eval_seconds",
                "log_bytes",
                "random",
            }
        ),
        "final.pt": frozenset({"model", "result"}),
    }

    def __init__(self, folder: Path | None, main: bool) -> None:
        self.folder, self.main = folder, main

    def _write(self, name: str, state: dict[str, Any]) -> None:
        if self.folder is None or not self.main:
            return
        path = self.folder / name
        tmp = path.with_name(name + ".tmp")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            torch.save(state, tmp)
            os.replace(tmp, path)
        except (OSError, RuntimeError) as exc:
            # torch.save reports a failed write (ENOSPC, EIO) as a RuntimeError from its zip writer, not an OSError
            text = " ".join(str(exc).split())
            if isinstance(exc, RuntimeError) and not any(
                m in text for m in ("PytorchStreamWriter", "inline_container", "unexpected pos", "write")
            ):
                tmp.unlink(missing_ok=True)
                raise
            tmp.unlink(missing_ok=True)
            why = (exc.strerror or text) if isinstance(exc, OSError) else f"torch.save: {text[:120]}; is the disk full?"
            raise TextDistillError(f"checkpoint: cannot write {path} ({why}); {self._last_good()}") from None

    def _last_good(self) -> str:
        """What a failed write leaves: the last checkpoint, named with its step, or none."""
        try:
            last = self.load("checkpoint.pt")
        except TextDistillError:
            last = None
        assert self.folder is not None
        return (
            (f"the last good checkpoint {self.folder / 'checkpoint.pt'} (step {last['step']}) is intact")
            if last
            else "no earlier checkpoint exists"
        )

    def load(self, name: str) -> dict[str, Any] | None:
        """A checkpoint of ours, or None when there is none; anything else in its place is an error naming it."""
        path = self.folder / name if self.folder is not None else None
        if path is None or not (path.exists() or path.is_symlink()):
            return None
        not_ours = f"--resume: {path} is not a textdistill checkpoint"
        with warnings.catch_warnings():  # torch's note on a pickle's protocol: the weights-only check decides, not it
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as exc:  # noqa: BLE001  (whatever is in the file, it is not a checkpoint this loop wrote)
                unsafe, why = pickle_refusal(
                    exc, path
                )  # never torch's own text: it advises turning the weights-only check off
                if isinstance(exc, OSError) and exc.strerror:
                    why = exc.strerror
                if unsafe:
                    raise TextDistillError(
                        f"{not_ours}: refused as unsafe ({why}, and loading it could run code); "
                        f"remove it, or the "
                        "run's .partial folder to start over"
                    ) from None
                raise TextDistillError(
                    f"{not_ours} (unreadable: {why}); remove it, or the run's .partial folder to start over"
                ) from None
        missing = sorted(self.KEYS.get(name, frozenset()) - set(state)) if isinstance(state, dict) else ["a dict"]
        if missing:
            raise TextDistillError(
                f"{not_ours} (it lacks "
                f"{', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}); remove it, "
                "or the run's .partial folder to start over"
            )
        return state

    def restore_weights(self, model: nn.Module, weights: Any, name: str) -> None:
        """Load a checkpoint's weights into ``model``; tensors that do not fit it (another model wrote them) are an
        error naming the checkpoint and the first tensor that differs."""
        path = self.folder / name if self.folder is not None else Path(name)
        own = model.state_dict()
        if not isinstance(weights, dict):
            raise TextDistillError(
                f"--resume: {path} is not a textdistill checkpoint (its model weights are not a state dict)"
            )
        resized = [
            (k, tuple(v.shape), tuple(own[k].shape))
            for k, v in weights.items()
            if k in own and isinstance(v, torch.Tensor) and tuple(v.shape) != tuple(own[k].shape)
        ]
        missing, unexpected = [k for k in own if k not in weights], [k for k in weights if k not in own]
        fix = (
            "; it was written for another model (did teacher.model's files change?); remove the run's .partial "
            "folder to start over"
        )
        if resized:
            key, there, here = resized[0]
            raise TextDistillError(
                f"--resume: {path} does not fit the model: {key} has shape {list(there)} there, "
                f"{list(here)} in the model "
                f"({len(resized)} such tensors){fix}"
            )
        if missing or unexpected:
            first = f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}"
            raise TextDistillError(
                f"--resume: {path} does not fit the model: {len(missing)} tensors missing, "
                f"{len(unexpected)} unexpected "
                f"(e.g. {first}){fix}"
            )
        model.load_state_dict(weights)

    def restore(
        self, saved: dict[str, Any], model: nn.Module, optimizer: Any, scheduler: Any, objective: nn.Module | None
    ) -> None:
        """The model, optimizer, scheduler (and trainable objective) as ``checkpoint.pt`` holds them."""
        self.restore_weights(model, saved["model"], "checkpoint.pt")
        try:
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
            if objective is not None:
                objective.load_state_dict(saved["objective"])
        except (ValueError, KeyError, TypeError, RuntimeError, IndexError) as exc:
            path = self.folder / "checkpoint.pt" if self.folder is not None else "checkpoint.pt"
            raise TextDistillError(
                f"--resume: {path} does not fit this run (optimizer or objective state: "
                f"{' '.join(str(exc).split())[:120]}); remove the run's .partial folder to start "
                f"over"
            ) from None

    def restore_final(self, model: nn.Module, done: dict[str, Any]) -> "LoopResult":
        """The weights and result ``final.pt`` holds (a loop that finished before the run was interrupted)."""
        self.restore_weights(model, done["model"], "final.pt")
        try:
            return LoopResult(**json.loads(done["result"]))
        except (TypeError, ValueError) as exc:
            path = self.folder / "final.pt" if self.folder is not None else "final.pt"
            raise TextDistillError(
                f"--resume: {path} is not a textdistill checkpoint (its result: {' '.join(str(exc).split())[:120]})"
            ) from None

    def save(self, state: dict[str, Any]) -> None:
        self._write("checkpoint.pt", state)

    def finish(self, model_state: dict[str, torch.Tensor], result: "LoopResult") -> None:
        """Record the trained weights and the result; the in-progress checkpoint is no longer needed."""
        self._write("final.pt", {"model": model_state, "result": json.dumps(dataclasses.asdict(result))})
        if self.folder is not None and self.main:
            (self.folder / "checkpoint.pt").unlink(missing_ok=True)


def random_states() -> dict[str, Any]:
    """Python's, NumPy's and torch's random states (CPU and GPU), in types ``weights_only`` loading accepts."""
    import random

    import numpy as np

    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    out = {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), pos, has_gauss, gauss],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_random_states(states: dict[str, Any]) -> None:
    import random

    import numpy as np

    random.setstate(states["python"])
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class _StopSignals:
    """While training: SIGINT and SIGTERM only raise a flag; the loop checkpoints at the next step and stops."""

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "_StopSignals":
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._raise_flag)
        return self

    def _raise_flag(self, signum: int, frame: Any) -> None:
        self.requested = True

    def __exit__(self, *exc: Any) -> None:
        import signal

        for sig, handler in self._old.items():
            signal.signal(sig, handler)


@functools.partial(within, kept_accelerate_state)  # accelerate's settings as they were before the loop
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
    checkpoint_dir: Path | None = None,
    resume: bool = False,
) -> LoopResult:
    """Train ``model`` in place; at the end it holds the weights of its best evaluation (or its last weights when
    ``keep_best`` is False, e.g. after a stage that does not train the prediction layer).

    AdamW with linear warm-up and decay; evaluation every epoch or every ``eval_steps`` optimizer steps; each
    logged line of ``log_path`` (JSON) holds the step, epoch, learning rate and the mean of every loss term.

    With ``checkpoint_dir``: a checkpoint after every evaluation and every ``save_steps`` steps, and on SIGINT /
    SIGTERM (then :class:`TrainingInterrupted`). ``resume`` continues from the last one: the batches of each epoch
    come from a generator seeded by (seed, epoch) and the random states are restored before the next batch, so on
    the CPU the run ends with the same weights and metrics as one never interrupted; a loop that had finished
    returns its result without training again.
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import DataLoaderConfiguration, DistributedType, TorchDynamoPlugin, set_seed
    from transformers import get_linear_schedule_with_warmup

    set_seed(seed)
    state = process_state()
    ckpt = Checkpoints(checkpoint_dir, state.is_main_process)
    done = ckpt.load("final.pt") if resume else None
    if done is not None:  # this loop finished before the interruption: its weights and result as they were
        result = ckpt.restore_final(model, done)
        model.eval()
        return result
    saved = ckpt.load("checkpoint.pt") if resume else None
    trackers = list(args.report_to)  # installed: checked with the config
    compile_mode = None if args.torch_compile_mode == "default" else args.torch_compile_mode
    # each loop sets its own precision and plugins (say a teacher fine-tuned in fp32, then a student in bf16, in one
    # process); accelerate keeps them in a process-wide state that refuses a change otherwise. The process group stays.
    AcceleratorState._reset_state()
    precision = resolve_mixed_precision(args.mixed_precision)
    accelerator = Accelerator(
        mixed_precision=precision,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        cpu=use_cpu(),
        dynamo_plugin=TorchDynamoPlugin(
            backend=args.torch_compile_backend if args.torch_compile else "no", mode=compile_mode
        ),
        # batches go to the GPU from pinned memory without waiting: a blocking copy would hold the CPU until the
        # previous step's kernels are done, so it could never queue the next step's while the GPU works
        dataloader_config=DataLoaderConfiguration(non_blocking=not use_cpu()),
        log_with=trackers or None,
        project_dir=str(log_path.parent / "tracking") if trackers else None,
    )
    if trackers:  # the hyper-parameters as the trackers' run configuration (scalars only)
        hparams = {k: v for k, v in args.model_dump(mode="json").items() if isinstance(v, (bool, int, float, str))}
        # resuming: TensorBoard drops what the interrupted run logged after its checkpoint (logged again, once)
        purge = (
            {"tensorboard": {"purge_step": saved["step"] + 1}}
            if saved is not None and "tensorboard" in trackers
            else {}
        )
        accelerator.init_trackers(desc, config=hparams, init_kwargs=purge)
    on_gpu = accelerator.device.type == "cuda"
    # a dataset that batches itself (multi-task: one task per batch) says how; any other gets shuffled batches
    make_loader = getattr(train_set, "loader", None) or (lambda *a, **k: train_loader(train_set, *a, **k))
    loader = make_loader(
        collator,
        args.per_device_train_batch_size,
        args.group_by_length,
        seed,
        args.dataloader_num_workers,
        pin_memory=on_gpu,
    )
    epoch_generator = getattr(loader, "epoch_generator", None)
    epoch_sampler = getattr(loader, "batch_sampler", None)

    def start_epoch(epoch: int) -> None:  # each epoch's order depends on (seed, epoch) alone
        if epoch_generator is not None:
            epoch_generator.manual_seed(seed + 1000003 * epoch)
        if hasattr(epoch_sampler, "set_epoch"):
            epoch_sampler.set_epoch(epoch)

    ours = False
    if teacher is not None:  # on the device before the objective's setup runs it there
        teacher.to(accelerator.device).eval()
        held = held_teacher_dtype(precision, accelerator.device)
        cast = held is not None and next(teacher.parameters()).dtype != held
        # an objective that runs this teacher itself and lets the loop swap it (hold_teacher): the classic one
        ours = getattr(objective, "teacher", None) is teacher and hasattr(objective, "hold_teacher")
        if cast and ours:
            # the teacher only runs forward: the loop holds a half-precision copy (no weight casts at every step);
            # the caller's teacher stays as it was
            objective.hold_teacher(copy.deepcopy(teacher).to(held))
        if args.torch_compile and ours and reads_logits_only(objective):
            # compiled like the student (its forward is as launch-bound); not when features are tapped from it
            objective.hold_teacher(
                torch.compile(objective.teacher, backend=args.torch_compile_backend, mode=compile_mode)
            )
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
    if args.learning_rate is None:  # (one-task runs choose it before they get here: textdistill.tuning)
        print(f"[{desc}] learning rate not given: {FALLBACK_LEARNING_RATE:g}", file=sys.stderr)
    lr = args.learning_rate if args.learning_rate is not None else FALLBACK_LEARNING_RATE
    optimizer = torch.optim.AdamW(groups, lr=lr, eps=args.adam_epsilon, fused=fused)
    # accelerate steps a prepared scheduler once per process at each optimizer step, so the schedule is laid out over
    # the single-process step count; the loop itself counts steps on its own shard of the data.
    n_proc = accelerator.num_processes
    schedule_steps = (
        args.max_steps * n_proc
        if args.max_steps
        else math.ceil(len(loader) / args.gradient_accumulation_steps * args.num_train_epochs)
    )
    scheduler = get_linear_schedule_with_warmup(optimizer, int(args.warmup_ratio * schedule_steps), schedule_steps)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    # the clipping done inside the fused step (clip_in_step) where nothing else scales or shards the gradients: no
    # GradScaler (fp16), and one process or DDP (its gradients are averaged by the time they are clipped)
    clip_fused = (
        fused
        and accelerator.scaler is None
        and accelerator.distributed_type in (DistributedType.NO, DistributedType.MULTI_CPU, DistributedType.MULTI_GPU)
    )
    steps_per_epoch = math.ceil(len(loader) / args.gradient_accumulation_steps)
    total_steps = args.max_steps or math.ceil(steps_per_epoch * args.num_train_epochs)

    unwrap = lambda: accelerator.unwrap_model(model, keep_torch_compile=False)  # noqa: E731
    best_metric, best_step, best_state = -math.inf, 0, None
    evals: list[dict[str, Any]] = []
    sums: dict[str, Any] = {}  # running sums of the loss terms since the last log line (tensors on the device)
    count = 0
    step = 0
    epoch, skip = 0, 0  # the epoch under way and how many of its batches are done
    elapsed, eval_seconds, samples = 0.0, 0.0, 0
    main = accelerator.is_main_process  # only the main process writes the log and shows progress
    if main:
        log_path.parent.mkdir(parents=True, exist_ok=True)
    if saved is not None:
        ckpt.restore(saved, unwrap(), optimizer, scheduler, objective if isinstance(objective, nn.Module) else None)
        step, epoch, skip = saved["step"], saved["epoch"], saved["batches"]
        best_metric, best_step, best_state = saved["best_metric"], saved["best_step"], saved["best_state"]
        evals, sums, count = json.loads(saved["evals"]), json.loads(saved["sums"]), saved["count"]
        elapsed, eval_seconds, samples = saved["elapsed"], saved["eval_seconds"], saved["samples"]
        if main and log_path.exists():  # the log as it was at the checkpoint: no line twice
            with open(log_path, "r+b") as f:
                f.truncate(saved["log_bytes"])
    started = time.perf_counter() - elapsed
    # early stopping reads the dev metric; a stage that does not train the prediction layer (keep_best off) runs on
    patience = args.early_stopping_patience if keep_best else None
    stopped: str | None = None
    if patience is not None and evals and sum(e["step"] > best_step for e in evals) >= patience:
        stopped = "patience"  # resumed from the checkpoint written right after the early stop

    def checkpoint(batches: int) -> None:
        log.flush()
        ckpt.save(
            {
                "step": step,
                "epoch": epoch,
                "batches": batches,
                "model": unwrap().state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "objective": objective.state_dict() if isinstance(objective, nn.Module) else {},
                "best_metric": best_metric,
                "best_step": best_step,
                "best_state": best_state,
                "evals": json.dumps(evals),
                "sums": json.dumps({k: float(v) for k, v in sums.items()}),
                "count": count,
                "samples": samples,
                "elapsed": time.perf_counter() - started,
                "eval_seconds": eval_seconds,
                "log_bytes": log.tell() if main else 0,
                "random": random_states(),
            }
        )

    def track(record: dict[str, Any]) -> None:
        if trackers:
            accelerator.log(
                {k: v for k, v in record.items() if k != "step" and isinstance(v, (int, float))}, step=record["step"]
            )

    sync = torch.cuda.synchronize if on_gpu else (lambda: None)  # so queued training kernels count as training time
    warm: tuple[float, float, int] | None = None  # (time, eval seconds, samples) when WARMUP_STEPS steps were done

    def run_eval(at_epoch: float) -> None:
        nonlocal best_metric, best_step, best_state, eval_seconds, stopped
        sync()
        eval_started = time.perf_counter()
        metrics = evaluate(unwrap())
        record = {"step": step, "epoch": round(at_epoch, 3), **{f"eval_{k}": v for k, v in metrics.items()}}
        evals.append(record)
        log.write(json.dumps(record) + "\n")
        log.flush()
        track(record)
        if metrics[metric] > best_metric:
            best_metric, best_step = metrics[metric], step
            if keep_best:
                best_state = {k: v.detach().to("cpu", copy=True) for k, v in unwrap().state_dict().items()}
        bar.write(f"[{desc}] step {step} epoch {at_epoch:.2f}: {metric}={metrics[metric]:.4f} (best {best_metric:.4f})")
        eval_seconds += time.perf_counter() - eval_started
        # (counted from the log of evaluations, so a resumed run stops where the uninterrupted one would)
        if patience is not None and sum(e["step"] > best_step for e in evals) >= patience and step < total_steps:
            stopped = "patience"
            bar.write(
                f"[{desc}] early stop at step {step}: no better {metric} in {patience} evaluations; "
                f"keeping step {best_step} ({best_metric:.4f})"
            )

    extra = [p for p in objective.parameters() if p.requires_grad] if isinstance(objective, nn.Module) else []
    try:
        fast_masks = args.fast_dropout and not args.torch_compile and accelerator.device.type == "cpu"
        cut = args.first_token_only and reads_logits_only(objective)
        # modes that replay CUDA graphs: each step starts a new iteration of torch's graph trees explicitly, not by
        # their heuristic (a new one at each compiled call with no backward pending); nothing reads a step's outputs
        # after it (the online teacher's logits are copied before the student runs)
        graphs = args.torch_compile and on_gpu and args.torch_compile_mode in ("reduce-overhead", "max-autotune")
        with (
            open(log_path, "a", encoding="utf-8") if main else io.StringIO() as log,
            progress(total_steps, desc, quiet=not main) as bar,
            _StopSignals() as stop,
            fast_cpu_dropout(unwrap(), fast_masks),
            first_token_only(unwrap(), getattr(objective, "teacher", None), enabled=cut),
            reuse_freed_memory(args.reuse_cpu_memory and accelerator.device.type == "cpu"),
        ):
            bar.update(step)
            model.train()
            while step < total_steps and not stopped:
                start_epoch(epoch)
                for i, batch in enumerate(loader):
                    if i < skip:  # resumed mid-epoch: these batches were trained on before the checkpoint
                        continue
                    if saved is not None:  # the random states of the checkpoint, right before its next batch
                        set_random_states(saved["random"])
                        saved = None
                    if graphs:
                        torch.compiler.cudagraph_mark_step_begin()
                    with accelerator.accumulate(model):
                        with accelerator.autocast():
                            terms = objective(model, batch, step / total_steps)
                        accelerator.backward(terms["loss"])
                        if extra and accelerator.num_processes > 1 and accelerator.sync_gradients:
                            _average_gradients(extra)  # projections live outside the DDP-wrapped student
                        if accelerator.sync_gradients and args.max_grad_norm is not None:
                            if clip_fused:
                                clip_in_step(optimizer.optimizer, params, args.max_grad_norm)
                            else:
                                accelerator.clip_grad_norm_(params, args.max_grad_norm)
                        optimizer.step()
                        scheduler.step()
                        optimizer.zero_grad(set_to_none=True)
                    # summed where they live: a float() here would wait for the device at every step
                    for k, v in terms.items():
                        sums[k] = sums[k] + v.detach().float() if k in sums else v.detach().float()
                    count += 1
                    samples += len(batch["labels"]) * accelerator.num_processes
                    if not accelerator.sync_gradients:
                        continue
                    step += 1
                    bar.update(1)
                    if step == WARMUP_STEPS:
                        sync()
                        warm = (time.perf_counter(), eval_seconds, samples)
                    if step % args.logging_steps == 0 or step == total_steps:
                        means = {k: float(v) / count for k, v in sums.items()}
                        record = {
                            "step": step,
                            "epoch": round(step / steps_per_epoch, 3),
                            "lr": scheduler.get_last_lr()[0],
                            **means,
                        }
                        log.write(json.dumps(record) + "\n")
                        track(record)
                        bar.set_postfix(loss=f"{means['loss']:.4f}")
                        sums, count = {}, 0
                    evaluated = args.eval_steps is not None and step % args.eval_steps == 0
                    if evaluated:
                        run_eval(step / steps_per_epoch)
                    if (
                        args.max_train_minutes is not None
                        and time.perf_counter() - started > 60 * args.max_train_minutes
                        and step < total_steps
                    ):
                        stopped = "time"
                        bar.write(
                            f"[{desc}] stopped at step {step} of {total_steps}: training.max_train_minutes "
                            f"({args.max_train_minutes:g}) reached"
                        )
                    if step >= total_steps or stopped:
                        break
                    if evaluated or (args.save_steps is not None and step % args.save_steps == 0) or stop.requested:
                        checkpoint(i + 1)
                    if stop.requested:
                        raise TrainingInterrupted(step, checkpoint_dir)
                else:  # the epoch is over
                    epoch, skip = epoch + 1, 0
                    if args.eval_steps is None and step < total_steps:
                        run_eval(step / steps_per_epoch)
                        checkpoint(0)
                    if not stopped:
                        continue
                break  # stopped early (patience or time): out of the epochs too
            if not evals or evals[-1]["step"] != step:
                run_eval(step / steps_per_epoch)
    finally:
        for tracker in accelerator.trackers:  # (not accelerator.end_training(): it ends the process group too)
            tracker.finish()

    if ours:  # the caller's teacher back in the objective
        objective.hold_teacher(teacher)
    unwrapped = unwrap()
    if best_state is not None:
        unwrapped.load_state_dict(best_state)
    unwrapped.eval()
    seconds = time.perf_counter() - started
    result = LoopResult(
        best_metric,
        best_step,
        step,
        seconds,
        evals,
        samples,
        seconds - eval_seconds,
        stopped=stopped,
        steps_per_epoch=steps_per_epoch,
    )
    if warm is not None:
        result.steady_samples = samples - warm[2]
        result.steady_seconds = (started + seconds - warm[0]) - (eval_seconds - warm[1])
    ckpt.finish(unwrapped.state_dict(), result)
    return result
