#!/usr/bin/env bash
# Chinese benchmark (issue 9), ChnSentiCorp sentiment (benchmarks/chinese/chnsenticorp.yaml):
#   teacher          fine-tune multilingual-e5-small on the 9,600 training reviews (checkpoint picked on dev);
#                    skipped when done
#   students         student-4l: 4 of the teacher's 12 layers, logit KD, with its no-distillation twin;
#                    textcnn: a character-level TextCNN (Kim 2014; its own vocabulary of the 6,000 most frequent
#                    characters and words, random embeddings, filters of 3, 4, 5), distilled with MSE on logits,
#                    with its twin (a BiLSTM, type: bilstm, trains ~10x slower on this CPU)
#   ner-teacher K=V  Resume NER (benchmarks/chinese/resume_ner.yaml): fine-tune multilingual-e5-small as a tagger
#   ner-students K=V resume-4l: 4 of its 12 layers, token-level KD, with its twin; scored on dev and test
#                    (the recorded run: both with data.max_train_samples=1500, for time)
#   run NAME K=V...  one more run with these overrides
#   summary          write the tables of the runs above to docs/RESULTS.md (sections chinese and chinese-ner)
# Usage (repository root): bash benchmarks/chinese.sh STEP > bench_runs/chinese.log 2>&1
set -euo pipefail
export HF_HUB_OFFLINE=1
out=${BENCH_OUT:-bench_runs}/chinese
cfg=benchmarks/chinese/chnsenticorp.yaml
ner=benchmarks/chinese/resume_ner.yaml
step=${1:-all}
shift || true
mkdir -p "$out"
teacher=(teacher.model="$out/teacher/teacher" teacher.finetune=false)
textcnn=(student.num_layers=null student.prune_vocabulary=false 'student.architecture={type: textcnn, tokenizer: words, vocab_size: 6000, embedding_dim: 300}'
         student.training.learning_rate=1.0e-3 student.training.num_train_epochs=5 distill.loss=mse)
case $step in
  teacher|all)
    [ -f "$out/teacher/teacher/model.safetensors" ] || textdistill train -c $cfg -o "$out/teacher" ;;&
  students|all)
    textdistill distill -c $cfg -o "$out/student-4l" "${teacher[@]}" ;;&
  students|textcnn|all)
    textdistill distill -c $cfg -o "$out/textcnn" "${teacher[@]}" "${textcnn[@]}" ;;
  ner-teacher)
    [ -f "$out/resume-teacher/teacher/model.safetensors" ] || textdistill train -c $ner -o "$out/resume-teacher" "$@" ;;
  ner-students)
    textdistill distill -c $ner -o "$out/resume-4l" teacher.model="$out/resume-teacher/teacher" teacher.finetune=false "$@" ;;
  run)
    name=$1
    shift
    textdistill distill -c $cfg -o "$out/$name" "${teacher[@]}" "$@" ;;
  summary)
    python benchmarks/summarize.py "$out/student-4l" "$out/textcnn" --name chinese --command "bash benchmarks/chinese.sh teacher students"
    [ ! -f "$out/resume-4l/metrics.json" ] ||
      python benchmarks/summarize.py "$out/resume-4l" --name chinese-ner --command "bash benchmarks/chinese.sh ner-teacher ner-students" ;;
  teacher|textcnn) ;;
  *) echo "unknown step $step" >&2; exit 2 ;;
esac
