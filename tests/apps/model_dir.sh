#!/usr/bin/env bash
# A model directory is a transaction (issue: nothing a user trained is lost
# or silently wrong): each finding is reproduced here.
#   tests/apps/model_dir.sh SENTIMENT_BIN TEXTGEN_BIN NER_BIN FAIL_WRITES_LIB TEST_DATA_DIR
set -uo pipefail
bin=$1 textgen=$2 ner=$3 fail_writes=$4 data=$5
source "$(dirname "$0")/cli_lib.sh"

base=(--train "$data/sentiment_tiny.tsv" --dev "$data/sentiment_tiny.tsv" --embed 16 --patience 0 --lr 0.01
      --batch-size 4 --threads 1 --quiet)
tiny=("${base[@]}" --hidden 16 --vocab-size 60)
digest() { (cd "$1" && find . -type f | sort | xargs sha256sum); }
no_strays() {  # DESCRIPTION PARENT_DIR: no temporaries, no staging directories
  local left
  left=$(find "$2" \( -name '*.tmp.*' -o -name '*.partial' -o -name '*.replaced.*' \) | head -3)
  [ -z "$left" ] || fail "$1: stray files left: $left"
}
same_model() {  # DESCRIPTION DIR DIGEST_FILE
  digest "$2" > "$tmp/now.sha"
  cmp -s "$3" "$tmp/now.sha" || { fail "$1: the model in $2 changed"; diff "$3" "$tmp/now.sha" | head -5; }
}

# --- a fresh model: complete, with its manifest, nothing else left
m="$tmp/models/m"
check "train" 0 "$bin" train "${tiny[@]}" --model "$m" --epochs 20 --ensemble 2
[ -f "$m/MANIFEST.json" ] || fail "no MANIFEST.json"
[ -f "$m/weights.1.pt" ] || fail "no second ensemble member"
no_strays "train" "$tmp/models"
digest "$m" > "$tmp/m.sha"

# --- 2. training into a trained model is refused without --overwrite
check "retrain refused" 2 "$bin" train "${tiny[@]}" --model "$m" --epochs 20
contains "retrain message" "$tmp/err" "already holds a trained sentiment model; replace it with --overwrite"
same_model "retrain refused" "$m" "$tmp/m.sha"
check "resume with overwrite" 2 "$bin" train "${tiny[@]}" --model "$m" --resume --overwrite
mkdir -p "$tmp/other" && echo notes > "$tmp/other/notes.txt"
check "not a model directory" 2 "$bin" train "${tiny[@]}" --model "$tmp/other" --overwrite
contains "not a model message" "$tmp/err" "holds files but no cellstate model"
[ -f "$tmp/other/notes.txt" ] || fail "a user's directory was touched"

# --- --overwrite replaces the whole model (no stale ensemble members)
check "overwrite" 0 "$bin" train "${tiny[@]}" --model "$m" --epochs 20 --seed 7 --overwrite
[ -f "$m/weights.1.pt" ] && fail "overwrite left the old ensemble's weights.1.pt"
check "overwritten model loads" 0 "$bin" predict --model "$m" "$data/predict_lines.txt"
no_strays "overwrite" "$tmp/models"
digest "$m" > "$tmp/m.sha"

# --- 5. --resume of a finished run says so and changes nothing; more epochs train on
check "resume finished" 0 "$bin" train "${tiny[@]}" --model "$m" --epochs 20 --seed 7 --resume
contains "resume finished message" "$tmp/err" "its training already ended (epochs, after 100 steps); nothing to resume"
same_model "resume finished" "$m" "$tmp/m.sha"
check "resume with more epochs" 0 "$bin" train "${tiny[@]}" --model "$m" --epochs 24 --seed 7 --resume
grep -q '"steps": 120' "$m/config.json" || fail "resume --epochs 24: expected 120 steps in config.json"
no_strays "resume finished" "$tmp/models"
digest "$m" > "$tmp/m.sha"

# --- 3. two trainers on one directory: the second fails at once naming the first
long=(train "${tiny[@]}" --model "$m" --epochs 100000 --overwrite)
"$bin" "${long[@]}" > /dev/null 2>&1 &
first=$!
for _ in $(seq 600); do [ -f "$m.partial/weights.pt" ] && break; sleep 0.1; done
check "second trainer" 1 "$bin" "${long[@]}"
contains "second trainer names the first" "$tmp/err" "another process (PID $first) is training this model now"
# --- 5. SIGTERM exits 143 with a checkpoint; the old model is untouched
kill -TERM "$first"
wait "$first"
status=$?
[ "$status" = 143 ] || fail "SIGTERM: exit $status, expected 143"
[ -f "$m.partial/checkpoint.pt" ] || fail "SIGTERM: no checkpoint in $m.partial"
same_model "interrupted overwrite" "$m" "$tmp/m.sha"
check "interrupted run not discarded silently" 2 "$bin" train "${tiny[@]}" --model "$m" --epochs 20
contains "interrupted run message" "$tmp/err" "holds an interrupted training run; continue it with --resume"
check "resume interrupted" 0 "$bin" train "${tiny[@]}" --model "$m" --epochs 1 --resume
[ -d "$m.partial" ] && fail "resume left $m.partial"
digest "$m" > "$tmp/m.sha"

