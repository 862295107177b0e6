#!/usr/bin/env bash
# End-to-end checks of the cellstate-textgen command line: exit statuses,
# messages, streaming generation, --stop, seeds, stdin prompts, --config,
# SIGINT and --resume, shipped model.
#   tests/cli_textgen.sh BINARY TEST_DATA_DIR SOURCE_DIR
set -uo pipefail
bin=$1 data=$2 src=$3
source "$(dirname "$0")/cli_lib.sh"

check "help" 0 "$bin" --help
contains "help lists commands" "$tmp/out" "generate"
check "generate --help" 0 "$bin" generate --help
contains "generate --help shows defaults" "$tmp/out" "--top-p arg (=1)"
check "bad temperature" 2 "$bin" generate --temperature 0 --prompt x
contains "bad temperature message" "$tmp/err" "--temperature must be in (0, 100]"
check "missing model" 2 "$bin" generate --model "$tmp/nowhere" --prompt x
contains "missing model message" "$tmp/err" "nowhere: no such model directory"
check "train --help" 0 "$bin" train --help
grep -q -- "--bidirectional" "$tmp/out" && fail "train --help lists --bidirectional, which a language model cannot take"
check "bidirectional refused" 2 "$bin" train --train "$data/textgen_tiny.txt" --model "$tmp/x" --bidirectional
contains "bidirectional message" "$tmp/err" "unrecognised option '--bidirectional'"
check "empty training text" 2 "$bin" train --train "$data/empty.txt" --model "$tmp/x"
contains "empty message" "$tmp/err" "empty.txt: empty input, expected text"
check "invalid utf-8 training text" 2 "$bin" train --train "$data/invalid_utf8.txt" --model "$tmp/x"
contains "invalid utf-8 message" "$tmp/err" "invalid_utf8.txt:2: invalid UTF-8"

m="$tmp/model"
train=(train --train "$data/textgen_tiny.txt" --valid "$data/textgen_tiny.txt" --model "$m" --spm-type char
       --vocab-size 60 --layers 1 --hidden 64 --embed 32 --dropout 0 --bptt 16 --batch-size 4 --lr 0.02
       --epochs 150 --patience 0 --lr-schedule constant --threads 1)
check "train tiny" 0 "$bin" "${train[@]}"
contains "train reports nats/char" "$tmp/err" "nats/char"
[ -s "$m/train_log.jsonl" ] || fail "no train_log.jsonl"
check "eval" 0 "$bin" eval --model "$m" --data "$data/textgen_tiny.txt"
contains "eval table" "$tmp/out" "bits/char"
check "eval --json" 0 "$bin" eval --model "$m" --data "$data/textgen_tiny.txt" --json
contains "eval json" "$tmp/out" '"nats_per_char"'

check "generate greedy" 0 "$bin" generate --model "$m" --prompt "Up" --greedy --max-tokens 25
contains "greedy continues the text" "$tmp/out" "Up above the world so high"
check "generate --stop" 0 "$bin" generate --model "$m" --prompt "How I" --greedy --stop '\n'
[ "$(cat "$tmp/out")" = "How I wonder what you are!" ] || fail "--stop: got '$(cat "$tmp/out")'"
check "seed 1" 0 "$bin" generate --model "$m" --prompt "When" --temperature 3 --seed 5 --max-tokens 40
cp "$tmp/out" "$tmp/s1"
check "seed 1 again" 0 "$bin" generate --model "$m" --prompt "When" --temperature 3 --seed 5 --max-tokens 40
cmp -s "$tmp/s1" "$tmp/out" || fail "the same seed gave different samples"
check "jsonl" 0 "$bin" generate --model "$m" --prompt "Up" --greedy --max-tokens 5 --format jsonl --num-samples 2
[ "$(wc -l < "$tmp/out")" = 2 ] || fail "jsonl: expected 2 records"
contains "jsonl logprobs" "$tmp/out" '"logprobs":['
check "stdin prompts" 0 bash -c "printf 'Up\nHow I\n' | '$bin' generate --model '$m' --greedy --stop '\n'"
[ "$(cat "$tmp/out")" = "$(printf 'Up above the world so high,\n---\nHow I wonder what you are!\n---')" ] ||
  fail "stdin prompts: got '$(cat "$tmp/out")'"
