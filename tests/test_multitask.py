"""Multi-task student: shared encoder + heads, one-task batches, the per-task objective, a tiny two-task run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer, BertConfig, BertModel

from textdistill.config import TrainingConfig, data_dir
from textdistill.data import Collator, DistillDataset, TextData, tokenize
from textdistill.ensemble import kl_to_target
from textdistill.losses import distillation_loss
from textdistill.metrics import predict_logits, task_metrics
from textdistill.multitask import (
    MultiTaskBatchSampler,
    MultiTaskDataset,
    MultiTaskModel,
    MultiTaskObjective,
    TaskSpec,
    multitask_from_encoder,
    predict,
    uniform_spec,
)
from textdistill.train import train_loop

TASKS = [{"name": "sentiment", "labels": ["neg", "pos"]}, {"name": "similarity", "labels": None}]


def tiny_encoder() -> BertModel:
    torch.manual_seed(0)
    return BertModel(
        BertConfig(
            vocab_size=50,
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=32,
        )
    )


def test_model_round_trip_and_task_errors(tmp_path: Path) -> None:
    enc = tiny_encoder()
    model = multitask_from_encoder(enc, TASKS).eval()
    ids = torch.randint(3, 50, (3, 7))
    assert torch.equal(model.encoder.embeddings.word_embeddings.weight, enc.embeddings.word_embeddings.weight)
    out_s = model(input_ids=ids, task="sentiment").logits
    out_r = model(input_ids=ids, task="similarity").logits
    assert out_s.shape == (3, 2) and out_r.shape == (3, 1)
    model.save_pretrained(tmp_path / "mt")
    loaded = AutoModel.from_pretrained(tmp_path / "mt").eval()
    assert isinstance(loaded, MultiTaskModel)
    assert torch.allclose(loaded(input_ids=ids, task="sentiment").logits, out_s)
    assert torch.allclose(loaded(input_ids=ids, task="similarity").logits, out_r)
    with pytest.raises(KeyError, match="no task 'nli'"):
        loaded(input_ids=ids, task="nli")
    with pytest.raises(ValueError, match="task= is required"):
        loaded(input_ids=ids)


def test_batches_hold_one_task_and_follow_the_schedule() -> None:
    sampler = MultiTaskBatchSampler([10, 30], 4, "proportional", 1.0, seed=5)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 3 + 8
    for b in batches:
        assert all(i < 10 for i in b) or all(i >= 10 for i in b)
    assert batches == list(MultiTaskBatchSampler([10, 30], 4, "proportional", 1.0, seed=5))
    assert list(sampler) != batches  # the next epoch is shuffled again
    rr = list(MultiTaskBatchSampler([8, 8], 4, "round_robin", 1.0, seed=0))
    assert [b[0] >= 8 for b in rr] == [False, True, False, True]
    assert sorted(i for b in rr for i in b) == list(range(16))  # every example once per epoch here
    grouped = MultiTaskBatchSampler([8], 4, "proportional", 1.0, seed=0, lengths=[[1, 9, 2, 8, 3, 7, 4, 6]])
    assert sorted(sum(([i] for b in grouped for i in b), [])) == list(range(8))


def test_objective_with_one_teacher_is_plain_kd() -> None:
    class Fixed(torch.nn.Module):
        def forward(self, task: str, **inputs):
            from transformers.modeling_outputs import SequenceClassifierOutput

            return SequenceClassifierOutput(logits=self.logits[task])

    model = Fixed()
    model.logits = {"sentiment": torch.tensor([[0.2, -0.1], [1.0, 0.5]]), "similarity": torch.tensor([[2.0], [3.0]])}
    t = torch.tensor([[[1.0, 0.0]], [[0.0, 2.0]]])  # [B=2, K=1, C=2]
    obj = MultiTaskObjective(
        [uniform_spec("sentiment", 1, temperature=2.0, alpha=0.7), TaskSpec("similarity", regression=True, alpha=0.5)]
    )
    batch = {"student": {}, "labels": torch.tensor([0, 1]), "teacher_logits": t, "task": 0}
    got = obj(model, batch)
    want = distillation_loss(model.logits["sentiment"], t[:, 0], batch["labels"], kind="kl", temperature=2.0, alpha=0.7)
    assert torch.allclose(got["loss"], want["loss"]) and torch.allclose(got["kd"], want["kd"])
    reg = {
        "student": {},
        "labels": torch.tensor([1.0, 3.0]),
        "teacher_logits": torch.tensor([[[2.0]], [[5.0]]]),
        "task": 1,
    }
    got = obj(model, reg)  # soft: MSE to the teacher [0, 4] / 2 = 2; hard: MSE to gold [1, 0] / 2 = 0.5
    assert torch.allclose(got["kd"], torch.tensor(2.0)) and torch.allclose(got["ce"], torch.tensor(0.5))
    no_teacher = obj(model, {k: v for k, v in batch.items() if k != "teacher_logits"})
    assert set(no_teacher) == {"loss", "ce"}
    annealing = MultiTaskObjective([uniform_spec("sentiment", 1, temperature=1.0, alpha=1.0, anneal=True)])
    at_end = annealing(model, batch, progress=1.0)  # all gold: KL to one-hot = cross-entropy
    assert torch.allclose(at_end["loss"], kl_to_target(model.logits["sentiment"], torch.eye(2), 1.0))


STSB = Path(data_dir()) / "glue_stsb"


def test_two_tasks_end_to_end(tiny_bert: str, sst2_dir: Path, tmp_path: Path) -> None:
    if not (STSB / "train.tsv").is_file():
        pytest.skip("shared STS-B data not found")
    tok = AutoTokenizer.from_pretrained(tiny_bert)
    teacher = AutoModelForSequenceClassification.from_pretrained(tiny_bert).eval()
    torch.manual_seed(1)
    reg_teacher = AutoModelForSequenceClassification.from_pretrained(
        tiny_bert, num_labels=1, ignore_mismatched_sizes=True
    ).eval()

    def rows(path: Path, cols: tuple[int, ...], n: int) -> list[list[str]]:
        lines = path.read_text(encoding="utf-8").splitlines()[1 : n + 1]
        return [[line.split("\t")[c] for c in cols] for line in lines]

    sst = rows(sst2_dir / "train.tsv", (0, 1), 160)
    sts = rows(STSB / "train.tsv", (7, 8, 9), 96)
    sst_data = TextData([r[0] for r in sst], [r[1] for r in sst])
    sts_data = TextData([r[0] for r in sts], [r[2] for r in sts], pairs=[r[1] for r in sts])
    sst_set = DistillDataset(tokenize(tok, sst_data, 48), [int(r[1]) for r in sst])
    sts_set = DistillDataset(tokenize(tok, sts_data, 64), [float(r[2]) for r in sts])
    collator = Collator(tok.pad_token_id)
    # sentiment: two teachers made from the tiny (random) teacher by sharpening its logits to about +-2 and +-1;
    # the student starts from the same encoder, so their targets are learnable in a few dozen steps
    raw = predict_logits(teacher, sst_set, collator, 64)
    raw = (raw - raw.mean(0)) / raw.std(0)
    sst_teachers = torch.stack([2.0 * raw, 1.0 * raw], 1)
    sts_logits = predict_logits(reg_teacher, sts_set, collator, 64)
    train = MultiTaskDataset(
        [sst_set.with_teacher_logits(sst_teachers), sts_set.with_teacher_logits(sts_logits[:, None])],
        sampling="size_power",
        tau=0.5,
    )
    student = multitask_from_encoder(
        teacher.base_model, [{"name": "sst2", "labels": ["0", "1"]}, {"name": "stsb", "labels": None}]
    )
    objective = MultiTaskObjective(
        [
            uniform_spec("sst2", 2, fusion="mean_logits", temperature=2.0, alpha=0.9),
            uniform_spec("stsb", 1, regression=True, alpha=1.0),
        ]
    )

    def gap() -> float:  # how far the student's sentiment head is from the teacher on the training sentences
        student.eval()
        with torch.no_grad():
            s = torch.cat(
                [
                    student(
                        **collator([sst_set[i] for i in range(j, min(j + 64, len(sst_set)))])["student"], task="sst2"
                    ).logits
                    for j in range(0, len(sst_set), 64)
                ]
            )
        return float(kl_to_target(s, torch.softmax(sst_teachers.mean(1), -1)))  # the fused (mean_logits) target

    before = gap()
    # at 5e-3 the end point hung on the dropout draws: over seeds 0-3 the gap fell to 0.64 / 0.19 / 0.12 / 0.06 of
    # where it began (0.14 / 0.11 / 0.33 / 0.05 with torch's own masks); at 2e-3 to 0.07-0.16 (0.06-0.22)
    args = TrainingConfig(
        learning_rate=2e-3, per_device_train_batch_size=16, num_train_epochs=10, logging_steps=2, warmup_ratio=0.0
    )

    def evaluate(m):
        sst_m = task_metrics(
            torch.cat([m(**collator([sst_set[i]])["student"], task="sst2").logits for i in range(32)]),
            torch.tensor(sst_set.labels[:32]),
        )
        return {"average": sst_m["accuracy"]}

    result = train_loop(
        student, train, collator, args, objective, evaluate, "average", 0, tmp_path / "log.jsonl", keep_best=False
    )
    assert result.steps == 10 * (len(sst_set) // 16 + len(sts_set) // 16)
    assert gap() < 0.5 * before  # the shared encoder + head learnt the teacher's soft targets
    student.save_pretrained(tmp_path / "mt")
    tok.save_pretrained(tmp_path / "mt")
    labels = predict(tmp_path / "mt", "sst2", ["a great movie", "dull and boring"])
    scores = predict(tmp_path / "mt", "stsb", ["a man plays"], pairs=["a man is playing"])
    assert set(labels) <= {"0", "1"} and len(labels) == 2
    assert len(scores) == 1 and isinstance(scores[0], float)
