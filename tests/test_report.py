"""The report table: numbers placed where they belong, no machine paths."""

import os

import pytest

from textdistill.report import display_name, render_report


def _report() -> dict:
    speed = {"params": 22_700_000, "size_bytes": 90_900_000, "latency_ms_batch1": 9.0, "throughput_batch32": 200.0}
    return {
        "metric": "accuracy",
        "data": {"train": "train.tsv", "validation": "dev.tsv", "train_examples": 10, "validation_examples": 5},
        "distill": {"loss": "kl", "temperature": 2.0, "alpha": 0.9},
        "teacher": {"model": os.path.abspath("runs/t/teacher"), "metrics": {"accuracy": 0.9}, **speed},
        "student": {
            "layers": [1, 5],
            "metrics": {"accuracy": 0.88},
            "retained_pct": 100 * 0.88 / 0.9,
            "params": 15_600_000,
            "size_bytes": 62_500_000,
            "latency_ms_batch1": 3.0,
            "throughput_batch32": 600.0,
        },
        "baseline": {"metrics": {"accuracy": 0.85}, "retained_pct": 100 * 0.85 / 0.9},
        "speedup_batch1": 3.0,
        "speedup_batch32": 3.0,
        "machine": {"torch_threads": 2},
    }


def test_render_report_rows():
    text = render_report(_report())
    rows = {
        line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
        for line in text.splitlines()
        if line.startswith("| ")
    }
    assert rows["teacher (runs/t/teacher)"][:3] == ["90.00", "100.0", "22.7"]
    assert rows["student (distilled)"] == ["88.00", "97.8", "15.6", "62.5", "3.00", "600", "3.00x"]
    assert rows["student (no distillation)"][:2] == ["85.00", "94.4"]
    assert "layers [1, 5] of the teacher" in text and "T=2.0" in text
    assert os.getcwd() not in text


def test_display_name():
    assert display_name("all-MiniLM-L6-v2") == "all-MiniLM-L6-v2"
    assert display_name("org/model") == "org/model"
    assert display_name("/somewhere/else/run/teacher") == os.path.join("run", "teacher")


# --------------------------------------------------------------------------------------------------------------------
# Speeds timed in turns, and a report that says when the machine's load made the ratio up (fake clock: no timing)


class FakeMachine:
    """A clock and models whose calls take ``cost`` ms times the machine's load, ``load(call number)``; each call
    is logged (model, batch size)."""

    def __init__(self, costs: dict[str, float], load) -> None:
        self.now, self.calls, self.log = 0.0, 0, []
        self.costs, self.load = costs, load

    def clock(self) -> float:
        return self.now

    def model(self, name: str):
        def forward(inputs) -> None:
            self.log.append((name, len(inputs["input_ids"])))
            self.now += self.costs[name] / 1000 * self.load(self.calls)
            self.calls += 1

        return forward


def _timed(machine: FakeMachine, rounds: int = 3, repeats: int = 2) -> dict:
    from textdistill.metrics import measure_speeds

    feats = [{"input_ids": [1, 5, 6, 2]}, {"input_ids": [1, 7, 2]}]
    return measure_speeds(
        {name: (machine.model(name), feats, 0) for name in ("teacher", "student")},
        repeats=repeats,
        rounds=rounds,
        batch_size=4,
        clock=machine.clock,
    )


def test_models_are_timed_in_alternating_rounds_and_summed_up_by_their_medians() -> None:
    machine = FakeMachine({"teacher": 9.0, "student": 3.0}, lambda call: 1.0)
    speed = _timed(machine)
    per_round = 2 * 2 + 2 * 2  # two warm-ups and two timed calls, at batch 1 and at batch 4
    blocks = [machine.log[i][0] for i in range(0, len(machine.log), per_round)]
    assert blocks == ["teacher", "student", "student", "teacher", "teacher", "student"]  # rotated each round
    assert all(name == machine.log[i - i % per_round][0] for i, (name, _) in enumerate(machine.log))  # whole rounds
    t, s = speed["teacher"], speed["student"]
    assert t["latency_ms_batch1"] == pytest.approx(9.0) and s["throughput_batch4"] == pytest.approx(4 / 0.003)
    assert t["speed_rounds"] == 3 and t["latency_ms_batch1_spread_pct"] == pytest.approx(0.0)


