"""The Python examples run end to end (on the tiny model, a slice of SST-2), so they cannot rot."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_python_api_example(
    tiny_bert: str, sst2_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TEXTDISTILL_CACHE", str(tmp_path / "cache"))
    example = _load("python_api")
    result = example.main(["--teacher", tiny_bert, "--rows", "200", "--fast", "--out", str(tmp_path / "run")])
    out = capsys.readouterr().out
    assert "student says: [" in out and ("positive" in out or "negative" in out)
    assert result.metrics["student"]["accuracy"] > 0 and (tmp_path / "run" / "student" / "config.json").is_file()


def test_trainer_integration_example(
    tiny_bert: str, sst2_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    example = _load("trainer_integration")
    scores = example.main(["--teacher", tiny_bert, "--rows", "64", "--epochs", "1", "--out", str(tmp_path / "run")])
    assert 0.0 <= scores["eval_accuracy"] <= 1.0
    assert "student (2 layers) dev accuracy: " in capsys.readouterr().out
