"""The report: what the student kept of the teacher, as a table (Markdown, also printed)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def _mb(n: float | None) -> str:
    return "-" if n is None else f"{n / 1e6:.1f}"


def _num(x: float | None, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def display_name(model: str) -> str:
    """A model as the table shows it: catalogue names and hub ids as given, absolute folders relative to the working
    directory (or their last two parts), so reports carry no machine-specific paths."""
    if not os.path.isabs(model):
        return model
    rel = os.path.relpath(model)
    return rel if not rel.startswith("..") else os.path.join(*Path(model).parts[-2:])


SPREAD_LIMIT_PCT = 25.0  # as textdistill.metrics.SPREAD_LIMIT_PCT, for reports that do not name their limit


def speed_note(report: dict[str, Any]) -> str | None:
    """None when the report's speed-ups can be read as they are; else why not: the teacher's and the student's
    timings varied between rounds by more than the limit (``speed_reliable`` false in metrics.json)."""
    if report.get("speed_reliable", True):
        return None
    limit = report.get("speed_spread_limit_pct", SPREAD_LIMIT_PCT)
    return (
        f"the teacher/student speed ratio varied by more than {limit:.0f}% between rounds (up to "
        f"{report['speed_spread_pct']:.0f}%): the machine was busy; speed-ups are unreliable"
    )


def _form_unreliable(report: dict[str, Any], entry: dict[str, Any]) -> bool:
    """An exported form's throughput against PyTorch's, timed in turns by the export, spread too wide to compare."""
    limit = report.get("speed_spread_limit_pct", SPREAD_LIMIT_PCT)
    base = report["student"].get("deploy", {}).get("pytorch fp32", {})
    return any((e.get("throughput_batch32_spread_pct") or 0.0) > limit for e in (entry, base))


def speed_lines(report: dict[str, Any]) -> list[str]:
    """The sentence under the table: the speed-ups, or why they are not given."""
    note = speed_note(report)
    if note is not None:
        return [f"Speed-up at batch 1 and 32: not given: {note}. Measure again on a quiet machine.", ""]
    return [f"Speed-up at batch 1: {report['speedup_batch1']:.2f}x; at batch 32: {report['speedup_batch32']:.2f}x.", ""]


def spread_text(report: dict[str, Any], first: str = "teacher", second: str = "student") -> str:
    """How the two models' timings were made and how much they varied, as a clause for the report's notes ("" for a
    report made before speeds were timed in rounds). ``first`` / ``second``: their keys in the report."""
    a, b = report.get(first, {}), report.get(second, {})
    if "speed_rounds" not in a or "speed_rounds" not in b:
        return ""

    def pct(e: dict[str, Any], key: str) -> str:
        return _num(e.get(f"{key}_spread_pct"), ".0f") + "%"

    name = first.removesuffix("s")  # "teachers" in a multi-task report: the one whose speed was measured
    return (
        f"{name} and {second} timed in {a['speed_rounds']} alternating rounds, each figure the median of its "
        f"rounds; "
        f"spread between rounds (max - min, % of the median): {name} {pct(a, 'latency_ms_batch1')} at batch 1, "
        f"{pct(a, 'throughput_batch32')} at batch 32; {second} {pct(b, 'latency_ms_batch1')}, "
        f"{pct(b, 'throughput_batch32')}"
        + ("; each speed-up is the median of the rounds' own ratios" if "throughput_batch32_rounds" in a else "")
    )


def macro_f1_beside(report: dict[str, Any]) -> bool:
    """Whether the table shows macro-F1 beside the main metric: sentence classification with more than two classes
    whose main metric is another (accuracy alone hides a class the student stopped predicting)."""
    d = report.get("data", {})
    return (
        d.get("task_type", "classification") == "classification"
        and len(d.get("labels") or []) > 2
        and report["metric"] != "macro_f1"
        and "macro_f1" in report["teacher"].get("metrics", {})
    )


def report_rows(report: dict[str, Any]) -> list[list[str]]:
    metric = report["metric"]
    t, s = report["teacher"], report["student"]
    macro = macro_f1_beside(report)
    rows = [
        [
            "model",
            metric,
            *(["macro-F1"] if macro else []),
            "% of teacher",
            "params (M)",
            "size (MB)",
            "latency b1 (ms)",
            "throughput b32 (/s)",
            "speed-up b32",
        ]
    ]
    reliable = speed_note(report) is None  # else no speed-up: the machine's load made them up

    def row(
        name: str,
        entry: dict[str, Any],
        speed: dict[str, Any] | None,
        retained: float | None,
        ratio: float | None = None,
    ) -> None:
        ratio = speed["throughput_batch32"] / t["throughput_batch32"] if speed and ratio is None else ratio
        rows.append(
            [
                name,
                f"{100 * entry['metrics'][metric]:.2f}",
                *(
                    [_num(100 * entry["metrics"]["macro_f1"] if "macro_f1" in entry["metrics"] else None, ".2f")]
                    if macro
                    else []
                ),
                _num(retained, ".1f"),
                _num(speed["params"] / 1e6 if speed else None, ".1f"),
                _mb(speed["size_bytes"] if speed else None),
                _num(speed["latency_ms_batch1"] if speed else None, ".2f"),
                _num(speed["throughput_batch32"] if speed else None, ".0f"),
                _num(ratio if speed and reliable else None, ".2f")
                + ("x" if speed and reliable and ratio is not None else ""),
            ]
        )

    paired = report.get(
        "speedup_batch32"
    )  # the median of the per-round ratios (metrics.speedups), as the headline says
    row(f"teacher ({display_name(t['model'])})", t, t, 100.0)
    row("student (distilled)", s, s, s.get("retained_pct"), paired)
    if "baseline" in report:
        # the twin has the student's architecture: same size and speed
        row("student (no distillation)", report["baseline"], s, report["baseline"].get("retained_pct"), paired)
    if "baseline_pretrained" in report:
        row(
            "student (no distillation, pretrained init)",
            report["baseline_pretrained"],
            s,
            report["baseline_pretrained"].get("retained_pct"),
            paired,
        )
    teacher_score = t["metrics"][metric]
    for form, entry in s.get("deploy", {}).items():
        if form != "pytorch fp32":
            speed = {**entry, "params": s["params"]}
            # against the teacher through two ratios each timed in turns: the form vs PyTorch (the export's rounds),
            # PyTorch vs the teacher (the report's rounds); not the form's timing against the teacher's, made apart
            ratio = (
                (
                    None
                    if _form_unreliable(report, entry)
                    else entry["throughput_vs_pytorch"] * (paired or s["throughput_batch32"] / t["throughput_batch32"])
                )
                if "throughput_vs_pytorch" in entry
                else None
            )
            row(
                f"student ({form})",
                entry,
                speed,
                100 * entry["metrics"][metric] / teacher_score if teacher_score else None,
                ratio,
            )
    return rows


def markdown_table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def _transfer_line(t: dict[str, Any]) -> str:
    sources = ", ".join(f"{n} {k}" for k, n in t["kept_by_source"].items())
    dropped = sum(t["dropped"].values())
    return (
        f"- data distillation: the student learnt from {t['kept']} teacher-labelled texts ({sources}; "
        f"{dropped} dropped by the filters) in {display_name(t['path'])}; the twin from the labelled examples "
        f"alone"
    )


def vocabulary_lines(student: dict[str, Any]) -> list[str]:
    """One line on the student's pruned vocabulary (``student.prune_vocabulary``), when it has one."""
    v = student.get("vocabulary")
    if not v:
        return []
    return [
        f"- vocabulary pruned to the pieces of the run's text: {v['vocab_before']:,} -> {v['vocab_after']:,} "
        f"{v['tokenizer_model']} pieces, {v['params_removed']:,} parameters removed "
        f"({100 * v['params_removed'] / v['params_before']:.0f}% of the student's; same segmentation and outputs "
        f"on that text)"
    ]


