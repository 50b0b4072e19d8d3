"""Write the results of finished runs into docs/RESULTS.md (between markers named after the benchmark).

Usage:

    python benchmarks/summarize.py RUN_DIR [RUN_DIR ...] [--name sst2-full] \
        [--command "bash benchmarks/sst2_full.sh"]

Every number comes from the runs' metrics.json; nothing is typed by hand.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from textdistill.report import (
    display_name,
    generative_loss_text,
    generative_rows,
    markdown_table,
    per_type_table,
    render_multitask_report,
    report_rows,
    test_lines,
)

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "RESULTS.md"


def section(runs: list[Path], name: str, command: str) -> str:
    reports = [json.loads((r / "metrics.json").read_text()) for r in runs]
    lines = _header(reports, name, command)
    for run, rep in zip(runs, reports):
        d, s, k = rep["data"], rep["student"], rep["distill"]
        lines += [
            f"**{run.name}**: student = {_student(s)}; {d['train_examples']} training examples"
            + (
                f" + {d['transfer']['kept_by_source'].get('pool', 0)} teacher-labelled pool texts "
                f"({display_name(d['transfer']['path'])})"
                if "transfer" in d
                else ""
            )
            + ", "
            f"{d['validation_examples']} dev; KD {k['loss']} T={k['temperature']} alpha={k['alpha']}; "
            f"run took {rep['total_seconds'] / 60:.1f} min.",
            "",
            markdown_table(report_rows(rep)),
            "",
            f"Speed-up: {rep['speedup_batch1']:.2f}x at batch 1, {rep['speedup_batch32']:.2f}x at batch 32. "
            f"Student retains {s['retained_pct']:.1f}% of the teacher's {rep['metric']}"
            + (f"; no-distillation twin {rep['baseline']['retained_pct']:.1f}%." if "baseline" in rep else "."),
            "",
            *test_lines(rep),
            *per_type_table(rep),
            _eval_history(run, rep["metric"]),
            "",
        ]
    lines.append(f"<!-- end {name} -->")
    return "\n".join(lines)


def _student(s: dict) -> str:
    if s.get("layers") is not None:
        return f"teacher layers {s['layers']}"
    if s.get("type"):
        return f"{s['type']} ({s.get('tokenizer')} tokenizer, vocabulary {s.get('vocab_size')})"
    return str(s.get("recipe"))


def _eval_history(run: Path, metric: str) -> str:
    """The kept checkpoint is the best of the evaluations on dev; say where each model ended, too."""
    parts = []
    for name in ("student", "baseline"):
        log = run / "logs" / f"{name}.jsonl"
        if not log.exists():
            continue
        evals = [r for r in map(json.loads, log.read_text().splitlines()) if f"eval_{metric}" in r]
        best = max(evals, key=lambda r: r[f"eval_{metric}"])
        parts.append(
            f"{name}: best {100 * best[f'eval_{metric}']:.2f} at step {best['step']} of {evals[-1]['step']}, "
            f"{100 * evals[-1][f'eval_{metric}']:.2f} at the end, {len(evals)} evaluations"
        )
    return "Dev evaluations (the run keeps the best checkpoint): " + "; ".join(parts) + "."


def _header(reports: list[dict], name: str, command: str) -> list[str]:
    m = reports[0]["machine"]
    dates = sorted({r["machine"]["date"] for r in reports})  # each report's date is when its run finished
    when = dates[0] if len(dates) == 1 else f"runs finished from {dates[0]} to {dates[-1]}"
    return [
        f"<!-- begin {name} -->",
        f"Command: `{command}`  ",
        f"Date: {when}; machine: {m['platform']}, {m['cpu_count']} CPUs, torch {m['torch']} "
        f"({m['torch_threads']} threads for latency and throughput).",
        "",
    ]


def ablation_section(runs: list[Path], name: str, command: str) -> str:
    """One row per setting (run folders named SETTING-seedN): each seed's metric, the mean, % of the teacher."""
    reports = [json.loads((r / "metrics.json").read_text()) for r in runs]
    metric = reports[0]["metric"]
    teacher = reports[0]["teacher"]["metrics"][metric]
    groups: dict[str, list[tuple[str, dict]]] = {}
    for run, rep in zip(runs, reports):
        setting, _, seed = run.name.rpartition("-seed")
        groups.setdefault(setting, []).append((seed, rep))
    epochs = {run.name.rpartition("-seed")[0]: _epochs(run) for run in runs}
    rows = [
        [
            "setting",
            "terms besides KD on the logits",
            "epochs",
            "seeds",
            f"{metric} per seed",
            "mean",
            "% of teacher",
            "train min (mean)",
        ]
    ]
    for setting, items in groups.items():
        scores = [rep["student"]["metrics"][metric] for _, rep in items]
        mean = sum(scores) / len(scores)
        minutes = sum(rep["student"]["train_seconds"] for _, rep in items) / len(items) / 60
        rows.append(
            [
                setting,
                describe_terms(items[0][1]["distill"]) + _transfer_terms(items[0][1]["data"]),
                f"{epochs[setting]:g}",
                ",".join(s for s, _ in items),
                " / ".join(f"{100 * x:.2f}" for x in scores),
                f"{100 * mean:.2f}",
                f"{100 * mean / teacher:.1f}",
                f"{minutes:.1f}",
            ]
        )
    d = reports[0]["data"]
    lines = _header(reports, name, command) + [
        f"Teacher {display_name(reports[0]['teacher']['model'])}: {metric} {100 * teacher:.2f}. "
        f"{d['train_examples']} training examples, {d['validation_examples']} dev.",
        "",
        markdown_table(rows),
        "",
        f"<!-- end {name} -->",
    ]
    return "\n".join(lines)


