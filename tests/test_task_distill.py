"""Task distillation through the pipeline: a tiny two-task run end to end (an ensemble on one task, a regression
task), and the config errors that must stop a run before any training."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModel

from textdistill.config import data_dir, load_config
from textdistill.errors import TextDistillError
from textdistill.multitask import MultiTaskModel, predict
from textdistill.pipeline import distill

STSB = Path(data_dir()) / "glue_stsb"


def fine_tuned(model: str, epochs: float = 1.0) -> dict:
    return {
        "model": model,
        "finetune": True,
        "training": {
            "learning_rate": 2e-3,
            "num_train_epochs": epochs,
            "per_device_train_batch_size": 32,
            "warmup_ratio": 0.0,
        },
    }


def two_tasks(tiny_bert: str, sst2_dir: Path, out: Path) -> dict:
    if not (STSB / "train.tsv").is_file():
        pytest.skip("shared STS-B data not found")
    return {
        "output_dir": str(out),
        "seed": 3,
        "tasks": [
            {
                "name": "sst2",
                "fusion": "dev_score",
                "data": {
                    "train_file": str(sst2_dir / "train.tsv"),
                    "validation_file": str(sst2_dir / "dev.tsv"),
                    "max_train_samples": 256,
                    "max_eval_samples": 96,
                    "max_length": 32,
                },
                "teachers": [fine_tuned(tiny_bert), fine_tuned(tiny_bert, 2.0)],
            },
            {
                "name": "stsb",
                "metric": "corr",
                "data": {
                    "train_file": str(STSB / "train.tsv"),
                    "validation_file": str(STSB / "dev.tsv"),
                    "text_column": "sentence1",
                    "text_pair_column": "sentence2",
                    "label_column": "score",
                    "task_type": "regression",
                    "max_train_samples": 160,
                    "max_eval_samples": 96,
                    "max_length": 48,
                },
                "teachers": [fine_tuned(tiny_bert)],
            },
        ],
        "student": {
            "num_layers": 2,
            "training": {"learning_rate": 1e-3, "num_train_epochs": 2, "per_device_train_batch_size": 16},
        },
        "distill": {"sampling": "size_power", "tau": 0.5, "temperature": 2.0, "alpha": 0.8},
        "eval": {"latency_repeats": 2, "latency_samples": 16},
    }


def test_two_tasks_with_an_ensemble_end_to_end(tiny_bert: str, sst2_dir: Path, tmp_path: Path, capsys) -> None:
    report = distill(two_tasks(tiny_bert, sst2_dir, tmp_path / "run"))
    run = Path(report["output_dir"])
    assert run == tmp_path / "run" and not (tmp_path / "run.partial").exists()
    sst, sts = report["tasks"]["sst2"], report["tasks"]["stsb"]
    # dev_score fusion: the two teachers' weights are their dev accuracies, normalised
    accs = [t["metrics"]["accuracy"] for t in sst["teachers"]]
    assert [t["weight"] for t in sst["teachers"]] == pytest.approx([a / sum(accs) for a in accs], abs=1e-6)
    assert "ensemble" in sst and "ensemble" not in sts  # the ensemble is scored itself
    assert sst["reference_score"] == sst["ensemble"]["metrics"]["accuracy"]
    assert sts["reference_score"] == sts["teachers"][0]["metrics"]["corr"]
    for entry in (sst, sts):
        m = entry["metric"]
        for side in ("student", "baseline"):
            assert entry[side]["retained_pct"] == pytest.approx(
                100 * entry[side]["metrics"][m] / entry["reference_score"]
            )
    avg = report["average"]
    assert avg["student"] == pytest.approx(
        (sst["student"]["metrics"]["accuracy"] + sts["student"]["metrics"]["corr"]) / 2
    )
    assert report["teachers"]["count"] == 3 and report["student"]["layers"] == [0, 3]
    for j in (0, 1):
        assert (run / "teachers" / f"sst2-{j}" / "model.safetensors").is_file()
    assert (run / "report.md").read_text().count("| sst2 ") == 1
    card = (run / "student" / "README.md").read_text()  # an HF model card: a result per task, the teachers named
    meta = yaml.safe_load(card.split("---")[1])
    results = meta["model-index"][0]["results"]
    assert [r["task"]["name"] for r in results] == ["sst2", "stsb"] and meta["pipeline_tag"] == "text-classification"
    assert results[1]["metrics"][0]["value"] == pytest.approx(sts["student"]["metrics"]["corr"], abs=1e-4)
    assert "| sst2 " in card and "Distilled multi-task student" in card
    # one saved student, every task by name
    model = AutoModel.from_pretrained(run / "student")
    assert isinstance(model, MultiTaskModel) and set(model.heads) == {"sst2", "stsb"}
    labels = predict(run / "student", "sst2", ["a gorgeous film", "dull and tiresome"])
    assert set(labels) <= {"0", "1"} and len(labels) == 2
    scores = predict(run / "student", "stsb", ["A man plays a guitar."], pairs=["A man is playing guitar."])
    assert len(scores) == 1 and isinstance(scores[0], float)
    assert model.config.task("stsb")["metric"] == "corr"
    # the command line: any task by name, pairs from a file; a one-task teacher takes no task
    from textdistill.cli import main

    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("A man plays a guitar.\tA man is playing guitar.\nA dog runs.\tA cat sleeps.\n", encoding="utf-8")
    assert main(["predict", str(run / "student"), "--task", "stsb", "--file", str(pairs)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[1] for line in lines] == ["A man plays a guitar.", "A dog runs."]
    assert [float(line.split("\t")[0]) for line in lines] == pytest.approx(
        predict(
            run / "student",
            "stsb",
            ["A man plays a guitar.", "A dog runs."],
            ["A man is playing guitar.", "A cat sleeps."],
        ),
        abs=1e-4,
    )
    assert main(["predict", str(run / "student"), "--task", "sst2", "a gorgeous film", "dull and tiresome"]) == 0
    assert [line.split("\t")[0] for line in capsys.readouterr().out.splitlines()] == labels
    assert main(["predict", str(run / "student"), "x"]) == 2
    assert "task: give one; this model has tasks ['sst2', 'stsb']" in capsys.readouterr().err
    assert main(["predict", str(run / "teachers" / "sst2-0"), "--task", "sst2", "x"]) == 2
    assert "one-task model" in capsys.readouterr().err
    assert main(["predict", str(run / "teachers" / "sst2-0"), "a gorgeous film"]) == 0
    assert capsys.readouterr().out.split("\t")[0] in {"0", "1"}
    pairs.write_text("one\ttwo\nthree\n", encoding="utf-8")
    assert main(["predict", str(run / "student"), "--task", "stsb", "-f", str(pairs)]) == 2
    assert (
        "pairs.tsv: line 2: expected TEXT<TAB>PAIR like line 1, got 1 tab-separated fields"
    ) in capsys.readouterr().err


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: c["tasks"].append(dict(c["tasks"][0])), "two tasks are named 'sst2'"),
        (lambda c: c["tasks"][1].pop("data"), "tasks.1.data: required key is missing"),
        (lambda c: c["tasks"][1].update(teachers=[]), "task 'stsb' has no teachers"),
        (
            lambda c: c["tasks"][0].update(fusion="weighted"),
            "fusion 'weighted' needs teacher_weights, one per teacher (2)",
        ),
        (lambda c: c["tasks"][1].update(objective="mean_kl"), "objective 'mean_kl' needs class probabilities"),
        (lambda c: c["tasks"][1].update(metric="mcc"), "'mcc' does not apply to a regression task"),
        (lambda c: c.update(eval={"metric": "accuracy"}), "a multi-task run scores each task by its own metric"),
        (
            lambda c: c["student"].update(num_layers=None, architecture={"type": "bilstm"}),
            "a multi-task student is a transformer",
        ),
    ],
)
def test_config_errors(tiny_bert: str, sst2_dir: Path, tmp_path: Path, change, message: str) -> None:
    cfg = two_tasks(tiny_bert, sst2_dir, tmp_path / "run")
    change(cfg)
    with pytest.raises(TextDistillError, match=message.replace("(", r"\(").replace(")", r"\)")):
        distill(cfg)
    assert not (tmp_path / "run").exists() and not (tmp_path / "run.partial").exists()


def test_teacher_labels_must_match_the_data(tiny_bert: str, sst2_dir: Path, tmp_path: Path) -> None:
    """A fine-tuned teacher whose labels are not the task's stops the run before anything is trained."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    three = tmp_path / "three-labels"
    m = AutoModelForSequenceClassification.from_pretrained(
        tiny_bert, num_labels=3, ignore_mismatched_sizes=True, id2label={0: "neg", 1: "neu", 2: "pos"}
    )
    m.save_pretrained(three)
    AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(three)
    cfg = two_tasks(tiny_bert, sst2_dir, tmp_path / "run")
    cfg["tasks"][0]["teachers"].append({"model": str(three)})
    with pytest.raises(
        TextDistillError,
        match=r"tasks\.0\.teachers\.2\.model \(task 'sst2'\): .* predicts 3 labels "
        r"but the data has 2",
    ):
        distill(cfg)
    assert not (tmp_path / "run.partial").exists()


