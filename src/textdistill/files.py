"""Files as bytes: reading them with errors that name the file, where a decoding failed, and what counts as UTF-8.
The lowest layer of reading data; the delimited/JSONL readers (:mod:`textdistill.data`) and the tagged-file readers
(:mod:`textdistill.ner`) build on it."""

from __future__ import annotations

import codecs
import os
import pickle
from pathlib import Path

from textdistill.errors import TextDistillError


def read_bytes(path: str | os.PathLike) -> bytes:
    """A file's bytes; a missing, unreadable or not-a-file path is an error naming it."""
    path = Path(path)
    # os.path (not Path) checks: they answer False for a name the OS rejects (too long, a NUL byte) instead of raising
    if not os.path.exists(path):
        hint = (
            ""
            if os.path.exists(path.parent)
            else (" (folder missing too; set TEXTDISTILL_DATA to the shared data folder?)")
        )
        raise TextDistillError(f"{path}: file not found{hint}")
    if not os.path.isfile(path):
        raise TextDistillError(f"{path}: not a file")
    try:
        return path.read_bytes()
    except OSError as exc:  # no permission, an I/O error
        raise TextDistillError(f"{path}: cannot read the file ({exc.strerror or exc})") from None


def bad_byte(raw: bytes, exc: UnicodeDecodeError) -> tuple[int, str]:
    """Where a decoding failed: the file line (1-based) and the offending byte as ``0x..``."""
    return raw[: exc.start].count(b"\n") + 1, f"0x{raw[exc.start]:02x}"


def is_utf8(encoding: str) -> bool:
    """Whether an encoding name means UTF-8, in any spelling (``utf8``, ``u8``, ``UTF-8-sig``): such files may begin
    with a byte-order mark, which is dropped."""
    try:
        return codecs.lookup(encoding).name in ("utf-8", "utf-8-sig")
    except LookupError:
        return False


def pickle_globals(path: str | os.PathLike, limit: int = 64 * 2**20) -> list[str]:
    """The code and classes a pickle (or a torch zip checkpoint's ``data.pkl``) names, read with ``pickletools``
    (which parses opcodes and runs nothing); best effort: what was found before anything unreadable."""
    import io
    import pickletools
    import zipfile

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                name = next((n for n in z.namelist() if n.endswith("data.pkl")), None)
                data = z.read(name)[:limit] if name else b""
        else:
            with open(path, "rb") as f:
                data = f.read(limit)
    except (OSError, zipfile.BadZipFile, KeyError, RuntimeError):
        return []
    found: list[str] = []
    strings: list[str] = []
    try:
        for op, arg, _ in pickletools.genops(io.BytesIO(data)):
            if isinstance(arg, str) and "UNICODE" in op.name or op.name in ("STRING", "BINSTRING", "SHORT_BINSTRING"):
                strings.append(str(arg))
            elif op.name in ("GLOBAL", "INST") and isinstance(arg, str):
                found.append(arg.replace(" ", "."))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                found.append(f"{strings[-2]}.{strings[-1]}")
    except Exception:  # noqa: BLE001  (a stream pickletools cannot follow: what was found so far)
        pass
    return found


def pickle_refusal(exc: BaseException, path: str | os.PathLike | None = None) -> tuple[bool, str]:
    """What a failed ``torch.load(weights_only=True)`` of ``path`` means, in a few words that never repeat torch's
    advice to turn the check off: (True, "its pickle calls posix.system") when the pickle names code or a class
    beyond torch's tensors (unsafe: loading it for real could run that code), else (False, why the file cannot be
    read: not a pickle of tensors, cut short, corrupt)."""
    import re

    text = " ".join(str(exc).split())
    named = re.search(r"GLOBAL ([\w.]+)|globals\(\[([\w.]+)", text)
    if named:
        return True, f"its pickle calls or builds {named.group(1) or named.group(2)}"
    if path is not None and (isinstance(exc, pickle.UnpicklingError) or "weights_only" in text):
        foreign = [g for g in pickle_globals(path) if not g.startswith(("torch.", "collections.OrderedDict"))]
        if foreign:
            return True, f"its pickle calls or builds {foreign[0]}"
    if isinstance(exc, EOFError) or not text:
        return False, "empty or cut short"
    if any(s in text for s in ("PytorchStreamReader", "zip archive", "central directory", "miniz")):
        return False, "a zip archive cut short or corrupt"
    return False, "not a pickle of tensors, numbers and strings"  # never torch's text: it may advise weights_only=False
