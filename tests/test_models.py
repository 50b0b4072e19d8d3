"""Model loading and student-from-teacher."""

import pytest
import torch

from textdistill.config import StudentConfig
from textdistill.data import LabelSet
from textdistill.errors import TextDistillError
from textdistill.models import build_student, load_classifier, resolve_model_path, spread_layers, student_from_teacher

LABELS = LabelSet(("0", "1"))


def test_spread_layers():
    assert spread_layers(6, 2) == [0, 5]
    assert spread_layers(6, 3) == [0, 2, 5]
    assert spread_layers(12, 4) == [0, 4, 7, 11]
    assert spread_layers(6, 1) == [5]
    assert spread_layers(6, 6) == [0, 1, 2, 3, 4, 5]
    with pytest.raises(TextDistillError, match="between 1 and the teacher's 6"):
        spread_layers(6, 7)


def test_student_keeps_exactly_the_chosen_teacher_layers(tiny_bert):
    teacher, _, _ = load_classifier(tiny_bert, LABELS, "teacher", require_trained_head=False)
    student = student_from_teacher(teacher, [3, 0])
    assert student.config.num_hidden_layers == 2
    assert len(student.bert.encoder.layer) == 2
    for s_idx, t_idx in enumerate([3, 0]):
        s_state = student.bert.encoder.layer[s_idx].state_dict()
        t_state = teacher.bert.encoder.layer[t_idx].state_dict()
        assert s_state.keys() == t_state.keys()
        assert all(torch.equal(s_state[k], t_state[k]) for k in s_state)
    # embeddings, pooler and head are copied; the copy is independent of the teacher
    assert torch.equal(student.bert.embeddings.word_embeddings.weight, teacher.bert.embeddings.word_embeddings.weight)
    assert torch.equal(student.classifier.weight, teacher.classifier.weight)
    student.classifier.weight.data += 1
    assert not torch.equal(student.classifier.weight, teacher.classifier.weight)
    assert teacher.config.num_hidden_layers == 4


def test_saved_student_reloads_with_auto_class(tiny_bert, tmp_path):
    from transformers import AutoModelForSequenceClassification

    teacher, _, _ = load_classifier(tiny_bert, LABELS, "teacher", require_trained_head=False)
    student = student_from_teacher(teacher, [0, 3]).eval()
    student.save_pretrained(tmp_path / "s")
    again = AutoModelForSequenceClassification.from_pretrained(tmp_path / "s").eval()
    x = torch.tensor([[2, 10, 11, 3]])
    assert torch.allclose(student(input_ids=x).logits, again(input_ids=x).logits, atol=1e-6)


def test_layers_out_of_range(tiny_bert):
    teacher, tok, _ = load_classifier(tiny_bert, LABELS, "teacher", require_trained_head=False)
    with pytest.raises(TextDistillError, match=r"student\.layers: \[4\] out of range; the teacher has layers 0\.\.3"):
        build_student(StudentConfig(layers=[0, 4]), teacher, tok, LABELS, seed=0)


