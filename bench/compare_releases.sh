#!/usr/bin/env bash
# Every app's use command and training speed: an earlier build of cellstate
# against this one, in one run, each measurement interleaved (old, new, old,
# new, ... for ROUNDS rounds; medians). The same shipped models and the same
# recipes for both; float32; one thread count for all.
#
#   bench/compare_releases.sh OLD_BUILD_DIR [--threads N] [--rounds N] [--train-minutes M] [--apps "A B"]
#
# OLD_BUILD_DIR is the build folder of another checkout, for example the
# commit before the oneDNN products (issue 16's "before"):
#   git clone -q . /tmp/base && git -C /tmp/base checkout 0511411
#   cmake -S /tmp/base -B /tmp/base/build -DCMAKE_BUILD_TYPE=Release && cmake --build /tmp/base/build -j2
# Use commands: sentiment and NER `bench` on their dev sets (sentences/s,
# tokens/s), textgen `bench` (generated tokens/s from the default prompt),
# translate `bench` on Multi30k val (beam-5 sentences/s, en-de). Training:
# each recipe (textgen: the shipped model's 3 x 420 architecture with the
# options the old build knows) for --train-minutes (sentiment's ensemble
# of 5 trains its members one after the other: 5 x that), tokens/s as its
# train_log.jsonl gives it (the median over whole epochs, or over what was
# logged when no epoch finished; an ensemble's members each count). Data from DATA_DIR (default data).
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: bench/compare_releases.sh OLD_BUILD_DIR [--threads N] [--rounds N] [--train-minutes M] [--apps \"A B\"]" >&2; exit 2; }
old=$1; shift
threads=2 rounds=2 minutes=1 apps="sentiment ner textgen translate"
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) threads=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --train-minutes) minutes=$2; shift 2 ;;
    --apps) apps=$2; shift 2 ;;
    *) echo "compare_releases.sh: unknown option '$1'" >&2; exit 2 ;;
  esac
done
data=${DATA_DIR:-data}
for b in "$old/bin" build/bin; do
  for app in sentiment ner textgen translate; do
    [ -x "$b/cellstate-$app" ] || { echo "compare_releases.sh: $b/cellstate-$app not found (build it first)" >&2; exit 1; }
  done
done
for f in sst2/stsa.binary.train sst2/stsa.binary.dev conll2003/train.txt conll2003/valid.txt \
         tinyshakespeare/train.txt multi30k/train.en.gz multi30k/train.de.gz multi30k/val.en.gz multi30k/val.de.gz; do
  [ -f "$data/$f" ] || { echo "compare_releases.sh: $data/$f not found (set DATA_DIR)" >&2; exit 1; }
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
results=$tmp/results.jsonl

# One measurement: prints the figure on stdout.
use() {  # BIN APP
  local bin=$1 app=$2 out key
  case $app in
    sentiment) out=$("$bin/cellstate-sentiment" bench --model models/sentiment-sst2 --data "$data/sst2/stsa.binary.dev" --threads "$threads" --json)
               key=sentences_per_s ;;
    ner) out=$("$bin/cellstate-ner" bench --model models/ner-conll2003 --data "$data/conll2003/valid.txt" --threads "$threads" --json)
         key=tokens_per_s ;;
    textgen) out=$("$bin/cellstate-textgen" bench --model models/textgen-shakespeare --threads "$threads" --json)
             key=generated_tokens_per_s ;;
    translate) out=$("$bin/cellstate-translate" bench --model models/translate-multi30k-en-de --src "$data/multi30k/val.en.gz" --threads "$threads" --json)
               key=sentences_per_s_beam5 ;;
  esac
  /usr/bin/python3 -c 'import json,sys; print(json.loads(sys.argv[1].strip().splitlines()[-1])[sys.argv[2]])' "$out" "$key"
}

