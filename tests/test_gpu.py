"""The training loop on a GPU: intermediate losses (their projections are set up on a batch on the device), bf16 with
the teacher held in half precision, and non-blocking batch copies. Skipped where no CUDA device is present (CI);
run on a GPU machine with ``pytest tests/test_gpu.py``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from textdistill.config import DistillConfig, LayerMatch, TrainingConfig
from textdistill.data import Collator, DistillDataset
from textdistill.features import IntermediateLosses
from textdistill.train import DistillationObjective, train_loop

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def bert(layers: int, hidden: int, seed: int) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=100, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                     intermediate_size=2 * hidden, max_position_embeddings=32, num_labels=2)  # fmt: skip
    return BertForSequenceClassification(cfg)


def data(n: int = 64) -> DistillDataset:
    g = torch.Generator().manual_seed(0)
    feats = [{"input_ids": [1, *torch.randint(5, 100, (int(k),), generator=g).tolist(), 2]} for k in torch.randint(2, 12, (n,), generator=g)]
    return DistillDataset(feats, torch.randint(0, 2, (n,), generator=g).tolist())


@pytest.mark.parametrize("precision", ["no", "bf16"])
def test_intermediate_distillation_runs_on_the_gpu(tmp_path: Path, precision: str) -> None:
    # the teacher is handed over on the CPU, as the pipeline loads it; before the fix the projections' setup ran it
    # there on a batch already on the GPU ("Expected all tensors to be on the same device")
    teacher, student = bert(2, 32, 0).eval(), bert(1, 16, 1)
    matches = [LayerMatch(feature="hidden", teacher_layer=2, student_layer=1, loss="mse"),
               LayerMatch(feature="attention", teacher_layer=2, student_layer=1, loss="kl")]  # fmt: skip
    objective = DistillationObjective(DistillConfig(), teacher, IntermediateLosses(matches, None, student, teacher))
    args = TrainingConfig(learning_rate=1e-3, per_device_train_batch_size=16, num_train_epochs=2, logging_steps=1,
                          mixed_precision=precision, dataloader_num_workers=1)  # fmt: skip
    result = train_loop(student, data(), Collator(0), args, objective, lambda m: {"accuracy": 0.5}, "accuracy", 0,
                        tmp_path / "log.jsonl", teacher=teacher)  # fmt: skip
    assert next(student.parameters()).device.type == "cuda"
    assert next(objective.parameters()).device.type == "cuda"  # the hidden-width projection (16 -> 32)
    logged = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines() if '"loss"' in line]
    assert len(logged) == 8 and all(math.isfinite(r["loss"]) and r["hidden_1_2_mse"] > 0 for r in logged)
    assert result.steps == 8 and result.samples == 128 and result.samples_per_second > 0
