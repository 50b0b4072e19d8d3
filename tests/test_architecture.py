"""The import rules of pyproject.toml's [tool.importlinter] hold, and every module of the package is placed in them.

The rules (docs/architecture.md): no import circle; each module imports only from the layers below its own; the run
kinds never import each other; the training loop imports no model family and no run kind; losses import torch only;
config parsing imports no ML library.
"""

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "textdistill"


def contracts() -> list[dict]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]


def test_import_contracts_are_kept():
    pytest.importorskip("importlinter")
    # in a child process: import-linter reads the package's files, and its cache goes to a temporary folder
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from importlinter.cli import lint_imports; "
            "sys.exit(lint_imports(config_filename='pyproject.toml', no_cache=True, no_logo=True))",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert f"Contracts: {len(contracts())} kept, 0 broken." in out.stdout


def test_every_module_has_a_layer():
    layers = next(c for c in contracts() if c["type"] == "layers")["layers"]
    placed = [m.strip() for layer in layers for m in layer.replace("|", ":").split(":")]
    modules = {f"textdistill.{p.stem}" for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    modules |= {f"textdistill.{p.parent.name}" for p in PACKAGE.glob("*/__init__.py")}  # subpackages, whole
    assert not modules - set(placed), f"modules in no layer of pyproject.toml: {sorted(modules - set(placed))}"
    assert not set(placed) - modules, f"layers name modules that do not exist: {sorted(set(placed) - modules)}"
    assert len(placed) == len(set(placed)), "a module is in two layers"


def test_the_loop_and_the_losses_stay_small_in_what_they_import():
    """The same rules read straight from the source (a second check that does not depend on import-linter)."""

    def imported(name: str) -> set[str]:
        tree = ast.parse((PACKAGE / f"{name}.py").read_text())
        found = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
        return {m for m in found if m.startswith("textdistill")}

    assert imported("losses") == set() and imported("lm_losses") == set()
    assert imported("config") == {"textdistill.errors"}
    run_kinds = {"textdistill.pipeline", "textdistill.generative", "textdistill.task_distill", "textdistill.transfer"}
    families = {"textdistill.models", "textdistill.students", "textdistill.multitask", "textdistill.lm_models"}
    assert not imported("train") & (run_kinds | families | {"textdistill.objective", "textdistill.features"})


@pytest.mark.parametrize("command", [["format", "--check"], ["check"]], ids=["format", "lint"])
def test_code_is_formatted_and_linted(command: list[str]) -> None:
    """`ruff format` writes the layout and `ruff check` (pyproject.toml's [tool.ruff]) finds nothing."""
    pytest.importorskip("ruff")
    out = subprocess.run(
        [sys.executable, "-m", "ruff", *command, "--no-cache", "src", "tests", "benchmarks", "examples"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