check "empty prompt" 0 "$bin" generate --model "$m" --prompt "" --greedy --max-tokens 8
contains "empty prompt starts the text" "$tmp/out" "Twinkle"
check "unknown characters" 0 "$bin" generate --model "$m" --prompt "漢字" --max-tokens 3
contains "unknown characters warned" "$tmp/err" "vocabulary lacks"
check "over-long prompt" 0 "$bin" generate --model "$m" --prompt-file "$data/textgen_tiny.txt" --max-prompt-tokens 20 --max-tokens 3
contains "over-long prompt warned" "$tmp/err" "longer than --max-prompt-tokens 20"
check "invalid utf-8 prompt file" 2 "$bin" generate --model "$m" --prompt-file "$data/invalid_utf8.txt"
contains "invalid prompt message" "$tmp/err" "invalid_utf8.txt:2: invalid UTF-8"
check "builtin same greedy text" 0 "$bin" generate --model "$m" --impl builtin --prompt "Up" --greedy --max-tokens 25
contains "builtin greedy" "$tmp/out" "Up above the world so high"
printf '{"model": "%s", "greedy": true, "max-tokens": 12, "prompt": "Then"}\n' "$m" > "$tmp/c.json"
check "generate --config" 0 "$bin" generate --config "$tmp/c.json"
contains "--config applied" "$tmp/out" "Then you show"
check "bench" 0 "$bin" bench --model "$m" --tokens 20 --repeat 2
contains "bench output" "$tmp/out" "ms/token"

# SIGINT during training writes a checkpoint and exits; --resume finishes.
r="$tmp/resume"
"$bin" train --train "$data/textgen_tiny.txt" --model "$r" --valid "$data/textgen_tiny.txt" --spm-type char \
  --vocab-size 60 --hidden 16 --embed 16 --bptt 8 --batch-size 2 --epochs 100000 --patience 0 --threads 1 --quiet \
  > /dev/null 2>&1 &
pid=$!
for _ in $(seq 600); do [ -f "$r.partial/weights.pt" ] && break; sleep 0.1; done  # up to 60 s on a loaded machine
kill -INT "$pid"
wait "$pid"
status=$?
[ "$status" = 130 ] || fail "SIGINT: exit $status, expected 130"
[ -f "$r.partial/checkpoint.pt" ] || fail "SIGINT: no checkpoint"
check "resume" 0 "$bin" train --train "$data/textgen_tiny.txt" --model "$r" --valid "$data/textgen_tiny.txt" \
  --spm-type char --vocab-size 60 --hidden 16 --embed 16 --bptt 8 --batch-size 2 --epochs 1 --patience 0 \
  --threads 1 --resume
contains "resume message" "$tmp/err" "resuming from"

# AWD-LSTM's regularisers: recorded in config.json, a trained model that
# generates like any other, refusals of impossible values.
w="$tmp/awd"
awd=(train --train "$data/textgen_tiny.txt" --valid "$data/textgen_tiny.txt" --model "$w" --spm-type char
     --vocab-size 60 --layers 2 --hidden 32 --embed 16 --tie --bptt 8 --batch-size 2 --epochs 3 --patience 0
     --threads 1 --dropout 0.3 --embed-dropout 0.1 --hidden-dropout 0.2 --locked-dropout --vocabulary-dropout 0.1
     --weight-dropout 0.5 --ar 2 --tar 1 --nt-asgd 1)
