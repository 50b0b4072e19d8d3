"""Large CPU tensors made from memory that malloc keeps, not from fresh pages (Linux, glibc).

glibc's malloc serves a block above its mmap threshold (at most 32 MiB by default) with fresh pages from the kernel,
and hands it back on free. A CPU training step makes such blocks every time: the dense gradient of a BERT word
embedding (30,522 x 384 floats, 47 MB) is allocated, zeroed and freed at every step, and every one of its pages
faults and is cleared by the kernel before torch writes it. Making, zeroing and freeing that tensor took 16.2 ms
here; with the block from malloc's own heap, kept there after free, 1.8 ms (docs/RESULTS.md). PyTorch's CPU tuning
guide gets the same by preloading jemalloc or tcmalloc; this needs no preload.

:func:`reuse_freed_memory` raises the mmap and trim thresholds (``mallopt``) while a training loop runs, and only
then. On leaving, the freed memory malloc kept is returned to the system (``malloc_trim``) and the thresholds are put
back (:func:`thresholds_after`). Elsewhere (macOS, Windows, musl) it does nothing.

What "put back" means. glibc has no call that reads the thresholds (``mallinfo2`` reports sizes, not settings), and
the first ``mallopt`` of either one switches off, for good, its dynamic thresholds (by default the mmap threshold
starts at 128 KiB and rises to the size of each larger block freed, up to 32 MiB, the trim threshold following at
twice it). So on leaving:

- thresholds the process fixed through its environment (``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_``,
  or ``glibc.malloc.mmap_threshold`` / ``glibc.malloc.trim_threshold`` in ``GLIBC_TUNABLES``) get those values back,
  and one of the pair not named there glibc's fixed default, 128 KiB;
- otherwise the process was on the dynamic thresholds, which cannot be switched back on: they are set to where the
  dynamic ones end up in a process that frees large tensors, the mmap threshold at its ceiling
  ``DEFAULT_MMAP_THRESHOLD_MAX`` (32 MiB on 64-bit) and the trim threshold at twice that. Blocks above 32 MiB come
  from fresh pages again, as they did before; smaller ones from the heap, as the dynamic threshold serves them
  once blocks that size have been freed.

A ``mallopt`` the process made itself before cannot be seen, and is not restored.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import sys
from collections.abc import Iterator

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
KEEP_BYTES = 1 << 30  # blocks up to 1 GiB from the heap; up to 1 GiB of freed memory kept at its top
FIXED_DEFAULT = 128 * 1024  # glibc's DEFAULT_MMAP_THRESHOLD_MIN and DEFAULT_TRIM_THRESHOLD
DYNAMIC_CEILING = 4 * 1024 * 1024 * ctypes.sizeof(ctypes.c_long)  # glibc's DEFAULT_MMAP_THRESHOLD_MAX: 32 MiB on 64-bit
# where each threshold can be fixed from the environment: (variable, tunable in GLIBC_TUNABLES)
ENVIRONMENT = {
    M_MMAP_THRESHOLD: ("MALLOC_MMAP_THRESHOLD_", "glibc.malloc.mmap_threshold"),
    M_TRIM_THRESHOLD: ("MALLOC_TRIM_THRESHOLD_", "glibc.malloc.trim_threshold"),
}


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(None)
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def _number(text: str) -> int | None:
    try:
        value = int(text.strip(), 0) if text.strip().lower().startswith("0x") else int(text.strip())
    except ValueError:
        return None
    return value if value >= 0 else None


def fixed_by_environment(environ: dict[str, str] | None = None) -> dict[int, int]:
    """The thresholds the process's environment fixed at start-up (``{M_MMAP_THRESHOLD: bytes, ...}``); a tunable in
    ``GLIBC_TUNABLES`` wins over the older variable, as in glibc."""
    environ = os.environ if environ is None else environ
    tunables = dict(
        item.split("=", 1) for part in environ.get("GLIBC_TUNABLES", "").split(":") if "=" in (item := part.strip())
    )
    out: dict[int, int] = {}
    for param, (variable, tunable) in ENVIRONMENT.items():
        for text in (tunables.get(tunable), environ.get(variable)):
            value = _number(text) if text is not None else None
            if value is not None:
                out[param] = value
                break
    return out


def thresholds_after(environ: dict[str, str] | None = None) -> dict[int, int]:
    """The thresholds :func:`reuse_freed_memory` puts back on leaving (see the module's notes)."""
    fixed = fixed_by_environment(environ)
    if fixed:
        return {param: fixed.get(param, FIXED_DEFAULT) for param in (M_MMAP_THRESHOLD, M_TRIM_THRESHOLD)}
    return {M_MMAP_THRESHOLD: DYNAMIC_CEILING, M_TRIM_THRESHOLD: 2 * DYNAMIC_CEILING}


@contextlib.contextmanager
def reuse_freed_memory(enabled: bool = True) -> Iterator[bool]:
    """Within the block, glibc's malloc serves blocks up to 1 GiB from its heap and keeps freed memory; on leaving,
    what it kept is returned to the system and the thresholds are put back (:func:`thresholds_after`). Yields
    whether the thresholds were set (False off glibc or when not ``enabled``)."""
    libc = _glibc() if enabled else None
    after = thresholds_after() if libc is not None else {}
    changed = libc is not None and bool(libc.mallopt(M_MMAP_THRESHOLD, KEEP_BYTES))
    done = changed and bool(libc.mallopt(M_TRIM_THRESHOLD, KEEP_BYTES))  # type: ignore[union-attr]
    try:
        yield done
    finally:
        if changed:  # (the mmap threshold set, the trim threshold refused: that one is put back all the same)
            libc.malloc_trim(0)  # type: ignore[union-attr]
            for param, value in after.items():
                libc.mallopt(param, value)  # type: ignore[union-attr]
