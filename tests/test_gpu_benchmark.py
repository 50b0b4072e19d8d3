"""The prepared GPU benchmark (benchmarks/gpu_throughput.py) checked on the CPU with tiny shapes: a lent GPU's few
minutes must not be spent on a script that breaks."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_throughput.py"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--tiny", "--repeats", "1", *args], capture_output=True, text=True, timeout=300
    )


def test_profiled_run_reports_where_its_steps_go():
    proc = run("--steps", "16", "--modes", "cached", "--profile")
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    assert [(x["student"], x["teacher_outputs"]) for x in lines] == [("2x32", "cached")]
    assert lines[0]["samples_per_second"] > 0
    (prof,) = lines[0]["profile"]
    assert prof["profiled_steps"] == 16 - 10 - 2 - 1  # the loop's start-up and the profiler's warm-up left out
    assert prof["wall_ms_per_step"] > 0
    assert prof["device_busy_ms_per_step"] is None and prof["kernels_per_step"] is None  # no device on the CPU
    assert prof["launch_ms_per_step"] is None
    ops = {name for name, ms, count in prof["top_host_ops_ms_per_step_and_count"]}
    assert len(ops) == 8 and not any(name.startswith("ProfilerStep") for name in ops)
    # the top ops are the training step's own: the model's forward or backward, or the optimizer. Which of them rank
    # in the top 8 moves with the machine's load (CI once saw only AddmmBackward0; a loaded CPU, GELU and AdamW)
    step_ops = ("mm", "gelu", "softmax", "layer_norm", "embedding", "linear", "adam", "dropout", "tanh")
    assert any(any(op in name.lower() for op in step_ops) for name in ops), ops


def test_profile_refuses_too_few_steps():
    proc = run("--steps", "12", "--modes", "cached", "--profile")
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1] == "--profile needs more than 13 steps"
