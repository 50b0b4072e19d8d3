"""docs/reference/config.md is generated from the config schema: it must be current (rerun
`python docs/reference/generate.py` after changing src/textdistill/config.py)."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_config_reference_is_current() -> None:
    spec = importlib.util.spec_from_file_location("generate_reference", ROOT / "docs" / "reference" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    page = (ROOT / "docs" / "reference" / "config.md").read_text(encoding="utf-8")
    assert page == module.render(), "docs/reference/config.md is stale: run python docs/reference/generate.py"
    for key in ("data.train_file", "distill.temperature", "student.num_layers", "generative.divergence", "tasks"):
        assert f"| `{key}` |" in page, key
