"""The real pretrained teacher (all-MiniLM-L6-v2 from its PyPI package) over a small slice of SST-2."""

import pytest

import textdistill
from textdistill.data import LabelSet
from textdistill.errors import TextDistillError
from textdistill.models import load_classifier, resolve_model_path

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def minilm() -> str:
    try:
        return resolve_model_path("all-MiniLM-L6-v2", "teacher.model")
    except TextDistillError as exc:
        pytest.skip(str(exc))


def test_catalogue_name_resolves_to_package_folder(minilm):
    assert minilm.endswith("sentence-transformers__all-MiniLM-L6-v2")
    assert resolve_model_path("sentence-transformers/all-MiniLM-L6-v2") == minilm


def test_untrained_encoder_is_refused_as_a_fine_tuned_teacher(minilm):
    with pytest.raises(TextDistillError, match=r"has no trained classification head .*\(teacher\.finetune: true\)"):
        load_classifier("all-MiniLM-L6-v2", LabelSet(("0", "1")), "teacher.model", require_trained_head=True)


def test_minilm_teacher_and_two_layer_student_on_sst2_slice(minilm, sst2_dir, tmp_path):
    cfg = {
        "output_dir": str(tmp_path / "run"),
        "data": {
            "train_file": str(sst2_dir / "train.tsv"),
            "validation_file": str(sst2_dir / "dev.tsv"),
            "max_length": 48,
            "max_train_samples": 1200,
            "max_eval_samples": 200,
        },
        "teacher": {
            "model": "all-MiniLM-L6-v2",
            "finetune": True,
            "training": {"learning_rate": 1e-4, "num_train_epochs": 1, "per_device_train_batch_size": 32},
        },
        "student": {"num_layers": 2, "training": {"learning_rate": 1e-4, "num_train_epochs": 1}},
        "distill": {"baseline": False},
        "eval": {"latency_repeats": 5, "latency_samples": 64},
    }
    report = textdistill.distill(cfg)
    teacher_acc = report["teacher"]["metrics"]["accuracy"]
    student_acc = report["student"]["metrics"]["accuracy"]
    assert teacher_acc > 0.70, teacher_acc  # a pretrained encoder learns SST-2 from 1,200 sentences; chance is 0.5
    assert student_acc > 0.60, student_acc
    assert report["student"]["layers"] == [0, 5]
    assert report["student"]["params"] < 0.75 * report["teacher"]["params"]
    assert report["speedup_batch32"] > 1.5
