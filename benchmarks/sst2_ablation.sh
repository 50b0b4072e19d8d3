#!/usr/bin/env bash
# Intermediate-layer ablation and non-transformer students on SST-2 (issue: intermediate-layer distillation and
# students of every kind). Writes the tables to docs/RESULTS.md. Run after bash benchmarks/sst2_full.sh (it reuses
# that run's fine-tuned teacher), from the repository root:
#
#   bash benchmarks/sst2_ablation.sh transformer   # the same 2-layer student, one epoch: logits only / + hidden MSE /
#                                                  # + hidden MSE and attention KL / + MiniLM losses; seeds 1 and 2
#   bash benchmarks/sst2_ablation.sh long SETTING [EPOCHS] [LR]  # one of those settings with the full budget (3
#                                                  # epochs, or EPOCHS; learning rate 3e-4, or LR), seeds 1, 2
#                                                  # (hidden+attention-da: the same with TinyBERT-style data
#                                                  # augmentation, a teacher-labelled transfer set)
#   bash benchmarks/sst2_ablation.sh losses [SEEDS]  # the other losses: DistilBERT cosine, BERT-PKD, attention MSE
#   bash benchmarks/sst2_ablation.sh classic       # BiLSTM, TextCNN and MLP students with their no-distillation twins
#   bash benchmarks/sst2_ablation.sh speed         # (part of classic) those students and the teacher timed side by
#                                                  # side in PyTorch and ONNX Runtime (benchmarks/classic_speed.py)
#   bash benchmarks/sst2_ablation.sh classic-base  # BiLSTM and TextCNN from a BERT-base-class teacher (all-mpnet-base-v2,
#                                                  # fine-tuned here), with twins and the side-by-side timing
#   bash benchmarks/sst2_ablation.sh summary       # rewrite the ablation table from the runs that exist
#
# Transformer runs go two at a time, one thread each (on a 2-core machine that is faster than one after the other);
# each run's output goes to bench_runs/ablation/NAME-seedN.log.
set -euo pipefail
export HF_HUB_OFFLINE=1
out=${BENCH_OUT:-bench_runs}/ablation
mkdir -p "$out"
teacher=${BENCH_OUT:-bench_runs}/sst2-teacher/teacher
hidden_attention='distill.layer_map=[{strategy: kept, feature: hidden, loss: mse, include_embeddings: true}, {strategy: kept, feature: attention, loss: kl}]'
# TinyBERT's recipe adds data augmentation: one augmented copy of every training sentence (per word 10% [MASK], 10% one
# of its 10 nearest words in the teacher's input embeddings, then 25% n-gram sampling) and the 8,544 full training
# sentences of the shared movie pool (SST-2's training set is mostly short phrases, dev is full sentences), all
# labelled by the teacher (data distillation's transfer set, textdistill.transfer)
augment='transfer={variants: 1, mask: 0.1, neighbour: 0.1, ngram: 0.25, unlabeled_file: "${TEXTDISTILL_DATA}/unlabeled_movie_pool/sst_train_split_sentences.txt"}'
# each setting's overrides, one per line
declare -A terms=(
  [logits]=''
  [hidden]='distill.layer_map=[{strategy: kept, feature: hidden, loss: mse, include_embeddings: true}]'
  [hidden+attention]=$hidden_attention
  [hidden+attention-da]="$hidden_attention
$augment"
  [logits-da]=$augment  # its control: the same transfer set, KD on the logits alone
  [minilm]='distill.minilm={attention_weight: 1.0, value_weight: 1.0}'
  [cosine]='distill.layer_map=[{strategy: last, feature: hidden, loss: cosine}]'
  [pkd]='distill.layer_map=[{strategy: kept, feature: hidden, loss: pkd}]'
  [attention-mse]='distill.layer_map=[{strategy: kept, feature: attention, loss: mse}]'
  # hidden+attention with both weights falling linearly from 1 to 0 over training: the layers are matched early and
  # the last steps learn from the logits alone
  [hidden+attention-decay]='distill.layer_map=[{strategy: kept, feature: hidden, loss: mse, include_embeddings: true, weight: {kind: linear, start: 1.0, end: 0.0}}, {strategy: kept, feature: attention, loss: kl, weight: {kind: linear, start: 1.0, end: 0.0}}]'
)
order=(logits logits-da hidden hidden+attention hidden+attention-da hidden+attention-decay minilm cosine pkd attention-mse)

run() {  # name seed overrides...
  local name=$1 seed=$2
  shift 2
  textdistill distill -c benchmarks/sst2_ablation.yaml -o "$out/$name-seed$seed" teacher.model="$teacher" seed="$seed" "$@"
}
queue() {  # run "NAME SEED SETTING [EXTRA OVERRIDES...]" jobs, two at a time, one thread each
  local job name seed setting rest extra line
  for job in "$@"; do
    read -r name seed setting rest <<< "$job"
    read -ra extra <<< "$rest"
    while (( $(jobs -rp | wc -l) >= 2 )); do wait -n; done
    local args=()
    while IFS= read -r line; do [[ -n $line ]] && args+=("$line"); done <<< "${terms[$setting]}"
    args+=("${extra[@]}")
    OMP_NUM_THREADS=1 run "$name" "$seed" "${args[@]}" > "$out/$name-seed$seed.log" 2>&1 &
  done
  while (( $(jobs -rp | wc -l) > 0 )); do wait -n; done
}
summary() {  # every setting that has run, in the order above (the full-budget rows after their one-epoch rows)
  local runs=() name dir
  for name in "${order[@]}"; do
    for dir in "$out/$name"-seed[0-9] "$out/$name"-[0-9]ep-seed[0-9] "$out/$name"-lr*-[0-9]ep-seed[0-9]; do [[ -f $dir/metrics.json ]] && runs+=("$dir"); done
  done
  python benchmarks/summarize.py --kind ablation "${runs[@]}" --name sst2-ablation \
    --command "bash benchmarks/sst2_ablation.sh long hidden+attention; ... long hidden+attention 3 1e-4; ... long minilm; ... long hidden+attention-da 2; ... long hidden+attention-da 3; ... long logits-da 2"
}

