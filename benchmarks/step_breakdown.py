"""Where one distillation step's time goes (issue: speed and scale): the teacher's forward (what the cache saves)
against the student's forward, backward, gradient clipping and AdamW (default and fused), fp32 and bf16 autocast.
As in the loop, fused AdamW clips inside its step (`clip` is then the gradient norm alone).

Batches of 32 of the first SST-2 training sentences in file order (not length-grouped), max length 64, the 2-layer
student [1, 5] of the fine-tuned teacher; medians over 35 steps after 5 warm-up steps.

    python benchmarks/step_breakdown.py [--teacher bench_runs/sst2-teacher/teacher]
    python benchmarks/step_breakdown.py --profile   # instead: the operators of 20 cached student steps (fp32, fused
                                                    # AdamW), by their own CPU time (torch.profiler)
    python benchmarks/step_breakdown.py --profile-bench  # instead: the operators of the cached run of `textdistill
                                                    # bench` (benchmarks/sst2_ablation.yaml, pruned vocabulary, one
                                                    # run of 60 steps): the loop itself, length-grouped batches
    ... --profile-bench --vocabulary full           # the same with the student's whole vocabulary
    ... --dropout torch                             # torch's dropout masks instead of the loop's (textdistill.dropout)
    ... --first-token off                           # the full last layer in both models (training.first_token_only:
                                                    # false); by default, as in the loop, it runs for [CLS] alone
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from typing import Any

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from textdistill.config import data_dir
from textdistill.dropout import fast_cpu_dropout
from textdistill.first_token import first_token_only
from textdistill.losses import distillation_loss
from textdistill.models import student_from_teacher
from textdistill.train import clip_in_step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", default="bench_runs/sst2-teacher/teacher")
    ap.add_argument("--profile", action="store_true", help="profile the student's step by operator instead")
    ap.add_argument(
        "--dropout",
        choices=["fast", "torch"],
        default="fast",
        help="the student's dropout masks: the loop's (training.fast_dropout, the default) or torch's",
    )
    ap.add_argument(
        "--first-token",
        choices=["on", "off"],
        default="on",
        help="the last layer for [CLS] alone in student and teacher (training.first_token_only, the "
        "default) or in full",
    )
    ap.add_argument("--profile-bench", action="store_true", help="profile the cached run of textdistill bench instead")
    ap.add_argument(
        "--vocabulary",
        choices=["pruned", "full"],
        default="pruned",
        help="with --profile-bench: the student's vocabulary pruned (student.prune_vocabulary) or all of it",
    )
    args = ap.parse_args()
    if args.profile_bench:
        profile_bench(args.teacher, args.first_token == "on", args.vocabulary == "pruned")
        return
    teacher = AutoModelForSequenceClassification.from_pretrained(args.teacher).eval()
    tok = AutoTokenizer.from_pretrained(args.teacher)
    lines = open(f"{data_dir()}/sst2/train.tsv", encoding="utf-8").read().splitlines()[1:1281]
    texts, labels = [ln.split("\t")[0] for ln in lines], torch.tensor([int(ln.split("\t")[1]) for ln in lines])
    batches = [
        (tok(texts[i : i + 32], truncation=True, max_length=64, padding=True, return_tensors="pt"), labels[i : i + 32])
        for i in range(0, len(texts), 32)
    ]
    fast, cut = args.dropout == "fast", args.first_token == "on"
    print(
        f"dropout masks: {args.dropout}; last layer for [CLS] alone: {args.first_token}; threads "
        f"{torch.get_num_threads()}, mean padded length "
        f"{statistics.mean(b['input_ids'].shape[1] for b, _ in batches):.1f}"
    )
    if args.profile:
        profile_student_step(teacher, batches, fast, cut)
        return
    for precision in ("fp32", "bf16"):
        for fused in (False, True):
            student = student_from_teacher(teacher, [1, 5]).train()
            opt = torch.optim.AdamW(student.parameters(), lr=1e-5, fused=fused)
            ctx = (
                (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if precision == "bf16" else contextlib.nullcontext
            )
            times: dict[str, list[float]] = {k: [] for k in ("teacher", "forward", "backward", "clip", "adamw")}
            with fast_cpu_dropout(student, fast), first_token_only(student, teacher, enabled=cut):  # as in the loop
                for i, (batch, gold) in enumerate(batches):
                    t0 = time.perf_counter()
                    with torch.inference_mode(), ctx():
                        t_logits = teacher(**batch).logits
                    t_logits = t_logits.float().clone()
                    t1 = time.perf_counter()
                    with ctx():
                        s_logits = student(**batch).logits
                    loss = distillation_loss(s_logits, t_logits, gold, kind="kl", temperature=2.0, alpha=0.9)["loss"]
                    t2 = time.perf_counter()
                    loss.backward()
                    t3 = time.perf_counter()
                    clip(opt, student, fused)
                    t4 = time.perf_counter()
                    opt.step()
                    opt.zero_grad(set_to_none=True)
                    t5 = time.perf_counter()
                    if i >= 5:
                        for k, v in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
                            times[k].append(v)
            med = {k: 1000 * statistics.median(v) for k, v in times.items()}
            step = med["forward"] + med["backward"] + med["clip"] + med["adamw"]
            print(
                f"{precision} {'fused' if fused else 'default'} "
                f"AdamW: "
                + ", ".join(f"{k} {v:.1f} ms" for k, v in med.items())
                + f"; student step {step:.1f} ms; cache can give at most {(step + med['teacher']) / step:.2f}x"
            )


def clip(opt: torch.optim.Optimizer, student: torch.nn.Module, fused: bool) -> None:
    """As the loop clips: inside the fused AdamW's step (only the norm here), else the gradients themselves."""
    if fused:
        clip_in_step(opt, list(student.parameters()), 1.0)
    else:
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)


