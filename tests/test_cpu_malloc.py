"""glibc's malloc told to keep freed memory while the loop runs on the CPU, and put back after it
(textdistill.cpu_malloc)."""

from __future__ import annotations

import platform
from pathlib import Path

import pytest
from test_guest import GLIBC  # (test_guest imports no textdistill: the probes live there, one copy)

from textdistill import cpu_malloc
from textdistill import train as train_module
from textdistill.config import DistillConfig, TrainingConfig
from textdistill.cpu_malloc import (
    DYNAMIC_CEILING,
    FIXED_DEFAULT,
    KEEP_BYTES,
    M_MMAP_THRESHOLD,
    M_TRIM_THRESHOLD,
    reuse_freed_memory,
    thresholds_after,
)
from textdistill.objective import DistillationObjective


class FakeLibc:
    def __init__(self, accept: bool = True, accept_trim: bool = True) -> None:
        self.calls: list[tuple] = []
        self.accept, self.accept_trim = accept, accept_trim

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append(("mallopt", param, value))
        return 1 if self.accept and (self.accept_trim or param != M_TRIM_THRESHOLD or value != KEEP_BYTES) else 0

    def malloc_trim(self, pad: int) -> int:
        self.calls.append(("malloc_trim", pad))
        return 1


@pytest.fixture
def no_malloc_environment(monkeypatch):
    for name in ("GLIBC_TUNABLES", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"):
        monkeypatch.delenv(name, raising=False)


def test_thresholds_set_on_entry_then_memory_returned_and_thresholds_put_back_on_exit(
    monkeypatch, no_malloc_environment
) -> None:
    libc = FakeLibc()
    monkeypatch.setattr(cpu_malloc, "_glibc", lambda: libc)
    with pytest.raises(RuntimeError, match="stop"), reuse_freed_memory() as done:
        assert done
        assert libc.calls == [("mallopt", M_MMAP_THRESHOLD, KEEP_BYTES), ("mallopt", M_TRIM_THRESHOLD, KEEP_BYTES)]
        raise RuntimeError("stop")
    # even when the loop fails: what malloc kept goes back to the system, then the thresholds are put back
    assert libc.calls[2:] == [
        ("malloc_trim", 0),
        ("mallopt", M_MMAP_THRESHOLD, DYNAMIC_CEILING),
        ("mallopt", M_TRIM_THRESHOLD, 2 * DYNAMIC_CEILING),
    ]
    assert KEEP_BYTES == 1 << 30 and (M_MMAP_THRESHOLD, M_TRIM_THRESHOLD) == (-3, -1)  # glibc's malloc.h values
    assert DYNAMIC_CEILING == 32 << 20 and FIXED_DEFAULT == 128 << 10  # on 64-bit Linux, as glibc's malloc.c has them


def test_put_back_means_the_environments_values_else_where_dynamic_thresholds_end() -> None:
    assert thresholds_after({}) == {M_MMAP_THRESHOLD: 32 << 20, M_TRIM_THRESHOLD: 64 << 20}
    # a threshold fixed at start-up gets its value back; the other one was fixed at glibc's default by it
    assert thresholds_after({"MALLOC_MMAP_THRESHOLD_": "65536"}) == {
        M_MMAP_THRESHOLD: 65536,
        M_TRIM_THRESHOLD: 128 << 10,
    }
    tunables = {
        "GLIBC_TUNABLES": "glibc.malloc.arena_max=2:glibc.malloc.trim_threshold=0x100000",
        "MALLOC_TRIM_THRESHOLD_": "7",
    }
    assert thresholds_after(tunables) == {M_MMAP_THRESHOLD: 128 << 10, M_TRIM_THRESHOLD: 1 << 20}  # the tunable wins
    assert thresholds_after({"MALLOC_MMAP_THRESHOLD_": "lots", "GLIBC_TUNABLES": "nonsense"}) == thresholds_after({})


def test_nothing_happens_when_disabled_refused_or_off_glibc(monkeypatch, no_malloc_environment) -> None:
    libc = FakeLibc()
    monkeypatch.setattr(cpu_malloc, "_glibc", lambda: libc)
    with reuse_freed_memory(enabled=False) as done:
        assert not done
    assert libc.calls == []
    refusing = FakeLibc(accept=False)
    monkeypatch.setattr(cpu_malloc, "_glibc", lambda: refusing)
    with reuse_freed_memory() as done:
        assert not done
    assert [c[0] for c in refusing.calls] == ["mallopt"]  # refused: no second setting, nothing to trim or put back
    half = FakeLibc(accept_trim=False)  # the mmap threshold taken, the trim threshold refused: both put back
    monkeypatch.setattr(cpu_malloc, "_glibc", lambda: half)
    with reuse_freed_memory() as done:
        assert not done
    assert half.calls[2:] == [
        ("malloc_trim", 0),
        ("mallopt", M_MMAP_THRESHOLD, DYNAMIC_CEILING),
        ("mallopt", M_TRIM_THRESHOLD, 2 * DYNAMIC_CEILING),
    ]
    monkeypatch.undo()
    monkeypatch.setattr(platform, "libc_ver", lambda: ("", ""))
    assert cpu_malloc._glibc() is None
    with reuse_freed_memory() as done:
        assert not done


_REAL_GLIBC = """
import sys
sys.path.insert(0, sys.argv[1])
from test_guest import observable, served_by_mmap
from textdistill.cpu_malloc import reuse_freed_memory
if not observable():
    with reuse_freed_memory() as done:
        assert done
    print("unobservable")
    sys.exit(0)
seen = [served_by_mmap()]
with reuse_freed_memory() as done:
    seen += [done, served_by_mmap()]
seen.append(served_by_mmap())
print(seen)
"""


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_real_glibc_takes_the_thresholds_inside_the_block_only() -> None:
    """In a fresh process: malloc's thresholds are process-wide, and whatever ran before in the test process (another
    library's own mallopt, a test's) would decide what this one sees."""
    import subprocess
    import sys

    here = str(Path(__file__).resolve().parent)
    out = subprocess.run(
        [sys.executable, "-c", _REAL_GLIBC, here], capture_output=True, text=True, timeout=120, check=True
    ).stdout.strip()
    if out == "unobservable":
        pytest.skip("glibc without mallinfo2: the thresholds cannot be observed")
    # fresh pages above any dynamic threshold; from the heap inside the block; fresh pages again after it
    assert out == "[True, True, False, True]"


def test_the_loop_asks_for_it_on_the_cpu_unless_switched_off(tmp_path: Path, monkeypatch) -> None:
    from transformers import BertConfig, BertForSequenceClassification

    from textdistill.data import DistillDataset

    def bert(layers: int) -> BertForSequenceClassification:
        return BertForSequenceClassification(
            BertConfig(
                vocab_size=50,
                hidden_size=16,
                num_hidden_layers=layers,
                num_attention_heads=2,
                intermediate_size=32,
                max_position_embeddings=16,
            )
        )

    seen: list[bool] = []
    real = train_module.reuse_freed_memory

    def spy(enabled: bool = True):
        seen.append(enabled)
        return real(enabled)

    monkeypatch.setattr(train_module, "reuse_freed_memory", spy)
    args = TrainingConfig(
        learning_rate=1e-3, per_device_train_batch_size=8, num_train_epochs=1, logging_steps=1, warmup_ratio=0.0
    )
    teacher = bert(2).eval()
    examples = DistillDataset([{"input_ids": [1, 5 + i % 40, 7, 2]} for i in range(16)], [i % 2 for i in range(16)])
    for flag in (True, False):
        objective = DistillationObjective(DistillConfig(), teacher)
        train_module.train_loop(
            bert(1),
            examples,
            train_module.Collator(0),
            args.model_copy(update={"reuse_cpu_memory": flag}),
            objective,
            lambda m: {"accuracy": 0.0},
            "accuracy",
            0,
            tmp_path / f"{flag}.jsonl",
            teacher=teacher,
            keep_best=False,
        )
    assert seen == [True, False]  # (what the block does to real glibc: the test above, in a fresh process)
