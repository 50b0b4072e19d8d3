"""Converged models without tuning (issue 28): early stopping, the wall-time cap, the learning-rate search, the teacher
guard, the report's headline, the smoke run and the zero-config command line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

import textdistill
from textdistill.cli import main
from textdistill.config import TrainingConfig
from textdistill.data import Collator, DistillDataset
from textdistill.objective import hard_label_objective
from textdistill.report import headline
from textdistill.train import train_loop
from textdistill.tuning import CLASSIC_RATES, TRANSFORMER_RATES, choose_learning_rate, trial_steps


class Linear(nn.Module):
    """A one-layer classifier over a 4-dim input: enough for the loop (config has no use_return_dict)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.proj = nn.Linear(4, 2)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, labels: torch.Tensor | None = None
    ):
        from transformers.modeling_outputs import SequenceClassifierOutput

        x = torch.nn.functional.one_hot(input_ids[:, 1] % 4, 4).float()
        return SequenceClassifierOutput(logits=self.proj(x))


def _toy(n: int = 64) -> tuple[DistillDataset, Collator]:
    feats = [{"input_ids": [1, 2 + i % 4, 3], "attention_mask": [1, 1, 1]} for i in range(n)]
    return DistillDataset(feats, [int(i % 4 >= 2) for i in range(n)]), Collator(0)


def _run(tmp_path: Path, scores: list[float], **args) -> object:
    """The loop over a toy set, with evaluations that return ``scores`` in turn (one per epoch)."""
    data, collator = _toy()
    it = iter(scores)
    cfg = TrainingConfig(learning_rate=1e-2, per_device_train_batch_size=16, report_to=[], **args)
    return train_loop(
        Linear(),
        data,
        collator,
        cfg,
        hard_label_objective,
        lambda m: {"accuracy": next(it)},
        "accuracy",
        0,
        tmp_path / "log.jsonl",
    )


def test_early_stopping_stops_after_patience_evaluations_without_a_better_one(tmp_path: Path) -> None:
    result = _run(tmp_path, [0.5, 0.7, 0.6, 0.69, 0.9, 0.95], num_train_epochs=6, early_stopping_patience=2)
    assert result.stopped == "patience"
    assert [e["eval_accuracy"] for e in result.evals] == [0.5, 0.7, 0.6, 0.69]  # two after the best: stop
    assert result.best_metric == 0.7 and result.best_step == 8 and result.steps == 16
    log = (tmp_path / "log.jsonl").read_text()
    assert '"eval_accuracy": 0.69' in log and '"eval_accuracy": 0.9' not in log


def test_no_patience_trains_every_step(tmp_path: Path) -> None:
    result = _run(tmp_path, [0.5, 0.4, 0.3, 0.2], num_train_epochs=4, early_stopping_patience=None)
    assert result.stopped is None and result.steps == 16 and len(result.evals) == 4


def test_the_wall_time_cap_stops_at_the_next_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import textdistill.train as train

    clock = iter(range(0, 10**6, 30))  # every reading of the clock is 30 s later
    monkeypatch.setattr(train.time, "perf_counter", lambda: float(next(clock)))
    result = _run(tmp_path, [0.5] * 10, num_train_epochs=5, early_stopping_patience=None, max_train_minutes=2)
    assert result.stopped == "time" and 0 < result.steps < 20
    assert result.evals[-1]["step"] == result.steps  # the last weights are evaluated before the loop ends


def test_teacher_defaults_train_until_the_dev_metric_stops_improving() -> None:
    from textdistill.config import RunConfig

    cfg = RunConfig.model_validate(
        {
            "data": {"train_file": "t.tsv", "validation_file": "d.tsv"},
            "teacher": {"model": "m", "training": {"per_device_train_batch_size": 16}},
        }
    )
    t = cfg.teacher.training
    assert (t.num_train_epochs, t.early_stopping_patience, t.max_train_minutes, t.learning_rate) == (
        10.0,
        2,
        60.0,
        None,
    )
    assert cfg.distill.guard is True


def test_trial_steps_are_a_third_of_an_epoch_within_bounds() -> None:
    args = TrainingConfig(per_device_train_batch_size=32)
    assert trial_steps(100, args) == 30  # at least 30
    assert trial_steps(32 * 300, args) == 100
    assert trial_steps(10**6, args) == 150  # at most 150
    assert trial_steps(10**6, TrainingConfig(max_steps=2)) == 2  # never more than the run itself