train() {  # BIN APP
  local bin=$1 app=$2 model=$tmp/model
  rm -rf "$model" "$model".*
  local t=(--model "$model" --threads "$threads" --max-time "$minutes" --seed 1)
  case $app in
    sentiment) "$bin/cellstate-sentiment" train "${t[@]}" --train "$data/sst2/stsa.binary.train" --dev "$data/sst2/stsa.binary.dev" \
                 --label-names 0=negative,1=positive --vocab-size 8000 --embed 128 --hidden 128 --bidirectional --layers 2 \
                 --pooling max --dropout 0.5 --embed-dropout 0.3 --word-dropout 0.1 --sample-alpha 0.1 --batch-size 32 \
                 --lr 0.001 --ensemble 5 --half --epochs 10 ;;
    ner) "$bin/cellstate-ner" train "${t[@]}" --train "$data/conll2003/train.txt" --dev "$data/conll2003/valid.txt" \
           --tag-scheme iobes --decoder crf --embed 100 --char-embed 25 --char-hidden 25 --piece-vocab 4000 \
           --piece-embed 50 --casing-embed 8 --hidden 200 --layers 1 --dropout 0.5 --rare-word-dropout 0.5 \
           --optimizer adam --lr 0.001 --clip 5 --batch-size 16 --epochs 40 --half ;;
    textgen) "$bin/cellstate-textgen" train "${t[@]}" --train "$data/tinyshakespeare/train.txt" --valid-fraction 0.1 \
               --vocab-size 2000 --spm-type unigram --layers 3 --hidden 420 --embed 420 --tie --dropout 0.45 \
               --bptt 64 --batch-size 32 --optimizer adam --lr 0.002 --clip 0.25 --epochs 300 --half ;;
    translate) "$bin/cellstate-translate" train "${t[@]}" --src-train "$data/multi30k/train.en.gz" --tgt-train "$data/multi30k/train.de.gz" \
                 --src-dev "$data/multi30k/val.en.gz" --tgt-dev "$data/multi30k/val.de.gz" --vocab-size 8000 --embed 256 \
                 --hidden 256 --layers 1 --attention general --input-feeding --tie --dropout 0.3 --label-smoothing 0.1 \
                 --optimizer adam --lr 0.001 --clip 1 --batch-size 64 --epochs 40 --half ;;
  esac > "$tmp/train.out" 2>&1 || { echo "compare_releases.sh: $bin/cellstate-$app train failed:" >&2; tail -3 "$tmp/train.out" >&2; exit 1; }
  /usr/bin/python3 -c '
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if "tok_per_s" in l]
whole = [r for r in rows if r.get("epoch_fraction") == r.get("epoch")]  # intervals of a whole epoch
print(statistics.median(r["tok_per_s"] for r in (whole or rows)))' "$model/train_log.jsonl"
}

for app in $apps; do
  case $app in sentiment|ner|textgen|translate) ;; *) echo "compare_releases.sh: unknown app '$app'" >&2; exit 2 ;; esac
  for kind in use train; do
    for ((r = 1; r <= rounds; r++)); do
      for side in old new; do
        bin=$([ $side = old ] && echo "$old/bin" || echo build/bin)
        echo "running: $app $kind ($side, round $r)" >&2
        v=$($kind "$bin" $app)
        echo "{\"app\": \"$app\", \"kind\": \"$kind\", \"side\": \"$side\", \"value\": $v}" >> "$results"
      done
    done
  done
done

/usr/bin/python3 - "$results" "$threads" "$rounds" "$minutes" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
units = {("sentiment", "use"): "predict sentences/s", ("ner", "use"): "tagging tokens/s",
         ("textgen", "use"): "generated tokens/s", ("translate", "use"): "beam-5 sentences/s"}
print(f"| app | measure | before | after | after/before |")
print(f"|---|---|---:|---:|---:|")
for app in [a for a in ["sentiment", "ner", "textgen", "translate"] if any(r["app"] == a for r in rows)]:
    for kind in ["use", "train"]:
        m = {s: statistics.median(r["value"] for r in rows if (r["app"], r["kind"], r["side"]) == (app, kind, s))
             for s in ["old", "new"]}
        what = units[(app, kind)] if kind == "use" else "training tokens/s"
        print(f"| {app} | {what} | {m['old']:,.1f} | {m['new']:,.1f} | {m['new'] / m['old']:.2f}x |")
print(f"\n{sys.argv[2]} threads; medians of {sys.argv[3]} interleaved rounds; training {sys.argv[4]} min a run.")
print("raw: " + " ".join(f'{r["app"]}/{r["kind"]}/{r["side"]}={r["value"]:.1f}' for r in rows))
PY
