#!/usr/bin/env bash
# Data-parallel training speed on this machine, for each app's recipe: one
# process with 2 threads against 2 processes (--nproc 2) with 1 thread each,
# interleaved, MINUTES of training each (then the final dev evaluation, not
# timed); Gloo's all-reduce time over loopback for each model's gradient; and
# the scaling model (scripts/scaling_model.py) from those figures.
#   DATA_DIR=data scripts/bench_distributed.sh [MINUTES] [OUT_DIR]
# Writes OUT_DIR/runs.jsonl (one line per run: app, processes, threads,
# tokens/s, ms per step, ms per step in the gradient exchange, parameters)
# and OUT_DIR/allreduce.jsonl, and prints the scaling table.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${DATA_DIR:-data}
minutes=${1:-2}
out=${2:-$(mktemp -d)}
mkdir -p "$out"
[ -x build/bin/cellstate-textgen ] || bash scripts/setup.sh
for f in sst2/stsa.binary.train conll2003/train.txt tinyshakespeare/train.txt multi30k/train.en.gz; do
  [ -f "$data/$f" ] || { echo "bench_distributed.sh: $data/$f not found (set DATA_DIR)" >&2; exit 2; }
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Each app's recipe (scripts/train_*.sh; sentiment: one member of its first stage).
recipe() {
  case "$1" in
    sentiment) echo build/bin/cellstate-sentiment train --train "$data/sst2/stsa.binary.train" \
      --dev "$data/sst2/stsa.binary.dev" --vocab-size 8000 --embed 128 --hidden 128 --bidirectional --layers 2 \
      --pooling max --dropout 0.5 --embed-dropout 0.3 --word-dropout 0.1 --sample-alpha 0.1 --batch-size 32 \
      --lr 0.001 --epochs 10 ;;
    ner) echo build/bin/cellstate-ner train --train "$data/conll2003/train.txt" --dev "$data/conll2003/valid.txt" \
      --config "$work/ner.json" ;;
    textgen) echo build/bin/cellstate-textgen train --train "$data/tinyshakespeare/train.txt" --valid-fraction 0.1 \
      --vocab-size 2000 --spm-type unigram --layers 2 --hidden 512 --embed 512 --tie --dropout 0.4 --bptt 64 \
      --batch-size 32 --lr 0.002 --clip 1 --epochs 80 ;;
    translate) echo build/bin/cellstate-translate train --src-train "$data/multi30k/train.en.gz" \
      --tgt-train "$data/multi30k/train.de.gz" --src-dev "$data/multi30k/val.en.gz" \
      --tgt-dev "$data/multi30k/val.de.gz" --config "$work/translate.json" --dev-beam 1 ;;
  esac
}

# The NER and translation recipes are the JSON files their scripts write.
for app in ner translate; do
  sed -n "/<<'JSON'/,/^JSON\$/p" "scripts/train_$app.sh" | sed '1d;$d' > "$work/$app.json"
done

lscpu | grep -E "Model name|^CPU\(s\)" >&2
for app in sentiment ner textgen translate; do
  for layout in "1 2" "2 1"; do
    read -r nproc threads <<< "$layout"
    model="$work/$app-$nproc"
    echo "== $app: $nproc process(es) x $threads thread(s), $minutes min" >&2
    # shellcheck disable=SC2046
    $(recipe "$app") --model "$model" --nproc "$nproc" --threads "$threads" --max-time "$minutes" \
      --patience 0 --eval-every 0 --checkpoint-every 0 --seed 1 > "$work/out" 2> "$work/err" ||
      { cat "$work/err" >&2; exit 1; }
    /usr/bin/python3 - "$model" "$app" "$nproc" "$threads" "$work/err" >> "$out/runs.jsonl" <<'PY'
import json, re, sys
model, app, nproc, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
parameters = int(re.search(r"model with (\d+) parameters", open(sys.argv[5]).read()).group(1))
last = [json.loads(l) for l in open(model + "/train_log.jsonl") if l.strip()][-1]
rate = next(v for k, v in last.items() if k.endswith("_per_s"))
print(json.dumps({"app": app, "processes": nproc, "threads": threads, "steps": last["step"],
                  "tokens_per_s": round(rate, 1), "step_ms": round(last["step_ms"], 2),
                  "exchange_ms_per_step": round(last.get("exchange_ms_per_step", 0.0), 2),
                  "parameters": parameters}))
PY
    tail -1 "$out/runs.jsonl" >&2
  done
done
sizes=$(/usr/bin/python3 -c "
import json
print(' '.join(sorted({str(json.loads(l)['parameters']) for l in open('$out/runs.jsonl')})))")
/usr/bin/python3 scripts/allreduce_bench.py $sizes > "$out/allreduce.jsonl"
cat "$out/allreduce.jsonl" >&2
/usr/bin/python3 scripts/scaling_model.py "$out/runs.jsonl" "$out/allreduce.jsonl"
echo "results in $out" >&2
