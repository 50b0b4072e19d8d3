"""Task metrics, predictions, and CPU latency / throughput of a model."""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from typing import Any, Callable, Sequence

import torch
from torch import nn

from textdistill.data import Collator, DistillDataset, pad_features
from textdistill.first_token import first_token_only
from textdistill.losses import IGNORE_INDEX
from textdistill.progress import progress


def _model_inputs(features: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in features.items()}


@torch.inference_mode()
def predict_logits(
    model: nn.Module,
    dataset: DistillDataset,
    collator: Collator,
    batch_size: int,
    side: str = "student",
    desc: str | None = None,
) -> torch.Tensor:
    """Logits ``[N, C]`` in dataset order (a token classifier's: ``[N, L, C]``, zero-padded to the longest example).
    ``side="teacher"`` feeds the teacher's features when they differ. With ``desc``, progress (and an ETA) is
    reported."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    # Sort by length so batches carry little padding; put results back in dataset order.
    key = "teacher" if side == "teacher" and dataset.teacher is not None else "student"
    feats = dataset.teacher if key == "teacher" else dataset.student
    assert feats is not None
    order = sorted(range(len(dataset)), key=lambda i: len(feats[i]["input_ids"]))
    pad_id = (
        collator.teacher_pad_id if key == "teacher" and collator.teacher_pad_id is not None else collator.student_pad_id
    )
    out: list[torch.Tensor] = []
    starts = range(0, len(order), batch_size)
    # only logits are read: a sequence classifier's last layer runs for its first token alone (textdistill.first_token)
    with progress(len(starts), desc) if desc else contextlib.nullcontext() as bar, first_token_only(model):
        for start in starts:
            chunk = [feats[i] for i in order[start : start + batch_size]]
            out.append(model(**_model_inputs(pad_features(chunk, pad_id), device)).logits.float().cpu())
            if bar is not None:
                bar.update(1)
    model.train(was_training)
    if out and out[0].dim() == 3:  # per token: pad every batch to the longest example
        longest = max(len(f["input_ids"]) for f in feats)
        out = [torch.nn.functional.pad(o, (0, 0, 0, longest - o.shape[1])) for o in out]
    sorted_logits = torch.cat(out)
    logits = torch.empty_like(sorted_logits)
    logits[torch.tensor(order)] = sorted_logits
    return logits


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Accuracy, macro-F1, and F1 of class 1 for binary tasks (as GLUE's MRPC/QQP report it)."""
    preds = logits.argmax(dim=-1)
    labels = labels.to(preds.device)
    num_classes = logits.shape[-1]
    out = {"accuracy": (preds == labels).float().mean().item()}
    f1s = []
    for c in range(num_classes):
        tp = ((preds == c) & (labels == c)).sum().item()
        fp = ((preds == c) & (labels != c)).sum().item()
        fn = ((preds != c) & (labels == c)).sum().item()
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    out["macro_f1"] = sum(f1s) / num_classes
    if num_classes == 2:
        out["f1"] = f1s[1]
    return out


