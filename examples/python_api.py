"""Distil from objects in a notebook: a teacher model object, pandas DataFrames, settings as keywords.

    python examples/python_api.py                     # all-MiniLM-L6-v2, 2,000 SST-2 rows, a 2-layer student
    python examples/python_api.py --rows 8000 --teacher path/to/model

No YAML and no files of your own: the DataFrames and the model object go straight in, and the result is the student,
ready to call, with the report. tests/test_examples.py runs this file on a tiny model.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pandas as pd
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import textdistill
from textdistill.models import resolve_model_path

DATA = Path(os.environ.get("TEXTDISTILL_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))


def frame(path: Path, rows: int) -> pd.DataFrame:
    """SST-2 as a user's own table would look: a review column and a sentiment column of words."""
    if not path.is_file():
        raise SystemExit(f"error: {path} not found (set TEXTDISTILL_DATA to the shared data folder)")
    df = pd.read_csv(path, sep="\t", quoting=3, nrows=rows)
    return pd.DataFrame({"review": df["text"], "sentiment": df["label"].map({0: "negative", 1: "positive"})})


def main(argv: list[str] | None = None) -> textdistill.api.RunResult:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--teacher", default="all-MiniLM-L6-v2", help="a folder, hub id or catalogue name")
    p.add_argument("--rows", type=int, default=2000, help="training rows (the dev set is SST-2's whole dev split)")
    p.add_argument("--out", default="runs/python-api")
    p.add_argument("--fast", action="store_true", help="one short epoch each, fixed rates (tests)")
    args = p.parse_args(argv)

    # what a notebook already holds: a model object with its tokenizer, and two DataFrames
    path = resolve_model_path(args.teacher, "teacher")
    teacher = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    tokenizer = AutoTokenizer.from_pretrained(path)
    train, dev = frame(DATA / "sst2" / "train.tsv", args.rows), frame(DATA / "sst2" / "dev.tsv", 10**6)

    quick = {"num_train_epochs": 1, "learning_rate": 1e-3, "per_device_train_batch_size": 16} if args.fast else {}
    result = textdistill.distill(
        teacher={"model": teacher, "finetune": True, "training": quick},  # an encoder to fine-tune first
        tokenizer=tokenizer,
        train=train,
        validation=dev,
        text_column="review",
        label_column="sentiment",
        student={"num_layers": 2, "training": quick},
        output_dir=args.out,
        overwrite_output_dir=True,
        data={"max_length": 64},
        distill={"temperature": 2.0, "alpha": 0.9},
    )
    print(result.report.split("\n\n")[1] if "\n\n" in result.report else result.report)  # the headline
    print("student says:", result.student(["a gorgeous, witty film", "a dull, lifeless mess"]))
    return result


if __name__ == "__main__":
    main()
