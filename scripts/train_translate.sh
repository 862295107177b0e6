#!/usr/bin/env bash
# Reproduces the shipped translators models/translate-multi30k-SRC-TGT on
# Multi30k (Elliott et al. 2016): SRC -> TGT trained on
# DATA_DIR/multi30k/train.SRC.gz -> train.TGT.gz (29,000 pairs) and early-stopped
# on the cased BLEU of val (1,014 pairs). PAIR picks the direction (default en-de;
# shipped: en-de, en-fr, en-cs, de-en; any two of en, de, fr, cs work).
#
#   DATA_DIR=data [PAIR=en-fr] scripts/train_translate.sh [MODEL_DIR] [train options overriding the recipe]
#
# Training stops after at most 110 minutes (--max-time; it resumes with --resume
# after an interruption, counting the time already spent). At the end it prints
# val BLEU with beam 5, cased and lowercased, as sacreBLEU computes them.
# A model already in MODEL_DIR is kept unless --overwrite is passed (it is
# replaced only once the new one is complete); --resume continues a run
# that was interrupted.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${DATA_DIR:-data}
pair=${PAIR:-en-de}
[[ $pair =~ ^(en|de|fr|cs)-(en|de|fr|cs)$ && ${pair%-*} != "${pair#*-}" ]] ||
  { echo "train_translate.sh: PAIR=$pair: expected SRC-TGT, two different languages of en, de, fr, cs" >&2; exit 2; }
src=${pair%-*}
tgt=${pair#*-}
model=${1:-models/translate-multi30k-$pair}
shift || true
for f in "$data/multi30k/train.$src.gz" "$data/multi30k/train.$tgt.gz" "$data/multi30k/val.$src.gz" "$data/multi30k/val.$tgt.gz"; do
  [ -f "$f" ] || { echo "train_translate.sh: $f not found (run scripts/get_data.sh, or set DATA_DIR)" >&2; exit 2; }
done
[ -x build/bin/cellstate-translate ] || bash scripts/setup.sh
# The recipe, as a --config file so that options given to this script win.
recipe=$(mktemp)
trap 'rm -f "$recipe"' EXIT
cat > "$recipe" <<'JSON'
{"vocab-size": 8000, "embed": 256, "hidden": 256, "layers": 1, "attention": "general",
 "input-feeding": true, "tie": true, "dropout": 0.3, "label-smoothing": 0.1,
 "optimizer": "adam", "lr": 0.001, "clip": 1, "batch-size": 64, "lr-schedule": "plateau",
 "lr-decay": 0.5, "lr-step": 1, "epochs": 40, "patience": 5, "max-time": 110, "seed": 1,
 "half": true}
JSON
build/bin/cellstate-translate train --src-train "$data/multi30k/train.$src.gz" --tgt-train "$data/multi30k/train.$tgt.gz" \
  --src-dev "$data/multi30k/val.$src.gz" --tgt-dev "$data/multi30k/val.$tgt.gz" --model "$model" --config "$recipe" "$@"
rm -f "$model"/checkpoint*.pt  # only needed to --resume an interrupted run
for case in "" --lowercase; do
  build/bin/cellstate-translate eval --model "$model" --beam 5 $case \
    --src "$data/multi30k/val.$src.gz" --ref "$data/multi30k/val.$tgt.gz"
done
