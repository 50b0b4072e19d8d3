"""Distilled datasets: filters against hand computations, labelling with an ensemble, resume after a crash, manifest
checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import textdistill.distilled as distilled
from textdistill.data import Collator, DistillDataset, TextData, tokenize
from textdistill.distilled import (
    Candidate,
    Filters,
    LabelTeacher,
    example_scores,
    keep_mask,
    label_dataset,
    read_distilled,
    stored_probability,
)
from textdistill.errors import TextDistillError
from textdistill.metrics import predict_logits


def test_scores_and_filters_by_hand() -> None:
    # two teachers, three examples, two classes
    p = torch.tensor([[[0.9, 0.1], [0.4, 0.6], [0.5, 0.5]], [[0.7, 0.3], [0.8, 0.2], [0.5, 0.5]]])
    fused = p.mean(0)  # [[0.8, 0.2], [0.6, 0.4], [0.5, 0.5]]
    s = example_scores(p, fused)
    assert torch.allclose(s["confidence"], torch.tensor([0.8, 0.6, 0.5]))
    assert torch.allclose(s["agreement"], torch.tensor([1.0, 0.5, 1.0]))  # ties: argmax picks class 0 for all
    h = lambda a: -(a * torch.log(torch.tensor(a)) + (1 - a) * torch.log(torch.tensor(1 - a)))  # noqa: E731
    assert torch.allclose(s["entropy"], torch.stack([h(0.8), h(0.6), h(0.5)]))
    keep, dropped = keep_mask(s, Filters(min_confidence=0.55, min_agreement=1.0))
    assert keep.tolist() == [True, False, False] and dropped == {"min_confidence": 1, "min_agreement": 1}
    keep, dropped = keep_mask(s, Filters(max_entropy=float(h(0.6)) + 1e-6))
    assert keep.tolist() == [True, True, False] and dropped == {"max_entropy": 1}
    assert keep_mask(s, Filters())[0].all()


@pytest.fixture
def teachers(tiny_bert: str, tmp_path: Path) -> list[LabelTeacher]:
    tok = AutoTokenizer.from_pretrained(tiny_bert)
    a = AutoModelForSequenceClassification.from_pretrained(tiny_bert).eval()
    torch.manual_seed(5)
    b = AutoModelForSequenceClassification.from_pretrained(tiny_bert).eval()
    with torch.no_grad():
        b.classifier.weight.normal_(0, 2.0)  # a second, different teacher
    return [LabelTeacher("a", a, tok), LabelTeacher("b", b, tok)]


def candidates(sst2_dir: Path, n: int = 150) -> list[Candidate]:
    lines = (sst2_dir / "train.tsv").read_text(encoding="utf-8").splitlines()[1 : n + 1]
    return [Candidate(line.split("\t")[0], source="pool" if i % 3 else "augment:mask") for i, line in enumerate(lines)]


def test_stored_probabilities_keep_small_tails_to_seven_significant_digits() -> None:
    assert stored_probability(0.123456789) == 0.1234568
    assert stored_probability(3.14159265e-9) == 3.141593e-9  # 6 decimals made it 0
    assert stored_probability(0.0) == 0.0 and stored_probability(1.0) == 1.0
    p = torch.softmax(torch.tensor([0.0, -20.0, -30.0]), -1)
    kept = torch.tensor([stored_probability(float(v)) for v in p])
    assert torch.allclose(kept.log(), p.log(), atol=1e-6)  # log-probabilities, the cached targets, survive


def test_labelling_fuses_the_teachers_and_writes_a_checked_dataset(teachers, sst2_dir: Path, tmp_path: Path) -> None:
    cands = candidates(sst2_dir)
    manifest = label_dataset(
        teachers, cands, ["0", "1"], tmp_path / "ds", temperature=2.0, shard_size=40, batch_size=16
    )
    assert not (tmp_path / "ds.partial").exists()
    assert manifest["counts"]["candidates"] == 150 and manifest["rows"] == 150
    data = read_distilled(tmp_path / "ds")
    assert data.texts == [c.text for c in cands] and data.sources == [c.source for c in cands]
    # by hand: mean of the two teachers' softmax(logits / 2)
    tok = teachers[0].tokenizer
    ds = DistillDataset(tokenize(tok, TextData(data.texts, ["0"] * 150), 128), [0] * 150)
    want = torch.stack(
        [torch.softmax(predict_logits(t.model, ds, Collator(tok.pad_token_id), 64) / 2.0, -1) for t in teachers]
    ).mean(0)
    assert torch.allclose(data.soft, want, atol=2e-6)
    assert data.labels == [["0", "1"][i] for i in want.argmax(-1).tolist()]
    assert manifest["counts"]["kept_by_source"] == {"pool": 100, "augment": 50}


def test_filters_drop_and_count(teachers, sst2_dir: Path, tmp_path: Path) -> None:
    m = label_dataset(
        teachers, candidates(sst2_dir), ["0", "1"], tmp_path / "ds", filters=Filters(min_agreement=1.0), shard_size=64
    )
    data = read_distilled(tmp_path / "ds")
    assert m["rows"] == len(data.texts) == 150 - m["counts"]["dropped"]["min_agreement"]
    rows = [json.loads(x) for x in (tmp_path / "ds" / "data.jsonl").read_text().splitlines()]
    assert all(r["agreement"] == 1.0 for r in rows)


def test_a_crash_half_way_resumes_to_the_same_dataset(teachers, sst2_dir: Path, tmp_path: Path, monkeypatch) -> None:
    cands = candidates(sst2_dir)
    label_dataset(teachers, cands, ["0", "1"], tmp_path / "whole", shard_size=32)
    real = distilled._label_shard
    calls = []

    def crash_on_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # the process dies here: two shards are on disk, nothing else
        return real(*args, **kwargs)

    monkeypatch.setattr(distilled, "_label_shard", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        label_dataset(teachers, cands, ["0", "1"], tmp_path / "ds", shard_size=32)
    assert sorted(p.name for p in (tmp_path / "ds.partial").glob("shard-*.jsonl")) == [
        "shard-00000.jsonl",
        "shard-00001.jsonl",
    ]
    with pytest.raises(TextDistillError, match=r"no manifest.json \(labelling did not finish"):
        read_distilled(tmp_path / "ds")
    (tmp_path / "ds.partial" / "shard-00002.jsonl.tmp").write_text("half a li")  # a shard cut off mid-write
    calls.clear()
    monkeypatch.setattr(distilled, "_label_shard", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    label_dataset(teachers, cands, ["0", "1"], tmp_path / "ds", shard_size=32)
    assert len(calls) == 3  # shards 2, 3 and 4 of 5
    assert (tmp_path / "ds" / "data.jsonl").read_bytes() == (tmp_path / "whole" / "data.jsonl").read_bytes()
    # a different job in the same place starts over instead of mixing shards
    calls.clear()
    label_dataset(teachers, cands[:100], ["0", "1"], tmp_path / "ds", shard_size=32)
    assert len(calls) == 4 and read_distilled(tmp_path / "ds").manifest["rows"] == 100


def test_corrupt_or_bad_input_is_an_error(teachers, sst2_dir: Path, tmp_path: Path) -> None:
    label_dataset(teachers, candidates(sst2_dir, 20), ["0", "1"], tmp_path / "ds", topk=1)
    data = read_distilled(tmp_path / "ds")
    assert torch.allclose(data.soft.sum(-1), torch.ones(20))  # top-1 kept, the rest spread
    path = tmp_path / "ds" / "data.jsonl"
    path.write_text(path.read_text().replace('"label": "0"', '"label": "1"', 1))
    with pytest.raises(TextDistillError, match="does not match its manifest"):
        read_distilled(tmp_path / "ds")
    with pytest.raises(TextDistillError, match="no candidate texts"):
        label_dataset(teachers, [], ["0", "1"], tmp_path / "x")
    with pytest.raises(TextDistillError, match="mix single texts and sentence pairs"):
        label_dataset(teachers, [Candidate("a"), Candidate("b", "c")], ["0", "1"], tmp_path / "x")


def transfer_config(tiny_bert: str, sst2_dir: Path, tmp_path: Path, pool: Path) -> dict:
    return {
        "output_dir": str(tmp_path / "run"),
        "seed": 1,
        "data": {
            "train_file": str(sst2_dir / "train.tsv"),
            "validation_file": str(sst2_dir / "dev.tsv"),
            "max_train_samples": 64,
            "max_eval_samples": 32,
            "max_length": 32,
        },
        "teacher": {"model": tiny_bert, "finetune": True, "training": {"learning_rate": 1e-3, "num_train_epochs": 1}},
        "student": {
            "num_layers": 2,
            "training": {"learning_rate": 1e-3, "num_train_epochs": 1, "per_device_train_batch_size": 16},
        },
        "transfer": {"variants": 2, "neighbour": 0.2, "unlabeled_file": str(pool), "shard_size": 64},
        "eval": {"latency_repeats": 1, "latency_samples": 4},
    }


def test_data_distillation_run_end_to_end(tiny_bert: str, sst2_dir: Path, tmp_path: Path) -> None:
    from textdistill.pipeline import distill

    pool = tmp_path / "pool.txt"
    pool_lines = [
        "a wonderful , moving film",
        "",
        "the plot goes nowhere",
        "hide new secretions from the parental units",
    ]
    pool.write_text("\n".join(pool_lines) + "\n", encoding="utf-8")  # a blank line; a line that repeats a training text
    report = distill(transfer_config(tiny_bert, sst2_dir, tmp_path, pool))
    t = report["data"]["transfer"]
    assert t["kept_by_source"] == {"train": 64, "augment": t["kept"] - 66, "pool": 2} and 64 < t["kept"] - 66 <= 128
    data = read_distilled(tmp_path / "run.distilled")
    gold = [json.loads(x)["gold"] for x in (tmp_path / "run.distilled" / "data.jsonl").read_text().splitlines()]
    assert gold == [True] * 64 + [False] * (len(data.texts) - 64)
    # the student steps over the transfer set, its twin over the 64 labelled examples only
    steps = {}
    for name in ("student", "baseline"):
        log = [json.loads(x) for x in (tmp_path / "run" / "logs" / f"{name}.jsonl").read_text().splitlines()]
        steps[name] = max(r["step"] for r in log)
    assert steps == {"student": -(-len(data.texts) // 16), "baseline": 4}
    # the same job again reuses the labelled set instead of labelling anew
    before = (tmp_path / "run.distilled" / "manifest.json").stat().st_mtime_ns
    distill(transfer_config(tiny_bert, sst2_dir, tmp_path, pool) | {"overwrite_output_dir": True})
    assert (tmp_path / "run.distilled" / "manifest.json").stat().st_mtime_ns == before


@pytest.mark.parametrize(
    "content, message",
    [
        (
            b"",
            r"pool.txt: no texts \(empty "
            r"file\)",
        ),
        (b"good film\nbad\x00film\n", r"pool.txt:2: not text \(control character U\+0000\)"),
        (
            b"one\ttwo\n",
            r"pool.txt:1: expected one text \(no tabs\) per line, "
            r"got 2",
        ),
        (b"caf\xe9\n", "pool.txt:1: text is not valid utf-8"),
    ],
)
def test_bad_corpus(tiny_bert: str, sst2_dir: Path, tmp_path: Path, content: bytes, message: str) -> None:
    from textdistill.pipeline import distill

    pool = tmp_path / "pool.txt"
    pool.write_bytes(content)
    with pytest.raises(TextDistillError, match=message):
        distill(transfer_config(tiny_bert, sst2_dir, tmp_path, pool))
    assert not (tmp_path / "run.partial").exists()  # checked before anything was trained


def test_augment_and_label_commands(tiny_bert: str, sst2_dir: Path, tmp_path: Path, capsys) -> None:
    import yaml

    from textdistill.cli import main

    pool = tmp_path / "pool.txt"
    pool.write_text("a wonderful , moving film\nthe plot goes nowhere\n", encoding="utf-8")
    cfg = transfer_config(tiny_bert, sst2_dir, tmp_path, pool)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["augment", "-c", str(tmp_path / "c.yaml"), "-o", str(tmp_path / "aug.tsv")]) == 0
    rows = [line.split("\t") for line in (tmp_path / "aug.tsv").read_text(encoding="utf-8").splitlines()]
    assert rows[0] == ["text", "source", "origin"] and 64 < len(rows) - 1 <= 128
    assert all(r[1].startswith("augment:") and 0 <= int(r[2]) < 64 for r in rows[1:])
    assert f"{len(rows) - 1} variants of 64 examples" in capsys.readouterr().out
    assert main(["label", "-c", str(tmp_path / "c.yaml")]) == 2
    assert "label needs a fine-tuned teacher" in capsys.readouterr().err
    assert main(["label", "-c", str(tmp_path / "c.yaml"), "-o", str(tmp_path / "ds"), "teacher.finetune=false"]) == 0
    data = read_distilled(tmp_path / "ds")
    assert (
        data.sources.count("train") == 64 and data.sources.count("pool") == 2 and len(data.texts) == len(rows) - 1 + 66
    )
    assert f"{len(data.texts)} of {len(data.texts)} texts labelled and kept" in capsys.readouterr().out


def ensemble_setup(tiny_bert: str, sst2_dir: Path, tmp_path: Path) -> tuple[torch.nn.Module, Path, dict]:
    """A second teacher (the tiny one with a noisy head, saved to tmp_path/other), a two-line pool and the run
    config."""
    torch.manual_seed(3)
    other = AutoModelForSequenceClassification.from_pretrained(tiny_bert)
    with torch.no_grad():
        other.classifier.weight.normal_(0, 2.0)
    other.save_pretrained(tmp_path / "other")
    AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(tmp_path / "other")
    pool = tmp_path / "pool.txt"
    pool.write_text("a wonderful , moving film\nthe plot goes nowhere\n", encoding="utf-8")
    cfg = transfer_config(tiny_bert, sst2_dir, tmp_path, pool)
    cfg["teacher"] = {"model": tiny_bert}
    return other, pool, cfg


def test_label_command_with_an_ensemble(tiny_bert: str, sst2_dir: Path, tmp_path: Path, capsys) -> None:
    """extra_teachers label with the run's teacher (their probabilities averaged); a teacher with other labels fails."""
    import yaml

    from textdistill.cli import main

    other, pool, cfg = ensemble_setup(tiny_bert, sst2_dir, tmp_path)
    cfg["transfer"] = {"include_train": False, "unlabeled_file": str(pool), "extra_teachers": [str(tmp_path / "other")]}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["label", "-c", str(tmp_path / "c.yaml"), "-o", str(tmp_path / "ds")]) == 0
    data = read_distilled(tmp_path / "ds")
    tok = AutoTokenizer.from_pretrained(tiny_bert)
    enc = tok(data.texts, padding=True, return_tensors="pt")
    models = [AutoModelForSequenceClassification.from_pretrained(tiny_bert).eval(), other.eval()]
    with torch.no_grad():
        want = torch.stack([torch.softmax(m(**enc).logits, -1) for m in models]).mean(0)
    assert torch.allclose(data.soft, want, atol=1e-5) and len(data.manifest["teachers"]) == 2
    three = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=3, ignore_mismatched_sizes=True)
    three.save_pretrained(tmp_path / "three")
    tok.save_pretrained(tmp_path / "three")
    assert (
        main(
            [
                "label",
                "-c",
                str(tmp_path / "c.yaml"),
                "-o",
                str(tmp_path / "ds2"),
                f"transfer.extra_teachers=[{tmp_path / 'three'}]",
            ]
        )
        == 2
    )
    assert "transfer.extra_teachers.0: " in capsys.readouterr().err and not (tmp_path / "ds2").exists()


