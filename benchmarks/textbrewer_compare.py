"""textdistill's training loop against TextBrewer's GeneralDistiller, side by side in one process (issue: speed and
scale).

Same teacher, same student (the same initial weights), same data, same objective, same optimizer settings:

- ``textbrewer-padded128``: TextBrewer fed as its examples prepare data: every sentence padded to 128 tokens, shuffled
  batches, teacher online;
- ``textbrewer-grouped``: TextBrewer given the very same length-grouped, dynamically padded batches as textdistill;
- ``textdistill-online``: textdistill's loop with the teacher online;
- ``textdistill-cached``: textdistill's loop with the teacher's outputs computed once beforehand (the cache); the
  time to compute them is reported on its own line (a cache is built once and reused by every epoch and run).

The objective is the same everywhere: ``alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE``. TextBrewer's
``ce`` KD loss has no ``T^2`` factor and differs from the KL by the teacher's entropy (a constant), so it gets
``kd_loss_weight = alpha * T^2`` and ``hard_label_weight = 1 - alpha``: the gradients are the same. AdamW with the
config's learning rate, weight decay (not on biases and LayerNorm weights), linear warm-up and decay, gradient norm
clipping at the config's value; TextBrewer gets ``torch.optim.AdamW`` with its defaults, as in its examples.

Throughput: ``--speed-samples`` training sentences, one epoch, ``--repeats`` times, modes interleaved; medians.
Accuracy: each mode trains once on ``--accuracy-samples`` sentences for one epoch and is scored on the full dev set
with the same evaluation code. Evaluation is never inside a timed span.

Usage (repository root, after benchmarks/sst2_full.sh has fine-tuned the teacher; needs ``pip install -e ".[bench]"``):
  HF_HUB_OFFLINE=1 python benchmarks/textbrewer_compare.py --write-results > bench_runs/textbrewer.log 2>&1
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, RandomSampler, TensorDataset

from textdistill.data import Collator, LabelSet, load_splits, train_loader
from textdistill.metrics import evaluate_model, predict_logits
from textdistill.models import build_student, load_classifier, pad_id
from textdistill.objective import DistillationObjective
from textdistill.pipeline import _dataset, _texts, as_config
from textdistill.train import adamw_param_groups, train_loop

sys.path.insert(0, str(Path(__file__).resolve().parent))
from summarize import write_section  # noqa: E402

MODES = ("textbrewer-padded128", "textbrewer-grouped", "textdistill-online", "textdistill-cached")


def textbrewer_train(student, teacher, loader, postprocess, cfg, epochs: int, workdir: Path) -> float:
    """Train ``student`` in place with GeneralDistiller; returns the wall time of ``distiller.train``."""
    from textbrewer import DistillationConfig, GeneralDistiller, TrainingConfig
    from transformers import get_linear_schedule_with_warmup

    args, t, alpha = cfg.student.training, float(cfg.distill.temperature), float(cfg.distill.alpha)
    train_cfg = TrainingConfig(device="cpu", output_dir=str(workdir), log_dir=str(workdir / "tb"), ckpt_frequency=1)
    distill_cfg = DistillationConfig(
        temperature=t, kd_loss_type="ce", kd_loss_weight=alpha * t * t, hard_label_weight=1 - alpha
    )

    def adaptor(batch, outputs):
        return {"logits": outputs.logits, "losses": outputs.loss}

    distiller = GeneralDistiller(train_cfg, distill_cfg, teacher, student, adaptor, adaptor)
    optimizer = torch.optim.AdamW(
        adamw_param_groups(list(student.named_parameters()), args.weight_decay),
        lr=args.learning_rate,
        eps=args.adam_epsilon,
    )
    total = len(loader) * epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, int(args.warmup_ratio * total), total)
    started = time.perf_counter()
    with distiller:
        distiller.train(
            optimizer,
            loader,
            num_epochs=epochs,
            scheduler=scheduler,
            max_grad_norm=args.max_grad_norm,
            batch_postprocessor=postprocess,
        )
    return time.perf_counter() - started


def padded128_loader(tokenizer, texts: list[str], labels: list[int], batch_size: int, seed: int) -> DataLoader:
    """As TextBrewer's examples build their data: padded to 128, a TensorDataset, a RandomSampler."""
    enc = tokenizer(texts, padding="max_length", truncation=True, max_length=128, return_tensors="pt")
    dataset = TensorDataset(enc["input_ids"], enc["attention_mask"], torch.tensor(labels))
    return DataLoader(
        dataset, sampler=RandomSampler(dataset, generator=torch.Generator().manual_seed(seed)), batch_size=batch_size
    )


