"""The teacher-output cache: teacher logits computed once per (teacher weights, teacher inputs), kept on disk.

An entry's key is a hash of everything that determines the outputs: the teacher's weights (every tensor's bytes),
the exact token ids it reads (which covers the data, the tokenizer, the max length and any augmentation), and the
storage format (dtype, top-k). Change any of them and the key changes, so an entry is never silently stale. Each
entry is a folder with ``manifest.json`` and ``.npy`` arrays (loaded memory-mapped); it is written under a temporary
name and renamed when complete, and checked against its manifest (shapes, sizes, sha256) when read: a truncated or
corrupt entry is reported, removed and rebuilt.

Top-k storage (``topk``): for large label spaces only the k largest log-probabilities and their indices are kept;
the missing probability mass is spread evenly over the other classes when the logits are rebuilt, so the rebuilt
distribution still sums to one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

FORMAT_VERSION = 1


def default_cache_dir() -> Path:
    return Path(os.environ.get("TEXTDISTILL_CACHE", Path.home() / ".cache" / "textdistill")) / "teacher-outputs"


def fingerprint_model(model: nn.Module) -> str:
    """sha256 over every parameter and buffer (name, dtype, shape, bytes) and the config's class."""
    h = hashlib.sha256(type(model).__name__.encode())
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def fingerprint_inputs(features: list[dict[str, list[int]]]) -> str:
    """sha256 over the exact token ids (and segment ids) the teacher reads, in order."""
    h = hashlib.sha256()
    for f in features:
        for key in sorted(f):
            h.update(key.encode())
            h.update(np.asarray(f[key], dtype=np.int64).tobytes())
        h.update(b"|")
    return h.hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def compress_topk(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest log-probabilities per row and their class indices."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    values, indices = logp.topk(k, dim=-1)
    return values, indices


def expand_topk(values: torch.Tensor, indices: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Rebuild full log-probabilities from top-k: the kept entries as stored, the missing mass spread evenly over the
    other classes (so each row is a distribution again). Usable as logits (softmax of it is that distribution)."""
    k = values.shape[-1]
    rest = (1.0 - values.float().exp().sum(-1, keepdim=True)).clamp_min(1e-12)
    fill = (rest / max(num_classes - k, 1)).log()
    out = fill.expand(*values.shape[:-1], num_classes).clone()
    out.scatter_(-1, indices.long(), values.float())
    return out


@dataclass
class CacheResult:
    logits: torch.Tensor
    status: str  # "hit" | "miss" | "rebuilt" | "off"
    seconds: float
    path: str | None = None


class TeacherCache:
    def __init__(self, root: str | os.PathLike | None = None, dtype: str = "float32", topk: int | None = None) -> None:
        self.root = Path(root) if root else default_cache_dir()
        self.dtype = dtype
        self.topk = topk

    def key(self, teacher_fp: str, inputs_fp: str, num_classes: int) -> str:
        k = self.topk if self.topk and self.topk < num_classes else None
        spec = f"v{FORMAT_VERSION}|{teacher_fp}|{inputs_fp}|{self.dtype}|topk={k}|C={num_classes}"
        return hashlib.sha256(spec.encode()).hexdigest()[:32]

    def _arrays(self, logits: torch.Tensor) -> dict[str, np.ndarray]:
        dtype = np.float16 if self.dtype == "float16" else np.float32
        if self.topk and self.topk < logits.shape[-1]:
            values, indices = compress_topk(logits, self.topk)
            return {"values": values.numpy().astype(dtype), "indices": indices.numpy().astype(np.int32)}
        return {"logits": logits.float().numpy().astype(dtype)}

    def load_arrays(self, key: str, expect: dict[str, Any]) -> dict[str, np.ndarray] | None:
        """An entry's arrays (memory-mapped), or None when absent. ``expect``: manifest fields that must hold these
        values. A damaged or mismatched entry is reported, removed, and None returned."""
        entry = self.root / key
        if not entry.exists():
            return None
        try:
            manifest = json.loads((entry / "manifest.json").read_text(encoding="utf-8"))
            wrong = {k: manifest.get(k) for k, v in expect.items() if manifest.get(k) != v}
            if wrong:
                raise ValueError(f"holds {wrong}, expected {({k: expect[k] for k in wrong})}")
            arrays = {}
            for name, meta in manifest["files"].items():
                path = entry / f"{name}.npy"
                if path.stat().st_size != meta["bytes"]:
                    raise ValueError(f"{path.name} has {path.stat().st_size} bytes, the manifest says {meta['bytes']}")
                if sha256_file(path) != meta["sha256"]:
                    raise ValueError(f"{path.name} does not match its sha256")
                arrays[name] = np.load(path, mmap_mode="r")
        except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError) as exc:
            print(f"teacher-output cache {entry}: {exc}; rebuilding it", file=sys.stderr)
            shutil.rmtree(entry, ignore_errors=True)
            return None
        return arrays

    def load(self, key: str, count: int, num_classes: int) -> torch.Tensor | None:
        """The cached logits, or None when absent; a damaged entry is reported, removed, and None returned."""
        arrays = self.load_arrays(key, {"count": count, "num_classes": num_classes})
        if arrays is None:
            return None
        if "logits" in arrays:
            return torch.from_numpy(np.array(arrays["logits"], dtype=np.float32))
        values = torch.from_numpy(np.array(arrays["values"], dtype=np.float32))
        indices = torch.from_numpy(np.array(arrays["indices"], dtype=np.int64))
        return expand_topk(values, indices, num_classes)

    def store_arrays(self, key: str, arrays: dict[str, np.ndarray], manifest: dict[str, Any]) -> Path:
        """Write an entry atomically (temporary folder, then rename): the arrays as ``.npy`` files and
        ``manifest.json`` (``manifest`` plus each file's size and sha256); returns its folder."""
        self.root.mkdir(parents=True, exist_ok=True)
        final = self.root / key
        tmp = self.root / f".{key}.{uuid.uuid4().hex[:8]}.tmp"
        tmp.mkdir()
        try:
            files = {}
            for name, array in arrays.items():
                path = tmp / f"{name}.npy"
                np.save(path, array)
                files[name] = {"bytes": path.stat().st_size, "sha256": sha256_file(path), "dtype": str(array.dtype), "shape": list(array.shape)}
            full = {"format": FORMAT_VERSION, "key": key, **manifest, "files": files, "created": time.strftime("%Y-%m-%d %H:%M:%S")}
            (tmp / "manifest.json").write_text(json.dumps(full, indent=2), encoding="utf-8")
            if final.exists():
                shutil.rmtree(final)
            try:
                tmp.rename(final)
            except OSError:  # another process stored the same entry meanwhile: the same key holds the same outputs
                if not final.exists():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return final

    def store(self, key: str, logits: torch.Tensor, info: dict[str, Any]) -> Path:
        """Write an entry of teacher logits atomically; returns its folder."""
        manifest = {"count": int(logits.shape[0]), "num_classes": int(logits.shape[-1]), "dtype": self.dtype, "topk": self.topk, **info}
        return self.store_arrays(key, self._arrays(logits), manifest)

    def get_or_compute(
        self,
        teacher: nn.Module,
        features: list[dict[str, list[int]]],
        num_classes: int,
        compute: Callable[[], torch.Tensor],
        info: dict[str, Any] | None = None,
    ) -> CacheResult:
        """Cached teacher logits for these inputs, computing and storing them on a miss."""
        started = time.perf_counter()
        teacher_fp, inputs_fp = fingerprint_model(teacher), fingerprint_inputs(features)
        key = self.key(teacher_fp, inputs_fp, num_classes)
        existed = (self.root / key).exists()
        cached = self.load(key, len(features), num_classes)
        if cached is not None:
            return CacheResult(cached, "hit", time.perf_counter() - started, str(self.root / key))
        logits = compute()
        path = self.store(key, logits, {"teacher_fingerprint": teacher_fp, "inputs_fingerprint": inputs_fp, **(info or {})})
        stored = self.load(key, len(features), num_classes)  # what later runs will read (top-k, float16)
        assert stored is not None
        return CacheResult(stored, "rebuilt" if existed else "miss", time.perf_counter() - started, str(path))
