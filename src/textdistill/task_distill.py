"""Task distillation and teacher ensembles: ``textdistill distill`` with a ``tasks:`` config.

Every task names its data and its teachers (one, or an ensemble). The run

1. loads every task's data and every teacher and checks that they agree (label sets, task types), and builds the
   student once, before any training;
2. fine-tunes the teachers marked ``finetune: true`` (saved under ``teachers/``);
3. computes each teacher's outputs on its task's training set once (teacher-output cache, each teacher with its own
   tokenizer), and scores each teacher, and each ensemble, on the task's dev set;
4. trains ONE student (shared encoder, a head per task; :mod:`textdistill.multitask`) on the fused soft targets
   through the same training loop as every other run, then the same student on the gold labels only (the twin);
5. writes ``student/`` (``AutoModel.from_pretrained`` loads it; :func:`textdistill.multitask.predict` labels text
   for any task by name), ``baseline/``, ``metrics.json`` and ``report.md``.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from textdistill.config import MultiTaskRunConfig, TaskConfig, TeacherConfig
from textdistill.data import Collator, DistillDataset, LabelSet, TextData, load_splits, tokenize
from textdistill.ensemble import fuse_regression, fuse_soft_targets, teacher_weights
from textdistill.errors import TextDistillError
from textdistill.metrics import evaluate_model, measure_speeds, metrics_for, predict_logits, speedups
from textdistill.models import build_student, fit_max_length, load_classifier, pad_id, resolve_model_path
from textdistill.multitask import MultiTaskDataset, MultiTaskModel, MultiTaskObjective, TaskSpec, multitask_from_encoder
from textdistill.objective import hard_label_objective
from textdistill.outdir import releases_locks
from textdistill.report import multitask_model_card, render_multitask_report
from textdistill.runfolder import RunFolder, profile
from textdistill.teacher_outputs import soft_targets
from textdistill.train import train_loop


@dataclass
class Teacher:
    """One loaded teacher of a task; ``columns[c]`` is the teacher's output for the task's label ``c``."""

    cfg: TeacherConfig
    model: nn.Module
    tokenizer: Any
    columns: list[int] | None = None  # None: same order (or regression)
    info: dict[str, Any] = field(default_factory=dict)
    folder: Path | None = None  # its weights on disk (None: a hub id)


@dataclass
class Task:
    cfg: TaskConfig
    train: TextData
    dev: TextData
    labels: LabelSet
    teachers: list[Teacher]

    @property
    def name(self) -> str:
        return self.cfg.name

    def spec(self) -> dict[str, Any]:
        """The task as the multi-task model's config stores it."""
        return {
            "name": self.name,
            "labels": None if self.labels.regression else list(self.labels.names),
            "metric": self.cfg.metric,
        }


class OneTask(nn.Module):
    """A multi-task model seen as a one-task model (``model(**inputs)``), for prediction and speed measurements."""

    def __init__(self, model: MultiTaskModel, task: str) -> None:
        super().__init__()
        self.model, self.task = model, task

    def forward(self, **inputs: Any) -> Any:
        return self.model(**inputs, task=self.task)


# --------------------------------------------------------------------------------------------------------------------
# Loading and checking, before any training


def _load_task(i: int, cfg: TaskConfig, seed: int) -> Task:
    from accelerate.utils import set_seed

    train, dev = load_splits(cfg.data)
    labels = LabelSet.from_data(train, cfg.data.task_type)
    if len(labels) < 2 and not labels.regression:
        raise TextDistillError(
            f"{train.source}: only one label ({labels.names[0]!r}); task {cfg.name!r} needs at least two"
        )
    labels.encode(train)
    labels.encode(dev)  # a dev label the training labels lack fails here
    teachers = []
    for j, tcfg in enumerate(cfg.teachers):
        key = f"tasks.{i}.teachers.{j}.model (task {cfg.name!r})"
        set_seed(seed + j)  # a fresh head for fine-tuning: reproducible, and different for each teacher of a task
        model, tok, own = load_classifier(tcfg.model, labels, key, require_trained_head=not tcfg.finetune)
        path = resolve_model_path(tcfg.model, key)
        folder = Path(path) if os.path.isdir(path) else None
        teachers.append(Teacher(tcfg, model, tok, labels.columns_in(own), {"model": tcfg.model}, folder))
    return Task(cfg, train, dev, labels, teachers)