TASK_TAGS = {"token_classification": "token-classification"}  # HF pipeline tags (the rest: text-classification)


def loss_text(k: dict[str, Any], task_type: str, ce: str = "CE") -> str:
    """The distillation loss in words, as the task computes it (losses.distillation_loss)."""
    if task_type == "regression":
        return f"alpha={k['alpha']} * MSE(teacher scores) + (1-alpha) * MSE(gold scores)"
    if k["loss"] == "mse":
        return f"alpha={k['alpha']} * MSE(logits) + (1-alpha) * {ce}"
    if task_type == "multi_label":
        return (
            f"alpha={k['alpha']} * T^2 * binary KL per label (sigmoid_T) + (1-alpha) * binary {ce}, "
            f"T={k['temperature']}"
        )
    where = " per labelled token (padding and later word pieces masked)" if task_type == "token_classification" else ""
    return f"alpha={k['alpha']} * T^2 * KL(teacher_T || student_T) + (1-alpha) * {ce}{where}, T={k['temperature']}"


def _class_f1s(conf: Any, labels: list[str] | None = None) -> tuple[list[str], list[int], list[float]] | None:
    """A confusion matrix's classes, support (gold count) and F1 per class (0 where a class is neither predicted nor
    gold, as :func:`textdistill.metrics.classification_metrics` counts it); None when malformed or over other labels."""
    if not isinstance(conf, dict):
        return None
    names, matrix = conf.get("labels"), conf.get("matrix")
    n = len(names) if isinstance(names, list) else 0
    if (
        not n
        or not isinstance(matrix, list)
        or len(matrix) != n
        or any(not isinstance(r, list) or len(r) != n for r in matrix)
    ):
        return None
    if labels is not None and [str(x) for x in names] != labels:
        return None
    support = [int(sum(r)) for r in matrix]
    predicted = [sum(r[j] for r in matrix) for j in range(n)]
    f1 = [2 * matrix[i][i] / (support[i] + predicted[i]) if support[i] + predicted[i] else 0.0 for i in range(n)]
    return [str(x) for x in names], support, f1