def test_the_learning_rate_search_picks_the_best_trial_and_restores_the_model(tmp_path: Path) -> None:
    data, collator = _toy()
    model = Linear()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    # the score of a trial is how far its weights moved: the largest rate moves them most (scaled beyond 1, where the
    # noise margin of pick_rate is 0, so the best trial wins outright)
    evaluate = lambda m, on: {
        "accuracy": 100 * float(sum((p.detach() - before[k]).abs().sum() for k, p in m.named_parameters()))
    }  # noqa: E731
    args = TrainingConfig(per_device_train_batch_size=16, report_to=[])
    out = choose_learning_rate(
        "student", model, data, data, collator, args, hard_label_objective, evaluate, "accuracy", 0, tmp_path
    )
    assert [t["learning_rate"] for t in out["trials"]] == list(TRANSFORMER_RATES)
    assert out["learning_rate"] == max(TRANSFORMER_RATES) and out["trial_steps"] == 30
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # trials leave no trace
    saved = json.loads((tmp_path / "student-learning-rate.json").read_text())
    assert saved["learning_rate"] == out["learning_rate"] and saved["how"].startswith("search: 3 rates, 30 steps each")
    # read back on a resumed run, not searched again
    again = choose_learning_rate(
        "student",
        model,
        data,
        data,
        collator,
        args,
        hard_label_objective,
        lambda m, on: pytest.fail("searched again"),
        "accuracy",
        0,
        tmp_path,
    )
    assert again == saved


def test_ties_go_to_the_smaller_rate_and_a_diverged_trial_is_never_chosen(tmp_path: Path) -> None:
    data, collator = _toy()
    scores = iter([0.5, 0.8, math.nan, 0.8])  # the untrained score first, then the three trials
    out = choose_learning_rate(
        "t",
        Linear(),
        data,
        data,
        collator,
        TrainingConfig(per_device_train_batch_size=16, report_to=[]),
        hard_label_objective,
        lambda m, on: {"accuracy": next(scores)},
        "accuracy",
        0,
        tmp_path,
    )
    assert out["learning_rate"] == TRANSFORMER_RATES[0]
    assert out["trials"][1]["accuracy"] is None


def test_word_level_students_search_their_own_rates() -> None:
    from textdistill.students import BiLSTMConfig, BiLSTMForSequenceClassification
    from textdistill.tuning import candidate_rates

    model = BiLSTMForSequenceClassification(BiLSTMConfig(vocab_size=10, embedding_dim=4, hidden_size=4, num_labels=2))
    assert candidate_rates(model) == CLASSIC_RATES


def _report(teacher: float, student: float, twin: float | None, n: int = 4000, transfer: bool = False) -> dict:
    r = {
        "metric": "accuracy",
        "data": {"train_examples": n, **({"transfer": {"kept": 30000}} if transfer else {})},
        "teacher": {"metrics": {"accuracy": teacher}},
        "student": {"metrics": {"accuracy": student}, "retained_pct": 100 * student / teacher},
        "speedup_batch32": 2.9,
        "speed_reliable": True,
    }
    if twin is not None:
        r["baseline"] = {"metrics": {"accuracy": twin}}
    return r


@pytest.mark.parametrize(
    "teacher, student, twin, says",
    [
        (
            0.90,
            0.88,
            0.85,
            "Distillation paid: the student keeps 97.8% of the teacher's accuracy (88.00 vs 90.00), at "
            "2.9x the "
            "teacher's throughput and beats its twin trained on the labels alone by 3.00 points.",
        ),
        (0.666, 0.71, 0.8965, "Distillation cost here (-18.65 points against the twin)"),
        (
            0.666,
            0.71,
            0.8965,
            "because the teacher (66.60) is no better than the student trained on the labels alone (89.65)",
        ),
        (0.905, 0.906, 0.91, "Distillation added nothing here"),
        (0.93, 0.906, 0.91, "on 4,000 labelled examples the twin, which starts from the same teacher layers"),
    ],
)
def test_the_headline_says_what_distillation_bought_and_why_not(
    teacher: float, student: float, twin: float, says: str
) -> None:
    assert says in headline(_report(teacher, student, twin))


