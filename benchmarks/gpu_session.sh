#!/usr/bin/env bash
# One prepared call for a lent GPU machine (issue: speed and scale): the H200 throughput rows of docs/RESULTS.md,
# compiled as the table quotes them and with CUDA graphs (torch_compile_mode: reduce-overhead), then a profile of the
# 4 x 312 cached step. Each part has its own time limit (565 s in all), so a slow part cannot take the others' time;
# the JSON lines go to $OUT (or bench_runs/gpu).
# Usage (repository root, torch with CUDA and the package importable):  bash benchmarks/gpu_session.sh
set -uo pipefail
out=${OUT:-bench_runs/gpu}
mkdir -p "$out"
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$out/gpu.txt" 2>&1
python -c "import torch, transformers; print(torch.__version__, transformers.__version__)" >> "$out/gpu.txt" 2>&1
run() {  # name, limit in seconds, arguments of gpu_throughput.py
  local name=$1 limit=$2; shift 2
  echo "== $name ($(date -u +%H:%M:%S) UTC)"
  timeout "$limit" python benchmarks/gpu_throughput.py "$@" > "$out/$name.jsonl" 2> "$out/$name.err"
  echo "rc=$?"; cat "$out/$name.jsonl"; tail -n 3 "$out/$name.err"
}
if python -c "import pytest" 2>/dev/null; then  # the tests that need a GPU (skipped on the CPU machines)
  echo "== GPU tests"; timeout 90 python -m pytest -q -p no:cacheprovider tests/test_train.py -k gpu 2>&1 | tail -n 5
fi
run compiled 200 --steps 100 --repeats 2 --compile
run cudagraphs 230 --steps 100 --repeats 2 --compile --compile-mode reduce-overhead
# where the 4 x 312 student's cached step goes (the row furthest from its goal), eager: 30 steps profiled
run profile 45 --students 4x312 --modes cached --steps 43 --repeats 1 --profile
