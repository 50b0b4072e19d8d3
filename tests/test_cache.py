"""The teacher-output cache: reuse, invalidation, damage detection, top-k storage, and its use in a run."""

import json

import numpy as np
import pytest
import torch
from torch import nn

import textdistill
from textdistill.cache import TeacherCache, compress_topk, expand_topk, fingerprint_inputs, fingerprint_model

from test_end_to_end import tiny_config


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
    manifest = json.loads((tmp_path / cache.key(fingerprint_model(_teacher()), fingerprint_inputs(FEATS), 3) / "manifest.json").read_text())
    assert manifest["count"] == 2 and manifest["num_classes"] == 3 and "sha256" in manifest["files"]["logits"]


def test_changed_inputs_or_teacher_give_a_new_entry(tmp_path):
    cache = TeacherCache(tmp_path)
    compute, calls = _compute_counter()
    cache.get_or_compute(_teacher(), FEATS, 3, compute)
    assert cache.get_or_compute(_teacher(), [{"input_ids": [1, 2, 3]}, {"input_ids": [4, 6]}], 3, compute).status == "miss"
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
