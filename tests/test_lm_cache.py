"""The top-k teacher-output cache of generative distillation (textdistill.lm_cache): the targets, their collation,
the loss computed from them, the cache entry, and a run that trains from the cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_generative import ROWS, batch_of, files, lm_data, run_config, teacher  # noqa: F401  (fixtures)

import textdistill
from textdistill import generative as gen
from textdistill import lm_cache, lm_models
from textdistill.config import GenerativeCacheConfig, GenerativeDistillConfig, config_from_dict
from textdistill.data import Collator
from textdistill.errors import TextDistillError
from textdistill.lm_losses import completion_mask, forward_kl_topk


def dataset_of(tokenizer, rows=ROWS):
    return gen.tokenize_lm(tokenizer, lm_data(rows), 64)


def test_targets_are_the_teachers_topk_on_completion_tokens(teacher) -> None:  # noqa: F811
    model, tok = teacher
    ds = dataset_of(tok)
    col = Collator(lm_models.pad_id_of(tok))
    targets = lm_cache.compute_topk_targets(model, ds, col, batch_size=2, k=5, temperature=2.0, chunk_size=3)
    batch = col([ds[i] for i in range(len(ds))])
    mask = completion_mask(batch["labels"])
    assert len(targets) == 3 and targets.tokens == int(mask.sum())
    assert (
        targets.indices.dtype == np.uint16 and targets.logprobs.dtype == np.float16 and targets.bytes_per_token == 5 * 4
    )
    with torch.no_grad():
        logits = model(**batch["student"]).logits
    for row in range(3):
        idx, lp = targets[row]
        full = torch.log_softmax(logits[row][mask[row]] / 2.0, dim=-1)
        want, want_idx = full.topk(5, dim=-1)
        assert torch.equal(idx, want_idx)
        torch.testing.assert_close(lp, want, atol=2e-3, rtol=1e-3)  # float16 storage


def test_collator_places_rows_at_completion_positions_and_loss_matches_online_topk(teacher) -> None:  # noqa: F811
    model, tok = teacher
    ds = dataset_of(tok)
    pad = lm_models.pad_id_of(tok)
    targets = lm_cache.compute_topk_targets(model, ds, Collator(pad), 3, k=8, temperature=1.0, chunk_size=64)
    batch = lm_cache.TopKCollator(pad)([ds.with_teacher_logits(targets)[i] for i in (2, 0, 1)])  # any order
    idx, lp = batch["teacher_topk"]
    mask = completion_mask(batch["labels"])
    assert idx.shape == (*mask.shape, 8) and not idx[~mask].any() and not lp[~mask].any()
    # the objective with the cached batch equals forward_kl_topk of the student's logits against the teacher's top-8
    student = lm_models.causal_student_from_teacher(model, [0, 2])
    cfg = GenerativeDistillConfig(alpha=1.0, teacher_cache=GenerativeCacheConfig(top_k=8), chunk_size=5)
    terms = gen.GenerativeObjective(cfg, None, pad, tok.eos_token_id)(student, batch)  # no teacher: it is not run
    s = student(**batch["student"]).logits
    with torch.no_grad():
        t_idx, t_lp = torch.log_softmax(model(**batch["student"]).logits, -1).topk(8, dim=-1)[::-1]
    expected = forward_kl_topk(s[mask], t_idx[mask], t_lp[mask]).mean()
    assert float(terms["kd"].detach()) == pytest.approx(float(expected), rel=2e-3)
    assert (
        float(terms["kd"].detach())
        <= float(
            gen.GenerativeObjective(GenerativeDistillConfig(alpha=1.0), model, pad, 3)(student, batch)["kd"].detach()
        )
        + 1e-6
    )


def test_a_row_count_that_does_not_match_the_example_is_an_error(teacher) -> None:  # noqa: F811
    _, tok = teacher
    ds = dataset_of(tok)
    bad = lm_cache.TopKTargets(np.zeros((2, 4), np.uint16), np.zeros((2, 4), np.float16), np.array([0, 1, 2, 2]))
    with pytest.raises(ValueError, match=r"cached teacher targets: 1 rows for an example of \d+ completion tokens"):
        lm_cache.TopKCollator(0)([ds.with_teacher_logits(bad)[0]])


def test_the_cache_entry_is_reused_and_a_damaged_one_rebuilt(teacher, tmp_path, capsys) -> None:  # noqa: F811
    model, tok = teacher
    ds, col = dataset_of(tok), Collator(lm_models.pad_id_of(tok))
    cfg = GenerativeCacheConfig(top_k=4, dir=str(tmp_path))
    first, info = lm_cache.cached_topk_targets(cfg, model, "tiny", ds, col, 2, 1.0, 64)
    assert info["status"] == "miss" and info["bytes_per_token"] == 16 and info["tokens"] == first.tokens
    again, info = lm_cache.cached_topk_targets(cfg, model, "tiny", ds, col, 2, 1.0, 64)
    assert info["status"] == "hit" and np.array_equal(first.indices, again.indices)
    _, other = lm_cache.cached_topk_targets(
        cfg, model, "tiny", ds, col, 2, 2.0, 64
    )  # another temperature: another entry
    assert other["status"] == "miss" and other["path"] != info["path"]
    (Path(info["path"]) / "logprobs.npy").write_bytes(b"broken")
    _, rebuilt = lm_cache.cached_topk_targets(cfg, model, "tiny", ds, col, 2, 1.0, 64)
    assert rebuilt["status"] == "rebuilt" and "rebuilding it" in capsys.readouterr().err
    manifest = json.loads((Path(info["path"]) / "manifest.json").read_text())
    assert manifest["kind"] == "lm_topk" and manifest["top_k"] == 4 and manifest["tokens"] == first.tokens


def test_index_dtype_fits_the_vocabulary() -> None:
    assert lm_cache.index_dtype(49_152) is np.uint16 and lm_cache.index_dtype(65_536) is np.uint16
    assert lm_cache.index_dtype(65_537) is np.int32 and lm_cache.index_dtype(250_002) is np.int32


def test_config_refuses_what_the_cache_cannot_serve(files, tmp_path) -> None:  # noqa: F811
    for extra, message in (
        ({"divergence": "reverse_kl"}, "only forward_kl can be computed"),
        ({"on_policy": 0.5}, "on_policy samples are new text"),
    ):
        with pytest.raises(TextDistillError, match=message):
            config_from_dict(run_config(files, tmp_path, teacher_cache={"top_k": 8}, **extra))


def test_a_run_trains_from_the_cache_without_the_teacher_and_reports_it(files, tmp_path, monkeypatch) -> None:  # noqa: F811
    monkeypatch.setenv("TEXTDISTILL_CACHE", str(tmp_path / "cache"))
    cfg = run_config(files, tmp_path / "run", teacher_cache={"top_k": 16})
    cfg["baseline"] = False
    objectives = []
    init = gen.GenerativeObjective.__init__
    monkeypatch.setattr(gen.GenerativeObjective, "__init__", lambda self, *a: objectives.append(self) or init(self, *a))
    report = textdistill.distill(cfg)
    assert len(objectives) == 1 and objectives[0].teacher is None  # training never runs the teacher
    m = json.loads((Path(report["output_dir"]) / "metrics.json").read_text())
    c = m["generative"]["teacher_cache_result"]
    assert c["status"] == "miss" and c["top_k"] == 16 and c["bytes_per_token"] == 64 and c["tokens"] > 0
    assert c["stored_bytes_per_token"] == pytest.approx(64, rel=0.2)  # plus the offsets and the .npy headers
    s = m["student"]
    assert s["divergence_to_teacher"] < 0.5 * s["divergence_to_teacher_initial"]
    assert ("top-16 log-probabilities from the teacher-output cache (miss") in (
        Path(report["output_dir"]) / "report.md"
    ).read_text()
