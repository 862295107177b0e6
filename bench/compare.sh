#!/usr/bin/env bash
# The performance table of the README: the custom recurrent modules against
# LibTorch's built-in ones (same process, interleaved) and against PyTorch's
# Python API (bench/python_rnn.py, same sizes), at the sizes the project's
# speed targets name. Prints a Markdown table; raw JSON lines go to
# bench/results.jsonl unless RESULTS=FILE says otherwise.
#
#   bench/compare.sh [--threads N] [--repeat N] [--rnn lstm|gru|rnn]
set -euo pipefail
cd "$(dirname "$0")/.."
threads=2 repeat=10 rnn=lstm
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) threads=$2; shift 2 ;;
    --repeat) repeat=$2; shift 2 ;;
    --rnn) rnn=$2; shift 2 ;;
    *) echo "compare.sh: unknown option '$1'" >&2; exit 2 ;;
  esac
done
bench=build/bin/cellstate-bench
[ -x "$bench" ] || { echo "compare.sh: build first (bash scripts/setup.sh)" >&2; exit 1; }
/usr/bin/python3 -c "import torch" 2>/dev/null ||
  { echo "compare.sh: needs python3-torch (bash scripts/setup.sh --python)" >&2; exit 1; }
results=${RESULTS:-bench/results.jsonl}
: > "$results"

configs=(
  "--layers 2 --hidden 650 --input 650 --batch 32 --seq 35"
  "--layers 1 --hidden 256 --input 256 --batch 64 --seq 50 --bidirectional --variable-lengths"
  "--layers 1 --hidden 256 --input 256 --batch 1 --seq 100 --step"
)
for cfg in "${configs[@]}"; do
  args="--rnn $rnn $cfg --threads $threads --repeat $repeat"
  echo "running: $bench $args" >&2
  cpp=$($bench $args --json)
  py=$(/usr/bin/python3 bench/python_rnn.py $args)
  echo "{\"cellstate\": $cpp, \"python\": $py}" >> "$results"
done

/usr/bin/python3 - "$results" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print("| sizes | pass | custom ms | built-in ms | Python ms | oneDNN LSTM ms | custom GFLOP/s | of GEMM "
      "| custom/built-in | custom/Python | custom/oneDNN |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for r in rows:
    c, p = r["cellstate"], r["python"]
    sizes = (f'{c["rnn"]} {c["layers"]}x{c["hidden"]}, in {c["input"]}, batch {c["batch"]}, seq {c["seq"]}'
             + (", bi" if c["bidirectional"] else "") + (", var-len" if c["variable_lengths"] else ""))
    passes = [("step-by-step", "step")] if c["step"] else [("forward", "forward"), ("fwd+bwd", "train")]
    for label, key in passes:
        cm, bm, pm = c[f"custom_{key}"]["ms"], c[f"builtin_{key}"]["ms"], p[f"python_{key}_ms"]
        gf = c[f"custom_{key}"]["gflops"]
        om = c["onednn_forward"]["ms"] if key == "forward" and "onednn_forward" in c else None
        print(f'| {sizes} | {label} | {cm:.1f} | {bm:.1f} | {pm:.1f} | {"%.1f" % om if om else "–"} | {gf:.1f} | '
              f'{100 * gf / c["gemm_gflops"]:.0f}% | {cm / bm:.3f} | {cm / pm:.3f} | '
              f'{"%.3f" % (cm / om) if om else "–"} |')
c0 = rows[0]["cellstate"]
print(f'\nGEMM rate (1024³ float32 matmul, same run): OpenBLAS {c0["openblas_gemm_gflops"]:.0f}, oneDNN '
      f'{c0["onednn_gemm_gflops"]:.0f} GFLOP/s ("of GEMM" is of the better); custom products through '
      f'{c0["gemm_backend"]}; {c0["threads"]} threads; medians of {c0["repeat"]}. oneDNN LSTM: its own '
      f'fp32 inference primitive (every sequence at full length).')
PY
