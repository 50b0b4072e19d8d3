"""report.html and `textdistill report`: real PNG plots embedded in one self-contained page, drawn from what the run
folder holds (a hand-made run folder: no training), and one real tiny run that gets its page at the end."""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
from pathlib import Path

import pytest
import torch

from textdistill.cli import main
from textdistill.html_report import (
    compare_rows,
    confusion_matrix,
    eval_keys,
    read_log,
    render_html,
    run_summary,
    write_html,
    write_html_or_warn,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _log(path: Path, terms: tuple[str, ...], metric: str = "accuracy", steps: int = 40, alpha: float = 0.7) -> None:
    """A training log as train_loop writes it: a record every 5 steps (lr, each term, the total), an eval every 20."""
    lines = []
    for step in range(5, steps + 1, 5):
        values = {t: 1.5 / (1 + 0.1 * step) + 0.01 * (step % 3) for t in terms}
        total = alpha * values["kd"] + (1 - alpha) * values["ce"] if "kd" in values else values["ce"]
        lines.append(
            {"step": step, "epoch": round(step / 20, 3), "lr": 1e-3 * (1 - step / steps), **values, "loss": total}
        )
        if step % 20 == 0:
            lines.append(
                {
                    "step": step,
                    "epoch": step / 20,
                    f"eval_{metric}": 0.6 + step / 200,
                    "eval_macro_f1": 0.55 + step / 200,
                }
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")


def fake_run(folder: Path, student_ms: float = 3.0, student_acc: float = 0.86, confusion: bool = True) -> Path:
    """A finished sentence-classification run folder as `textdistill distill` writes it (metrics.json, logs/)."""
    speed = {
        "params": 22_713_986,
        "size_bytes": 90_867_952,
        "latency_ms_batch1": 9.3,
        "throughput_batch32": 196.7,
        "threads": 2,
    }
    report = {
        "metric": "accuracy",
        "data": {
            "train": "/data/sst2/train.tsv",
            "validation": "/data/sst2/dev.tsv",
            "train_examples": 256,
            "validation_examples": 96,
            "labels": ["0", "1"],
            "task_type": "classification",
        },
        "distill": {
            "loss": "kl",
            "temperature": 3.0,
            "alpha": 0.7,
            "intermediate": [],
            "layer_map": [],
            "minilm": None,
            "intermediate_epochs": 0.0,
            "teacher_outputs": "auto",
            "baseline": True,
        },
        "teacher": {
            "model": "/models/tiny-bert",
            "train_seconds": 4.2,
            "steps": 32,
            "metrics": {"accuracy": 0.9, "macro_f1": 0.89, "f1": 0.9},
            **speed,
        },
        "student": {
            "recipe": "teacher layers",
            "layers": [0, 3],
            "best_step": 40,
            "train_seconds": 3.1,
            "metrics": {"accuracy": student_acc, "macro_f1": 0.85, "f1": 0.86},
            "params": 15_600_000,
            "size_bytes": 62_500_000,
            "latency_ms_batch1": student_ms,
            "throughput_batch32": 600.0,
            "threads": 2,
            "retained_pct": 100 * student_acc / 0.9,
        },
        "baseline": {
            "best_step": 20,
            "train_seconds": 2.0,
            "metrics": {"accuracy": 0.82, "macro_f1": 0.81, "f1": 0.83},
            "retained_pct": 100 * 0.82 / 0.9,
        },
        "speedup_batch1": 9.3 / student_ms,
        "speedup_batch32": 600.0 / 196.7,
        "total_seconds": 61.0,
        "machine": {
            "platform": "Linux",
            "processor": "x86_64",
            "cpu_count": 2,
            "torch_threads": 2,
            "torch": "2.13.0+cpu",
            "date": "2026-11-28 06:00 UTC",
        },
    }
    if confusion:
        report["student"]["confusion"] = {"labels": ["0", "1"], "matrix": [[40, 8], [6, 42]]}
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    (folder / "report.md").write_text("# Distillation report\n", encoding="utf-8")
    _log(folder / "logs" / "teacher.jsonl", ("ce",))
    _log(folder / "logs" / "student.jsonl", ("kd", "ce"))
    _log(folder / "logs" / "baseline.jsonl", ("ce",))
    return folder


def _generative_log(path: Path, kd: bool = True, steps: int = 40) -> None:
    """A generative run's log as train_loop writes it: train records (lr, kd, lm, on_policy, the total) every 5 steps,
    the held-out perplexity (and -NLL) every 20."""
    lines = []
    for step in range(5, steps + 1, 5):
        lm = 3.0 / (1 + 0.05 * step)
        terms = {"kd": lm / 4, "lm": lm, "on_policy": 0.0, "loss": 0.5 * lm / 4 + 0.5 * lm} if kd else {"loss": lm}
        lines.append({"step": step, "epoch": round(step / 20, 3), "lr": 1e-3 * (1 - step / steps), **terms})
        if step % 20 == 0:
            nll = 3.2 - step / 40
            lines.append({"step": step, "epoch": step / 20, "eval_neg_nll": -nll, "eval_perplexity": math.exp(nll)})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")


def fake_generative_run(
    folder: Path, student_tps: float = 80.0, agreement: float = 0.712, **generative: object
) -> Path:
    """A finished generative run folder as `textdistill distill` of a `generative:` config writes it."""
    report = {
        "kind": "generative",
        "data": {
            "train": "/data/lm/train.jsonl",
            "validation": "/data/lm/dev.jsonl",
            "train_examples": 200,
            "validation_examples": 40,
            "max_length": 128,
            "train_tokens": 9_000,
        },
        "generative": {
            "divergence": "forward_kl",
            "temperature": 1.0,
            "alpha": 0.5,
            "beta": 0.5,
            "skew_alpha": 0.1,
            "chunk_size": 1024,
            "sequence_kd": False,
            "sampling": "greedy",
            "on_policy": 0.0,
            "max_new_tokens": 64,
            "teacher_cache": None,
            "token_level": True,
            **generative,
        },
        "teacher": {
            "model": "/models/tiny-gpt",
            "params": 124_000_000,
            "size_bytes": 498_000_000,
            "nll": math.log(12.5),
            "perplexity": 12.5,
            "eval_tokens": 1_200,
            "tokens_per_second": 40.0,
            "speed_prompts": 8,
            "speed_new_tokens": 32,
        },
        "student": {
            "recipe": "teacher layers",
            "layers": [0, 3],
            "best_step": 40,
            "steps": 40,
            "train_seconds": 30.0,
            "divergence_to_teacher_initial": 0.21,
            "params": 81_000_000,
            "size_bytes": 324_000_000,
            "nll": math.log(15.0),
            "perplexity": 15.0,
            "eval_tokens": 1_200,
            "agreement": agreement,
            "divergence_to_teacher": 0.03,
            "tokens_per_second": student_tps,
            "speed_prompts": 8,
            "speed_new_tokens": 32,
            "speedup": student_tps / 40.0,
        },
        "baseline": {
            "best_step": 20,
            "steps": 40,
            "train_seconds": 25.0,
            "params": 81_000_000,
            "size_bytes": 324_000_000,
            "nll": math.log(17.3),
            "perplexity": 17.3,
            "eval_tokens": 1_200,
            "agreement": 0.655,
            "divergence_to_teacher": 0.09,
            "tokens_per_second": 80.5,
            "speed_prompts": 8,
            "speed_new_tokens": 32,
            "speedup": 80.5 / 40.0,
        },
        "total_seconds": 90.0,
        "machine": {
            "platform": "Linux",
            "processor": "x86_64",
            "cpu_count": 2,
            "torch_threads": 2,
            "torch": "2.13.0+cpu",
            "date": "2026-11-28 06:00 UTC",
        },
    }
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    _generative_log(folder / "logs" / "student.jsonl")
    _generative_log(folder / "logs" / "baseline.jsonl", kd=False)
    return folder


def embedded_pngs(page: str) -> dict[str, bytes]:
    """Each <figure id=...> image of the page, decoded."""
    found = re.findall(r'<figure id="([^"]+)"><img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    return {ident: base64.b64decode(data, validate=True) for ident, data in found}


def check_png(png: bytes, min_width: int = 300) -> None:
    from PIL import Image

    assert png.startswith(PNG_SIGNATURE)
    assert len(png) > 5_000, len(png)  # a real plot, not a blank pixel
    with Image.open(io.BytesIO(png)) as image:
        image.load()
        width, height = image.size
        assert image.format == "PNG"
        colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
    assert width > min_width and height > 200, (width, height)
    assert colours is None or len(colours) > 10  # drawn: more than a background


def check_self_contained(page: str) -> None:
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    for ref in ("http://", "https://", 'src="/', "<script", "<link", "@import", "url(", "href="):
        assert ref not in page, ref
    sources = re.findall(r'src="([^"]*)"', page)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    assert '<img src="data:image/png;base64,' in page


def test_run_page_is_self_contained_with_real_plots(tmp_path):
    run = fake_run(tmp_path / "run")
    path = write_html(run)
    assert path == run / "report.html" and path.is_file()
    assert not list(run.glob("*.tmp"))
    page = path.read_text(encoding="utf-8")
    check_self_contained(page)
    images = embedded_pngs(page)
    assert set(images) == {"bars", "curves-teacher", "curves-student", "curves-baseline", "confusion-student"}
    for png in images.values():
        check_png(png)
    # the report's table, as HTML
    assert (
        "<th>accuracy</th>" in page
        and ("<td>student (distilled)</td>") in page
        and '<td class="num">86.00</td>' in page
    )
    assert "student (no distillation)" in page and "Speed-up at batch 1: 3.10x" in page
    assert "loss terms (loss, kd, ce)" in page  # every logged term is drawn


def test_confusion_matrix_only_when_metrics_json_has_it(tmp_path):
    page = render_html(fake_run(tmp_path / "run", confusion=False))
    check_self_contained(page)
    images = embedded_pngs(page)
    assert "confusion-student" not in images and {"bars", "curves-student"} <= set(images)
    assert "metrics.json holds no confusion matrix" in page


def test_page_survives_a_killed_log_line_and_a_missing_log(tmp_path):
    run = fake_run(tmp_path / "run")
    (run / "logs" / "teacher.jsonl").unlink()  # a teacher given fine-tuned: no teacher log
    with open(run / "logs" / "student.jsonl", "a", encoding="utf-8") as f:
        f.write('{"step": 45, "epoch": 2.2, "lr": 0.0, "kd": 0.')  # the run was killed mid-write
    images = embedded_pngs(render_html(run))
    assert "curves-teacher" not in images and "curves-student" in images


def test_confusion_matrix_from_logits():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0], [0.5, 0.2]])
    assert confusion_matrix(logits, [0, 1, 1, 1], ["neg", "pos"]) == {
        "labels": ["neg", "pos"],
        "matrix": [[1, 0], [2, 1]],
    }
    # token classification: positions with IGNORE_INDEX (-100) are not counted
    tokens = torch.zeros(2, 4, 3)
    tokens[0, 1, 1] = tokens[0, 2, 2] = tokens[1, 1, 0] = tokens[1, 2, 2] = 5.0
    out = confusion_matrix(tokens, [[-100, 1, 2, -100], [-100, 1, 2]], ["O", "B-PER", "I-PER"])
    assert out == {"labels": ["O", "B-PER", "I-PER"], "matrix": [[0, 0, 0], [1, 1, 0], [0, 0, 2]]}
    assert confusion_matrix(torch.randn(3, 1), [0.1, 0.5, 0.9], ["score"]) is None  # regression
    assert (
        confusion_matrix(torch.randn(2, 3), [[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]], ["a", "b", "c"]) is None
    )  # multi-label
    with pytest.raises(ValueError, match="3 logits per prediction for 2 label names"):
        confusion_matrix(torch.randn(2, 3), [0, 1], ["a", "b"])


