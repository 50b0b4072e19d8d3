"""What an output folder may replace, what it must never touch, and one writer at a time.

A run deletes folders (a stale ``<output_dir>.partial``, the old ``output_dir`` under ``overwrite_output_dir``), so:

- a folder is replaced only when it is a textdistill run folder: the run folder carries a small marker file,
  :data:`MARKER`, written before anything else;
- an output folder that is, contains or lies above the working folder, the home folder, the config file, any input
  (data files, model folders, the transfer set: every path the config names that exists) or a cache is refused before
  any work;
- two processes never write one run: the first holds an exclusive lock (``flock``) on ``<output_dir>.partial.lock``
  until it ends; the kernel releases it whatever way the process ends, so a dead run's lock is never in the way.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import json
import os
import socket
import time
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

from textdistill.errors import TextDistillError

MARKER = "textdistill-run.json"

F = TypeVar("F", bound=Callable[..., Any])


def shown(path: str | os.PathLike) -> str:
    """A path for a message: cut when very long, so that an error stays one readable line."""
    text = str(path)
    return text if len(text) <= 120 else text[:117] + "..."


def _real(path: str | os.PathLike) -> Path:
    return Path(os.path.realpath(os.path.expanduser(str(path))))


def write_marker(folder: Path, kind: str) -> None:
    """Mark ``folder`` as a run folder of textdistill (the only kind of folder a later run may replace)."""
    from textdistill.version import __version__

    info = {
        "textdistill": __version__,
        "kind": kind,
        "created": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "pid": os.getpid(),
    }
    tmp = folder / (MARKER + ".tmp")
    tmp.write_text(json.dumps(info) + "\n", encoding="utf-8")
    tmp.replace(folder / MARKER)


def is_run_folder(folder: Path) -> bool:
    """Whether ``folder`` holds textdistill's marker (a folder, not a link to one)."""
    return folder.is_dir() and not folder.is_symlink() and (folder / MARKER).is_file()


def check_replaceable(folder: Path, what: str, hint: str) -> None:
    """Refuse to delete ``folder`` unless it is a run folder (an empty folder is also fine to replace)."""
    if folder.is_symlink() or folder.is_file():
        raise TextDistillError(
            f"{what}: {shown(folder)} is {'a link' if folder.is_symlink() else 'a file'}, not a "
            f"run folder; "
            f"refusing to replace it ({hint})"
        )
    if folder.is_dir() and not is_run_folder(folder) and any(folder.iterdir()):
        raise TextDistillError(
            f"{what}: {shown(folder)} exists and is not a textdistill run folder (it has no "
            f"{MARKER}); "
            f"refusing to replace it ({hint})"
        )


