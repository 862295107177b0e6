#!/usr/bin/env bash
# Builds the libFuzzer targets of fuzz/ (clang-14 with the fuzzer, address
# and undefined-behaviour sanitizers) into build-fuzz/ and runs each one from
# a seed corpus made of tests/data/ (kept in build-fuzz/corpus/TARGET, so
# later runs go on from what earlier ones found).
#
#   scripts/fuzz.sh [--time SECONDS | --runs N] [--jobs N] [TARGET...]
#
# TARGET: readers, text, model_files (default: all). --time: seconds per
# target (default 60); --runs: executions per target instead; --jobs:
# parallel fuzzing processes per target (default 1). Prints each target's
# executions and exits 1 on a crash, a hang (10 s), a leak, more than 2 GB,
# or a broken invariant; the input that did it is saved in
# build-fuzz/findings/ (replay: build-fuzz/fuzz_TARGET FILE).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=60 runs="" jobs=1 targets=()
while [ $# -gt 0 ]; do
  case $1 in
    --time) seconds=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    -*) echo "fuzz.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
[ ${#targets[@]} -gt 0 ] || targets=(readers text model_files)
command -v clang++-14 > /dev/null || bash scripts/setup.sh --no-build
build=build-fuzz
launcher=()
command -v ccache > /dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
CXX=clang++-14 cmake -S fuzz -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo "${launcher[@]}" > /dev/null
cmake --build "$build" -j"$(nproc)" > "$build/build.log" 2>&1 || { tail -20 "$build/build.log"; exit 1; }

# Seed corpora from the test fixtures (and the shipped models' configs).
seed() {  # TARGET
  local dir=$build/corpus/$1
  [ -d "$dir" ] && [ -n "$(ls -A "$dir")" ] && return
  mkdir -p "$dir"
  case $1 in
    readers)
      # The first byte picks the reader (fuzz/fuzz_readers.cpp).
      for f in tests/data/*; do
        [ -f "$f" ] || continue
        for mode in 0 1 2 3 4 5 6 7 8; do
          { printf "\\x0$mode"; head -c 4000 "$f"; } > "$dir/$(basename "$f").$mode"
        done
      done ;;
    text)
      for f in tests/data/*.txt tests/data/*.tsv tests/data/*.conll tests/data/*.en tests/data/*.de; do
        head -c 4000 "$f" > "$dir/$(basename "$f")"
      done ;;
    model_files)
      /usr/bin/python3 - "$dir" models/*/config.json <<'PY'
import hashlib, json, sys
out, configs = sys.argv[1], sys.argv[2:]
for i, path in enumerate(configs):
    config = open(path, "rb").read()
    weights = b"PK\x03\x04weights"
    manifest = {"format_version": 1, "task": "sentiment", "files": [
        {"name": "config.json", "bytes": len(config), "sha256": hashlib.sha256(config).hexdigest()},
        {"name": "weights.pt", "bytes": len(weights), "sha256": hashlib.sha256(weights).hexdigest()}]}
    with open(f"{out}/seed{i}", "wb") as f:
        f.write(config + b"\n--\n" + json.dumps(manifest).encode() + b"\n--\n" + weights)
PY
      ;;
  esac
}

mkdir -p "$build/findings"
status=0
for target in "${targets[@]}"; do
  [ -x "$build/fuzz_$target" ] || { echo "fuzz.sh: no target '$target' (readers, text, model_files)" >&2; exit 2; }
  seed "$target"
  limit=(-max_total_time="$seconds")
  [ -n "$runs" ] && limit=(-runs="$runs")
  [ "$jobs" -gt 1 ] && limit+=(-fork="$jobs")
  log=$build/fuzz_$target.log
  # Inputs that go through files are written to a tmpfs when there is one.
  tmp=/dev/shm; [ -d "$tmp" ] && [ -w "$tmp" ] || tmp=${TMPDIR:-/tmp}
  if TMPDIR=$tmp "$build/fuzz_$target" "${limit[@]}" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
       -artifact_prefix="$build/findings/$target-" "$build/corpus/$target" > "$log" 2>&1; then
    result=ok
  else
    result=FAILED
    status=1
  fi
  executions=$(grep -h 'stat::number_of_executed_units' "$log" | awk '{s += $2} END {print s + 0}')
  # -fork mode reports progress lines "#EXECUTIONS: cov: ...": the last one counts them all.
  [ "$jobs" -gt 1 ] && executions=$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#')
  rate=$(grep -h 'stat::average_exec_per_sec' "$log" | awk '{print $2}' | tail -1)
  echo "fuzz $target: $result, $executions executions (${rate:-?}/s), corpus $(ls "$build/corpus/$target" | wc -l) inputs"
  if [ "$result" = FAILED ]; then
    grep -E 'ERROR|invariant|SUMMARY|Test unit written' "$log" | head -8 | sed 's/^/  /'
  fi
done
exit "$status"
