#!/usr/bin/env bash
# The same 2-layer student with logits only / + hidden MSE / + hidden and attention KL / + MiniLM losses, two seeds
# each; then BiLSTM and TextCNN students with their no-distillation twins. Writes the tables to docs/RESULTS.md.
# Usage (repository root, after bash benchmarks/sst2_full.sh):  bash benchmarks/sst2_ablation.sh > ablation.log 2>&1
set -euo pipefail
export HF_HUB_OFFLINE=1
out=${BENCH_OUT:-bench_runs}/ablation
teacher=${BENCH_OUT:-bench_runs}/sst2-teacher/teacher
hidden='{strategy: kept, feature: hidden, loss: mse, include_embeddings: true}'
attention='{strategy: kept, feature: attention, loss: kl}'
run() {  # name seed overrides...
  local name=$1 seed=$2
  shift 2
  textdistill distill -c benchmarks/sst2_ablation.yaml -o "$out/$name-seed$seed" teacher.model="$teacher" seed="$seed" "$@"
}
for seed in 1 2; do
  run logits "$seed"
  run hidden "$seed" "distill.layer_map=[$hidden]"
  run hidden+attention "$seed" "distill.layer_map=[$hidden, $attention]"
  run minilm "$seed" "distill.minilm={attention_weight: 1.0, value_weight: 1.0}"
done
for arch in bilstm textcnn; do
  run "$arch" 1 student.layers=null "student.architecture={type: $arch, tokenizer: teacher, init_from_teacher: true}" \
    student.training.num_train_epochs=2 student.training.learning_rate=1.0e-3 distill.baseline=true
done
python benchmarks/summarize.py --kind ablation "$out"/{logits,hidden,hidden+attention,minilm}-seed* \
  --name sst2-ablation --command "bash benchmarks/sst2_ablation.sh"
python benchmarks/summarize.py --kind classic "$out"/bilstm-seed1 "$out"/textcnn-seed1 \
  --name sst2-classic --command "bash benchmarks/sst2_ablation.sh"
