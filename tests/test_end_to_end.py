"""End to end on a tiny randomly initialised BERT over a slice of SST-2 (seconds), through the API and the CLI."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import textdistill
from textdistill.errors import TextDistillError


def tiny_config(tiny_bert: str, sst2_dir: Path, out: Path, **student) -> dict:
    fast = {"num_train_epochs": 2, "per_device_train_batch_size": 16, "learning_rate": 1e-3, "logging_steps": 5}
    return {
        "output_dir": str(out),
        "seed": 7,
        "data": {
            "train_file": str(sst2_dir / "train.tsv"),
            "validation_file": str(sst2_dir / "dev.tsv"),
            "max_length": 48,
            "max_train_samples": 256,
            "max_eval_samples": 96,
        },
        "teacher": {"model": tiny_bert, "finetune": True, "training": fast},
        "student": {**(student or {"layers": [0, 3]}), "training": fast},
        "distill": {"temperature": 3.0, "alpha": 0.7},
        "eval": {"latency_repeats": 3, "latency_samples": 32},
    }


def test_distill_end_to_end(tiny_bert, sst2_dir, tmp_path):
    from transformers import AutoModelForSequenceClassification

    out = tmp_path / "run"
    report = textdistill.distill(tiny_config(tiny_bert, sst2_dir, out))
    assert Path(report["output_dir"]) == out
    assert not (tmp_path / "run.partial").exists()
    for name in (
        "config.yaml",
        "metrics.json",
        "report.md",
        "logs/teacher.jsonl",
        "logs/student.jsonl",
        "logs/baseline.jsonl",
    ):
        assert (out / name).is_file(), name
    # students load with the HF Auto class and carry the label names
    student = AutoModelForSequenceClassification.from_pretrained(out / "student")
    assert student.config.num_hidden_layers == 2
    assert student.config.id2label == {0: "0", 1: "1"}
    # every loss term is logged per step, with the learning rate
    steps = [json.loads(line) for line in (out / "logs/student.jsonl").read_text().splitlines()]
    train_steps = [s for s in steps if "loss" in s]
    assert train_steps and all({"kd", "ce", "lr", "loss"} <= s.keys() for s in train_steps)
    assert any("eval_accuracy" in s for s in steps)
    for s in train_steps:
        assert s["loss"] == pytest.approx(0.7 * s["kd"] + 0.3 * s["ce"], rel=1e-4)
    baseline_steps = [json.loads(line) for line in (out / "logs/baseline.jsonl").read_text().splitlines()]
    assert all("kd" not in s for s in baseline_steps)
    # the report: metric, retention, sizes, speed
    metrics = json.loads((out / "metrics.json").read_text())
    t, s, b = metrics["teacher"], metrics["student"], metrics["baseline"]
    assert s["layers"] == [0, 3]
    assert s["retained_pct"] == pytest.approx(100 * s["metrics"]["accuracy"] / t["metrics"]["accuracy"])
    assert 0 <= b["metrics"]["accuracy"] <= 1
    assert s["params"] < t["params"]
    assert 0 < s["size_bytes"] < t["size_bytes"]
    assert s["latency_ms_batch1"] > 0 and s["throughput_batch32"] > 0
    import statistics  # the median of the per-round ratios: both models of a round are timed moments apart

    per_round = [a / b for a, b in zip(s["throughput_batch32_rounds"], t["throughput_batch32_rounds"])]
    assert len(per_round) == 3 and metrics["speedup_batch32"] == pytest.approx(statistics.median(per_round))
    table = (out / "report.md").read_text()
    assert "student (distilled)" in table and "student (no distillation)" in table and "% of teacher" in table
    # the student's model card: HF metadata (YAML front matter) and the same scores
    import yaml

    card = (out / "student" / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert front["library_name"] == "transformers" and "knowledge-distillation" in front["tags"]
    assert front["model-index"][0]["results"][0]["metrics"][0]["value"] == pytest.approx(
        s["metrics"]["accuracy"], abs=1e-4
    )
    assert f"| student (distilled) | {100 * s['metrics']['accuracy']:.2f}" in " ".join(card.split()).replace("| ", "| ")
    assert "layers [0, 3] of the teacher" in card and "T=3.0" in card


def test_saved_student_scores_what_the_run_reported(tiny_bert, sst2_dir, tmp_path):
    cfg = tiny_config(tiny_bert, sst2_dir, tmp_path / "run", num_layers=1)
    cfg["distill"]["baseline"] = False
    report = textdistill.distill(cfg)
    again = textdistill.evaluate(str(tmp_path / "run" / "student"), cfg, speed=False)
    assert again["metrics"]["accuracy"] == pytest.approx(report["student"]["metrics"]["accuracy"], abs=1e-6)
    assert "baseline" not in report


def test_online_teacher_equals_precomputed(tiny_bert, sst2_dir, tmp_path):
    """Soft targets precomputed once give the same student as a teacher forward pass per batch (no dropout)."""
    results = []
    for mode in ("precompute", "online"):
        cfg = tiny_config(tiny_bert, sst2_dir, tmp_path / mode)
        cfg["distill"].update(teacher_outputs=mode, baseline=False)
        cfg["teacher"]["training"]["num_train_epochs"] = 1
        results.append(textdistill.distill(cfg)["student"]["metrics"]["accuracy"])
        kd = [json.loads(x).get("kd") for x in (tmp_path / mode / "logs/student.jsonl").read_text().splitlines()]
        results.append([v for v in kd if v is not None])
    assert results[0] == results[2]
    # the same to float rounding (the online teacher pads each training batch, the precomputed one its own batches):
    # compared within a tolerance, not rounded to 4 places, where two values a rounding apart fall on either side
    assert results[1] == pytest.approx(results[3], rel=1e-4, abs=1e-6)


def test_runs_are_reproducible(tiny_bert, sst2_dir, tmp_path):
    accs = []
    for name in ("a", "b"):
        cfg = tiny_config(tiny_bert, sst2_dir, tmp_path / name)
        cfg["distill"]["baseline"] = False
        accs.append(textdistill.distill(cfg)["student"]["metrics"])
    assert accs[0] == accs[1]


def test_fine_tuning_a_headless_encoder_is_reproducible(tiny_bert, sst2_dir, tmp_path):
    """The head made fresh for fine-tuning comes from the run's seed, so two runs give identical teachers."""
    from safetensors.torch import load_file
    from transformers import AutoTokenizer, BertModel

    encoder = tmp_path / "encoder"
    BertModel.from_pretrained(tiny_bert).save_pretrained(encoder)  # no classification head: one is made when loaded
    AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(encoder)
    weights = []
    for name in ("a", "b"):
        cfg = tiny_config(str(encoder), sst2_dir, tmp_path / name)
        cfg["teacher"]["training"]["num_train_epochs"] = 1
        out = Path(textdistill.train_teacher(cfg)["output_dir"])
        weights.append(load_file(next((out / "teacher").glob("*.safetensors"))))
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_train_then_distill_from_the_trained_teacher(tiny_bert, sst2_dir, tmp_path):
    cfg = tiny_config(tiny_bert, sst2_dir, tmp_path / "teacher_run")
    cfg["teacher"]["training"]["num_train_epochs"] = 1
    result = textdistill.train_teacher(cfg)
    teacher_dir = tmp_path / "teacher_run" / "teacher"
    assert (teacher_dir / "model.safetensors").is_file()
    assert 0 <= result["teacher"]["metrics"]["accuracy"] <= 1
    cfg2 = tiny_config(tiny_bert, sst2_dir, tmp_path / "student_run", num_layers=2)
    cfg2["teacher"] = {"model": str(teacher_dir), "finetune": False}
    cfg2["distill"]["baseline"] = False
    report = textdistill.distill(cfg2)
    assert report["teacher"]["metrics"]["accuracy"] == pytest.approx(result["teacher"]["metrics"]["accuracy"], abs=1e-6)


