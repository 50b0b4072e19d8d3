#!/usr/bin/env bash
# Token-level distillation benchmark (issue 7), CoNLL-2003 English NER (benchmarks/conll/ner.yaml):
#   1. fine-tune the all-MiniLM-L6-v2 teacher on eng.train (checkpoint picked on testa; skipped when done);
#   2. distill 2-layer students (a third of its 6 layers) with token-level KD, each with its no-distillation twin;
#      every model is scored on testb (held out) once, at the end.
# Usage (repository root): bash benchmarks/conll_ner.sh [teacher|students] > bench_runs/conll.log 2>&1
set -euo pipefail
export HF_HUB_OFFLINE=1
out=${BENCH_OUT:-bench_runs}/conll
cfg=benchmarks/conll/ner.yaml
step=${1:-all}
mkdir -p "$out"
if [ "$step" = teacher ] || [ "$step" = all ]; then
  [ -f "$out/teacher/teacher/model.safetensors" ] || textdistill train -c $cfg -o "$out/teacher"
fi
teacher=(teacher.model="$out/teacher/teacher" teacher.finetune=false)
if [ "$step" = students ] || [ "$step" = all ]; then
  textdistill distill -c $cfg -o "$out/student-2l" "${teacher[@]}"
fi
