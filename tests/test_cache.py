"""The teacher-output cache: reuse, invalidation, damage detection, top-k storage, and its use in a run."""

import json

import numpy as np
import pytest
import torch
from test_end_to_end import tiny_config
from torch import nn

import textdistill
from textdistill.cache import TeacherCache, compress_topk, expand_topk, fingerprint_inputs, fingerprint_model


def _teacher(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Linear(4, 3)


FEATS = [{"input_ids": [1, 2, 3]}, {"input_ids": [4, 5]}]


def _compute_counter():
    calls = []

    def compute():
        calls.append(1)
        return torch.tensor([[1.0, 2.0, 3.0], [0.5, -1.0, 0.0]])

    return compute, calls


def test_hit_after_miss_and_same_values(tmp_path):
    cache = TeacherCache(tmp_path)
    compute, calls = _compute_counter()
    first = cache.get_or_compute(_teacher(), FEATS, 3, compute)
    second = cache.get_or_compute(_teacher(), FEATS, 3, compute)
    assert (first.status, second.status) == ("miss", "hit")
    assert len(calls) == 1
    assert torch.equal(first.logits, second.logits)
    manifest = json.loads(
        (
            tmp_path / cache.key(fingerprint_model(_teacher()), fingerprint_inputs(FEATS), 3) / "manifest.json"
        ).read_text()
    )
    assert manifest["count"] == 2 and manifest["num_classes"] == 3 and "sha256" in manifest["files"]["logits"]


def test_changed_inputs_or_teacher_give_a_new_entry(tmp_path):
    cache = TeacherCache(tmp_path)
    compute, calls = _compute_counter()
    cache.get_or_compute(_teacher(), FEATS, 3, compute)
    assert (
        cache.get_or_compute(_teacher(), [{"input_ids": [1, 2, 3]}, {"input_ids": [4, 6]}], 3, compute).status == "miss"
    )
    assert cache.get_or_compute(_teacher(seed=1), FEATS, 3, compute).status == "miss"
    t = _teacher()
    with torch.no_grad():
        t.bias[0] += 1e-3  # one changed weight is another teacher
    assert cache.get_or_compute(t, FEATS, 3, compute).status == "miss"
    assert len(calls) == 4
    assert len([p for p in tmp_path.iterdir() if not p.name.startswith(".")]) == 4


@pytest.mark.parametrize("damage", ["truncate", "flip", "manifest"])
def test_damaged_entry_is_reported_and_rebuilt(tmp_path, damage, capsys):
    cache = TeacherCache(tmp_path)
    compute, calls = _compute_counter()
    cache.get_or_compute(_teacher(), FEATS, 3, compute)
    entry = next(p for p in tmp_path.iterdir() if not p.name.startswith("."))
    data = entry / "logits.npy"
    if damage == "truncate":
        data.write_bytes(data.read_bytes()[:-5])
    elif damage == "flip":
        raw = bytearray(data.read_bytes())
        raw[-1] ^= 0xFF
        data.write_bytes(bytes(raw))
    else:
        (entry / "manifest.json").write_text("{not json")
    again = cache.get_or_compute(_teacher(), FEATS, 3, compute)
    assert again.status == "rebuilt"
    assert len(calls) == 2
    assert "rebuilding it" in capsys.readouterr().err
    assert torch.allclose(again.logits, compute())


def test_topk_keeps_mass_and_top_probabilities():
    torch.manual_seed(0)
    logits = torch.randn(5, 50) * 3
    values, indices = compress_topk(logits, 4)
    rebuilt = expand_topk(values, indices, 50)
    p_full, p_rebuilt = logits.softmax(-1), rebuilt.softmax(-1)
    assert torch.allclose(p_rebuilt.sum(-1), torch.ones(5), atol=1e-5)
    assert torch.allclose(p_rebuilt.gather(-1, indices), p_full.gather(-1, indices), atol=1e-5)
    assert torch.equal(p_rebuilt.argmax(-1), p_full.argmax(-1))


def test_topk_and_float16_storage(tmp_path):
    cache = TeacherCache(tmp_path, dtype="float16", topk=2)
    logits = torch.randn(3, 6)
    result = cache.get_or_compute(_teacher(), FEATS + [{"input_ids": [7]}], 6, lambda: logits)
    entry = next(p for p in tmp_path.iterdir() if not p.name.startswith("."))
    assert sorted(f.name for f in entry.iterdir()) == ["indices.npy", "manifest.json", "values.npy"]
    assert np.load(entry / "values.npy").dtype == np.float16
    assert torch.equal(result.logits.argmax(-1), logits.argmax(-1))


def test_second_run_reads_the_cache_and_trains_the_same_student(tiny_bert, sst2_dir, tmp_path):
    reports = []
    for name in ("a", "b"):
        cfg = tiny_config(tiny_bert, sst2_dir, tmp_path / name)
        cfg["teacher"] = {"model": tiny_bert, "finetune": False}  # the same (saved) teacher both times
        cfg["distill"].update(baseline=False, cache_dir=str(tmp_path / "cache"))
        reports.append(textdistill.distill(cfg))
    assert reports[0]["teacher"]["soft_targets"]["cache"] == "miss"
    assert reports[1]["teacher"]["soft_targets"]["cache"] == "hit"
    assert reports[0]["student"]["metrics"] == reports[1]["student"]["metrics"]


# --------------------------------------------------------------------------------------------------------------------
# Bad cache folders and entries: a file for the folder, an entry that lists no files or is a file, orphans, full disk


def _entry(cache: TeacherCache):
    return cache.root / cache.key(fingerprint_model(_teacher()), fingerprint_inputs(FEATS), 3)


def test_a_cache_dir_that_is_a_file_is_an_error_before_any_work(tmp_path):
    from textdistill.errors import TextDistillError

    (tmp_path / "cache").write_text("not a folder\n")
    compute, calls = _compute_counter()
    with pytest.raises(
        TextDistillError,
        match=rf"^distill\.cache_dir: {tmp_path}/cache is a file; the "
        rf"teacher-output cache needs a folder$",
    ):
        TeacherCache(tmp_path / "cache").get_or_compute(_teacher(), FEATS, 3, compute)
    with pytest.raises(
        TextDistillError,
        match=rf"^generative\.teacher_cache\.dir: {tmp_path}/cache/outputs cannot "
        rf"be made: {tmp_path}/cache is a file",
    ):
        TeacherCache(tmp_path / "cache" / "outputs", key="generative.teacher_cache.dir").check()
    assert calls == []  # the teacher never ran
    TeacherCache(tmp_path / "new" / "folder").check()  # one that does not exist yet is fine


@pytest.mark.parametrize("damage", ["no_files", "file_in_its_place", "manifest_a_list", "missing_array"])
def test_a_broken_entry_is_rebuilt_cleanly_and_then_hit(tmp_path, damage, capsys):
    cache = TeacherCache(tmp_path)
    compute, calls = _compute_counter()
    cache.get_or_compute(_teacher(), FEATS, 3, compute)
    entry = _entry(cache)
    manifest = json.loads((entry / "manifest.json").read_text())
    if damage == "no_files":
        (entry / "manifest.json").write_text(json.dumps({**manifest, "files": {}}))
    elif damage == "file_in_its_place":
        import shutil

        shutil.rmtree(entry)
        entry.write_text("junk")
    elif damage == "manifest_a_list":
        (entry / "manifest.json").write_text("[1, 2]")
    else:
        (entry / "manifest.json").write_text(json.dumps({**manifest, "files": {"other": manifest["files"]["logits"]}}))
    again = cache.get_or_compute(_teacher(), FEATS, 3, compute)
    assert again.status == "rebuilt" and "rebuilding it" in capsys.readouterr().err
    assert len(calls) == 2 and entry.is_dir() and torch.allclose(again.logits, compute())
    assert cache.get_or_compute(_teacher(), FEATS, 3, compute).status == "hit"  # every later run reads it


def test_orphaned_temporary_entries_are_removed_on_the_next_write(tmp_path):
    """A writer killed mid-write leaves ``.KEY.XXXX.tmp``: removed once no process holds its lock; with no lock to
    tell, once untouched for an hour. A live writer's (its lock held) is kept."""
    import fcntl
    import os
    import time

    tmp_path.joinpath("x").mkdir()
    cache = TeacherCache(tmp_path)

    def orphan(name: str, lock: bool, age_s: float = 0.0):
        folder = tmp_path / f".{name}.tmp"
        folder.mkdir()
        (folder / "logits.npy").write_bytes(b"half")
        if lock:
            (tmp_path / f".{name}.tmp.lock").write_text("")
        if age_s:
            old = time.time() - age_s
            for p in (folder / "logits.npy", folder):
                os.utime(p, (old, old))
        return folder

    dead = orphan("dead.1111aaaa", lock=True)  # its writer was killed: nobody holds the lock
    live = orphan("live.2222bbbb", lock=True)
    fd = os.open(tmp_path / ".live.2222bbbb.tmp.lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a writer at work
    old = orphan("old.3333cccc", lock=False, age_s=2 * 3600)
    recent = orphan("recent.4444dddd", lock=False, age_s=60)
    foreign = orphan("not-ours", lock=False, age_s=2 * 3600)  # another program's, in a shared cache_dir: left alone
    stray_lock = tmp_path / ".gone.5555eeee.tmp.lock"
    stray_lock.write_text("")
    try:
        compute, _ = _compute_counter()
        cache.get_or_compute(_teacher(), FEATS, 3, compute)
        assert not dead.exists() and not (tmp_path / ".dead.1111aaaa.tmp.lock").exists()
        assert not old.exists() and not stray_lock.exists()
        assert live.exists() and recent.exists() and foreign.exists()
    finally:
        os.close(fd)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".lock")) == [
        ".live.2222bbbb.tmp.lock"
    ]  # nothing of ours left
    assert cache.clean_orphans() == [live]  # its writer is gone now


def test_a_full_disk_while_storing_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    import errno
    import os

    from textdistill import cache as cache_module
    from textdistill.errors import TextDistillError

    def full(path, array):
        open(path, "wb").write(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(cache_module.np, "save", full)
    compute, _ = _compute_counter()
    with pytest.raises(
        TextDistillError,
        match=r"^distill\.cache_dir: cannot write the entry .* \(No space left on "
        r"device\)$",
    ):
        TeacherCache(tmp_path).get_or_compute(_teacher(), FEATS, 3, compute)
    assert list(tmp_path.iterdir()) == []
