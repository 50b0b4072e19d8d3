"""Non-transformer students (BiLSTM, TextCNN, MLP): shapes, padding, HF round trip, word tokenizer, teacher
embedding init, a short training run, and spec validation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from textdistill.config import data_dir
from textdistill.data import LabelSet
from textdistill.errors import TextDistillError
from textdistill.students import (
    STUDENT_TYPES,
    ClassicStudent,
    build_classic_student,
    build_word_tokenizer,
    init_embeddings_from_teacher,
)

LABELS = LabelSet(("negative", "neutral", "positive"))
VOCAB = 60
PAD = 0

SMALL: dict[str, dict[str, Any]] = {  # per type: small sizes that still exercise every branch
    "bilstm": {"hidden_size": 12, "num_layers": 2, "pooling": "max", "classifier_hidden_size": 10},
    "textcnn": {"kernel_sizes": [2, 3, 5], "num_filters": 6},
    "mlp": {"hidden_sizes": [20, 10]},
}


def small_student(kind: str, **overrides: Any) -> ClassicStudent:
    config_class, model_class = STUDENT_TYPES[kind]
    fields = {"vocab_size": VOCAB, "embedding_dim": 16, "pad_token_id": PAD, **SMALL[kind], **overrides}
    torch.manual_seed(0)
    return model_class(config_class(id2label=LABELS.id2label, label2id=LABELS.label2id, **fields)).eval()


def sst2_rows(sst2_dir: Path, n: int) -> tuple[list[str], list[int]]:
    lines = (sst2_dir / "train.tsv").read_text(encoding="utf-8").splitlines()[1 : n + 1]
    rows = [line.split("\t") for line in lines]
    return [r[0].strip() for r in rows], [int(r[1]) for r in rows]


KINDS = pytest.mark.parametrize("kind", sorted(STUDENT_TYPES))


# --------------------------------------------------------------------------------------------------------------------
# Models


@KINDS
def test_forward_shapes_loss_and_sentence_vector(kind: str) -> None:
    model = small_student(kind)
    ids = torch.randint(3, VOCAB, (4, 9))
    labels = torch.tensor([0, 1, 2, 1])
    out = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels, output_hidden_states=True)
    assert out.logits.shape == (4, len(LABELS))
    assert torch.allclose(out.loss, torch.nn.functional.cross_entropy(out.logits, labels))
    (pooled,) = out.hidden_states
    assert pooled.shape[0] == 4 and pooled.dim() == 2
    plain = model(input_ids=ids)  # no mask = no padding; no labels = no loss; no hidden states unless asked
    assert plain.loss is None and plain.hidden_states is None
    assert torch.allclose(plain.logits, out.logits)


@KINDS
def test_padding_does_not_change_the_result(kind: str) -> None:
    """Each sequence alone equals the same sequence inside a right-padded batch, whatever ids the padding holds."""
    model = small_student(kind)
    with torch.no_grad():
        model.embeddings.weight[PAD].normal_()  # as after a teacher init: the pad row need not be zero
    lengths = [1, 4, 11]  # shorter than every kernel, between, longer than all
    seqs = [torch.randint(3, VOCAB, (n,)) for n in lengths]
    longest = max(lengths)
    ids = torch.randint(0, VOCAB, (len(seqs), longest))  # junk, not pad ids, beyond each length
    mask = torch.zeros_like(ids)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = s
        mask[i, : len(s)] = 1
    batched = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    for i, s in enumerate(seqs):
        alone = model(input_ids=s[None], attention_mask=torch.ones_like(s[None]), output_hidden_states=True)
        assert torch.allclose(alone.logits[0], batched.logits[i], atol=1e-5), f"{kind}: length {len(s)}"
        assert torch.allclose(alone.hidden_states[0][0], batched.hidden_states[0][i], atol=1e-5)


@KINDS
def test_save_pretrained_round_trip(kind: str, tmp_path: Path) -> None:
    model = small_student(kind)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert type(loaded) is type(model)
    assert loaded.config.model_type == f"textdistill-{kind}"
    assert loaded.config.id2label == LABELS.id2label and loaded.config.label2id == LABELS.label2id
    ids = torch.randint(0, VOCAB, (3, 8), generator=torch.Generator().manual_seed(1))
    mask = torch.tensor([[1] * 8, [1] * 5 + [0] * 3, [1] + [0] * 7])
    inputs = {"input_ids": ids, "attention_mask": mask}
    with torch.no_grad():
        expected = model(**inputs).logits
        # close, not bit-equal: the LSTM's CPU kernel need not give the same bits call to call (it did not, once, on
        # a loaded machine); a wrong load is far off, as a weight moved by 1e-3 shows
        torch.testing.assert_close(loaded(**inputs).logits, expected, rtol=0, atol=1e-5)
        weight = loaded.get_input_embeddings().weight
        weight[ids[0, 0]] += 1e-3
        assert (loaded(**inputs).logits - expected).abs().max() > 1e-5


@KINDS
def test_stages_can_be_tapped_by_dotted_path(kind: str) -> None:
    """A forward hook on ``pooler`` sees the sentence vector returned in hidden_states; ``encoder`` is [B, T, D]."""
    model = small_student(kind)
    seen: dict[str, torch.Tensor] = {}
    names = ["embeddings", "pooler"] + (["encoder"] if kind != "mlp" else [])
    handles = [
        model.get_submodule(name).register_forward_hook(lambda _m, _i, out, name=name: seen.__setitem__(name, out))
        for name in names
    ]
    ids = torch.randint(3, VOCAB, (2, 7))
    out = model(input_ids=ids, output_hidden_states=True)
    for h in handles:
        h.remove()
    assert torch.equal(seen["pooler"], out.hidden_states[0])
    assert seen["embeddings"].shape == (2, 7, 16)
    if "encoder" in seen:
        assert seen["encoder"].shape[:2] == (2, 7) and seen["encoder"].shape[2] == out.hidden_states[0].shape[1]


def test_textcnn_takes_one_token_with_kernel_five() -> None:
    model = small_student("textcnn", kernel_sizes=[5])
    out = model(input_ids=torch.tensor([[7]]), attention_mask=torch.tensor([[1]]))
    assert out.logits.shape == (1, len(LABELS))
    assert torch.isfinite(out.logits).all()


def test_textcnn_padding_cannot_win_the_max() -> None:
    """With every real window negative before ReLU, the pooled vector is 0: a padded window would not be."""
    model = small_student("textcnn", kernel_sizes=[2], num_filters=1)
    with torch.no_grad():
        model.encoder.convs[0].weight.fill_(-1.0)
        model.encoder.convs[0].bias.zero_()
        model.embeddings.weight.fill_(1.0)  # every real token pushes the filter negative
        model.embeddings.weight[PAD].fill_(-5.0)  # a padded window would be strongly positive if it were read
    ids = torch.tensor([[5, 6, PAD, PAD, PAD]])
    out = model(input_ids=ids, attention_mask=torch.tensor([[1, 1, 0, 0, 0]]), output_hidden_states=True)
    assert torch.equal(out.hidden_states[0], torch.zeros(1, 1))


def test_textcnn_pools_whole_windows_only() -> None:
    """Kim's valid convolution: a window hanging over the end of a sequence is not pooled, unless it is the only one."""
    model = small_student("textcnn", kernel_sizes=[2], num_filters=1)
    with torch.no_grad():
        model.encoder.convs[0].weight.copy_(torch.tensor([1.0, -2.0]).expand(1, 16, 2) / 16)
        model.encoder.convs[0].bias.zero_()
        model.embeddings.weight.fill_(1.0)  # window (token, token) -> -1; (token, nothing) -> +1
    whole = model(input_ids=torch.tensor([[5, 6, 7]]), output_hidden_states=True).hidden_states[0]
    assert torch.equal(whole, torch.zeros(1, 1))
    short = model(input_ids=torch.tensor([[5]]), output_hidden_states=True).hidden_states[0]
    assert torch.allclose(short, torch.ones(1, 1))  # one token: its window is padded inside the model


