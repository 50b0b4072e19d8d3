"""Generation speed of a generative run's teacher, student and twin, side by side (issue 10: at least 1.8x the
teacher's tokens/s on CPU).

The run's own report measures each model once (the median of a few passes, one model after the other). Here the
models take turns, round after round, so that whatever else the machine does falls on all of them alike: each round
times one pass of each model (greedy, batch 1, ``--new-tokens`` tokens after each of the first ``--prompts``
validation prompts; EOS ignored), and the result is each model's median tokens/s over the rounds and the median of
the per-round ratios to the teacher.

Usage (repository root): python benchmarks/generative_speed.py RUN_DIR [--rounds 7] [--prompts 8] [--new-tokens 32]
prints a JSON object and, with --results, writes it into docs/RESULTS.md (section --name, default generative-speed).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch
import yaml

from textdistill.config import config_from_dict
from textdistill.data import Collator
from textdistill.generative import (
    generation_speed,
    read_lm_jsonl,
    speed_prompts,
    tokenize_lm,
)
from textdistill.lm_models import load_causal_lm, pad_id_of
from textdistill.runfolder import machine_info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--results", action="store_true", help="write the table into docs/RESULTS.md")
    ap.add_argument("--name", default="generative-speed", help="the section of docs/RESULTS.md it writes")
    a = ap.parse_args()
    cfg = config_from_dict(yaml.safe_load((a.run / "config.yaml").read_text(encoding="utf-8")))
    models = {"teacher": load_causal_lm(cfg.teacher.model, "teacher.model")}
    for side in ("student", "baseline"):
        if (a.run / side).is_dir():
            models[side] = load_causal_lm(str(a.run / side), side)
    tok = models["teacher"][1]
    dev = tokenize_lm(tok, read_lm_jsonl(cfg.data.validation_file, a.prompts), cfg.data.max_length)
    prompts = speed_prompts(dev, Collator(pad_id_of(tok)), a.prompts)
    rates: dict[str, list[float]] = {name: [] for name in models}
    for r in range(a.rounds):
        for name, (model, t) in models.items():
            rates[name].append(generation_speed(model, prompts, a.new_tokens, 1, pad_id_of(t))["tokens_per_second"])
        print(f"round {r + 1}/{a.rounds}: " + ", ".join(f"{n} {v[-1]:.1f}" for n, v in rates.items()), file=sys.stderr)
    out = {
        "run": str(a.run),
        "rounds": a.rounds,
        "prompts": len(prompts),
        "new_tokens": a.new_tokens,
        "threads": torch.get_num_threads(),
        "tokens_per_second": {n: statistics.median(v) for n, v in rates.items()},
        "speedup": {
            n: statistics.median(x / t for x, t in zip(v, rates["teacher"])) for n, v in rates.items() if n != "teacher"
        },
        "runs": rates,
        "machine": machine_info(),
    }
    print(json.dumps(out, indent=2))
    if a.results:
        sys.path.insert(0, str(Path(__file__).parent))
        from summarize import write_section

        m = out["machine"]
        lines = [
            f"<!-- begin {a.name} -->",
            f"Command: `python benchmarks/generative_speed.py {a.run} --rounds {a.rounds} --results"
            + (f" --name {a.name}" if a.name != "generative-speed" else "")
            + "`  ",
            f"Date: {m['date']}; machine: {m['platform']}, {m['cpu_count']} CPUs, torch {m['torch']} "
            f"({out['threads']} threads).",
            "",
            f"Greedy generation at batch 1, {a.new_tokens} new tokens after each of {len(prompts)} validation "
            f"prompts; the "
            f"models take turns for {a.rounds} rounds.",
            "",
            "| model | params (M) | tokens/s (median) | per round | speed-up (median of the rounds' ratios) |",
            "|---|---|---|---|---|",
        ]
        for name, (model, _) in models.items():
            per = ", ".join(f"{v:.1f}" for v in rates[name])
            ratio = "1.00x" if name == "teacher" else f"{out['speedup'][name]:.2f}x"
            params = sum(p.numel() for p in model.parameters()) / 1e6
            lines.append(f"| {name} | {params:.2f} | {out['tokens_per_second'][name]:.1f} | {per} | {ratio} |")
        lines += ["", f"<!-- end {a.name} -->"]
        write_section(a.name, "\n".join(lines))


if __name__ == "__main__":
    main()