def test_a_teacher_with_its_labels_in_another_order_is_reordered(
    tiny_bert: str, sst2_dir: Path, tmp_path: Path
) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from textdistill.data import LabelSet
    from textdistill.task_distill import _in_task_order, _load_task

    swapped = tmp_path / "swapped"
    m = AutoModelForSequenceClassification.from_pretrained(
        tiny_bert, id2label={0: "1", 1: "0"}, label2id={"1": 0, "0": 1}
    )
    m.save_pretrained(swapped)
    AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(swapped)
    task_cfg = two_tasks(tiny_bert, sst2_dir, tmp_path / "run")["tasks"][0]
    task_cfg["teachers"] = [{"model": str(swapped)}]
    from textdistill.config import TaskConfig

    task = _load_task(0, TaskConfig.model_validate(task_cfg), 0)
    assert task.labels.names == LabelSet(("0", "1")).names and task.teachers[0].columns == [1, 0]
    logits = torch.tensor([[5.0, -5.0]])  # the teacher says "1"
    assert _in_task_order(logits, task.teachers[0]).argmax(-1).item() == 1


def test_overrides_index_into_the_task_list(tiny_bert: str, sst2_dir: Path, tmp_path: Path) -> None:
    import yaml

    path = tmp_path / "mt.yaml"
    path.write_text(yaml.safe_dump(two_tasks(tiny_bert, sst2_dir, tmp_path / "run")))
    cfg = load_config(path, ["tasks.1.data.max_train_samples=10", "tasks.0.teachers.1.finetune=false"])
    assert cfg.tasks[1].data.max_train_samples == 10 and cfg.tasks[0].teachers[1].finetune is False
    with pytest.raises(TextDistillError, match="'5' is not an index of a list of 2"):
        load_config(path, ["tasks.5.name=x"])