def profile_student_step(teacher: torch.nn.Module, batches: list, fast: bool, cut: bool) -> None:
    """What the student's step (forward, backward, clipping, fused AdamW) spends its time on, with the teacher's
    logits computed beforehand as the cache would give them: operators by their own CPU time."""
    from torch.profiler import ProfilerActivity, profile

    student = student_from_teacher(teacher, [1, 5]).train()
    opt = torch.optim.AdamW(student.parameters(), lr=1e-5, fused=True)
    with torch.inference_mode():
        logits = [teacher(**batch).logits for batch, _ in batches[:25]]
    cached = [t.clone() for t in logits]  # normal tensors, as the loop's are

    def step(i: int) -> None:
        batch, gold = batches[i]
        loss = distillation_loss(student(**batch).logits, cached[i], gold, kind="kl", temperature=2.0, alpha=0.9)[
            "loss"
        ]
        loss.backward()
        clip(opt, student, fused=True)
        opt.step()
        opt.zero_grad(set_to_none=True)

    with fast_cpu_dropout(student, fast), first_token_only(student, enabled=cut):
        for i in range(5):
            step(i)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for i in range(5, 25):
                step(i)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))


def profile_bench(teacher: str, cut: bool, prune: bool) -> None:
    """The operators of the cached (teacher outputs precomputed) run of ``textdistill bench`` on the ablation config,
    60 steps, the student's vocabulary pruned or not (``prune``), its last layer cut to [CLS] or not (``cut``): the
    loop as a user runs it. Per step: each operator's own CPU time / 60."""
    from torch.profiler import ProfilerActivity, profile

    import textdistill.bench as bench_module

    loop = bench_module.train_loop
    steps = 60

    def profiled(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("desc") != "bench cached":
            return loop(*args, **kwargs)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            result = loop(*args, **kwargs)
        events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
        total = sum(e.self_cpu_time_total for e in events)
        wall = 1e3 * result.step_seconds / steps
        print(
            f"cached run: {result.samples_per_second:.1f} samples/s, {wall:.1f} ms per step; the operators' own "
            f"CPU time "
            f"{total / 1e3 / steps:.1f} ms per step (the rest: Python, and work outside torch's operators such as "
            f"the "
            "dropout masks' random bits)"
        )
        for e in events[:25]:
            print(
                f"{e.key[:60]:60s} {e.self_cpu_time_total / 1e3 / steps:7.2f} ms/step "
                f"{100 * e.self_cpu_time_total / total:5.1f}% {e.count // steps:5d} calls/step"
            )
        return result

    bench_module.train_loop = profiled
    overrides = [
        f"teacher.model={teacher}",
        f"student.prune_vocabulary={str(prune).lower()}",
        f"student.training.first_token_only={str(cut).lower()}",
    ]
    bench_module.bench("benchmarks/sst2_ablation.yaml", overrides, steps=steps, repeats=1)


if __name__ == "__main__":
    main()
