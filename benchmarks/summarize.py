"""Write the results of finished runs into docs/RESULTS.md (between markers named after the benchmark).

Usage: python benchmarks/summarize.py RUN_DIR [RUN_DIR ...] [--name sst2-full] [--command "bash benchmarks/sst2_full.sh"]
Every number comes from the runs' metrics.json; nothing is typed by hand.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from textdistill.report import markdown_table, report_rows

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "RESULTS.md"


def section(runs: list[Path], name: str, command: str) -> str:
    reports = [json.loads((r / "metrics.json").read_text()) for r in runs]
    m = reports[0]["machine"]
    lines = [
        f"<!-- begin {name} -->",
        f"Command: `{command}`  ",
        f"Date: {m['date']}; machine: {m['platform']}, {m['cpu_count']} CPUs, torch {m['torch']} "
        f"({m['torch_threads']} threads for latency and throughput).",
        "",
    ]
    for run, rep in zip(runs, reports):
        d, s, k = rep["data"], rep["student"], rep["distill"]
        lines += [
            f"**{run.name}**: student = teacher layers {s.get('layers')}; {d['train_examples']} training examples, "
            f"{d['validation_examples']} dev; KD {k['loss']} T={k['temperature']} alpha={k['alpha']}; "
            f"run took {rep['total_seconds'] / 60:.1f} min.",
            "",
            markdown_table(report_rows(rep)),
            "",
            f"Speed-up: {rep['speedup_batch1']:.2f}x at batch 1, {rep['speedup_batch32']:.2f}x at batch 32. "
            f"Student retains {s['retained_pct']:.1f}% of the teacher's {rep['metric']}"
            + (f"; no-distillation twin {rep['baseline']['retained_pct']:.1f}%." if "baseline" in rep else "."),
            "",
        ]
    lines.append(f"<!-- end {name} -->")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--name", default="sst2-full")
    ap.add_argument("--command", default="bash benchmarks/sst2_full.sh")
    args = ap.parse_args()
    text = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else "# Results\n"
    new = section(args.runs, args.name, args.command)
    pattern = re.compile(rf"<!-- begin {re.escape(args.name)} -->.*?<!-- end {re.escape(args.name)} -->", re.S)
    text = pattern.sub(lambda _: new, text) if pattern.search(text) else text.rstrip() + "\n\n" + new + "\n"
    tmp = RESULTS.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(RESULTS)
    print(new)


if __name__ == "__main__":
    main()
