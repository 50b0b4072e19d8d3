"""The three commands as Python functions: :func:`train_teacher`, :func:`distill`, :func:`evaluate`.

Each reads and validates everything (config, data, labels, models) before any training starts, then writes its run
folder under ``<output_dir>.partial`` and renames it to ``output_dir`` only when it is complete, so a failed or
interrupted run never leaves a folder that looks finished.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from textdistill.cache import TeacherCache
from textdistill.config import (
    AnyRunConfig,
    GenerativeRunConfig,
    MultiTaskRunConfig,
    RunConfig,
    TeacherConfig,
    TrainingConfig,
    apply_overrides,
    config_from_dict,
    load_config,
    smoke_config,
)
from textdistill.data import (
    Collator,
    DistillDataset,
    LabelSet,
    TextData,
    load_splits,
    load_test,
    read_corpus_lines,
    tokenize,
    tokenize_words,
)
from textdistill.errors import TextDistillError
from textdistill.export import export_student
from textdistill.features import IntermediateLosses, resolve_matches
from textdistill.html_report import confusion_matrix
from textdistill.metrics import (
    dataset_metrics,
    evaluate_model,
    measure_speed,
    measure_speeds,
    metrics_for,
    predict_logits,
    speedups,
    word_predictions,
)
from textdistill.models import (
    build_student,
    check_student_length,
    count_parameters,
    fit_max_length,
    load_classifier,
    load_saved_classifier,
    pad_id,
    same_tokenizer,
    set_loading_policy,
)
from textdistill.objective import DistillationObjective, hard_label_objective
from textdistill.outdir import releases_locks
from textdistill.report import model_card, render_report
from textdistill.runfolder import RunFolder, guard_output, machine_info, profile
from textdistill.teacher_outputs import soft_targets
from textdistill.train import LoopResult, process_state, train_loop
from textdistill.vocab import check_prunable, prune_vocabulary, source_features, used_token_ids


def as_any_config(
    cfg: AnyRunConfig | dict | str | os.PathLike, overrides: list[str] | None = None, smoke: bool = False
) -> AnyRunConfig:
    """Accept a config object, a plain dict or a YAML path (the Python API mirrors the CLI); the config's ``loading``
    policy holds for the models the command loads. ``smoke``: the run on a few batches (:func:`smoke_config`)."""
    config_file = None
    if isinstance(cfg, (RunConfig, MultiTaskRunConfig, GenerativeRunConfig)):
        config_file = cfg._config_file
        cfg = cfg.model_dump(mode="json")
    out = (
        config_from_dict(apply_overrides(cfg, overrides or []))
        if isinstance(cfg, dict)
        else load_config(cfg, overrides)
    )
    config_file = config_file or out._config_file
    if smoke:
        out = config_from_dict(smoke_config(out.model_dump(mode="json")), "--smoke")
    out._config_file = config_file
    set_loading_policy(out.loading.allow_pickle, out.loading.trust_remote_code)
    return out


def as_config(
    cfg: AnyRunConfig | dict | str | os.PathLike, overrides: list[str] | None = None, smoke: bool = False
) -> RunConfig:
    """:func:`as_any_config` for the commands that take one task (train, evaluate, export, bench)."""
    out = as_any_config(cfg, overrides, smoke)
    if isinstance(out, MultiTaskRunConfig):
        raise TextDistillError(
            "this command takes a one-task config (data:, teacher:); a config with tasks: runs with "
            "`textdistill distill` (teachers with finetune: true are fine-tuned there)"
        )
    if isinstance(out, GenerativeRunConfig):
        raise TextDistillError(
            "this command takes a classification config (data:, teacher:); a generative: config "
            "(causal "
            "language models) runs with `textdistill distill`"
        )
    return out


# --------------------------------------------------------------------------------------------------------------------
# Shared steps


@dataclass
class Prepared:
    """Data and teacher, loaded and checked."""

    train: TextData
    dev: TextData
    test: TextData | None  # the held-out split, scored once at the end
    labels: LabelSet
    teacher: nn.Module
    teacher_tokenizer: Any


def _teacher_cfg(cfg: RunConfig) -> TeacherConfig:
    if cfg.teacher is None:
        raise TextDistillError("teacher: required (teacher.model names the model to fine-tune or distill from)")
    return cfg.teacher


def _prepare(cfg: RunConfig) -> Prepared:
    teacher_cfg = _teacher_cfg(cfg)
    train, dev = load_splits(cfg.data)
    labels = LabelSet.from_data(train, cfg.data.task_type)
    if not labels.names:
        raise TextDistillError(f"{train.source}: no labels at all (multi_label: every text's label list is empty)")
    if len(labels) < 2 and labels.task_type in ("classification", "token_classification"):
        raise TextDistillError(
            f"{train.source}: only one label ({labels.names[0]!r}); classification needs at least two"
        )
    from accelerate.utils import set_seed

    set_seed(cfg.seed)  # a head made fresh for fine-tuning is initialised from the run's seed: runs repeat exactly
    teacher, tokenizer, labels = load_classifier(
        teacher_cfg.model, labels, "teacher.model", require_trained_head=not teacher_cfg.finetune
    )
    fit_max_length(
        tokenizer, cfg.data.max_length, role="teacher.model"
    )  # under 4: an error; beyond the model: a warning
    test = load_test(cfg.data)
    for split in (train, dev, test):  # a dev or test label the training labels lack fails here, before any training
        if split is not None:
            labels.encode(split)
    return Prepared(train, dev, test, labels, teacher, tokenizer)


def _texts(data: TextData) -> list[str]:
    """All the text a word vocabulary should cover: the texts and their pairs."""
    return data.texts + (data.pairs or [])


def _dataset(
    tokenizer: Any,
    data: TextData,
    labels: LabelSet,
    max_length: int,
    teacher_tokenizer: Any = None,
    alignment: str = "first",
) -> DistillDataset:
    """Examples tokenized once by the model's tokenizer (and by the teacher's, when it is a different one).

    Token classification: words tokenized with their tags aligned to the pieces (``alignment``: first | all; dev sets
    use first, so scores read one position per word); the teacher must share the tokenizer (token positions must line
    up for token-level KD), or the student's must be the teacher's pruned to this text's pieces
    (``student.prune_vocabulary``: the same pieces, renumbered; the teacher reads them in its own ids). Each tokenizer
    cuts texts at ``max_length`` or at what its model reads, if less (:func:`textdistill.models.fit_max_length`)."""
    other = teacher_tokenizer is not None and not same_tokenizer(tokenizer, teacher_tokenizer)
    if labels.task_type == "token_classification":
        words = tokenize_words(
            tokenizer, data, labels.encode(data), labels.names, fit_max_length(tokenizer, max_length), alignment
        )
        teacher_feats = source_features(tokenizer, teacher_tokenizer, words.features) if other else None
        if other and teacher_feats is None:
            raise TextDistillError(
                "token-level distillation needs the student to tokenize like the teacher (the "
                "token positions "
                "must line up); this student has another tokenizer. Make the student from the "
                "teacher "
                "(student.layers / num_layers / config_overrides) or take one with the same "
                "tokenizer"
            )
        return DistillDataset(
            words.features, words.labels, teacher_feats, label_names=labels.names, dropped=words.dropped
        )
    teacher_feats = tokenize(teacher_tokenizer, data, fit_max_length(teacher_tokenizer, max_length)) if other else None
    return DistillDataset(
        tokenize(tokenizer, data, fit_max_length(tokenizer, max_length)), labels.encode(data), teacher_feats
    )


def fit(
    name: str,
    model: nn.Module,
    train_set: DistillDataset,
    dev_set: DistillDataset,
    collator: Collator,
    args: TrainingConfig,
    objective: Any,
    metric: str,
    seed: int,
    run: RunFolder,
    teacher: nn.Module | None = None,
    keep_best: bool = True,
) -> LoopResult:
    def evaluate(m: nn.Module, on: DistillDataset = dev_set) -> dict[str, float]:
        return evaluate_model(m, on, collator, args.per_device_eval_batch_size)

    chosen = None
    if args.learning_rate is None:  # chosen by short trials on dev (textdistill.tuning), kept in logs/
        from textdistill.tuning import choose_learning_rate

        chosen = choose_learning_rate(
            name,
            model,
            train_set,
            dev_set,
            collator,
            args,
            objective,
            evaluate,
            metric,
            seed,
            run.path / "logs",
            teacher,
        )
        args = args.model_copy(update={"learning_rate": chosen["learning_rate"]})
    result = train_loop(
        model,
        train_set,
        collator,
        args,
        objective,
        evaluate,
        metric,
        seed,
        run.path / "logs" / f"{name}.jsonl",
        desc=name,
        teacher=teacher,
        keep_best=keep_best,
        checkpoint_dir=run.checkpoints(name),
        resume=run.resume,
    )
    result.training = {
        "learning_rate": args.learning_rate,
        "learning_rate_from": chosen["how"] if chosen else "the config",
        **({"learning_rate_trials": chosen["trials"]} if chosen else {}),
        "epochs": round(result.steps / max(1, result.steps_per_epoch), 2),
        "stopped": result.stopped or "end of schedule",
        "best_step": result.best_step,
    }
    return result


def _fine_tune_teacher(cfg: RunConfig, prep: Prepared, run: RunFolder) -> tuple[DistillDataset, Collator, dict]:
    """Fine-tune the teacher in place and save it to ``<run>/teacher``; returns its dev set, collator, info."""
    teacher_cfg = _teacher_cfg(cfg)
    tok = prep.teacher_tokenizer
    train_set = _dataset(tok, prep.train, prep.labels, cfg.data.max_length, alignment=cfg.data.label_alignment)
    dev_set = _dataset(tok, prep.dev, prep.labels, cfg.data.max_length)
    collator = Collator(pad_id(tok))
    result = fit(
        "teacher",
        prep.teacher,
        train_set,
        dev_set,
        collator,
        teacher_cfg.training,
        hard_label_objective,
        cfg.eval.metric,
        cfg.seed,
        run,
    )
    run.save("teacher", prep.teacher, tok, {"fine_tuned_from": teacher_cfg.model, "best_step": result.best_step})
    return dev_set, collator, {"train_seconds": result.seconds, "steps": result.steps, "training": result.training}


def _teacher_tags(
    teacher: nn.Module, view: DistillDataset, collator: Collator, data: TextData, labels: LabelSet, batch_size: int
) -> TextData:
    """``data`` with the teacher's tags in place of the gold ones (each word reads its first piece; words cut by
    truncation get ``O``): the targets of sequence-level KD for token classification."""
    logits = predict_logits(teacher, view, collator, batch_size, desc="teacher tags")
    tags = []
    for (_, pred), words in zip(word_predictions(logits, view.labels), data.labels):
        tags.append([labels.names[t] for t in pred] + ["O"] * (len(words) - len(pred)))
    return dataclasses.replace(data, labels=tags)


def _sentences(path: str, limit: int | None, train: TextData) -> TextData:
    """Unlabeled sentences for a token task (one per line, words split on whitespace), less those that repeat a
    training sentence; their tags are placeholders until the teacher tags them."""
    texts, _, lines = read_corpus_lines(path, False, limit)
    known = set(train.texts)
    kept = [(t.split(), n) for t, n in zip(texts, lines) if " ".join(t.split()) not in known]
    if not kept:
        raise TextDistillError(f"{path}: every sentence repeats a training sentence; nothing to tag")
    words = [w for w, _ in kept]
    return TextData(
        [" ".join(w) for w in words], [["O"] * len(w) for w in words], None, path, [n for _, n in kept], words
    )


def _concat(a: TextData, b: TextData) -> TextData:
    assert a.words is not None and b.words is not None
    return TextData(
        a.texts + b.texts, a.labels + b.labels, None, f"{a.source} + {b.source}", a.rows + b.rows, a.words + b.words
    )


def _intermediate_losses(
    cfg: RunConfig, teacher: nn.Module, student: nn.Module, recipe: dict
) -> IntermediateLosses | None:
    if not cfg.distill.uses_intermediate:
        return None
    matches = resolve_matches(cfg.distill.intermediate, cfg.distill.layer_map, teacher, student, recipe.get("layers"))
    recipe["intermediate"] = [m.model_dump(mode="json") for m in matches]
    return IntermediateLosses(matches, cfg.distill.minilm, student, teacher)


def _check_student(cfg: RunConfig, prep: Prepared) -> None:
    """Build the student once and, with intermediate losses, run one real batch through both models, so that a bad
    recipe, layer map or a vocabulary that cannot be pruned fails now, before the teacher is fine-tuned."""
    assert cfg.student is not None
    if cfg.student.prune_vocabulary:
        check_prunable(prep.teacher_tokenizer)
    student, stok, recipe = build_student(
        cfg.student, prep.teacher, prep.teacher_tokenizer, prep.labels, cfg.seed, _texts(prep.train)
    )
    check_student_length(student, stok, recipe, cfg.data.max_length)
    if cfg.distill.teacher_cache:  # a cache folder that cannot be one fails now, not after the teacher is trained
        TeacherCache(cfg.distill.cache_dir).check()
    intermediate = _intermediate_losses(cfg, prep.teacher, student, recipe)
    if intermediate is None:
        return
    ttok = prep.teacher_tokenizer
    sample = _dataset(stok, prep.train.head(8), prep.labels, cfg.data.max_length, ttok)
    batch = Collator(pad_id(stok), pad_id(ttok))([sample[i] for i in range(len(sample))])
    try:
        DistillationObjective(cfg.distill, prep.teacher, intermediate).setup(student, batch)
    finally:
        intermediate.close()


def _used_ids(tokenizer: Any, splits: list[TextData | None]) -> set[int]:
    """The token ids of every split's text (words for token classification), as the student's datasets read them."""
    used: set[int] = set()
    for split in splits:
        if split is not None:
            texts = split.texts if split.words is None else []
            used |= used_token_ids(tokenizer, texts, split.pairs, split.words)
    return used


def _make_student(
    cfg: RunConfig, teacher: nn.Module, ttok: Any, labels: LabelSet, vocab_texts: list[str], keep_ids: set[int] | None
) -> tuple[nn.Module, Any, dict[str, Any]]:
    """:func:`build_student`, then, with ``keep_ids``, its vocabulary pruned to them (``recipe["vocabulary"]``)."""
    assert cfg.student is not None
    student, stok, recipe = build_student(cfg.student, teacher, ttok, labels, cfg.seed, vocab_texts)
    if keep_ids is not None:
        student, stok, recipe["vocabulary"] = prune_vocabulary(student, stok, keep_ids)
    return student, stok, recipe


# --------------------------------------------------------------------------------------------------------------------
# Commands


@releases_locks
def train_teacher(
    cfg: RunConfig | dict | str | os.PathLike,
    overrides: list[str] | None = None,
    resume: bool = False,
    smoke: bool = False,
) -> dict[str, Any]:
    """``textdistill train``: fine-tune the teacher on the task; the run folder gets ``teacher/`` and metrics.
    ``resume``: continue an interrupted run (same config) from its last checkpoint; ``smoke``: a few batches only."""
    cfg = as_config(cfg, overrides, smoke)
    teacher_cfg = _teacher_cfg(cfg)
    teacher_cfg.finetune = True
    run = RunFolder(cfg, resume, kind="train")
    prep = _prepare(cfg)
    run.open()
    dev_set, collator, info = _fine_tune_teacher(cfg, prep, run)
    metrics = evaluate_model(prep.teacher, dev_set, collator, teacher_cfg.training.per_device_eval_batch_size)
    result = {"teacher": {"model": teacher_cfg.model, "metrics": metrics, **info}, "machine": machine_info()}
    if not run.main:
        return {"output_dir": str(run.final), "main_process": False}
    run.write_json("metrics.json", result)
    path = run.commit()
    result["output_dir"] = str(path)
    return result


@releases_locks
def distill(
    cfg: AnyRunConfig | dict | str | os.PathLike,
    overrides: list[str] | None = None,
    resume: bool = False,
    smoke: bool = False,
) -> dict[str, Any]:
    """``textdistill distill``: [fine-tune the teacher], distill the student, train its twin, write the report.

    ``resume``: continue an interrupted run (same config): finished stages are not trained again, the interrupted one
    continues from its last checkpoint. A config with ``tasks:`` distills one multi-task student from every task's
    teachers (:func:`textdistill.task_distill.distill_tasks`), resumable the same way; one with ``generative:`` a
    causal-LM teacher into a causal student (:func:`textdistill.generative.distill_generative`). ``smoke``: every
    step on a few batches, into ``<output_dir>-smoke`` (:func:`textdistill.config.smoke_config`)."""
    cfg = as_any_config(cfg, overrides, smoke)
    if isinstance(cfg, GenerativeRunConfig):
        from textdistill.generative import distill_generative

        return distill_generative(cfg, resume)
    if isinstance(cfg, MultiTaskRunConfig):
        from textdistill.task_distill import distill_tasks

        return distill_tasks(cfg, resume)
    if cfg.student is None:
        raise TextDistillError("student: required for distill (e.g. student: {num_layers: 2})")
    teacher_cfg = _teacher_cfg(cfg)
    run = RunFolder(cfg, resume)
    prep = _prepare(cfg)
    _check_student(cfg, prep)
    if cfg.transfer is not None:
        from textdistill.transfer import check_transfer

        check_transfer(cfg, prep.teacher, prep.teacher_tokenizer, prep.train, prep.labels)
    run.open()
    started = time.perf_counter()
    teacher_info: dict[str, Any] = {"model": teacher_cfg.model}
    pretrained = _pretrained_state(cfg, prep)  # the teacher before fine-tuning, for the second twin
    if teacher_cfg.finetune:
        _, _, info = _fine_tune_teacher(cfg, prep, run)
        teacher_info.update(info)
    guard = _guard_teacher(cfg, prep, run, teacher_info)
    teacher = prep.teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)

    ttok = prep.teacher_tokenizer
    eval_bs = cfg.student.training.per_device_eval_batch_size
    max_len = cfg.data.max_length
    teacher_collator = Collator(pad_id(ttok))

    def teacher_view(split: TextData) -> DistillDataset:  # a split as the teacher reads it
        return _dataset(ttok, split, prep.labels, max_len)

    # Sequence-level KD for token tasks: the student learns the teacher's tags, in its own tokenization.
    token_task = prep.labels.task_type == "token_classification"
    pseudo = token_task and cfg.distill.token_targets == "pseudo_labels"
    paired_tok = None if pseudo else ttok  # the teacher's tokenization travels with the examples for logit KD
    # Data distillation: the student learns from the teacher-labelled transfer set instead of the labelled data alone.
    train_data, transfer_probs, transfer_info = prep.train, None, None
    if pseudo:
        train_data = _teacher_tags(
            teacher, teacher_view(prep.train), teacher_collator, prep.train, prep.labels, eval_bs
        )
    if cfg.transfer is not None and token_task:  # the teacher tags unlabeled sentences, word by word
        pool = _sentences(cfg.transfer.unlabeled_file, cfg.transfer.max_unlabeled, prep.train)  # type: ignore[arg-type]
        tagged = _teacher_tags(teacher, teacher_view(pool), teacher_collator, pool, prep.labels, eval_bs)
        train_data = _concat(train_data, tagged) if cfg.transfer.include_train else tagged
        transfer_info = {
            "path": pool.source,
            "kept": len(train_data),
            "dropped": {},
            "kept_by_source": {"train": len(train_data) - len(tagged), "pool": len(tagged)},
        }
    elif cfg.transfer is not None:
        from textdistill.transfer import transfer_set

        train_data, transfer_probs, transfer_info = transfer_set(cfg, teacher, ttok, prep.labels, prep.train, eval_bs)
    vocab_texts = _texts(train_data)
    # Vocabulary pruning: the pieces of every text the student reads here (its segmentation of them is unchanged):
    # the labelled training set (the twin's), the transfer set or teacher-tagged pool, dev and test.
    splits = [prep.train, prep.dev, prep.test] + ([train_data] if train_data.texts is not prep.train.texts else [])
    keep_ids = _used_ids(ttok, splits) if cfg.student.prune_vocabulary else None
    student, stok, recipe = _make_student(cfg, teacher, ttok, prep.labels, vocab_texts, keep_ids)
    train_set = _dataset(stok, train_data, prep.labels, max_len, paired_tok, cfg.data.label_alignment)
    dev_set = _dataset(stok, prep.dev, prep.labels, max_len, paired_tok)
    collator = Collator(pad_id(stok), pad_id(ttok))

    # Teacher on dev (its own tokenization) and, once, on the training set when soft targets are precomputed.
    teacher_dev_set = teacher_view(prep.dev)
    teacher_metrics = evaluate_model(teacher, teacher_dev_set, teacher_collator, eval_bs)
    online = cfg.distill.online and not pseudo
    # A transfer set's soft targets are its stored probabilities: as log-probabilities, softmax(log p / T) is the
    # teacher's softmax(t / T) at any T. With the teacher online (intermediate features) its own logits are the same
    # targets unrounded (the set keeps 7 significant digits), except where several teachers' probabilities were fused
    if transfer_probs is not None and (not online or cfg.transfer.extra_teachers):  # type: ignore[union-attr]
        train_set = train_set.with_teacher_logits(transfer_probs.clamp_min(1e-12).log())
    elif not online and not pseudo:
        train_set = train_set.with_teacher_logits(
            soft_targets(cfg.distill, teacher_cfg.model, teacher, train_set, collator, eval_bs, teacher_info)
        )

    intermediate = _intermediate_losses(cfg, teacher, student, recipe)
    online_teacher = teacher if online else None
    two_stage = bool(cfg.distill.intermediate_epochs)
    try:
        if two_stage:  # TinyBERT stage 1: intermediate layers only; stage 2 below: the prediction layer
            stage1 = cfg.student.training.model_copy(
                update={"num_train_epochs": cfg.distill.intermediate_epochs, "max_steps": None}
            )
            objective = DistillationObjective(cfg.distill, online_teacher, intermediate, use_logits=False)
            fit(
                "student-stage1",
                student,
                train_set,
                dev_set,
                collator,
                stage1,
                objective,
                cfg.eval.metric,
                cfg.seed,
                run,
                teacher=online_teacher,
                keep_best=False,
            )
        objective = (
            hard_label_objective
            if pseudo
            else DistillationObjective(cfg.distill, online_teacher, None if two_stage else intermediate)
        )
        result = fit(
            "student",
            student,
            train_set,
            dev_set,
            collator,
            cfg.student.training,
            objective,
            cfg.eval.metric,
            cfg.seed,
            run,
            teacher=online_teacher,
        )
    finally:
        if intermediate is not None:  # hooks off, fused attention back (speed is measured below)
            intermediate.close()
    student_logits = predict_logits(student, dev_set, collator, eval_bs)
    student_metrics = dataset_metrics(student_logits, dev_set)
    run.save("student", student, stok, {"distilled_from": teacher_cfg.model, **recipe})

    baseline_metrics = None
    labelled = None  # the twins' training set: the labelled data alone, tokenized once for both
    if cfg.distill.baseline or pretrained is not None:
        labelled = (
            train_set
            if cfg.transfer is None and not pseudo
            else _dataset(stok, prep.train, prep.labels, max_len, paired_tok, cfg.data.label_alignment)
        )
    if cfg.distill.baseline:
        # the twin: the same student on the labelled data alone, gold labels only
        twin, _, _ = _make_student(cfg, teacher, ttok, prep.labels, vocab_texts, keep_ids)
        base = fit(
            "baseline",
            twin,
            labelled,
            dev_set,
            collator,
            cfg.student.training,
            hard_label_objective,
            cfg.eval.metric,
            cfg.seed,
            run,
        )
        baseline_metrics = evaluate_model(twin, dev_set, collator, eval_bs)
        run.save("baseline", twin, stok, {"trained_without_distillation": True, **recipe})
    pre_twin = None
    if pretrained is not None:  # the second twin: the same layers of the pretrained checkpoint, labels only
        source = copy.deepcopy(teacher)
        source.load_state_dict(pretrained)
        pre_twin, _, _ = _make_student(cfg, source, ttok, prep.labels, vocab_texts, keep_ids)
        del source
        pre = fit(
            "baseline-pretrained",
            pre_twin,
            labelled,
            dev_set,
            collator,
            cfg.student.training,
            hard_label_objective,
            cfg.eval.metric,
            cfg.seed,
            run,
        )
        pre_metrics = evaluate_model(pre_twin, dev_set, collator, eval_bs)
        run.save(
            "baseline-pretrained",
            pre_twin,
            stok,
            {"trained_without_distillation": True, "from_pretrained": teacher_cfg.model, **recipe},
        )

    if not run.main:  # the other processes of a multi-process run are done: the main process reports
        return {"output_dir": str(run.final), "main_process": False}
    # Sizes and speed, measured side by side in this process.
    teacher_dir = run.path / "teacher"
    if not teacher_dir.exists():
        run.save("teacher", teacher, ttok, {"copied_from": teacher_cfg.model})
    n = cfg.eval.latency_samples  # teacher and student timed in turns: a machine whose load changes slows both
    speed = measure_speeds(
        {
            "teacher": (teacher, teacher_dev_set.student[:n], pad_id(ttok)),
            "student": (student, dev_set.student[:n], pad_id(stok)),
        },
        cfg.eval.latency_repeats,
    )
    report: dict[str, Any] = {
        "metric": cfg.eval.metric,
        "data": {
            "train": prep.train.source,
            "validation": prep.dev.source,
            "train_examples": len(prep.train),
            "validation_examples": len(prep.dev),
            "labels": list(prep.labels.names),
            "task_type": prep.labels.task_type,
            **({"transfer": transfer_info} if transfer_info else {}),
        },
        "distill": cfg.distill.model_dump(),
        **({"guard": guard} if guard else {}),
        "teacher": {
            **teacher_info,
            **profile(teacher, teacher_dir, teacher_dev_set, pad_id(ttok), cfg.eval, teacher_metrics, speed["teacher"]),
        },
        "student": {
            **recipe,
            "best_step": result.best_step,
            "train_seconds": result.seconds,
            "training": result.training,
            "train_samples_per_second": result.samples_per_second,
            **profile(
                student, run.path / "student", dev_set, pad_id(stok), cfg.eval, student_metrics, speed["student"]
            ),
        },
    }
    init = f"layers {recipe['layers']} of " if "layers" in recipe else ""
    if pre_twin is not None:
        report["baseline_pretrained"] = {
            "init": f"{init}the pretrained {teacher_cfg.model}, before fine-tuning",
            "best_step": pre.best_step,
            "train_seconds": pre.seconds,
            "training": pre.training,
            "metrics": pre_metrics,
        }
    if baseline_metrics is not None:
        report["baseline"] = {
            "init": f"{init}the {'fine-tuned ' if teacher_cfg.finetune else ''}teacher, as the student",
            "best_step": base.best_step,
            "train_seconds": base.seconds,
            "training": base.training,
            "train_samples_per_second": base.samples_per_second,
            "metrics": baseline_metrics,
        }
    if prep.test is not None:  # the held-out split: each model scored once, after every choice was made on dev
        test_set = _dataset(stok, prep.test, prep.labels, max_len, paired_tok)
        report["data"].update(test=prep.test.source, test_examples=len(prep.test))
        report["teacher"]["test_metrics"] = evaluate_model(teacher, teacher_view(prep.test), teacher_collator, eval_bs)
        report["student"]["test_metrics"] = evaluate_model(student, test_set, collator, eval_bs)
        if baseline_metrics is not None:
            report["baseline"]["test_metrics"] = evaluate_model(twin, test_set, collator, eval_bs)
        if pre_twin is not None:
            report["baseline_pretrained"]["test_metrics"] = evaluate_model(pre_twin, test_set, collator, eval_bs)
    if cfg.eval.export_onnx:
        report["student"]["deploy"] = export_student(
            student, dev_set, pad_id(stok), run.path / "student-onnx", cfg.eval.metric, cfg.eval.latency_repeats
        )
    confusion = confusion_matrix(student_logits, dev_set.labels, prep.labels.names)  # None: regression, multi-label
    if confusion is not None:
        report["student"]["confusion"] = confusion
        report["teacher"]["confusion"] = confusion_matrix(
            predict_logits(teacher, teacher_dev_set, teacher_collator, eval_bs),
            teacher_dev_set.labels,
            prep.labels.names,
        )
        if baseline_metrics is not None:
            report["baseline"]["confusion"] = confusion_matrix(
                predict_logits(twin, dev_set, collator, eval_bs), dev_set.labels, prep.labels.names
            )
    _add_ratios(report, cfg.eval.metric)
    return run.finish(report, render_report, started, {"student/README.md": model_card})


def _pretrained_state(cfg: RunConfig, prep: Prepared) -> dict[str, torch.Tensor] | None:
    """The teacher's weights before fine-tuning, when the second twin is to be trained (``distill.pretrained_twin``):
    it needs the teacher fine-tuned here, a student cut from its layers, and the first twin."""
    assert cfg.student is not None and cfg.teacher is not None
    cut = cfg.student.layers is not None or cfg.student.num_layers is not None
    if cfg.distill.pretrained_twin is False or not (cfg.distill.baseline and cfg.teacher.finetune and cut):
        return None  # (pretrained_twin: true without what it needs is a config error)
    return {k: v.detach().clone() for k, v in prep.teacher.state_dict().items()}


def majority_baseline(prep: Prepared, dev_set: DistillDataset, metric: str) -> tuple[str, float]:
    """(the most frequent training label, the dev score of answering it for every example): what a model that has
    learned nothing scores (on RTE's dev set, 52.7 accuracy)."""
    ids = prep.labels.encode(prep.train)
    top = Counter(ids).most_common(1)[0][0]
    logits = torch.full((len(dev_set.labels), len(prep.labels)), -1.0)
    logits[:, top] = 1.0
    return prep.labels.names[top], metrics_for(logits, dev_set.labels)[metric]


GUARD_MARGIN = 0.01  # a teacher must beat what the labels alone give by a point (metrics are fractions) to teach


def _guard_teacher(
    cfg: RunConfig, prep: Prepared, run: RunFolder, teacher_info: dict[str, Any]
) -> dict[str, Any] | None:
    """Before distilling: is the teacher clearly better than what the labels alone give the student? The estimate is
    the student trained on the labels for a short budget (a third of an epoch, 30 to 150 steps: a lower bound on its
    twin). A teacher that is not is reported at once with the likely cause and the setting to change; one fine-tuned
    here is trained further once (early stopping again). Returns what the report shows (None: ``distill.guard`` off
    or a task it does not cover)."""
    from textdistill.tuning import candidate_rates, short_run, trial_steps

    assert cfg.student is not None and cfg.teacher is not None
    if not cfg.distill.guard or prep.labels.task_type != "classification":
        return None
    metric = cfg.eval.metric
    ttok = prep.teacher_tokenizer
    teacher_dev = _dataset(ttok, prep.dev, prep.labels, cfg.data.max_length)
    tcol = Collator(pad_id(ttok))
    teacher_score = evaluate_model(prep.teacher, teacher_dev, tcol, cfg.student.training.per_device_eval_batch_size)[
        metric
    ]
    probe, stok, _ = _make_student(cfg, prep.teacher, ttok, prep.labels, _texts(prep.train), None)
    train_set = _dataset(stok, prep.train, prep.labels, cfg.data.max_length)
    dev_set = _dataset(stok, prep.dev, prep.labels, cfg.data.max_length)
    args = cfg.student.training
    rate = args.learning_rate or candidate_rates(probe)[len(candidate_rates(probe)) // 2]
    steps = trial_steps(len(train_set), args)
    short = short_run(args, rate, steps)
    collator = Collator(pad_id(stok))
    log = run.path / "logs" / "guard-labels-only.jsonl"
    log.unlink(missing_ok=True)  # a throwaway run (no checkpoints): run again in full when a run resumes
    train_loop(
        probe,
        train_set,
        collator,
        short,
        hard_label_objective,
        lambda m: evaluate_model(m, dev_set, collator, args.per_device_eval_batch_size),
        metric,
        cfg.seed,
        log,
        desc="guard-labels-only",
        keep_best=False,
    )
    estimate = evaluate_model(probe, dev_set, collator, args.per_device_eval_batch_size)[metric]
    del probe
    majority, constant = majority_baseline(prep, dev_set, metric)
    floor = max(estimate, constant)  # a teacher must beat both to teach: 30 steps of labels, and a constant answer
    out: dict[str, Any] = {
        "teacher": teacher_score,
        "labels_only_estimate": estimate,
        "majority_label": majority,
        "majority_baseline": constant,
        "estimate_steps": steps,
        "margin": GUARD_MARGIN,
        "weak": teacher_score < floor + GUARD_MARGIN,
    }
    if not out["weak"]:
        return out
    trained = teacher_info.get("training", {})
    how = (
        (
            f"it trained {trained.get('epochs')} epoch(s) at learning rate {trained.get('learning_rate'):g}, "
            f"stopped by "
            f"{trained.get('stopped')}"
        )
        if trained
        else "it was given already fine-tuned (teacher.finetune: false)"
    )
    than = (
        f"always answering {majority!r}, the most frequent training label ({100 * constant:.2f})"
        if constant > estimate
        else f"the student trained on the labels alone for {steps} steps ({100 * estimate:.2f})"
    )
    warn = (
        f"the teacher ({100 * teacher_score:.2f} {metric} on dev) is not clearly better than {than}: distilling from "
        f"it would teach the student its mistakes; {how}"
    )
    if not cfg.teacher.finetune:
        print(f"warning: {warn}. Fine-tune it here (teacher.finetune: true) or give a better one.", file=sys.stderr)
        out["action"] = (
            "warned: the teacher was given fine-tuned; fine-tune it here (teacher.finetune: true) or give a better one"
        )
        return out
    print(f"warning: {warn}. Training it further (teacher.training: num_train_epochs, learning_rate).", file=sys.stderr)
    more = cfg.teacher.training.model_copy(
        update={
            "learning_rate": trained.get("learning_rate") or cfg.teacher.training.learning_rate,
            "num_train_epochs": max(3.0, cfg.teacher.training.num_train_epochs),
        }
    )
    tok = ttok
    t_train = _dataset(tok, prep.train, prep.labels, cfg.data.max_length, alignment=cfg.data.label_alignment)
    result = fit(
        "teacher-further", prep.teacher, t_train, teacher_dev, tcol, more, hard_label_objective, metric, cfg.seed, run
    )
    run.save(
        "teacher",
        prep.teacher,
        tok,
        {"fine_tuned_from": cfg.teacher.model, "best_step": result.best_step, "trained_further": True},
    )
    after = evaluate_model(prep.teacher, teacher_dev, tcol, cfg.student.training.per_device_eval_batch_size)[metric]
    out.update(teacher_after=after, further=result.training, weak=after < floor + GUARD_MARGIN)
    teacher_info["trained_further"] = result.training
    out["action"] = f"trained further: {100 * teacher_score:.2f} -> {100 * after:.2f}"
    if out["weak"]:
        print(
            f"warning: the teacher is still not clearly better ({100 * after:.2f} vs {100 * floor:.2f}); "
            f"distilling anyway: "
            "the report says what it cost. Give a stronger teacher (a larger model, more data, teacher.training "
            "settings).",
            file=sys.stderr,
        )
    return out


def _add_ratios(report: dict[str, Any], metric: str) -> None:
    t = report["teacher"]
    for side in ("student", "baseline", "baseline_pretrained"):
        for key, pct in (("metrics", "retained_pct"), ("test_metrics", "test_retained_pct")):
            if side in report and key in t:
                teacher_score = t[key][metric]
                report[side][pct] = 100.0 * report[side][key][metric] / teacher_score if teacher_score else None
    report.update(speedups(t, report["student"]))  # the ratios, and whether the timings' spread lets them mean much


def _saved_model_and_dev(
    model: str, cfg: RunConfig, split: str = "validation"
) -> tuple[nn.Module, Any, TextData, DistillDataset]:
    net, tokenizer, labels = load_saved_classifier(model, "model")
    _, dev = load_splits(cfg.data)
    if split == "test":
        test = load_test(cfg.data)
        if test is None:
            raise TextDistillError(
                "--split test: the config has no test split (set data.test_file, or hf_dataset.test_split)"
            )
        dev = test
    return net, tokenizer, dev, _dataset(tokenizer, dev, labels, cfg.data.max_length)


def export(
    model: str, cfg: RunConfig | dict | str | os.PathLike, output: str, overrides: list[str] | None = None
) -> dict[str, Any]:
    """``textdistill export``: a saved classifier to ONNX fp32 and int8 in ``output``, each form checked against
    PyTorch on the config's validation split (largest logit difference, metric, size, latency)."""
    cfg = as_config(cfg, overrides)
    if cfg.data.task_type != "classification":
        raise TextDistillError(
            f"export: ONNX export covers sentence classifiers; not a {cfg.data.task_type} task (data.task_type)"
        )
    guard_output(cfg, output, "export output", inputs=[("model", model)])
    net, tokenizer, dev, dev_set = _saved_model_and_dev(model, cfg)
    forms = export_student(net, dev_set, pad_id(tokenizer), output, cfg.eval.metric, cfg.eval.latency_repeats)
    tokenizer.save_pretrained(output)
    return {
        "model": model,
        "validation": dev.source,
        "examples": len(dev),
        "output_dir": output,
        "metric": cfg.eval.metric,
        "forms": forms,
        "machine": machine_info(),
    }


def evaluate(
    model: str,
    cfg: RunConfig | dict | str | os.PathLike,
    overrides: list[str] | None = None,
    speed: bool = True,
    split: str = "validation",
) -> dict[str, Any]:
    """``textdistill evaluate``: a saved classifier on the config's validation (or ``split="test"``) split: metrics,
    and speed."""
    cfg = as_config(cfg, overrides)
    net, tokenizer, dev, dev_set = _saved_model_and_dev(model, cfg, split)
    collator = Collator(pad_id(tokenizer))
    metrics = evaluate_model(net, dev_set, collator, 128)
    out: dict[str, Any] = {
        "model": model,
        "split": split,
        "validation": dev.source,
        "examples": len(dev),
        "metrics": metrics,
    }
    if speed:
        out.update(
            measure_speed(net, dev_set.student[: cfg.eval.latency_samples], pad_id(tokenizer), cfg.eval.latency_repeats)
        )
        out["params"] = count_parameters(net)
    return out


def _transfer_cfg(cfg: RunConfig, output: str | None, key: str) -> RunConfig:
    if cfg.transfer is None:
        raise TextDistillError(f"transfer: required for {key} (e.g. transfer: {{variants: 10, unlabeled_file: ...}})")
    return (
        cfg
        if output is None
        else cfg.model_copy(update={"transfer": cfg.transfer.model_copy(update={"output": output})})
    )


def augment(
    cfg: RunConfig | dict | str | os.PathLike, output: str, overrides: list[str] | None = None
) -> dict[str, Any]:
    """``textdistill augment``: the augmented variants of the training set (``transfer:`` settings) as a TSV file
    ``text[, pair], source, origin`` (origin: the row of the example it came from), written atomically."""
    from textdistill.transfer import augmenter

    cfg = _transfer_cfg(as_config(cfg, overrides), None, "augment")
    assert cfg.transfer is not None
    if not cfg.transfer.variants:
        raise TextDistillError("transfer.variants: set how many augmented variants to make per example (e.g. 10)")
    guard_output(cfg, output, "augment output", is_folder=False)
    prep = _prepare(cfg)
    aug = augmenter(cfg.transfer, prep.teacher, prep.teacher_tokenizer, _texts(prep.train), cfg.seed)
    variants = aug(prep.train.texts, prep.train.pairs)
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("text\t" + ("pair\t" if prep.train.pairs else "") + "source\torigin\n")
        for v in variants:
            f.write(
                "\t".join([v.text] + ([v.pair or ""] if prep.train.pairs else []) + [f"augment:{v.ops}", str(v.origin)])
                + "\n"
            )
    tmp.replace(path)
    return {"output": str(path), "examples": len(prep.train), "variants": len(variants)}


def label(
    cfg: RunConfig | dict | str | os.PathLike, output: str | None = None, overrides: list[str] | None = None
) -> dict[str, Any]:
    """``textdistill label``: the fine-tuned teacher labels the transfer set (training examples, augmented variants,
    unlabeled corpus) into a distilled dataset folder (resumable); returns its manifest and the labelling speed."""
    from textdistill.transfer import check_transfer_output, transfer_set

    cfg = _transfer_cfg(as_config(cfg, overrides), output, "label")
    check_transfer_output(cfg)
    if cfg.data.task_type != "classification":
        raise TextDistillError(
            f"label: distilled datasets hold sentence labels; a {cfg.data.task_type} run tags its "
            f"transfer "
            "sentences inside `textdistill distill`"
        )
    if _teacher_cfg(cfg).finetune:
        raise TextDistillError(
            "teacher.finetune: label needs a fine-tuned teacher (textdistill train first, then "
            "teacher.model: RUN/teacher)"
        )
    prep = _prepare(cfg)  # nothing is trained here: transfer_set meets any bad corpus or teacher before labelling
    _, _, info = transfer_set(cfg, prep.teacher.eval(), prep.teacher_tokenizer, prep.labels, prep.train, 128)
    if not process_state().is_main_process:
        return {"main_process": False}
    info["texts_per_second"] = info["candidates"] / info["seconds"] if info["seconds"] else None
    return info
