"""The defaults, measured: each data set run with only its paths (and the one setting detection asks for, where it
does), the zero-config way a new user would, and one table of what the defaults gave.

    python benchmarks/defaults.py [--sets sst2,banking77,...] [--train-cap 4000] [--minutes 8] [--out runs/defaults]

Per data set: ``textdistill distill --train T --validation D --teacher M`` with data.max_train_samples and each
model's max_train_minutes capped so that a 2-core CPU finishes (the caps are printed in the table's notes); the
teacher, the distilled 2-layer student, its twin (same layers, labels only) and the second twin (the pretrained
checkpoint's layers, labels only) come from the run's metrics.json. The table is printed as Markdown and written to
``<out>/defaults.md``; docs/RESULTS.md quotes it with the command.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

DATA = Path(os.environ.get("TEXTDISTILL_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))

# name -> (train, validation, teacher, extra settings detection asks for, shape)
SETS = {
    "sst2": ("sst2/train.tsv", "sst2/dev.tsv", "all-MiniLM-L6-v2", [], "binary, 67k, English"),
    "banking77": ("banking77/train.csv", "banking77/test.csv", "all-MiniLM-L6-v2", [], "77 classes, 10k, English"),
    "mrpc": ("glue_mrpc/train.tsv", "glue_mrpc/dev.tsv", "all-MiniLM-L6-v2", [], "pairs, 3.7k, English"),
    "rte": ("glue_rte/train.tsv", "glue_rte/dev.tsv", "all-MiniLM-L6-v2", [], "pairs, 2.5k, English"),
    "cola": (
        "glue_cola/in_domain_train.tsv",
        "glue_cola/in_domain_dev.tsv",
        "all-MiniLM-L6-v2",
        ["data.label_column=1", "data.text_column=3"],
        "binary, 8.5k, English, no header",
    ),
    "chnsenticorp": (
        "chnsenticorp/train.tsv",
        "chnsenticorp/dev.tsv",
        "multilingual-e5-small",
        [],
        "binary, 9.6k, Chinese",
    ),
}


def run(name: str, cap: int, minutes: float, out: Path, settings: list[str], teachers: Path | None = None) -> dict:
    """One zero-config run; ``settings``: overrides added to every run (a recipe to compare); ``teachers``: a
    folder of earlier runs whose fine-tuned teachers are reused (same teacher, only the student's recipe differs)."""
    train, dev, teacher, extra, shape = SETS[name]
    folder = out / name
    reuse = []
    if teachers is not None:
        teacher = str(teachers / name / "teacher")
        reuse = ["teacher.finetune=false"]
    cmd = [
        sys.executable,
        "-m",
        "textdistill",
        "distill",
        "--train",
        str(DATA / train),
        "--validation",
        str(DATA / dev),
        "--teacher",
        teacher,
        "-o",
        str(folder),
        "overwrite_output_dir=true",
        *([f"data.max_train_samples={cap}"] if cap else []),
        f"teacher.training.max_train_minutes={minutes}",
        f"student.training.max_train_minutes={minutes}",
        *extra,
        *reuse,
        *settings,
    ]
    started = time.time()
    log = out / f"{name}.log"
    with open(log, "w") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    row = {
        "set": name,
        "shape": shape,
        "teacher": teacher,
        "minutes": (time.time() - started) / 60,
        "rc": proc.returncode,
    }
    if proc.returncode != 0:
        row["error"] = log.read_text().strip().splitlines()[-1][:200]
        return row
    m = json.loads((folder / "metrics.json").read_text())
    metric = m["metric"]
    row.update(
        metric=metric,
        teacher_score=100 * m["teacher"]["metrics"][metric],
        student=100 * m["student"]["metrics"][metric],
        twin=100 * m["baseline"]["metrics"][metric],
        retained=m["student"]["retained_pct"],
        twin_retained=m["baseline"]["retained_pct"],
        pretrained_twin=100 * m["baseline_pretrained"]["metrics"][metric] if "baseline_pretrained" in m else None,
        teacher_lr=m["teacher"].get("training", {}).get("learning_rate", float("nan")),
        student_lr=m["student"]["training"]["learning_rate"],
        teacher_epochs=m["teacher"].get("training", {}).get("epochs", float("nan")),
        guard="weak" if m.get("guard", {}).get("weak") else "ok",
    )
    return row


def table(rows: list[dict], cap: int, minutes: float) -> str:
    head = (
        "| data set | shape | metric | teacher | student | twin | pretrained twin | % kept | student - twin | "
        "teacher lr / epochs | min |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        if r["rc"] != 0:
            lines.append(
                f"| {r['set']} | {r['shape']} | failed: {r.get('error', '')} | | | | | | | | {r['minutes']:.1f} |"
            )
            continue
        pre = f"{r['pretrained_twin']:.2f}" if r["pretrained_twin"] is not None else "-"
        lines.append(
            f"| {r['set']} | {r['shape']} | {r['metric']} | {r['teacher_score']:.2f} | {r['student']:.2f} | "
            f"{r['twin']:.2f} | "
            f"{pre} | {r['retained']:.1f} | {r['student'] - r['twin']:+.2f} | {r['teacher_lr']:g} / "
            f"{r['teacher_epochs']:g} | "
            f"{r['minutes']:.1f} |"
        )
    lines.append("")
    lines.append(
        f"Caps for a 2-core CPU: data.max_train_samples={cap}, max_train_minutes={minutes:g} per model; "
        f"everything else "
        "the defaults (learning rates chosen by search, early stopping, guard, 2-layer student cut from the "
        "teacher)."
    )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sets", default=",".join(SETS))
    p.add_argument(
        "--train-cap",
        type=int,
        default=4000,
        help="N training rows (0: all): the first N, or N drawn at random where the first N lack classes",
    )
    p.add_argument("--minutes", type=float, default=8.0)
    p.add_argument("--out", default="runs/defaults")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="an override for every run")
    p.add_argument("--teachers-from", type=Path, help="reuse the fine-tuned teachers of an earlier --out folder")
    args = p.parse_args()
    if not DATA.is_dir():
        sys.exit(f"error: the shared data sets are not at {DATA} (set TEXTDISTILL_DATA)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.sets.split(","):
        rows.append(run(name, args.train_cap, args.minutes, out, args.set, args.teachers_from))
        print(json.dumps(rows[-1]), flush=True)
        text = table(rows, args.train_cap, args.minutes)  # after each set: a long run stopped early keeps its rows
        if args.set or args.teachers_from:
            added, reused = " ".join(args.set) or "-", args.teachers_from or "-"
            text += f"\n\nSettings added to every run: {added}; teachers from {reused}."

        (out / "defaults.md").write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
