#!/usr/bin/env bash
# Data-parallel training (train --nproc N, dist/): on 127.0.0.1 with 2 ranks.
#   tests/apps/distributed.sh BIN_DIR COMPARE_WEIGHTS TEST_DATA_DIR
# - equivalence: a tiny model of each app trained on 2 ranks ends with the
#   weights (best and last, within 1e-5) of 1 process with the same batch,
#   with the custom and the built-in recurrent implementation, and with the
#   gradients exchanged by c10d's Reducer (--dist-bucket-mb);
# - SIGINT on the launcher: every rank stops with one checkpoint; --resume on
#   2 ranks, and on 1, reaches the uninterrupted run's weights;
# - a rank killed with kill -9: the run ends within the timeout, naming it;
# - a rendezvous nobody hosts, and bad environment variables: one-line errors.
set -uo pipefail
bin=$1 compare=$2 data=$3
source "$(dirname "$0")/cli_lib.sh"
export OMP_NUM_THREADS=1

same_weights() {  # DESCRIPTION DIR_A DIR_B
  for f in weights.pt checkpoint.pt; do
    if ! "$compare" "$2/$f" "$3/$f" 1e-5 > "$tmp/cmp" 2>&1; then
      fail "$1: $f differs: $(cat "$tmp/cmp")"
    fi
  done
}

common=(--patience 0 --quiet --seed 5)
train_cmd() {  # APP MODEL_DIR IMPL [EXTRA...]: the tiny recipe of APP ($EPOCHS epochs, default 3)
  local app=$1 dir=$2 impl=$3
  shift 3
  set -- --epochs "${EPOCHS:-3}" "$@"
  case "$app" in
    sentiment) echo "$bin/cellstate-sentiment" train --train "$data/sentiment_tiny.tsv" --dev "$data/sentiment_tiny.tsv" \
      --model "$dir" --embed 8 --hidden 8 --vocab-size 60 --dropout 0 --embed-dropout 0 --lm-weight 0.5 \
      --batch-size 8 --impl "$impl" "${common[@]}" "$@" ;;
    ner) echo "$bin/cellstate-ner" train --train "$data/ner_tiny.conll" --dev "$data/ner_tiny.conll" --model "$dir" \
      --embed 8 --hidden 8 --char-embed 4 --char-hidden 4 --piece-vocab 60 --piece-embed 4 --dropout 0 \
      --batch-size 4 --impl "$impl" "${common[@]}" "$@" ;;
    textgen) echo "$bin/cellstate-textgen" train --train "$data/textgen_tiny.txt" --valid "$data/textgen_tiny.txt" \
      --model "$dir" --spm-type char --vocab-size 60 --hidden 8 --embed 8 --bptt 8 --batch-size "${BATCH:-5}" --dropout 0 \
      --impl "$impl" "${common[@]}" "$@" ;;
    translate) echo "$bin/cellstate-translate" train --src-train "$data/translate_tiny.en" \
      --tgt-train "$data/translate_tiny.de" --src-dev "$data/translate_tiny.en" --tgt-dev "$data/translate_tiny.de" \
      --model "$dir" --embed 8 --hidden 8 --vocab-size 40 --dropout 0 --batch-size 4 --impl "$impl" \
      "${common[@]}" "$@" ;;
  esac
}

# ---- equivalence: 2 ranks x batch B/2 == 1 process x batch B
for app in sentiment ner textgen translate; do
  for impl in custom builtin; do
    # shellcheck disable=SC2046
    check "$app $impl: 1 process" 0 $(train_cmd "$app" "$tmp/$app-$impl-1" "$impl")
    # shellcheck disable=SC2046
    check "$app $impl: --nproc 2" 0 $(train_cmd "$app" "$tmp/$app-$impl-2" "$impl" --nproc 2)
    [ -s "$tmp/err" ] && { fail "$app $impl --nproc 2 --quiet printed on stderr:"; head -5 "$tmp/err"; }
    same_weights "$app $impl: 2 ranks vs 1 process" "$tmp/$app-$impl-1" "$tmp/$app-$impl-2"
    grep -q '"ranks":2' "$tmp/$app-$impl-2/train_log.jsonl" || fail "$app $impl: train_log.jsonl does not record 2 ranks"
    [ "$(grep -c . "$tmp/$app-$impl-2/train_log.jsonl")" = "$(grep -c . "$tmp/$app-$impl-1/train_log.jsonl")" ] ||
      fail "$app $impl: train_log.jsonl has another number of records"
  done
  # c10d's Reducer, with buckets small enough that the tiny model needs several.
  # shellcheck disable=SC2046
  check "$app: --nproc 2 --dist-bucket-mb 0.002" 0 $(train_cmd "$app" "$tmp/$app-reducer" custom --nproc 2 --dist-bucket-mb 0.002)
  [ -s "$tmp/err" ] && { fail "$app --dist-bucket-mb --quiet printed on stderr:"; head -5 "$tmp/err"; }
  same_weights "$app: 2 ranks exchanging through the Reducer vs 1 process" "$tmp/$app-custom-1" "$tmp/$app-reducer"
done
leftovers=$(find "${TMPDIR:-/tmp}" -maxdepth 1 -name 'cellstate-rank*' -newer "$tmp" 2> /dev/null | wc -l)
[ "$leftovers" = 0 ] || fail "$leftovers scratch directories of ranks > 0 left behind"

