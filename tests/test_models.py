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