def test_a_busy_round_shows_as_spread_and_the_report_gives_no_ratio() -> None:
    """The machine is 40x slower while the teacher's first round runs (as the 353 ms against 9 ms that once printed
    "27.24x faster"): the medians stay right, and the spread says the ratio is not to be trusted."""
    from textdistill.metrics import speedups

    machine = FakeMachine({"teacher": 9.0, "student": 3.0}, lambda call: 40.0 if call < 8 else 1.0)
    speed = _timed(machine)
    t, s = speed["teacher"], speed["student"]
    assert t["latency_ms_batch1"] == pytest.approx(9.0)  # the median of 360, 9, 9
    assert t["latency_ms_batch1_spread_pct"] == pytest.approx(100 * (360 - 9) / 9)
    ratios = speedups(t, s, batch_size=4)
    assert ratios["speedup_batch1"] == pytest.approx(3.0) and ratios["speed_reliable"] is False
    assert ratios["speed_spread_pct"] == pytest.approx(3900.0)
    report = _report()
    report["teacher"].update(
        t,
        throughput_batch32=t["throughput_batch4"],
        throughput_batch32_spread_pct=t["throughput_batch4_spread_pct"],
        throughput_batch32_rounds=t["throughput_batch4_rounds"],
    )
    report["student"].update(
        s,
        throughput_batch32=s["throughput_batch4"],
        throughput_batch32_spread_pct=s["throughput_batch4_spread_pct"],
        throughput_batch32_rounds=s["throughput_batch4_rounds"],
    )
    report.update(speedups(report["teacher"], report["student"]))
    text = render_report(report)
    assert (
        "Speed-up at batch 1 and 32: not given: the teacher/student speed ratio varied by more than 25% between "
        "rounds "
        "(up to 3900%): the machine was busy; speed-ups are unreliable." in text
    )
    assert "x faster" not in text and "3.00x" not in text
    rows = {
        line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
        for line in text.splitlines()
        if line.startswith("| ")
    }
    assert rows["student (distilled)"][-1] == "-" and rows["student (distilled)"][4] == "3.00"  # the median is shown
    assert ("teacher and student timed in 3 alternating rounds") in text and "teacher 3900% at batch 1" in " ".join(
        text.split()
    )