def variants_section(runs: list[Path], name: str, command: str) -> str:
    """One row per run of the same teacher: the student's recipe (layers, epochs, intermediate terms, transfer set),
    its dev and held-out test scores and their % of the teacher's, and its twin's where the run trained one."""
    reports = [json.loads((r / "metrics.json").read_text()) for r in runs]
    metric = reports[0]["metric"]
    t = reports[0]["teacher"]
    rows = [
        [
            "run",
            "student layers",
            "epochs",
            "besides KD on the logits",
            "training texts",
            f"dev {metric}",
            "% of teacher",
            f"test {metric}",
            "% of teacher",
            "twin dev / test",
        ]
    ]
    for run, rep in zip(runs, reports):
        s, d = rep["student"], rep["data"]
        test = s.get("test_metrics", {}).get(metric)
        twin = rep.get("baseline")
        twin_text = (
            "-"
            if twin is None
            else f"{100 * twin['metrics'][metric]:.2f} / "
            + (f"{100 * twin['test_metrics'][metric]:.2f}" if "test_metrics" in twin else "-")
        )
        texts = d["transfer"]["kept"] if "transfer" in d else d["train_examples"]
        rows.append(
            [
                run.name,
                str(s.get("layers", s.get("recipe"))),
                f"{_epochs(run):g}",
                describe_terms(rep["distill"]),
                str(texts),
                f"{100 * s['metrics'][metric]:.2f}",
                f"{s['retained_pct']:.1f}",
                "-" if test is None else f"{100 * test:.2f}",
                "-" if test is None else f"{s.get('test_retained_pct', 0):.1f}",
                twin_text,
            ]
        )
    test_t = t.get("test_metrics", {}).get(metric)
    lines = _header(reports, name, command) + [
        f"Teacher {display_name(t['model'])}: dev {metric} {100 * t['metrics'][metric]:.2f}"
        + (f", test {100 * test_t:.2f}" if test_t is not None else "")
        + ".",
        "",
        markdown_table(rows),
        "",
        f"<!-- end {name} -->",
    ]
    return "\n".join(lines)


def _epochs(run: Path) -> float:
    import yaml

    return float(yaml.safe_load((run / "config.yaml").read_text())["student"]["training"]["num_train_epochs"])


def _transfer_terms(data: dict) -> str:
    """A run's data augmentation in words (data distillation's transfer set), or nothing."""
    if "transfer" not in data:
        return ""
    t = data["transfer"]
    return (
        f"; augmented: {t['kept']} teacher-labelled texts "
        f"({', '.join(f'{n} {c}' for c, n in t['kept_by_source'].items())})"
    )