check "train with AWD-LSTM regularisation" 0 "$bin" "${awd[@]}"
/usr/bin/python3 - "$w/config.json" <<'PY' || fail "config.json does not record the regularisation"
import json, sys
c = json.load(open(sys.argv[1]))
r = c["regularization"]
want = {"embed_dropout": 0.1, "hidden_dropout": 0.2, "locked_dropout": True, "vocabulary_dropout": 0.1,
        "weight_dropout": 0.5, "ar": 2, "tar": 1}
assert all(r[k] == v for k, v in want.items()), r
assert c["training"]["nt_asgd"] == 1, c["training"]
assert c["training"]["precision"] == "fp32", c["training"]
PY
# The precision a model trained at is recorded: bf16 where the CPU has it,
# else fp32 (with a warning).
check "train in bf16" 0 "$bin" train --train "$data/textgen_tiny.txt" --valid "$data/textgen_tiny.txt" \
  --model "$tmp/bf16" --spm-type char --vocab-size 60 --layers 1 --hidden 16 --embed 16 --bptt 8 --batch-size 2 \
  --epochs 1 --threads 1 --precision bf16
want=fp32
grep -qw avx512_bf16 /proc/cpuinfo && [ -z "${DNNL_MAX_CPU_ISA:-}" ] && want=bf16
/usr/bin/python3 - "$tmp/bf16/config.json" "$want" <<'PY' || fail "config.json does not record the training precision"
import json, sys
c = json.load(open(sys.argv[1]))
assert c["training"]["precision"] == sys.argv[2], (c["training"], sys.argv[2])
PY
check "regularised model generates" 0 "$bin" generate --model "$w" --prompt "Up" --greedy --max-tokens 5
check "regularised model evaluates deterministically" 0 "$bin" eval --model "$w" --data "$data/textgen_tiny.txt" --json
cp "$tmp/out" "$tmp/e1"
check "again" 0 "$bin" eval --model "$w" --data "$data/textgen_tiny.txt" --json
cmp -s "$tmp/e1" "$tmp/out" || fail "evaluation of a regularised model is not deterministic"
# A fine-tuning run takes the source's regularisers as its defaults.
check "fine-tune a regularised model" 0 "$bin" train --train "$data/textgen_tiny.txt" --valid "$data/textgen_tiny.txt" \
  --model "$tmp/awd_ft" --init-from "$w" --epochs 1 --threads 1 --ar 0
/usr/bin/python3 - "$w/config.json" "$tmp/awd_ft/config.json" <<'PY' || fail "fine-tuning did not inherit the regularisation"
import json, sys
source, tuned = (json.load(open(p))["regularization"] for p in sys.argv[1:])
assert tuned["ar"] == 0, tuned
assert all(tuned[k] == v for k, v in source.items() if k != "ar"), (source, tuned)
PY
check "weight dropout 1 refused" 2 "$bin" "${awd[@]}" --overwrite --weight-dropout 1
contains "weight dropout message" "$tmp/err" "--weight-dropout"
check "negative AR refused" 2 "$bin" "${awd[@]}" --overwrite --ar -1
contains "AR message" "$tmp/err" "--ar"

if [ -d "$src/models/textgen-shakespeare" ]; then
  check "shipped model" 0 "$bin" generate --prompt-file "$src/models/samples/textgen/prompt.txt" --max-tokens 30
  [ -s "$tmp/out" ] || fail "shipped model: no output"
fi

check "prompts from a pipe" 0 bash -c "printf 'ROMEO:\nJULIET:\n' | '$bin' generate --max-tokens 5 --threads 1"
[ "$(grep -cx -- '---' "$tmp/out")" = 2 ] || fail "prompts from a pipe: each answer ends with a line ---"
contains "prompt echoed from a pipe" "$tmp/out" "JULIET:"
answers_each_line "generate answers each prompt of a pipe at once" "ROMEO:" "JULIET:" \
  "$bin" generate --threads 1 --format jsonl --max-tokens 5
check "version" 0 "$bin" --version
contains "version" "$tmp/out" "cellstate-textgen 0."
[ "$fails" = 0 ] && echo "all cellstate-textgen CLI checks passed"
exit "$fails"