def test_build_student_is_reproducible_and_trainable(tiny_bert):
    teacher, tok, _ = load_classifier(tiny_bert, LABELS, "teacher", require_trained_head=False)
    teacher.requires_grad_(False)
    cfg = StudentConfig(config_overrides={"num_hidden_layers": 1, "hidden_size": 16, "intermediate_size": 32})
    a, _, _ = build_student(cfg, teacher, tok, LABELS, seed=3)
    b, _, _ = build_student(cfg, teacher, tok, LABELS, seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    assert a.config.hidden_size == 16
    c, _, _ = build_student(StudentConfig(num_layers=2), teacher, tok, LABELS, seed=0)
    assert all(p.requires_grad for p in c.parameters())
    with pytest.raises(TextDistillError, match=r"student\.config_overrides\.hiden_size: not a field"):
        build_student(StudentConfig(config_overrides={"hiden_size": 8}), teacher, tok, LABELS, seed=0)


def test_teacher_label_checks(tiny_bert):
    # the tiny model's head is random and saved: it "has" a head for 2 labels with default names
    with pytest.raises(TextDistillError, match=r"teacher: .* predicts 2 labels but the data has 3"):
        load_classifier(tiny_bert, LabelSet(("a", "b", "c")), "teacher", require_trained_head=True)


def test_model_folder_checks(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(TextDistillError, match=r"student\.model: .*empty is not a model folder \(no config\.json\)"):
        resolve_model_path(str(tmp_path / "empty"), "student.model")
    with pytest.raises(TextDistillError, match=r"not a model folder \(not found"):
        resolve_model_path(str(tmp_path / "missing"), "teacher.model")
    assert resolve_model_path("org/name") == "org/name"  # a hub id is passed through


# --------------------------------------------------------------------------------------------------------------------
# Bad model folders: truncated weights, no tokenizer, weights of another model; lengths beyond the positions


def _copy(tiny_bert, folder, *names):
    """A copy of the tiny model's folder with only ``names`` (all its files when none are given)."""
    import shutil
    from pathlib import Path

    folder.mkdir()
    for f in Path(tiny_bert).iterdir():
        if not names or f.name in names:
            shutil.copy(f, folder / f.name)
    return folder


def test_a_truncated_or_padded_weight_file_is_named(tiny_bert, tmp_path):
    from textdistill.models import load_saved_classifier

    folder = _copy(tiny_bert, tmp_path / "cut")
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(
        TextDistillError,
        match=rf"teacher: .*cut/model\.safetensors is truncated or corrupt "
        rf"\({len(data) // 2:,} of its "
        rf"{len(data):,} bytes\); copy or download the model again",
    ):
        load_classifier(str(folder), LABELS, "teacher", require_trained_head=False)
    with pytest.raises(TextDistillError, match=r"^model: .*cut/model\.safetensors is truncated or corrupt"):
        load_saved_classifier(str(folder))
    weights.write_bytes(data + b"\0" * 8)
    with pytest.raises(
        TextDistillError,
        match=r"model\.safetensors is truncated or corrupt \(.* bytes where its "
        r"header accounts for",
    ):
        load_saved_classifier(str(folder))
    weights.write_bytes(data[:5])
    with pytest.raises(TextDistillError, match=r"is truncated or corrupt \(5 bytes: not even the 8-byte header length"):
        load_saved_classifier(str(folder))


def test_a_folder_without_its_tokenizer_is_refused(tiny_bert, tmp_path):
    """Without tokenizer files transformers made a BertTokenizer of 5 special tokens: every word [UNK], a model that
    trained and scored (52% instead of 70%). Now an error naming the folder and the files it looked for."""
    import shutil
    from pathlib import Path

    from textdistill.models import load_saved_classifier

    folder = _copy(tiny_bert, tmp_path / "bare", "config.json", "model.safetensors")
    with pytest.raises(
        TextDistillError,
        match=r"student\.model: .*bare holds no tokenizer \(expected "
        r"tokenizer\.json, vocab\.txt, "
        r"tokenizer_config\.json or another tokenizer file beside "
        r"config\.json\)",
    ):
        load_classifier(str(folder), LABELS, "student.model", require_trained_head=False)
    with pytest.raises(TextDistillError, match=r"^model: .*bare holds no tokenizer"):
        load_saved_classifier(str(folder))
    (folder / "tokenizer_config.json").write_text(
        '{"tokenizer_class": "BertTokenizer"}', encoding="utf-8"
    )  # its vocab.txt missing
    with pytest.raises(
        TextDistillError,
        match=r"bare: its tokenizer has no vocabulary \(only its 5 special "
        r"tokens\); BertTokenizer needs",
    ):
        load_saved_classifier(str(folder))
    shutil.copy(Path(tiny_bert) / "tokenizer.json", folder)
    _, tok, _ = load_saved_classifier(str(folder))
    assert tok.unk_token_id not in tok("a gorgeous film", add_special_tokens=False)["input_ids"]


def test_weights_of_another_model_are_refused(tiny_bert, tmp_path):
    """transformers fills what a weight file lacks with random values; a file holding none of the body's weights (or
    them in other shapes) is an error, a missing or resized head is not."""
    import json

    from safetensors.torch import save_file

    folder = _copy(tiny_bert, tmp_path / "other")
    save_file({"w": torch.zeros(2, 2)}, str(folder / "model.safetensors"))
    with pytest.raises(
        TextDistillError,
        match=r"teacher: .*other/model\.safetensors lacks \d+ of the \d+ weights of "
        r"the model config\.json "
        r"describes \(e\.g\. bert\.embeddings\.LayerNorm\.bias\)",
    ):
        load_classifier(str(folder), LABELS, "teacher", require_trained_head=False)
    config = json.loads((folder / "config.json").read_text())
    _copy(tiny_bert, tmp_path / "wide")
    (tmp_path / "wide" / "config.json").write_text(json.dumps({**config, "intermediate_size": 48}))
    with pytest.raises(
        TextDistillError,
        match=r"wide/model\.safetensors holds "
        r"bert\.encoder\.layer\.0\.intermediate\.dense\.bias in shape "
        r"\(64,\), config\.json "
        r"describes \(48,\) \(12 such\); the weights belong to another model",
    ):
        load_classifier(str(tmp_path / "wide"), LABELS, "teacher", require_trained_head=False)
    model, _, _ = load_classifier(
        tiny_bert, LabelSet(("a", "b", "c")), "teacher", require_trained_head=False
    )  # a head resized: fine
    assert model.classifier.out_features == 3


def test_textdistill_students_with_word_vocabularies_still_load(tiny_bert, tmp_path):
    from textdistill.models import load_saved_classifier, save_model
    from textdistill.students import build_classic_student

    teacher, tok, _ = load_classifier(tiny_bert, LABELS, "teacher", require_trained_head=False)
    texts = ["a gorgeous film", "dull and slow", "a fine cast"]
    for kind in ("bilstm", "textcnn", "mlp"):
        student, stok, _ = build_classic_student(
            {"type": kind, "tokenizer": "words"}, LABELS, teacher, tok, texts, seed=0
        )
        save_model(student, stok, tmp_path / kind)
        again, atok, labels = load_saved_classifier(str(tmp_path / kind))
        assert type(again) is type(student) and len(atok) == len(stok) and labels.names == LABELS.names
        assert (
            atok("gorgeous film", add_special_tokens=False)["input_ids"]
            == stok("gorgeous film", add_special_tokens=False)["input_ids"]
        )


def test_config_overrides_that_cannot_read_the_data(tiny_bert):
    from textdistill.models import check_student_length

    teacher, tok, _ = load_classifier(tiny_bert, LABELS, "teacher", require_trained_head=False)
    with pytest.raises(
        TextDistillError,
        match=rf"student\.config_overrides\.vocab_size: 100 is less than the "
        rf"{len(tok):,} tokens of the "
        rf"tokenizer the student reads \(the teacher's\); leave it out or "
        rf"make it at least {len(tok)}",
    ):
        build_student(StudentConfig(config_overrides={"vocab_size": 100}), teacher, tok, LABELS, seed=0)
    overrides = {"max_position_embeddings": 16, "num_hidden_layers": 1}
    student, stok, recipe = build_student(StudentConfig(config_overrides=overrides), teacher, tok, LABELS, seed=0)
    with pytest.raises(
        TextDistillError,
        match=r"student\.config_overrides\.max_position_embeddings: 16 gives the "
        r"student 16 positions "
        r"\(its 16 position embeddings\) but data\.max_length is 64; make it "
        r"at least 64",
    ):
        check_student_length(student, stok, recipe, 64)
    check_student_length(student, stok, recipe, 16)  # enough


def test_max_length_is_at_least_4_and_cut_to_the_positions(tiny_bert):
    import warnings

    from transformers import RobertaConfig, RobertaForSequenceClassification

    from textdistill.data import TextData
    from textdistill.models import fit_max_length, position_limit
    from textdistill.pipeline import _dataset

    teacher, tok, _ = load_classifier(tiny_bert, LABELS, "teacher", require_trained_head=False)
    assert position_limit(teacher) == (128, "its 128 position embeddings")
    assert tok.model_max_length == 128  # the tokenizer said nothing (a huge number); now what the model reads
    with pytest.raises(
        TextDistillError,
        match=r"data\.max_length: 3 is too small: a text with its special tokens "
        r"\(\[CLS\] \.\.\. \[SEP\]\) "
        r"needs at least 4 tokens",
    ):
        fit_max_length(tok, 3)
    assert fit_max_length(tok, 4) == 4 and fit_max_length(tok, 128) == 128
    with pytest.warns(
        UserWarning,
        match=r"^data\.max_length: 512 is more than teacher\.model reads \(128 tokens: "
        r"its 128 position "
        r"embeddings\); texts are cut at 128 tokens$",
    ):
        assert fit_max_length(tok, 512, role="teacher.model") == 128
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once
        long = TextData(["a gorgeous film " * 100, "dull"], ["1", "0"])
        ds = _dataset(tok, long, LABELS, 512)
    assert [len(f["input_ids"]) for f in ds.student] == [128, 3]
    with torch.no_grad():
        teacher(
            input_ids=torch.tensor([ds.student[0]["input_ids"]])
        )  # 512 tokens: an index error in the position embeddings
    # RoBERTa / MPNet-style models count positions from their padding index + 1: 34 embeddings read 32 tokens
    roberta = RobertaForSequenceClassification(
        RobertaConfig(
            vocab_size=50,
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=34,
            pad_token_id=1,
        )
    )
    assert position_limit(roberta) == (32, "its 34 position embeddings less the offset of 2 its positions start from")
    with torch.no_grad():
        roberta(input_ids=torch.full((1, 32), 5))
        with pytest.raises((IndexError, RuntimeError)):  # one token more runs past the embeddings
            roberta(input_ids=torch.full((1, 33), 5))
