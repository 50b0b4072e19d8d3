"""Write docs/reference/config.md from the config schema itself (src/textdistill/config.py): every key of the three
run kinds, its type, its default, and the comment the code gives it. tests/test_reference.py fails when the page and
the schema differ, so the reference cannot drift.

    python docs/reference/generate.py          # rewrite docs/reference/config.md
"""

from __future__ import annotations

import ast
import inspect
import io
import sys
import tokenize
import types
import typing
from pathlib import Path

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from textdistill import config as config_module

PAGE = Path(__file__).with_name("config.md")
ROOTS = (
    ("A one-task run (`textdistill distill`, `train`, `evaluate`)", config_module.RunConfig),
    ("A multi-task run (a config with `tasks:`)", config_module.MultiTaskRunConfig),
    ("A generative run (a config with `generative:`)", config_module.GenerativeRunConfig),
)


def field_comments() -> dict[tuple[str, str], str]:
    """(class, field) -> the comment on the field's line, or the comment lines just above it."""
    source = inspect.getsource(config_module)
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    comments = {tok.start[0]: tok.string.lstrip("#").strip() for tok in tokens if tok.type == tokenize.COMMENT}
    lines = source.splitlines()
    out = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.ClassDef):
            continue
        for item in node.body:
            if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                text = [comments[n] for n in range(item.lineno, item.end_lineno + 1) if n in comments]
                above, n = [], item.lineno - 1
                while n in comments and lines[n - 1].lstrip().startswith("#"):
                    above.insert(0, comments[n])
                    n -= 1
                out[(node.name, item.target.id)] = " ".join(above + text)
    return out


def _type_name(annotation: typing.Any) -> str:
    """``str | int | None``, ``Literal['a', 'b']``, ``list[LayerMatch]``: the type as a config writer reads it."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is type(None):
        return "None"
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin is typing.Literal:
        return "Literal[" + ", ".join(repr(a) for a in args) + "]"
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[" + ", ".join(_type_name(a) for a in args) + "]"
    if isinstance(annotation, typing.TypeAliasType if hasattr(typing, "TypeAliasType") else ()):
        return _type_name(annotation.__value__)
    return getattr(annotation, "__name__", str(annotation))


def _models_in(annotation: typing.Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found = []
    for arg in typing.get_args(annotation):
        found += _models_in(arg)
    return found


def _default(field: typing.Any) -> str:
    if field.is_required():
        return "required"
    if field.default_factory is not None:
        factory = field.default_factory
        if isinstance(factory, type) and issubclass(factory, BaseModel):
            return "(a section of defaults)"
        return f"`{factory()!r}`"
    value = field.default
    return "-" if value is PydanticUndefined else f"`{value!r}`"


def rows(model: type[BaseModel], prefix: str, comments: dict, seen: set) -> list[str]:
    out = []
    nested = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        note = comments.get((model.__name__, name), "")
        for cls in model.__mro__:  # a field inherited from a base class has its comment there
            note = note or comments.get((cls.__name__, name), "")
        note = note.replace("|", "\\|")
        out.append(
            f"| `{key}` | `{_type_name(field.annotation).replace('|', chr(92) + '|')}` | {_default(field)} | {note} |"
        )
        for sub in _models_in(field.annotation):
            if (sub, key) not in seen:
                seen.add((sub, key))
                nested.append((key, sub))
    for key, sub in nested:
        out += rows(sub, f"{key}.", comments, seen)
    return out


def render() -> str:
    comments = field_comments()
    parts = [
        "# Config reference",
        "",
        "Generated from `src/textdistill/config.py` by `python docs/reference/generate.py` (a test checks it is "
        "current). Types and defaults come from the schema, notes from the code's own comments. A key given "
        "twice, "
        "an unknown key or a bad value is refused before any work with one line naming it.",
        "",
    ]
    for title, root in ROOTS:
        parts += [f"## {title}", "", "| key | type | default | note |", "|---|---|---|---|"]
        parts += rows(root, "", comments, set())
        parts.append("")
    return "\n".join(parts)


if __name__ == "__main__":
    PAGE.write_text(render(), encoding="utf-8")
    print(f"wrote {PAGE} ({len(render().splitlines())} lines)", file=sys.stderr)