# --------------------------------------------------------------------------------------------------------------------
# Word tokenizer


def test_word_tokenizer_from_sst2(sst2_dir: Path, tmp_path: Path) -> None:
    texts, _ = sst2_rows(sst2_dir, 500)
    tok = build_word_tokenizer(texts, vocab_size=400, min_frequency=2)
    assert len(tok) == 400
    assert (tok.pad_token_id, tok.unk_token_id, tok.sep_token_id) == (0, 1, 2)
    assert tok.convert_ids_to_tokens([0, 1, 2]) == ["[PAD]", "[UNK]", "[SEP]"]

    ids = tok("The film , qwzxv.")["input_ids"]
    assert tok.convert_ids_to_tokens(ids) == ["the", "film", ",", "[UNK]", "."]  # lowercased, punctuation split, no CLS
    pair = tok("a good film", "qwzxv")
    assert pair["input_ids"] == tok("a good film")["input_ids"] + [2, 1]
    assert set(pair) == {"input_ids", "attention_mask"}  # no token_type_ids: the students ignore them

    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    batch = texts[:20]
    assert again(batch)["input_ids"] == tok(batch)["input_ids"]
    assert again(batch[:3], batch[3:6])["input_ids"] == tok(batch[:3], batch[3:6])["input_ids"]
    assert again.pad_token_id == 0


