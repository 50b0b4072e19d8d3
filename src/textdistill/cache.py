"""The teacher-output cache: teacher logits computed once per (teacher weights, teacher inputs), kept on disk.

An entry's key is a hash of everything that determines the outputs: the teacher's weights (every tensor's bytes),
the exact token ids it reads (which covers the data, the tokenizer, the max length and any augmentation), and the
storage format (dtype, top-k). Change any of them and the key changes, so an entry is never silently stale. Each
entry is a folder with ``manifest.json`` and ``.npy`` arrays (loaded memory-mapped); it is written under a temporary
name and renamed when complete, and checked against its manifest (shapes, sizes, sha256) when read: a truncated or
corrupt entry is reported, removed and rebuilt (so is a file found in an entry's place). A writer killed mid-write
leaves its temporary folder behind: the next write removes it once no process holds its lock (see
:meth:`TeacherCache.clean_orphans`).

Top-k storage (``topk``): for large label spaces only the k largest log-probabilities and their indices are kept;
the missing probability mass is spread evenly over the other classes when the logits are rebuilt, so the rebuilt
distribution still sums to one.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
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

from textdistill.errors import TextDistillError

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


def check_cache_dir(root: str | os.PathLike, where: str = "distill.cache_dir") -> None:
    """``root`` is a folder, or can be made one: neither it nor a folder above it is a file (``where``: the setting
    that names it, for the message)."""
    root = Path(root)
    for path in (root, *root.absolute().parents):
        if path.exists() and not path.is_dir():
            what = "is a file" if path == root else f"cannot be made: {path} is a file"
            raise TextDistillError(f"{where}: {root} {what}; the teacher-output cache needs a folder")
        if path.is_dir():
            return


def _unlocked(lock: Path) -> bool | None:
    """Whether no process holds ``lock`` (its writer is dead); None when that cannot be told here."""
    try:
        import fcntl
    except ImportError:  # not on this platform
        return None
    try:
        fd = os.open(lock, os.O_RDWR)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:
        return None  # the file system keeps no locks
    finally:
        os.close(fd)  # closing releases a lock taken here
    return True


class _WriterLock:
    """An exclusive lock held by the writer of a temporary entry for as long as it writes (released by the system if
    the writer dies): :meth:`TeacherCache.clean_orphans` removes only entries whose lock it can take. Where locks
    are not available the lock file is dropped, and the age rule applies."""

    def __init__(self, path: Path) -> None:
        self.path, self.fd = path, None

    def __enter__(self) -> "_WriterLock":
        try:
            import fcntl

            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except (ImportError, OSError):
            self.__exit__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self.fd)
            self.fd = None


@dataclass
class CacheResult:
    logits: torch.Tensor
    status: str  # "hit" | "miss" | "rebuilt" | "off"
    seconds: float
    path: str | None = None


TEMPORARY = re.compile(
    r"^\.[\w-]+\.[0-9a-f]{8}\.tmp(\.lock)?$"
)  # what store_arrays writes: .KEY.XXXXXXXX.tmp (and .lock)
ORPHAN_AGE_S = 3600.0  # a temporary entry this long untouched, with no lock to tell, is a dead writer's


def _remove(path: Path) -> None:
    """Remove a cache entry whatever it became: a folder, a file or a link in its place."""
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


def _newest_mtime(folder: Path) -> float:
    """The latest modification time of a folder and what it holds (a writer still at work touches its files)."""
    times = [folder.lstat().st_mtime]
    for p in folder.rglob("*"):
        try:
            times.append(p.lstat().st_mtime)
        except OSError:
            pass
    return max(times)


class TeacherCache:
    """The teacher-output cache under ``root`` (``key``: the config key that names it, for messages)."""

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        dtype: str = "float32",
        topk: int | None = None,
        key: str = "distill.cache_dir",
    ) -> None:
        self.root = Path(root) if root else default_cache_dir()
        self.where = key if root else "the teacher-output cache ($TEXTDISTILL_CACHE)"
        self.dtype = dtype
        self.topk = topk

    def check(self) -> None:
        """The cache's folder is a folder, or can become one: neither it nor a folder above it is a file."""
        check_cache_dir(self.root, self.where)

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

    def _names(self, num_classes: int) -> set[str]:
        """The arrays an entry of logits holds: top-k values and indices, or the full logits."""
        return {"values", "indices"} if self.topk and self.topk < num_classes else {"logits"}

    def load_arrays(
        self, key: str, expect: dict[str, Any], names: set[str] | None = None
    ) -> dict[str, np.ndarray] | None:
        """An entry's arrays (memory-mapped), or None when absent. ``expect``: manifest fields that must hold these
        values; ``names``: the arrays it must hold. A damaged or mismatched entry (a file in its place, a manifest
        without files, an array of the wrong size, shape or sha256) is reported, removed, and None returned."""
        entry = self.root / key
        if not (entry.exists() or entry.is_symlink()):
            return None
        try:
            if not entry.is_dir():
                raise ValueError("not a folder")
            manifest = json.loads((entry / "manifest.json").read_text(encoding="utf-8"))
            if not isinstance(manifest, dict):
                raise ValueError("manifest.json is not an object")
            wrong = {k: manifest.get(k) for k, v in expect.items() if manifest.get(k) != v}
            if wrong:
                raise ValueError(f"holds {wrong}, expected { ({k: expect[k] for k in wrong}) }")
            files = manifest.get("files")
            if not isinstance(files, dict) or not files:
                raise ValueError("its manifest lists no files")
            if names is not None and set(files) != names:
                raise ValueError(f"holds {sorted(files)}, expected {sorted(names)}")
            arrays = {}
            for name, meta in files.items():
                path = entry / f"{name}.npy"
                if path.stat().st_size != meta["bytes"]:
                    raise ValueError(f"{path.name} has {path.stat().st_size} bytes, the manifest says {meta['bytes']}")
                if sha256_file(path) != meta["sha256"]:
                    raise ValueError(f"{path.name} does not match its sha256")
                arrays[name] = np.load(path, mmap_mode="r")
                if list(arrays[name].shape) != list(meta["shape"]):
                    raise ValueError(
                        f"{path.name} has shape {list(arrays[name].shape)}, the manifest says {meta['shape']}"
                    )
        except (OSError, ValueError, KeyError, TypeError, AttributeError, json.JSONDecodeError) as exc:
            print(f"teacher-output cache {entry}: {str(exc)[:300]}; rebuilding it", file=sys.stderr)
            _remove(entry)
            return None
        return arrays

    def load(self, key: str, count: int, num_classes: int) -> torch.Tensor | None:
        """The cached logits, or None when absent; a damaged entry is reported, removed, and None returned."""
        arrays = self.load_arrays(key, {"count": count, "num_classes": num_classes}, self._names(num_classes))
        if arrays is None:
            return None
        if "logits" in arrays:
            return torch.from_numpy(np.array(arrays["logits"], dtype=np.float32))
        values = torch.from_numpy(np.array(arrays["values"], dtype=np.float32))
        indices = torch.from_numpy(np.array(arrays["indices"], dtype=np.int64))
        return expand_topk(values, indices, num_classes)

    def clean_orphans(self) -> list[Path]:
        """Remove the temporary entries of writers that died (killed mid-write): those whose lock no process holds,
        and, where no lock tells (an entry from before locks, a file system without them), those untouched for
        :data:`ORPHAN_AGE_S`. A live writer holds its lock until its entry is in place, so it is never disturbed;
        the lock (not a process id) also tells across machines and containers that share the cache. Returns what
        was removed."""
        removed = []
        try:
            candidates = [
                p for p in self.root.iterdir() if TEMPORARY.match(p.name)
            ]  # ours only: cache_dir may be shared
        except OSError:
            return removed
        for path in candidates:
            try:
                if path.name.endswith(".lock"):
                    if not path.with_name(path.name[: -len(".lock")]).exists() and _unlocked(path):
                        path.unlink(missing_ok=True)  # its entry was renamed or removed; the writer died after
                        removed.append(path)
                    continue
                lock = path.with_name(path.name + ".lock")
                dead = _unlocked(lock) if lock.exists() else None
                if dead is None:
                    dead = time.time() - _newest_mtime(path) > ORPHAN_AGE_S
                if dead:
                    _remove(path)
                    lock.unlink(missing_ok=True)
                    removed.append(path)
            except OSError:
                continue  # gone meanwhile, or not ours to remove
        return removed

    def store_arrays(self, key: str, arrays: dict[str, np.ndarray], manifest: dict[str, Any]) -> Path:
        """Write an entry atomically (temporary folder, then rename): the arrays as ``.npy`` files and
        ``manifest.json`` (``manifest`` plus each file's size and sha256); returns its folder. The temporary
        folders of writers that died are removed first (:meth:`clean_orphans`)."""
        self.check()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TextDistillError(f"{self.where}: cannot create {self.root} ({exc.strerror or exc})") from None
        self.clean_orphans()
        final = self.root / key
        tmp = self.root / f".{key}.{uuid.uuid4().hex[:8]}.tmp"
        with _WriterLock(tmp.with_name(tmp.name + ".lock")):
            try:
                tmp.mkdir()
                files = {}
                for name, array in arrays.items():
                    path = tmp / f"{name}.npy"
                    np.save(path, array)
                    files[name] = {
                        "bytes": path.stat().st_size,
                        "sha256": sha256_file(path),
                        "dtype": str(array.dtype),
                        "shape": list(array.shape),
                    }
                full = {
                    "format": FORMAT_VERSION,
                    "key": key,
                    **manifest,
                    "files": files,
                    "created": time.strftime("%Y-%m-%d %H:%M:%S"),
                }
                (tmp / "manifest.json").write_text(json.dumps(full, indent=2), encoding="utf-8")
                if final.exists() or final.is_symlink():
                    _remove(final)  # a damaged entry, or a file in its place
                try:
                    tmp.rename(final)
                except OSError:  # another process stored the same entry meanwhile: the same key holds the same outputs
                    if not final.is_dir():
                        raise
            except OSError as exc:  # a full disk, a read-only folder: one line, and no half-written entry left
                raise TextDistillError(
                    f"{self.where}: cannot write the entry {final} ({exc.strerror or exc})"
                ) from None
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        return final

    def store(self, key: str, logits: torch.Tensor, info: dict[str, Any]) -> Path:
        """Write an entry of teacher logits atomically; returns its folder."""
        manifest = {
            "count": int(logits.shape[0]),
            "num_classes": int(logits.shape[-1]),
            "dtype": self.dtype,
            "topk": self.topk,
            **info,
        }
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
        self.check()  # before the teacher's outputs are computed
        teacher_fp, inputs_fp = fingerprint_model(teacher), fingerprint_inputs(features)
        key = self.key(teacher_fp, inputs_fp, num_classes)
        existed = (self.root / key).exists() or (self.root / key).is_symlink()
        cached = self.load(key, len(features), num_classes)
        if cached is not None:
            return CacheResult(cached, "hit", time.perf_counter() - started, str(self.root / key))
        logits = compute()
        path = self.store(
            key, logits, {"teacher_fingerprint": teacher_fp, "inputs_fingerprint": inputs_fp, **(info or {})}
        )
        stored = self.load(key, len(features), num_classes)  # what later runs will read (top-k, float16)
        if stored is None:
            raise TextDistillError(f"{self.where}: the entry {path} could not be read back once written")
        return CacheResult(stored, "rebuilt" if existed else "miss", time.perf_counter() - started, str(path))