def test_multitask_page(tmp_path):
    run = tmp_path / "mt"
    task = lambda m, t, s, b: {
        "metric": m,
        "data": {},
        "teachers": [{"model": "t", "metrics": {m: t}}],
        "reference_score": t,
        "student": {"metrics": {m: s}, "retained_pct": 100 * s / t},
        "baseline": {"metrics": {m: b}, "retained_pct": 100 * b / t},
    }
    report = {
        "kind": "multitask",
        "tasks": {"sst2": task("accuracy", 0.9, 0.85, 0.82), "stsb": task("corr", 0.82, 0.76, 0.72)},
        "average": {
            "reference": 0.86,
            "student": 0.805,
            "baseline": 0.77,
            "student_retained_pct": 93.6,
            "baseline_retained_pct": 89.5,
        },
        "distill": {
            "temperature": 2.0,
            "alpha": 0.9,
            "anneal": False,
            "sampling": "proportional",
            "tau": 1.0,
            "baseline": True,
        },
        "teachers": {
            "count": 2,
            "params_total": 45_000_000,
            "speed_of": "t",
            "params": 22_700_000,
            "size_bytes": 90_000_000,
            "latency_ms_batch1": 10.0,
            "throughput_batch32": 120.0,
        },
        "student": {
            "recipe": "teacher layers",
            "layers": [1, 3, 5],
            "encoder_from": "mini",
            "best_step": 40,
            "params": 17_400_000,
            "size_bytes": 69_600_000,
            "latency_ms_batch1": 5.3,
            "throughput_batch32": 239.0,
        },
        "baseline": {"best_step": 40},
        "speedup_batch1": 1.9,
        "speedup_batch32": 2.0,
        "machine": {"torch_threads": 1},
    }
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps(report), encoding="utf-8")
    _log(run / "logs" / "student.jsonl", ("kd", "ce"), metric="average")
    page = write_html(run).read_text(encoding="utf-8")
    check_self_contained(page)
    images = embedded_pngs(page)
    assert set(images) == {"bars", "curves-student"}
    for png in images.values():
        check_png(png)
    assert "Task distillation report" in page and "<td>sst2</td>" in page


