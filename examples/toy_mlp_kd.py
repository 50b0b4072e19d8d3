"""The toy teacher/student example of our reference text, with its mistakes fixed.

The reference text trains a large MLP teacher, then a small MLP student "from the teacher's outputs". Its code
had three mistakes, fixed here (each marked FIX below):

1. It fed the teacher's *probabilities* to ``nn.NLLLoss``/``CrossEntropyLoss`` as if they were class labels (or
   took their argmax), which throws away exactly the "dark knowledge" distillation is for: how the teacher spreads
   probability over the wrong classes. FIX: compare the two distributions with KL divergence.
2. It used no temperature, so the teacher's near one-hot outputs carried almost no information. FIX: soften both
   distributions with the same temperature T, and multiply the KL by T^2 so its gradient keeps the same scale
   whatever T is (Hinton et al. 2015).
3. The teacher was left in training mode (dropout on) and tracked gradients while producing targets. FIX: the
   teacher runs in eval mode under ``torch.no_grad()``.

It also mixes in the hard labels, as Hinton et al. do: loss = alpha * T^2 * KL + (1 - alpha) * CE.

Data: real sentences from SST-2 (../shared/data/sst2), as bag-of-words vectors over the 2,000 most frequent
words, so the example stays a pure MLP toy and runs in seconds:

    python examples/toy_mlp_kd.py
"""

from __future__ import annotations

import collections
import csv
import os
import sys
from pathlib import Path

import torch
from torch import nn

from textdistill.config import data_dir
from textdistill.losses import distillation_loss


def load(split: str, limit: int) -> tuple[list[str], list[int]]:
    path = Path(data_dir()) / "sst2" / f"{split}.tsv"
    if not path.is_file():
        sys.exit(f"error: {path}: file not found (set TEXTDISTILL_DATA to the shared data folder)")
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1 : limit + 1]
    return [r[0] for r in rows], [int(r[1]) for r in rows]


def bag_of_words(texts: list[str], vocab: dict[str, int]) -> torch.Tensor:
    x = torch.zeros(len(texts), len(vocab))
    for i, t in enumerate(texts):
        for w in t.split():
            if w in vocab:
                x[i, vocab[w]] = 1.0
    return x


def mlp(width: int, depth: int, n_in: int) -> nn.Module:
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Linear(n_in, width), nn.ReLU(), nn.Dropout(0.3)]
        n_in = width
    return nn.Sequential(*layers, nn.Linear(n_in, 2))


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, teacher: nn.Module | None, epochs: int = 8) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    if teacher is not None:
        teacher.eval()  # FIX 3: no dropout in the teacher while it produces targets
        with torch.no_grad():
            teacher_logits = teacher(x)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(x)).split(64):
            logits = model(x[idx])
            if teacher is None:
                loss = nn.functional.cross_entropy(logits, y[idx])
            else:
                # FIX 1 + 2: KL between temperature-softened distributions (x T^2), mixed with the hard labels.
                loss = distillation_loss(logits, teacher_logits[idx], y[idx], kind="kl", temperature=4.0, alpha=0.7)[
                    "loss"
                ]
            opt.zero_grad()
            loss.backward()
            opt.step()


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return (model(x).argmax(-1) == y).float().mean().item()


def main() -> None:
    torch.manual_seed(0)
    train_texts, train_y = load("train", int(os.environ.get("TOY_TRAIN", "20000")))
    dev_texts, dev_y = load("dev", 872)
    counts = collections.Counter(w for t in train_texts for w in t.split())
    vocab = {w: i for i, (w, _) in enumerate(counts.most_common(2000))}
    xtr, xdev = bag_of_words(train_texts, vocab), bag_of_words(dev_texts, vocab)
    ytr, ydev = torch.tensor(train_y), torch.tensor(dev_y)

    teacher = mlp(512, 2, len(vocab))
    train(teacher, xtr, ytr, None)
    student, twin = mlp(16, 1, len(vocab)), mlp(16, 1, len(vocab))
    twin.load_state_dict(student.state_dict())  # same initialisation
    train(student, xtr, ytr, teacher)
    train(twin, xtr, ytr, None)
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    print(f"teacher  {n(teacher):>9,} params  dev accuracy {accuracy(teacher, xdev, ydev):.4f}")
    print(f"student  {n(student):>9,} params  dev accuracy {accuracy(student, xdev, ydev):.4f}  (distilled)")
    print(f"twin     {n(twin):>9,} params  dev accuracy {accuracy(twin, xdev, ydev):.4f}  (hard labels only)")


if __name__ == "__main__":
    main()