def describe_terms(distill: dict) -> str:
    """The intermediate terms of a run, in words: ``kept hidden MSE (+ embeddings)``, ``MiniLM ...``."""
    parts = []
    for m in distill.get("layer_map") or []:
        text = f"{m['strategy']} {m['feature']} {m['loss'].upper() if m['loss'] in ('mse', 'kl') else m['loss']}"
        w = m.get("weight", 1.0)
        text += f" (weight {w['kind']} {w['start']:g}->{w['end']:g})" if isinstance(w, dict) else ""
        parts.append(text + (" (+ embeddings)" if m.get("include_embeddings") else ""))
    for m in distill.get("intermediate") or []:
        parts.append(
            f"{m['feature']} {m.get('teacher_layer') or m.get('teacher_module')}->"
            f"{m.get('student_layer') or m.get('student_module')} {m['loss']}"
        )
    if distill.get("minilm"):
        parts.append("MiniLM last-layer attention KL + value relation KL")
    return "; ".join(parts) or "-"


def classic_section(runs: list[Path], name: str, command: str) -> str:
    """Non-transformer students: distilled and twin metric, size and speed against the teacher."""
    reports = [json.loads((r / "metrics.json").read_text()) for r in runs]
    metric = reports[0]["metric"]
    t = reports[0]["teacher"]
    rows = [
        [
            "model",
            f"{metric} distilled",
            f"{metric} no distillation",
            "% of teacher",
            "params (M)",
            "latency b1 (ms)",
            "throughput b32 (/s)",
            "speed-up b1",
            "speed-up b32",
        ]
    ]
    rows.append(
        [
            f"teacher ({display_name(t['model'])})",
            f"{100 * t['metrics'][metric]:.2f}",
            "-",
            "100.0",
            f"{t['params'] / 1e6:.1f}",
            f"{t['latency_ms_batch1']:.2f}",
            f"{t['throughput_batch32']:.0f}",
            "1.0x",
            "1.0x",
        ]
    )
    for rep in reports:
        s = rep["student"]
        rows.append(
            [
                f"{s['type']} ({s['tokenizer']} tokenizer)",
                f"{100 * s['metrics'][metric]:.2f}",
                f"{100 * rep['baseline']['metrics'][metric]:.2f}" if "baseline" in rep else "-",
                f"{s['retained_pct']:.1f}",
                f"{s['params'] / 1e6:.1f}",
                f"{s['latency_ms_batch1']:.2f}",
                f"{s['throughput_batch32']:.0f}",
                f"{t['latency_ms_batch1'] / s['latency_ms_batch1']:.1f}x",
                f"{s['throughput_batch32'] / t['throughput_batch32']:.1f}x",
            ]
        )
    lines = _header(reports, name, command) + [markdown_table(rows), "", f"<!-- end {name} -->"]
    return "\n".join(lines)


def bench_section(files: list[Path], name: str, command: str) -> str:
    """``textdistill bench --json`` output: distillation samples/s online vs cached, speed, peak memory."""
    r = json.loads(files[0].read_text())
    m, sps = r["machine"], r["distill_samples_per_second"]
    c = r["config"]
    steady = r.get("steady_samples_per_second") if r.get("steady_cache_speedup") else None
    rows = [["teacher outputs", "samples/s (median)", "runs"] + (["after 10 warm-up steps (median)"] if steady else [])]
    for mode in ("online", "cached"):
        rows.append(
            [mode, f"{sps[mode]:.1f}", ", ".join(f"{x:.1f}" for x in sps["runs"][mode])]
            + ([f"{steady[mode]:.1f}"] if steady else [])
        )
    lines = [
        f"<!-- begin {name} -->",
        f"Command: `{command}`  ",
        f"Date: {m['date']}; machine: {m['platform']}, {m['cpu_count']} CPUs, torch {m['torch']} "
        f"({m['torch_threads']} threads).",
        "",
        f"Teacher {display_name(c['teacher'])} -> student {c['student'].get('recipe')} "
        f"{c['student'].get('layers') or ''}; "
        f"batch {c['batch_size']}, {c['steps']} optimizer steps per run, {c['repeats']} runs per mode, max length "
        f"{c['max_length']}.",
        "",
        markdown_table(rows),
        "",
        f"With the cache: **{r['cache_speedup']:.2f}x** the samples/s of the same run with the teacher online"
        + (
            f" (median of the repeats' own cached/online ratios: {r['paired_cache_speedup']:.2f}x)"
            if r.get("paired_cache_speedup")
            else ""
        )
        + "; computing "
        f"the cached outputs for these {c['steps'] * c['batch_size']} examples took {r['cache_build_seconds']:.1f} "
        f"s, once. "
        f"Latency at batch 1: teacher {r['teacher']['latency_ms_batch1']:.2f} ms, student "
        f"{r['student']['latency_ms_batch1']:.2f} ms ({r['speedup_batch1']:.2f}x); throughput at batch 32: teacher "
        f"{r['teacher']['throughput_batch32']:.0f}/s, student {r['student']['throughput_batch32']:.0f}/s "
        f"({r['speedup_batch32']:.2f}x). Peak memory (RSS): {r['peak_memory_mb']:.0f} MB."
        + (f" After the warm-up steps: {r['steady_cache_speedup']:.2f}x." if steady else "")
        + (
            f" Student and teacher compiled (torch.compile, mode {c['torch_compile']})."
            if c.get("torch_compile")
            else ""
        ),
        f"<!-- end {name} -->",
    ]
    return "\n".join(lines)


