#!/usr/bin/env bash
# Token-level distillation benchmark (issue 7), CoNLL-2003 English NER (benchmarks/conll/ner.yaml):
#   teacher          fine-tune all-MiniLM-L6-v2 on eng.train (checkpoint picked on testa); skipped when done
#   students         2-layer students (a third of the teacher's 6 layers), each with its no-distillation twin:
#                    student-2l (teacher layers [0, 5], token-level KD on eng.train) and student-2l-l15-pool
#                    (layers [1, 5], plus 8,544 unlabeled movie-review sentences the teacher tags word by word:
#                    data distillation) and student-2l-l15-news (layers [1, 5], plus 16,000 unlabeled news sentences
#                    from the GLUE texts, benchmarks/conll_news_pool.py) and student-2l-l15-newsall (all 30,916 such
#                    sentences; its twin is left out: it is student-2l-l15-news's, same config and seed);
#                    every model is also scored once on testb
#   run NAME K=V...  one more run with these overrides (e.g. distill.layer_map=...)
#   summary RUN...   write the tables of these runs (folder names under bench_runs/conll) to docs/RESULTS.md
# Usage (repository root): bash benchmarks/conll_ner.sh STEP > bench_runs/conll.log 2>&1
set -euo pipefail
export HF_HUB_OFFLINE=1
out=${BENCH_OUT:-bench_runs}/conll
cfg=benchmarks/conll/ner.yaml
step=${1:-all}
shift || true
mkdir -p "$out"
teacher=(teacher.model="$out/teacher/teacher" teacher.finetune=false)
case $step in
  teacher|all)
    [ -f "$out/teacher/teacher/model.safetensors" ] || textdistill train -c $cfg -o "$out/teacher" ;;&
  students|all)
    textdistill distill -c $cfg -o "$out/student-2l" "${teacher[@]}"
    textdistill distill -c $cfg -o "$out/student-2l-l15-pool" "${teacher[@]}" "student.layers=[1, 5]" student.num_layers=null \
      'transfer.unlabeled_file=${TEXTDISTILL_DATA}/unlabeled_movie_pool/sst_train_split_sentences.txt'
    python benchmarks/conll_news_pool.py "$out/news_pool.txt" --max 16000
    textdistill distill -c $cfg -o "$out/student-2l-l15-news" "${teacher[@]}" "student.layers=[1, 5]" student.num_layers=null \
      "transfer.unlabeled_file=$(realpath "$out/news_pool.txt")"
    python benchmarks/conll_news_pool.py "$out/news_pool_all.txt" --max 100000
    textdistill distill -c $cfg -o "$out/student-2l-l15-newsall" "${teacher[@]}" "student.layers=[1, 5]" student.num_layers=null \
      "transfer.unlabeled_file=$(realpath "$out/news_pool_all.txt")" distill.baseline=false ;;
  run)
    name=$1
    shift
    textdistill distill -c $cfg -o "$out/$name" "${teacher[@]}" "$@" ;;
  summary)
    runs=()
    for r in "$@"; do runs+=("$out/$r"); done
    python benchmarks/summarize.py "${runs[@]}" --name conll-ner --command "bash benchmarks/conll_ner.sh students" ;;
  teacher) ;;
  *) echo "unknown step $step" >&2; exit 2 ;;
esac
