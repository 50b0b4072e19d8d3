"""GPU distillation throughput with randomly initialised models of real shapes (issue: speed and scale).

A BERT-base-shaped teacher (12 x 768, 12 heads, vocabulary 30,522) -> a 6-layer-768 and a 4-layer-312 student,
sequence length 128, batch 256, bf16 autocast, fused AdamW: samples/s through textdistill's own training loop with
the teacher online and with its outputs cached. Random weights are fine: throughput does not depend on them.
samples_per_second leaves out the loop's first 10 steps (loader start-up, compilation, autotuning: see
textdistill.train.WARMUP_STEPS); end_to_end_samples_per_second counts every step.

    python benchmarks/gpu_throughput.py            # on a GPU machine; prints one JSON line per setting
    python benchmarks/gpu_throughput.py --tiny     # a seconds-long CPU check of the script itself
    python benchmarks/gpu_throughput.py --profile --students 4x312 --steps 40 --repeats 1   # where a step's time goes

With --profile each run's steady steps (after the loop's warm-up) are recorded by torch.profiler, and its line gains
"profile", per step: wall time (profiled, so slower than the unprofiled figure) against the device's busy time (its
kernels' durations summed), kernels launched and the host's time in the launch calls, reads back to the host
(``aten::_local_scalar_dense``, stream or device synchronisations), and the kernels and host-side operators that take
the most time. Busy time well below wall time means the host (launches, Python, the loader) bounds the step, not the
device.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook
from transformers import BertConfig, BertForSequenceClassification

from textdistill.config import DistillConfig, TrainingConfig
from textdistill.data import Collator, DistillDataset
from textdistill.metrics import predict_logits
from textdistill.objective import DistillationObjective
from textdistill.train import train_loop


def make_data(n: int, seq: int, vocab: int) -> DistillDataset:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, vocab, (n, seq), generator=g)
    feats = [{"input_ids": [101, *row[1:-1].tolist(), 102], "token_type_ids": [0] * seq} for row in ids]
    return DistillDataset(feats, torch.randint(0, 2, (n,), generator=g).tolist())


SYNCS = ("aten::_local_scalar_dense", "cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize")


class StepProfile:
    """torch.profiler over a run's steps WAIT+1 .. (the loop's start-up, compilation and autotuning left out), moved on
    by a global optimizer-step hook, so the training loop needs no hook of its own."""

    WAIT, WARMUP = 10, 2

    def __init__(self, steps: int, cuda: bool) -> None:
        self.cuda, self.active = cuda, steps - self.WAIT - self.WARMUP - 1
        if self.active < 1:
            raise SystemExit(f"--profile needs more than {self.WAIT + self.WARMUP + 1} steps")
        activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if cuda else [])
        schedule = torch.profiler.schedule(wait=self.WAIT, warmup=self.WARMUP, active=self.active, repeat=1)
        self.prof = torch.profiler.profile(activities=activities, schedule=schedule)
        self.step, self.times = 0, []

    def _on_step(self, *_: Any) -> None:
        self.step += 1
        if self.step in (self.WAIT + self.WARMUP, self.WAIT + self.WARMUP + self.active):
            if self.cuda:
                torch.cuda.synchronize()
            self.times.append(time.perf_counter())
        self.prof.step()

    def __enter__(self) -> "StepProfile":
        self.prof.__enter__()
        self.hook = register_optimizer_step_post_hook(self._on_step)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.hook.remove()
        self.prof.__exit__(*exc)

    def summary(self) -> dict[str, Any]:
        """Per profiled step: wall time, device busy time, kernels, host reads, the entries that take the most."""
        events, n = self.prof.key_averages(), self.active
        kernels = [e for e in events if e.device_type.name == "CUDA" and e.self_device_time_total > 0]
        host = [e for e in events if e.device_type.name == "CPU"]
        launches = [e for e in host if e.key.startswith(("cudaLaunch", "cuLaunch"))]

        def top(rows: list[Any], time_of: Any) -> list[list[Any]]:
            rows = sorted(rows, key=time_of, reverse=True)[:8]
            return [[e.key[:90], round(time_of(e) / 1000 / n, 3), round(e.count / n, 1)] for e in rows]

        return {
            "profiled_steps": n,
            "wall_ms_per_step": round((self.times[-1] - self.times[0]) * 1000 / n, 3) if len(self.times) == 2 else None,
            "device_busy_ms_per_step": round(sum(e.self_device_time_total for e in kernels) / 1000 / n, 3)
            if self.cuda
            else None,
            "kernels_per_step": round(sum(e.count for e in kernels) / n, 1) if self.cuda else None,
            "host_reads_per_step": {e.key: round(e.count / n, 2) for e in host if e.key in SYNCS},
            # the host's side of the launches (CUDA runtime and driver calls), against the wall time above
            "launch_ms_per_step": round(sum(e.self_cpu_time_total for e in launches) / 1000 / n, 3)
            if self.cuda
            else None,
            "top_kernels_ms_per_step_and_count": top(kernels, lambda e: e.self_device_time_total),
            "top_host_ops_ms_per_step_and_count": top(
                [e for e in host if not e.key.startswith(("cuda", "ProfilerStep"))], lambda e: e.self_cpu_time_total
            ),
        }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="tiny shapes on CPU, to check the script")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--compile", action="store_true", help="torch.compile the student (training.torch_compile)")
    ap.add_argument("--compile-mode", default="default", help="training.torch_compile_mode (e.g. reduce-overhead)")
    ap.add_argument("--students", default=None, help="comma-separated subset of the students (6x768, 4x312)")
    ap.add_argument(
        "--modes", default="online,cached", help="comma-separated subset of the teacher outputs (online, cached)"
    )
    ap.add_argument("--profile", action="store_true", help="record each run with torch.profiler and summarize it")
    args = ap.parse_args()
    cuda = torch.cuda.is_available()
    if args.tiny:
        seq, batch, teacher_shape, students = 16, 8, (2, 64, 2), {"2x32": (2, 32, 2)}
    else:
        seq, batch, teacher_shape, students = 128, 256, (12, 768, 12), {"6x768": (6, 768, 12), "4x312": (4, 312, 12)}
    if args.students:
        students = {k: v for k, v in students.items() if k in args.students.split(",")}

    def bert(layers: int, hidden: int, heads: int) -> BertForSequenceClassification:
        cfg = BertConfig(
            num_hidden_layers=layers,
            hidden_size=hidden,
            num_attention_heads=heads,
            intermediate_size=4 * hidden,
            num_labels=2,
            attn_implementation="sdpa",
        )
        return BertForSequenceClassification(cfg)

    device = torch.device("cuda" if cuda else "cpu")
    teacher = bert(*teacher_shape).to(device).eval().requires_grad_(False)
    if cuda:
        teacher = teacher.to(torch.bfloat16)  # for the cache build; the loop holds an online teacher in bf16 anyway
    data = make_data(batch * args.steps, seq, 30522)
    collator = Collator(0)
    train_args = TrainingConfig(
        per_device_train_batch_size=batch,
        max_steps=args.steps,
        logging_steps=args.steps,
        mixed_precision="bf16" if cuda else "no",
        group_by_length=False,
        dataloader_num_workers=4 if cuda else 0,
        torch_compile=args.compile,
        torch_compile_mode=args.compile_mode,
    )
    logits = predict_logits(teacher, data, collator, 512).float()
    cached = data.with_teacher_logits(logits)
    kd = DistillConfig(temperature=2.0, alpha=0.9)
    for name, shape in students.items():
        for mode in args.modes.split(","):
            rates, ends, profiles = [], [], []
            for r in range(args.repeats):
                student = bert(*shape).to(device)
                recorder = StepProfile(args.steps, cuda) if args.profile else contextlib.nullcontext()
                with tempfile.TemporaryDirectory() as tmp, recorder as prof:
                    res = train_loop(
                        student,
                        data if mode == "online" else cached,
                        collator,
                        train_args,
                        DistillationObjective(kd, teacher if mode == "online" else None),
                        lambda m: {"accuracy": 0.0},
                        "accuracy",
                        r,
                        Path(tmp) / "log.jsonl",
                        desc=f"{name} {mode}",
                        teacher=teacher if mode == "online" else None,
                    )
                rates.append(res.steady_samples_per_second)
                ends.append(res.samples_per_second)
                if args.profile:
                    profiles.append(prof.summary())
            print(
                json.dumps(
                    {
                        "student": name,
                        "teacher_outputs": mode,
                        "samples_per_second": statistics.median(rates),
                        "runs": rates,
                        "end_to_end_samples_per_second": statistics.median(ends),
                        "end_to_end_runs": ends,
                        "compile": args.compile_mode if args.compile else None,
                        "device": torch.cuda.get_device_name() if cuda else "cpu",
                        "torch": torch.__version__,
                        "batch": batch,
                        "seq": seq,
                        "steps": args.steps,
                        **({"profile": profiles} if args.profile else {}),
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
