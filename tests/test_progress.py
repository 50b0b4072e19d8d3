"""Progress: plain lines with an ETA in a log file, a live tqdm bar in a terminal or a notebook, nothing in the
other processes of a multi-process run."""

from __future__ import annotations

import sys
import types

import pytest

from textdistill import progress as progress_module
from textdistill.progress import LineProgress, in_notebook, progress


def test_a_log_file_gets_plain_lines_with_an_eta(capsys: pytest.CaptureFixture[str]) -> None:
    bar = progress(10, "student")
    assert isinstance(bar, LineProgress)  # pytest's captured stderr is no terminal
    bar.interval = 0.0
    with bar:
        bar.update(5)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("[student] step 5/10 (50%)") and " ETA " in lines[0]


def test_a_notebook_gets_the_live_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    class ZMQInteractiveShell:  # the class name ipykernel's shell has
        pass

    fake = types.ModuleType("IPython")
    fake.get_ipython = lambda: ZMQInteractiveShell()
    monkeypatch.setitem(sys.modules, "IPython", fake)
    assert in_notebook()
    bar = progress(3, "teacher")
    assert not isinstance(bar, LineProgress) and type(bar).__module__.startswith("tqdm")
    bar.close()
    fake.get_ipython = lambda: None  # IPython imported, no kernel (a plain script)
    assert not in_notebook() and isinstance(progress(3, "teacher"), LineProgress)


def test_other_processes_show_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    with progress(4, "student", quiet=True) as bar:
        bar.update(4)
        bar.write("hidden")
    assert capsys.readouterr().err == "" and progress_module._Quiet is type(bar)
