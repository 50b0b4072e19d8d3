"""Inference throughput of a classifier with its last layer whole and for [CLS] alone (textdistill.first_token),
side by side: 256 SST-2 dev sentences at batch 32, through textdistill.metrics.measure_speed, the two settings
alternating over the rounds; prints the medians and their ratio as JSON.

    python benchmarks/first_token_speed.py --model all-mpnet-base-v2     # after the README's install (+ the model)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from textdistill.config import DataConfig
from textdistill.data import LabelSet, read_file, tokenize
from textdistill.first_token import can_cut
from textdistill.metrics import measure_speed
from textdistill.models import load_classifier


def side_by_side(measure: Callable[[bool], float], rounds: int) -> dict[str, Any]:
    """``measure(cut)`` for the full last layer and the cut one in turns (the order alternating by round): the runs,
    their medians and the ratio cut / full."""
    runs: dict[str, list[float]] = {"full": [], "cut": []}
    for r in range(rounds):
        for name in ("full", "cut") if r % 2 == 0 else ("cut", "full"):
            runs[name].append(measure(name == "cut"))
    full, cut = statistics.median(runs["full"]), statistics.median(runs["cut"])
    return {"full": full, "cut": cut, "speedup": cut / full, "runs": runs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="all-MiniLM-L6-v2", help="a catalogue name, hub id or local folder")
    ap.add_argument(
        "--data", default=os.path.join(os.environ.get("TEXTDISTILL_DATA", "../shared/data"), "sst2", "dev.tsv")
    )
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=10, help="measure_speed's repeats in each round")
    args = ap.parse_args()
    model, tok, _ = load_classifier(args.model, LabelSet(("0", "1")), "--model", require_trained_head=False)
    if not can_cut(model):
        raise SystemExit(f"{args.model}: {type(model).__name__} has no last layer that textdistill.first_token can cut")
    feats = tokenize(tok, read_file(Path(args.data), DataConfig(train_file="x", validation_file="x")), 64)[:256]
    res = side_by_side(
        lambda cut: measure_speed(model, feats, tok.pad_token_id, repeats=args.repeats, first_token=cut)[
            "throughput_batch32"
        ],
        args.rounds,
    )
    print(
        json.dumps(
            {
                "model": args.model,
                "threads": torch.get_num_threads(),
                "throughput_batch32": {"full": res["full"], "cut": res["cut"]},
                "speedup": res["speedup"],
                "runs": res["runs"],
            }
        )
    )


if __name__ == "__main__":
    main()
