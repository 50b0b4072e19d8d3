"""Distil inside transformers.Trainer: DistillationTrainer takes the teacher and the distill: settings; the
TrainingArguments, callbacks, logging and checkpoints are the Trainer's.

    python examples/trainer_integration.py            # all-MiniLM-L6-v2 fine-tuned here, then distilled into 2 layers
    python examples/trainer_integration.py --teacher runs/sst2-quickstart/teacher --skip-teacher-training

tests/test_examples.py runs this file on a tiny model.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
from datasets import load_dataset
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
)

from textdistill.integrations.transformers import DistillationTrainer
from textdistill.models import resolve_model_path, student_from_teacher

DATA = Path(os.environ.get("TEXTDISTILL_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))


def accuracy(pred) -> dict[str, float]:
    return {"accuracy": float((np.argmax(pred.predictions, -1) == pred.label_ids).mean())}


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--teacher", default="all-MiniLM-L6-v2", help="a folder, hub id or catalogue name")
    p.add_argument("--skip-teacher-training", action="store_true", help="the teacher is fine-tuned on SST-2 already")
    p.add_argument("--rows", type=int, default=2000)
    p.add_argument("--epochs", type=float, default=2.0)
    p.add_argument("--out", default="runs/trainer-integration")
    args = p.parse_args(argv)
    files = {"train": str(DATA / "sst2" / "train.tsv"), "validation": str(DATA / "sst2" / "dev.tsv")}
    if not Path(files["train"]).is_file():
        raise SystemExit(f"error: {files['train']} not found (set TEXTDISTILL_DATA to the shared data folder)")

    path = resolve_model_path(args.teacher, "teacher")
    tokenizer = AutoTokenizer.from_pretrained(path)
    data = load_dataset("csv", data_files=files, delimiter="\t", quoting=3)
    data["train"] = data["train"].select(range(min(args.rows, len(data["train"]))))
    data = data.map(lambda b: tokenizer(b["text"], truncation=True, max_length=64), batched=True)
    data = data.rename_column("label", "labels").remove_columns(["text"])
    common = dict(
        per_device_train_batch_size=32,
        num_train_epochs=args.epochs,
        eval_strategy="epoch",
        save_strategy="no",
        report_to=[],
        logging_steps=20,
        use_cpu=True,
        seed=0,
    )

    teacher = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    if not args.skip_teacher_training:  # plain Trainer: the teacher, fine-tuned as anyone would
        Trainer(
            model=teacher,
            args=TrainingArguments(f"{args.out}/teacher", learning_rate=1e-4, **common),
            train_dataset=data["train"],
            eval_dataset=data["validation"],
            processing_class=tokenizer,
            data_collator=DataCollatorWithPadding(tokenizer),
            compute_metrics=accuracy,
        ).train()

    student = student_from_teacher(teacher, [0, 5] if teacher.config.num_hidden_layers >= 6 else [0, 1])
    trainer = DistillationTrainer(
        model=student,
        teacher=teacher,
        distill={"temperature": 2.0, "alpha": 0.9},  # the distill: section of a textdistill config
        args=TrainingArguments(f"{args.out}/student", learning_rate=3e-4, **common),
        train_dataset=data["train"],
        eval_dataset=data["validation"],
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=accuracy,
    )
    trainer.train()
    scores = trainer.evaluate()
    print(f"student (2 layers) dev accuracy: {scores['eval_accuracy']:.4f}")
    return scores


if __name__ == "__main__":
    main()