def per_type_table(report: dict[str, Any]) -> list[str]:
    """F1 per class, one row per class (the table reads top to bottom for any number of classes): token
    classification's entity types (``f1_<TYPE>`` in each model's metrics), or a sentence classifier's classes when it
    has more than two, from the confusion matrices in metrics.json (``report[side]["confusion"]``), with each class's
    support (its gold examples). Columns: the teacher, the student and its twin, those that have the figures. Empty
    otherwise."""
    sides = [
        (name, report[key])
        for key, name in (("teacher", "teacher"), ("student", "student"), ("baseline", "twin"))
        if isinstance(report.get(key), dict)
    ]
    kinds = sorted(k[3:] for k in report["teacher"].get("metrics", {}) if k.startswith("f1_"))
    if kinds:
        rows = [["type", *(f"{name} F1" for name, _ in sides)]]
        rows += [[k, *(f"{100 * e.get('metrics', {}).get('f1_' + k, 0.0):.2f}" for _, e in sides)] for k in kinds]
        return ["Entity F1 per type:", "", markdown_table(rows), ""]
    if report.get("data", {}).get("task_type", "classification") != "classification":
        return []
    first = next((f for f in (_class_f1s(e.get("confusion")) for _, e in sides) if f is not None), None)
    if first is None or len(first[0]) <= 2:
        return []
    names, support = first[0], first[1]
    scored = [(name, f[2]) for name, e in sides if (f := _class_f1s(e.get("confusion"), names)) is not None]
    rows = [["class", "support", *(f"{name} F1" for name, _ in scored)]]
    rows += [[c, str(support[i]), *(f"{100 * f1[i]:.2f}" for _, f1 in scored)] for i, c in enumerate(names)]
    return ["F1 per class (dev set):", "", markdown_table(rows), ""]


def test_lines(report: dict[str, Any]) -> list[str]:
    """The held-out test split's scores (``data.test_file``), when the run has one."""
    if "test_metrics" not in report["teacher"]:
        return []
    m = report["metric"]
    parts = [f"teacher {100 * report['teacher']['test_metrics'][m]:.2f}"]
    for side, name in (("student", "student"), ("baseline", "no-distillation twin")):
        if side in report:
            parts.append(
                f"{name} {100 * report[side]['test_metrics'][m]:.2f} "
                f"({_num(report[side]['test_retained_pct'], '.1f')}% of the teacher)"
            )
    return [
        f"Held-out test {display_name(report['data']['test'])} ({report['data']['test_examples']} examples), {m}: "
        + "; ".join(parts)
        + ".",
        "",
    ]