# --- 2. kill -9 at any moment leaves the previous model whole; the next run cleans up
for delay in 0.3 0.6 0.9 1.2; do
  "$bin" train "${tiny[@]}" --model "$m" --epochs 100000 --overwrite > /dev/null 2>&1 &
  victim=$!
  sleep "$delay"
  kill -KILL "$victim" 2> /dev/null
  wait "$victim" 2> /dev/null
  same_model "kill -9 after ${delay}s" "$m" "$tmp/m.sha"
  check "loads after kill -9 at ${delay}s" 0 "$bin" predict --model "$m" "$data/predict_lines.txt"
  rm -rf "$m.partial"  # (or --resume / --overwrite: checked above)
done

# --- a signal during start-up: 143 (or the default action), nothing left behind
"$bin" train "${tiny[@]}" --model "$tmp/models/early" --epochs 100000 > /dev/null 2>&1 &
early=$!
sleep 0.2
kill -TERM "$early"
wait "$early"
status=$?
[ "$status" = 143 ] || fail "SIGTERM at start-up: exit $status, expected 143"
[ -e "$tmp/models/early" ] && fail "SIGTERM at start-up left a model directory"

# --- 1. a full disk while retraining: exit 1 with one line, the old model intact
full_disk() {  # DESCRIPTION COMMAND... (run with the disk filling up)
  local what=$1
  shift
  "$@" > "$tmp/out" 2> "$tmp/err"
  local got=$?
  [ "$got" = 1 ] || { fail "$what: exit $got, expected 1"; head -3 "$tmp/err"; }
  contains "$what: message" "$tmp/err" "No space left on device"
  [ "$(wc -l < "$tmp/err")" -le 2 ] || { fail "$what: more than a one-line error"; head -5 "$tmp/err"; }
  grep -q "Exception raised\|c10::Error\|terminate called" "$tmp/err" && fail "$what: an abort"
}
cp -r "$m" "$tmp/models/full" && digest "$tmp/models/full" > "$tmp/full.sha"
for budget in 0 20000 200000; do
  full_disk "injected ENOSPC after $budget bytes" env LD_PRELOAD="$fail_writes" FAIL_WRITES_UNDER="$tmp/models" \
    FAIL_WRITES_AFTER=$budget "$bin" train "${base[@]}" --vocab-size 60 --model "$tmp/models/full" --epochs 20 --overwrite --hidden 64
  same_model "injected ENOSPC after $budget bytes" "$tmp/models/full" "$tmp/full.sha"
  no_strays "injected ENOSPC after $budget bytes" "$tmp/models"
done
# A checkpoint written before the disk filled stays resumable.
"$bin" train "${tiny[@]}" --model "$tmp/models/full" --epochs 100000 --overwrite > /dev/null 2>&1 &
victim=$!
for _ in $(seq 600); do [ -f "$tmp/models/full.partial/checkpoint.pt" ] && break; sleep 0.1; done
kill -INT "$victim"; wait "$victim"
digest "$tmp/models/full.partial" > "$tmp/partial.sha"
full_disk "--resume on a full disk" env LD_PRELOAD="$fail_writes" FAIL_WRITES_UNDER="$tmp/models" \
  FAIL_WRITES_AFTER=0 "$bin" train "${tiny[@]}" --model "$tmp/models/full" --epochs 100000 --resume
same_model "--resume on a full disk" "$tmp/models/full.partial" "$tmp/partial.sha"
same_model "--resume on a full disk (model)" "$tmp/models/full" "$tmp/full.sha"
rm -rf "$tmp/models/full.partial"

# The same on a real full file system, where this test may mount a tmpfs.
if unshare -rm true 2> /dev/null; then
  cat > "$tmp/tmpfs.sh" <<SCRIPT
set -u
mount -t tmpfs -o size=600k tmpfs "$tmp/small" || exit 77
cp -r "$m" "$tmp/small/m"
"$bin" train ${base[*]} --vocab-size 60 --model "$tmp/small/m" --epochs 20 --overwrite --hidden 200 \
  > "$tmp/small.out" 2> "$tmp/small.err"
echo \$? > "$tmp/small.status"
(cd "$tmp/small/m" && find . -type f | sort | xargs sha256sum) > "$tmp/small.sha"
find "$tmp/small" \( -name '*.tmp.*' -o -name '*.partial' \) > "$tmp/small.strays"
SCRIPT
  mkdir -p "$tmp/small"
  unshare -rm bash "$tmp/tmpfs.sh"
  [ -f "$tmp/small.status" ] && echo "full disk on a 600 KB tmpfs: exit $(cat "$tmp/small.status"): $(head -1 "$tmp/small.err")"
  if [ "$(cat "$tmp/small.status" 2> /dev/null)" != "" ]; then
    [ "$(cat "$tmp/small.status")" = 1 ] || fail "tmpfs full: exit $(cat "$tmp/small.status"), expected 1"
    contains "tmpfs full: message" "$tmp/small.err" "cannot write"
    contains "tmpfs full: reason" "$tmp/small.err" "No space left on device"
    cmp -s "$tmp/small.sha" <(digest "$m") || fail "tmpfs full: the old model changed"
    [ -s "$tmp/small.strays" ] && fail "tmpfs full: stray files: $(head -2 "$tmp/small.strays")"
  else
    echo "note: could not mount a tmpfs here; the injected ENOSPC checks above stand for it"
  fi
