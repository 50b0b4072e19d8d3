#!/usr/bin/env bash
# Data distillation benchmark (issue 6), low-resource SST-2 (benchmarks/sst2_lowresource.yaml):
#   1. fine-tune the teacher on 1,000 sentences (skipped when done);
#   2. label the transfer set once (`textdistill label`: 1,000 + 10 variants each + the unlabeled pool), timed;
#   3. for a 2-layer student and a BiLSTM: distill on the transfer set (its twin: the same student on the 1,000 gold
#      labels) and distill on the 1,000 sentences alone (transfer=null, 10 epochs: as many steps as 3 epochs of ~10x
#      the data would be, roughly);
#   4. labelling throughput vs the teacher's bare batched inference (benchmarks/label_throughput.py);
#   5. write the tables to docs/RESULTS.md.
# Usage (repository root): bash benchmarks/sst2_lowresource.sh > bench_runs/lowres.log 2>&1
set -euo pipefail
export HF_HUB_OFFLINE=1
out=${BENCH_OUT:-bench_runs}/lowres
cfg=benchmarks/sst2_lowresource.yaml
mkdir -p "$out"
[ -f "$out/teacher/teacher/model.safetensors" ] || textdistill train -c $cfg -o "$out/teacher"
teacher=(teacher.model="$out/teacher/teacher" teacher.finetune=false transfer.output="$out/transfer-set")
textdistill label -c $cfg "${teacher[@]}"
bilstm=(student.layers=null "student.architecture={type: bilstm, hidden_size: 150, tokenizer: teacher, init_from_teacher: true}"
        student.training.learning_rate=1.0e-3)
textdistill distill -c $cfg -o "$out/2l-transfer" "${teacher[@]}"
textdistill distill -c $cfg -o "$out/2l-1k" "${teacher[@]}" transfer=null distill.baseline=false student.training.num_train_epochs=10
textdistill distill -c $cfg -o "$out/bilstm-transfer" "${teacher[@]}" "${bilstm[@]}"
textdistill distill -c $cfg -o "$out/bilstm-1k" "${teacher[@]}" "${bilstm[@]}" transfer=null distill.baseline=false \
  student.training.num_train_epochs=10
python benchmarks/label_throughput.py -c $cfg "${teacher[@]}" --json > "$out/label_throughput.json"
python benchmarks/summarize.py "$out"/{2l,bilstm}-{transfer,1k} --kind transfer --name sst2-lowresource \
  --command "bash benchmarks/sst2_lowresource.sh"
