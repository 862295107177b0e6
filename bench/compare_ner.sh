#!/usr/bin/env bash
# NER speed: cellstate (custom and built-in LSTM) against the same BiLSTM-CRF
# in PyTorch's Python API (bench/ner_python.py), on the same inputs, in one
# run: tagging tokens/s (batch 32, with the CRF span confidences predict
# prints) and one-sentence latency on the dev file; training tokens/s of the
# shipped recipe (scripts/train_ner.sh, one epoch of the training file)
# against the Python peer's steps of the same update.
#
#   DATA_DIR=data bench/compare_ner.sh [MODEL_DIR]   (THREADS=2 by default)
#
# Needs python3-torch (scripts/setup.sh --python).
set -euo pipefail
cd "$(dirname "$0")/.."
data=${DATA_DIR:-data}
model=${1:-models/ner-conll2003}
threads=${THREADS:-2}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
bin=build/bin/cellstate-ner
dev="$data/conll2003/valid.txt" train="$data/conll2003/train.txt"
for f in "$dev" "$train"; do [ -f "$f" ] || { echo "compare_ner.sh: $f not found (set DATA_DIR)" >&2; exit 2; }; done
$bin bench --model "$model" --data "$train" --threads "$threads" --repeat 1 --json --dump-ids "$tmp/train_ids.json" > /dev/null
$bin bench --model "$model" --data "$dev" --threads "$threads" --json --dump-ids "$tmp/ids.json" > "$tmp/custom.json"
$bin bench --model "$model" --data "$dev" --threads "$threads" --json --impl builtin > "$tmp/builtin.json"
/usr/bin/python3 bench/ner_python.py "$tmp/ids.json" --train-ids "$tmp/train_ids.json" --threads "$threads" > "$tmp/python.json"
for impl in custom builtin; do
  DATA_DIR="$data" scripts/train_ner.sh "$tmp/train_$impl" --epochs 1 --threads "$threads" --impl $impl --quiet > /dev/null 2>&1
  cp "$tmp/train_$impl/train_log.jsonl" "$tmp/train_$impl.jsonl"
done
/usr/bin/python3 - "$tmp" <<'PY'
import json, sys, os
d = sys.argv[1]
rows = [json.load(open(os.path.join(d, f + ".json"))) for f in ("custom", "builtin", "python")]
train = [json.loads(open(os.path.join(d, f"train_{i}.jsonl")).readline())["tok_per_s"] for i in ("custom", "builtin")]
py = rows[2]
train.append(py["train_tokens_per_s"])
print(f"{'implementation':<28}{'tag tok/s':>11}{'latency ms':>12}{'vs python':>11}{'train tok/s':>13}{'vs python':>11}")
names = ["cellstate custom (C++)", "cellstate builtin (C++)", "PyTorch Python (model only)"]
for name, r, t in zip(names, rows, train):
    print(f"{name:<28}{r['tokens_per_s']:>11.0f}{r['latency_ms_median']:>12.2f}{r['tokens_per_s']/py['tokens_per_s']:>10.2f}x"
          f"{t:>13.0f}{t/train[2]:>10.2f}x")
print(f"({py['sentences']} dev sentences, {py['tokens']} tokens, batch {py['batch_size']}, {py['threads']} threads; "
      "C++ tagging includes tokenisation; training: C++ one epoch of the recipe, Python "
      f"{py['train_ms_per_step']:.1f} ms/step over its timed steps)")
PY
