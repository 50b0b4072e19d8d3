"""GPU distillation throughput with randomly initialised models of real shapes (issue: speed and scale).

A BERT-base-shaped teacher (12 x 768, 12 heads, vocabulary 30,522) -> a 6-layer-768 and a 4-layer-312 student,
sequence length 128, batch 256, bf16 autocast, fused AdamW: samples/s through textdistill's own training loop with
the teacher online and with its outputs cached. Random weights are fine: throughput does not depend on them.
samples_per_second leaves out the loop's first 10 steps (loader start-up, compilation, autotuning: see
textdistill.train.WARMUP_STEPS); end_to_end_samples_per_second counts every step.

    python benchmarks/gpu_throughput.py            # on a GPU machine; prints one JSON line per setting
    python benchmarks/gpu_throughput.py --tiny     # a seconds-long CPU check of the script itself
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import torch
from transformers import BertConfig, BertForSequenceClassification

from textdistill.config import DistillConfig, TrainingConfig
from textdistill.data import Collator, DistillDataset
from textdistill.metrics import predict_logits
from textdistill.train import DistillationObjective, train_loop


def make_data(n: int, seq: int, vocab: int) -> DistillDataset:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, vocab, (n, seq), generator=g)
    feats = [{"input_ids": [101, *row[1:-1].tolist(), 102], "token_type_ids": [0] * seq} for row in ids]
    return DistillDataset(feats, torch.randint(0, 2, (n,), generator=g).tolist())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="tiny shapes on CPU, to check the script")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--compile", action="store_true", help="torch.compile the student (training.torch_compile)")
    ap.add_argument("--compile-mode", default="default", help="training.torch_compile_mode (e.g. reduce-overhead)")
    ap.add_argument("--students", default=None, help="comma-separated subset of the students (6x768, 4x312)")
    args = ap.parse_args()
    cuda = torch.cuda.is_available()
    if args.tiny:
        seq, batch, teacher_shape, students = 16, 8, (2, 64, 2), {"2x32": (2, 32, 2)}
    else:
        seq, batch, teacher_shape, students = 128, 256, (12, 768, 12), {"6x768": (6, 768, 12), "4x312": (4, 312, 12)}
    if args.students:
        students = {k: v for k, v in students.items() if k in args.students.split(",")}

    def bert(layers: int, hidden: int, heads: int) -> BertForSequenceClassification:
        cfg = BertConfig(num_hidden_layers=layers, hidden_size=hidden, num_attention_heads=heads,
                         intermediate_size=4 * hidden, num_labels=2, attn_implementation="sdpa")  # fmt: skip
        return BertForSequenceClassification(cfg)

    device = torch.device("cuda" if cuda else "cpu")
    teacher = bert(*teacher_shape).to(device).eval().requires_grad_(False)
    if cuda:
        teacher = teacher.to(torch.bfloat16)  # for the cache build; the loop holds an online teacher in bf16 anyway
    data = make_data(batch * args.steps, seq, 30522)
    collator = Collator(0)
    train_args = TrainingConfig(per_device_train_batch_size=batch, max_steps=args.steps, logging_steps=args.steps,
                                mixed_precision="bf16" if cuda else "no", group_by_length=False,
                                dataloader_num_workers=4 if cuda else 0, torch_compile=args.compile,
                                torch_compile_mode=args.compile_mode)  # fmt: skip
    logits = predict_logits(teacher, data, collator, 512).float()
    cached = data.with_teacher_logits(logits)
    kd = DistillConfig(temperature=2.0, alpha=0.9)
    for name, shape in students.items():
        for mode in ("online", "cached"):
            rates, ends = [], []
            for r in range(args.repeats):
                student = bert(*shape).to(device)
                with tempfile.TemporaryDirectory() as tmp:
                    res = train_loop(student, data if mode == "online" else cached, collator, train_args,
                                     DistillationObjective(kd, teacher if mode == "online" else None),
                                     lambda m: {"accuracy": 0.0}, "accuracy", r, Path(tmp) / "log.jsonl",
                                     desc=f"{name} {mode}", teacher=teacher if mode == "online" else None)  # fmt: skip
                rates.append(res.steady_samples_per_second)
                ends.append(res.samples_per_second)
            print(json.dumps({"student": name, "teacher_outputs": mode, "samples_per_second": statistics.median(rates),
                              "runs": rates, "end_to_end_samples_per_second": statistics.median(ends), "end_to_end_runs": ends,
                              "compile": args.compile_mode if args.compile else None,
                              "device": torch.cuda.get_device_name() if cuda else "cpu", "torch": torch.__version__,
                              "batch": batch, "seq": seq, "steps": args.steps}), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
