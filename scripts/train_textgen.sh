#!/usr/bin/env bash
# Reproduces the shipped language model models/textgen-shakespeare from Tiny
# Shakespeare (Karpathy's char-rnn corpus): trained on the first 90% of
# DATA_DIR/tinyshakespeare/train.txt, early-stopped on its last 10% (the
# dev text), with AWD-LSTM's regularisers (README "Regularisation"), with
# bfloat16 products (on a CPU with AVX512_BF16; fp32 with a warning
# elsewhere) on one thread: 85 minutes (--max-time; dev still improving).
#
#   DATA_DIR=data scripts/train_textgen.sh [MODEL_DIR] [extra train options]
#
# Prints the dev nats and bits per character at the end;
# scripts/plot_training.py MODEL_DIR/train_log.jsonl draws the curve.
# A model already in MODEL_DIR is kept unless --overwrite is passed (it is
# replaced only once the new one is complete); --resume continues a run
# that was interrupted.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${DATA_DIR:-data}
model=${1:-models/textgen-shakespeare}
shift || true
text="$data/tinyshakespeare/train.txt"
[ -f "$text" ] || { echo "train_textgen.sh: $text not found (run scripts/get_data.sh, or set DATA_DIR)" >&2; exit 2; }
[ -x build/bin/cellstate-textgen ] || bash scripts/setup.sh
build/bin/cellstate-textgen train --train "$text" --valid-fraction 0.1 --model "$model" \
  --vocab-size 2000 --spm-type unigram --layers 3 --hidden 420 --embed 420 --tie \
  --dropout 0.45 --embed-dropout 0.3 --hidden-dropout 0.25 --locked-dropout --vocabulary-dropout 0.1 \
  --weight-dropout 0.6 --ar 2 --tar 1 \
  --bptt 64 --batch-size 32 --optimizer adam --lr 0.002 --clip 0.25 \
  --lr-schedule plateau --lr-decay 0.5 --lr-step 4 --min-lr 1e-3 --patience 10 --epochs 300 --max-time 85 \
  --nt-asgd 3 --threads 1 --seed 1 --half --precision bf16 "$@"
rm -f "$model"/checkpoint*.pt  # only needed to --resume an interrupted run
# The dev text again, from the saved model, as a user measures it.
build/bin/cellstate-textgen eval --model "$model" --data "$text" --valid-fraction 0.1
