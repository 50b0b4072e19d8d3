"""glibc's malloc told to keep freed memory while the loop runs on the CPU (textdistill.cpu_malloc)."""

from __future__ import annotations

import platform
import sys
from pathlib import Path

import pytest

from textdistill import cpu_malloc
from textdistill import train as train_module
from textdistill.config import DistillConfig, TrainingConfig
from textdistill.cpu_malloc import KEEP_BYTES, M_MMAP_THRESHOLD, M_TRIM_THRESHOLD, reuse_freed_memory


class FakeLibc:
    def __init__(self, accept: bool = True) -> None:
        self.calls: list[tuple] = []
        self.accept = accept

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append(("mallopt", param, value))
        return 1 if self.accept else 0

    def malloc_trim(self, pad: int) -> int:
        self.calls.append(("malloc_trim", pad))
        return 1


def test_thresholds_set_on_entry_and_kept_memory_returned_on_exit(monkeypatch) -> None:
    libc = FakeLibc()
    monkeypatch.setattr(cpu_malloc, "_glibc", lambda: libc)
    with pytest.raises(RuntimeError, match="stop"), reuse_freed_memory() as done:
        assert done
        assert libc.calls == [("mallopt", M_MMAP_THRESHOLD, KEEP_BYTES), ("mallopt", M_TRIM_THRESHOLD, KEEP_BYTES)]
        raise RuntimeError("stop")
    assert libc.calls[-1] == ("malloc_trim", 0)  # even when the loop fails
    assert KEEP_BYTES == 1 << 30 and (M_MMAP_THRESHOLD, M_TRIM_THRESHOLD) == (-3, -1)  # glibc's malloc.h values


def test_nothing_happens_when_disabled_refused_or_off_glibc(monkeypatch) -> None:
    libc = FakeLibc()
    monkeypatch.setattr(cpu_malloc, "_glibc", lambda: libc)
    with reuse_freed_memory(enabled=False) as done:
        assert not done
    assert libc.calls == []
    refusing = FakeLibc(accept=False)
    monkeypatch.setattr(cpu_malloc, "_glibc", lambda: refusing)
    with reuse_freed_memory() as done:
        assert not done
    assert [c[0] for c in refusing.calls] == ["mallopt"]  # refused: no second setting, nothing to trim
    monkeypatch.undo()
    monkeypatch.setattr(platform, "libc_ver", lambda: ("", ""))
    assert cpu_malloc._glibc() is None
    with reuse_freed_memory() as done:
        assert not done


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_real_glibc_takes_the_thresholds() -> None:
    with reuse_freed_memory() as done:
        assert done


def test_the_loop_asks_for_it_on_the_cpu_unless_switched_off(tmp_path: Path, monkeypatch) -> None:
    from transformers import BertConfig, BertForSequenceClassification

    from textdistill.data import DistillDataset

    def bert(layers: int) -> BertForSequenceClassification:
        return BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=layers, num_attention_heads=2,
                                                        intermediate_size=32, max_position_embeddings=16))  # fmt: skip

    seen: list[bool] = []
    real = train_module.reuse_freed_memory

    def spy(enabled: bool = True):
        seen.append(enabled)
        return real(enabled)

    monkeypatch.setattr(train_module, "reuse_freed_memory", spy)
    args = TrainingConfig(learning_rate=1e-3, per_device_train_batch_size=8, num_train_epochs=1, logging_steps=1, warmup_ratio=0.0)
    teacher = bert(2).eval()
    examples = DistillDataset([{"input_ids": [1, 5 + i % 40, 7, 2]} for i in range(16)], [i % 2 for i in range(16)])
    for flag in (True, False):
        objective = train_module.DistillationObjective(DistillConfig(), teacher)
        train_module.train_loop(bert(1), examples, train_module.Collator(0), args.model_copy(update={"reuse_cpu_memory": flag}),
                                objective, lambda m: {"accuracy": 0.0}, "accuracy", 0, tmp_path / f"{flag}.jsonl",
                                teacher=teacher, keep_best=False)  # fmt: skip
    assert seen == [True, False]
