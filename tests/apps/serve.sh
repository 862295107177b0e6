#!/usr/bin/env bash
# cellstate-serve over loopback on ephemeral ports (tests/apps/serve_check.py
# does the HTTP): every endpoint answers what the CLI answers, concurrent
# clients get their own answers while requests are batched, generation
# streams, bad requests get their 4xx, the API key and the limits hold, and
# SIGTERM lets the request in flight finish, then exits 143.
#   tests/apps/serve.sh BIN_DIR TEST_DATA_DIR
set -uo pipefail
bin=$1 data=$2
source "$(dirname "$0")/cli_lib.sh"
export TMPDIR=$tmp
checker=$(dirname "$0")/serve_check.py

start_server() {  # LOG ARGS... ; sets $url and $pid
  local log=$1
  shift
  "$bin/cellstate-serve" --port 0 --threads 2 "$@" 2> "$log" &
  pid=$!
  url=
  for _ in $(seq 1 600); do
    url=$(grep -o 'listening on http://[0-9.]*:[0-9]*' "$log" | sed 's/listening on //')
    [ -n "$url" ] && return 0
    kill -0 "$pid" 2> /dev/null || break
    sleep 0.1
  done
  fail "the server did not start: $(tail -3 "$log")"
  return 1
}

# The shipped models.
if start_server "$tmp/shipped.log"; then
  grep -q "listening on http://127.0.0.1:" "$tmp/shipped.log" || fail "does not listen on 127.0.0.1 by default"
  /usr/bin/python3 "$checker" shipped "$url" "$bin" "$data" || fails=$((fails + 1))
  /usr/bin/python3 "$checker" drain "$url" "$pid" || fails=$((fails + 1))
  wait "$pid"
  status=$?
  [ "$status" = 143 ] || fail "exit $status after SIGTERM, expected 143"
  contains "stopped cleanly" "$tmp/shipped.log" "cellstate-serve: stopped"
fi

# A tiny fixture model, with an API key and tight limits: a request waits
# 3 s to be batched but may wait 0.2 s, so it gets 503.
check "tiny model" 0 "$bin/cellstate-sentiment" train --train "$data/sentiment_tiny.tsv" --dev "$data/sentiment_tiny.tsv" \
  --model "$tmp/tiny" --embed 8 --hidden 8 --vocab-size 60 --epochs 1 --threads 1 --quiet
printf 'k3y-0123456789abcdef\n' > "$tmp/key"
if start_server "$tmp/limits.log" --sentiment "$tmp/tiny" --api-key "$tmp/key" --max-request-bytes 4096 \
    --max-wait-ms 3000 --request-timeout-ms 200; then
  /usr/bin/python3 "$checker" limits "$url" "$tmp/key" || fails=$((fails + 1))
  kill -INT "$pid"
  wait "$pid"
  status=$?
  [ "$status" = 130 ] || fail "exit $status after SIGINT, expected 130"
fi

# Bad usage is refused before anything is loaded.
printf 'short\n' > "$tmp/short_key"
check "short API key" 2 "$bin/cellstate-serve" --sentiment "$tmp/tiny" --api-key "$tmp/short_key" --port 0
contains "short key named" "$tmp/err" "short_key:1: an API key of at least 16 characters expected"
check "port out of range" 2 "$bin/cellstate-serve" --port 70000
contains "port range" "$tmp/err" "--port must be in [0, 65535]"
check "missing model" 2 "$bin/cellstate-serve" --sentiment "$tmp/no-such-model" --port 0
contains "missing model named" "$tmp/err" "no-such-model"

[ "$fails" = 0 ] && echo "all serve checks passed"
exit "$fails"
