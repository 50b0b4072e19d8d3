"""The transfer set of a data-distillation run (``transfer:`` in the config): the labelled examples, their augmented
variants and an unlabeled corpus, labelled by the teacher into a distilled dataset (:mod:`textdistill.distilled`)."""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

from textdistill.augment import Augmenter, EmbeddingNeighbours, PosReplacer, normalise, spacy_tagger
from textdistill.config import DataConfig, RunConfig, TransferConfig
from textdistill.data import LabelSet, TextData, read_corpus, read_texts
from textdistill.distilled import Candidate, Filters, LabelTeacher, check_dataset_folder, label_dataset, read_distilled
from textdistill.errors import TextDistillError
from textdistill.models import load_classifier
from textdistill.outdir import check_output, protected_paths


def augmenter(t: TransferConfig, teacher: nn.Module, tokenizer: Any, texts: list[str], seed: int) -> Augmenter:
    """The configured augmenter; embedding neighbours from the teacher, POS pools from ``texts`` (spaCy)."""
    neighbours = EmbeddingNeighbours.from_model(teacher, tokenizer, t.neighbours_k) if t.neighbour > 0 else None
    pos = PosReplacer(texts, spacy_tagger(t.pos_model)) if t.pos > 0 else None
    return Augmenter(
        variants=t.variants,
        mask=t.mask,
        pos=t.pos,
        neighbour=t.neighbour,
        delete=t.delete,
        ngram=t.ngram,
        ngram_max=t.ngram_max,
        seed=seed,
        mask_token=getattr(tokenizer, "mask_token", None) or "[MASK]",
        neighbours=neighbours,
        pos_replacer=pos,
    )


def unlabeled_texts(
    t: TransferConfig, data: DataConfig, paired: bool, limit: int | None
) -> tuple[list[str], list[str] | None]:
    """The texts of ``transfer.unlabeled_file``: one per line (``unlabeled_format: lines``), or the text column(s) of
    a .tsv/.csv/.jsonl data file read like the data files, its labels ignored (``data``)."""
    assert t.unlabeled_file is not None
    if t.unlabeled_format == "lines":
        return read_corpus(t.unlabeled_file, paired, limit)
    texts, pairs, _ = read_texts(t.unlabeled_file, data, limit=limit)
    if (pairs is not None) != paired:
        raise TextDistillError(
            f"{t.unlabeled_file}: "
            f"{'a second text column was found' if pairs is not None else 'no second text column'}"
            f" but the task {'has' if paired else 'has no'} sentence pairs; set "
            f"data.text_pair_column"
        )
    return texts, pairs


def candidates(
    t: TransferConfig, train: TextData, teacher: nn.Module, tokenizer: Any, seed: int, data: DataConfig
) -> list[Candidate]:
    """The texts to label, in a fixed order: training examples (with their gold labels), augmented variants, the
    unlabeled corpus (texts that repeat a training text are left out, then ``max_unlabeled`` of the rest kept: the
    training file itself, read as text, gives the texts beyond the labelled slice)."""
    out: list[Candidate] = []
    if t.include_train:
        out += [
            Candidate(x, train.pairs[i] if train.pairs else None, "train", train.labels[i])
            for i, x in enumerate(train.texts)
        ]
    if t.variants:
        aug = augmenter(t, teacher, tokenizer, train.texts + (train.pairs or []), seed)
        out += [Candidate(v.text, v.pair, f"augment:{v.ops}") for v in aug(train.texts, train.pairs)]
    if t.unlabeled_file:
        texts, pairs = unlabeled_texts(t, data, train.pairs is not None, None)
        known = {normalise(x) for x in train.texts}
        pool = [
            Candidate(x, pairs[i] if pairs else None, "pool") for i, x in enumerate(texts) if normalise(x) not in known
        ]
        out += pool[: t.max_unlabeled]
    return out


def extra_teachers(t: TransferConfig, labels: LabelSet) -> list[LabelTeacher]:
    """The ensemble's other teachers, each checked against the task's labels (and reordered to them)."""
    out = []
    for j, name in enumerate(t.extra_teachers):
        model, tok, own = load_classifier(name, labels, f"transfer.extra_teachers.{j}", require_trained_head=True)
        out.append(LabelTeacher(name, model.eval(), tok, labels.columns_in(own)))
    return out


def transfer_folder(cfg: RunConfig) -> str:
    """Where the distilled dataset of ``cfg``'s transfer set is written."""
    assert cfg.transfer is not None
    return cfg.transfer.output or f"{cfg.output_dir}.distilled"


def check_transfer_output(cfg: RunConfig) -> None:
    """The distilled dataset's folder may replace only a distilled dataset, and no input, config or cache."""
    folder = transfer_folder(cfg)
    check_output(folder, protected_paths(cfg.model_dump(mode="json"), cfg._config_file), "transfer.output")
    check_dataset_folder(folder)


def check_transfer(cfg: RunConfig, teacher: nn.Module, tokenizer: Any, train: TextData, labels: LabelSet) -> None:
    """Fail now, before any training, on an unreadable corpus or augmentation settings that cannot work."""
    t = cfg.transfer
    assert t is not None
    check_transfer_output(cfg)
    if t.unlabeled_file:
        unlabeled_texts(t, cfg.data, train.pairs is not None, t.max_unlabeled)
    if t.variants:
        augmenter(t, teacher, tokenizer, train.texts[:200], cfg.seed)
    extra_teachers(t, labels)  # loads each one: a missing model or other labels fail here


def transfer_set(
    cfg: RunConfig, teacher: nn.Module, tokenizer: Any, labels: LabelSet, train: TextData, batch_size: int
) -> tuple[TextData, torch.Tensor, dict[str, Any]]:
    """Label the transfer set with the teacher (or reuse a finished labelling of the same job); returns its texts with
    hard labels, the teacher's probabilities ``[N, C]`` and what the report shows."""
    assert cfg.transfer is not None and cfg.teacher is not None
    t = cfg.transfer
    folder = transfer_folder(cfg)
    started = time.perf_counter()
    cands = candidates(t, train, teacher, tokenizer, cfg.seed, cfg.data)
    teachers = [LabelTeacher(cfg.teacher.model, teacher, tokenizer)] + extra_teachers(t, labels)
    manifest = label_dataset(
        teachers,
        cands,
        labels.names,
        folder,
        fusion=t.fusion,
        temperature=1.0,
        filters=Filters(t.min_confidence, t.min_agreement, t.max_entropy),
        topk=t.topk,
        batch_size=batch_size,
        max_length=cfg.data.max_length,
        shard_size=t.shard_size,
    )
    data = read_distilled(folder)
    seconds = time.perf_counter() - started
    info = {"path": folder, "seconds": seconds, "candidates": len(cands), **manifest["counts"]}
    return data.as_text_data(folder), data.soft, info