def export_section(files: list[Path], name: str, command: str) -> str:
    """``textdistill export --json`` output: each form's metric, logit difference, size, latency, throughput."""
    r = json.loads(files[0].read_text())
    metric = next(iter(r["forms"]["pytorch fp32"]["metrics"]))
    rows = [
        [
            "form",
            metric,
            "vs PyTorch (points)",
            "max logit diff",
            "size (MB)",
            "latency b1 (ms)",
            "throughput b32 (/s)",
            "throughput vs PyTorch",
        ]
    ]
    for form, e in r["forms"].items():
        size = f"{e['size_bytes'] / 2**20:.1f}" if e.get("size_bytes") else "-"
        rows.append(
            [
                form,
                f"{100 * e['metrics'][metric]:.2f}",
                f"{e['metric_diff_points']:+.2f}",
                f"{e['max_abs_logit_diff']:.4f}",
                size,
                f"{e['latency_ms_batch1']:.2f}",
                f"{e['throughput_batch32']:.0f}",
                f"{e['throughput_vs_pytorch']:.2f}x",
            ]
        )
    lines = [
        f"<!-- begin {name} -->",
        f"Command: `{command}`  ",
        f"Date: {r['machine']['date']}; machine: {r['machine']['platform']}, {r['machine']['cpu_count']} CPUs, "
        f"torch {r['machine']['torch']} ({r['machine']['torch_threads']} threads; ONNX Runtime as many).",
        "",
        f"Model {display_name(str(r['model']))}, scored on {r['examples']} examples of "
        f"{display_name(str(r['validation']))}.",
        "",
        markdown_table(rows),
        f"<!-- end {name} -->",
    ]
    return "\n".join(lines)


def multitask_section(runs: list[Path], name: str, command: str) -> str:
    """A task-distillation run: its report (per task: teachers, student, twin, % kept) and its dev history."""
    reports = [json.loads((r / "metrics.json").read_text()) for r in runs]
    lines = _header(reports, name, command)
    for run, rep in zip(runs, reports):
        lines += [
            f"**{run.name}**: run took {rep['total_seconds'] / 60:.1f} min.",
            "",
            render_multitask_report(rep).split("\n", 2)[2].rstrip(),
            "",
            _eval_history(run, "average"),
            "",
        ]
    lines.append(f"<!-- end {name} -->")
    return "\n".join(lines)


