"""Training throughput of the multi-task student with its last layer whole and for [CLS] alone
(`training.first_token_only`, textdistill.first_token), side by side.

The student of benchmarks/glue/multitask.yaml (all-MiniLM-L6-v2's layers 1, 3, 5 under one head per task) trains
through textdistill's loop on the five GLUE tasks' real training text (SST-2, CoLA, MRPC, RTE, STS-B at the config's
max lengths, one-task batches of 32 drawn in proportion to the tasks' sizes), with cached teacher outputs. The
teachers' outputs are random logits here: the step does not depend on their values, and the run needs no fine-tuned
teachers. The two settings alternate over the rounds; each run is timed after the loop's warm-up steps; prints the
medians and their ratio as JSON.

    python benchmarks/multitask_cut_speed.py            # after the README's install; TEXTDISTILL_DATA or ../shared/data
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
from first_token_speed import (
    side_by_side,  # (benchmarks/, the script's folder, is on the path)
)

from textdistill.config import MultiTaskRunConfig, load_config
from textdistill.data import Collator, DistillDataset, LabelSet, load_splits, tokenize
from textdistill.models import build_student, load_classifier, pad_id
from textdistill.multitask import (
    MultiTaskDataset,
    MultiTaskObjective,
    TaskSpec,
    multitask_from_encoder,
)
from textdistill.task_distill import Task
from textdistill.train import WARMUP_STEPS, train_loop

CONFIG = Path(__file__).resolve().parent / "glue" / "multitask.yaml"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=60, help="training steps per run (the first 10 are warm-up)")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--examples", type=int, default=4000, help="training examples per task at most")
    args = ap.parse_args()
    if args.steps <= WARMUP_STEPS:
        raise SystemExit(f"--steps must be above the loop's {WARMUP_STEPS} warm-up steps")
    cfg = load_config(CONFIG)
    assert isinstance(cfg, MultiTaskRunConfig)
    source, source_tok, _ = load_classifier(
        cfg.student_from, LabelSet(("0", "1")), "student_from", require_trained_head=False
    )
    tasks = []
    for task_cfg in cfg.tasks:
        train, dev = load_splits(task_cfg.data)
        tasks.append(Task(task_cfg, train, dev, LabelSet.from_data(train, task_cfg.data.task_type), teachers=[]))
    texts = [t for task in tasks for t in task.train.texts + (task.train.pairs or [])]
    single, tok, _ = build_student(cfg.student, source, source_tok, LabelSet(("0", "1")), cfg.seed, texts)
    g = torch.Generator().manual_seed(0)
    sets = []
    for task in tasks:
        feats = tokenize(tok, task.train, task.cfg.data.max_length)[: args.examples]
        width = 1 if task.labels.regression else len(task.labels)
        labels = task.labels.encode(task.train)[: len(feats)]
        sets.append(DistillDataset(feats, labels, teacher_logits=torch.randn(len(feats), 1, width, generator=g)))
    data = MultiTaskDataset(sets, cfg.distill.sampling, cfg.distill.tau)
    objective = MultiTaskObjective(
        [
            TaskSpec(t.name, t.labels.regression, temperature=cfg.distill.temperature, alpha=cfg.distill.alpha)
            for t in tasks
        ]
    )
    runs = iter(range(2 * args.rounds))

    def train_once(cut: bool) -> float:
        r = next(runs)
        torch.manual_seed(r // 2)
        student = multitask_from_encoder(single.base_model, [t.spec() for t in tasks])
        train_args = cfg.student.training.model_copy(
            update={"max_steps": args.steps, "logging_steps": args.steps, "first_token_only": cut, "report_to": []}
        )
        with tempfile.TemporaryDirectory() as tmp:
            res = train_loop(
                student,
                data,
                Collator(pad_id(tok)),
                train_args,
                objective,
                lambda m: {"average": 0.0},
                "average",
                cfg.seed,
                Path(tmp) / "log.jsonl",
                desc=f"run {r + 1} {'cut' if cut else 'full'}",
            )
        return res.steady_samples_per_second

    res = side_by_side(train_once, args.rounds)
    print(
        json.dumps(
            {
                "student": f"multi-task, {len(tasks)} tasks, all-MiniLM-L6-v2 layers {cfg.student.layers}",
                "threads": torch.get_num_threads(),
                "steps": args.steps,
                "samples_per_second": {"full": res["full"], "cut": res["cut"]},
                "speedup": res["speedup"],
                "runs": res["runs"],
            }
        )
    )


if __name__ == "__main__":
    main()
