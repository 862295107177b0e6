#!/usr/bin/env bash
# Load test of cellstate-serve on loopback with wrk, bounded in time: for
# sentiment (SST-2 dev sentences) and translate (Multi30k val English), one
# sentence per request at 1, 8 and 64 connections -- requests/s and p50/p99
# latency -- against the CLI's throughput on the same sentences, and the
# server's memory with all four shipped models loaded. Prints a Markdown
# table and writes JSON lines to OUT (default bench_serve.jsonl).
#
#   scripts/bench_serve.sh [--seconds S] [--connections "1 8 64"] [--out FILE]
#                          [--server-args "--max-wait-ms 0 ..."] [--no-cli]
#   DATA_DIR (default data/) holds sst2/ and multi30k/.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${BIN_DIR:-$root/build/bin}
data=${DATA_DIR:-$root/data}
seconds=10 conns="1 8 64" out=bench_serve.jsonl server_args="" cli=1
while [ $# -gt 0 ]; do
  case $1 in
    --seconds) seconds=$2; shift 2 ;;
    --connections) conns=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --server-args) server_args=$2; shift 2 ;;
    --no-cli) cli=0; shift ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "bench_serve.sh: unknown option '$1'" >&2; exit 2 ;;
  esac
done
command -v wrk > /dev/null || { echo "bench_serve.sh: wrk is missing (apt-get install wrk)" >&2; exit 2; }
for f in "$data/sst2/stsa.binary.dev" "$data/multi30k/val.en.gz"; do
  [ -e "$f" ] || { echo "bench_serve.sh: $f: missing (set DATA_DIR)" >&2; exit 2; }
done
tmp=$(mktemp -d)
server=
cleanup() {
  [ -n "$server" ] && kill "$server" 2> /dev/null && wait "$server" 2> /dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT

# The sentences, and a wrk script that sends them round-robin, one per request.
cut -d' ' -f2- "$data/sst2/stsa.binary.dev" > "$tmp/sentiment.txt"
zcat "$data/multi30k/val.en.gz" > "$tmp/translate.txt"
make_lua() {  # TEXTS_FILE -> lua script on stdout
  /usr/bin/python3 - "$1" <<'PY'
import json, sys
texts = [l.rstrip("\n") for l in open(sys.argv[1], encoding="utf-8") if l.strip()]
bodies = [json.dumps({"texts": [t]}) for t in texts]
print("local bodies = {" + ",".join(json.dumps(b) for b in bodies) + "}")
print("""local n = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  n = n + 1
  return wrk.format(nil, nil, nil, bodies[(n % #bodies) + 1])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('RESULT {"requests": %d, "seconds": %.3f, "errors": %d, "non_2xx": %d, ' ..
    '"requests_per_s": %.1f, "p50_ms": %.2f, "p99_ms": %.2f}\\n', summary.requests, summary.duration / 1e6,
    e.connect + e.read + e.write + e.timeout, e.status, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end""")
PY
}
make_lua "$tmp/sentiment.txt" > "$tmp/sentiment.lua"
make_lua "$tmp/translate.txt" > "$tmp/translate.lua"

# shellcheck disable=SC2086
"$bin/cellstate-serve" --port 0 --quiet $server_args 2> "$tmp/server.log" &
server=$!
url=
for _ in $(seq 1 600); do
  url=$(grep -o 'http://127.0.0.1:[0-9]*' "$tmp/server.log" || true)
  [ -n "$url" ] && break
  sleep 0.1
done
[ -n "$url" ] || { echo "bench_serve.sh: the server did not start" >&2; cat "$tmp/server.log" >&2; exit 1; }
rss_kb=$(awk '/^VmRSS/ {print $2}' "/proc/$server/status")

: > "$out"
printf '| endpoint | connections | requests/s | p50 ms | p99 ms | errors |\n|---|---|---|---|---|---|\n'
for task in sentiment translate; do
  wrk -t1 -c1 -d2s -s "$tmp/$task.lua" "$url/v1/$task" > /dev/null  # warm-up
  for c in $conns; do
    line=$(wrk -t "$(( c < 2 ? 1 : 2 ))" -c "$c" -d "${seconds}s" --timeout 30s -s "$tmp/$task.lua" \
      "$url/v1/$task" | sed -n 's/^RESULT //p')
    echo "$line" | /usr/bin/python3 -c "
import json, sys
r = json.load(sys.stdin); r.update(endpoint='$task', connections=$c)
print('| /v1/$task | $c | %.1f | %.1f | %.1f | %d |' % (r['requests_per_s'], r['p50_ms'], r['p99_ms'],
      r['errors'] + r['non_2xx']))
open('$out', 'a').write(json.dumps(r) + '\n')"
  done
done
hwm_kb=$(awk '/^VmHWM/ {print $2}' "/proc/$server/status")
kill "$server"
wait "$server" 2> /dev/null || true
server=

echo "Server memory with all four models loaded: $((rss_kb / 1024)) MB resident at start, $((hwm_kb / 1024)) MB peak"
[ "$cli" = 1 ] || exit 0

# The CLI on the same sentences (one process, model load included).
cli_rate() {  # LINES COMMAND...
  local n=$1
  shift
  local start end
  start=$(date +%s.%N)
  "$@" > /dev/null
  end=$(date +%s.%N)
  /usr/bin/python3 -c "print('%.1f' % ($n / ($end - $start)))"
}
n_s=$(wc -l < "$tmp/sentiment.txt")
n_t=$(wc -l < "$tmp/translate.txt")
s_rate=$(cli_rate "$n_s" "$bin/cellstate-sentiment" predict --quiet "$tmp/sentiment.txt")
t_rate=$(cli_rate "$n_t" "$bin/cellstate-translate" translate --quiet "$tmp/translate.txt")
printf '\nCLI on the same sentences (one process, model load included): sentiment %s sentences/s (%s), translate %s sentences/s (%s)\n' \
  "$s_rate" "$n_s" "$t_rate" "$n_t"
/usr/bin/python3 -c "
import json
open('$out', 'a').write(json.dumps({'cli_sentiment_per_s': $s_rate, 'cli_translate_per_s': $t_rate,
  'rss_mb_start': round($rss_kb / 1024), 'rss_mb_peak': round($hwm_kb / 1024)}) + '\n')"