def ensemble_section(runs: list[Path], name: str, command: str) -> str:
    """Students of one task from a teacher ensemble vs from the best single teacher (run folders named
    SETTING-seedN): each seed's score, the mean; the teachers and the ensemble themselves."""
    reports = {r.name: json.loads((r / "metrics.json").read_text()) for r in runs}
    settings: dict[str, list[tuple[str, dict]]] = {}
    for run_name, rep in reports.items():
        settings.setdefault(run_name.rsplit("-seed", 1)[0], []).append((run_name.rsplit("-seed", 1)[1], rep))
    task_name = next(iter(next(iter(reports.values()))["tasks"]))
    task = max(
        (rep["tasks"][task_name] for rep in reports.values()), key=lambda t: len(t["teachers"])
    )  # the ensemble's
    metric = task["metric"]
    lines = _header(list(reports.values()), name, command)
    teachers = ", ".join(f"{display_name(t['model'])} {100 * t['metrics'][metric]:.2f}" for t in task["teachers"])
    lines += [f"Task {task_name}, metric {metric} (x100, dev). Teachers: {teachers}."]
    if "ensemble" in task:
        lines[-1] += f" The ensemble itself ({task['fusion']}): {100 * task['ensemble']['metrics'][metric]:.2f}."
    lines.append("")
    rows = [["student distilled from", "teachers", "seeds", f"{metric} per seed", "mean", "accuracy mean"]]
    for setting, entries in sorted(settings.items()):
        entries.sort()
        scores = [rep["tasks"][task_name]["student"]["metrics"][metric] for _, rep in entries]
        accs = [rep["tasks"][task_name]["student"]["metrics"].get("accuracy", float("nan")) for _, rep in entries]
        t = entries[0][1]["tasks"][task_name]["teachers"]
        rows.append(
            [
                setting,
                str(len(t)),
                ", ".join(seed for seed, _ in entries),
                ", ".join(f"{100 * x:.2f}" for x in scores),
                f"{100 * sum(scores) / len(scores):.2f}",
                f"{100 * sum(accs) / len(accs):.2f}",
            ]
        )
    lines += [markdown_table(rows), "", f"<!-- end {name} -->"]
    return "\n".join(lines)


def transfer_section(runs: list[Path], name: str, command: str) -> str:
    """Data distillation: each student distilled on the transfer set vs on the labelled examples alone (run folders
    named KIND-transfer and KIND-1k), its twin (gold labels only), the transfer set, the labelling throughput."""
    reports = {r.name: json.loads((r / "metrics.json").read_text()) for r in runs}
    any_rep = next(iter(reports.values()))
    metric = any_rep["metric"]
    lines = _header(list(reports.values()), name, command)
    t = next((r["data"]["transfer"] for r in reports.values() if "transfer" in r["data"]), None)
    teacher = any_rep["teacher"]["metrics"][metric]
    lines.append(
        f"Teacher ({display_name(any_rep['teacher']['model'])}, fine-tuned on "
        f"{any_rep['data']['train_examples']} "
        f"labelled sentences): {metric} {100 * teacher:.2f} on the {any_rep['data']['validation_examples']} "
        f"dev sentences."
    )
    if t is not None:
        lines[-1] += (
            f" Transfer set: {t['kept']} texts ({', '.join(f'{k} {v}' for k, v in t['kept_by_source'].items())})."
        )
    lines.append("")
    rows = [
        [
            "student",
            f"on the labelled {any_rep['data']['train_examples']} alone (KD)",
            "on the transfer set (KD)",
            "gain (points)",
            "twin (gold labels only)",
            "% of teacher (transfer)",
        ]
    ]
    for kind in dict.fromkeys(n.rsplit("-", 1)[0] for n in reports):
        tr, alone = reports.get(f"{kind}-transfer"), reports.get(f"{kind}-1k")
        if tr is None or alone is None:
            continue
        a, b = alone["student"]["metrics"][metric], tr["student"]["metrics"][metric]
        twin = tr.get("baseline", {}).get("metrics", {}).get(metric)
        rows.append(
            [
                kind,
                f"{100 * a:.2f}",
                f"{100 * b:.2f}",
                f"{100 * (b - a):+.2f}",
                "-" if twin is None else f"{100 * twin:.2f}",
                f"{100 * b / teacher:.1f}",
            ]
        )
    lines += [markdown_table(rows), ""]
    tp = runs[0].parent / "label_throughput.json"
    if tp.is_file():
        r = json.loads(tp.read_text())
        tps = r["texts_per_second"]
        lines += [
            f"Labelling throughput (`python benchmarks/label_throughput.py`, {r['texts']} texts, batch "
            f"{r['batch_size']}, "
            f"median of {r['repeats']}): label_dataset {tps['label_dataset']:.0f} texts/s vs the teacher's "
            f"bare batched "
            f"inference {tps['bare inference']:.0f} texts/s = **{100 * r['ratio']:.1f}%** "
            f"({r['machine']['date']}, "
            f"{r['machine']['torch_threads']} thread).",
            "",
        ]
    lines.append(f"<!-- end {name} -->")
    return "\n".join(lines)