def _student_source(cfg: MultiTaskRunConfig, tasks: list[Task]) -> tuple[nn.Module, Any, str]:
    """The model the student's encoder is made from, with its tokenizer."""
    if cfg.student_from is None:
        first = tasks[0].teachers[0]
        return first.model, first.tokenizer, first.cfg.model
    model, tok, _ = load_classifier(cfg.student_from, LabelSet(("0", "1")), "student_from", require_trained_head=False)
    return model, tok, cfg.student_from


def _build_student(
    cfg: MultiTaskRunConfig, source: nn.Module, source_tok: Any, tasks: list[Task]
) -> tuple[MultiTaskModel, Any, dict]:
    """The multi-task student: the student recipe applied to ``source``, its encoder under one head per task."""
    texts = [t for task in tasks for t in task.train.texts + (task.train.pairs or [])]
    single, tok, recipe = build_student(cfg.student, source, source_tok, LabelSet(("0", "1")), cfg.seed, texts)
    model = multitask_from_encoder(single.base_model, [t.spec() for t in tasks])
    return model, tok, recipe


# --------------------------------------------------------------------------------------------------------------------
# Teachers: fine-tuning, outputs, scores


def _examples(tokenizer: Any, task: Task, data: TextData) -> DistillDataset:
    max_length = fit_max_length(tokenizer, task.cfg.data.max_length, f"tasks.{task.name}.data.max_length")
    return DistillDataset(tokenize(tokenizer, data, max_length), task.labels.encode(data))


def _fine_tune(cfg: MultiTaskRunConfig, task: Task, j: int, teacher: Teacher, run: RunFolder) -> None:
    args = teacher.cfg.training
    collator = Collator(pad_id(teacher.tokenizer))
    dev = _examples(teacher.tokenizer, task, task.dev)
    name = f"teacher-{task.name}-{j}"
    result = train_loop(
        teacher.model,
        _examples(teacher.tokenizer, task, task.train),
        collator,
        args,
        hard_label_objective,
        lambda m: evaluate_model(m, dev, collator, args.per_device_eval_batch_size),
        task.cfg.metric,
        cfg.seed + j,
        run.path / "logs" / f"{name}.jsonl",
        desc=name,
        checkpoint_dir=run.checkpoints(name),
        resume=run.resume,
    )
    folder = run.save(
        f"teachers/{task.name}-{j}",
        teacher.model,
        teacher.tokenizer,
        {"fine_tuned_from": teacher.cfg.model, "best_step": result.best_step},
    )
    teacher.folder = folder
    teacher.info.update(
        {"fine_tuned": str(folder.relative_to(run.path)), "train_seconds": result.seconds, "steps": result.steps}
    )


def _in_task_order(logits: torch.Tensor, teacher: Teacher) -> torch.Tensor:
    return logits if teacher.columns is None else logits[:, teacher.columns]


