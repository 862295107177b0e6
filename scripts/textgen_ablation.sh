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
#
# Each run trains the same model (2 x LSTM 256, embeddings 256 tied, the
# shipped model's 2000-piece unigram vocabulary, bptt 64, batch 32, Adam 2e-3
# halved on plateaus) for MINUTES minutes on THREADS threads, early-stopped
# on the last tenth of train.txt as the shipped recipe is.
#
#   DATA_DIR=data scripts/textgen_ablation.sh OUT [RUN...]   (default: all seven)
#
# Env: MINUTES (default 10), THREADS (default 1). Writes OUT/RUN/ and
# OUT/results.tsv (run, options, dev nats/char, best epoch, epochs trained).
set -euo pipefail
cd "$(dirname "$0")/.."
data=${DATA_DIR:-data}
out=${1:?usage: scripts/textgen_ablation.sh OUT [RUN...]}
shift
runs=("$@")
[ ${#runs[@]} -gt 0 ] || runs=(base locked weight vocabulary ar_tar nt_asgd all)
minutes=${MINUTES:-10}
threads=${THREADS:-1}
text="$data/tinyshakespeare/train.txt"
[ -f "$text" ] || { echo "textgen_ablation.sh: $text not found (set DATA_DIR)" >&2; exit 2; }
[ -x build/bin/cellstate-textgen ] || bash scripts/setup.sh
mkdir -p "$out"
results=$out/results.tsv
[ -f "$results" ] || printf 'run\toptions\tdev_nats_per_char\tbest_epoch\tepochs\n' > "$results"

options_of() {
  case $1 in
    base) echo "" ;;
    locked) echo "--locked-dropout" ;;
    weight) echo "--weight-dropout 0.5" ;;
    vocabulary) echo "--vocabulary-dropout 0.1" ;;
    ar_tar) echo "--ar 2 --tar 1" ;;
    nt_asgd) echo "--nt-asgd 2" ;;
    all) echo "--locked-dropout --weight-dropout 0.5 --vocabulary-dropout 0.1 --ar 2 --tar 1 --nt-asgd 2" ;;
    *) echo "textgen_ablation.sh: unknown run '$1'" >&2; return 2 ;;
  esac
}

for run in "${runs[@]}"; do
  extra=$(options_of "$run")
  dir=$out/$run
  if [ ! -f "$dir/MANIFEST.json" ]; then
    echo "== $run: $extra" >&2
    # shellcheck disable=SC2086  # $extra is a list of options
    build/bin/cellstate-textgen train --train "$text" --valid-fraction 0.1 --model "$dir" --overwrite --quiet \
      --vocab-size 2000 --spm-type unigram --layers 2 --hidden 256 --embed 256 --tie --dropout 0.4 \
      --bptt 64 --batch-size 32 --optimizer adam --lr 0.002 --clip 0.25 \
      --lr-schedule plateau --lr-decay 0.5 --lr-step 1 --patience 4 --epochs 200 --max-time "$minutes" \
      --seed 1 --threads "$threads" $extra
  fi
  /usr/bin/python3 - "$dir" "$run" "$extra" >> "$results" <<'PY'
import json, sys
d, run, extra = sys.argv[1:]
c = json.load(open(d + "/config.json"))
epochs = max(json.loads(l)["epoch"] for l in open(d + "/train_log.jsonl") if l.strip())
r = c["results"]
print(f"{run}\t{extra or '-'}\t{r['valid_nats_per_char']:.4f}\t{r['best_epoch']}\t{epochs}")
PY
done
column -t -s $'\t' "$results"
