#!/usr/bin/env bash
# End-to-end checks of the cellstate-ner command line: exit statuses,
# messages, input and output formats, conlleval output, --config, SIGINT and
# --resume, shipped model.
#   tests/cli_ner.sh BINARY TEST_DATA_DIR SOURCE_DIR
set -uo pipefail
bin=$1 data=$2 src=$3
source "$(dirname "$0")/cli_lib.sh"

check "help" 0 "$bin" --help
contains "help lists commands" "$tmp/out" "predict"
check "train --help" 0 "$bin" train --help
contains "train --help shows defaults" "$tmp/out" "--tag-scheme arg (=iobes)"
check "bad decoder" 2 "$bin" train --train x --dev x --model "$tmp/x" --decoder hmm
contains "bad decoder message" "$tmp/err" "--decoder must be crf or softmax"
check "bad input format" 2 "$bin" predict --input-format xml
contains "bad input message" "$tmp/err" "--input-format must be raw, conll or tokens"
check "missing model" 2 "$bin" predict --model "$tmp/nowhere" "$data/ner_raw.txt"
contains "missing model message" "$tmp/err" "nowhere: no such model directory"
check "empty training data" 2 "$bin" train --train "$data/empty.txt" --dev "$data/ner_tiny.conll" --model "$tmp/x"
contains "empty message" "$tmp/err" "empty.txt"

m="$tmp/model"
train=(train --train "$data/ner_tiny.conll" --dev "$data/ner_tiny.conll" --model "$m" --embed 16 --hidden 24
       --dropout 0 --char-embed 8 --char-hidden 8 --piece-vocab 60 --piece-embed 8 --rare-word-dropout 0
       --epochs 60 --patience 0 --batch-size 4 --lr 0.02 --threads 1)
