"""The bad-input suite (issue 8): malformed configs and data files kept as fixtures in tests/bad_input/.

Every case of tests/bad_input/cases*.yaml runs through the real command line (in-process through
``textdistill.cli.main``; three of them also as a real ``python -m textdistill`` process) and must give exit status
2, exactly one line ``error: ...`` on stderr that matches the case's regex and names the file (and line), no
traceback, nothing on stdout, and no run folder (neither the final one nor a ``.partial``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from textdistill.cli import main

HERE = Path(__file__).resolve().parent
CASES_DIR = HERE / "bad_input"
# cases.yaml and any cases-*.yaml beside it (one file per topic)
CASES: list[dict[str, Any]] = [
    case for f in sorted(CASES_DIR.glob("cases*.yaml")) for case in yaml.safe_load(f.read_text(encoding="utf-8"))
]
BY_NAME = {c["name"]: c for c in CASES}
DEFAULT_ARGS = ["distill", "-c", "{case}/config.yaml", "-o", "{out}"]


def _uses_shared_data(case: dict[str, Any]) -> bool:
    config = CASES_DIR / case["name"] / "config.yaml"
    return config.is_file() and b"${TEXTDISTILL_DATA}" in config.read_bytes()


def _placeholders(case: dict[str, Any], out: Path, request: pytest.FixtureRequest) -> dict[str, str]:
    """What {case}, {out} and {tiny_bert} stand for; skips when the case needs the shared data."""
    if _uses_shared_data(case) or "tiny_bert" in case.get("needs", []):
        from conftest import require_sst2

        require_sst2()
    tiny = request.getfixturevalue("tiny_bert") if "tiny_bert" in case.get("needs", []) else "<no tiny_bert>"
    return {"{case}": str(CASES_DIR / case["name"]), "{out}": str(out), "{tiny_bert}": tiny}


def _fill(text: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        text = text.replace(key, value)
    return text


def _argv(case: dict[str, Any], out: Path, request: pytest.FixtureRequest) -> list[str]:
    """The case's command line with its placeholders filled in."""
    values = _placeholders(case, out, request)
    return [_fill(arg, values) for arg in list(case.get("args", DEFAULT_ARGS)) + list(case.get("extra", []))]


def _files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def _check_message(case: dict[str, Any], err: str, out: str, values: dict[str, str] | None = None) -> str:
    """Exactly one ``error:`` line that matches the case and names its file (and line); returns the message."""
    assert "Traceback" not in err + out, err
    assert out == "", f"nothing belongs on stdout on an error, got {out!r}"
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{err}"
    line = lines[0]
    assert line.startswith("error: "), line
    assert re.search(case["error"], line), f"{case['name']}: {line!r} does not match {case['error']!r}"
    if "file" in case:
        file = _fill(case["file"], values or {})
        named = f"{file}:{case['line']}:" if "line" in case else file
        assert named in line, f"{case['name']}: the message should name {named!r}: {line!r}"
    return line


def _check_no_run_folder(run: Path) -> None:
    assert not run.exists(), f"a run folder was left at {run}"
    partial = run.with_name(run.name + ".partial")
    assert not partial.exists(), f"a partial run folder was left at {partial}"


def test_the_suite_has_at_least_30_cases_each_with_its_folder() -> None:
    assert len(CASES) >= 30
    assert len(BY_NAME) == len(CASES), "case names must be unique"
    folders = {p.name for p in CASES_DIR.iterdir() if p.is_dir()}
    assert folders == set(BY_NAME), (
        f"folders without a case: {folders - set(BY_NAME)}; cases without a folder: {set(BY_NAME) - folders}"
    )
    for case in CASES:
        re.compile(case["error"])
        assert set(case) <= {"name", "category", "why", "args", "extra", "error", "file", "line", "needs"}, case
    categories = {c["category"] for c in CASES}
    assert {
        "wrong type",
        "unknown key",
        "bad path",
        "broken row",
        "wrong encoding",
        "empty file",
        "label mismatch",
        "hyper-parameter",
        "invalid YAML",
        "override",
        "task",
    } <= categories


@pytest.mark.parametrize("name", list(BY_NAME))
def test_bad_input_gives_one_clean_error_line(
    name: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    case = BY_NAME[name]
    work = tmp_path / "work"  # the working directory: a relative output_dir or default would land here
    work.mkdir()
    monkeypatch.chdir(work)
    run = tmp_path / "run"
    argv = _argv(case, run, request)
    fixture_files = _files_under(CASES_DIR / name)
    capsys.readouterr()
    code = main(argv)
    out, err = capsys.readouterr()
    _check_message(case, err, out, _placeholders(case, run, request))
    assert code == 2, f"{name}: exit status {code}"
    _check_no_run_folder(run)
    assert _files_under(work) == set(), f"{name}: files written to the working directory: {_files_under(work)}"
    assert _files_under(CASES_DIR / name) == fixture_files, f"{name}: the case folder was written to"


@pytest.mark.parametrize("name", ["yaml_python_tag", "row_too_few_columns", "label_dev_not_in_train"])
def test_real_process_exits_2_with_one_line(name: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    case = BY_NAME[name]
    run = tmp_path / "run"
    argv = _argv(case, run, request)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "default"}
    proc = subprocess.run(
        [sys.executable, "-m", "textdistill", *argv], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300
    )
    _check_message(case, proc.stderr, proc.stdout, _placeholders(case, run, request))
    assert proc.returncode == 2, proc.stderr
    _check_no_run_folder(run)
    assert not (tmp_path / "pwned").exists()  # the YAML tag ran nothing


def test_debug_adds_the_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], request: pytest.FixtureRequest
) -> None:
    case = BY_NAME["row_invalid_json"]
    run = tmp_path / "run"
    capsys.readouterr()
    code = main(_argv(case, run, request) + ["--debug"])
    out, err = capsys.readouterr()
    assert code == 2
    assert "Traceback (most recent call last)" in err
    assert "TextDistillError" in err
    last = err.splitlines()[-1]
    assert last.startswith("error: ") and re.search(case["error"], last), last
    _check_no_run_folder(run)


def test_unexpected_exception_is_one_line_unless_debug(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from textdistill import pipeline

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(pipeline, "distill", broken)
    argv = ["distill", "-c", str(CASES_DIR / "task_metric_mismatch" / "config.yaml"), "-o", str(tmp_path / "run")]
    capsys.readouterr()
    assert main(argv) == 1
    out, err = capsys.readouterr()
    assert err == "error: internal error: RuntimeError: boom second line (rerun with --debug for the traceback)\n"
    assert out == ""
    assert main(argv + ["--debug"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and 'raise RuntimeError("boom' in err
    assert err.splitlines()[-1] == "error: internal error: RuntimeError: boom second line"


def test_interrupt_exits_130(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from textdistill import pipeline

    def interrupted(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "distill", interrupted)
    assert (
        main(["distill", "-c", str(CASES_DIR / "task_metric_mismatch" / "config.yaml"), "-o", str(tmp_path / "run")])
        == 130
    )
    assert capsys.readouterr().err.startswith("interrupted:")


@pytest.mark.parametrize("command", ["train", "distill", "evaluate", "export", "bench", "augment", "label", "predict"])
def test_every_command_takes_debug(command: str) -> None:
    from textdistill.cli import build_parser

    argv = (
        [command]
        + (["MODEL"] if command in ("evaluate", "export", "predict") else [])
        + (["-c", "c.yaml"] if command != "predict" else [])
    )
    args, _ = build_parser().parse_known_args(argv + ["--debug"])
    assert args.debug is True