def test_a_load_that_slows_both_models_alike_leaves_the_ratio_trusted() -> None:
    """Each round twice as slow as the one before (another job ramping up): each model's own timings spread by 200%,
    but both models of a round are timed moments apart, so each round's ratio is 3.0 and the speed-up is given."""
    from textdistill.metrics import speedups

    per_round = 2 * (2 * 2 + 2 * 2)  # both models: two warm-ups and two timed calls at each of two batch sizes
    machine = FakeMachine({"teacher": 9.0, "student": 3.0}, lambda call: 2.0 ** (call // per_round))
    speed = _timed(machine)
    assert speed["teacher"]["latency_ms_batch1_spread_pct"] == pytest.approx(100 * (36 - 9) / 18)
    ratios = speedups(speed["teacher"], speed["student"], batch_size=4)
    assert ratios["speedup_batch1"] == pytest.approx(3.0) and ratios["speedup_batch4"] == pytest.approx(3.0)
    assert ratios["speed_reliable"] is True and ratios["speed_spread_pct"] == pytest.approx(0.0, abs=1e-9)


def test_a_quiet_machine_gets_its_ratio_with_the_spread() -> None:
    from textdistill.metrics import speedups

    machine = FakeMachine({"teacher": 9.0, "student": 3.0}, lambda call: 1.0 + 0.05 * (call % 3))  # within 10%
    speed = _timed(machine)
    ratios = speedups(speed["teacher"], speed["student"], batch_size=4)
    assert ratios["speed_reliable"] is True and 0 < ratios["speed_spread_pct"] <= 10
    report = _report()  # (an older report: no rounds, no spread) reads as before
    assert "Speed-up at batch 1: 3.00x; at batch 32: 3.00x." in render_report(report)
    report.update(speed_reliable=True, speed_spread_pct=8.0)
    assert "Speed-up at batch 1: 3.00x; at batch 32: 3.00x." in render_report(report)


# --------------------------------------------------------------------------------------------------------------------
# Multi-class runs: macro-F1 beside the main metric, F1 per class one row per class


def _table(text: str, first: str) -> list[list[str]]:
    """The Markdown table of ``text`` whose header starts with ``first``, as rows of cells (the rule line left out)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first} "))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        if not set(line) <= {"|", "-"}:
            rows.append([c.strip() for c in line.split("|")[1:-1]])
    return rows


def _multiclass(n: int = 39) -> dict:
    """A report of an n-class intent run: 71% accuracy, and a student that never predicts the last class."""
    report = _report()
    names = [f"intent_{i:02d}" for i in range(n)]
    report["data"].update(labels=names, task_type="classification")

    def confusion(collapsed: int) -> dict:  # 10 dev examples per class; the last `collapsed` classes read as class 0
        matrix = [[0] * n for _ in range(n)]
        for i in range(n):
            matrix[i][0 if i >= n - collapsed else i] += 7
            matrix[i][(i + 1) % n] += 3
        return {"labels": names, "matrix": matrix}

    report["teacher"]["metrics"].update(macro_f1=0.88)
    report["student"]["metrics"].update(accuracy=0.71, macro_f1=0.49)
    report["baseline"]["metrics"].update(macro_f1=0.8)
    report["teacher"]["confusion"], report["student"]["confusion"], report["baseline"]["confusion"] = (
        confusion(0),
        confusion(1),
        confusion(0),
    )
    return report


def test_multi_class_report_shows_macro_f1_beside_the_metric():
    text = render_report(_multiclass())
    rows = _table(text, "model")
    assert rows[0][:4] == ["model", "accuracy", "macro-F1", "% of teacher"]
    by_model = {r[0]: r[1:] for r in rows[1:]}
    assert by_model["student (distilled)"][:2] == ["71.00", "49.00"]
    assert by_model["teacher (runs/t/teacher)"][:2] == ["90.00", "88.00"] and by_model["student (no distillation)"][
        :2
    ] == ["85.00", "80.00"]
    binary = _report()
    binary["data"]["labels"] = ["neg", "pos"]
    binary["teacher"]["metrics"]["macro_f1"] = 0.9
    assert "macro-F1" not in render_report(binary)  # two classes: accuracy says enough
    already = _multiclass()
    already["metric"] = "macro_f1"
    assert _table(render_report(already), "model")[0][:3] == ["model", "macro_f1", "% of teacher"]  # not twice


def test_per_class_table_reads_one_row_per_class():
    text = render_report(_multiclass(39))
    rows = _table(text, "class")
    assert rows[0] == ["class", "support", "teacher F1", "student F1", "twin F1"]
    assert len(rows) == 1 + 39 and all(len(r) == 5 for r in rows)
    by_class = {r[0]: r[1:] for r in rows[1:]}
    assert by_class["intent_38"] == ["10", "70.00", "0.00", "70.00"]  # the class the student collapsed
    # intent_00: 7 right of 10 gold; predicted 7 + 3 (from intent_38) by the teacher, 7 + 3 + 7 by the student
    assert by_class["intent_00"][:3] == ["10", "70.00", f"{100 * 14 / 27:.2f}"]
    # only the student's confusion matrix (a run made before the teacher's was saved): its column alone
    report = _multiclass(5)
    del report["teacher"]["confusion"], report["baseline"]["confusion"]
    assert _table(render_report(report), "class")[0] == ["class", "support", "student F1"]
    assert "F1 per class" not in render_report(_report())  # no confusion matrix, two classes


def test_entity_f1_table_has_a_row_per_type():
    report = _report()
    report["metric"] = "entity_f1"
    report["data"]["task_type"] = "token_classification"
    for side, f1 in (("teacher", 0.9), ("student", 0.8), ("baseline", 0.7)):
        report[side]["metrics"] = {"entity_f1": f1, **{f"f1_T{i:02d}": f1 - i / 100 for i in range(30)}}
    text = render_report(report)
    rows = _table(text, "type")
    assert rows[0] == ["type", "teacher F1", "student F1", "twin F1"] and len(rows) == 31
    assert rows[1] == ["T00", "90.00", "80.00", "70.00"] and rows[30] == ["T29", "61.00", "51.00", "41.00"]
    assert "Entity F1 per type:" in text
