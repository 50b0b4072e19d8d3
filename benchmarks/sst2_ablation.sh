#!/usr/bin/env bash
# The same 2-layer student with logits only / + hidden MSE / + hidden and attention KL / + MiniLM losses, two seeds
# each; then BiLSTM and TextCNN students with their no-distillation twins. Writes the tables to docs/RESULTS.md.
# Usage (repository root, after bash benchmarks/sst2_full.sh):  bash benchmarks/sst2_ablation.sh > ablation.log 2>&1
# (or one part: `bash benchmarks/sst2_ablation.sh transformer` or `... classic`).
set -euo pipefail
export HF_HUB_OFFLINE=1
out=${BENCH_OUT:-bench_runs}/ablation
mkdir -p "$out"
teacher=${BENCH_OUT:-bench_runs}/sst2-teacher/teacher
hidden='{strategy: kept, feature: hidden, loss: mse, include_embeddings: true}'
attention='{strategy: kept, feature: attention, loss: kl}'
run() {  # name seed overrides...
  local name=$1 seed=$2
  shift 2
  textdistill distill -c benchmarks/sst2_ablation.yaml -o "$out/$name-seed$seed" teacher.model="$teacher" seed="$seed" "$@"
}
lane() {  # the four settings for one seed, one after the other
  local seed=$1
  export OMP_NUM_THREADS=1
  run logits "$seed"
  run hidden "$seed" "distill.layer_map=[$hidden]"
  run hidden+attention "$seed" "distill.layer_map=[$hidden, $attention]"
  run minilm "$seed" "distill.minilm={attention_weight: 1.0, value_weight: 1.0}"
}
# The two seeds run side by side, one thread each (on a 2-core machine that is faster than one after the other).
part=${1:-all}
if [[ $part == all || $part == transformer ]]; then
  lane 1 > "$out-seed1.log" 2>&1 &
  lane 2 > "$out-seed2.log" 2>&1 &
  wait -n && wait -n
  python benchmarks/summarize.py --kind ablation "$out"/{logits,hidden,hidden+attention,minilm}-seed* \
    --name sst2-ablation --command "bash benchmarks/sst2_ablation.sh"
fi
[[ $part == all || $part == classic ]] || exit 0
# BiLSTM: one layer of 150 units per direction (the latency at batch 1 is sequential in the length, so width is what
# can be chosen); TextCNN: the Kim (2014) defaults (kernels 3, 4, 5 with 100 filters each).
for spec in "bilstm, hidden_size: 150" "textcnn"; do
  run "${spec%%,*}" 1 student.layers=null "student.architecture={type: $spec, tokenizer: teacher, init_from_teacher: true}" \
    student.training.num_train_epochs=2 student.training.learning_rate=1.0e-3 distill.baseline=true
done
python benchmarks/summarize.py --kind classic "$out"/bilstm-seed1 "$out"/textcnn-seed1 \
  --name sst2-classic --command "bash benchmarks/sst2_ablation.sh"
