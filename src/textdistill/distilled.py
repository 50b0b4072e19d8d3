"""Distilled datasets: one teacher or an ensemble labels candidate texts (an unlabeled corpus, augmented variants),
and the (text, soft label) pairs are written to disk as a checked artefact.

A distilled dataset is a folder::

    data.jsonl      one JSON object per kept text: text, pair (or null), soft (the fused distribution over the labels,
                    in the manifest's label order; with top-k: soft_topk [[label index, probability], ...]),
                    label (the fused argmax's name), source (e.g. "pool", "augment:mask+ngram"), confidence, agreement
    manifest.json   written last: teachers (name and weight fingerprint), fusion, weights, temperature, filters, label
                    names, counts (candidates, kept, dropped by each filter), the sha256 and row count of data.jsonl

Labelling works in shards of ``shard_size`` candidates (taken in order of length) under ``<folder>.partial/`` (each
shard written to a temporary name and renamed); killed half-way, the same call skips the shards that are complete
and ends with the same dataset as an uninterrupted run. Shards are spread over the processes of
``accelerate launch`` / ``torchrun``.
:func:`read_distilled` refuses a folder whose manifest is missing or does not match its data.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from textdistill.cache import fingerprint_model, sha256_file
from textdistill.data import Collator, DistillDataset, TextData, tokenize
from textdistill.ensemble import fuse_soft_targets, teacher_weights
from textdistill.errors import TextDistillError
from textdistill.metrics import predict_logits
from textdistill.models import fit_max_length
from textdistill.progress import progress

FORMAT = "textdistill-distilled/1"


@dataclass(frozen=True)
class Candidate:
    """A text to label; ``gold``: its own label name when it has one (a labelled training example keeps it as its
    hard label, the soft label still comes from the teachers)."""

    text: str
    pair: str | None = None
    source: str = "pool"
    gold: str | None = None


@dataclass(frozen=True)
class LabelTeacher:
    """A teacher as labelling sees it: ``columns[c]`` is its output for label ``c`` (None: the same order)."""

    name: str
    model: Any
    tokenizer: Any
    columns: list[int] | None = None


@dataclass(frozen=True)
class Filters:
    """Which labelled texts to keep: fused confidence (largest probability) at least ``min_confidence``; at least
    ``min_agreement`` of the teachers (a fraction) predicting the fused label; fused entropy (nats) at most
    ``max_entropy``. None: no such filter."""

    min_confidence: float | None = None
    min_agreement: float | None = None
    max_entropy: float | None = None


@dataclass
class DistilledData:
    """A distilled dataset read back: texts, pairs, soft labels ``[N, C]`` (probabilities), hard labels (gold where
    the text had one, else the teachers' fused label), sources."""

    texts: list[str]
    pairs: list[str] | None
    soft: torch.Tensor
    labels: list[str]
    sources: list[str]
    label_names: list[str]
    manifest: dict[str, Any] = field(default_factory=dict)

    def as_text_data(self, source: str) -> TextData:
        return TextData(self.texts, self.labels, self.pairs, source=source)


# --------------------------------------------------------------------------------------------------------------------
# Pure parts: scores and filters


def example_scores(teacher_probs: torch.Tensor, fused: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per example: ``confidence`` (largest fused probability), ``agreement`` (fraction of the K teachers whose argmax
    is the fused argmax), ``entropy`` (of the fused distribution, nats). ``teacher_probs``: ``[K, N, C]``."""
    label = fused.argmax(-1)
    return {
        "confidence": fused.max(-1).values,
        "agreement": (teacher_probs.argmax(-1) == label.unsqueeze(0)).float().mean(0),
        "entropy": -(fused * fused.clamp_min(1e-12).log()).sum(-1),
    }


def keep_mask(scores: dict[str, torch.Tensor], filters: Filters) -> tuple[torch.Tensor, dict[str, int]]:
    """Which examples pass every filter, and how many each filter drops (an example can fail several)."""
    n = len(scores["confidence"])
    keep = torch.ones(n, dtype=torch.bool)
    dropped: dict[str, int] = {}
    checks = (
        ("min_confidence", scores["confidence"] >= (filters.min_confidence or 0)),
        ("min_agreement", scores["agreement"] >= (filters.min_agreement or 0) - 1e-9),
        ("max_entropy", scores["entropy"] <= (filters.max_entropy if filters.max_entropy is not None else math.inf)),
    )
    for name, ok in checks:
        if getattr(filters, name) is not None:
            dropped[name] = int((~ok).sum())
            keep &= ok
    return keep, dropped


# --------------------------------------------------------------------------------------------------------------------
# Labelling


def _job(teachers: Sequence[LabelTeacher], candidates: Sequence[Candidate], settings: dict[str, Any]) -> dict[str, Any]:
    """What determines the dataset; a resumed run must match it exactly."""
    h = hashlib.sha256()
    for c in candidates:
        h.update(json.dumps([c.text, c.pair, c.source, c.gold], ensure_ascii=False).encode() + b"\n")
    return {
        "format": FORMAT,
        "candidates": len(candidates),
        "candidates_sha256": h.hexdigest(),
        "teachers": [
            {"name": t.name, "fingerprint": fingerprint_model(t.model)[:16], "columns": t.columns} for t in teachers
        ],
        **settings,
    }


def stored_probability(p: float) -> float:
    """A probability as data.jsonl keeps it: 7 significant digits (float32's precision), so a small tail keeps its
    size (6 decimals made everything under 5e-7 zero, which softening at T > 1 would have lifted)."""
    return float(f"{p:.7g}")


def _label_shard(
    teachers: Sequence[LabelTeacher],
    shard: Sequence[Candidate],
    settings: dict[str, Any],
    weights: torch.Tensor,
    batch_size: int,
    max_length: int,
    index: Sequence[int],
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Label one shard; each kept row carries ``_i``, its candidate's position (the output follows candidate order)."""
    names = settings["labels"]
    data = TextData(
        [c.text for c in shard], [names[0]] * len(shard), [c.pair for c in shard] if shard[0].pair is not None else None
    )
    outputs = []
    for t in teachers:
        ds = DistillDataset(tokenize(t.tokenizer, data, fit_max_length(t.tokenizer, max_length)), [0] * len(shard))
        pad = t.tokenizer.pad_token_id if t.tokenizer.pad_token_id is not None else 0
        logits = predict_logits(t.model, ds, Collator(pad), batch_size)
        outputs.append(logits if t.columns is None else logits[:, t.columns])
    stacked = torch.stack(outputs).float()  # [K, N, C]
    temperature = settings["temperature"]
    fused = fuse_soft_targets(stacked, settings["fusion"], temperature, weights)
    scores = example_scores(torch.softmax(stacked / temperature, -1), fused)
    keep, dropped = keep_mask(scores, Filters(**settings["filters"]))
    rows = []
    topk = settings["topk"]
    for i in torch.nonzero(keep).flatten().tolist():
        row: dict[str, Any] = {"_i": index[i], "text": shard[i].text, "pair": shard[i].pair}
        p = fused[i]
        if topk:
            vals, idx = torch.topk(p, min(topk, len(p)))
            row["soft_topk"] = [[int(j), stored_probability(float(v))] for v, j in zip(vals, idx)]
        else:
            row["soft"] = [stored_probability(float(v)) for v in p]
        row.update(
            label=shard[i].gold or names[int(p.argmax())],
            gold=shard[i].gold is not None,
            source=shard[i].source,
            confidence=round(float(scores["confidence"][i]), 6),
            agreement=round(float(scores["agreement"][i]), 6),
        )
        rows.append(row)
    return rows, dropped


def label_dataset(
    teachers: Sequence[LabelTeacher],
    candidates: Sequence[Candidate],
    label_names: Sequence[str],
    folder: str | os.PathLike,
    *,
    fusion: str = "mean_probs",
    weights: Sequence[float] | None = None,
    dev_scores: Sequence[float] | None = None,
    temperature: float = 1.0,
    filters: Filters = Filters(),
    topk: int | None = None,
    batch_size: int = 128,
    max_length: int = 128,
    shard_size: int = 2048,
) -> dict[str, Any]:
    """Label ``candidates`` with the teachers (fused), keep those that pass ``filters``, write the distilled dataset
    to ``folder``; returns its manifest. Resumes a killed run of the same job; ``folder`` appears only when complete."""
    from textdistill.train import process_state

    if not candidates:
        raise TextDistillError("label: no candidate texts (empty corpus?)")
    if not teachers:
        raise TextDistillError("label: no teachers")
    paired = {c.pair is not None for c in candidates}
    if len(paired) > 1:
        raise TextDistillError("label: candidates mix single texts and sentence pairs")
    w = teacher_weights(len(teachers), fusion, weights, dev_scores)
    settings = {
        "labels": list(label_names),
        "fusion": fusion,
        "weights": [round(float(x), 6) for x in w],
        "temperature": temperature,
        "filters": filters.__dict__,
        "topk": topk,
        "max_length": max_length,
        "shard_size": shard_size,
    }
    job = _job(teachers, candidates, settings)
    final = Path(folder)
    work = final.with_name(final.name + ".partial")
    done = _finished(final, job)
    if done is not None:
        return done  # the same job was labelled before: reuse it
    check_dataset_folder(final)
    state = process_state()
    with state.main_process_first():
        if state.is_main_process:
            old = json.loads((work / "job.json").read_text()) if (work / "job.json").is_file() else None
            if old != job and work.exists():
                check_dataset_folder(final)
                shutil.rmtree(work)  # another job's shards: start over
            work.mkdir(parents=True, exist_ok=True)
            (work / "job.json").write_text(json.dumps(job, indent=1), encoding="utf-8")
    # Shards follow the candidates sorted by length, so that each batch holds texts of about one length (sorting
    # within shards alone costs ~10% more padded tokens); the dataset is written back in candidate order.
    by_length = sorted(
        range(len(candidates)), key=lambda i: (len(candidates[i].text) + len(candidates[i].pair or ""), i)
    )
    shards = [
        (s, by_length[s * shard_size : (s + 1) * shard_size]) for s in range(math.ceil(len(candidates) / shard_size))
    ]
    mine = [(s, c) for s, c in shards if s % state.num_processes == state.process_index]
    todo = [(s, c) for s, c in mine if not (work / f"shard-{s:05d}.jsonl").is_file()]
    with progress(sum(len(c) for _, c in todo), "labelling") as bar:
        for s, index in todo:
            chunk = [candidates[i] for i in index]
            rows, dropped = _label_shard(teachers, chunk, settings, w, batch_size, max_length, index)
            tmp = work / f"shard-{s:05d}.jsonl.tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(json.dumps({"shard": s, "candidates": len(chunk), "dropped": dropped}) + "\n")
                for row in rows:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
            tmp.replace(work / f"shard-{s:05d}.jsonl")
            bar.update(len(index))
    state.wait_for_everyone()
    if state.is_main_process:
        _assemble(work, final, job, len(shards))
    state.wait_for_everyone()  # every process (a multi-process distill trains on it) sees the finished dataset
    return json.loads((final / "manifest.json").read_text(encoding="utf-8"))


def check_dataset_folder(folder: str | os.PathLike, partial: bool = True) -> None:
    """Refuse, before labelling, a dataset folder (or, with ``partial``, its ``.partial``) that holds anything but a
    distilled dataset (its ``manifest.json``) or labelling shards (their ``job.json``): relabelling replaces it."""
    final = Path(folder)
    checks = [(final, "manifest.json")] + ([(final.with_name(final.name + ".partial"), "job.json")] if partial else [])
    for path, mark in checks:
        if path.is_symlink() or path.is_file():
            raise TextDistillError(
                f"{path}: is a {'link' if path.is_symlink() else 'file'}, not a distilled dataset "
                f"folder; "
                "choose another transfer.output"
            )
        if path.is_dir() and not (path / mark).is_file() and any(path.iterdir()):
            raise TextDistillError(
                f"{path}: exists and is not a distilled dataset (no {mark}); refusing to replace "
                f"it: "
                "choose another transfer.output"
            )


def _finished(final: Path, job: dict[str, Any]) -> dict[str, Any] | None:
    """The manifest of a complete dataset of exactly this job in ``final``, or None."""
    try:
        manifest = json.loads((final / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not all(manifest.get(k) == v for k, v in job.items()):
        return None
    _check_data(final / "data.jsonl", manifest)  # the same job, but altered since: an error, not a silent reuse
    return manifest


def _assemble(work: Path, final: Path, job: dict[str, Any], num_shards: int) -> None:
    """Gather the shards' rows into data.jsonl in candidate order, write the manifest last, rename the folder."""
    dropped: dict[str, int] = {}
    rows: list[dict[str, Any]] = []
    for s in range(num_shards):
        lines = (work / f"shard-{s:05d}.jsonl").read_text(encoding="utf-8").splitlines()
        for k, v in json.loads(lines[0])["dropped"].items():
            dropped[k] = dropped.get(k, 0) + v
        rows += map(json.loads, lines[1:])
    rows.sort(key=lambda r: r["_i"])
    sources: dict[str, int] = {}
    with open(work / "data.jsonl.tmp", "w", encoding="utf-8") as out:
        for row in rows:
            del row["_i"]
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
            src = row["source"].split(":")[0]
            sources[src] = sources.get(src, 0) + 1
    kept = len(rows)
    (work / "data.jsonl.tmp").replace(work / "data.jsonl")
    manifest = {
        **job,
        "counts": {"candidates": job["candidates"], "kept": kept, "dropped": dropped, "kept_by_source": sources},
        "rows": kept,
        "data_sha256": sha256_file(work / "data.jsonl"),
    }
    for s in range(num_shards):
        (work / f"shard-{s:05d}.jsonl").unlink()
    (work / "job.json").unlink()
    (work / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False), encoding="utf-8")
    if os.path.lexists(final):
        check_dataset_folder(final, partial=False)  # (the .partial is ours: it holds the shards just assembled)
        shutil.rmtree(final)
    work.replace(final)


# --------------------------------------------------------------------------------------------------------------------
# Reading


def _check_data(data_path: Path, manifest: dict[str, Any]) -> None:
    if not data_path.is_file() or sha256_file(data_path) != manifest["data_sha256"]:
        raise TextDistillError(
            f"{data_path}: does not match its manifest (sha256 differs or file missing): corrupt or altered"
        )


def read_distilled(folder: str | os.PathLike) -> DistilledData:
    """A distilled dataset, checked against its manifest (row count, sha256); a half-written or altered one is an
    error, never read silently."""
    folder = Path(folder)
    manifest_path, data_path = folder / "manifest.json", folder / "data.jsonl"
    if not manifest_path.is_file():
        partial = folder.with_name(folder.name + ".partial")
        hint = (
            (f" (labelling did not finish: {partial} holds its shards; run it again to resume)")
            if partial.exists()
            else ""
        )
        raise TextDistillError(f"{folder}: not a distilled dataset: no manifest.json{hint}")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    if manifest.get("format") != FORMAT:
        raise TextDistillError(f"{manifest_path}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    _check_data(data_path, manifest)
    names = manifest["labels"]
    texts, pairs, soft, labels, sources = [], [], [], [], []
    for i, line in enumerate(data_path.read_text(encoding="utf-8").splitlines(), 1):
        row = json.loads(line)
        texts.append(row["text"])
        pairs.append(row["pair"])
        if "soft_topk" in row:
            p = torch.zeros(len(names))
            for j, v in row["soft_topk"]:
                p[j] = v
            rest = max(0.0, 1.0 - float(p.sum()))
            p[p == 0] = rest / max(1, int((p == 0).sum()))  # the mass left spread over the other labels
        else:
            p = torch.tensor(row["soft"])
        soft.append(p)
        labels.append(row["label"])
        sources.append(row["source"])
    if len(texts) != manifest["rows"]:
        raise TextDistillError(f"{data_path}: {len(texts)} rows, the manifest says {manifest['rows']}")
    has_pairs = any(p is not None for p in pairs)
    return DistilledData(
        texts,
        pairs if has_pairs else None,
        torch.stack(soft) if soft else torch.zeros(0, len(names)),
        labels,
        sources,
        names,
        manifest,
    )
