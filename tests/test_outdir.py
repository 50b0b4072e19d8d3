"""Output-folder safety (issue 27): a run never replaces what is not a run folder, never touches its inputs, config,
working folder or caches, and two processes never write one run."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import textdistill
from textdistill import pipeline
from textdistill.cli import main
from textdistill.errors import TextDistillError
from textdistill.outdir import MARKER, FolderLock, is_run_folder


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user's project: data in mydata/, a config beside it, the working folder its root."""
    root = tmp_path / "project"
    (root / "mydata").mkdir(parents=True)
    (root / "mydata" / "train.tsv").write_text("text\tlabel\ngood film\t1\nbad film\t0\n", encoding="utf-8")
    (root / "mydata" / "dev.tsv").write_text("text\tlabel\nfine\t1\nawful\t0\n", encoding="utf-8")
    (root / "run.yaml").write_text(
        textwrap.dedent("""\
        output_dir: runs/x
        overwrite_output_dir: true
        data: {train_file: mydata/train.tsv, validation_file: mydata/dev.tsv}
        teacher: {model: all-MiniLM-L6-v2}
        student: {num_layers: 2}
        """),
        encoding="utf-8",
    )
    monkeypatch.chdir(root)
    return root


@pytest.mark.parametrize(
    "out, why",
    [
        ("mydata", "contains the input data.train_file"),  # the case: the data folder as the run folder
        (".", "names no folder of its own"),
        ("..", "names no folder of its own"),
        ("mydata/..", "names no folder of its own"),
        ("{parent}", "contains the working folder"),  # -o .. spelt as a path
        ("{root}", "is the working folder"),
        ("mydata/train.tsv", "is an existing file, not a folder"),
        ("run.yaml", "is an existing file, not a folder"),
        ("{home}", "is the home folder"),
    ],
)
def test_an_output_dir_that_would_replace_user_data_is_refused_before_any_work(
    user: Path, out: str, why: str, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _files(user.parent)
    out = out.format(parent=user.parent, root=user, home=Path.home())
    code = main(["distill", "-c", "run.yaml", "-o", out, "overwrite_output_dir=true"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: output_dir: ") and why in err and len(err.splitlines()) == 1, err
    assert _files(user.parent) == before  # nothing lost, nothing written
    assert not list(user.parent.rglob("*.lock"))


def test_a_folder_holding_the_config_or_the_teacher_is_refused(user: Path, tmp_path: Path) -> None:
    (user / "conf").mkdir()
    (user / "conf" / "run.yaml").write_text(
        (user / "run.yaml").read_text().replace("mydata/", "../mydata/"), encoding="utf-8"
    )
    with pytest.raises(TextDistillError, match=r"output_dir: conf is the config file|contains the config file"):
        textdistill.distill("conf/run.yaml", ["output_dir=conf"])
    teacher = user / "models" / "teacher"
    teacher.mkdir(parents=True)
    (teacher / "config.json").write_text("{}")
    with pytest.raises(TextDistillError, match=r"output_dir: models contains the input teacher\.model"):
        textdistill.distill("run.yaml", ["output_dir=models", f"teacher.model={teacher}"])
    with pytest.raises(TextDistillError, match=r"output_dir: models/teacher is the input teacher\.model"):
        textdistill.distill("run.yaml", ["output_dir=models/teacher", f"teacher.model={teacher}"])
    cache = tmp_path / "my-cache"
    cache.mkdir()
    with pytest.raises(TextDistillError, match=r"output_dir: .*my-cache is distill\.cache_dir"):
        textdistill.distill("run.yaml", [f"output_dir={cache}", f"distill.cache_dir={cache}"])
    assert (teacher / "config.json").is_file() and (user / "conf" / "run.yaml").is_file()


def test_overwrite_replaces_run_folders_only(user: Path) -> None:
    folder = user / "runs" / "x"
    folder.mkdir(parents=True)
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(
        TextDistillError,
        match=rf"output_dir: runs/x exists and is not a textdistill run folder \(it "
        rf"has no {MARKER}\); refusing",
    ):
        textdistill.distill("run.yaml")
    assert (folder / "notes.txt").read_text() == "mine"
    # a stray folder where the run's .partial goes is a user's folder too
    (folder / "notes.txt").unlink()
    folder.rmdir()
    partial = user / "runs" / "x.partial"
    partial.mkdir()
    (partial / "keep.txt").write_text("mine")
    with pytest.raises(
        TextDistillError,
        match=r"output_dir: runs/x\.partial exists and is not a textdistill run "
        r"folder",
    ):
        textdistill.distill("run.yaml")
    assert (partial / "keep.txt").read_text() == "mine"
    # a link to a folder is never followed into a delete
    partial.rename(user / "elsewhere")
    folder.symlink_to(user / "elsewhere")
    with pytest.raises(TextDistillError, match=r"output_dir: runs/x is a link, not a run folder"):
        textdistill.distill("run.yaml")
    assert (user / "elsewhere" / "keep.txt").is_file()


def test_a_run_folder_is_marked_and_replaced_by_the_next_run(tiny_bert: str, sst2_dir: Path, tmp_path: Path) -> None:
    from test_end_to_end import tiny_config

    cfg = tiny_config(tiny_bert, sst2_dir, tmp_path / "run") | {"overwrite_output_dir": True}
    cfg["student"]["training"] = cfg["student"]["training"] | {"max_steps": 2}
    cfg["teacher"] = cfg["teacher"] | {"finetune": False}
    cfg["distill"]["baseline"] = False
    first = textdistill.distill(cfg)
    marker = json.loads((tmp_path / "run" / MARKER).read_text())
    assert marker["kind"] == "distill" and marker["textdistill"] == textdistill.__version__
    assert is_run_folder(tmp_path / "run")
    second = textdistill.distill(cfg)  # overwrite_output_dir: the earlier run folder is replaced
    assert second["output_dir"] == first["output_dir"] and (tmp_path / "run" / "student" / "config.json").is_file()
    assert not (tmp_path / "run.partial.lock").exists() and not (tmp_path / "run.partial").exists()


_HOLD = """
import sys, time
from pathlib import Path
from textdistill.outdir import FolderLock
FolderLock(Path(sys.argv[1]), "output_dir").acquire()
print("held", flush=True)
time.sleep(60)
"""


def test_a_second_process_on_the_same_output_dir_is_refused_at_once(user: Path) -> None:
    lock = user / "runs" / "x.partial.lock"
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        partial = user / "runs" / "x.partial"
        partial.mkdir()
        (partial / MARKER).write_text("{}")
        (partial / "config.yaml").write_text("the other run's")
        with pytest.raises(
            TextDistillError,
            match=rf"output_dir: runs/x\.partial is in use by another textdistill "
            rf"run \(pid {holder.pid} ",
        ):
            textdistill.distill("run.yaml")
        assert (partial / "config.yaml").read_text() == "the other run's"  # the first run's folder is untouched
    finally:
        holder.kill()
        holder.wait()
    # the holder died without releasing: its lock file stays, but the kernel dropped the lock with the process
    assert lock.exists()
    FolderLock(lock, "output_dir").acquire().release()
    assert not lock.exists()


def test_the_lock_is_released_when_the_call_fails(user: Path) -> None:
    """A notebook that calls again after an error is not refused by its own first call."""
    for _ in range(2):  # the same error each time, never "in use by another textdistill run"
        with pytest.raises(
            TextDistillError, match="teacher.model: all-MiniLM-L6-v2 has no trained classification head"
        ):
            textdistill.distill("run.yaml", ["teacher.finetune=false"])
    assert not (user / "runs").exists()  # the folder made for the lock was removed again


def test_export_and_augment_never_write_over_their_inputs(user: Path) -> None:
    model = user / "student"
    model.mkdir()
    (model / "config.json").write_text("{}")
    for out in (str(model), str(user)):
        with pytest.raises(
            TextDistillError,
            match=r"export output: .* (is|contains) (the input model|the working "
            r"folder)",
        ):
            pipeline.export(str(model), "run.yaml", out)
    with pytest.raises(TextDistillError, match=r"augment output: mydata/train\.tsv is the input data\.train_file"):
        pipeline.augment("run.yaml", "mydata/train.tsv", ["transfer.variants=2"])
    assert (user / "mydata" / "train.tsv").read_text().startswith("text\tlabel\ngood film")


def test_the_distilled_dataset_replaces_only_a_distilled_dataset(user: Path) -> None:
    from textdistill.distilled import check_dataset_folder

    folder = user / "labelled"
    folder.mkdir()
    (folder / "mine.tsv").write_text("keep")
    with pytest.raises(
        TextDistillError,
        match=r"labelled: exists and is not a distilled dataset \(no "
        r"manifest\.json\); refusing",
    ):
        check_dataset_folder(folder)
    with pytest.raises(TextDistillError, match=r"transfer\.output: mydata contains the input data\.train_file"):
        pipeline.label("run.yaml", "mydata", ["teacher.finetune=false", "transfer.include_train=true"])
    (folder / "mine.tsv").unlink()
    (folder / "manifest.json").write_text("{}")
    check_dataset_folder(folder)  # an earlier dataset: replaced by a new labelling
    assert (user / "mydata" / "train.tsv").is_file()


def test_a_lock_taken_and_released_leaves_nothing(tmp_path: Path) -> None:
    lock = FolderLock(tmp_path / "a" / "b" / "run.partial.lock", "output_dir").acquire()
    with pytest.raises(TextDistillError, match="is in use by another textdistill run"):
        FolderLock(tmp_path / "a" / "b" / "run.partial.lock", "output_dir").acquire()  # the same process, another call
    lock.release()
    assert list(tmp_path.iterdir()) == []  # the folders made for it went with it