def run_mode(mode: str, ctx: dict[str, Any], n: int, seed: int, workdir: Path) -> tuple[torch.nn.Module, float]:
    """Train a fresh copy of the student on the first ``n`` sentences for one epoch; returns it and its samples/s."""
    cfg, teacher = ctx["cfg"], ctx["teacher"]
    student = copy.deepcopy(ctx["student"]).train()
    train_set = ctx["train_sets"][n]
    args = cfg.student.training
    if mode == "textbrewer-padded128":
        loader = padded128_loader(
            ctx["tokenizer"], ctx["texts"][:n], ctx["labels"][:n], args.per_device_train_batch_size, seed
        )
        post = lambda b: {"input_ids": b[0], "attention_mask": b[1], "labels": b[2]}  # noqa: E731
        seconds = textbrewer_train(student, teacher, loader, post, cfg, 1, workdir)
        return student, n / seconds
    if mode == "textbrewer-grouped":
        loader = train_loader(train_set, ctx["collator"], args.per_device_train_batch_size, True, seed)
        post = lambda b: {**b["student"], "labels": b["labels"]}  # noqa: E731
        seconds = textbrewer_train(student, teacher, loader, post, cfg, 1, workdir)
        return student, n / seconds
    online = mode == "textdistill-online"
    data = train_set if online else train_set.with_teacher_logits(ctx["logits"][:n])
    loop_args = args.model_copy(update={"num_train_epochs": 1, "eval_steps": None, "max_steps": None})
    result = train_loop(
        student,
        data,
        ctx["collator"],
        loop_args,
        DistillationObjective(cfg.distill, teacher if online else None),
        lambda m: {"accuracy": 0.0},
        "accuracy",
        seed,
        workdir / "log.jsonl",
        desc=mode,
        teacher=teacher if online else None,
        keep_best=False,
    )
    return student, result.samples_per_second


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="benchmarks/sst2_ablation.yaml")
    ap.add_argument("--speed-samples", type=int, default=1024)
    ap.add_argument("--accuracy-samples", type=int, default=8000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    ap.add_argument("--json", type=Path, default=Path("bench_runs/textbrewer.json"))
    ap.add_argument("--write-results", action="store_true", help="write the table into docs/RESULTS.md")
    ap.add_argument("overrides", nargs="*", help="KEY=VALUE config overrides")
    opts = ap.parse_args()

    cfg = as_config(opts.config, opts.overrides)
    train, dev = load_splits(cfg.data)
    n_max = max(opts.speed_samples, opts.accuracy_samples)
    train = train.head(n_max)
    if train.pairs:
        raise SystemExit("textbrewer_compare: single-sentence tasks only")
    teacher, tokenizer, labels = load_classifier(
        cfg.teacher.model, LabelSet.from_data(train), "teacher.model", require_trained_head=True
    )
    teacher.eval().requires_grad_(False)
    student, stok, recipe = build_student(cfg.student, teacher, tokenizer, labels, cfg.seed, _texts(train))
    collator = Collator(pad_id(stok), pad_id(tokenizer))
    sets = {
        n: _dataset(stok, train.head(n), labels, cfg.data.max_length, tokenizer)
        for n in {opts.speed_samples, opts.accuracy_samples}
    }
    dev_set = _dataset(stok, dev, labels, cfg.data.max_length)
    eval_bs = cfg.student.training.per_device_eval_batch_size
    started = time.perf_counter()
    logits = predict_logits(teacher, sets[n_max], collator, eval_bs, side="teacher")
    cache_seconds = time.perf_counter() - started
    ctx = {
        "cfg": cfg,
        "teacher": teacher,
        "student": student,
        "tokenizer": stok,
        "collator": collator,
        "train_sets": sets,
        "texts": train.texts,
        "labels": labels.encode(train),
        "logits": logits,
    }

    rates: dict[str, list[float]] = {m: [] for m in opts.modes}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(opts.repeats):
            for mode in opts.modes:
                _, rate = run_mode(mode, ctx, opts.speed_samples, cfg.seed + r, Path(tmp) / f"speed-{mode}-{r}")
                rates[mode].append(rate)
                print(f"speed {mode} repeat {r + 1}: {rate:.1f} samples/s", flush=True)
        accuracy: dict[str, dict[str, float]] = {}
        for mode in opts.modes:
            model, rate = run_mode(mode, ctx, opts.accuracy_samples, cfg.seed, Path(tmp) / f"accuracy-{mode}")
            acc = evaluate_model(model, dev_set, collator, eval_bs)["accuracy"]
            accuracy[mode] = {"accuracy": acc, "samples_per_second": rate}
            print(f"accuracy {mode}: {100 * acc:.2f} ({rate:.1f} samples/s over {opts.accuracy_samples})", flush=True)
    teacher_acc = evaluate_model(teacher, _dataset(tokenizer, dev, labels, cfg.data.max_length), collator, eval_bs)[
        "accuracy"
    ]

    result = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.platform()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "config": opts.config,
        "overrides": opts.overrides,
        "student": recipe,
        "teacher": cfg.teacher.model,
        "batch_size": cfg.student.training.per_device_train_batch_size,
        "max_length": cfg.data.max_length,
        "speed_samples": opts.speed_samples,
        "accuracy_samples": opts.accuracy_samples,
        "repeats": opts.repeats,
        "samples_per_second": {m: {"median": statistics.median(v), "runs": v} for m, v in rates.items()},
        "cache_build_seconds": cache_seconds,
        "cache_build_examples": n_max,
        "accuracy": accuracy,
        "teacher_accuracy": teacher_acc,
    }
    opts.json.parent.mkdir(parents=True, exist_ok=True)
    tmp_json = opts.json.with_suffix(".tmp")
    tmp_json.write_text(json.dumps(result, indent=2))
    tmp_json.replace(opts.json)
    text = markdown(result, " ".join(["python benchmarks/textbrewer_compare.py", *sys.argv[1:]]))
    print(text)
    if opts.write_results:
        write_section("textbrewer", text)


