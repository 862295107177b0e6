#!/usr/bin/env bash
# Reproduces the shipped tagger models/ner-conll2003 from CoNLL-2003 English
# (Tjong Kim Sang & De Meulder 2003): trained on DATA_DIR/conll2003/train.txt
# with no pretrained embeddings, early-stopped on entity F1 of valid.txt.
#
#   DATA_DIR=data scripts/train_ner.sh [MODEL_DIR] [train options overriding the recipe]
#
# Prints the dev scores (conlleval's table) at the end.
# A model already in MODEL_DIR is kept unless --overwrite is passed (it is
# replaced only once the new one is complete); --resume continues a run
# that was interrupted.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${DATA_DIR:-data}
model=${1:-models/ner-conll2003}
shift || true
for f in "$data/conll2003/train.txt" "$data/conll2003/valid.txt"; do
  [ -f "$f" ] || { echo "train_ner.sh: $f not found (run scripts/get_data.sh, or set DATA_DIR)" >&2; exit 2; }
done
[ -x build/bin/cellstate-ner ] || bash scripts/setup.sh
# The recipe, as a --config file so that options given to this script win.
recipe=$(mktemp)
trap 'rm -f "$recipe"' EXIT
cat > "$recipe" <<'JSON'
{"tag-scheme": "iobes", "decoder": "crf", "embed": 100, "char-embed": 25, "char-hidden": 25,
 "piece-vocab": 4000, "piece-embed": 50, "casing-embed": 8, "hidden": 200, "layers": 1,
 "dropout": 0.5, "rare-word-dropout": 0.5, "optimizer": "adam", "lr": 0.001, "clip": 5,
 "batch-size": 16, "lr-schedule": "plateau", "lr-decay": 0.5, "lr-step": 2, "epochs": 40,
 "patience": 6, "max-time": 40, "seed": 1, "half": true}
JSON
build/bin/cellstate-ner train --train "$data/conll2003/train.txt" --dev "$data/conll2003/valid.txt" \
  --model "$model" --config "$recipe" "$@"
rm -f "$model"/checkpoint*.pt  # only needed to --resume an interrupted run
build/bin/cellstate-ner eval --model "$model" --data "$data/conll2003/valid.txt"