# ---- SIGINT on the launcher, then --resume (2 ranks, and 1): the uninterrupted run's weights
long=(--eval-every 4 --checkpoint-every 0 --dist-timeout 60)
export EPOCHS=40
# shellcheck disable=SC2046
check "textgen: the uninterrupted 2-rank run" 0 $(train_cmd textgen "$tmp/full" custom --nproc 2 "${long[@]}")
for resume_nproc in 2 1; do
  model="$tmp/cut$resume_nproc"
  # shellcheck disable=SC2046
  $(train_cmd textgen "$model" custom --nproc 2 "${long[@]}") > "$tmp/cut.out" 2> "$tmp/cut.err" &
  pid=$!
  for _ in $(seq 300); do
    [ "$(cat "$model.partial/train_log.jsonl" 2> /dev/null | grep -c .)" -ge 3 ] && break
    sleep 0.05
  done
  kill -INT "$pid"
  wait "$pid"
  status=$?
  if [ "$status" = 0 ]; then
    echo "note: the run ended before SIGINT reached it (a fast machine); the resume check is weaker"
  else
    [ "$status" = 130 ] || { fail "SIGINT on the launcher: exit $status, expected 130"; head -5 "$tmp/cut.err"; }
    [ -f "$model.partial/checkpoint.pt" ] || fail "SIGINT on the launcher: no checkpoint in $model.partial"
    # shellcheck disable=SC2046
    check "textgen: --resume on $resume_nproc rank(s)" 0 $(train_cmd textgen "$model" custom --nproc "$resume_nproc" "${long[@]}" --resume)
    same_weights "SIGINT at step $(grep -c . "$model/train_log.jsonl" 2> /dev/null), --resume on $resume_nproc rank(s)" "$tmp/full" "$model"
  fi
done
pgrep -f "$tmp/" > /dev/null && fail "ranks still running after the interrupted runs"

# ---- kill -9 of a rank: the others end within the timeout, the rank is named
# shellcheck disable=SC2046
$(EPOCHS=100000 train_cmd textgen "$tmp/killed" custom --nproc 2 --dist-timeout 20) > "$tmp/kill.out" 2> "$tmp/kill.err" &
launcher=$!
victim=""
for _ in $(seq 200); do
  for child in $(pgrep -P "$launcher"); do
    tr '\0' '\n' < "/proc/$child/environ" 2> /dev/null | grep -qx 'RANK=1' && victim=$child
  done
  [ -n "$victim" ] && [ -f "$tmp/killed.partial/config.json" ] && break
  sleep 0.05
done
sleep 1
start=$(date +%s)
if [ -z "$victim" ]; then
  fail "kill -9: rank 1 never started"
  kill "$launcher"
else
  kill -9 "$victim"
fi
wait "$launcher"
status=$?
took=$(($(date +%s) - start))
[ "$status" != 0 ] || fail "kill -9 of rank 1: the run exited 0"
[ "$took" -le 60 ] || fail "kill -9 of rank 1: the run took $took s to end"
grep -q "rank 1 (pid $victim) was killed by signal 9" "$tmp/kill.err" || { fail "kill -9: rank 1 not named"; head -5 "$tmp/kill.err"; }
grep -q "Aborted\|terminate called\|core dumped" "$tmp/kill.err" && { fail "kill -9: a rank crashed"; head -5 "$tmp/kill.err"; }
pgrep -f "$tmp/killed" > /dev/null && fail "kill -9: ranks left running"

# ---- the rendezvous and the environment
port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# shellcheck disable=SC2046
RANK=1 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port check "no rank 0 at MASTER_ADDR:MASTER_PORT" 1 \
  $(train_cmd textgen "$tmp/alone" custom --dist-timeout 3)
contains "no rank 0: the error" "$tmp/err" "rank 1 of 2: cannot meet the other ranks at 127.0.0.1:$port"
[ "$(grep -c . "$tmp/err")" = 1 ] || fail "no rank 0: more than one line on stderr"
# shellcheck disable=SC2046
RANK=0 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 check "MASTER_PORT missing" 2 $(train_cmd textgen "$tmp/alone" custom)
contains "MASTER_PORT missing: the error" "$tmp/err" "MASTER_PORT is not set"
# shellcheck disable=SC2046
RANK=0 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=1 check "--nproc with WORLD_SIZE" 2 \
  $(train_cmd textgen "$tmp/alone" custom --nproc 2)
contains "--nproc with WORLD_SIZE: the error" "$tmp/err" "--nproc starts its own ranks"
# shellcheck disable=SC2046
check "--batch-size below the ranks" 2 $(BATCH=1 train_cmd textgen "$tmp/alone" custom --nproc 2)
contains "--batch-size below the ranks: the error" "$tmp/err" "--batch-size 1 is smaller than the 2 ranks"
# shellcheck disable=SC2046
check "--nproc 0" 2 $(train_cmd textgen "$tmp/alone" custom --nproc 0)
contains "--nproc 0: the error" "$tmp/err" "--nproc must be in [1, 256], got 0"

[ "$fails" = 0 ] && echo "all data-parallel checks passed"
exit "$fails"