fi

# --- 4. damaged or mismatched files are refused (exit 2), --no-verify loads them
d="$tmp/damaged"
cp -r "$m" "$d"
check "intact copy loads" 0 "$bin" predict --model "$d" "$data/predict_lines.txt"
size=$(stat -c %s "$d/weights.pt")
for offset in $((size / 2)) 100 $((size - 30)); do
  cp "$m/weights.pt" "$d/weights.pt"
  printf '\x5a' | dd of="$d/weights.pt" bs=1 seek="$offset" conv=notrunc 2> /dev/null
  cmp -s "$m/weights.pt" "$d/weights.pt" && printf '\xa5' | dd of="$d/weights.pt" bs=1 seek="$offset" conv=notrunc 2> /dev/null
  check "byte flip at $offset" 2 "$bin" predict --model "$d" "$data/predict_lines.txt"
  contains "byte flip at $offset: message" "$tmp/err" "weights.pt: damaged or changed since the model was written"
  [ "$offset" = $((size / 2)) ] && check "--no-verify loads it anyway" 0 "$bin" predict --model "$d" --no-verify "$data/predict_lines.txt"
done
cp "$m/weights.pt" "$d/weights.pt"
head -c 1000 "$m/weights.pt" > "$d/weights.pt"
check "truncated weights" 2 "$bin" predict --model "$d" "$data/predict_lines.txt"
contains "truncated message" "$tmp/err" "weights.pt: 1000 bytes, MANIFEST.json records"
cp "$m/weights.pt" "$d/weights.pt"
check "another model's tokenizer" 0 "$bin" train "${base[@]}" --hidden 16 --model "$tmp/models/m2" --epochs 2 --vocab-size 50
cp "$tmp/models/m2/tokenizer.model" "$d/tokenizer.model"
check "swapped tokenizer" 2 "$bin" predict --model "$d" "$data/predict_lines.txt"
contains "swapped tokenizer message" "$tmp/err" "tokenizer.model: "
cp "$m/tokenizer.model" "$d/tokenizer.model"
rm "$d/MANIFEST.json"
check "missing manifest" 2 "$bin" predict --model "$d" "$data/predict_lines.txt"
contains "missing manifest message" "$tmp/err" "MANIFEST.json: missing"
check "seal" 0 "$bin" seal --model "$d"
check "sealed model loads" 0 "$bin" predict --model "$d" "$data/predict_lines.txt"

# A NER model whose tag list was reordered by hand: refused, not F1 0.
n="$tmp/ner"
check "ner train" 0 "$ner" train --train "$data/ner_tiny.conll" --dev "$data/ner_tiny.conll" --model "$n" --epochs 2 \
  --embed 8 --hidden 8 --char-embed 0 --threads 1 --quiet
/usr/bin/python3 - "$n/config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c["tags"] = c["tags"][1:] + c["tags"][:1]
json.dump(c, open(sys.argv[1], "w"), indent=2)
PY
check "ner reordered tags" 2 "$ner" eval --model "$n" --data "$data/ner_tiny.conll"
contains "ner reordered tags message" "$tmp/err" "ner/config.json: "

# --- 5. textgen: interrupted (mid-epoch) then resumed = uninterrupted, bit for bit
tg=(train --train "$data/textgen_tiny.txt" --valid "$data/textgen_tiny.txt" --spm-type char --vocab-size 60
    --hidden 16 --embed 16 --bptt 4 --batch-size 2 --epochs 12 --patience 0 --dropout 0.2 --threads 1 --quiet)
check "textgen uninterrupted" 0 "$textgen" "${tg[@]}" --model "$tmp/tg_a"
for signal in INT TERM; do
  b="$tmp/tg_$signal"
  "$textgen" "${tg[@]}" --model "$b" > /dev/null 2>&1 &
  pid=$!
  # Interrupt within a later epoch: after the third evaluation.
  for _ in $(seq 600); do [ "$(cat "$b.partial/train_log.jsonl" 2> /dev/null | wc -l)" -ge 3 ] && break; sleep 0.05; done
  kill -"$signal" "$pid"
  wait "$pid"
  status=$?
  if [ "$status" = 0 ]; then
    echo "note: textgen finished before SIG$signal arrived; resume check skipped"
    continue
  fi
  check "textgen resume after SIG$signal" 0 "$textgen" "${tg[@]}" --model "$b" --resume
  cmp -s "$tmp/tg_a/weights.pt" "$b/weights.pt" || fail "textgen: SIG$signal + --resume gave other weights than one run"
done

[ "$fails" = 0 ] && echo "all model directory checks passed"
exit "$fails"