def headline(report: dict[str, Any]) -> str:
    """One sentence on what distillation bought: points over the twin, % of the teacher kept, the speed-up; where it
    hurt or added nothing, why (weak teacher, little data, small student) and the setting to change."""
    metric = report["metric"]
    t, s, b = report["teacher"], report["student"], report.get("baseline")
    ts, ss = 100 * t["metrics"][metric], 100 * s["metrics"][metric]
    kept = s.get("retained_pct")
    speed = (
        (f", at {report['speedup_batch32']:.1f}x the teacher's throughput")
        if speed_note(report) is None and report.get("speedup_batch32")
        else ""
    )
    kept_text = (
        (f"keeps {kept:.1f}% of the teacher's {metric} ({ss:.2f} vs {ts:.2f}){speed}")
        if kept is not None
        else f"scores {ss:.2f}{speed}"
    )
    guard = report.get("guard") or {}
    if guard.get("weak"):  # the guard's verdict stands: % kept of a teacher with nothing to teach means little
        estimate, constant = guard.get("labels_only_estimate", 0.0), guard.get("majority_baseline", -1.0)
        what = (
            f"always answering {guard.get('majority_label')!r} ({100 * constant:.2f})"
            if constant > estimate
            else f"a student trained briefly on the labels alone ({100 * estimate:.2f})"
        )
        final = 100 * guard.get("teacher_after", guard["teacher"])
        return (
            f"The teacher is weak: {final:.2f} {metric} on dev, no better than {what}, so the student (it {kept_text}) "
            "learned from a teacher with little to teach. Train a stronger teacher (a larger model, more data, "
            "teacher.training: more epochs or another learning rate)."
        )
    if b is None:
        return f"The distilled student {kept_text} (no twin was trained: distill.baseline: false)."
    bs = 100 * b["metrics"][metric]
    gain = ss - bs
    pre = report.get("baseline_pretrained")
    whole = (
        ""
        if pre is None
        else (
            f" Against the same layers of the pretrained checkpoint trained on the labels "
            f"alone "
            f"({100 * pre['metrics'][metric]:.2f}), the whole teacher (fine-tuned weights "
            f"and soft targets) "
            f"adds {ss - 100 * pre['metrics'][metric]:+.2f} points."
        )
    )
    if gain >= 0.5:
        return (
            f"Distillation paid: the student {kept_text} and beats its twin trained on the labels alone by "
            f"{gain:.2f} points.{whole}"
        )
    n = report["data"].get("train_examples", 0)
    if ts <= bs + 0.5:
        why = (
            f"the teacher ({ts:.2f}) is no better than the student trained on the labels alone ({bs:.2f}): it has "
            f"little to "
            "teach. Train a stronger teacher (a larger model; teacher.training: more epochs or another learning "
            "rate)"
        )
    elif "transfer" not in report["data"]:
        why = (
            f"the teacher is better ({ts:.2f}), but on {n:,} labelled examples the twin, which starts from the "
            f"same teacher "
            "layers, learns nearly as much from the labels; let the teacher label more text (transfer: "
            "unlabeled_file or "
            "variants), or distill a smaller student, where the teacher's soft targets carry more"
        )
    else:
        why = (
            f"the teacher is better ({ts:.2f}) and labelled {report['data']['transfer'].get('kept', 0):,} texts, "
            f"yet the student "
            "did not gain; try intermediate-layer losses (distill.layer_map), a higher distill.temperature or "
            "more epochs"
        )
    verb = "cost" if gain < -0.5 else "added nothing"
    return (
        f"Distillation {verb} here ({gain:+.2f} points against the twin): the student {kept_text}, because "
        f"{why}.{whole}"
    )


