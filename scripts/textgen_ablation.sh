#!/usr/bin/env bash
# What each of AWD-LSTM's regularisers (Merity, Keskar & Socher 2017) adds to
# the Tiny Shakespeare language model, one at a time, on the dev tenth:
#
#   base        the plain recipe: per-position dropout 0.4 on the embeddings,
#               between the layers and on the outputs
#   locked      + --locked-dropout (one mask per sequence, shared over time)
#   weight      + --weight-dropout 0.5 (DropConnect on weight_hh)
#   vocabulary  + --vocabulary-dropout 0.1 (whole tokens dropped)
#   ar_tar      + --ar 2 --tar 1
#   nt_asgd     + --nt-asgd 2 (weight averaging once dev stops improving)
#   all         every one of them together
#   characters  base on plain characters instead of 2,000 unigram pieces
#               (bptt 192: as many characters a segment)
#
# Each run trains the same model (2 x LSTM 256, embeddings 256 tied, the
# shipped model's 2000-piece unigram vocabulary, bptt 64, batch 32, Adam 2e-3
# halved on plateaus) for MINUTES minutes on THREADS threads, early-stopped
# on the last tenth of train.txt as the shipped recipe is.
#
#   DATA_DIR=data scripts/textgen_ablation.sh OUT [RUN...]   (default: all eight)
#
# Env: MINUTES (default 10), THREADS (default 1), AT_EPOCH (default 10).
# Writes OUT/RUN/ and OUT/results.tsv: run, options, dev nats/char after
# AT_EPOCH whole epochs (equal steps: the fair comparison on a shared
# machine, where equal minutes are not equal work), the best dev nats/char
# within MINUTES, the (fractional) epoch it came at, and the epochs trained.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${DATA_DIR:-data}
out=${1:?usage: scripts/textgen_ablation.sh OUT [RUN...]}
shift
runs=("$@")
[ ${#runs[@]} -gt 0 ] || runs=(base locked weight vocabulary ar_tar nt_asgd all characters)
minutes=${MINUTES:-10}
at_epoch=${AT_EPOCH:-10}
threads=${THREADS:-1}
text="$data/tinyshakespeare/train.txt"
[ -f "$text" ] || { echo "textgen_ablation.sh: $text not found (set DATA_DIR)" >&2; exit 2; }
[ -x build/bin/cellstate-textgen ] || bash scripts/setup.sh
mkdir -p "$out"
results=$out/results.tsv
[ -f "$results" ] || printf 'run\toptions\tdev_at_epoch_%s\tbest_dev\tbest_epoch\tepochs\n' "$at_epoch" > "$results"

# What a run adds to base (the tokenizer options replace base's).
options_of() {
  case $1 in
    base) echo "" ;;
    locked) echo "--locked-dropout" ;;
    weight) echo "--weight-dropout 0.5" ;;
    vocabulary) echo "--vocabulary-dropout 0.1" ;;
    ar_tar) echo "--ar 2 --tar 1" ;;
    nt_asgd) echo "--nt-asgd 2" ;;
    all) echo "--locked-dropout --weight-dropout 0.5 --vocabulary-dropout 0.1 --ar 2 --tar 1 --nt-asgd 2" ;;
    characters) echo "--spm-type char --vocab-size 200 --bptt 192" ;;
    *) echo "textgen_ablation.sh: unknown run '$1'" >&2; return 2 ;;
  esac
}

for run in "${runs[@]}"; do
  extra=$(options_of "$run")
  dir=$out/$run
  tokens="--spm-type unigram --vocab-size 2000 --bptt 64"
  [ "$run" = characters ] && tokens=""
  if [ ! -f "$dir/MANIFEST.json" ]; then
    echo "== $run: $extra" >&2
    # shellcheck disable=SC2086  # $tokens and $extra are lists of options
    build/bin/cellstate-textgen train --train "$text" --valid-fraction 0.1 --model "$dir" --overwrite --quiet \
      --layers 2 --hidden 256 --embed 256 --tie --dropout 0.4 \
      --batch-size 32 --optimizer adam --lr 0.002 --clip 0.25 \
      --lr-schedule plateau --lr-decay 0.5 --lr-step 1 --patience 4 --epochs 200 --max-time "$minutes" \
      --seed 1 --threads "$threads" $tokens $extra
  fi
  /usr/bin/python3 - "$dir" "$run" "$extra" "$at_epoch" >> "$results" <<'PY'
import json, sys
d, run, extra, at = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
log = [json.loads(l) for l in open(d + "/train_log.jsonl") if l.strip()]
# The score after exactly `at` whole epochs (the same number of steps for
# every run, whatever else the machine was doing), and the best in the time.
at_score = next((r["score"] for r in log if r["epoch_fraction"] == at), float("nan"))
best = min(log, key=lambda r: r["score"])
print(f"{run}\t{extra or '-'}\t{at_score:.4f}\t{best['score']:.4f}\t{best['epoch_fraction']:.1f}\t{log[-1]['epoch_fraction']:.1f}")
PY
done
column -t -s $'\t' "$results"
