#!/usr/bin/env bash
# Generative benchmark (issue 10): SmolLM2-135M-Instruct -> a 15-layer student (benchmarks/generative/smollm2.yaml).
#   data       build the JSONL rows from ../shared/data (benchmarks/generative_data.py: movie-review continuations
#              and MRPC paraphrases); skipped when done
#   online     the student distilled with the teacher run alongside (forward KL + LM loss, completion tokens), and
#              its twin trained on the LM loss alone, same tokens and budget
#   topk K=V   the same student distilled from the top-k teacher-output cache (generative.teacher_cache), no twin
#   10l K=V    a 10-layer student (num_layers: 10) from the same cache, with its twin
#   summary    write the table to docs/RESULTS.md (section generative)
# Usage (repository root): bash benchmarks/generative.sh STEP [K=V ...] > bench_runs/generative.log 2>&1
set -euo pipefail
export HF_HUB_OFFLINE=1
out=${BENCH_OUT:-bench_runs}/generative
cfg=benchmarks/generative/smollm2.yaml
step=${1:-all}
shift || true
mkdir -p "$out"
data=(data.train_file="$PWD/$out/data/train.jsonl" data.validation_file="$PWD/$out/data/dev.jsonl")
case $step in
  data|all)
    [ -f "$out/data/dev.jsonl" ] || python benchmarks/generative_data.py "$out/data" ;;&
  online|all)
    textdistill distill -c $cfg -o "$out/online" "${data[@]}" "$@" ;;&
  topk|all)
    textdistill distill -c $cfg -o "$out/topk" "${data[@]}" baseline=false 'generative.teacher_cache={top_k: 64}' "$@" ;;&
  10l|all)  # 10 of the 30 layers, from the same top-k cache (a hit after topk), with its twin
    textdistill distill -c $cfg -o "$out/topk-10l" "${data[@]}" student.layers=null student.num_layers=10 \
      'generative.teacher_cache={top_k: 64}' student.training.eval_steps=100 "$@" ;;&
  summary|all)
    python benchmarks/summarize.py --kind generative --name generative "$out/online" $(for r in topk topk-10l; do [ -f "$out/$r/metrics.json" ] && echo "$out/$r"; done) --command "bash benchmarks/generative.sh all" ;;
  data|online|topk|10l) ;;
  *) echo "unknown step $step" >&2; exit 2 ;;
esac
