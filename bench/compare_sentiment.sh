#!/usr/bin/env bash
# Sentiment predict speed: cellstate (custom and built-in LSTM) against the
# same architecture in PyTorch's Python API, on the same token ids, in one run.
#
#   bench/compare_sentiment.sh [DATA_FILE] [MODEL_DIR]   (THREADS=2 by default)
#
# Needs python3-torch (scripts/setup.sh --python).
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-${DATA_DIR:-data}/sst2/stsa.binary.dev}
model=${2:-models/sentiment-sst2}
threads=${THREADS:-2}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
bin=build/bin/cellstate-sentiment
$bin bench --model "$model" --data "$data" --threads "$threads" --json --dump-ids "$tmp/ids.json" > "$tmp/custom.json"
$bin bench --model "$model" --data "$data" --threads "$threads" --json --impl builtin > "$tmp/builtin.json"
/usr/bin/python3 bench/sentiment_python.py "$tmp/ids.json" --threads "$threads" > "$tmp/python.json"
/usr/bin/python3 - "$tmp" <<'PY'
import json, sys, os
d = sys.argv[1]
rows = [json.load(open(os.path.join(d, f + ".json"))) for f in ("custom", "builtin", "python")]
py = rows[2]
print(f"{'implementation':<28}{'sentences/s':>12}{'latency ms':>12}{'vs python':>11}")
names = ["cellstate custom (C++)", "cellstate builtin (C++)", "PyTorch Python (model only)"]
for name, r in zip(names, rows):
    print(f"{name:<28}{r['sentences_per_s']:>12.1f}{r['latency_ms_median']:>12.2f}{r['sentences_per_s']/py['sentences_per_s']:>10.2f}x")
print(f"({py['sentences']} sentences, batch {py['batch_size']}, {py['threads']} threads, {py['members']} ensemble member(s); C++ includes SentencePiece tokenisation)")
PY
