#!/usr/bin/env bash
# Damaged model directories (tests/fuzz/mutate_models.cpp) on a tiny model of
# each app: every damaged file refused when verified, never a crash when not.
#   tests/apps/mutate_models.sh BIN_DIR MUTATE_BINARY TEST_DATA_DIR [RUNS]
set -uo pipefail
bin=$1 mutate=$2 data=$3 runs=${4:-300}
source "$(dirname "$0")/cli_lib.sh"
common=(--epochs 2 --patience 0 --threads 1 --quiet)
check "sentiment" 0 "$bin/cellstate-sentiment" train --train "$data/sentiment_tiny.tsv" --dev "$data/sentiment_tiny.tsv" \
  --model "$tmp/sentiment" --embed 8 --hidden 8 --vocab-size 60 --ensemble 2 --half "${common[@]}"
check "ner" 0 "$bin/cellstate-ner" train --train "$data/ner_tiny.conll" --dev "$data/ner_tiny.conll" --model "$tmp/ner" \
  --embed 8 --hidden 8 --char-embed 4 --char-hidden 4 --piece-vocab 60 --piece-embed 4 "${common[@]}"
check "textgen" 0 "$bin/cellstate-textgen" train --train "$data/textgen_tiny.txt" --valid "$data/textgen_tiny.txt" \
  --model "$tmp/textgen" --spm-type char --vocab-size 60 --hidden 8 --embed 8 --bptt 8 --batch-size 2 "${common[@]}"
check "translate" 0 "$bin/cellstate-translate" train --src-train "$data/translate_tiny.en" \
  --tgt-train "$data/translate_tiny.de" --src-dev "$data/translate_tiny.en" --tgt-dev "$data/translate_tiny.de" \
  --model "$tmp/translate" --embed 8 --hidden 8 --vocab-size 40 "${common[@]}"
check "mutated loads" 0 "$mutate" --runs "$runs" --seed "${SEED:-1}" "$tmp/sentiment" "$tmp/ner" "$tmp/textgen" "$tmp/translate"
cat "$tmp/out" "$tmp/err" | head -40
[ "$fails" = 0 ] && echo "all mutated-model checks passed"
exit "$fails"