def test_existing_output_dir_is_refused(tiny_bert, sst2_dir, tmp_path):
    (tmp_path / "run").mkdir()
    with pytest.raises(TextDistillError, match="already exists; choose another or set overwrite_output_dir"):
        textdistill.distill(tiny_config(tiny_bert, sst2_dir, tmp_path / "run"))


def test_an_output_dir_the_file_system_refuses_is_a_config_error(tiny_bert, sst2_dir, tmp_path):
    (tmp_path / "file").write_text("")
    cases = [
        (tmp_path / ("x" * 300), r"File name too long; names of at most \d+ characters"),
        (tmp_path / "file" / "run", "Not a directory"),
    ]
    for out, why in cases:
        with pytest.raises(TextDistillError, match=rf"output_dir: .*: cannot be used \({why}"):
            textdistill.distill(tiny_config(tiny_bert, sst2_dir, out))
    # a name that fits only without ".partial": refused before any work, too
    with pytest.raises(TextDistillError, match="File name too long"):
        textdistill.distill(tiny_config(tiny_bert, sst2_dir, tmp_path / ("y" * 250)))


# --------------------------------------------------------------------------------------------------------------------
# Bad input through the CLI: one line on stderr naming the file (and row), status 2, no run folder.


def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "textdistill", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def _bad_config(tmp_path: Path, tiny_bert: str, sst2_dir: Path, **changes) -> Path:
    import yaml

    cfg = tiny_config(tiny_bert, sst2_dir, tmp_path / "run")
    for dotted, value in changes.items():
        node = cfg
        *path, last = dotted.split("__")
        for p in path:
            node = node[p]
        node[last] = value
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def _write(tmp_path: Path, name: str, content: str | bytes) -> str:
    p = tmp_path / name
    p.write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(p)