def test_intermediate_layers_on_a_transfer_set_keep_the_ensembles_soft_targets(
    tiny_bert: str, sst2_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    """With intermediate layers the run's teacher runs online for its hidden states; the KD term on the logits still
    learns the labelled set's targets (here two teachers' averaged probabilities), not the run's teacher alone."""
    from textdistill import objective as objective_module
    from textdistill.pipeline import distill

    _, pool, cfg = ensemble_setup(tiny_bert, sst2_dir, tmp_path)
    cfg["transfer"] = {"unlabeled_file": str(pool), "extra_teachers": [str(tmp_path / "other")]}
    cfg["distill"] = {"layer_map": [{"strategy": "last", "feature": "hidden", "loss": "mse"}], "baseline": False}
    seen: list[torch.Tensor] = []
    real = objective_module.distillation_loss

    def spy(student_logits, teacher_logits, *args, **kwargs):
        seen.append(teacher_logits.detach().float().softmax(-1))
        return real(student_logits, teacher_logits, *args, **kwargs)

    monkeypatch.setattr(objective_module, "distillation_loss", spy)
    report = distill(cfg)
    assert report["distill"]["layer_map"] and seen
    data = read_distilled(tmp_path / "run.distilled")
    enc = AutoTokenizer.from_pretrained(tiny_bert)(data.texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        alone = torch.softmax(AutoModelForSequenceClassification.from_pretrained(tiny_bert).eval()(**enc).logits, -1)

    def found(
        rows: torch.Tensor, table: torch.Tensor
    ) -> torch.Tensor:  # each row's distance to the nearest row of table
        return (rows[:, None, :] - table[None, :, :]).abs().amax(-1).amin(-1)

    targets = torch.cat(seen)
    assert len(targets) == len(data.texts)  # one epoch over the transfer set
    assert found(targets, data.soft).max() < 1e-5  # every target is a stored (fused) one
    assert found(alone, data.soft).max() > 1e-2  # which the run's teacher alone would not have given


def test_sigkill_half_way_then_resume(tiny_bert: str, sst2_dir: Path, tmp_path: Path) -> None:
    """A labelling process killed with SIGKILL mid-run leaves complete shards only; the rerun finishes the rest and
    writes the same bytes as an uninterrupted run."""
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "label.py"
    script.write_text(f"""
import sys, torch
torch.set_num_threads(1)
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from textdistill.distilled import Candidate, LabelTeacher, label_dataset
lines = open({str(sst2_dir / "train.tsv")!r}, encoding="utf-8").read().splitlines()[1:6001]
cands = [Candidate(line.split("\\t")[0]) for line in lines]
model = AutoModelForSequenceClassification.from_pretrained({tiny_bert!r}).eval()
t = LabelTeacher("t", model, AutoTokenizer.from_pretrained({tiny_bert!r}))
label_dataset([t], cands, ["0", "1"], sys.argv[1], shard_size=100, batch_size=50)
""")
    run = lambda out: subprocess.Popen(
        [sys.executable, str(script), str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )  # noqa: E731
    assert run(tmp_path / "whole").wait(timeout=600) == 0
    proc = run(tmp_path / "ds")
    partial = tmp_path / "ds.partial"
    deadline = time.time() + 300
    while len(list(partial.glob("shard-*.jsonl"))) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(list(partial.glob("shard-*.jsonl")))
    if done == 60 or (tmp_path / "ds").exists():
        pytest.skip("the run finished before it could be killed")
    assert 3 <= done < 60 and not (tmp_path / "ds").exists()
    assert run(tmp_path / "ds").wait(timeout=600) == 0
    assert (tmp_path / "ds" / "data.jsonl").read_bytes() == (tmp_path / "whole" / "data.jsonl").read_bytes()
    assert not partial.exists()
