"""A two-process CPU run under `accelerate launch` (gloo): same loop, data split across processes, one report."""

import json
import subprocess
import sys

import pytest
import yaml
from test_end_to_end import tiny_config


def test_two_process_distill(tiny_bert, sst2_dir, tmp_path):
    cfg = tiny_config(tiny_bert, sst2_dir, tmp_path / "run")
    cfg["teacher"]["training"]["num_train_epochs"] = 1
    cfg["student"] = {
        "config_overrides": {"num_hidden_layers": 2, "hidden_size": 16, "intermediate_size": 32},
        "training": {"num_train_epochs": 1, "per_device_train_batch_size": 16, "logging_steps": 1},
    }
    cfg["distill"]["layer_map"] = [{"strategy": "uniform", "feature": "hidden"}]  # a projection, trained on both
    cfg["distill"]["baseline"] = False
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    # accelerate launch --multi_gpu hands over to torchrun; without a GPU textdistill runs the processes on the CPU
    # (gloo)
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "textdistill",
        "distill",
        "-c",
        str(tmp_path / "c.yaml"),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("| student (distilled)") == 1  # one report, from the main process
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    steps = [json.loads(x) for x in (tmp_path / "run/logs/student.jsonl").read_text().splitlines()]
    train_steps = [s for s in steps if "loss" in s]
    # 256 examples, batches of 16 per process, 2 processes: 8 optimizer steps in one epoch
    assert len(train_steps) == 8 and train_steps[-1]["step"] == 8
    assert train_steps[-1]["lr"] == pytest.approx(0.0, abs=1e-12)  # the schedule ends with the epoch
    assert metrics["student"]["train_samples_per_second"] > 0


def test_two_process_labelling_writes_the_same_dataset(tiny_bert, sst2_dir, tmp_path):
    """Shards are spread over the processes of `accelerate launch`; the dataset is the one a single process writes."""
    cfg = tiny_config(tiny_bert, sst2_dir, tmp_path / "run")
    cfg["teacher"] = {"model": tiny_bert}
    cfg["transfer"] = {"variants": 2, "shard_size": 48}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    launch = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
    ]
    for prefix, out in ((launch + ["-m"], "two"), ([sys.executable, "-m"], "one")):
        cmd = prefix + ["textdistill", "label", "-c", str(tmp_path / "c.yaml"), "-o", str(tmp_path / out)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "two" / "data.jsonl").read_bytes() == (tmp_path / "one" / "data.jsonl").read_bytes()
    assert json.loads((tmp_path / "two" / "manifest.json").read_text())["rows"] > 256