@pytest.mark.parametrize(
    "case, expected",
    [
        ("missing_file", r"nope\.tsv: file not found"),
        ("missing_column", r"cols\.tsv: column 'text' \(text_column\) not found"),
        ("empty", r"empty\.tsv: no data rows"),
        ("dev_label", r"dev3\.tsv:3: label '2' is not among the training labels \['0', '1'\]"),
        ("not_utf8", r"latin\.tsv:2: text is not valid utf-8"),
        ("teacher_labels", r"teacher\.model: .* predicts 2 labels but the data has 3"),
        ("student_not_model", r"student\.model: .*notamodel is not a model folder \(no config\.json\)"),
        ("unknown_key", r"invalid config: distill\.temprature: unknown key"),
    ],
)
def test_cli_bad_input(case, expected, tiny_bert, sst2_dir, tmp_path):
    good = "text\tlabel\n" + "".join(f"sentence {i}\t{i % 2}\n" for i in range(8))
    changes: dict = {}
    if case == "missing_file":
        changes = {"data__train_file": str(tmp_path / "nope.tsv")}
    elif case == "missing_column":
        changes = {
            "data__train_file": _write(tmp_path, "cols.tsv", "sentence\tlabel\na\t1\n"),
            "data__text_column": "text",
        }
    elif case == "empty":
        changes = {"data__validation_file": _write(tmp_path, "empty.tsv", "text\tlabel\n")}
    elif case == "dev_label":
        changes = {"data__validation_file": _write(tmp_path, "dev3.tsv", "text\tlabel\na\t1\nb\t2\n")}
    elif case == "not_utf8":
        changes = {"data__train_file": _write(tmp_path, "latin.tsv", "text\tlabel\ncaf\xe9\t1\n".encode("latin-1"))}
    elif case == "teacher_labels":
        three = "text\tlabel\n" + "".join(f"s {i}\t{i % 3}\n" for i in range(9))
        changes = {
            "data__train_file": _write(tmp_path, "three.tsv", three),
            "data__validation_file": str(tmp_path / "three.tsv"),
            "teacher__finetune": False,
        }
    elif case == "student_not_model":
        (tmp_path / "notamodel").mkdir()
        changes = {"student": {"model": str(tmp_path / "notamodel")}}
    elif case == "unknown_key":
        changes = {"distill__temprature": 2.0}
    _write(tmp_path, "good.tsv", good)
    cfg = _bad_config(tmp_path, tiny_bert, sst2_dir, **changes)
    proc = _cli(["distill", "--config", str(cfg)], tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, proc.stderr[-2000:]
    import re

    assert re.search(expected, lines[0]), lines[0]
    assert not (tmp_path / "run").exists() and not (tmp_path / "run.partial").exists()


def test_cli_help_lists_commands_and_overrides():
    proc = subprocess.run([sys.executable, "-m", "textdistill", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    for word in ("train", "distill", "evaluate", "KEY=VALUE"):
        assert word in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "textdistill", "distill", "--help"], capture_output=True, text=True)
    assert "soft targets" in proc.stdout and "--config" in proc.stdout


def test_cli_distill_prints_table(tiny_bert, sst2_dir, tmp_path):
    import yaml

    cfg = tiny_config(tiny_bert, sst2_dir, tmp_path / "run")
    cfg["data"]["max_train_samples"] = 64
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    proc = _cli(
        ["distill", "-c", str(tmp_path / "c.yaml"), "student.training.num_train_epochs=1", "distill.baseline=false"],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| student (distilled)" in proc.stdout and "Speed-up at batch 1" in proc.stdout
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["student"]["training"]["num_train_epochs"] == 1 and saved["distill"]["baseline"] is False


def test_bench_reports_throughput_latency_and_memory(tiny_bert, sst2_dir, tmp_path):
    import yaml

    cfg = tiny_config(tiny_bert, sst2_dir, tmp_path / "run")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    proc = _cli(["bench", "-c", str(tmp_path / "c.yaml"), "--steps", "4", "--repeats", "2", "--json"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    d = result["distill_samples_per_second"]
    assert len(d["runs"]["online"]) == 2 and d["online"] > 0 and d["cached"] > 0
    assert result["cache_speedup"] == pytest.approx(d["cached"] / d["online"])
    paired = sorted(c / o for o, c in zip(d["runs"]["online"], d["runs"]["cached"]))
    assert result["paired_cache_speedup"] == pytest.approx(sum(paired) / 2)  # the median of two
    assert result["steady_cache_speedup"] is None  # 4 steps: none left after the loop's warm-up steps
    assert result["steady_samples_per_second"]["runs"]["cached"] == [0.0, 0.0]
    assert result["student"]["params"] < result["teacher"]["params"]
    assert result["peak_memory_mb"] > 0
    assert not (tmp_path / "run").exists()  # bench writes no run folder


def test_bench_prunes_the_vocabulary_when_the_config_asks(tiny_bert, sst2_dir, tmp_path):
    """student.prune_vocabulary was ignored by bench (it benched the full embedding matrix): now the student is cut to
    the pieces of the benched examples and of dev, as a run would cut it."""
    from textdistill.bench import bench

    cfg = tiny_config(tiny_bert, sst2_dir, tmp_path / "run")
    cfg["student"]["prune_vocabulary"] = True
    full = bench(cfg, ["student.prune_vocabulary=false"], steps=2, repeats=1)
    pruned = bench(cfg, steps=2, repeats=1)
    kept = pruned["config"]["student"]["vocabulary"]
    assert "vocabulary" not in full["config"]["student"]
    assert 0 < kept["vocab_after"] < kept["vocab_before"]
    width = 32  # tiny_bert's hidden size: each row cut is 32 parameters fewer
    assert (
        full["student"]["params"] - pruned["student"]["params"] == (kept["vocab_before"] - kept["vocab_after"]) * width
    )
    assert pruned["student"]["params"] == kept["params_after"]


def test_gradient_accumulation_halves_optimizer_steps(tiny_bert, sst2_dir, tmp_path):
    cfg = tiny_config(tiny_bert, sst2_dir, tmp_path / "run")
    cfg["teacher"] = {"model": tiny_bert, "finetune": False}
    cfg["student"]["training"].update(num_train_epochs=1, gradient_accumulation_steps=2, logging_steps=1)
    cfg["distill"]["baseline"] = False
    textdistill.distill(cfg)
    steps = [json.loads(x) for x in (tmp_path / "run/logs/student.jsonl").read_text().splitlines()]
    train_steps = [s for s in steps if "loss" in s]
    # 256 examples in batches of 16 = 16 batches; two per optimizer step
    assert [s["step"] for s in train_steps] == list(range(1, 9))
    assert train_steps[-1]["lr"] == pytest.approx(0.0, abs=1e-12)