def training_lines(report: dict[str, Any]) -> list[str]:
    """How each model was trained: learning rate and where it came from, epochs, why it stopped; the teacher guard."""
    parts = []
    for key, name in (("teacher", "teacher"), ("student", "student"), ("baseline", "twin")):
        tr = report.get(key, {}).get("training")
        if tr:
            source = "chosen by search" if tr.get("learning_rate_from", "").startswith("search") else "from the config"
            parts.append(
                f"{name} lr {tr['learning_rate']:g} ({source}), {tr['epochs']:g} epochs, stopped by {tr['stopped']}"
            )
    lines = [f"- training: {'; '.join(parts)}"] if parts else []
    twins = [
        f"{name}: {report[key]['init']}"
        for key, name in (("baseline", "no distillation"), ("baseline_pretrained", "pretrained init"))
        if "init" in report.get(key, {})
    ]
    if twins:
        lines.append(f"- twins (labels only, the student's shape and budget): {'; '.join(twins)}")
    g = report.get("guard")
    if g:
        state = "weak" if g["weak"] else "clearly better"
        lines.append(
            f"- teacher check: teacher {100 * g['teacher']:.2f} vs {100 * g['labels_only_estimate']:.2f} "
            f"for the student "
            f"trained {g['estimate_steps']} steps on the labels alone: "
            f"{state}" + (f"; {g['action']}" if g.get("action") else "")
        )
    return lines


def render_report(report: dict[str, Any]) -> str:
    if report.get("kind") == "generative":
        return render_generative_report(report)
    d, k, s = report["data"], report["distill"], report["student"]
    recipe = f"layers {s['layers']} of the teacher" if "layers" in s else s.get("recipe", "")
    loss = loss_text(k, d.get("task_type", "classification"))
    lines = [
        "# Distillation report",
        "",
        headline(report),
        "",
        f"- data: {d['train']} ({d['train_examples']} examples) -> {d['validation']} ({d['validation_examples']})",
        *([_transfer_line(d["transfer"])] if "transfer" in d else []),
        f"- student: {recipe}; loss: {loss}",
        *training_lines(report),
        *vocabulary_lines(s),
        f"- latency: median of single-example forward passes; throughput: median batch of 32, CPU, "
        f"{report['machine']['torch_threads']} threads, tokenization "
        f"excluded" + (f"; {spread_text(report)}" if spread_text(report) else ""),
        "",
        markdown_table(report_rows(report)),
        "",
        *speed_lines(report),
        *test_lines(report),
        *per_type_table(report),
    ]
    for form, entry in s.get("deploy", {}).items():
        if form != "pytorch fp32":
            lines.append(
                f"- {form}: largest logit difference from PyTorch {entry['max_abs_logit_diff']:.2g}, "
                f"{report['metric']} {entry['metric_diff_points']:+.2f} points, "
                f"{entry['throughput_vs_pytorch']:.2f}x the PyTorch student's throughput at batch 32"
            )
    if s.get("deploy"):
        lines.append("")
    return "\n".join(lines)


def _score(x: float | None) -> str:
    """A score as the table shows it: percentages for accuracy/F1, correlations x100 as GLUE reports them."""
    return "-" if x is None else f"{100 * x:.2f}"


def multitask_rows(report: dict[str, Any]) -> list[list[str]]:
    """One row per task and the average: teachers (each), ensemble, student, twin, and % of the reference (the
    ensemble where a task has several teachers, else its teacher)."""
    rows = [["task", "metric", "teacher(s)", "ensemble", "student", "% kept", "no-distillation twin", "% kept"]]
    for name, t in report["tasks"].items():
        m = t["metric"]
        base = t.get("baseline", {})
        rows.append(
            [
                name,
                m,
                " / ".join(_score(x["metrics"][m]) for x in t["teachers"]),
                _score(t["ensemble"]["metrics"][m]) if "ensemble" in t else "-",
                _score(t["student"]["metrics"][m]),
                _num(t["student"]["retained_pct"], ".1f"),
                _score(base["metrics"][m]) if base else "-",
                _num(base.get("retained_pct"), ".1f"),
            ]
        )
    a = report["average"]
    rows.append(
        [
            "average",
            "",
            _score(a["reference"]),
            "",
            _score(a["student"]),
            _num(a["student_retained_pct"], ".1f"),
            _score(a.get("baseline")),
            _num(a.get("baseline_retained_pct"), ".1f"),
        ]
    )
    return rows


