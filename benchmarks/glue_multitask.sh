#!/usr/bin/env bash
# Task distillation benchmark (issue 5), on the shared GLUE data. Parts, run in this order:
#   teachers  fine-tune one all-MiniLM-L6-v2 teacher per task (CoLA, MRPC, RTE, STS-B; SST-2 comes from
#             benchmarks/sst2_full.sh) and two more MRPC teachers (seeds 2, 3) for the ensemble; skips finished ones
#   multitask one 3-layer student for SST-2 + CoLA + MRPC + RTE + STS-B from the five teachers, and its twin
#   multitask6  the same with a 6-layer student (the teachers' size: one model instead of five)
#   ensemble  MRPC: a student from the 3-teacher ensemble vs a student from the best single teacher (seeds 1-3)
#   summary   write the tables to docs/RESULTS.md
# One thread per run: run `teachers` alone (two queues), then `multitask` and `ensemble` side by side (2 cores).
# Usage: bash benchmarks/glue_multitask.sh PART > log 2>&1
set -euo pipefail
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1
out=${BENCH_OUT:-bench_runs}/glue
mkdir -p "$out/ensemble"

teacher() {  # teacher TASK SEED -> $out/TASK-teacher[-sSEED]/teacher
  local task=$1 seed=$2 dir=$out/$1-teacher
  [ "$seed" = 1 ] || dir=$dir-s$seed
  if [ ! -f "$dir/teacher/model.safetensors" ]; then
    textdistill train -c "benchmarks/glue/$task.yaml" -o "$dir" seed="$seed" > "$dir.log" 2>&1
    echo "$task seed $seed: $(tail -2 "$dir.log" | head -1)"
  fi
}

case ${1:-} in
  teachers)
    { teacher rte 1; teacher cola 1; teacher mrpc 3; } &
    { teacher mrpc 1; teacher stsb 1; teacher mrpc 2; } &
    wait ;;
  multitask)
    textdistill distill -c benchmarks/glue/multitask.yaml -o "$out/multitask-3l" "${@:2}" ;;
  multitask6)  # the same with all six layers: one student the size of ONE teacher for all five tasks
    textdistill distill -c benchmarks/glue/multitask.yaml -o "$out/multitask-6l" "student.layers=[0, 1, 2, 3, 4, 5]" \
      student.training.learning_rate=1.0e-4 "${@:2}" ;;
  ensemble)
    # the best single teacher: the highest dev F1 of the three (each run folder's metrics.json)
    best=$(python - "$out" <<'PY'
import json, sys
from pathlib import Path
runs = [Path(sys.argv[1]) / d for d in ("mrpc-teacher", "mrpc-teacher-s2", "mrpc-teacher-s3")]
print(max(runs, key=lambda r: json.loads((r / "metrics.json").read_text())["teacher"]["metrics"]["f1"]) / "teacher")
PY
)
    echo "best single MRPC teacher: $best"
    for seed in ${SEEDS:-1 2 3}; do
      [ -f "$out/ensemble/best-single-seed$seed/metrics.json" ] && continue  # done before
      { textdistill distill -c benchmarks/glue/ensemble.yaml -o "$out/ensemble/ensemble3-seed$seed" seed=$seed "${@:2}" \
          > "$out/ensemble/ensemble3-seed$seed.log" 2>&1
        echo "ensemble seed $seed: $(grep -A0 '| mrpc' "$out/ensemble/ensemble3-seed$seed/report.md")"; }
      { textdistill distill -c benchmarks/glue/ensemble.yaml -o "$out/ensemble/best-single-seed$seed" seed=$seed \
          "tasks.0.teachers=[{model: $best}]" "${@:2}" > "$out/ensemble/best-single-seed$seed.log" 2>&1
        echo "best single seed $seed: $(grep -A0 '| mrpc' "$out/ensemble/best-single-seed$seed/report.md")"; }
    done ;;
  summary)
    python benchmarks/summarize.py "$out/multitask-6l" "$out/multitask-3l" --kind multitask --name glue-multitask \
      --command "bash benchmarks/glue_multitask.sh teachers; bash benchmarks/glue_multitask.sh multitask6 (multitask-6l); ... multitask (multitask-3l)"
    python benchmarks/summarize.py "$out"/ensemble/*-seed? --kind ensemble --name glue-ensemble \
      --command "bash benchmarks/glue_multitask.sh ensemble" ;;
  *) echo "usage: $0 teachers|multitask|multitask6|ensemble|summary [KEY=VALUE overrides]" >&2; exit 2 ;;
esac