def _teacher_outputs(cfg: MultiTaskRunConfig, task: Task, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every teacher's outputs on the task's training set ``[N, K, C]`` (cached) and dev set ``[K, M, C]``; each
    teacher's dev metrics go into its ``info``."""
    train_out, dev_out = [], []
    for teacher in task.teachers:
        teacher.model.eval().requires_grad_(False)
        collator = Collator(pad_id(teacher.tokenizer))
        train = _examples(teacher.tokenizer, task, task.train)
        logits = soft_targets(cfg.distill, teacher.cfg.model, teacher.model, train, collator, batch_size, teacher.info)
        train_out.append(_in_task_order(logits, teacher))
        dev = _examples(teacher.tokenizer, task, task.dev)
        dev_logits = _in_task_order(predict_logits(teacher.model, dev, collator, batch_size), teacher)
        teacher.info["metrics"] = metrics_for(dev_logits, dev.labels)
        dev_out.append(dev_logits)
    return torch.stack(train_out, 1), torch.stack(dev_out)


def _spec(cfg: MultiTaskRunConfig, task: Task) -> TaskSpec:
    """How the task is distilled; ``dev_score`` weights come from the teachers' dev scores."""
    scores = [t.info["metrics"][task.cfg.metric] for t in task.teachers]
    try:
        weights = teacher_weights(len(task.teachers), task.cfg.fusion, task.cfg.teacher_weights, scores)
    except ValueError as exc:
        raise TextDistillError(
            f"task {task.name!r}: fusion {task.cfg.fusion!r}: {exc} (teachers' dev {task.cfg.metric}: {scores})"
        ) from None
    d = cfg.distill
    return TaskSpec(
        task.name,
        task.labels.regression,
        task.cfg.fusion,
        task.cfg.objective,
        weights,
        d.temperature,
        d.alpha,
        d.anneal,
    )


def _ensemble_metrics(task: Task, spec: TaskSpec, dev_logits: torch.Tensor, dev_labels: list) -> dict[str, float]:
    """The ensemble's own dev metrics: its fused prediction (temperature 1)."""
    if task.labels.regression:
        return metrics_for(fuse_regression(dev_logits, spec.weights), dev_labels)
    probs = fuse_soft_targets(dev_logits, spec.fusion, 1.0, spec.weights)
    return metrics_for(probs.clamp_min(1e-12).log(), dev_labels)


# --------------------------------------------------------------------------------------------------------------------
# The run


def _evaluator(tasks: list[Task], dev_sets: list[DistillDataset], collator: Collator, batch_size: int):
    """Per-task dev metrics of a multi-task model (``<task>/<metric>``) and ``average``, the mean of each task's own
    metric (as GLUE averages)."""

    def evaluate(model: nn.Module) -> dict[str, float]:
        out: dict[str, float] = {}
        for task, dev in zip(tasks, dev_sets):
            metrics = metrics_for(predict_logits(OneTask(model, task.name), dev, collator, batch_size), dev.labels)
            out.update({f"{task.name}/{k}": v for k, v in metrics.items()})
        out["average"] = sum(out[f"{t.name}/{t.cfg.metric}"] for t in tasks) / len(tasks)
        return out

    return evaluate


def _per_task(scores: dict[str, float], task: Task) -> dict[str, float]:
    prefix = f"{task.name}/"
    return {k[len(prefix) :]: v for k, v in scores.items() if k.startswith(prefix)}


@releases_locks
def distill_tasks(cfg: MultiTaskRunConfig, resume: bool = False) -> dict[str, Any]:
    """Distill one multi-task student from every task's teachers (see the module's text); returns the report."""
    run = RunFolder(cfg, resume, kind="tasks")
    tasks = [_load_task(i, t, cfg.seed) for i, t in enumerate(cfg.tasks)]
    source, source_tok, source_name = _student_source(cfg, tasks)
    _build_student(cfg, source, source_tok, tasks)  # a bad recipe fails now, before any training
    run.open()
    started = time.perf_counter()
    for task in tasks:
        for j, teacher in enumerate(task.teachers):
            if teacher.cfg.finetune:
                _fine_tune(cfg, task, j, teacher, run)
    if cfg.student_from is None:
        source = tasks[0].teachers[0].model  # fine-tuned by now, when it was to be
    student, stok, recipe = _build_student(cfg, source, source_tok, tasks)
    args = cfg.student.training
    bs = args.per_device_eval_batch_size

    train_sets, dev_sets, specs, report_tasks = [], [], [], {}
    for task in tasks:
        train_logits, dev_logits = _teacher_outputs(cfg, task, bs)
        spec = _spec(cfg, task)
        specs.append(spec)
        train_sets.append(_examples(stok, task, task.train).with_teacher_logits(train_logits))
        dev_sets.append(_examples(stok, task, task.dev))
        entry: dict[str, Any] = {
            "metric": task.cfg.metric,
            "data": {
                "train": task.train.source,
                "validation": task.dev.source,
                "train_examples": len(task.train),
                "validation_examples": len(task.dev),
                "labels": None if task.labels.regression else list(task.labels.names),
            },
            "fusion": task.cfg.fusion,
            "objective": task.cfg.objective,
            "teachers": [{**t.info, "weight": float(w)} for t, w in zip(task.teachers, spec.weights)],
        }
        if len(task.teachers) > 1:
            entry["ensemble"] = {"metrics": _ensemble_metrics(task, spec, dev_logits, dev_sets[-1].labels)}
        reference = entry.get("ensemble") or entry["teachers"][0]
        entry["reference_score"] = reference["metrics"][task.cfg.metric]
        report_tasks[task.name] = entry
        shown = ", ".join(f"{t.info['metrics'][task.cfg.metric]:.4f}" for t in task.teachers)
        print(f"task {task.name}: teachers' dev {task.cfg.metric}: {shown}", file=sys.stderr)

    collator = Collator(pad_id(stok))
    evaluate = _evaluator(tasks, dev_sets, collator, bs)
    data = MultiTaskDataset(train_sets, cfg.distill.sampling, cfg.distill.tau)
    objective = MultiTaskObjective(specs)
    result = train_loop(
        student,
        data,
        collator,
        args,
        objective,
        evaluate,
        "average",
        cfg.seed,
        run.path / "logs" / "student.jsonl",
        desc="student",
        checkpoint_dir=run.checkpoints("student"),
        resume=run.resume,
    )
    student_scores = evaluate(student)
    student_dir = run.save(
        "student",
        student,
        stok,
        {
            "distilled_from": {t.name: [x.cfg.model for x in t.teachers] for t in tasks},
            "encoder_from": source_name,
            **recipe,
        },
    )

    baseline_scores = None
    if cfg.distill.baseline:
        twin, _, _ = _build_student(cfg, source, source_tok, tasks)
        gold_only = MultiTaskDataset(
            [DistillDataset(s.student, s.labels) for s in train_sets], cfg.distill.sampling, cfg.distill.tau
        )
        base = train_loop(
            twin,
            gold_only,
            collator,
            args,
            objective,
            evaluate,
            "average",
            cfg.seed,
            run.path / "logs" / "baseline.jsonl",
            desc="baseline",
            checkpoint_dir=run.checkpoints("baseline"),
            resume=run.resume,
        )
        baseline_scores = evaluate(twin)
        run.save("baseline", twin, stok, {"trained_without_distillation": True, **recipe})

    if not run.main:
        return {"output_dir": str(run.final), "main_process": False}
    for task in tasks:
        entry = report_tasks[task.name]
        ref = entry["reference_score"]
        sides = [("student", student_scores)] + ([("baseline", baseline_scores)] if baseline_scores else [])
        for side, scores in sides:
            metrics = _per_task(scores, task)
            entry[side] = {"metrics": metrics, "retained_pct": 100.0 * metrics[task.cfg.metric] / ref if ref else None}
    average = {
        "reference": sum(e["reference_score"] for e in report_tasks.values()) / len(tasks),
        "student": student_scores["average"],
    }
    if baseline_scores:
        average["baseline"] = baseline_scores["average"]
    for side in ("student", "baseline"):
        if side in average:
            average[f"{side}_retained_pct"] = (
                100.0 * average[side] / average["reference"] if average["reference"] else None
            )

    # Size and speed side by side, on the first task's dev examples: one teacher vs the student.
    first, first_teacher = tasks[0], tasks[0].teachers[0]
    teacher_dev = _examples(first_teacher.tokenizer, first, first.dev)
    n, one_task = (
        cfg.eval.latency_samples,
        OneTask(student, first.name),
    )  # timed in turns, as distill's teacher and student
    speed = measure_speeds(
        {
            "teacher": (first_teacher.model, teacher_dev.student[:n], pad_id(first_teacher.tokenizer)),
            "student": (one_task, dev_sets[0].student[:n], pad_id(stok)),
        },
        cfg.eval.latency_repeats,
    )
    teacher_profile = profile(
        first_teacher.model,
        first_teacher.folder,
        teacher_dev,
        pad_id(first_teacher.tokenizer),
        cfg.eval,
        {},
        speed["teacher"],
    )
    student_profile = profile(one_task, student_dir, dev_sets[0], pad_id(stok), cfg.eval, {}, speed["student"])
    report: dict[str, Any] = {
        "kind": "multitask",
        "tasks": report_tasks,
        "average": average,
        "distill": cfg.distill.model_dump(),
        "teachers": {
            "count": sum(len(t.teachers) for t in tasks),
            "params_total": sum(sum(p.numel() for p in x.model.parameters()) for t in tasks for x in t.teachers),
            "speed_of": first_teacher.cfg.model,
            **teacher_profile,
        },
        "student": {
            **recipe,
            "encoder_from": source_name,
            "best_step": result.best_step,
            "train_seconds": result.seconds,
            "train_samples_per_second": result.samples_per_second,
            **student_profile,
        },
    }
    report["student"].pop("metrics")
    report["teachers"].pop("metrics")
    if baseline_scores:
        report["baseline"] = {"best_step": base.best_step, "train_seconds": base.seconds}
    report.update(speedups(teacher_profile, student_profile))
    return run.finish(report, render_multitask_report, started, {"student/README.md": multitask_model_card})
