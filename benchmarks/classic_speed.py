"""CPU speed of the SST-2 teacher and its BiLSTM, TextCNN and MLP students side by side, in PyTorch and in ONNX
Runtime (issue: students of every kind should be at least 10x faster than the teacher at batch 1).

The classic table (`bash benchmarks/sst2_ablation.sh classic`) measures each model once, at the end of its own run.
Here every model is loaded in one process, exported to ONNX fp32 (`textdistill.export.export_onnx`, checked against
PyTorch on the whole dev set), and the models take turns, round after round, so that whatever else the machine does
falls on all of them alike. Each round times, for each model and each runtime, batch-1 latency and batch-32
throughput (`textdistill.metrics.measure_speed`: real dev sentences in file order, tokenization excluded). The
result is each model's median over the rounds and the median of the per-round ratios to the teacher in the same
runtime: PyTorch against PyTorch, ONNX Runtime against ONNX Runtime.

Usage (repository root, after the classic runs):
  python benchmarks/classic_speed.py -c benchmarks/sst2_ablation.yaml teacher=bench_runs/sst2-teacher/teacher \
      bilstm=bench_runs/ablation/bilstm-seed1/student ... [--rounds 7] [--repeats 30] [--results]
prints a JSON object and, with --results, writes the table into docs/RESULTS.md (section --name).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

from textdistill.export import (
    _input_names,
    export_onnx,
    onnx_forward,
    predict,
    torch_forward,
)
from textdistill.metrics import measure_speed, metrics_for
from textdistill.models import count_parameters, pad_id
from textdistill.pipeline import _saved_model_and_dev, as_config
from textdistill.runfolder import machine_info

FORMS = ("pytorch", "onnx")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", help="NAME=DIR, the teacher first")
    ap.add_argument("-c", "--config", required=True, help="a run config: its data.validation_file is scored and timed")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--repeats", type=int, default=30, help="timed calls per measurement (batch 1 and batch 32 each)")
    ap.add_argument("--samples", type=int, default=256, help="dev sentences the timings cycle through")
    ap.add_argument("--onnx-dir", type=Path, default=Path("bench_runs/classic-onnx"))
    ap.add_argument("--results", action="store_true", help="write the table into docs/RESULTS.md")
    ap.add_argument("--name", default="sst2-classic-speed", help="the section of docs/RESULTS.md it writes")
    a = ap.parse_args()
    cfg = as_config(a.config)
    models: dict[str, dict] = {}
    for spec in a.models:
        name, _, folder = spec.partition("=")
        if not folder:
            ap.error(f"{spec!r}: expected NAME=DIR")
        net, tokenizer, _, dev_set = _saved_model_and_dev(folder, cfg)
        pad = pad_id(tokenizer)
        path = export_onnx(net, dev_set.student, a.onnx_dir / name / "model.onnx", pad)
        forwards = {"pytorch": torch_forward(net), "onnx": onnx_forward(path, _input_names(dev_set.student))}
        logits = {form: predict(f, dev_set, pad) for form, f in forwards.items()}
        models[name] = {
            "dir": folder,
            "params": count_parameters(net),
            "pad": pad,
            "features": dev_set.student[: a.samples],
            "forwards": forwards,
            "accuracy": {form: metrics_for(x, dev_set.labels)["accuracy"] for form, x in logits.items()},
            "max_abs_logit_diff": float((logits["onnx"] - logits["pytorch"]).abs().max()),
            "latency": {form: [] for form in FORMS},
            "throughput": {form: [] for form in FORMS},
        }
        print(
            f"{name}: exported, ONNX vs PyTorch max logit difference {models[name]['max_abs_logit_diff']:.2e}",
            file=sys.stderr,
        )
    for r in range(a.rounds):
        for m in models.values():
            for form in FORMS:
                speed = measure_speed(m["forwards"][form], m["features"], m["pad"], repeats=a.repeats)
                m["latency"][form].append(speed["latency_ms_batch1"])
                m["throughput"][form].append(speed["throughput_batch32"])
        print(
            f"round {r + 1}/{a.rounds}: "
            + ", ".join(
                f"{n} {m['latency']['pytorch'][-1]:.2f}/{m['latency']['onnx'][-1]:.2f} ms" for n, m in models.items()
            ),
            file=sys.stderr,
        )
    teacher = next(iter(models.values()))
    out: dict = {
        "config": a.config,
        "rounds": a.rounds,
        "repeats": a.repeats,
        "threads": torch.get_num_threads(),
        "models": {},
    }
    for name, m in models.items():
        entry: dict = {
            "dir": m["dir"],
            "params": m["params"],
            "accuracy": m["accuracy"],
            "max_abs_logit_diff": m["max_abs_logit_diff"],
        }
        for form in FORMS:
            lat, thr = m["latency"][form], m["throughput"][form]
            entry[form] = {
                "latency_ms_batch1": statistics.median(lat),
                "throughput_batch32": statistics.median(thr),
                "speedup_batch1": statistics.median(t / x for x, t in zip(lat, teacher["latency"][form])),
                "speedup_batch32": statistics.median(x / t for x, t in zip(thr, teacher["throughput"][form])),
                "latency_runs": lat,
                "throughput_runs": thr,
            }
        out["models"][name] = entry
    out["machine"] = machine_info()
    print(json.dumps(out, indent=2))
    if a.results:
        write_results(a, out)


def write_results(a: argparse.Namespace, out: dict) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from summarize import write_section

    m = out["machine"]
    lines = [
        f"<!-- begin {a.name} -->",
        f"Command: `python benchmarks/classic_speed.py -c {a.config} {' '.join(a.models)} --rounds {a.rounds} "
        f"--repeats {a.repeats} --results "
        f"--name {a.name}`  ",
        f"Date: {m['date']}; machine: {m['platform']}, {m['cpu_count']} CPUs, torch {m['torch']} "
        f"({out['threads']} threads; ONNX Runtime as many).",
        "",
        f"Each model in PyTorch (fp32) and exported to ONNX (fp32, run by ONNX Runtime); the models take turns for "
        f"{a.rounds} rounds of {a.repeats} timed calls per measurement. Speed-up: the median of the rounds' ratios to "
        "the teacher in the same runtime.",
        "",
        "| model | params (M) | accuracy | ONNX max logit diff | PyTorch b1 (ms) | ONNX b1 (ms) | speed-up b1 "
        "PyTorch | "
        "speed-up b1 ONNX | speed-up b32 PyTorch | speed-up b32 ONNX |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, e in out["models"].items():
        pt, ox = e["pytorch"], e["onnx"]
        lines.append(
            f"| {name} | {e['params'] / 1e6:.1f} | {100 * e['accuracy']['pytorch']:.2f} | "
            f"{e['max_abs_logit_diff']:.1e} | "
            f"{pt['latency_ms_batch1']:.2f} | {ox['latency_ms_batch1']:.2f} | {pt['speedup_batch1']:.1f}x | "
            f"{ox['speedup_batch1']:.1f}x | {pt['speedup_batch32']:.1f}x | {ox['speedup_batch32']:.1f}x |"
        )
    lines.append(f"<!-- end {a.name} -->")
    write_section(a.name, "\n".join(lines))


if __name__ == "__main__":
    main()