def _config_paths(value: Any, key: str = "") -> Iterable[tuple[str, str]]:
    """(dotted key, string) for every string of a dumped config, except the output folder itself."""
    if isinstance(value, dict):
        for k, v in value.items():
            if k not in ("output_dir", "output"):  # the run's own outputs (output_dir, transfer.output)
                yield from _config_paths(v, f"{key}.{k}" if key else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _config_paths(v, f"{key}[{i}]")
    elif isinstance(value, str) and value and len(value) < 4096:
        yield key, value


def protected_paths(
    config: dict[str, Any] | None = None, config_file: str | None = None, inputs: Iterable[tuple[str, str]] = ()
) -> list[tuple[Path, str]]:
    """What no output may be, contain or lie above: (path, what it is). Every string of ``config`` that names an
    existing file or folder counts as an input (data, models, the transfer set)."""
    from textdistill.cache import default_cache_dir
    from textdistill.catalogue import cache_root

    out: list[tuple[Path, str]] = [
        (_real(Path.cwd()), "the working folder"),
        (_real(Path.home()), "the home folder"),
        (_real(default_cache_dir().parent), "textdistill's cache"),
        (_real(cache_root()), "the model catalogue's cache"),
    ]
    if config_file:
        out.append((_real(config_file), "the config file"))
    candidates = list(_config_paths(config or {})) + list(inputs)
    for key, value in candidates:
        try:
            if os.path.lexists(os.path.expanduser(value)):
                out.append(
                    (
                        _real(value),
                        f"{key} ({shown(value)})"
                        if key.endswith("cache_dir") or key.endswith(".dir")
                        else f"the input {key} ({shown(value)})",
                    )
                )
        except (OSError, ValueError):  # a string that cannot be a path (NUL, too long): not an input
            continue
    return out


def check_output(
    target: str | os.PathLike, protected: list[tuple[Path, str]], what: str, *, is_folder: bool = True
) -> None:
    """Refuse an output that is, contains or lies above a protected path; an output folder that is an existing file
    (or an output file that is a folder) is refused too. One line, before any work."""
    path = Path(target)
    try:
        exists = os.path.lexists(path)
    except (OSError, ValueError) as exc:
        raise TextDistillError(f"{what}: {shown(path)}: cannot be used ({exc})") from None
    if is_folder and exists and not path.is_dir():
        raise TextDistillError(f"{what}: {shown(path)} is an existing file, not a folder; choose another {what}")
    if not is_folder and path.is_dir():
        raise TextDistillError(f"{what}: {shown(path)} is a folder; give a file name")
    real = _real(path)
    for p, why in protected:
        if real == p:
            raise TextDistillError(f"{what}: {shown(path)} is {why}; choose another {what}")
        if is_folder and real in p.parents:
            raise TextDistillError(f"{what}: {shown(path)} contains {why} and would replace it; choose another {what}")


# --------------------------------------------------------------------------------------------------------------------
# One writer at a time

_held: list["FolderLock"] = []  # locks taken by this process and not released yet, newest last


class FolderLock:
    """An exclusive ``flock`` on ``<folder>.lock``; refused at once (no waiting) when another process holds it.

    The lock file is removed on release. A process that opened the file just before it was removed could lock the
    removed file; :meth:`acquire` detects that (the name no longer leads to the file it locked) and tries again."""

    def __init__(self, path: Path, what: str) -> None:
        self.path = path
        self.what = what
        self.fd: int | None = None
        self.made: list[Path] = []  # folders made to hold the lock file: removed again when they stay empty

    def acquire(self) -> "FolderLock":
        self.made = [p for p in [self.path.parent, *self.path.parent.parents] if not p.exists()]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(100):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise TextDistillError(
                        f"{self.what}: cannot lock {shown(self.path)} ({exc.strerror or exc})"
                    ) from None
                raise TextDistillError(
                    f"{self.what}: {shown(self.path.with_suffix(''))} is in use by another "
                    f"textdistill run "
                    f"({self._holder()}); wait for it to end or choose another "
                    f"{self.what}"
                ) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the file was removed by its last holder after we opened it: take the new one
        else:
            raise TextDistillError(f"{self.what}: could not lock {shown(self.path)}")
        os.ftruncate(fd, 0)
        os.write(
            fd,
            json.dumps(
                {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
            ).encode(),
        )
        self.fd = fd
        _held.append(self)
        return self

    def _holder(self) -> str:
        try:
            info = json.loads(self.path.read_text(encoding="utf-8"))
            return f"pid {int(info['pid'])} on {str(info['host'])[:60]}, since {str(info['since'])[:19]}"
        except (OSError, ValueError, KeyError, TypeError):
            return "lock file " + shown(self.path)

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            self.path.unlink()  # while still holding it, so nobody is left holding a removed file unnoticed
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None
        for folder in self.made:  # deepest first
            try:
                folder.rmdir()
            except OSError:  # the run (or anything else) put something there: it stays
                break
        if self in _held:
            _held.remove(self)


def release_lock_of(path: Path) -> None:
    """Release this process's lock on ``path`` (a run that committed its folder is done with it)."""
    for lock in [h for h in _held if h.path == path]:
        lock.release()


def releases_locks(fn: F) -> F:
    """Release every :class:`FolderLock` the call took, however it ends (a notebook may call again after an error)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        before = len(_held)
        try:
            return fn(*args, **kwargs)
        finally:
            while len(_held) > before:
                _held[-1].release()

    return wrapper  # type: ignore[return-value]