def test_word_tokenizer_is_character_level_on_chinese(tmp_path: Path) -> None:
    cn = Path(data_dir()) / "chnsenticorp" / "train.tsv"
    if not cn.is_file():
        pytest.skip("shared ChnSentiCorp data not found")
    texts = [line.split("\t", 1)[1] for line in cn.read_text(encoding="utf-8").splitlines()[1:301]]
    tok = build_word_tokenizer(texts + ["Café Crème"], vocab_size=3000)
    # every CJK character is its own word, full-width punctuation is NFKC-folded and split, accents are kept
    assert tok.tokenize("酒店环境不错，服务也很好！Café") == [
        "酒",
        "店",
        "环",
        "境",
        "不",
        "错",
        ",",
        "服",
        "务",
        "也",
        "很",
        "好",
        "!",
        "café",
    ]
    assert all(len(t) == 1 for t in tok.tokenize(texts[0]) if "\u4e00" <= t <= "\u9fff")
    tok.save_pretrained(tmp_path)
    assert AutoTokenizer.from_pretrained(tmp_path)(texts[:5])["input_ids"] == tok(texts[:5])["input_ids"]


# --------------------------------------------------------------------------------------------------------------------
# Embeddings from the teacher


@pytest.fixture(scope="module")
def teacher(tiny_bert: str) -> tuple[torch.nn.Module, Any]:
    return AutoModelForSequenceClassification.from_pretrained(tiny_bert), AutoTokenizer.from_pretrained(tiny_bert)


def test_init_from_teacher_copies_rows(teacher: tuple[torch.nn.Module, Any]) -> None:
    bert, tok = teacher
    source = bert.get_input_embeddings().weight
    vocab, width = source.shape
    student = small_student("bilstm", vocab_size=vocab, embedding_dim=width, pad_token_id=tok.pad_token_id)
    info = init_embeddings_from_teacher(student, bert)
    assert info["method"] == "copy"
    assert torch.equal(student.embeddings.weight, source)


def test_init_from_teacher_projects_by_pca(teacher: tuple[torch.nn.Module, Any]) -> None:
    bert, _ = teacher
    source = bert.get_input_embeddings().weight.detach()
    student = small_student("mlp", vocab_size=source.shape[0], embedding_dim=8)
    info = init_embeddings_from_teacher(student, bert)
    new = student.embeddings.weight.detach()
    assert new.shape == (source.shape[0], 8)
    assert info["method"] == "pca" and 0.0 < info["variance_kept"] < 1.0
    assert torch.allclose(new.mean(dim=0), torch.zeros(8), atol=1e-4)  # centred
    variances = new.var(dim=0)
    assert torch.all(variances[:-1] >= variances[1:] - 1e-6)  # principal components come in order
    centred = source - source.mean(dim=0)
    assert new.var(dim=0).sum() <= centred.var(dim=0).sum()


def test_init_from_teacher_rejects_another_vocabulary(teacher: tuple[torch.nn.Module, Any]) -> None:
    bert, _ = teacher
    with pytest.raises(TextDistillError, match=r"vocabulary \(60\) is not the teacher's \(\d+\)"):
        init_embeddings_from_teacher(small_student("textcnn"), bert)


# --------------------------------------------------------------------------------------------------------------------
# Builder


def test_build_with_teacher_tokenizer_is_reproducible(teacher: tuple[torch.nn.Module, Any]) -> None:
    bert, tok = teacher
    spec = {"type": "textcnn", "embedding_dim": 32, "kernel_sizes": [1, 2], "num_filters": 4}
    a, a_tok, recipe = build_classic_student(spec, LABELS, bert, tok, [], seed=3)
    b, _, _ = build_classic_student(spec, LABELS, bert, tok, [], seed=3)
    assert a_tok is tok
    assert torch.equal(a.embeddings.weight, bert.get_input_embeddings().weight)  # init_from_teacher by default
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name
    assert a.config.id2label == LABELS.id2label and a.config.pad_token_id == tok.pad_token_id
    assert recipe["type"] == "textcnn" and recipe["tokenizer"] == "teacher"
    assert recipe["embedding_init"]["method"] == "copy"
    assert recipe["architecture"]["kernel_sizes"] == [1, 2]


def test_build_with_word_tokenizer(sst2_dir: Path) -> None:
    texts, _ = sst2_rows(sst2_dir, 300)
    spec = {"type": "bilstm", "tokenizer": "words", "vocab_size": 500, "embedding_dim": 8, "hidden_size": 8}
    model, tok, recipe = build_classic_student(spec, LABELS, torch.nn.Module(), None, texts, seed=0)
    assert model.config.vocab_size == len(tok) == 500
    assert recipe["embedding_init"] == {"method": "random"} and recipe["word_tokenizer"]["vocab_size"] == 500
    assert recipe["architecture"]["classifier_hidden_size"] == 8  # defaults to hidden_size, spelt out
    enc = tok(texts[:4], padding=True, return_tensors="pt")
    assert model(**enc).logits.shape == (4, len(LABELS))