def render_multitask_report(report: dict[str, Any]) -> str:
    d, s, t = report["distill"], report["student"], report["teachers"]
    recipe = f"layers {s['layers']} of {display_name(s['encoder_from'])}" if "layers" in s else s.get("recipe", "")
    anneal = ", teacher annealing" if d["anneal"] else ""
    sampling = d["sampling"] + (f" (tau={d['tau']})" if d["sampling"] == "size_power" else "")
    lines = [
        "# Task distillation report",
        "",
        f"- one student for {len(report['tasks'])} tasks: {recipe}, a head per task; "
        f"alpha={d['alpha']} * T^2 * KL(fused teachers_T || student_T) + (1-alpha) * gold loss, "
        f"T={d['temperature']}{anneal}; "
        f"regression tasks: MSE to the fused score; task sampling: {sampling}",
        "- scores x100 on each task's dev set (accuracy / F1 / Matthews / correlation); average = mean of the tasks' "
        "scores",
        "",
        markdown_table(multitask_rows(report)),
        "",
        f"Size: the student has {s['params'] / 1e6:.1f} M parameters for every task; the {t['count']} teachers have "
        f"{t['params_total'] / 1e6:.1f} M together.",
        f"Speed (CPU, {report['machine']['torch_threads']} threads, first task's dev examples, tokenization excluded): "
        f"teacher ({display_name(t['speed_of'])}) {t['latency_ms_batch1']:.2f} ms at batch 1, "
        f"{t['throughput_batch32']:.0f}/s at "
        f"batch 32; student {s['latency_ms_batch1']:.2f} ms, {s['throughput_batch32']:.0f}/s "
        + (
            f"({report['speedup_batch1']:.2f}x / {report['speedup_batch32']:.2f}x)."
            if speed_note(report) is None
            else f"(speed-ups not given: {speed_note(report)})."
        )
        + (f" The {spread_text(report, 'teachers')}." if spread_text(report, "teachers") else ""),
        "",
    ]
    return "\n".join(lines)


def model_card(report: dict[str, Any]) -> str:
    """The student folder's README.md in the HF model-card format (YAML metadata, then what it was distilled from,
    on what data, with which loss, and its scores next to the teacher's and its twin's)."""
    import yaml

    d, k, s, t = report["data"], report["distill"], report["student"], report["teacher"]
    metric = report["metric"]
    task_type = d.get("task_type", "classification")
    tag = TASK_TAGS.get(task_type, "text-classification")
    auto = (
        "AutoModelForTokenClassification"
        if task_type == "token_classification"
        else "AutoModelForSequenceClassification"
    )
    meta: dict[str, Any] = {
        "library_name": "transformers",
        "pipeline_tag": tag,
        "tags": ["textdistill", "knowledge-distillation"],
    }
    if not os.path.exists(t["model"]):  # a hub id or catalogue name, not a local folder: the card may name it
        meta["base_model"] = t["model"]
    meta["model-index"] = [
        {
            "name": "student",
            "results": [
                {
                    "task": {"type": tag},
                    "dataset": {"name": display_name(d["train"]), "type": tag},
                    "metrics": [
                        {"type": metric, "value": round(float(s["metrics"][metric]), 4), "name": f"dev {metric}"}
                    ],
                }
            ],
        }
    ]
    recipe = f"layers {s['layers']} of the teacher" if "layers" in s else s.get("recipe", "")
    loss = loss_text(k, task_type, "cross-entropy")
    extra = [f"- intermediate terms: {len(s['intermediate'])} layer matches"] if s.get("intermediate") else []
    extra += vocabulary_lines(s)
    if "transfer" in d:
        extra.append(
            f"- data distillation: trained on {d['transfer']['kept']} teacher-labelled texts "
            f"({', '.join(f'{n} {c}' for c, n in d['transfer']['kept_by_source'].items())})"
        )
    lines = [
        "---",
        yaml.safe_dump(meta, sort_keys=False).rstrip(),
        "---",
        "",
        "# Distilled student",
        "",
        f"Distilled with textdistill from `{display_name(t['model'])}` on {display_name(d['train'])} "
        f"({d['train_examples']} examples; labels {', '.join(map(str, d['labels']))}), scored on "
        f"{display_name(d['validation'])} "
        f"({d['validation_examples']} examples).",
        "",
        f"- student: {recipe}, {s['params'] / 1e6:.1f} M parameters (teacher {t['params'] / 1e6:.1f} M)",
        f"- loss: {loss}",
        *extra,
        "",
        markdown_table(report_rows(report)),
        "",
        *test_lines(report),
        *per_type_table(report),
        (
            f"Speed-up over the teacher on CPU ({report['machine']['torch_threads']} threads): "
            f"{report['speedup_batch1']:.2f}x at "
            f"batch 1, {report['speedup_batch32']:.2f}x at batch 32; measured "
            f"{report['machine']['date']}."
            if speed_note(report) is None
            else f"Speed-up over the teacher on CPU: not given: {speed_note(report)} (measured "
            f"{report['machine']['date']})."
        ),
        "",
        "```python",
        f"from transformers import {auto}, AutoTokenizer",
        f"model = {auto}.from_pretrained(PATH)",
        "tokenizer = AutoTokenizer.from_pretrained(PATH)",
        "```",
        "",
    ]
    return "\n".join(lines)