def test_the_headline_on_a_transfer_set_points_at_the_recipe() -> None:
    text = headline(_report(0.9, 0.85, 0.86, transfer=True))
    assert "labelled 30,000 texts, yet the student did not gain" in text and "distill.layer_map" in text


def _tiny(tiny_bert: str, sst2_dir: Path, out: Path) -> dict:
    from test_end_to_end import tiny_config

    return tiny_config(tiny_bert, sst2_dir, out)


def test_the_guard_reports_a_weak_teacher_and_trains_it_further(
    tiny_bert: str, sst2_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _tiny(tiny_bert, sst2_dir, tmp_path / "run")
    cfg["teacher"]["training"] = {**cfg["teacher"]["training"], "max_steps": 1, "learning_rate": 1e-6}  # barely trained
    cfg["distill"]["baseline"] = False
    report = textdistill.distill(cfg)
    err = capsys.readouterr().err
    g = report["guard"]
    assert g["estimate_steps"] == 30 and g["teacher"] < g["labels_only_estimate"] + 0.01
    assert ("warning: the teacher (") in err and (
        "is not clearly better than the student trained on the labels alone for 30 steps"
    ) in err
    assert "it trained 0.06 epoch(s) at learning rate 1e-06, stopped by end of schedule. Training it further" in err
    assert g["action"].startswith("trained further: ") and report["teacher"]["trained_further"]["learning_rate"] == 1e-6
    assert (tmp_path / "run" / "logs" / "teacher-further.jsonl").is_file()
    assert "- teacher check: teacher " in (tmp_path / "run" / "report.md").read_text()
    if g["weak"]:  # still weak after training further: the headline says so first, whatever the student kept
        assert "The teacher is weak: " in (tmp_path / "run" / "report.md").read_text()


def test_the_guard_only_warns_about_a_teacher_given_fine_tuned(
    tiny_bert: str, sst2_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _tiny(tiny_bert, sst2_dir, tmp_path / "t")
    cfg["teacher"]["training"] = {**cfg["teacher"]["training"], "max_steps": 1, "learning_rate": 1e-6}
    trained = textdistill.train_teacher(cfg)
    cfg = _tiny(tiny_bert, sst2_dir, tmp_path / "run")
    cfg["teacher"] = {"model": str(Path(trained["output_dir"]) / "teacher"), "finetune": False}
    cfg["distill"]["baseline"] = False
    report = textdistill.distill(cfg)
    assert "Fine-tune it here (teacher.finetune: true) or give a better one" in capsys.readouterr().err
    assert report["guard"]["action"].startswith("warned") and "trained_further" not in report["teacher"]


def test_the_learning_rate_is_chosen_when_the_config_gives_none(tiny_bert: str, sst2_dir: Path, tmp_path: Path) -> None:
    cfg = _tiny(tiny_bert, sst2_dir, tmp_path / "run")
    cfg["student"]["training"] = {k: v for k, v in cfg["student"]["training"].items() if k != "learning_rate"}
    cfg["distill"].update(baseline=False, guard=False)
    report = textdistill.distill(cfg)
    tr = report["student"]["training"]
    assert tr["learning_rate"] in TRANSFORMER_RATES and tr["learning_rate_from"].startswith("search: 3 rates")
    assert len(tr["learning_rate_trials"]) == 3
    assert report["teacher"]["training"]["learning_rate_from"] == "the config"
    saved = json.loads((tmp_path / "run" / "logs" / "student-learning-rate.json").read_text())
    assert saved["learning_rate"] == tr["learning_rate"]
    assert (
        "student lr" in (tmp_path / "run" / "report.md").read_text()
        and ("(chosen by search)") in (tmp_path / "run" / "report.md").read_text()
    )


def test_smoke_runs_every_step_on_a_few_batches_beside_the_real_run(
    tiny_bert: str, sst2_dir: Path, tmp_path: Path
) -> None:
    from textdistill.config import smoke_config

    cfg = _tiny(tiny_bert, sst2_dir, tmp_path / "run")
    report = textdistill.distill(cfg, smoke=True)
    assert Path(report["output_dir"]) == tmp_path / "run-smoke" and not (tmp_path / "run").exists()
    assert report["data"]["train_examples"] == 64 and report["data"]["validation_examples"] == 64
    assert report["student"]["training"]["stopped"] == "end of schedule" and report["student"]["best_step"] == 2
    raw = smoke_config(
        {"tasks": [{"data": {"max_train_samples": 10}, "teachers": [{"training": {}}]}], "generative": {}}
    )
    assert raw["tasks"][0]["data"] == {"max_train_samples": 10, "max_eval_samples": 64}
    assert raw["tasks"][0]["teachers"][0]["training"]["max_steps"] == 2
    assert raw["eval"] == {"speed_prompts": 2, "speed_new_tokens": 4, "speed_repeats": 1}
    assert raw["output_dir"] == "runs/default-smoke" and raw["overwrite_output_dir"] is True


def test_zero_config_command_writes_the_resolved_config(
    tiny_bert: str, sst2_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import yaml

    monkeypatch.chdir(tmp_path)
    code = main(
        [
            "distill",
            "--train",
            str(sst2_dir / "dev.tsv"),
            "--validation",
            str(sst2_dir / "dev.tsv"),
            "--teacher",
            tiny_bert,
            "--smoke",
            "-o",
            "runs/zero",
            "distill.baseline=false",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err[-2000:]
    saved = yaml.safe_load((tmp_path / "runs" / "zero-smoke" / "config.yaml").read_text())
    assert saved["data"]["train_file"] == str(sst2_dir / "dev.tsv") and saved["teacher"] == {
        **saved["teacher"],
        "model": tiny_bert,
        "finetune": True,
    }
    assert saved["student"]["num_layers"] == 2
    assert main(["distill", "--train", "x.tsv"]) == 2
    assert "distill: give --config run.yaml, or --train FILE and --validation FILE" in capsys.readouterr().err
    assert main(["distill", "-c", "run.yaml", "--train", "x.tsv", "--validation", "y.tsv"]) == 2
    assert "--train, --validation: give either --config or these options" in capsys.readouterr().err


def test_evaluate_takes_overrides_after_its_options_and_scores_the_test_split(
    tiny_bert: str, sst2_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import yaml

    cfg = _tiny(tiny_bert, sst2_dir, tmp_path / "run")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    args = ["evaluate", tiny_bert, "-c", str(tmp_path / "c.yaml"), "--no-speed", "--json"]
    assert main(args + ["data.max_eval_samples=10"]) == 0
    assert json.loads(capsys.readouterr().out)["examples"] == 10
    assert main(args + ["--split", "test"]) == 2
    assert "--split test: the config has no test split" in capsys.readouterr().err
    assert main(args + ["--split", "test", f"data.test_file={sst2_dir / 'dev.tsv'}", "data.max_eval_samples=10"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["split"] == "test" and result["examples"] == 872  # the test split is scored whole


def test_report_help_has_no_override_footer(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "--help"]) == 0
    assert "Overrides:" not in capsys.readouterr().out
    assert main(["distill", "--help"]) == 0
    assert "Overrides:" in capsys.readouterr().out


def test_the_second_twin_starts_from_the_pretrained_checkpoint(tiny_bert: str, sst2_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForSequenceClassification

    cfg = _tiny(tiny_bert, sst2_dir, tmp_path / "run")
    cfg["distill"]["guard"] = False
    report = textdistill.distill(cfg)
    pre, twin = report["baseline_pretrained"], report["baseline"]
    assert pre["init"] == f"layers [0, 3] of the pretrained {tiny_bert}, before fine-tuning"
    assert twin["init"] == "layers [0, 3] of the fine-tuned teacher, as the student"
    assert pre["retained_pct"] == pytest.approx(
        100 * pre["metrics"]["accuracy"] / report["teacher"]["metrics"]["accuracy"]
    )
    # its weights outside the head moved from the pretrained ones, not from the fine-tuned teacher's: they differ
    a = AutoModelForSequenceClassification.from_pretrained(tmp_path / "run" / "baseline-pretrained").state_dict()
    b = AutoModelForSequenceClassification.from_pretrained(tmp_path / "run" / "baseline").state_dict()
    assert not torch.equal(a["bert.embeddings.word_embeddings.weight"], b["bert.embeddings.word_embeddings.weight"])
    text = (tmp_path / "run" / "report.md").read_text()
    assert "| student (no distillation, pretrained init) |" in text and "- twins (labels only" in text
    assert "the whole teacher (fine-tuned weights and soft targets) adds" in text
    # off where it cannot apply: a teacher given fine-tuned
    from textdistill.config import config_from_dict
    from textdistill.errors import TextDistillError

    with pytest.raises(TextDistillError, match="distill.pretrained_twin: needs the twin"):
        config_from_dict(
            {**cfg, "teacher": {"model": tiny_bert, "finetune": False}, "distill": {"pretrained_twin": True}}
        )


@pytest.mark.parametrize(
    "scores,n,chosen",
    [
        ((0.5161, 0.7649, 0.7798), 872, 1e-4),  # SST-2's teacher trials: 1e-4 is within noise of 3e-4 after 42 steps
        ((0.5161, 0.7000, 0.7798), 872, 3e-4),  # a gap noise does not make: the best rate
        ((0.5161, 0.7649, 0.7798), 100_000, 3e-4),  # the same gap on far more examples is real
        ((0.80, None, 0.80), 500, 3e-5),  # a tie: the smaller; a diverged trial is never chosen
        ((None, None, None), 500, 3e-5),  # all diverged: the smallest
    ],
)
def test_the_smallest_rate_within_noise_of_the_best_is_chosen(scores, n, chosen) -> None:
    from textdistill.tuning import pick_rate

    trials = [{"learning_rate": r, "accuracy": s} for r, s in zip(TRANSFORMER_RATES, scores)]
    rate, margin = pick_rate(trials, "accuracy", n, min(TRANSFORMER_RATES))  # no untrained score: every trial counts
    assert rate == chosen
    best = max((s for s in scores if s is not None), default=None)
    if best is not None:
        assert margin == pytest.approx(math.sqrt(2 * best * (1 - best) / n))


@pytest.mark.parametrize(
    "scores,start,chosen",
    [
        ((0.6838, 0.6985, 0.7010), 0.6838, 1e-4),  # MRPC: 3e-5 still guesses the majority class; 1e-4 learned
        ((0.6838, 0.6985, 0.7010), None, 3e-5),  # the same trials without the untrained score: 3e-5 looks as good
        ((0.6838, 0.6850, 0.6840), 0.6838, 3e-4),  # none learned beyond noise: the largest rate, which moves most
        ((0.80, 0.85, 0.84), 0.50, 1e-4),  # all learned: the smallest within noise of the best
    ],
)
def test_a_rate_must_learn_beyond_the_untrained_score_to_count(scores, start, chosen) -> None:
    from textdistill.tuning import pick_rate

    trials = [{"learning_rate": r, "accuracy": s} for r, s in zip(TRANSFORMER_RATES, scores)]
    assert pick_rate(trials, "accuracy", 408, min(TRANSFORMER_RATES), start)[0] == chosen


def test_the_majority_answer_is_the_floor_a_teacher_must_beat() -> None:
    """RTE's chance-level teacher (52.71 = the share of its dev set's majority class) passed the guard, which had
    only compared it with 30 steps of labels (47.29, the minority share). Answering the most frequent training
    label for every example is now a floor too."""
    from types import SimpleNamespace

    from textdistill.data import LabelSet, TextData
    from textdistill.pipeline import majority_baseline

    train = TextData(["a", "b", "c", "d"], ["no", "no", "no", "yes"])
    labels = LabelSet.from_data(train, "classification")
    dev = SimpleNamespace(labels=labels.encode(TextData(["e", "f", "g", "h", "i"], ["no", "yes", "no", "no", "yes"])))
    prep = SimpleNamespace(labels=labels, train=train)
    assert majority_baseline(prep, dev, "accuracy") == ("no", pytest.approx(0.6))
    assert majority_baseline(prep, dev, "macro_f1")[1] == pytest.approx((0.75 + 0.0) / 2)
    report = {
        "metric": "accuracy",
        "teacher": {"metrics": {"accuracy": 0.5271}},
        "student": {"metrics": {"accuracy": 0.5596}, "retained_pct": 106.2},
        "baseline": {"metrics": {"accuracy": 0.5379}},
        "data": {"train_examples": 2490},
        "guard": {
            "teacher": 0.5271,
            "labels_only_estimate": 0.4729,
            "majority_label": "not_entailment",
            "majority_baseline": 0.5271,
            "weak": True,
        },
    }  # RTE's run, as the guard now sees it
    assert headline(report).startswith(
        "The teacher is weak: 52.71 accuracy on dev, no better than always answering 'not_entailment' (52.71)"
    )