def markdown(r: dict[str, Any], command: str) -> str:
    sps = r["samples_per_second"]
    lines = [
        "<!-- begin textbrewer -->",
        f"Command: `{command}`  ",
        f"Date: {r['date']}; machine: {r['machine']}.",
        "",
        f"Teacher {r['teacher']} (dev accuracy {100 * r['teacher_accuracy']:.2f}); student: teacher layers "
        f"{r['student'].get('layers')}; batch "
        f"{r['batch_size']}. Throughput: median of {r['repeats']} one-epoch runs over the first {r['speed_samples']} "
        f"training sentences. Accuracy: one epoch over the first {r['accuracy_samples']}, full dev set.",
        "",
        "| mode | samples/s (median) | runs | dev accuracy after one epoch | samples/s in that epoch |",
        "|---|---|---|---|---|",
    ]
    for mode, v in sps.items():
        acc = r["accuracy"].get(mode)
        runs = ", ".join(f"{x:.0f}" for x in v["runs"])
        lines.append(
            f"| {mode} | {v['median']:.1f} | {runs} | {100 * acc['accuracy']:.2f} | {acc['samples_per_second']:.1f} |"
            if acc
            else f"| {mode} | {v['median']:.1f} | {runs} | - | - |"
        )
    lines.append("")
    ratios = []
    for ours in ("textdistill-cached", "textdistill-online"):
        for theirs in ("textbrewer-padded128", "textbrewer-grouped"):
            if ours in sps and theirs in sps:
                ratios.append(f"{ours} / {theirs}: {sps[ours]['median'] / sps[theirs]['median']:.2f}x")
    if "textdistill-cached" in sps and "textdistill-online" in sps:
        ratios.append(
            f"cache speed-up (textdistill-cached / textdistill-online): "
            f"{sps['textdistill-cached']['median'] / sps['textdistill-online']['median']:.2f}x"
        )
    lines.append("Ratios of medians: " + "; ".join(ratios) + ".")
    lines.append("")
    lines.append(
        f"Building the cached teacher outputs for {r['cache_build_examples']} sentences took "
        f"{r['cache_build_seconds']:.1f} s (once; every later epoch and run reads them)."
    )
    lines.append("<!-- end textbrewer -->")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
