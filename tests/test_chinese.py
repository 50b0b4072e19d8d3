"""Chinese end to end on real ChnSentiCorp reviews (tiny models): a distill run with Chinese label names and a
character-level BiLSTM student, then `textdistill predict` and `textdistill report` in a plain C locale, whose output
must still be correct UTF-8."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_tiny_bert

import textdistill
from textdistill.config import data_dir
from textdistill.html_report import _drawable, confusion_png, tick_names

CN = Path(data_dir()) / "chnsenticorp"
NAMES = {"0": "负面", "1": "正面"}  # negative, positive


def _rows(path: Path, n: int) -> list[tuple[str, str]]:
    header, *lines = path.read_text(encoding="utf-8").splitlines()
    cols = header.split("\t")
    out = []
    for line in lines[:n]:
        row = dict(zip(cols, line.split("\t")))
        out.append((row["text_a"], NAMES[row["label"]]))
    return out


@pytest.fixture(scope="module")
def chinese_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (CN / "train.tsv").is_file():
        pytest.skip(f"shared ChnSentiCorp data not found at {CN}")
    tmp = tmp_path_factory.mktemp("chinese")
    train, dev = _rows(CN / "train.tsv", 320), _rows(CN / "dev.tsv", 96)
    for name, rows in (("train.tsv", train), ("dev.tsv", dev)):
        (tmp / name).write_text("评论\t情感\n" + "".join(f"{t}\t{y}\n" for t, y in rows), encoding="utf-8")
    teacher = make_tiny_bert(
        tmp / "tiny_zh", [t for t, _ in train], vocab_size=1500
    )  # BERT's normaliser: one piece per character
    fast = {"num_train_epochs": 2, "per_device_train_batch_size": 16, "learning_rate": 1e-3, "logging_steps": 5}
    textdistill.distill(
        {
            "output_dir": str(tmp / "run"),
            "seed": 3,
            "data": {
                "train_file": str(tmp / "train.tsv"),
                "validation_file": str(tmp / "dev.tsv"),
                "text_column": "评论",
                "label_column": "情感",
                "max_length": 96,
            },
            "teacher": {"model": teacher, "finetune": True, "training": fast},
            "student": {
                "architecture": {
                    "type": "bilstm",
                    "tokenizer": "words",
                    "vocab_size": 1200,
                    "embedding_dim": 32,
                    "hidden_size": 32,
                },
                "training": fast,
            },
            "distill": {"loss": "mse", "alpha": 0.5},
            "eval": {"latency_repeats": 2, "latency_samples": 16},
        }
    )
    return tmp / "run"


def _c_locale() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LC_", "PYTHONIOENCODING", "PYTHONUTF8"))}
    return {**env, "LANG": "C", "LC_ALL": "C"}


def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "textdistill", *args], cwd=cwd, capture_output=True, env=_c_locale(), timeout=300
    )
    assert proc.returncode == 0, proc.stderr.decode("utf-8", "replace")[-2000:]
    return proc


def test_a_chinese_run_keeps_its_label_names_and_a_character_vocabulary(chinese_run: Path) -> None:
    from transformers import AutoTokenizer

    metrics = json.loads((chinese_run / "metrics.json").read_text(encoding="utf-8"))
    assert sorted(metrics["data"]["labels"]) == ["正面", "负面"]
    assert 0.0 <= metrics["student"]["metrics"]["accuracy"] <= 1.0
    tok = AutoTokenizer.from_pretrained(chinese_run / "student")
    assert tok.tokenize("房间很干净，服务好！") == ["房", "间", "很", "干", "净", ",", "服", "务", "好", "!"]
    html = (chinese_run / "report.html").read_text(encoding="utf-8")
    labels = metrics["student"]["confusion"]["labels"]
    shown, key = tick_names(labels)
    # drawn with a CJK font where one is installed; else numbered, and the caption (drawn by the browser) names them
    assert (shown, key) == (labels, "") if _drawable("".join(labels)) else key in html and shown == ["1", "2"]
    assert key == "" or key == f"Labels: 1 = {labels[0]}, 2 = {labels[1]}."


def test_plots_never_draw_missing_glyphs() -> None:
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        png = confusion_png("测试 dev", ["正面", "负面", "neutral"], [[3, 1, 0], [0, 2, 1], [1, 0, 4]])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [
        w
        for w in caught
        if "missing from font" in str(w.message) and "测" not in str(w.message) and "试" not in str(w.message)
    ]
    assert tick_names(["B-PER", "O"]) == (["B-PER", "O"], "")


def test_predict_prints_chinese_in_a_c_locale(chinese_run: Path, tmp_path: Path) -> None:
    texts = ["这家酒店的服务非常好，下次还会再来。", "房间又小又脏，再也不住了"]
    out = _cli(["predict", str(chinese_run / "student"), *texts], tmp_path).stdout.decode("utf-8")
    lines = out.splitlines()
    assert [line.split("\t")[1] for line in lines] == texts
    assert {line.split("\t")[0] for line in lines} <= {"正面", "负面"}
    # the same from a UTF-8 file with a byte-order mark, and as JSON (not \\u escapes)
    (tmp_path / "in.txt").write_text("\ufeff" + "\n".join(texts) + "\n", encoding="utf-8")
    as_json = _cli(["predict", str(chinese_run / "student"), "--file", "in.txt", "--json"], tmp_path).stdout.decode(
        "utf-8"
    )
    assert "这家酒店" in as_json and "\\u" not in as_json
    assert [r["text"] for r in json.loads(as_json)] == texts
    assert [r["prediction"] for r in json.loads(as_json)] == [line.split("\t")[0] for line in lines]


def test_report_compares_chinese_runs_in_a_c_locale(chinese_run: Path, tmp_path: Path) -> None:
    out = _cli(["report", str(chinese_run), "-o", "compare.html"], tmp_path).stdout.decode("utf-8")
    assert "bilstm" in out.lower() and (tmp_path / "compare.html").is_file()