def test_a_failed_page_only_warns(tmp_path, capsys):
    run = fake_run(tmp_path / "run")
    report = json.loads((run / "metrics.json").read_text())
    del report["teacher"]["metrics"]  # something the renderer cannot draw
    (run / "metrics.json").write_text(json.dumps(report))
    assert write_html_or_warn(run) is None
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: report.html not written (KeyError")
    assert not (run / "report.html").exists()


def test_cli_report_compares_runs(tmp_path, capsys, monkeypatch):
    a = fake_run(tmp_path / "runs" / "two-layers", student_ms=3.0, student_acc=0.86)
    b = fake_run(tmp_path / "runs" / "one-layer", student_ms=1.5, student_acc=0.80, confusion=False)
    out = tmp_path / "x.html"
    assert main(["report", str(a), str(b), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    rows = [line for line in printed.splitlines() if line.startswith("| ")]
    head = [c.strip() for c in rows[0].split("|")[1:-1]]
    assert head[:8] == [
        "run",
        "student recipe",
        "accuracy",
        "% of teacher",
        "params (M)",
        "size (MB)",
        "latency b1 (ms)",
        "throughput b32 (/s)",
    ]
    table = {r.split("|")[1].strip(): [c.strip() for c in r.split("|")[2:-1]] for r in rows[1:]}
    assert len(table) == 4  # each run's student, then its twin
    two = next(v for k, v in table.items() if k.endswith("two-layers"))
    assert two[:7] == ["layers [0, 3], kl T=3.0 a=0.7", "86.00", "95.6", "15.6", "62.5", "3.00", "600"]
    assert (
        two[7] == "yes" and next(v for k, v in table.items() if k.endswith("one-layer"))[7] == "yes"
    )  # faster or better
    # the twin: the student's architecture (its size and speed) trained without distillation; not on the Pareto front
    assert next(v for k, v in table.items() if k.endswith("two-layers (twin)")) == [
        "same student, no distillation",
        "82.00",
        "91.1",
        "15.6",
        "62.5",
        "3.00",
        "600",
        "-",
    ]
    assert [r.split("|")[1].strip().rsplit("/", 1)[-1] for r in rows[1:]] == [
        "two-layers",
        "two-layers (twin)",
        "one-layer",
        "one-layer (twin)",
    ]
    page = out.read_text(encoding="utf-8")
    check_self_contained(page)
    images = embedded_pngs(page)
    assert set(images) == {"scatter"}
    check_png(images["scatter"], min_width=600)
    assert "two-layers" in page and "one-layer" in page
    # the default output: report-compare.html in the current folder
    monkeypatch.chdir(tmp_path)
    assert main(["report", str(a)]) == 0
    assert (tmp_path / "report-compare.html").is_file()


def test_cli_report_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    good = fake_run(tmp_path / "good")
    (tmp_path / "empty").mkdir()
    assert main(["report", str(good), str(tmp_path / "empty"), "-o", str(tmp_path / "x.html")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {tmp_path / 'empty'}: not a finished run folder (no metrics.json)"]
    assert not (tmp_path / "x.html").exists()
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'nowhere'}: no such run folder"


def test_distill_run_writes_its_page(tiny_bert, sst2_dir, tmp_path):
    from test_end_to_end import tiny_config

    import textdistill

    cfg = tiny_config(tiny_bert, sst2_dir, tmp_path / "run")
    cfg["teacher"]["training"]["num_train_epochs"] = 1
    cfg["student"]["training"]["num_train_epochs"] = 1
    cfg["data"]["max_train_samples"] = 128
    out = Path(textdistill.distill(cfg)["output_dir"])
    page = (out / "report.html").read_text(encoding="utf-8")
    check_self_contained(page)
    images = embedded_pngs(page)
    assert {"bars", "curves-teacher", "curves-student", "curves-baseline"} <= set(images)
    for png in images.values():
        check_png(png)
    metrics = json.loads((out / "metrics.json").read_text())
    assert "confusion-student" in images  # the student's dev predictions, counted by the run
    confusion = metrics["student"]["confusion"]
    matrix = confusion["matrix"]
    assert confusion["labels"] == ["0", "1"] and sum(map(sum, matrix)) == metrics["data"]["validation_examples"]
    assert (matrix[0][0] + matrix[1][1]) / sum(map(sum, matrix)) == pytest.approx(
        metrics["student"]["metrics"]["accuracy"]
    )


def test_generative_page(tmp_path):
    run = fake_generative_run(tmp_path / "gen")
    page = write_html(run).read_text(encoding="utf-8")
    check_self_contained(page)
    assert "<title>Generative distillation report</title>" in page
    images = embedded_pngs(page)
    assert set(images) == {"bars", "curves-student", "curves-baseline"}  # no confusion matrix: a language model
    for png in images.values():
        check_png(png)
    assert "Confusion matrix" not in page and "confusion" not in page
    # the report's table (render_generative_report), as HTML
    assert "<th>next-token agreement (%)</th>" in page and "<th>forward_kl to teacher</th>" in page
    student = re.search(r"<tr><td>student \(distilled\)</td>(.*?)</tr>", page).group(1)
    assert re.findall(r'<td class="num">([^<]*)</td>', student) == ["81.00", "15.00", "71.2", "0.0300", "80.0", "2.00x"]
    assert "perplexity 15.00 vs 17.30; agreement 71.2% vs 65.5%" in page
    # the curves: every loss term (not the on-policy share), the held-out perplexity on the eval axis
    assert "loss terms (loss, kd, lm)" in page and "loss terms (loss)" in page
    train, evals = read_log(run / "logs" / "student.jsonl")
    report = json.loads((run / "metrics.json").read_text())
    assert len(train) == 8 and len(evals) == 2 and eval_keys(report, "student", evals) == ["eval_perplexity"]


def test_compare_a_generative_and_a_classification_run(tmp_path, capsys):
    clf = fake_run(tmp_path / "runs" / "bert")
    gen = fake_generative_run(tmp_path / "runs" / "gpt")
    out = tmp_path / "x.html"
    assert main(["report", str(clf), str(gen), "-o", str(out)]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    head = [c.strip() for c in rows[0].split("|")[1:-1]]
    assert head == [
        "run",
        "student recipe",
        "metric",
        "% of teacher",
        "params (M)",
        "size (MB)",
        "latency b1 (ms)",
        "throughput b32 (/s)",
    ]
    table = {Path(r.split("|")[1].strip()).name: [c.strip() for c in r.split("|")[2:-1]] for r in rows[1:]}
    assert table["gpt"] == [
        "layers [0, 3], forward_kl T=1.0 a=0.5",
        "next-token agreement 71.20",
        "-",
        "81.0",
        "324.0",
        "12.50",
        "80",
    ]
    assert table["bert"] == ["layers [0, 3], kl T=3.0 a=0.7", "accuracy 86.00", "95.6", "15.6", "62.5", "3.00", "600"]
    page = out.read_text(encoding="utf-8")
    check_self_contained(page)
    assert set(embedded_pngs(page)) == {"scatter"}
    assert (
        "The runs use different metrics"
    ) in page and "Generative runs: the score is the student&#x27;s next-token agreement" in page
    assert "Latency: median of single-example forward passes" in page


def test_generative_runs_compared_with_each_other(tmp_path):
    runs = {
        "slow": fake_generative_run(tmp_path / "slow", student_tps=50.0, agreement=0.8, teacher_cache={"top_k": 16}),
        "fast": fake_generative_run(
            tmp_path / "fast", student_tps=100.0, agreement=0.6, sequence_kd=True, on_policy=0.5
        ),
        "worse": fake_generative_run(tmp_path / "worse", student_tps=40.0, agreement=0.5),
    }
    summaries = [run_summary(name, json.loads((path / "metrics.json").read_text())) for name, path in runs.items()]
    slow = summaries[0]
    assert slow["recipe"] == "layers [0, 3], forward_kl T=1.0 a=0.5, + top-k cache"
    assert summaries[1]["recipe"] == "layers [0, 3], forward_kl T=1.0 a=0.5, + sequence KD, + on-policy lambda=0.5"
    assert (slow["score"], slow["retained"], slow["latency"], slow["throughput"]) == (0.8, None, 20.0, 50.0)
    assert slow["teacher"] == {
        "name": "models/tiny-gpt",
        "score": 1.0,
        "latency": 25.0,
    }  # the teacher agrees with itself
    rows = compare_rows(summaries)
    assert rows[0][2] == "next-token agreement" and rows[0][-1] == "Pareto-optimal"
    assert [r[2:] for r in rows[1::2]] == [
        ["80.00", "-", "81.0", "324.0", "20.00", "50", "yes"],
        ["60.00", "-", "81.0", "324.0", "10.00", "100", "yes"],
        ["50.00", "-", "81.0", "324.0", "25.00", "40", "-"],
    ]
    # each twin after its student: its own agreement and generation speed (timed on its own)
    assert rows[2] == [
        "slow (twin)",
        "same student, no distillation",
        "65.50",
        "-",
        "81.0",
        "324.0",
        "12.42",
        "80",
        "-",
    ]
    # sequence-level KD alone (another vocabulary): no divergence, no agreement, no teacher point
    seq = fake_generative_run(tmp_path / "seq", token_level=False, sequence_kd=True)
    report = json.loads((seq / "metrics.json").read_text())
    del report["student"]["agreement"], report["baseline"]["agreement"]
    summary = run_summary("seq", report)
    assert (
        summary["recipe"] == ("layers [0, 3], sequence KD")
        and summary["score"] is None
        and summary["teacher"]["score"] is None
    )


def test_compare_labels_each_teacher_by_its_runs_and_plots_the_twins(tmp_path, monkeypatch):
    """Two runs that share a teacher and one with its own: every teacher point names its runs (two runs' teachers no
    longer read the same), and every twin is its own labelled point (a hollow triangle, dotted to its student)."""
    import textdistill.html_report as html_report

    a = fake_run(tmp_path / "runs" / "run-a", student_ms=3.0, student_acc=0.86)
    b = fake_run(tmp_path / "runs" / "run-b", student_ms=1.5, student_acc=0.80)
    c = fake_run(tmp_path / "runs" / "run-c", student_ms=2.0, student_acc=0.84)
    report = json.loads((c / "metrics.json").read_text())
    report["teacher"].update(model="all-MiniLM-L6-v2", metrics={"accuracy": 0.92}, latency_ms_batch1=12.0)
    del report["baseline"]  # distill.baseline: false: no twin
    (c / "metrics.json").write_text(json.dumps(report))
    drawn = {}
    place = html_report._label_points

    def record(fig, ax, labels):
        drawn["labels"] = {text: (x, y) for x, y, text, _ in labels}
        drawn["dotted"] = [line for line in ax.get_lines() if line.get_linestyle() == ":"]
        drawn["hollow"] = [
            col for col in ax.collections if len(col.get_facecolor()) and tuple(col.get_facecolor()[0]) == (1, 1, 1, 1)
        ]
        place(fig, ax, labels)

    monkeypatch.setattr(html_report, "_label_points", record)
    page, table = html_report.compare_runs([str(a), str(b), str(c)])
    labels = drawn["labels"]
    assert labels["run-a, run-b: teacher (models/tiny-bert)"] == (
        9.3,
        pytest.approx(90.0),
    )  # one teacher, measured in two runs
    assert labels["run-c: teacher (all-MiniLM-L6-v2)"] == (12.0, pytest.approx(92.0))
    assert labels["run-a: twin"] == (3.0, pytest.approx(82.0)) and labels["run-b: twin"] == (1.5, pytest.approx(82.0))
    assert labels["run-a"] == (3.0, pytest.approx(86.0)) and "run-c: twin" not in labels
    assert len(drawn["hollow"]) == 2 and len(drawn["dotted"]) == 2
    assert "hollow triangle" in page and "Twin rows:" in page
    assert [line.split("|")[1].strip().rsplit("/", 1)[-1] for line in table.splitlines()[2:]] == [
        "run-a",
        "run-a (twin)",
        "run-b",
        "run-b (twin)",
        "run-c",
    ]
    assert "<td>same student, no distillation</td>" in page


def test_run_page_opens_with_the_headline_and_the_training_notes(tmp_path):
    from textdistill.report import headline, training_lines

    run = fake_run(tmp_path / "run")
    report = json.loads((run / "metrics.json").read_text())
    for side in ("teacher", "student", "baseline"):
        report[side]["training"] = {
            "learning_rate": 5e-5,
            "learning_rate_from": "config",
            "epochs": 3,
            "stopped": "max epochs",
        }
    (run / "metrics.json").write_text(json.dumps(report))
    page = render_html(run)
    first = re.search(r'<p class="sub">.*?</p>\s*<p>(.*?)</p>', page, re.S)
    assert first is not None and first.group(1) == html.escape(headline(report))
    assert first.group(1).startswith("Distillation paid: the student keeps 95.6% of the teacher&#x27;s accuracy")
    (line,) = training_lines(report)
    assert f"<li>{html.escape(line[2:])}</li>" in page


def test_multi_class_page_shows_macro_f1_and_a_row_per_class(tmp_path):
    run = fake_run(tmp_path / "run")
    report = json.loads((run / "metrics.json").read_text())
    names = ["billing", "cancel", "refund", "other"]
    report["data"]["labels"] = names
    report["student"]["metrics"]["macro_f1"] = 0.49
    matrix = [[10, 0, 0, 0], [0, 10, 0, 0], [0, 0, 10, 0], [5, 5, 0, 0]]  # "other" never predicted
    for side in ("teacher", "student", "baseline"):
        report[side]["confusion"] = {"labels": names, "matrix": matrix}
    (run / "metrics.json").write_text(json.dumps(report))
    page = render_html(run)
    assert "<th>accuracy</th><th>macro-F1</th><th>% of teacher</th>" in page
    assert re.search(r'<td>student \(distilled\)</td><td class="num">86.00</td><td class="num">49.00</td>', page)
    assert "<th>class</th><th>support</th><th>teacher F1</th><th>student F1</th><th>twin F1</th>" in page
    assert '<td>other</td><td class="num">10</td><td class="num">0.00</td>' in page
    assert {"confusion-teacher", "confusion-student", "confusion-baseline"} <= set(embedded_pngs(page))