@pytest.mark.parametrize(
    ("spec", "key", "message"),
    [
        ({"type": "rnn"}, "type", "expected 'bilstm' or 'textcnn' or 'mlp', got 'rnn'"),
        ({"type": "bilstm", "pooling": "sum"}, "pooling", "expected 'max' or 'mean', got 'sum'"),
        ({"type": "bilstm", "num_layers": 0}, "num_layers", "positive integer"),
        ({"type": "bilstm", "hidden_size": True}, "hidden_size", "positive integer"),
        ({"type": "textcnn", "kernel_sizes": []}, "kernel_sizes", "non-empty list"),
        ({"type": "textcnn", "kernel_sizes": [3, -1]}, "kernel_sizes", "positive integer"),
        ({"type": "mlp", "dropout": 1.5}, "dropout", "in [0, 1)"),
        ({"type": "mlp", "kernel_sizes": [3]}, "kernel_sizes", "not a setting of type 'mlp'"),
        ({"type": "mlp", "hiden_sizes": [3]}, "hiden_sizes", "unknown key"),
        ({"type": "mlp", "tokenizer": "chars"}, "tokenizer", "expected 'teacher' or 'words'"),
        ({"type": "mlp", "vocab_size": 100}, "vocab_size", "only used with tokenizer: words"),
        ({"type": "mlp", "tokenizer": "words", "init_from_teacher": True}, "init_from_teacher", "needs tokenizer"),
    ],
)
def test_bad_spec_names_the_key(spec: dict[str, Any], key: str, message: str) -> None:
    with pytest.raises(TextDistillError) as info:
        build_classic_student(spec, LABELS, torch.nn.Module(), None, ["a b"], seed=0)
    text = str(info.value)
    assert text.startswith(f"student.architecture.{key}: ") and message in text and "\n" not in text


# --------------------------------------------------------------------------------------------------------------------
# Training sanity


def test_textcnn_learns_sst2(sst2_dir: Path) -> None:
    """60 Adam steps on 256 SST-2 sentences (word vocabulary) must cut the training loss clearly."""
    texts, labels = sst2_rows(sst2_dir, 256)
    spec = {"type": "textcnn", "tokenizer": "words", "embedding_dim": 32, "num_filters": 16, "dropout": 0.1}
    model, tok, _ = build_classic_student(spec, LabelSet(("0", "1")), torch.nn.Module(), None, texts, seed=0)
    enc = tok(texts, padding=True, truncation=True, max_length=48, return_tensors="pt")
    y = torch.tensor(labels)

    def full_loss() -> float:
        model.eval()
        with torch.no_grad():
            return model(**enc, labels=y).loss.item()

    before = full_loss()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(60):
        idx = torch.randint(0, len(texts), (32,), generator=generator)
        loss = model(input_ids=enc["input_ids"][idx], attention_mask=enc["attention_mask"][idx], labels=y[idx]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = full_loss()
    assert before > 0.6 and after < 0.5 * before, (before, after)


# --------------------------------------------------------------------------------------------------------------------
# Through the pipeline: the same loop, report and saving as transformer students.


@pytest.mark.parametrize(
    "architecture",
    [
        {"type": "bilstm", "tokenizer": "teacher", "init_from_teacher": True, "embedding_dim": 32, "hidden_size": 16},
        {"type": "textcnn", "tokenizer": "words", "embedding_dim": 24, "num_filters": 8},
        {"type": "mlp", "tokenizer": "words", "embedding_dim": 16, "hidden_sizes": [16]},
    ],
)
def test_classic_students_distill_end_to_end(architecture, tiny_bert, sst2_dir, tmp_path):
    import json

    from test_end_to_end import tiny_config

    import textdistill

    cfg = tiny_config(tiny_bert, sst2_dir, tmp_path / "run", architecture=architecture)
    cfg["teacher"]["training"]["num_train_epochs"] = 1
    cfg["student"]["training"]["num_train_epochs"] = 1
    # the pooled sentence vector of the student learns the teacher's pooled output through a projection
    cfg["distill"]["intermediate"] = [
        {"feature": "module", "student_module": "pooler", "teacher_module": "bert.pooler", "loss": "mse"}
    ]
    report = textdistill.distill(cfg)
    assert report["student"]["type"] == architecture["type"]
    assert report["student"]["params"] > 0 and "retained_pct" in report["student"]
    assert "retained_pct" in report["baseline"]
    steps = [json.loads(x) for x in (tmp_path / "run/logs/student.jsonl").read_text().splitlines()]
    assert any("module_pooler_bert.pooler_mse" in s for s in steps)
    again = textdistill.evaluate(str(tmp_path / "run" / "student"), cfg, speed=False)
    assert again["metrics"]["accuracy"] == pytest.approx(report["student"]["metrics"]["accuracy"], abs=1e-6)