def regression_metrics(predictions: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """Pearson and Spearman correlation (GLUE STS-B reports both, and their mean as ``corr``) and the MSE.

    ``predictions`` is ``[N]`` or ``[N, 1]`` (a regression head's logits). A constant column has no correlation: 0.
    """
    from scipy.stats import pearsonr, spearmanr

    p = predictions.detach().float().reshape(-1).cpu().numpy()
    t = targets.detach().float().reshape(-1).cpu().numpy()
    if len(p) != len(t):
        raise ValueError(f"{len(p)} predictions for {len(t)} targets")
    constant = len(p) < 2 or p.min() == p.max() or t.min() == t.max()
    pearson = 0.0 if constant else float(pearsonr(p, t).statistic)
    spearman = 0.0 if constant else float(spearmanr(p, t).statistic)
    return {
        "pearson": pearson,
        "spearman": spearman,
        "corr": (pearson + spearman) / 2,
        "mse": float(((p - t) ** 2).mean()),
    }


def matthews_corrcoef(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Matthews correlation of the argmax predictions (GLUE CoLA's metric; multi-class as scikit-learn defines it,
    0 where it is undefined). Computed here: importing scikit-learn would set environment variables
    (``KMP_DUPLICATE_LIB_OK``, ``KMP_INIT_AT_FORK``) in the user's process."""
    gold = labels.detach().cpu().long().reshape(-1)
    pred = logits.detach().argmax(dim=-1).cpu().long().reshape(-1)
    if gold.numel() == 0:
        return 0.0
    low = int(min(gold.min(), pred.min()))
    k = int(max(gold.max(), pred.max())) - low + 1
    confusion = torch.bincount((gold - low) * k + (pred - low), minlength=k * k).view(k, k).double()
    true, predicted, n = confusion.sum(1), confusion.sum(0), confusion.sum()
    cov_tp = float(confusion.trace() * n - true @ predicted)
    cov_pp, cov_tt = float(n * n - predicted @ predicted), float(n * n - true @ true)
    return cov_tp / math.sqrt(cov_tt * cov_pp) if cov_pp * cov_tt else 0.0


def task_metrics(outputs: torch.Tensor, labels: torch.Tensor, task_type: str = "classification") -> dict[str, float]:
    """Every metric of a task: classification (accuracy, F1s, Matthews correlation) or regression (correlations)."""
    if task_type == "regression":
        return regression_metrics(outputs, labels)
    return {**classification_metrics(outputs, labels), "mcc": matthews_corrcoef(outputs, labels)}


def multi_label_metrics(logits: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """Multi-label scores at threshold 0.5 (logit > 0): micro F1 (over every (example, label) decision), macro F1 (mean
    of per-label F1; a label never predicted nor present scores 0), subset accuracy (every label of an example
    right)."""
    pred = logits > 0
    gold = targets > 0.5
    tp = (pred & gold).sum(0).float()
    fp = (pred & ~gold).sum(0).float()
    fn = (~pred & gold).sum(0).float()
    per_label = torch.where(tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn).clamp_min(1), torch.zeros_like(tp))
    micro_den = float(2 * tp.sum() + fp.sum() + fn.sum())
    return {
        "micro_f1": float(2 * tp.sum()) / micro_den if micro_den else 0.0,
        "macro_f1": float(per_label.mean()),
        "subset_accuracy": float((pred == gold).all(dim=-1).float().mean()),
    }


def word_predictions(logits: torch.Tensor, labels: Sequence[Sequence[int]]) -> list[tuple[list[int], list[int]]]:
    """Per sentence: the gold tag ids and the argmax predictions at its labelled positions (each word's first piece;
    ``IGNORE_INDEX`` elsewhere), from token logits ``[N, L, C]``."""
    out = []
    for i, lab in enumerate(labels):
        ids = torch.as_tensor(list(lab), dtype=torch.long)
        keep = ids != IGNORE_INDEX
        out.append((ids[keep].tolist(), logits[i, : len(ids)].argmax(-1)[keep].tolist()))
    return out


def token_metrics(
    logits: torch.Tensor, labels: list[list[int]], names: Sequence[str], dropped: list[list[int]] | None = None
) -> dict[str, float]:
    """Entity-level precision / recall / F1 (seqeval's default mode; overall and ``f1_<TYPE>``) and token accuracy,
    over each word's labelled position (its first piece). Words cut off by truncation (``dropped``) count as gold
    entities the model missed (predicted ``O``)."""
    from textdistill.ner import entity_scores

    gold_tags, pred_tags = [], []
    correct = total = 0
    for i, (gold, pred) in enumerate(word_predictions(logits, labels)):
        correct += sum(g == p for g, p in zip(gold, pred))
        total += len(gold)
        tail = dropped[i] if dropped else []
        gold_tags.append([names[t] for t in gold + tail])
        pred_tags.append([names[t] for t in pred] + ["O"] * len(tail))
    scores = entity_scores(gold_tags, pred_tags)
    overall = scores.pop("overall")
    out = {
        "entity_f1": overall["f1"],
        "entity_precision": overall["precision"],
        "entity_recall": overall["recall"],
        "token_accuracy": correct / total if total else 0.0,
    }
    out.update({f"f1_{kind}": s["f1"] for kind, s in scores.items()})
    return out


def evaluate_model(model: nn.Module, dataset: DistillDataset, collator: Collator, batch_size: int) -> dict[str, float]:
    logits = predict_logits(model, dataset, collator, batch_size)
    return dataset_metrics(logits, dataset)


def dataset_metrics(outputs: torch.Tensor, dataset: DistillDataset) -> dict[str, float]:
    """:func:`metrics_for` a dataset's gold labels (and, for token classification, its tag names)."""
    if dataset.dropped is not None:  # token classification
        assert dataset.label_names is not None
        return token_metrics(outputs, dataset.labels, dataset.label_names, dataset.dropped)
    return metrics_for(outputs, dataset.labels)


def metrics_for(outputs: torch.Tensor, labels: Any) -> dict[str, float]:
    """:func:`task_metrics` for sentence-level gold labels as stored in a dataset: class ids, scores (floats) for
    regression, or multi-hot rows for multi-label."""
    gold = torch.tensor(labels)
    if gold.is_floating_point() and gold.dim() == 2:
        return multi_label_metrics(outputs, gold)
    return task_metrics(outputs, gold, "regression" if gold.is_floating_point() else "classification")


@torch.inference_mode()
def measure_speed(
    model: nn.Module | Callable[[dict[str, torch.Tensor]], Any],
    features: list[dict[str, list[int]]],
    pad_token_id: int,
    repeats: int = 20,
    batch_size: int = 32,
    first_token: bool = False,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, float]:
    """CPU latency at batch 1 (median ms) and throughput at ``batch_size`` (samples/s from the median batch time).

    ``model`` is a PyTorch model (run in eval mode on the CPU, as transformers runs it; with ``first_token``, a
    sequence classifier's last layer for ``[CLS]`` alone where it can be cut, as :func:`predict_logits` and the ONNX
    export compute it) or any forward function over padded inputs (an ONNX Runtime session). Inputs are real examples
    in their natural order (not length-sorted), tokenization excluded; ``torch.get_num_threads()`` threads; two
    warm-up calls precede each measurement. One model alone, at one time: to compare models, time them in turns
    (:func:`measure_speeds`).
    """
    module = model if isinstance(model, nn.Module) else None
    if module is not None:
        was_training, device = module.training, next(module.parameters()).device
        module.eval().to("cpu")
        forward: Callable[[dict[str, torch.Tensor]], Any] = lambda inputs: module(**inputs)  # noqa: E731
    else:
        forward = model  # type: ignore[assignment]

    def timed(chunk: list[dict[str, list[int]]]) -> float:
        inputs = pad_features(chunk, pad_token_id)
        start = clock()
        forward(inputs)
        return clock() - start

    n = len(features)
    with first_token_only(module, enabled=first_token):  # (module is None for a forward function: nothing cut)
        for i in range(2):
            timed(features[i % n : i % n + 1])
            timed([features[(i * batch_size + j) % n] for j in range(batch_size)])
        single = [timed([features[i % n]]) for i in range(repeats)]
        batched = [timed([features[(r * batch_size + j) % n] for j in range(batch_size)]) for r in range(repeats)]
    if module is not None:
        module.to(device).train(was_training)
    return {
        "latency_ms_batch1": 1000 * statistics.median(single),
        f"throughput_batch{batch_size}": batch_size / statistics.median(batched),
        "threads": torch.get_num_threads(),
    }


# --------------------------------------------------------------------------------------------------------------------
# Several models' speeds, side by side

SPEED_ROUNDS = 3  # each model's speed is timed this many times, the models taking turns
# Timings of one model that vary between rounds by more than this (max - min, % of the median) make a ratio of two
# models' speeds a figure the machine's load made up: the report says so instead of printing it.
SPREAD_LIMIT_PCT = 25.0


def in_turns(
    timers: dict[str, Callable[[], dict[str, float]]], rounds: int = SPEED_ROUNDS
) -> dict[str, list[dict[str, float]]]:
    """Each of ``timers`` called once per round, the rounds in a rotated order (the first round in the given
    order, the next from the second timer on, and so on: none always runs right after the same one, say an ONNX
    Runtime session whose threads keep spinning a moment after a call). Returns each timer's results, one per
    round. A machine whose load changes meanwhile slows every model in turn, not one of them."""
    order = list(timers)
    results: dict[str, list[dict[str, float]]] = {name: [] for name in order}
    for r in range(rounds):
        shift = r % len(order) if order else 0
        for name in order[shift:] + order[:shift]:
            results[name].append(timers[name]())
    return results


def spread_pct(values: Sequence[float]) -> float:
    """How much ``values`` vary: (max - min) as a % of their median (0 for one value)."""
    middle = statistics.median(values)
    return 100.0 * (max(values) - min(values)) / middle if middle else 0.0


def summarize_rounds(runs: list[dict[str, float]]) -> dict[str, float]:
    """One model's speed over its rounds: the median of each figure, and the spread of the latency and throughput
    between rounds (``<key>_spread_pct``), with ``speed_rounds``."""
    out: dict[str, Any] = {k: statistics.median(run[k] for run in runs) for k in runs[0]}
    for key in runs[0]:
        if key.startswith(("latency_", "throughput_")):
            out[f"{key}_spread_pct"] = spread_pct([run[key] for run in runs])
            out[f"{key}_rounds"] = [run[key] for run in runs]  # for ratios paired round by round (speedups)
    out["speed_rounds"] = len(runs)
    return out


def measure_speeds(
    models: dict[str, tuple[nn.Module | Callable[[dict[str, torch.Tensor]], Any], list[dict[str, list[int]]], int]],
    repeats: int = 20,
    rounds: int = SPEED_ROUNDS,
    batch_size: int = 32,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, dict[str, float]]:
    """:func:`measure_speed` of several models (name -> (model, features, pad id)) side by side: ``rounds`` rounds
    in which they take turns (:func:`in_turns`), each a full measurement of ``repeats`` calls per batch size. Each
    model's figures are the medians of its rounds, with their spread (:func:`summarize_rounds`); compare two with
    :func:`speedups`."""
    timers = {
        name: (
            lambda m=model, f=feats, p=pad: measure_speed(m, f, p, repeats=repeats, batch_size=batch_size, clock=clock)
        )
        for name, (model, feats, pad) in models.items()
    }
    return {name: summarize_rounds(runs) for name, runs in in_turns(timers, rounds).items()}


def speedups(teacher: dict[str, Any], student: dict[str, Any], batch_size: int = 32) -> dict[str, Any]:
    """The student's speed-up over the teacher at batch 1 (latency) and ``batch_size`` (throughput), with
    ``speed_spread_pct`` and ``speed_reliable``: timed in rounds (:func:`measure_speeds`), each speed-up is the median
    of the per-round ratios and the spread is that of those ratios (the wider of the two); False when it is over
    :data:`SPREAD_LIMIT_PCT` (the machine's load moved the timings more than the ratio can be trusted; the report then
    gives no ratio)."""
    throughput = f"throughput_batch{batch_size}"
    latency = "latency_ms_batch1"
    b1 = teacher[latency] / student[latency]
    bn = student[throughput] / teacher[throughput]
    if f"{latency}_rounds" in teacher and f"{latency}_rounds" in student:
        # timed in turns: the ratio of each round (both models timed moments apart) cancels what slowed the whole
        # machine; the speed-up is the median of those ratios and its spread says whether it can be trusted
        r1 = [t / s for t, s in zip(teacher[f"{latency}_rounds"], student[f"{latency}_rounds"])]
        rn = [s / t for t, s in zip(teacher[f"{throughput}_rounds"], student[f"{throughput}_rounds"])]
        b1, bn = statistics.median(r1), statistics.median(rn)
        spreads = [spread_pct(r1), spread_pct(rn)]
    else:  # a report made before paired rounds: each model's own spread
        spreads = [
            e[k]
            for e in (teacher, student)
            for k in (f"{latency}_spread_pct", f"{throughput}_spread_pct")
            if e.get(k) is not None
        ]
    widest = max(spreads) if spreads else None
    return {
        "speedup_batch1": b1,
        f"speedup_batch{batch_size}": bn,
        "speed_spread_pct": widest,
        "speed_spread_limit_pct": SPREAD_LIMIT_PCT,
        "speed_reliable": widest is None or widest <= SPREAD_LIMIT_PCT,
    }
