#!/usr/bin/env bash
# What fine-tuning (train --init-from) buys, measured on data at hand: for
# each app, its training set is split in two halves (alternate examples;
# Shakespeare: the two halves of the text before the held-out tenth), then
#
#   base      trained on half A with the app's recipe (BASE_MINUTES at most)
#   finetune  base fine-tuned on a small slice of half B (the fine-tuning
#             defaults: half the learning rate, at most 10 epochs)
#   scratch   the same recipe trained from scratch on that slice alone
#
# all early-stopped on, and scored on, the app's dev set (SST-2 dev, CoNLL
# valid, the last tenth of Tiny Shakespeare, Multi30k val with greedy
# decoding). NER also shows new labels: base_nomisc is trained on half A
# with MISC removed, then fine-tuned on the slice, which has it.
#
#   DATA_DIR=data scripts/finetune_experiments.sh OUT [APP...]   (default: sentiment ner textgen translate)
#
# Env: BASE_MINUTES (default 10; translate 20), SLICE_MINUTES (default 4),
# THREADS (default 1). Writes OUT/APP/{base,finetune,scratch}/ and
# OUT/results.tsv (app, run, training examples, dev metric, dev score).
set -euo pipefail
cd "$(dirname "$0")/.."
data=${DATA_DIR:-data}
out=${1:?usage: scripts/finetune_experiments.sh OUT [APP...]}
shift
apps=("$@")
[ ${#apps[@]} -gt 0 ] || apps=(sentiment ner textgen translate)
threads=${THREADS:-1}
slice_minutes=${SLICE_MINUTES:-4}
[ -x build/bin/cellstate-translate ] || bash scripts/setup.sh
mkdir -p "$out"
results=$out/results.tsv
[ -f "$results" ] || printf 'app\trun\ttrain_examples\tmetric\tdev\n' > "$results"
bin=build/bin

# score DIR KEY: the dev score a finished model recorded in config.json.
score() { /usr/bin/python3 -c "import json,sys; print(json.load(open(sys.argv[1]+'/config.json'))['results'][sys.argv[2]])" "$1" "$2"; }
record() { printf '%s\t%s\t%s\t%s\t%s\n' "$@" >> "$results"; }
# train APP DIR ARGS...: trains unless DIR already holds a finished model.
train() {
  local app=$1 dir=$2
  shift 2
  if [ -f "$dir/MANIFEST.json" ]; then echo "== $dir: already trained" >&2; return; fi
  echo "== $app: $dir" >&2
  "$bin/cellstate-$app" train --model "$dir" --threads "$threads" --quiet --overwrite "$@"
}

split_data() {  # the halves and slices, written once
  local d=$out/data
  [ -f "$d/done" ] && return
  mkdir -p "$d"
  /usr/bin/python3 - "$data" "$d" <<'PY'
import gzip, sys
data, d = sys.argv[1], sys.argv[2]
def write(path, lines):
    with open(path, "w", encoding="utf-8") as f: f.writelines(lines)
# SST-2: alternate sentences; the slice is half B's first 500.
lines = open(f"{data}/sst2/stsa.binary.train", encoding="utf-8").readlines()
write(f"{d}/sst2.a", lines[0::2]); write(f"{d}/sst2.slice", lines[1::2][:500])
# CoNLL-2003: alternate sentences (documents markers dropped); slice 500 sentences.
sents = [s for s in open(f"{data}/conll2003/train.txt", encoding="utf-8").read().split("\n\n")
         if s.strip() and not s.startswith("-DOCSTART-")]
a, b = sents[0::2], sents[1::2][:500]
write(f"{d}/conll.a", [s.strip("\n") + "\n\n" for s in a]); write(f"{d}/conll.slice", [s.strip("\n") + "\n\n" for s in b])
def no_misc(s):
    out = []
    for line in s.strip("\n").split("\n"):
        cols = line.split(" ")
        if cols[-1].endswith("-MISC"): cols[-1] = "O"
        out.append(" ".join(cols))
    return "\n".join(out) + "\n\n"
write(f"{d}/conll.a.nomisc", [no_misc(s) for s in a])
# Tiny Shakespeare: the held-out tenth as textgen --valid-fraction 0.1 cuts
# it; halves A and B of the rest (on line starts); the slice is B's first 50,000 characters.
raw = open(f"{data}/tinyshakespeare/train.txt", "rb").read()
cut = raw.index(b"\n", int(len(raw) * 0.9)) + 1  # as textgen's tail_start
train, valid = raw[:cut].decode("utf-8"), raw[cut:].decode("utf-8")
mid = train.index("\n", len(train) // 2) + 1
half_b = train[mid:]
write(f"{d}/shakespeare.a", [train[:mid]]); write(f"{d}/shakespeare.valid", [valid])
write(f"{d}/shakespeare.slice", [half_b[:half_b.index("\n", 50000) + 1]])
# Multi30k en-de: alternate pairs; slice 2,000 pairs.
for lang in ("en", "de"):
    pairs = gzip.open(f"{data}/multi30k/train.{lang}.gz", "rt", encoding="utf-8").readlines()
    write(f"{d}/multi30k.a.{lang}", pairs[0::2]); write(f"{d}/multi30k.slice.{lang}", pairs[1::2][:2000])
PY
  touch "$d/done"
}

sentiment() {
  local o=$out/sentiment d=$out/data
  local recipe=(--dev "$data/sst2/stsa.binary.dev" --label-names 0=negative,1=positive --vocab-size 8000
                --embed 128 --hidden 128 --bidirectional --layers 2 --pooling max --dropout 0.5 --embed-dropout 0.3
                --word-dropout 0.1 --sample-alpha 0.1 --batch-size 32 --lr 0.001 --seed 1)
  train sentiment "$o/base" --train "$d/sst2.a" "${recipe[@]}" --epochs 10 --patience 3 --max-time "${BASE_MINUTES:-10}"
  train sentiment "$o/finetune" --train "$d/sst2.slice" --dev "$data/sst2/stsa.binary.dev" --init-from "$o/base" \
    --max-time "$slice_minutes"
  train sentiment "$o/scratch" --train "$d/sst2.slice" "${recipe[@]}" --epochs 30 --patience 5 --max-time "$slice_minutes"
  for run in base finetune scratch; do
    local n=500; [ $run = base ] && n=$(wc -l < "$d/sst2.a")
    record sentiment $run "$n" accuracy "$(score "$o/$run" dev_accuracy)"
  done
}

ner() {
  local o=$out/ner d=$out/data
  local recipe=(--dev "$data/conll2003/valid.txt" --tag-scheme iobes --decoder crf --embed 100 --char-embed 25
                --char-hidden 25 --piece-vocab 4000 --piece-embed 50 --casing-embed 8 --hidden 200 --layers 1
                --dropout 0.5 --rare-word-dropout 0.5 --lr 0.001 --clip 5 --batch-size 16 --lr-schedule plateau
                --lr-decay 0.5 --lr-step 2 --seed 1)
  train ner "$o/base" --train "$d/conll.a" "${recipe[@]}" --epochs 40 --patience 6 --max-time "${BASE_MINUTES:-10}"
  train ner "$o/finetune" --train "$d/conll.slice" --dev "$data/conll2003/valid.txt" --init-from "$o/base" \
    --max-time "$slice_minutes"
  train ner "$o/scratch" --train "$d/conll.slice" "${recipe[@]}" --epochs 40 --patience 6 --max-time "$slice_minutes"
  # New labels: a base that never saw MISC, fine-tuned on the slice that has it.
  train ner "$o/base_nomisc" --train "$d/conll.a.nomisc" "${recipe[@]}" --epochs 40 --patience 6 \
    --max-time "${BASE_MINUTES:-10}"
  train ner "$o/finetune_nomisc" --train "$d/conll.slice" --dev "$data/conll2003/valid.txt" \
    --init-from "$o/base_nomisc" --max-time "$slice_minutes"
  local n_a; n_a=$(grep -c '^$' "$d/conll.a")
  for run in base finetune scratch base_nomisc finetune_nomisc; do
    local n=500; case $run in base*) n=$n_a ;; esac
    record ner $run "$n" F1 "$(score "$o/$run" dev_f1)"
  done
}

textgen() {
  local o=$out/textgen d=$out/data
  local recipe=(--valid "$d/shakespeare.valid" --vocab-size 2000 --spm-type unigram --layers 2 --hidden 512
                --embed 512 --tie --dropout 0.4 --bptt 64 --batch-size 32 --lr 0.002 --clip 1 --lr-schedule plateau
                --lr-decay 0.5 --lr-step 1 --seed 1)
  train textgen "$o/base" --train "$d/shakespeare.a" "${recipe[@]}" --epochs 80 --patience 4 \
    --max-time "${BASE_MINUTES:-10}"
  train textgen "$o/finetune" --train "$d/shakespeare.slice" --valid "$d/shakespeare.valid" --init-from "$o/base" \
    --max-time "$slice_minutes"
  train textgen "$o/scratch" --train "$d/shakespeare.slice" "${recipe[@]}" --epochs 80 --patience 4 \
    --max-time "$slice_minutes"
  record textgen base "$(wc -c < "$d/shakespeare.a")" nats/char "$(score "$o/base" valid_nats_per_char)"
  for run in finetune scratch; do
    record textgen $run "$(wc -c < "$d/shakespeare.slice")" nats/char "$(score "$o/$run" valid_nats_per_char)"
  done
}

translate() {
  local o=$out/translate d=$out/data
  local recipe=(--src-dev "$data/multi30k/val.en.gz" --tgt-dev "$data/multi30k/val.de.gz" --vocab-size 8000
                --embed 256 --hidden 256 --layers 1 --attention general --input-feeding --tie --dropout 0.3
                --label-smoothing 0.1 --lr 0.001 --clip 1 --batch-size 64 --lr-schedule plateau --lr-decay 0.5
                --lr-step 1 --seed 1)
  train translate "$o/base" --src-train "$d/multi30k.a.en" --tgt-train "$d/multi30k.a.de" "${recipe[@]}" \
    --epochs 40 --patience 5 --max-time "${BASE_MINUTES:-20}"
  train translate "$o/finetune" --src-train "$d/multi30k.slice.en" --tgt-train "$d/multi30k.slice.de" \
    --src-dev "$data/multi30k/val.en.gz" --tgt-dev "$data/multi30k/val.de.gz" --init-from "$o/base" \
    --max-time "$slice_minutes"
  train translate "$o/scratch" --src-train "$d/multi30k.slice.en" --tgt-train "$d/multi30k.slice.de" \
    "${recipe[@]}" --epochs 40 --patience 5 --max-time "$slice_minutes"
  for run in base finetune scratch; do
    local n=2000; [ $run = base ] && n=$(wc -l < "$d/multi30k.a.en")
    record translate $run "$n" BLEU "$(score "$o/$run" dev_bleu)"
  done
}

split_data
for app in "${apps[@]}"; do
  case $app in
    sentiment | ner | textgen | translate) "$app" ;;
    *) echo "finetune_experiments.sh: unknown app '$app' (expected sentiment, ner, textgen or translate)" >&2; exit 2 ;;
  esac
done
column -t -s $'\t' "$results"