classic_student() {  # classic_student NAME SPEC: the BiLSTM/TextCNN/MLP recipe, on the teacher's tokenizer, with its twin
  run "$1" 1 student.layers=null "student.architecture={type: $2, tokenizer: teacher, init_from_teacher: true}" \
    student.training.num_train_epochs=2 student.training.learning_rate=1.0e-3 distill.baseline=true
}

speed() {  # the teacher and the three students side by side, in PyTorch and in ONNX Runtime (quiet machine)
  python benchmarks/classic_speed.py -c benchmarks/sst2_ablation.yaml teacher="$teacher" \
    bilstm="$out/bilstm-seed1/student" textcnn="$out/textcnn-seed1/student" mlp="$out/mlp-seed1/student" \
    --onnx-dir "$out/classic-onnx" --rounds 7 --results > "$out/classic-speed.json"
}

case ${1:-} in
  transformer)
    jobs_=()
    for setting in logits hidden hidden+attention minilm; do jobs_+=("$setting 1 $setting" "$setting 2 $setting"); done
    queue "${jobs_[@]}"
    summary ;;
  long)
    setting=${2:?which setting} epochs=${3:-3} lr=${4:-}
    name=$setting${lr:+-lr$lr}-${epochs}ep extra="student.training.num_train_epochs=$epochs${lr:+ student.training.learning_rate=$lr}"
    queue "$name 1 $setting $extra" "$name 2 $setting $extra"
    summary ;;
  losses)
    jobs_=()
    for seed in ${2:-1 2}; do for setting in cosine pkd attention-mse; do jobs_+=("$setting $seed $setting"); done; done
    queue "${jobs_[@]}"
    summary ;;
  summary) summary ;;
  classic)
    # BiLSTM: one layer of 150 units per direction (its latency at batch 1 is sequential in the length, so the width
    # is what can be chosen); TextCNN: the Kim (2014) defaults (kernels 3, 4, 5, 100 filters each); MLP: the mean of
    # the embeddings, one hidden layer of 256. All on the teacher's tokenizer, embeddings from the teacher's (PCA).
    # One run at a time, on both threads: their latency and throughput are measured at the end of each run.
    for spec in "bilstm, hidden_size: 150" "textcnn" "mlp"; do
      classic_student "${spec%%,*}" "$spec"
    done
    python benchmarks/summarize.py --kind classic "$out"/{bilstm,textcnn,mlp}-seed1 \
      --name sst2-classic --command "bash benchmarks/sst2_ablation.sh classic"
    speed ;;
  speed) speed ;;
  classic-base)
    # The setting of Tang et al. (2019): a base-size teacher. all-mpnet-base-v2 (12 layers of 768, 109 M parameters)
    # fine-tuned on the first 24,000 training sentences for one epoch (bf16 autocast: a full epoch in fp32 takes hours
    # on this CPU), then the same BiLSTM and TextCNN students as `classic`, on its tokenizer and embeddings, trained on
    # all 67,349 sentences with and without its soft targets. THREADS: threads per run (2 on a quiet machine).
    base=${BENCH_OUT:-bench_runs}/sst2-teacher-mpnet
    export OMP_NUM_THREADS=${THREADS:-2}
    [ -f "$base/teacher/model.safetensors" ] || textdistill train -c benchmarks/sst2_full.yaml -o "$base" \
      teacher.model=all-mpnet-base-v2 teacher.training.learning_rate=2.0e-5 teacher.training.mixed_precision=bf16 \
      data.max_train_samples=24000 teacher.training.eval_steps=250 > "$base.log" 2>&1
    teacher=$base/teacher
    for spec in "bilstm, hidden_size: 150" "textcnn"; do
      name=${spec%%,*}-mpnet
      [ -f "$out/$name-seed1/metrics.json" ] || classic_student "$name" "$spec" > "$out/$name-seed1.log" 2>&1
    done
    python benchmarks/summarize.py --kind classic "$out"/{bilstm,textcnn}-mpnet-seed1 \
      --name sst2-classic-base --command "bash benchmarks/sst2_ablation.sh classic-base"
    python benchmarks/classic_speed.py -c benchmarks/sst2_ablation.yaml teacher="$teacher" \
      bilstm="$out/bilstm-mpnet-seed1/student" textcnn="$out/textcnn-mpnet-seed1/student" \
      --onnx-dir "$out/classic-base-onnx" --rounds 5 --repeats 10 --results --name sst2-classic-base-speed > "$out/classic-base-speed.json" ;;
  *) sed -n '2,16p' "$0"; exit 2 ;;
esac
