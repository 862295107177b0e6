#!/usr/bin/env bash
# End-to-end checks of the cellstate-sentiment command line: exit statuses,
# messages, output shapes, --config, SIGINT and --resume, shipped model.
#   tests/cli_sentiment.sh BINARY TEST_DATA_DIR SOURCE_DIR
set -uo pipefail
bin=$1 data=$2 src=$3
source "$(dirname "$0")/cli_lib.sh"

check "help" 0 "$bin" --help
contains "help lists commands" "$tmp/out" "predict"
check "train --help" 0 "$bin" train --help
contains "train --help shows defaults" "$tmp/out" "--hidden arg (=256)"
check "no command" 2 "$bin"
check "unknown command" 2 "$bin" frobnicate
contains "unknown command message" "$tmp/err" "unknown command 'frobnicate'"
check "bad option value" 2 "$bin" predict --top-k 0
contains "bad option message" "$tmp/err" "--top-k must be >= 1"
check "missing model" 2 "$bin" predict --model "$tmp/nowhere" "$data/predict_lines.txt"
contains "missing model message" "$tmp/err" "nowhere: no such model directory"

m="$tmp/model"
train=(train --train "$data/sentiment_tiny.tsv" --dev "$data/sentiment_tiny.tsv" --model "$m"
       --embed 16 --hidden 16 --vocab-size 60 --epochs 30 --patience 0 --lr 0.01 --batch-size 4
       --embed-dropout 0 --dropout 0.1 --threads 1)
check "train tiny" 0 "$bin" "${train[@]}"
contains "train reports dev accuracy" "$tmp/err" "dev accuracy 100.00%"
check "eval" 0 "$bin" eval --model "$m" --data "$data/sentiment_tiny.tsv"
contains "eval table" "$tmp/out" "accuracy 100.00% (20 examples)"
check "eval --json" 0 "$bin" eval --model "$m" --data "$data/sentiment_tiny.tsv" --json
contains "eval json" "$tmp/out" '"accuracy": 1.0'
check "eval unknown label" 2 "$bin" eval --model "$m" --data "$data/sentiment_unknown_label.tsv"
contains "unknown label message" "$tmp/err" "sentiment_unknown_label.tsv:2: unknown label 'neutral'"

check "predict lines" 0 "$bin" predict --model "$m" "$data/predict_lines.txt"
[ "$(wc -l < "$tmp/out")" = 3 ] || { echo "FAIL: predict lines: expected 3 lines"; fails=$((fails + 1)); }
contains "empty line marked" "$tmp/out" "predict_lines.txt	2	<empty>	-"
cut -f1-3 "$tmp/out" > "$tmp/custom.tsv"
check "predict builtin" 0 "$bin" predict --model "$m" --impl builtin "$data/predict_lines.txt"
cut -f1-3 "$tmp/out" > "$tmp/builtin.tsv"
cmp -s "$tmp/custom.tsv" "$tmp/builtin.tsv" || { echo "FAIL: builtin labels differ from custom"; fails=$((fails + 1)); }
check "predict stdin" 0 bash -c "printf 'a wonderful film\n' | '$bin' predict --model '$m' --format jsonl"
contains "stdin jsonl" "$tmp/out" '"file":"-","label":"pos","line":1'
check "predict missing + good file" 2 "$bin" predict --model "$m" "$tmp/missing.txt" "$data/predict_lines.txt"
contains "missing file reported" "$tmp/err" "missing.txt: cannot open"
contains "good file still processed" "$tmp/out" "predict_lines.txt	3	"
check "predict invalid utf-8" 2 "$bin" predict --model "$m" "$data/invalid_utf8.txt"
contains "invalid utf-8 message" "$tmp/err" "invalid_utf8.txt:2: invalid UTF-8 at byte 5"
check "predict file unit" 0 "$bin" predict --model "$m" --unit file "$data/review.txt"
contains "document row" "$tmp/out" "review.txt	-	"

printf '{"model": "%s", "top-k": 2, "format": "tsv"}\n' "$m" > "$tmp/c.json"
check "predict --config" 0 "$bin" predict --config "$tmp/c.json" "$data/predict_lines.txt"
[ "$(head -1 "$tmp/out" | awk -F'\t' '{print NF}')" = 6 ] || { echo "FAIL: --config top-k 2 not applied"; fails=$((fails + 1)); }
check "old --input spelling" 0 "$bin" predict --model "$m" --input "$data/predict_lines.txt"
contains "old --input still read" "$tmp/out" "predict_lines.txt	3	"
contains "old --input warned" "$tmp/err" "--input is deprecated: write --files"
check "eval, old --format spelling" 0 "$bin" eval --model "$m" --data "$data/sentiment_tiny.tsv" --format tsv
contains "old --format warned" "$tmp/err" "--format is deprecated: write --input-format"
printf '{"modle": 1}\n' > "$tmp/bad.json"
check "predict bad --config" 2 "$bin" predict --config "$tmp/bad.json"
contains "bad config message" "$tmp/err" "bad.json: unknown option \"modle\""

# SIGINT during training writes a checkpoint and exits; --resume finishes.
r="$tmp/resume"
"$bin" train --train "$data/sentiment_tiny.tsv" --dev "$data/sentiment_tiny.tsv" --model "$r" \
  --embed 16 --hidden 16 --vocab-size 60 --epochs 100000 --patience 0 --threads 1 --quiet > /dev/null 2>&1 &
pid=$!
for _ in $(seq 600); do [ -f "$r.partial/weights.pt" ] && break; sleep 0.1; done  # up to 60 s on a loaded machine
kill -INT "$pid"
wait "$pid"
status=$?
[ "$status" = 130 ] || { echo "FAIL: SIGINT: exit $status, expected 130"; fails=$((fails + 1)); }
[ -f "$r.partial/checkpoint.pt" ] || { echo "FAIL: SIGINT: no checkpoint"; fails=$((fails + 1)); }
check "resume" 0 "$bin" train --train "$data/sentiment_tiny.tsv" --dev "$data/sentiment_tiny.tsv" --model "$r" \
  --embed 16 --hidden 16 --vocab-size 60 --epochs 1 --patience 0 --threads 1 --resume
contains "resume message" "$tmp/err" "resuming from"

if [ -d "$src/models/sentiment-sst2" ]; then
  check "shipped model" 0 "$bin" predict "$src/models/samples/sentiment/reviews.txt"
  [ "$(wc -l < "$tmp/out")" = 5 ] || { echo "FAIL: shipped model: expected 5 lines"; fails=$((fails + 1)); }
fi

answers_each_line "predict answers each line of a pipe at once" "a fine film ." "a bad film ." \
  "$bin" predict --threads 1 --batch-size 64
check "version" 0 "$bin" --version
contains "version" "$tmp/out" "cellstate-sentiment 0."
[ "$fails" = 0 ] && echo "all cellstate-sentiment CLI checks passed"
exit "$fails"
