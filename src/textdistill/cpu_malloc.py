"""Large CPU tensors made from memory that malloc keeps, not from fresh pages (Linux, glibc).

glibc's malloc serves a block above its mmap threshold (at most 32 MiB by default) with fresh pages from the kernel,
and hands it back on free. A CPU training step makes such blocks every time: the dense gradient of a BERT word
embedding (30,522 x 384 floats, 47 MB) is allocated, zeroed and freed at every step, and every one of its pages
faults and is cleared by the kernel before torch writes it. Making, zeroing and freeing that tensor took 16.2 ms
here; with the block from malloc's own heap, kept there after free, 1.8 ms (docs/RESULTS.md). PyTorch's CPU tuning
guide gets the same by preloading jemalloc or tcmalloc; this needs no preload.

:func:`reuse_freed_memory` raises the mmap and trim thresholds (``mallopt``) when a loop starts; they stay so for
the rest of the process (evaluation and latency measured after training gain too; putting the defaults back would
also switch off glibc's own adjustment of the mmap threshold). When the loop ends, the freed memory malloc kept is
returned to the system (``malloc_trim``). Elsewhere (macOS, Windows, musl) it does nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import platform
import sys
from collections.abc import Iterator

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
KEEP_BYTES = 1 << 30  # blocks up to 1 GiB from the heap; up to 1 GiB of freed memory kept at its top


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(None)
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


@contextlib.contextmanager
def reuse_freed_memory(enabled: bool = True) -> Iterator[bool]:
    """From here on, glibc's malloc serves blocks up to 1 GiB from its heap and keeps freed memory; on leaving, what
    it kept is returned to the system. Yields whether the thresholds were set (False off glibc or when not
    ``enabled``)."""
    libc = _glibc() if enabled else None
    done = libc is not None and bool(libc.mallopt(M_MMAP_THRESHOLD, KEEP_BYTES)) and bool(libc.mallopt(M_TRIM_THRESHOLD, KEEP_BYTES))
    try:
        yield done
    finally:
        if done:
            libc.malloc_trim(0)  # type: ignore[union-attr]
