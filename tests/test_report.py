"""The report table: numbers placed where they belong, no machine paths."""

import os

from textdistill.report import display_name, render_report


def _report() -> dict:
    speed = {"params": 22_700_000, "size_bytes": 90_900_000, "latency_ms_batch1": 9.0, "throughput_batch32": 200.0}
    return {
        "metric": "accuracy",
        "data": {"train": "train.tsv", "validation": "dev.tsv", "train_examples": 10, "validation_examples": 5},
        "distill": {"loss": "kl", "temperature": 2.0, "alpha": 0.9},
        "teacher": {"model": os.path.abspath("runs/t/teacher"), "metrics": {"accuracy": 0.9}, **speed},
        "student": {"layers": [1, 5], "metrics": {"accuracy": 0.88}, "retained_pct": 100 * 0.88 / 0.9,
                    "params": 15_600_000, "size_bytes": 62_500_000, "latency_ms_batch1": 3.0, "throughput_batch32": 600.0},
        "baseline": {"metrics": {"accuracy": 0.85}, "retained_pct": 100 * 0.85 / 0.9},
        "speedup_batch1": 3.0,
        "speedup_batch32": 3.0,
        "machine": {"torch_threads": 2},
    }  # fmt: skip


def test_render_report_rows():
    text = render_report(_report())
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in text.splitlines() if line.startswith("| ")}
    assert rows["teacher (runs/t/teacher)"][:3] == ["90.00", "100.0", "22.7"]
    assert rows["student (distilled)"] == ["88.00", "97.8", "15.6", "62.5", "3.00", "600", "3.00x"]
    assert rows["student (no distillation)"][:2] == ["85.00", "94.4"]
    assert "layers [1, 5] of the teacher" in text and "T=2.0" in text
    assert os.getcwd() not in text


def test_display_name():
    assert display_name("all-MiniLM-L6-v2") == "all-MiniLM-L6-v2"
    assert display_name("org/model") == "org/model"
    assert display_name("/somewhere/else/run/teacher") == os.path.join("run", "teacher")
