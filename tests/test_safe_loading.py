"""Safe loading: weights from safetensors only unless pickles are allowed (then torch's weights_only loading), no
remote code unless trusted; checkpoints and configs read without running code."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_end_to_end import tiny_config

import textdistill
from textdistill.data import LabelSet
from textdistill.errors import TextDistillError
from textdistill.models import load_classifier, loading_kwargs, set_loading_policy


@pytest.fixture
def pickled_bert(tiny_bert: str, tmp_path: Path) -> str:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

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
        with pytest.raises(
            TextDistillError,
            match=r"teacher.model: .*pickled holds pickled weights only "
            r"\(pytorch_model.bin\); "
            r"set loading.allow_pickle: true",
        ):
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


def test_a_run_names_the_setting_and_takes_it_from_the_config(
    pickled_bert: str, sst2_dir: Path, tmp_path: Path
) -> None:
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


class RunsCode:
    """What a malicious pickle does: call os.system when unpickled (never, under weights-only loading)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize(
    "protocol", [2, 4]
)  # torch names the global of protocol 2; 4 stops it at FRAME: read by pickletools
def test_a_pickle_that_runs_code_is_refused_without_torchs_advice(
    tiny_bert: str, tmp_path: Path, protocol: int
) -> None:
    import pickle
    import shutil

    from textdistill.models import load_saved_classifier

    folder = tmp_path / "evil"
    folder.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(Path(tiny_bert) / name, folder)
    marker = tmp_path / "pwned"
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(RunsCode(marker), protocol=protocol))
    set_loading_policy(allow_pickle=True)
    try:
        for load in (
            lambda: load_classifier(str(folder), LabelSet(("0", "1")), "teacher.model", require_trained_head=False),
            lambda: load_saved_classifier(str(folder)),
        ):
            with pytest.raises(TextDistillError) as info:
                load()
            message = str(info.value)
            assert "weights_only=False" not in message and "\n" not in message
            assert (
                f"{folder / 'pytorch_model.bin'} refused as unsafe: its pickle calls or builds posix.system, and "
                f"loading it could run code"
            ) in message
    finally:
        set_loading_policy()
    assert not marker.exists()


def test_resume_refuses_files_that_are_not_our_checkpoints(tmp_path: Path) -> None:
    """--resume reads checkpoint.pt with weights-only loading: a pickle of code is refused as unsafe, anything else
    that is not a checkpoint of ours is named as such; torch's advice to turn the check off is never repeated."""
    import pickle

    import torch

    from textdistill.train import Checkpoints

    ckpt = Checkpoints(tmp_path, main=True)
    path = tmp_path / "checkpoint.pt"
    marker = tmp_path / "pwned"
    cases = {
        "code": (
            pickle.dumps(RunsCode(marker)),
            r"is not a textdistill checkpoint: refused as unsafe \(its pickle "
            r"calls or builds posix\.system, and loading it could run code\)",
        ),
        "text": (
            b"step: 3\n",
            r"is not a textdistill checkpoint \(unreadable: not a pickle of tensors, numbers and "
            r"strings\)",
        ),
        "empty": (b"", r"is not a textdistill checkpoint \(unreadable: empty or cut short\)"),
        "other": (
            None,
            r"is not a textdistill checkpoint \(it lacks batches, best_metric, best_state, best_step "
            r"\.\.\.\)",
        ),
        "tensor": (None, r"is not a textdistill checkpoint \(it lacks a dict\)"),
    }
    for name, (content, error) in cases.items():
        if name == "other":
            torch.save({"step": 3, "model": {}}, path)
        elif name == "tensor":
            torch.save(torch.zeros(3), path)
        else:
            path.write_bytes(content)
        with pytest.raises(TextDistillError, match=rf"^--resume: {path} {error}") as info:
            ckpt.load("checkpoint.pt")
        assert "weights_only" not in str(info.value), name
    assert not marker.exists()
    torch.save({"result": "{}"}, tmp_path / "final.pt")
    with pytest.raises(TextDistillError, match=r"final\.pt is not a textdistill checkpoint \(it lacks model\)"):
        ckpt.load("final.pt")


def test_resumed_weights_must_fit_the_model(tmp_path: Path) -> None:
    import torch

    from textdistill.train import Checkpoints

    ckpt, model = Checkpoints(tmp_path, main=True), torch.nn.Linear(4, 2)
    with pytest.raises(
        TextDistillError,
        match=r"^--resume: .*checkpoint\.pt does not fit the model: weight has "
        r"shape \[3, 4\] there, \[2, 4\] "
        r"in the model \(1 such tensors\); it was written for another model",
    ):
        ckpt.restore_weights(model, {"weight": torch.zeros(3, 4), "bias": torch.zeros(2)}, "checkpoint.pt")
    with pytest.raises(
        TextDistillError,
        match=r"does not fit the model: 1 tensors missing, 1 unexpected \(e\.g\. "
        r"missing bias\)",
    ):
        ckpt.restore_weights(model, {"weight": torch.zeros(2, 4), "other": torch.zeros(2)}, "checkpoint.pt")
    ckpt.restore_weights(model, {"weight": torch.ones(2, 4), "bias": torch.zeros(2)}, "checkpoint.pt")
    assert torch.equal(model.weight, torch.ones(2, 4))


def test_a_failed_checkpoint_write_names_the_last_good_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.save reports a full disk from its zip writer as a RuntimeError, not an OSError: the half-written file is
    removed and the one line names the last good checkpoint."""
    import torch

    import textdistill.train as train

    ckpt = train.Checkpoints(tmp_path, main=True)
    good = {k: 0 for k in train.Checkpoints.KEYS["checkpoint.pt"]} | {"step": 4}
    ckpt.save(good)

    def full(obj, path, *a, **k):
        Path(path).write_bytes(b"PK\x03\x04 partial")
        raise RuntimeError(
            "[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed writing file "
            "data/0: file write failed"
        )

    monkeypatch.setattr(train.torch, "save", full)
    with pytest.raises(
        TextDistillError,
        match=rf"^checkpoint: cannot write {tmp_path}/checkpoint\.pt \(torch\.save: "
        rf".*PytorchStreamWriter "
        rf"failed writing file data/0: file write failed; is the disk "
        rf"full\?\); the last good "
        rf"checkpoint {tmp_path}/checkpoint\.pt \(step 4\) is intact$",
    ):
        ckpt.save(good | {"step": 8})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["step"] == 4
    monkeypatch.setattr(
        train.torch, "save", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("CUDA error: device-side assert"))
    )
    with pytest.raises(RuntimeError, match="CUDA error"):  # not a write failure: not reported as one
        ckpt.save(good)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]
