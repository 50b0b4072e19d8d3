"""The run's page: ``report.html``, one self-contained file (plots embedded as PNG data URIs, inline CSS, nothing
fetched), and ``textdistill report RUN...``, which compares several runs (metric against latency: which student to
ship).

The page draws what the run folder holds and computes nothing: the report table (the Markdown of ``report.md`` as
HTML), the training curves of every model from ``logs/*.jsonl`` (each loss term and the eval metric against the
step), teacher vs student bars (metric, parameters, size, latency, throughput) and, when ``metrics.json`` has one, a
confusion matrix (``report[side]["confusion"] = {"labels": [...], "matrix": [[...]]}``, rows gold, columns
predicted; :func:`confusion_matrix` makes it from a model's dev logits). A generative run (``"kind": "generative"``)
has its own bars (held-out perplexity, next-token agreement with the teacher, parameters, tokens/s) and no confusion
matrix; in the comparison its score is the student's next-token agreement and its latency the ms per generated token.

Figures are drawn with matplotlib's Agg canvas (no display, no pyplot state) and imported only when a page is made.
"""

from __future__ import annotations

import base64
import functools
import html
import io
import json
import math
import os
import re
import sys
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

from textdistill.errors import TextDistillError
from textdistill.report import (
    display_name,
    markdown_table,
    render_generative_report,
    render_multitask_report,
    render_report,
    speed_note,
)