def generative_section(runs: list[Path], name: str, command: str) -> str:
    """Generative runs: each run's table (teacher, distilled student, twin), how the student compares with its
    twin, and the evaluation history on the held-out completions."""
    reports = [json.loads((r / "metrics.json").read_text()) for r in runs]
    lines = _header(reports, name, command)
    for run, rep in zip(runs, reports):
        d, s, g = rep["data"], rep["student"], rep["generative"]
        lines += [
            f"**{run.name}**: student = {_student(s)} ({s['params'] / 1e6:.1f} M parameters); {d['train_examples']} "
            f"training rows ({d['train_tokens']:,} tokens, prompts included), {d['validation_examples']} held-out "
            f"rows, "
            f"{s['steps']} steps; loss: {generative_loss_text(g)}; run took {rep['total_seconds'] / 60:.1f} min.",
            "",
            markdown_table(generative_rows(rep)),
            "",
        ]
        if "baseline" in rep:
            b = rep["baseline"]
            lines += [
                f"Distilled vs twin (LM loss alone, same rows and steps): perplexity {s['perplexity']:.2f} vs "
                f"{b['perplexity']:.2f}; next-token agreement {100 * s['agreement']:.1f}% vs "
                f"{100 * b['agreement']:.1f}%; "
                f"{g['divergence']} to the teacher {s['divergence_to_teacher']:.4f} vs "
                f"{b['divergence_to_teacher']:.4f} "
                f"(the student started at {s['divergence_to_teacher_initial']:.4f}).",
                "",
            ]
        history = []
        for model in ("student", "baseline"):
            log = run / "logs" / f"{model}.jsonl"
            evals = (
                [r for r in map(json.loads, log.read_text().splitlines()) if "eval_perplexity" in r]
                if log.exists()
                else []
            )
            if evals:
                best = min(evals, key=lambda r: r["eval_perplexity"])
                history.append(
                    f"{model}: best {best['eval_perplexity']:.2f} at step {best['step']} of "
                    f"{evals[-1]['step']}, "
                    f"{evals[-1]['eval_perplexity']:.2f} at the end"
                )
        if history:
            lines += [
                "Held-out perplexity during training (the run keeps the best checkpoint): " + "; ".join(history) + ".",
                "",
            ]
    lines.append(f"<!-- end {name} -->")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument(
        "--kind",
        choices=[
            "report",
            "ablation",
            "classic",
            "bench",
            "export",
            "multitask",
            "ensemble",
            "transfer",
            "variants",
            "generative",
        ],
        default="report",
        help="bench/export: RUNS is the JSON file that `textdistill bench/export --json` printed",
    )
    ap.add_argument("--name", default="sst2-full")
    ap.add_argument("--command", default="bash benchmarks/sst2_full.sh")
    args = ap.parse_args()
    make = {
        "report": section,
        "ablation": ablation_section,
        "classic": classic_section,
        "bench": bench_section,
        "export": export_section,
        "multitask": multitask_section,
        "ensemble": ensemble_section,
        "transfer": transfer_section,
        "variants": variants_section,
        "generative": generative_section,
    }[args.kind]
    new = make(args.runs, args.name, args.command)
    write_section(args.name, new)
    print(new)


def write_section(name: str, new: str) -> None:
    """Replace the text between ``<!-- begin NAME -->`` and ``<!-- end NAME -->`` (or append it); atomic."""
    text = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else "# Results\n"
    pattern = re.compile(rf"<!-- begin {re.escape(name)} -->.*?<!-- end {re.escape(name)} -->", re.S)
    text = pattern.sub(lambda _: new, text) if pattern.search(text) else text.rstrip() + "\n\n" + new + "\n"
    tmp = RESULTS.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(RESULTS)


if __name__ == "__main__":
    main()
