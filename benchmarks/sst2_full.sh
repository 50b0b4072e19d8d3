#!/usr/bin/env bash
# Full SST-2 benchmark: fine-tune the MiniLM-L6 teacher, distill a 2-layer and a 3-layer student (each with its
# no-distillation twin), then write the results table to docs/RESULTS.md.
# Usage (from the repository root, after the README's install):  bash benchmarks/sst2_full.sh > bench.log 2>&1
set -euo pipefail
export HF_HUB_OFFLINE=1
out=${BENCH_OUT:-bench_runs}
textdistill distill -c benchmarks/sst2_full.yaml -o "$out/sst2-full-2l" "$@"
textdistill distill -c benchmarks/sst2_full.yaml -o "$out/sst2-full-3l" \
  teacher.model="$out/sst2-full-2l/teacher" teacher.finetune=false student.num_layers=3 "$@"
python benchmarks/summarize.py "$out/sst2-full-2l" "$out/sst2-full-3l" --name sst2-full --command "bash benchmarks/sst2_full.sh"
