#!/usr/bin/env bash
# Translation speed: cellstate (custom and built-in encoder) against the same
# attention seq2seq in PyTorch's Python API (bench/translate_python.py) with
# the same weights, on the same inputs, in one run: sentences/s at beam 1 and
# beam 5 (batches of 32, length-sorted) and one-sentence latency on the
# Multi30k val source; training tokens/s of the shipped recipe
# (scripts/train_translate.sh for --max-time minutes, its train_log.jsonl
# tokens/s) against the Python peer's steps of the same update on the first
# 2,000 training pairs.
#
#   DATA_DIR=data bench/compare_translate.sh [MODEL_DIR]   (THREADS=2, MINUTES=1.5, PAIR=en-de)
#
# Needs python3-torch (scripts/setup.sh --python).
set -euo pipefail
cd "$(dirname "$0")/.."
data=${DATA_DIR:-data}
pair=${PAIR:-en-de}
model=${1:-models/translate-multi30k-$pair}
threads=${THREADS:-2}
minutes=${MINUTES:-1.5}
src=${pair%-*} tgt=${pair#*-}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
bin=build/bin/cellstate-translate
for f in "$data/multi30k/val.$src.gz" "$data/multi30k/train.$src.gz" "$data/multi30k/train.$tgt.gz"; do
  [ -f "$f" ] || { echo "compare_translate.sh: $f not found (set DATA_DIR)" >&2; exit 2; }
done
head -n 2000 < <(gzip -dc "$data/multi30k/train.$src.gz") > "$tmp/train.src"
head -n 2000 < <(gzip -dc "$data/multi30k/train.$tgt.gz") > "$tmp/train.tgt"
$bin bench --model "$model" --src "$tmp/train.src" --tgt "$tmp/train.tgt" --singles 1 --threads "$threads" \
  --dump-ids "$tmp/train_ids.json" > /dev/null
$bin bench --model "$model" --src "$data/multi30k/val.$src.gz" --threads "$threads" --json \
  --dump-ids "$tmp/ids.json" > "$tmp/custom.json"
$bin bench --model "$model" --src "$data/multi30k/val.$src.gz" --threads "$threads" --json --impl builtin > "$tmp/builtin.json"
/usr/bin/python3 bench/translate_python.py "$tmp/ids.json" --weights "$model/weights.pt" \
  --train-ids "$tmp/train_ids.json" --threads "$threads" > "$tmp/python.json"
for impl in custom builtin; do
  DATA_DIR="$data" PAIR="$pair" scripts/train_translate.sh "$tmp/train_$impl" --max-time "$minutes" \
    --threads "$threads" --impl $impl --quiet > /dev/null 2>&1
  cp "$tmp/train_$impl/train_log.jsonl" "$tmp/train_$impl.jsonl"
done
/usr/bin/python3 - "$tmp" <<'PY'
import json, sys, os
d = sys.argv[1]
rows = [json.load(open(os.path.join(d, f + ".json"))) for f in ("custom", "builtin", "python")]
train = [json.loads(open(os.path.join(d, f"train_{i}.jsonl")).readlines()[-1])["tok_per_s"] for i in ("custom", "builtin")]
py = rows[2]
train.append(py["train_tokens_per_s"])
print(f"{'implementation':<28}{'beam1 sent/s':>13}{'beam5 sent/s':>13}{'vs python':>10}{'latency b1/b5 ms':>18}"
      f"{'train tok/s':>13}{'vs python':>10}")
names = ["cellstate custom (C++)", "cellstate builtin (C++)", "PyTorch Python (model only)"]
for name, r, t in zip(names, rows, train):
    print(f"{name:<28}{r['sentences_per_s_beam1']:>13.1f}{r['sentences_per_s_beam5']:>13.1f}"
          f"{r['sentences_per_s_beam5']/py['sentences_per_s_beam5']:>9.2f}x"
          f"{r['latency_ms_beam1']:>9.2f}/{r['latency_ms_beam5']:<8.2f}{t:>13.0f}{t/train[2]:>9.2f}x")
print(f"({py['sentences']} val sentences, batch {py['batch_size']}, {py['threads']} threads; the same weights; "
      f"Python found the same best beam-5 hypothesis as cellstate for {100 * py['beam5_same_as_cellstate']:.1f}% "
      "of them; C++ translation includes tokenisation; training: C++ the recipe's train_log.jsonl, Python "
      f"{py['train_ms_per_step']:.0f} ms/step over its timed steps)")
PY