def test_teachers_with_their_own_tokenizers(tiny_bert: str, sst2_dir: Path, tmp_path: Path) -> None:
    """Each teacher reads the task's text through its own tokenizer; their outputs line up example by example."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    from textdistill.config import MultiTaskRunConfig
    from textdistill.data import Collator, DistillDataset, tokenize
    from textdistill.metrics import predict_logits
    from textdistill.task_distill import _load_task, _teacher_outputs

    texts = [line.split("\t")[0] for line in (sst2_dir / "train.tsv").read_text(encoding="utf-8").splitlines()[1:2000]]
    raw = Tokenizer(models.BPE(unk_token="<unk>"))  # a different kind of vocabulary: byte-pair, cased
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    raw.train_from_iterator(
        texts, trainers.BpeTrainer(vocab_size=500, special_tokens=["<pad>", "<unk>", "<s>", "</s>"])
    )
    raw.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> $B </s>", special_tokens=[("<s>", 2), ("</s>", 3)]
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=raw, unk_token="<unk>", pad_token="<pad>", cls_token="<s>", sep_token="</s>"
    )
    torch.manual_seed(2)
    other = BertForSequenceClassification(
        BertConfig(
            vocab_size=500,
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=64,
            num_labels=2,
        )
    )
    other.save_pretrained(tmp_path / "bpe-teacher")
    tok.save_pretrained(tmp_path / "bpe-teacher")
    cfg = two_tasks(tiny_bert, sst2_dir, tmp_path / "run")
    cfg["tasks"][0]["teachers"] = [{"model": tiny_bert}, {"model": str(tmp_path / "bpe-teacher")}]
    cfg["distill"]["cache_dir"] = str(tmp_path / "cache")
    mt = MultiTaskRunConfig.model_validate(cfg)
    task = _load_task(0, mt.tasks[0], 0)
    train_out, dev_out = _teacher_outputs(mt, task, 32)
    assert train_out.shape == (256, 2, 2) and dev_out.shape == (2, 96, 2)
    for k, t in enumerate(task.teachers):
        own = DistillDataset(tokenize(t.tokenizer, task.train, 32), task.labels.encode(task.train))
        assert torch.allclose(
            train_out[:, k], predict_logits(t.model, own, Collator(t.tokenizer.pad_token_id), 64), atol=1e-5
        )
    assert task.teachers[1].tokenizer.tokenize("charming") != task.teachers[0].tokenizer.tokenize("charming")
