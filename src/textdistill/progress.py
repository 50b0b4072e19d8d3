"""Progress reports with an ETA: a live tqdm bar on a terminal or in a notebook, plain periodic lines in a log file."""

from __future__ import annotations

import sys
import time
from typing import Any


class LineProgress:
    """Progress for logs (stderr not a terminal): one plain line every ``interval`` seconds, with an ETA."""

    def __init__(self, total: int, desc: str, interval: float = 30.0) -> None:
        self.total, self.desc, self.interval = total, desc, interval
        self.n, self.postfix = 0, ""
        self.start = self.last = time.perf_counter()

    def __enter__(self) -> "LineProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        if exc[0] is None:
            self._print()

    def update(self, n: int = 1) -> None:
        self.n += n
        if time.perf_counter() - self.last >= self.interval:
            self._print()

    def set_postfix(self, **kw: Any) -> None:
        self.postfix = " ".join(f"{k}={v}" for k, v in kw.items())

    def write(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    def _print(self) -> None:
        self.last = now = time.perf_counter()
        elapsed = now - self.start
        eta = elapsed / self.n * (self.total - self.n) if self.n else float("nan")
        fmt = lambda s: "?" if s != s else f"{int(s) // 60}m{int(s) % 60:02d}s"  # noqa: E731
        pct = 100 * self.n / max(self.total, 1)
        self.write(
            f"[{self.desc}] step {self.n}/{self.total} ({pct:.0f}%) {self.postfix} elapsed {fmt(elapsed)} ETA "
            f"{fmt(eta)}"
        )


class _Quiet(LineProgress):
    """What the other processes of a multi-process run show: nothing."""

    def update(self, n: int = 1) -> None:
        self.n += n

    def write(self, text: str) -> None:
        pass


def in_notebook() -> bool:
    """Whether this runs in a Jupyter kernel (stderr is no terminal there, but a live bar shows as a widget)."""
    ipython = sys.modules.get("IPython")
    try:
        shell = ipython.get_ipython() if ipython is not None else None
    except Exception:  # an IPython without a running shell
        return False
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def progress(total: int, desc: str, quiet: bool = False) -> Any:
    """A live tqdm bar (``tqdm.auto``) on a terminal or in a notebook; plain lines with an ETA in a log file; nothing
    when ``quiet``."""
    if quiet:
        return _Quiet(total, desc)
    if not (sys.stderr.isatty() or in_notebook()):
        return LineProgress(total, desc)
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True)
