"""Safe loading: weights from safetensors only unless pickles are allowed (then torch's weights_only loading), no
remote code unless trusted; checkpoints and configs read without running code."""

from __future__ import annotations

from pathlib import Path

import pytest

import textdistill
from textdistill.data import LabelSet
from textdistill.errors import TextDistillError
from textdistill.models import load_classifier, loading_kwargs, set_loading_policy

from test_end_to_end import tiny_config


@pytest.fixture
def pickled_bert(tiny_bert: str, tmp_path: Path) -> str:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    import torch

    folder = tmp_path / "pickled"
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert)
    model.config.save_pretrained(folder)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")  # the old pickled format, as many hub models still are
    AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(folder)
    assert (folder / "pytorch_model.bin").is_file() and not list(folder.glob("*.safetensors"))
    return str(folder)


def test_pickled_weights_need_permission(pickled_bert: str) -> None:
    set_loading_policy()
    try:
        with pytest.raises(TextDistillError, match=r"teacher.model: .*pickled holds pickled weights only \(pytorch_model.bin\); "
                                                   r"set loading.allow_pickle: true"):  # fmt: skip
            load_classifier(pickled_bert, LabelSet(("0", "1")), "teacher.model", require_trained_head=False)
        set_loading_policy(allow_pickle=True)
        model, _, _ = load_classifier(pickled_bert, LabelSet(("0", "1")), "teacher.model", require_trained_head=False)
        assert model.config.num_hidden_layers == 4
    finally:
        set_loading_policy()


def test_defaults_refuse_remote_code_and_pickles(tiny_bert: str) -> None:
    set_loading_policy()
    assert loading_kwargs(tiny_bert, "model") == {"trust_remote_code": False, "use_safetensors": True}
    set_loading_policy(allow_pickle=True, trust_remote_code=True)
    assert loading_kwargs(tiny_bert, "model") == {"trust_remote_code": True}
    set_loading_policy()


def test_a_run_names_the_setting_and_takes_it_from_the_config(pickled_bert: str, sst2_dir: Path, tmp_path: Path) -> None:
    cfg = tiny_config(pickled_bert, sst2_dir, tmp_path / "run")
    cfg["teacher"]["training"]["num_train_epochs"] = 1
    cfg["student"]["training"]["num_train_epochs"] = 1
    cfg["distill"]["baseline"] = False
    with pytest.raises(TextDistillError, match="loading.allow_pickle"):
        textdistill.distill(cfg)
    cfg["loading"] = {"allow_pickle": True}
    report = textdistill.distill(cfg)
    assert list((Path(report["output_dir"]) / "student").glob("*.safetensors"))  # what textdistill writes: safetensors
    set_loading_policy()


def test_predict_reads_pickles_only_when_allowed(pickled_bert: str, capsys: pytest.CaptureFixture[str]) -> None:
    from textdistill.cli import main

    try:
        assert main(["predict", pickled_bert, "a gorgeous film"]) == 2
        assert "(textdistill predict: --allow-pickle)" in capsys.readouterr().err
        assert main(["predict", pickled_bert, "--allow-pickle", "a gorgeous film", "dull"]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert [line.split("\t")[1] for line in lines] == ["a gorgeous film", "dull"]
        assert all(line.split("\t")[0] in {"LABEL_0", "LABEL_1", "0", "1"} for line in lines), lines
    finally:
        set_loading_policy()