DPI = 100
COLORS = {"teacher": "#4c72b0", "student": "#dd8452", "twin": "#8c8c8c", "deploy": "#55a868"}
# The models a run trains, in the order the page shows them, and what each log is.
MODEL_TITLES = {
    "teacher": "teacher (fine-tuning)",
    "student-stage1": "student, stage 1 (intermediate layers)",
    "student": "student (distillation)",
    "baseline": "student without distillation (twin)",
}
NOT_LOSS = {"step", "epoch", "lr", "on_policy"}  # (on_policy: a generative run's share of on-policy batches)

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 1320px; margin: 1.5em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.1em; }
h2 { font-size: 1.25em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
.sub { color: #666; margin-top: 0; }
table { border-collapse: collapse; margin: 0.6em 0 1em; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f2f2f2; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr:nth-child(even) td { background: #fafafa; }
figure { margin: 0.8em 0 1.4em; } figcaption { color: #555; font-size: 0.9em; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
code { background: #f4f4f4; padding: 0 0.2em; } .note { color: #666; font-size: 0.9em; }
"""


# --------------------------------------------------------------------------------------------------------------------
# Reading a run folder


def load_report(run: str | os.PathLike) -> dict[str, Any]:
    """A finished run's ``metrics.json``; a folder that is not one is a :class:`TextDistillError` naming it."""
    folder = Path(run)
    if not folder.is_dir():
        raise TextDistillError(f"{run}: no such run folder")
    path = folder / "metrics.json"
    if not path.is_file():
        raise TextDistillError(f"{run}: not a finished run folder (no metrics.json)")
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TextDistillError(f"{path}: cannot read the run's metrics ({exc})") from None
    if not isinstance(report, dict) or "student" not in report:
        raise TextDistillError(
            f"{run}: not a distill run (metrics.json has no student; a `textdistill train` folder holds a teacher only)"
        )
    return report


def read_log(path: str | os.PathLike) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A ``logs/<model>.jsonl``: its training records (with ``loss``) and its evaluation records (``eval_*``), in
    order; a line that is not a JSON object (a run killed mid-write) is skipped."""
    train, evals = [], []
    for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(record, dict) or not isinstance(record.get("step"), (int, float)):
            continue
        if "loss" in record:
            train.append(record)
        elif any(k.startswith("eval_") for k in record):
            evals.append(record)
    return train, evals


def loss_terms(train: list[dict[str, Any]]) -> list[str]:
    """The logged loss terms: ``loss`` (the total) first, then each term as it first appears."""
    terms: list[str] = []
    for record in train:
        for key, value in record.items():
            if key not in NOT_LOSS and key not in terms and isinstance(value, (int, float)):
                terms.append(key)
    return sorted(terms, key=lambda k: k != "loss")


def log_models(run: Path) -> list[str]:
    """The models with a log in ``run/logs``, in training order (teacher(s), stage 1, student, twin, the rest)."""
    logs = run / "logs"
    names = sorted(p.stem for p in logs.glob("*.jsonl")) if logs.is_dir() else []
    order = list(MODEL_TITLES)
    return sorted(
        names, key=lambda n: (order.index(n) if n in order else (-1 if n.startswith("teacher") else len(order)), n)
    )


def eval_keys(report: dict[str, Any], model: str, evals: list[dict[str, Any]]) -> list[str]:
    """The eval metric(s) a model's curve shows: the run's metric; for a multi-task student the average and each
    task's metric; a multi-task teacher (``teacher-<task>-<j>``) its task's metric; a generative run's held-out
    perplexity. Any ``eval_*`` key otherwise."""
    present = [k for r in evals for k in r if k.startswith("eval_")]
    present = list(dict.fromkeys(present))
    wanted: list[str] = []
    if report.get("kind") == "multitask":
        tasks = report.get("tasks", {})
        match = re.fullmatch(r"teacher-(.+)-\d+", model)
        if match and match.group(1) in tasks:
            wanted = [f"eval_{tasks[match.group(1)]['metric']}"]
        else:
            wanted = ["eval_average"] + [f"eval_{name}/{t['metric']}" for name, t in tasks.items()]
    elif report.get("kind") == "generative":
        wanted = ["eval_perplexity"]
    elif "metric" in report:
        wanted = [f"eval_{report['metric']}"]
    keys = [k for k in wanted if k in present]
    return keys or present[:4]


def eval_axis(report: dict[str, Any]) -> tuple[float, str]:
    """How the eval panel shows its metric: a score x100; a generative run's perplexity as it is."""
    return (1.0, "perplexity (lower is better)") if report.get("kind") == "generative" else (100.0, "score x100")


# --------------------------------------------------------------------------------------------------------------------
# Figures


@functools.lru_cache(maxsize=1)
def _fonts() -> tuple[tuple[str, ...], tuple[Any, ...]]:
    """The font families plots use (DejaVu Sans, then installed fonts that draw Chinese, Japanese or Korean, which
    matplotlib falls back to glyph by glyph) and their loaded faces (to check what can be drawn)."""
    from matplotlib import font_manager
    from matplotlib.ft2font import FT2Font

    families, faces = ["DejaVu Sans"], [FT2Font(font_manager.findfont("DejaVu Sans"))]
    for entry in font_manager.fontManager.ttflist:
        if entry.name in families:
            continue
        try:
            face = FT2Font(entry.fname)
        except (OSError, RuntimeError):
            continue
        if face.get_char_index(0x4E2D):  # 中: a CJK font
            families.append(entry.name)
            faces.append(face)
    return tuple(families), tuple(faces)


def _drawable(text: str) -> bool:
    faces = _fonts()[1]
    return all(c.isspace() or any(face.get_char_index(ord(c)) for face in faces) for c in text)


def tick_names(labels: Sequence[str]) -> tuple[list[str], str]:
    """Labels as a plot can show them, and a key for the caption: when no installed font draws them (Chinese label
    names on a machine without a CJK font), the ticks are numbers and the key names them (the page's text is drawn
    by the browser, which has such fonts)."""
    if all(_drawable(label) for label in labels):
        return list(labels), ""
    return [str(i + 1) for i in range(len(labels))], "Labels: " + ", ".join(
        f"{i + 1} = {label}" for i, label in enumerate(labels)
    ) + "."


F = TypeVar("F", bound=Callable[..., bytes])


def _with_fonts(draw: F) -> F:
    """Draw with the font fallback list (text properties are fixed when an artist is made, so the whole drawing runs
    inside it); nothing outside the call changes."""

    @functools.wraps(draw)
    def wrapper(*args: Any, **kwargs: Any) -> bytes:
        from matplotlib import rc_context

        with rc_context({"font.family": list(_fonts()[0])}):
            return draw(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def _empty(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", color="#777", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


@_with_fonts
def curves_png(
    title: str,
    train: list[dict[str, Any]],
    evals: list[dict[str, Any]],
    keys: Sequence[str],
    best_step: int | None = None,
    axis: tuple[float, str] = (100.0, "score x100"),
) -> bytes:
    """One model's training: every loss term against the optimizer step (left), the eval metric(s) (right), scaled
    and labelled by ``axis`` (:func:`eval_axis`)."""
    fig = _figure(12, 3.8)
    left, right = fig.subplots(1, 2)
    fig.suptitle(title)
    terms = loss_terms(train)
    if terms:
        for term in terms:
            points = [
                (r["step"], r[term]) for r in train if isinstance(r.get(term), (int, float)) and math.isfinite(r[term])
            ]
            if points:
                xs, ys = zip(*points)
                total = term == "loss"
                left.plot(
                    xs,
                    ys,
                    label=term,
                    linewidth=2.2 if total else 1.3,
                    color="black" if total else None,
                    alpha=1 if total else 0.85,
                )
        values = [r[t] for r in train for t in terms if isinstance(r.get(t), (int, float)) and math.isfinite(r[t])]
        if values and min(values) > 0 and max(values) / min(values) > 100:
            left.set_yscale("log")
        left.set_xlabel("step")
        left.set_ylabel("loss")
        left.set_title("loss terms")
        left.grid(alpha=0.3)
        if len(terms) > 4:  # many intermediate terms: the legend beside the panel, off the curves
            left.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
        else:
            left.legend(fontsize=8)
    else:
        _empty(left, "no training records")
    if evals and keys:
        for i, key in enumerate(keys):
            points = [(r["step"], axis[0] * r[key]) for r in evals if isinstance(r.get(key), (int, float))]
            if not points:
                continue
            xs, ys = zip(*points)
            main = i == 0
            right.plot(
                xs,
                ys,
                marker="o" if main else ".",
                markersize=4 if main else 3,
                linewidth=2 if main else 1,
                label=key[5:],
                color="black" if main and len(keys) > 1 else None,
            )
        if best_step is not None:
            right.axvline(best_step, color="#999", linestyle="--", linewidth=1, label=f"best step {best_step}")
        right.set_xlabel("step")
        right.set_ylabel(axis[1])
        right.set_title("eval on the dev set")
        right.grid(alpha=0.3)
        right.legend(fontsize=8)
    else:
        _empty(right, "no evaluation records")
    return _png(fig)


def _bar_panel(ax: Any, title: str, bars: list[tuple[str, str, float | None]], fmt: str) -> None:
    shown = [(name, color, v) for name, color, v in bars if v is not None]
    if not shown:
        _empty(ax, "not measured")
        ax.set_title(title, fontsize=10)
        return
    names, colors, values = zip(*shown)
    rects = ax.bar(range(len(values)), values, color=colors)
    ax.bar_label(rects, labels=[format(v, fmt) for v in values], fontsize=8, padding=2)
    ax.set_xticks(
        range(len(values)),
        names,
        rotation=20 if len(values) > 3 else 0,
        ha="right" if len(values) > 3 else "center",
        fontsize=8,
    )
    ax.set_title(title, fontsize=10)
    ax.margins(y=0.15)
    ax.grid(axis="y", alpha=0.3)


def _value(entry: dict[str, Any], key: str, scale: float = 1.0) -> float | None:
    """``entry[key] * scale``, or None where the report has no number there."""
    v = entry.get(key)
    return None if not isinstance(v, (int, float)) else v * scale


@_with_fonts
def bars_png(report: dict[str, Any]) -> bytes:
    """Teacher vs student (vs the no-distillation twin, and the student's exported forms): metric x100, parameters,
    size, latency at batch 1, throughput at batch 32. The twin has the student's architecture: same size and speed."""
    metric, t, s = report["metric"], report["teacher"], report["student"]
    # (name, colour, entry, whether it has its own size and speed)
    sides: list[tuple[str, str, dict[str, Any], bool]] = [
        ("teacher", COLORS["teacher"], t, True),
        ("student", COLORS["student"], s, True),
    ]
    if "baseline" in report:
        sides.append(("twin", COLORS["twin"], report["baseline"], False))
    for form, entry in s.get("deploy", {}).items():
        if form != "pytorch fp32":
            sides.append((form, COLORS["deploy"], entry, True))

    def score(entry: dict[str, Any]) -> float | None:
        return _value(entry.get("metrics", {}), metric, 100.0)

    fig = _figure(14, 3.6)
    axes = fig.subplots(1, 5)
    _bar_panel(axes[0], f"{metric} x100", [(n, c, score(e)) for n, c, e, _ in sides], ".2f")
    _bar_panel(axes[1], "parameters (M)", [(n, c, _value(e, "params", 1e-6)) for n, c, e, _ in sides[:2]], ".1f")
    _bar_panel(axes[2], "size (MB)", [(n, c, _value(e, "size_bytes", 1e-6)) for n, c, e, sp in sides if sp], ".1f")
    _bar_panel(
        axes[3], "latency, batch 1 (ms)", [(n, c, _value(e, "latency_ms_batch1")) for n, c, e, sp in sides if sp], ".2f"
    )
    _bar_panel(
        axes[4],
        "throughput, batch 32 (/s)",
        [(n, c, _value(e, "throughput_batch32")) for n, c, e, sp in sides if sp],
        ".0f",
    )
    return _png(fig)


# A generative run's panels: (title, key in each model's entry, scale, number format).
GENERATIVE_PANELS = [
    ("held-out perplexity (lower is better)", "perplexity", 1.0, ".2f"),
    ("next-token agreement with the teacher (%)", "agreement", 100.0, ".1f"),
    ("parameters (M)", "params", 1e-6, ".2f"),  # two decimals, as in the report table (small LMs: 0.05 M)
    ("generation speed (tokens/s)", "tokens_per_second", 1.0, ".1f"),
]


@_with_fonts
def generative_bars_png(report: dict[str, Any]) -> bytes:
    """A generative run: teacher vs student (vs the no-distillation twin), each measured on its own: held-out
    perplexity, next-token agreement with the teacher (the teacher's own: 100%, drawn when the students have one),
    parameters, greedy generation tokens/s at batch 1."""
    t, s = report["teacher"], report["student"]
    sides = [
        ("teacher", COLORS["teacher"], {**t, "agreement": 1.0} if "agreement" in s else t),
        ("student", COLORS["student"], s),
    ]
    if "baseline" in report:
        sides.append(("twin", COLORS["twin"], report["baseline"]))
    fig = _figure(14, 3.6)
    for ax, (title, key, scale, fmt) in zip(fig.subplots(1, len(GENERATIVE_PANELS)), GENERATIVE_PANELS):
        _bar_panel(ax, title, [(n, c, _value(e, key, scale)) for n, c, e in sides], fmt)
    return _png(fig)


@_with_fonts
def multitask_bars_png(report: dict[str, Any]) -> bytes:
    """A multi-task run: each task's score x100 for the reference (teacher or ensemble), the student and its twin,
    and the speed of one teacher vs the student."""
    import numpy as np

    tasks = report["tasks"]
    groups = [
        (
            f"{name}\n{t['metric']}",
            t.get("reference_score"),
            t["student"]["metrics"].get(t["metric"]),
            t.get("baseline", {}).get("metrics", {}).get(t["metric"]),
        )
        for name, t in tasks.items()
    ]
    a = report.get("average", {})
    groups.append(("average", a.get("reference"), a.get("student"), a.get("baseline")))
    fig = _figure(14, 3.8)
    grid = fig.add_gridspec(1, 5)
    ax = fig.add_subplot(grid[0, :3])
    x = np.arange(len(groups))
    series = [("teacher(s)", COLORS["teacher"], 1), ("student", COLORS["student"], 2), ("twin", COLORS["twin"], 3)]
    width = 0.8 / len(series)
    for j, (label, color, col) in enumerate(series):
        values = [g[col] for g in groups]
        if all(v is None for v in values):
            continue
        rects = ax.bar(
            x + (j - (len(series) - 1) / 2) * width,
            [100 * v if v is not None else 0 for v in values],
            width,
            label=label,
            color=color,
        )
        ax.bar_label(rects, labels=["" if v is None else f"{100 * v:.1f}" for v in values], fontsize=7, padding=1)
    ax.set_xticks(x, [g[0] for g in groups], fontsize=8)
    ax.set_ylabel("score x100")
    ax.set_title("dev score per task", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    ax.margins(y=0.12)
    t, s = report.get("teachers", {}), report["student"]
    speed = fig.add_subplot(grid[0, 3])
    _bar_panel(
        speed,
        "latency, batch 1 (ms)",
        [
            ("teacher", COLORS["teacher"], t.get("latency_ms_batch1")),
            ("student", COLORS["student"], s.get("latency_ms_batch1")),
        ],
        ".2f",
    )
    size = fig.add_subplot(grid[0, 4])
    _bar_panel(
        size,
        "parameters (M)",
        [
            ("teachers", COLORS["teacher"], (t.get("params_total") or 0) / 1e6 or None),
            ("student", COLORS["student"], (s.get("params") or 0) / 1e6 or None),
        ],
        ".1f",
    )
    return _png(fig)


@_with_fonts
def confusion_png(title: str, labels: Sequence[str], matrix: Sequence[Sequence[int]]) -> bytes:
    """A confusion matrix: rows gold, columns predicted; colour = share of the gold row, text = count."""
    import numpy as np

    counts = np.asarray(matrix, dtype=float)
    rows = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    n = len(labels)
    side = min(max(4.2, 0.55 * n + 2.5), 11)
    fig = _figure(side + 1.2, side)
    ax = fig.subplots()
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, label="share of the gold label", shrink=0.8)
    names = tick_names(labels)[0]
    ax.set_xticks(range(n), names, rotation=45 if n > 4 else 0, ha="right" if n > 4 else "center", fontsize=8)
    ax.set_yticks(range(n), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    ax.set_title(title, fontsize=10)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                ax.text(
                    j,
                    i,
                    f"{int(counts[i, j])}",
                    ha="center",
                    va="center",
                    fontsize=8 if n <= 10 else 6,
                    color="white" if shares[i, j] > 0.55 else "black",
                )
    return _png(fig)


def confusion_matrix(logits: Any, labels: Sequence[Any], names: Sequence[str]) -> dict[str, Any] | None:
    """The confusion matrix of a model's dev predictions, as ``metrics.json`` stores it (``report[side]["confusion"]``):
    ``{"labels": names, "matrix": [[count]]}``, rows gold, columns the argmax prediction.

    ``logits``: ``[N, C]`` (sentence classification; ``labels`` the class ids) or ``[N, L, C]`` (token
    classification; ``labels[i]`` the tag id per token, ``IGNORE_INDEX`` where no tag is read: the matrix counts each
    scored word once; words cut by truncation are not counted). Regression and multi-label have no confusion matrix:
    None."""
    import torch

    from textdistill.metrics import word_predictions

    logits = torch.as_tensor(logits)
    if len(labels) == 0 or logits.dim() not in (2, 3) or logits.shape[-1] < 2:
        return None
    n = len(names)
    if logits.shape[-1] != n:
        raise ValueError(f"{logits.shape[-1]} logits per prediction for {n} label names")
    if logits.dim() == 3:
        pairs = word_predictions(logits, labels)
        gold = torch.tensor([t for g, _ in pairs for t in g], dtype=torch.long)
        pred = torch.tensor([t for _, p in pairs for t in p], dtype=torch.long)
    else:
        gold = torch.as_tensor(list(labels))
        if gold.is_floating_point() or gold.dim() != 1:  # regression scores or multi-hot rows
            return None
        pred = logits.argmax(-1)
    matrix = torch.zeros(n, n, dtype=torch.long)
    matrix.index_put_((gold.long(), pred.long()), torch.ones_like(gold, dtype=torch.long), accumulate=True)
    return {"labels": [str(x) for x in names], "matrix": matrix.tolist()}


# --------------------------------------------------------------------------------------------------------------------
# HTML


def _img(png: bytes, alt: str, ident: str, caption: str = "") -> str:
    data = base64.b64encode(png).decode("ascii")
    cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    return (
        f'<figure id="{html.escape(ident)}"><img src="data:image/png;base64,{data}" '
        f'alt="{html.escape(alt)}">{cap}</figure>'
    )


def _inline(text: str) -> str:
    """Escape, then Markdown code spans as <code>."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def _numeric(cell: str) -> bool:
    return bool(re.fullmatch(r"[-+]?[\d.,]+x?%?|-", cell.strip()))


def html_table(rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join(
        "<tr>"
        + "".join(f'<td class="num">{html.escape(c)}</td>' if _numeric(c) else f"<td>{html.escape(c)}</td>" for c in r)
        + "</tr>"
        for r in rows[1:]
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def markdown_to_html(text: str) -> str:
    """The subset of Markdown the reports write: headings, bullet lists, pipe tables, paragraphs, code spans."""
    out: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].rstrip()
        if not line.strip():
            i += 1
        elif line.startswith("#"):
            level = min(len(line) - len(line.lstrip("#")) + 1, 6)  # the page's own <h1> is the title
            out.append(f"<h{level}>{_inline(line.lstrip('#').strip())}</h{level}>")
            i += 1
        elif line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                cells = [c.strip() for c in lines[i].strip().strip("|").split("|")]
                if not all(re.fullmatch(r":?-+:?", c) for c in cells):
                    rows.append(cells)
                i += 1
            out.append(html_table(rows))
        elif line.startswith("- "):
            items = []
            while i < len(lines) and lines[i].startswith("- "):
                items.append(f"<li>{_inline(lines[i][2:])}</li>")
                i += 1
            out.append("<ul>" + "".join(items) + "</ul>")
        else:
            out.append(f"<p>{_inline(line)}</p>")
            i += 1
    return "\n".join(out)


def _page(title: str, subtitle: str, body: list[str]) -> str:
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{html.escape(title)}</title>",
            f"<style>{CSS}</style>",
            "</head>",
            "<body>",
            f"<h1>{html.escape(title)}</h1>",
            f'<p class="sub">{html.escape(subtitle)}</p>',
            *body,
            "</body>",
            "</html>",
            "",
        ]
    )


def _curves_section(run: Path, report: dict[str, Any]) -> list[str]:
    out = ["<h2>Training curves</h2>"]
    models = log_models(run)
    if not models:
        return out + ['<p class="note">No training logs in logs/.</p>']
    for model in models:
        train, evals = read_log(run / "logs" / f"{model}.jsonl")
        if not train and not evals:
            out.append(f'<p class="note">{html.escape(model)}: empty log.</p>')
            continue
        side = report.get(model) if model in ("teacher", "student", "baseline") else None
        best = side.get("best_step") if isinstance(side, dict) else None
        title = MODEL_TITLES.get(model, model)
        png = curves_png(
            title,
            train,
            evals,
            eval_keys(report, model, evals),
            best if isinstance(best, int) else None,
            eval_axis(report),
        )
        terms = ", ".join(loss_terms(train)) or "none"
        out.append(
            _img(
                png,
                f"training curves: {model}",
                f"curves-{model}",
                f"{title}: loss terms ({terms}) per logged step; eval metric on the dev set (dashed: the step kept).",
            )
        )
    return out


def _confusion_section(report: dict[str, Any]) -> list[str]:
    out = ["<h2>Confusion matrix</h2>"]
    found = False
    for side, name in (
        ("teacher", "teacher"),
        ("student", "student (distilled)"),
        ("baseline", "student (no distillation)"),
    ):
        entry = report.get(side)
        conf = entry.get("confusion") if isinstance(entry, dict) else None
        if not conf:
            continue
        labels, matrix = conf.get("labels"), conf.get("matrix")
        n = len(labels) if isinstance(labels, list) else 0
        if (
            not n
            or not isinstance(matrix, list)
            or len(matrix) != n
            or any(not isinstance(r, list) or len(r) != n for r in matrix)
        ):
            out.append(
                f'<p class="note">{html.escape(name)}: the confusion matrix in metrics.json is malformed; not '
                f"drawn.</p>"
            )
            continue
        found = True
        total = sum(sum(r) for r in matrix)
        validation = display_name(str(report.get("data", {}).get("validation", "the dev set")))
        title = (
            f"{name} on {validation} ({total} "
            f"{'words' if report.get('data', {}).get('task_type') == 'token_classification' else 'examples'})"
        )
        out.append(
            _img(
                confusion_png(title, [str(x) for x in labels], matrix),
                f"confusion matrix: {side}",
                f"confusion-{side}",
                " ".join(
                    filter(
                        None,
                        [
                            "Rows: gold label; columns: predicted; colour: share of the row; numbers: counts.",
                            tick_names([str(x) for x in labels])[1],
                        ],
                    )
                ),
            )
        )
    if not found:
        task = report.get("data", {}).get("task_type", "classification")
        why = (
            "regression has no confusion matrix"
            if task == "regression"
            else "multi-label runs have no confusion matrix"
            if task == "multi_label"
            else "metrics.json holds no confusion matrix for this run"
        )
        out.append(f'<p class="note">Not drawn: {why}.</p>')
    return out


# Each kind of run's page: its title and the renderer of its Markdown report (classification runs have no kind).
PAGES: dict[str | None, tuple[str, Callable[[dict[str, Any]], str]]] = {
    None: ("Distillation report", render_report),
    "multitask": ("Task distillation report", render_multitask_report),
    "generative": ("Generative distillation report", render_generative_report),
}


def _bars_figure(report: dict[str, Any]) -> str:
    """The teacher-vs-student figure of the run's kind."""
    kind = report.get("kind")
    note = speed_note(report)  # the bars of latency and throughput are drawn; their ratio is not to be read off them
    busy = f" Latency and throughput: {note}." if note else ""
    if kind == "multitask":
        return _img(
            multitask_bars_png(report),
            "bars: teacher vs student per task",
            "bars",
            "Dev score x100 per task; latency of one teacher vs the student; parameters of all teachers vs "
            "the one student." + busy,
        )
    if kind == "generative":
        return _img(
            generative_bars_png(report),
            "bars: teacher vs student",
            "bars",
            "Perplexity of the validation completions (lower is better); agreement: how often the model's "
            "most probable "
            "next token is the teacher's; tokens/s: greedy generation at batch 1. The twin is the student "
            "trained "
            "without distillation.",
        )
    return _img(
        bars_png(report),
        "bars: teacher vs student",
        "bars",
        "The twin (the student trained without distillation) has the student's architecture: same "
        "parameters, size and speed." + busy,
    )


def render_html(run_folder: str | os.PathLike) -> str:
    """The run's page as one self-contained HTML document (nothing is fetched: images are data URIs, CSS inline)."""
    run = Path(run_folder)
    report = load_report(run)
    kind = report.get("kind")
    title, render = PAGES.get(kind, PAGES[None])
    markdown = render(report)
    name = run.name.removesuffix(".partial")
    machine = report.get("machine", {})
    minutes = report.get("total_seconds")
    subtitle = (
        f"run {name}"
        + (f"; {minutes / 60:.1f} min" if isinstance(minutes, (int, float)) else "")
        + (
            f"; {machine.get('processor', '')}, {machine.get('torch_threads', '?')} threads, {machine.get('date', '')}"
            if machine
            else ""
        )
    )
    body = [markdown_to_html(re.sub(r"\A# .*\n", "", markdown))]  # its title is the page's
    body += ["<h2>Teacher vs student</h2>", _bars_figure(report)]
    body += _curves_section(run, report)
    if kind not in ("multitask", "generative"):  # a classification run (a language model predicts no labels)
        body += _confusion_section(report)
    return _page(title, subtitle, body)


def write_atomic(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


def write_html(run_folder: str | os.PathLike) -> Path:
    """Render the run's page into ``<run>/report.html`` (written to a temporary file, then renamed)."""
    return write_atomic(Path(run_folder) / "report.html", render_html(run_folder))


def write_html_or_warn(run_folder: str | os.PathLike) -> Path | None:
    """:func:`write_html`, for the end of a run: a failure (a bug, matplotlib missing) warns on one line of stderr and
    never fails the run that trained."""
    try:
        return write_html(run_folder)
    except Exception as exc:  # noqa: BLE001 - the models and metrics are saved; the page is a convenience
        message = " ".join(str(exc).split())
        print(f"warning: report.html not written ({type(exc).__name__}: {message})", file=sys.stderr)
        return None


# --------------------------------------------------------------------------------------------------------------------
# textdistill report RUN...: compare runs


def _generative_recipe(g: dict[str, Any]) -> list[str]:
    """A generative run's objective in short: the token-level divergence, then what feeds it."""
    parts = [f"{g.get('divergence')} T={g.get('temperature')} a={g.get('alpha')}"] if g.get("token_level", True) else []
    if g.get("teacher_cache"):
        parts.append("+ top-k cache")
    if g.get("sequence_kd"):
        parts.append("+ sequence KD" if parts else "sequence KD")
    if g.get("on_policy"):
        parts.append(f"+ on-policy lambda={g['on_policy']}")
    return parts


def _recipe(report: dict[str, Any]) -> str:
    s, k = report["student"], report.get("distill", {})
    what = (
        f"layers {s['layers']}"
        if "layers" in s
        else f"config {s['config_overrides']}"
        if "config_overrides" in s
        else str(s.get("recipe", "student"))
    )
    if report.get("kind") == "multitask":
        return f"{what}, {len(report.get('tasks', {}))} tasks"
    if report.get("kind") == "generative":
        return ", ".join([what, *_generative_recipe(report.get("generative", {}))])
    parts = [what]
    if k.get("token_targets") == "pseudo_labels":
        parts.append("teacher's tags (pseudo labels)")
    elif report.get("data", {}).get("task_type") == "regression":
        parts.append(f"mse a={k.get('alpha')}")
    elif "loss" in k:
        parts.append(f"{k['loss']} T={k.get('temperature')} a={k.get('alpha')}")
    matches = [m for m in s.get("intermediate") or [] if isinstance(m, dict)]
    if matches:
        kinds = [f"{m.get('feature', '?')} {m.get('loss', '?')}" for m in matches]
        parts.append("+ " + " + ".join(f"{kind} x{kinds.count(kind)}" for kind in dict.fromkeys(kinds)))
    if k.get("minilm"):
        parts.append("+ MiniLM relations")
    if k.get("intermediate_epochs"):
        parts.append(f"two stages ({k['intermediate_epochs']} epochs intermediate first)")
    if "transfer" in report.get("data", {}):
        parts.append("+ transfer set")
    return ", ".join(parts)


def ms_per_token(entry: dict[str, Any]) -> float | None:
    """A generative model's latency: milliseconds per generated token (``ms_per_token``, else 1000 / tokens per
    second)."""
    given, rate = _value(entry, "ms_per_token"), _value(entry, "tokens_per_second")
    return given if given is not None else (1000 / rate if rate else None)


def run_summary(run: str, report: dict[str, Any]) -> dict[str, Any]:
    """What the comparison needs of one run: its student (score, retained, size, speed) and its teacher. A generative
    run's score is the student's next-token agreement with the teacher (the teacher's own: 1), its latency the ms per
    generated token and its throughput tokens/s (greedy, batch 1); it has no "% of teacher"."""
    s = report["student"]
    generative = report.get("kind") == "generative"
    latency, throughput = s.get("latency_ms_batch1"), s.get("throughput_batch32")
    if report.get("kind") == "multitask":
        a, t = report.get("average", {}), report.get("teachers", {})
        metric, score, retained = "average", a.get("student"), a.get("student_retained_pct")
        teacher = {
            "name": f"{t.get('count', '?')} teachers",
            "score": a.get("reference"),
            "latency": t.get("latency_ms_batch1"),
        }
    elif generative:
        t = report["teacher"]
        metric, score, retained = "next-token agreement", s.get("agreement"), None
        latency, throughput = ms_per_token(s), s.get("tokens_per_second")
        teacher = {
            "name": display_name(str(t.get("model", "teacher"))),
            "score": None if score is None else 1.0,
            "latency": ms_per_token(t),
        }
    else:
        t = report["teacher"]
        metric = report["metric"]
        score, retained = s["metrics"].get(metric), s.get("retained_pct")
        teacher = {
            "name": display_name(str(t.get("model", "teacher"))),
            "score": t["metrics"].get(metric),
            "latency": t.get("latency_ms_batch1"),
        }
    machine = report.get("machine", {})
    return {
        "run": display_name(os.path.abspath(run)) if os.path.isabs(run) else os.path.normpath(run),
        "recipe": _recipe(report),
        "metric": metric,
        "score": score,
        "retained": retained,
        "params": s.get("params"),
        "size": s.get("size_bytes"),
        "latency": latency,
        "throughput": throughput,
        "teacher": teacher,
        "twin": twin_summary(report, metric, latency, throughput),
        "generative": generative,
        "machine": f"{machine.get('processor', '?')}, {machine.get('torch_threads', '?')} threads",
    }


def twin_summary(
    report: dict[str, Any], metric: str, latency: float | None, throughput: float | None
) -> dict[str, Any] | None:
    """The run's twin (the student trained without distillation, ``report["baseline"]``): its score and retained
    share; it has the student's architecture, so the student's size and speed (a generative twin's own generation
    speed where it was timed). None when the run trained no twin."""
    b = report.get("baseline")
    if not isinstance(b, dict):
        return None
    if report.get("kind") == "multitask":
        a = report.get("average", {})
        if a.get("baseline") is None:
            return None
        return {
            "score": a.get("baseline"),
            "retained": a.get("baseline_retained_pct"),
            "latency": latency,
            "throughput": throughput,
        }
    if report.get("kind") == "generative":
        own = ms_per_token(b)
        return {
            "score": b.get("agreement"),
            "retained": None,
            "latency": own if own is not None else latency,
            "throughput": b.get("tokens_per_second", throughput),
        }
    return {
        "score": b.get("metrics", {}).get(metric),
        "retained": b.get("retained_pct"),
        "latency": latency,
        "throughput": throughput,
    }


def pareto(summaries: list[dict[str, Any]]) -> set[int]:
    """The students no other beats on both the score (higher) and the latency (lower): the ones worth shipping."""
    ok = [i for i, r in enumerate(summaries) if r["score"] is not None and r["latency"] is not None]
    return {
        i
        for i in ok
        if not any(
            summaries[j]["score"] >= summaries[i]["score"]
            and summaries[j]["latency"] <= summaries[i]["latency"]
            and (summaries[j]["score"], summaries[j]["latency"]) != (summaries[i]["score"], summaries[i]["latency"])
            for j in ok
        )
    }


def compare_rows(summaries: list[dict[str, Any]]) -> list[list[str]]:
    metrics = {r["metric"] for r in summaries}
    same = len(metrics) == 1
    front = pareto(summaries) if same else set()
    head = [
        "run",
        "student recipe",
        next(iter(metrics)) if same else "metric",
        "% of teacher",
        "params (M)",
        "size (MB)",
        "latency b1 (ms)",
        "throughput b32 (/s)",
    ] + (["Pareto-optimal"] if same else [])

    def num(x: Any, fmt: str, scale: float = 1.0) -> str:
        return "-" if not isinstance(x, (int, float)) else format(x * scale, fmt)

    def row(run: str, recipe: str, r: dict[str, Any], metric: str, optimal: str) -> list[str]:
        score = num(r["score"], ".2f", 100)
        return [
            run,
            recipe,
            score if same else f"{metric} {score}",
            num(r["retained"], ".1f"),
            num(r.get("params"), ".1f", 1e-6),
            num(r.get("size"), ".1f", 1e-6),
            num(r["latency"], ".2f"),
            num(r["throughput"], ".0f"),
        ] + ([optimal] if same else [])

    rows = [head]
    for i, r in enumerate(summaries):
        rows.append(row(r["run"], r["recipe"], r, r["metric"], "yes" if i in front else "-"))
        if r.get("twin"):  # the same student on the labels alone: same size and speed, the score without distillation
            twin = {**r["twin"], "params": r["params"], "size": r["size"]}
            rows.append(row(f"{r['run']} (twin)", "same student, no distillation", twin, r["metric"], "-"))
    return rows


def short_names(runs: Sequence[str]) -> list[str]:
    """Run names for the plot: without the folder the runs share (``a/b/x``, ``a/b/y`` -> ``x``, ``y``)."""
    parts = [Path(r).parts for r in runs]
    common = 0
    while len(runs) > 1 and all(len(p) > common + 1 and p[common] == parts[0][common] for p in parts):
        common += 1
    return [str(Path(*p[common:])) for p in parts]


# Where a point's label may go, in points from the point: right, left, above, below, then further out (with a leader
# line from the label to its point).
_OFFSETS = [
    (6, 3, "left", "bottom"),
    (6, -3, "left", "top"),
    (-6, 3, "right", "bottom"),
    (-6, -3, "right", "top"),
    (0, 8, "center", "bottom"),
    (0, -8, "center", "top"),
] + [
    (sx * dx, sy * dy, "left" if sx > 0 else "right", "bottom" if sy > 0 else "top")
    for dx, dy in ((16, 18), (28, 30), (40, 8), (44, 42), (60, 20), (30, 60))
    for sy in (1, -1)
    for sx in (1, -1)
]
_LEADER = 6  # offsets from this index on get a leader line


def _label_points(fig: Any, ax: Any, labels: list[tuple[float, float, str, Any]]) -> None:
    """Label each point (x, y, text, colour) where the text overlaps no other label or point and stays inside the axes;
    where no place is free, the one that overlaps least."""
    fig.canvas.draw()  # the final layout: label extents are measured where they will be drawn
    fig.set_layout_engine("none")
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    pad = 5 * fig.dpi / 72
    dots = [ax.transData.transform((x, y)) for x, y, _, _ in labels]
    placed = [(d[0] - pad, d[1] - pad, d[0] + pad, d[1] + pad) for d in dots]

    def overlap(b: tuple[float, float, float, float]) -> float:
        area = 0.0
        for o in placed:
            w, h = min(b[2], o[2]) - max(b[0], o[0]), min(b[3], o[3]) - max(b[1], o[1])
            if w > 0 and h > 0:
                area += w * h
        outside = b[0] < frame.x0 or b[2] > frame.x1 or b[1] < frame.y0 or b[3] > frame.y1
        return area + (1e9 if outside else 0.0)

    for x, y, text, color in labels:
        best = None
        for k, (dx, dy, ha, va) in enumerate(_OFFSETS):
            leader = (
                {"arrowprops": {"arrowstyle": "-", "color": "#aaa", "linewidth": 0.6, "shrinkA": 1, "shrinkB": 4}}
                if k >= _LEADER
                else {}
            )
            note = ax.annotate(
                text,
                (x, y),
                xytext=(dx, dy),
                textcoords="offset points",
                ha=ha,
                va=va,
                fontsize=8,
                color=color,
                **leader,
            )
            e = note.get_window_extent(renderer)
            box = (e.x0 - 1, e.y0 - 1, e.x1 + 1, e.y1 + 1)
            cost = overlap(box)
            if best is None or cost < best[0]:
                if best is not None:
                    best[1].remove()
                best = (cost, note, box)
            else:
                note.remove()
            if cost == 0:
                break
        assert best is not None
        placed.append(best[2])


def _darker(color: Any, by: float = 0.35) -> tuple[float, float, float]:
    """The colour mixed with black: a point's label in its colour, readable on white."""
    from matplotlib.colors import to_rgb

    return tuple(c * (1 - by) for c in to_rgb(color))  # type: ignore[return-value]


# The scatter's x label, by which kinds of run it holds (generative or not).
LATENCY_AXIS = {
    frozenset({False}): "latency, batch 1 (ms, CPU)",
    frozenset({True}): "latency per generated token, greedy, batch 1 (ms)",
    frozenset({False, True}): "latency, batch 1 (ms; generative runs: per generated token)",
}


@_with_fonts
def scatter_png(summaries: list[dict[str, Any]]) -> bytes:
    """Student score x100 against latency at batch 1 (ms), one labelled point per run; each teacher a square (at the
    median of its measurements, the bar spanning them); the Pareto front dashed (when the runs share a metric)."""
    import statistics

    fig = _figure(11, 6.5)
    ax = fig.subplots()
    palette = [f"C{i}" for i in range(10)] if len(summaries) <= 10 else [f"tab20:{i}" for i in range(20)]
    names = short_names([r["run"] for r in summaries])
    labels: list[tuple[float, float, str, Any]] = []
    teachers: dict[tuple[str, float], list[tuple[str, float]]] = {}  # (model, score) -> (run, latency) of each run
    twins = False
    for i, r in enumerate(summaries):
        color = palette[i % len(palette)]
        if color.startswith("tab20:"):
            from matplotlib import colormaps

            color = colormaps["tab20"](int(color[6:]))
        if r["score"] is not None and r["latency"] is not None:
            ax.scatter(
                [r["latency"]], [100 * r["score"]], s=60, color=color, zorder=3, edgecolor="white", linewidth=0.5
            )
            labels.append((r["latency"], 100 * r["score"], names[i], _darker(color)))
        w = r.get("twin") or {}
        if (
            w.get("score") is not None and w.get("latency") is not None
        ):  # the twin: a hollow triangle in the run's colour
            twins = True
            ax.scatter(
                [w["latency"]],
                [100 * w["score"]],
                s=55,
                marker="v",
                facecolor="white",
                edgecolor=color,
                linewidth=1.5,
                zorder=3,
            )
            if r["score"] is not None and r["latency"] is not None:  # what distillation bought: student to twin, dotted
                ax.plot(
                    [r["latency"], w["latency"]],
                    [100 * r["score"], 100 * w["score"]],
                    linestyle=":",
                    color=color,
                    linewidth=1,
                    zorder=2,
                )
            labels.append((w["latency"], 100 * w["score"], f"{names[i]}: twin", _darker(color)))
        t = r["teacher"]
        if t["score"] is not None and t["latency"] is not None:  # the same teacher, measured again in each run
            teachers.setdefault((t["name"], round(t["score"], 6)), []).append((names[i], t["latency"]))
    xs = [x for x, _, _, _ in labels]
    for (name, score), measured in teachers.items():
        runs, latencies = [m[0] for m in measured], [m[1] for m in measured]
        mid = statistics.median(latencies)
        spread = [[mid - min(latencies)], [max(latencies) - mid]] if len(latencies) > 1 else None
        ax.errorbar(
            [mid], [100 * score], xerr=spread, fmt="s", markersize=8, color="#555", ecolor="#aaa", capsize=3, zorder=3
        )
        who = ", ".join(runs) if len(runs) <= 3 else f"{', '.join(runs[:2])} and {len(runs) - 2} more runs"
        labels.append((mid, 100 * score, f"{who}: teacher ({name})", "#555"))
        xs += latencies
    metrics = sorted({r["metric"] for r in summaries})
    if len(metrics) == 1:
        front = sorted((summaries[i]["latency"], 100 * summaries[i]["score"]) for i in pareto(summaries))
        if len(front) > 1:
            fx, fy = zip(*front)
            ax.plot(
                fx,
                fy,
                linestyle="--",
                color="#999",
                linewidth=1,
                zorder=2,
                label="Pareto front: no student both faster and better",
            )
            ax.legend(fontsize=8, loc="lower right")
    if xs and min(xs) > 0 and max(xs) / min(xs) > 10:
        ax.set_xscale("log")
    ax.set_xlabel(LATENCY_AXIS[frozenset(r["generative"] for r in summaries)])
    ax.set_ylabel(f"{' / '.join(metrics)} x100 (dev)")
    ax.set_title(
        f"students (circles){', their twins without distillation (triangles)' if twins else ''} and "
        f"teachers (squares): "
        "up and to the left is better",
        fontsize=11,
    )
    ax.grid(alpha=0.3)
    ax.margins(x=0.25, y=0.12)
    _label_points(fig, ax, labels)
    return _png(fig)


def compare_runs(runs: Sequence[str]) -> tuple[str, str]:
    """``textdistill report RUN...``: the comparison page (HTML) and its table (Markdown)."""
    if not runs:
        raise TextDistillError("report: give at least one run folder")
    summaries = [run_summary(run, load_report(run)) for run in runs]
    rows = compare_rows(summaries)
    table = markdown_table(rows)
    body = [html_table(rows)]
    notes = []
    if len({r["metric"] for r in summaries}) > 1:
        notes.append(
            "The runs use different metrics: scores are not comparable across them, and no Pareto front is drawn."
        )
    machines = sorted({r["machine"] for r in summaries})
    if len(machines) > 1:
        notes.append(
            f"Latencies were measured on different machines or thread counts ({'; '.join(machines)}): "
            f"compare them with care."
        )
    elif not all(r["generative"] for r in summaries):
        notes.append(f"Latency: median of single-example forward passes on {machines[0]}, tokenization excluded.")
    if any(r["generative"] for r in summaries):
        notes.append(
            "Generative runs: the score is the student's next-token agreement with the teacher (the "
            "teacher's own is "
            "100%); latency: ms per generated token and throughput: tokens/s, both of greedy generation at "
            "batch 1 "
            f"(median of the passes{'' if len(machines) > 1 else ' on ' + machines[0]})."
        )
    if any(r.get("twin") for r in summaries):
        notes.append(
            "Twin rows: the run's student architecture trained on the labels alone, without distillation: "
            "what "
            "distillation added is the gap to the row above. The Pareto front is drawn over the distilled "
            "students."
        )
    body += [f'<p class="note">{html.escape(n)}</p>' for n in notes]
    body.append("<h2>Metric against latency</h2>")
    body.append(
        _img(
            scatter_png(summaries),
            "scatter: student metric against latency",
            "scatter",
            "Each run's student (circle, labelled by run), its twin trained without distillation (hollow "
            "triangle, "
            "dotted to its student) and its teacher (square, labelled by the runs it taught); "
            "Pareto-optimal students: no other is both faster and better.",
        )
    )
    page = _page("Run comparison", f"{len(summaries)} runs", body)
    return page, table


def write_compare(runs: Sequence[str], output: str | os.PathLike = "report-compare.html") -> tuple[Path, str]:
    """Write the comparison page to ``output`` (atomically); returns its path and the Markdown table."""
    page, table = compare_runs(runs)
    return write_atomic(Path(output), page), table
