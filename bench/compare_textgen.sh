#!/usr/bin/env bash
# Language-model training throughput: cellstate-textgen (custom and built-in
# LSTM) against PyTorch's word-language-model example in Python
# (bench/word_lm.py), at the example's sizes, on the same tokens, in one run;
# plus generation latency of the model.
#
#   bench/compare_textgen.sh [TEXT] [MODEL_DIR]   (THREADS=2, STEPS=200 by default)
#
# Needs python3-torch (scripts/setup.sh --python).
set -euo pipefail
cd "$(dirname "$0")/.."
text=${1:-${DATA_DIR:-data}/tinyshakespeare/train.txt}
model=${2:-models/textgen-shakespeare}
threads=${THREADS:-2}
steps=${STEPS:-200}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
bin=build/bin/cellstate-textgen
$bin bench --model "$model" --train-data "$text" --steps "$steps" --threads "$threads" --json \
  --dump-ids "$tmp/ids.json" > "$tmp/custom.json"
$bin bench --model "$model" --train-data "$text" --steps "$steps" --threads "$threads" --json \
  --impl builtin > "$tmp/builtin.json"
/usr/bin/python3 bench/word_lm.py "$tmp/ids.json" --steps "$steps" --threads "$threads" > "$tmp/python.json"
/usr/bin/python3 - "$tmp" <<'PY'
import json, os, sys
d = sys.argv[1]
rows = [json.load(open(os.path.join(d, f + ".json"))) for f in ("custom", "builtin", "python")]
py = rows[2]
print(f"{'training (word-LM recipe)':<30}{'tokens/s':>10}{'ms/step':>10}{'vs python':>11}")
for name, r in zip(["cellstate custom (C++)", "cellstate builtin (C++)", "PyTorch Python"], rows):
    print(f"{name:<30}{r['train_tokens_per_s']:>10.0f}{r['train_ms_per_step']:>10.1f}"
          f"{r['train_tokens_per_s'] / py['train_tokens_per_s']:>10.2f}x")
print(f"({py['train_steps']} steps of bptt 35 x batch 20, vocabulary {py['vocab_size']}, {py['threads']} threads)")
for name, r in zip(["custom", "builtin"], rows[:2]):
    print(f"generation ({name}): first token {r['first_token_ms']:.2f} ms, {r['ms_per_token']:.2f} ms/token "
          f"({r['generated_tokens_per_s']:.0f} tokens/s)")
PY