def multitask_model_card(report: dict[str, Any]) -> str:
    """A multi-task student's README.md in the HF model-card format: one result per task (its dev score), the
    teachers each task was distilled from, the loss, and the table with the teachers' and the twin's scores."""
    import yaml

    d, s = report["distill"], report["student"]
    results = [
        {
            "task": {"type": "text-classification", "name": name},
            "dataset": {"name": display_name(t["data"]["validation"]), "type": "text-classification"},
            "metrics": [
                {
                    "type": t["metric"],
                    "value": round(float(t["student"]["metrics"][t["metric"]]), 4),
                    "name": f"dev {t['metric']}",
                }
            ],
        }
        for name, t in report["tasks"].items()
    ]
    meta = {
        "library_name": "transformers",
        "pipeline_tag": "text-classification",
        "tags": ["textdistill", "knowledge-distillation", "multi-task"],
        "model-index": [{"name": "student", "results": results}],
    }
    teachers = "; ".join(
        f"{name}: {', '.join(display_name(x['model']) for x in t['teachers'])}" for name, t in report["tasks"].items()
    )
    recipe = f"layers {s['layers']} of {display_name(s['encoder_from'])}" if "layers" in s else s.get("recipe", "")
    lines = [
        "---",
        yaml.safe_dump(meta, sort_keys=False).rstrip(),
        "---",
        "",
        "# Distilled multi-task student",
        "",
        f"One encoder with a head per task ({', '.join(report['tasks'])}), distilled with textdistill from each task's "
        f"teachers ({teachers}).",
        "",
        f"- student: {recipe}, {s['params'] / 1e6:.1f} M parameters for every task "
        f"(the {report['teachers']['count']} teachers: {report['teachers']['params_total'] / 1e6:.1f} M together)",
        f"- loss per task: alpha={d['alpha']} * T^2 * KL(fused teachers_T || student_T) + (1-alpha) * gold loss, "
        f"T={d['temperature']}; regression tasks: MSE to the fused score",
        "",
        markdown_table(multitask_rows(report)),
        "",
        "```python",
        "import textdistill.multitask  # registers the multi-task model with the Auto classes",
        "from textdistill.multitask import predict",
        f'predict(PATH, {next(iter(report["tasks"]))!r}, ["a text"])',
        "```",
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------------------
# Generative runs (textdistill.generative)


def generative_loss_text(g: dict[str, Any]) -> str:
    """The generative objective in words."""
    if not g["token_level"]:
        return (
            "cross-entropy on the teacher's completions (sequence-level KD; the vocabularies differ: no "
            "token-level term)"
        )
    extra = {
        "jsd": f", beta={g['beta']}",
        "skew_kl": f", skew alpha={g['skew_alpha']}",
        "skew_reverse_kl": f", skew alpha={g['skew_alpha']}",
    }.get(g["divergence"], "")
    text = (
        f"alpha={g['alpha']} * T^2 * {g['divergence']}(teacher_T, student_T) + (1-alpha) * CE over the "
        f"completion tokens, "
        f"T={g['temperature']}{extra}"
    )
    if g["sequence_kd"]:
        text += f"; on the teacher's {g['sampling']} completions (sequence-level KD)"
    if g["on_policy"]:
        text += f"; on-policy share lambda={g['on_policy']} (the student's samples, scored by the teacher)"
    c = g.get("teacher_cache_result")
    if c:
        text += (
            f"; teacher offline: its top-{c['top_k']} log-probabilities from the teacher-output cache "
            f"({c['status']}, "
            f"{c['tokens']:,} tokens, {c['bytes_per_token']} bytes/token)"
        )
    return text


def generative_rows(report: dict[str, Any]) -> list[list[str]]:
    """model | params | held-out perplexity | next-token agreement | divergence to the teacher | tokens/s | speed-up."""
    div = report["generative"]["divergence"]
    rows = [
        ["model", "params (M)", "perplexity", "next-token agreement (%)", f"{div} to teacher", "tokens/s", "speed-up"]
    ]

    def row(name: str, e: dict[str, Any]) -> None:
        rows.append(
            [
                name,
                f"{e['params'] / 1e6:.2f}",
                f"{e['perplexity']:.2f}",
                "100.0"
                if name.startswith("teacher")
                else _num(100 * e["agreement"] if "agreement" in e else None, ".1f"),
                "0" if name.startswith("teacher") else _num(e.get("divergence_to_teacher"), ".4f"),
                f"{e['tokens_per_second']:.1f}",
                _num(e.get("speedup", 1.0), ".2f") + "x",
            ]
        )

    row(f"teacher ({display_name(report['teacher']['model'])})", report["teacher"])
    row("student (distilled)", report["student"])
    if "baseline" in report:
        row("student (no distillation)", report["baseline"])
    return rows


def render_generative_report(report: dict[str, Any]) -> str:
    """The report of a generative run: the table, then the student against its twin."""
    d, g, s = report["data"], report["generative"], report["student"]
    recipe = (
        f"layers {s['layers']} of the teacher"
        if "layers" in s
        else f"the teacher's config with {s['config_overrides']}, randomly initialised"
        if "config_overrides" in s
        else display_name(s.get("model", ""))
    )
    ev = report["teacher"]
    lines = [
        "# Generative distillation report",
        "",
        f"- data: {display_name(d['train'])} ({d['train_examples']} examples, {d['train_tokens']:,} tokens) -> "
        f"{display_name(d['validation'])} ({d['validation_examples']}); max length {d['max_length']}",
        f"- student: {recipe}; loss: {generative_loss_text(g)}",
        f"- perplexity, agreement (the student's most probable next token is the teacher's) and divergence: on the "
        f"validation completion tokens; tokens/s: greedy, batch 1, {ev['speed_new_tokens']} new tokens after each of "
        f"{ev['speed_prompts']} prompts, median of the passes, {report['machine']['torch_threads']} threads",
        "",
        markdown_table(generative_rows(report)),
        "",
    ]
    if s.get("divergence_to_teacher_initial") is not None:
        lines.append(
            f"The student's {g['divergence']} to the teacher went from "
            f"{s['divergence_to_teacher_initial']:.4f} before "
            f"training to {s['divergence_to_teacher']:.4f}."
        )
    if "baseline" in report:
        b = report["baseline"]
        agree = (
            f"; agreement {100 * s['agreement']:.1f}% vs {100 * b['agreement']:.1f}%"
            if "agreement" in s and "agreement" in b
            else ""
        )
        lines.append(
            f"Student vs its twin (the same student trained with the LM loss alone on the training file's "
            f"completions, "
            f"same budget): "
            f"perplexity {s['perplexity']:.2f} vs {b['perplexity']:.2f}{agree}."
        )
    lines.append("")
    return "\n".join(lines)
