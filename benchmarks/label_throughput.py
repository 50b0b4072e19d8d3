"""Labelling throughput (issue 6): `label_dataset` (tokenize, teacher forward in length-sorted batches, fusion,
filters, JSONL shards, manifest) against the teacher's bare batched inference (tokenize + forward, the same batches)
over the same transfer-set texts. Median of REPEATS alternating runs, in one process.

Usage: python benchmarks/label_throughput.py -c benchmarks/sst2_lowresource.yaml teacher.model=RUN/teacher \
           teacher.finetune=false [--repeats 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from textdistill.data import Collator, DistillDataset, TextData, tokenize
from textdistill.distilled import LabelTeacher, label_dataset
from textdistill.metrics import predict_logits
from textdistill.models import pad_id
from textdistill.pipeline import _prepare, as_config
from textdistill.runfolder import machine_info
from textdistill.transfer import candidates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", "-c", required=True)
    ap.add_argument("overrides", nargs="*")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    cfg = as_config(args.config, args.overrides)
    prep = _prepare(cfg)
    teacher, tok = prep.teacher.eval(), prep.teacher_tokenizer
    cands = candidates(cfg.transfer, prep.train, teacher, tok, cfg.seed)
    n = len(cands)

    def bare() -> None:
        data = TextData([c.text for c in cands], [prep.labels.names[0]] * n)
        ds = DistillDataset(tokenize(tok, data, cfg.data.max_length), [0] * n)
        torch.softmax(predict_logits(teacher, ds, Collator(pad_id(tok)), args.batch_size), -1)

    def labelled() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            label_dataset(
                [LabelTeacher(cfg.teacher.model, teacher, tok)],
                cands,
                prep.labels.names,
                Path(tmp) / "ds",
                batch_size=args.batch_size,
                max_length=cfg.data.max_length,
                shard_size=cfg.transfer.shard_size,
            )

    times: dict[str, list[float]] = {"bare inference": [], "label_dataset": []}
    bare()  # warm-up
    for _ in range(args.repeats):
        for name, fn in (("bare inference", bare), ("label_dataset", labelled)):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    result = {
        "texts": n,
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "seconds": times,
        "texts_per_second": {k: n / statistics.median(v) for k, v in times.items()},
        "machine": machine_info(),
    }
    result["ratio"] = result["texts_per_second"]["label_dataset"] / result["texts_per_second"]["bare inference"]
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        tps = result["texts_per_second"]
        print(
            f"{n} texts: bare inference {tps['bare inference']:.0f}/s, label_dataset {tps['label_dataset']:.0f}/s "
            f"({100 * result['ratio']:.1f}%)"
        )


if __name__ == "__main__":
    main()