check "train tiny" 0 "$bin" "${train[@]}"
contains "train reports F1" "$tmp/err" "dev F1 100.00"
check "eval" 0 "$bin" eval --model "$m" --data "$data/ner_tiny.conll" --output "$tmp/conlleval.txt"
contains "eval table (conlleval's)" "$tmp/out" "FB1: 100.00"
contains "conlleval input" "$tmp/conlleval.txt" "Jones B-PER B-PER"
check "eval --json" 0 "$bin" eval --model "$m" --data "$data/ner_tiny.conll" --json
contains "eval json" "$tmp/out" '"f1"'
check "predict raw json" 0 "$bin" predict --model "$m" "$data/ner_raw.txt"
[ "$(wc -l < "$tmp/out")" = 3 ] || fail "predict raw: expected 3 lines (empty line kept)"
contains "entity with offsets" "$tmp/out" '"end":30,"sentence":0,"start":24,"text":"Zürich"'
check "predict inline from stdin" 0 bash -c "echo 'Anna Karenina lives in Moscow .' | '$bin' predict --model '$m' --input-format tokens --format inline"
contains "inline" "$tmp/out" "[PER Anna Karenina] lives in [LOC Moscow] ."
check "predict conll" 0 "$bin" predict --model "$m" --input-format conll --format conll "$data/ner_tiny.conll"
contains "conll output" "$tmp/out" "Zürich	S-LOC"
check "predict conll in BIO" 0 "$bin" predict --model "$m" --input-format conll --format conll --tag-scheme bio "$data/ner_tiny.conll"
contains "conll output in BIO" "$tmp/out" "Zürich	B-LOC"
check "bad --tag-scheme" 2 "$bin" predict --model "$m" --tag-scheme iob7
check "inline keeps lines and spacing" 0 bash -c "printf 'Anna  Karenina lives in Moscow.\n\nAnna Karenina lives in Moscow. Anna Karenina lives in Moscow.\n' | '$bin' predict --model '$m' --format inline"
[ "$(wc -l < "$tmp/out")" = 3 ] || fail "inline: one output line per input line, got $(wc -l < "$tmp/out")"
[ "$(sed -n 1p "$tmp/out")" = "[PER Anna  Karenina] lives in [LOC Moscow]." ] || fail "inline spacing: got '$(sed -n 1p "$tmp/out")'"
[ -z "$(sed -n 2p "$tmp/out")" ] || fail "inline: a blank input line stays blank"
check "conll output keeps blank lines" 0 bash -c "printf 'Anna Karenina lives in Moscow .\n\n' | '$bin' predict --model '$m' --input-format tokens --format conll"
[ "$(grep -c '^$' "$tmp/out")" = 2 ] || fail "conll: a sentence's blank line and the blank input line"
check "builtin same tags" 0 "$bin" predict --model "$m" --impl builtin --input-format conll --format conll "$data/ner_tiny.conll"
contains "builtin conll output" "$tmp/out" "Zürich	S-LOC"
check "predict missing + good file" 2 "$bin" predict --model "$m" "$tmp/missing.txt" "$data/ner_raw.txt"
contains "missing file reported" "$tmp/err" "missing.txt"
contains "good file still processed" "$tmp/out" "Moscow"
check "predict invalid utf-8" 2 "$bin" predict --model "$m" "$data/invalid_utf8.txt"
contains "invalid utf-8 message" "$tmp/err" "invalid_utf8.txt:2: invalid UTF-8"
printf '{"model": "%s", "format": "inline", "input-format": "tokens"}\n' "$m" > "$tmp/c.json"
check "predict --config" 0 bash -c "echo 'Smith Jones won in Paris .' | '$bin' predict --config '$tmp/c.json'"
contains "--config applied" "$tmp/out" "[PER Smith] [PER Jones] won in [LOC Paris] ."
# The 0.1 spellings still work for one release, each with a warning naming today's.
printf '{"model": "%s", "output": "inline", "input": "tokens"}\n' "$m" > "$tmp/old.json"
check "old spellings in --config" 0 bash -c "echo 'Smith Jones won in Paris .' | '$bin' predict --config '$tmp/old.json'"
contains "old --config keys applied" "$tmp/out" "[PER Smith] [PER Jones] won in [LOC Paris] ."
contains "old --config key warned" "$tmp/err" "--output is deprecated: write --format"
check "old spellings" 0 "$bin" predict --model "$m" --input conll --output json --inputs "$data/ner_tiny.conll"
contains "--input warned" "$tmp/err" "warning: --input is deprecated: write --input-format"
contains "--inputs warned" "$tmp/err" "warning: --inputs is deprecated: write --files"
contains "json warned" "$tmp/err" "warning: --format json is deprecated: write --format jsonl"
contains "old spellings applied" "$tmp/out" '"text":"Zürich"'
check "flag with a value (old)" 0 "$bin" eval --model "$m" --data "$data/ner_tiny.conll" --json=true
contains "--json=true still works" "$tmp/out" '"f1"'
contains "--json=true warned" "$tmp/err" "--json=true is deprecated: write --json"
check "--x and --no-x" 2 "$bin" eval --model "$m" --data "$data/ner_tiny.conll" --json --no-json
contains "--x and --no-x message" "$tmp/err" "--json and --no-json contradict each other"
check "bench" 0 "$bin" bench --model "$m" --data "$data/ner_tiny.conll" --repeat 1
contains "bench output" "$tmp/out" "tokens/s"
# --dump-ids: the tagger's inputs for the Python peer, which runs on them
# where Debian's Python has PyTorch (scripts/setup.sh --python).
check "bench --dump-ids" 0 "$bin" bench --model "$m" --data "$data/ner_tiny.conll" --repeat 1 --dump-ids "$tmp/ids.json"
contains "dump has the sentences' ids" "$tmp/ids.json" '"sentences":[{"casing":'
contains "dump has the config" "$tmp/ids.json" '"tagger":{'
if /usr/bin/python3 -c "import torch" 2>/dev/null; then
  check "python peer tags and trains" 0 /usr/bin/python3 "$src/bench/ner_python.py" "$tmp/ids.json" \
    --train-ids "$tmp/ids.json" --threads 1 --repeat 1 --train-steps 2
  contains "python peer reports" "$tmp/out" '"train_tokens_per_s"'
fi

# SIGINT during training writes a checkpoint and exits; --resume finishes.
r="$tmp/resume"
"$bin" train --train "$data/ner_tiny.conll" --dev "$data/ner_tiny.conll" --model "$r" --embed 8 --hidden 8 \
  --char-embed 0 --piece-vocab 0 --epochs 100000 --patience 0 --threads 1 --quiet > /dev/null 2>&1 &
pid=$!
for _ in $(seq 600); do [ -f "$r.partial/weights.pt" ] && break; sleep 0.1; done  # up to 60 s on a loaded machine
kill -INT "$pid"
wait "$pid"
status=$?
[ "$status" = 130 ] || fail "SIGINT: exit $status, expected 130"
[ -f "$r.partial/checkpoint.pt" ] || fail "SIGINT: no checkpoint"
check "resume" 0 "$bin" train --train "$data/ner_tiny.conll" --dev "$data/ner_tiny.conll" --model "$r" --embed 8 \
  --hidden 8 --char-embed 0 --piece-vocab 0 --epochs 1 --patience 0 --threads 1 --resume
contains "resume message" "$tmp/err" "resuming from"

if [ -d "$src/models/ner-conll2003" ]; then
  check "shipped model" 0 "$bin" predict "$src/models/samples/ner/news.txt"
  contains "shipped model finds entities" "$tmp/out" '"type":'
fi

answers_each_line "predict answers each line of a pipe at once" "EU rejects German call." "Peter Blackburn spoke in Brussels." \
  "$bin" predict --threads 1
check "version" 0 "$bin" --version
contains "version" "$tmp/out" "cellstate-ner 0."
[ "$fails" = 0 ] && echo "all cellstate-ner CLI checks passed"
exit "$fails"
