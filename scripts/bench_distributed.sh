#!/usr/bin/env bash
# Data-parallel training speed on this machine, for each app's recipe: one
# process with 2 threads against 2 processes (--nproc 2) with 1 thread each,
# the latter once for each gradient exchange in BUCKETS (--dist-bucket-mb:
# 0 = one all-reduce after the backward pass, B = c10d's Reducer with B MB
# buckets; default "0 25") and each link in LINKS (default "loopback": both
# ranks on 127.0.0.1; a rate such as "1gbit" or "10gbit": the two ranks as two
# hosts, each in its own network namespace, joined by a veth pair that tc's
# token bucket limits to that rate; needs root and iproute2), interleaved,
# ROUNDS times, MINUTES of training each, evaluating every few
# steps on a small dev sample (so each run yields many timed windows;
# evaluation time is not counted). Reports medians over the windows (each
# run's first one, warm-up, left out); then Gloo's all-reduce time over
# loopback for each model's gradient, and the scaling model
# (scripts/scaling_model.py) from those figures.
#   DATA_DIR=data [APPS="ner textgen"] [BUCKETS="0 25"] [LINKS="loopback 1gbit"] \
#     scripts/bench_distributed.sh [MINUTES] [OUT_DIR] [ROUNDS]
# Writes OUT_DIR/runs.jsonl (per app and layout: median tokens/s, ms per
# step, ms per step in the gradient exchange after the backward pass and in
# the backward pass with it, windows, parameters) and
# OUT_DIR/allreduce.jsonl, and prints the scaling table.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${DATA_DIR:-data}
minutes=${1:-1}
out=${2:-$(mktemp -d)}
rounds=${3:-2}
apps=${APPS:-sentiment ner textgen translate}
buckets=${BUCKETS:-0 25}
links=${LINKS:-loopback}
layouts=("1 2 0 loopback")
for link in $links; do
  for b in $buckets; do layouts+=("2 1 $b $link"); done
done
mkdir -p "$out"
[ -x build/bin/cellstate-textgen ] || bash scripts/setup.sh
for f in sst2/stsa.binary.train conll2003/train.txt tinyshakespeare/train.txt multi30k/train.en.gz; do
  [ -f "$data/$f" ] || { echo "bench_distributed.sh: $data/$f not found (set DATA_DIR)" >&2; exit 2; }
done
work=$(mktemp -d)
netns=cs-bench-$$
cleanup() {
  ip netns del "$netns" 2> /dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# Two hosts on one machine: this namespace (10.213.0.1 on veth csh$$) and
# $netns (10.213.0.2 on csp$$), the link limited to RATE both ways.
set_link() {  # RATE
  ip netns del "$netns" 2> /dev/null || true
  ip netns add "$netns"
  ip link add "csh$$" type veth peer name "csp$$" netns "$netns"
  ip addr add 10.213.0.1/24 dev "csh$$"
  ip link set "csh$$" up
  ip netns exec "$netns" ip addr add 10.213.0.2/24 dev "csp$$"
  ip netns exec "$netns" ip link set "csp$$" up
  ip netns exec "$netns" ip link set lo up
  local burst=256kb
  [[ $1 == *gbit && ${1%gbit} -ge 10 ]] && burst=4mb
  tc qdisc add dev "csh$$" root tbf rate "$1" burst "$burst" latency 50ms
  ip netns exec "$netns" tc qdisc add dev "csp$$" root tbf rate "$1" burst "$burst" latency 50ms
}

# The two ranks of COMMAND... as two hosts over the link set_link made
# (torchrun's variables, as on two machines); rank 0's stderr in $work/err.
run_two_hosts() {
  local port=$((20000 + RANDOM % 20000))
  local env=(WORLD_SIZE=2 LOCAL_WORLD_SIZE=1 LOCAL_RANK=0 MASTER_ADDR=10.213.0.1 MASTER_PORT=$port)
  ip netns exec "$netns" env "${env[@]}" RANK=1 GLOO_SOCKET_IFNAME="csp$$" "$@" > /dev/null 2> "$work/err1" &
  local peer=$!
  local rc=0
  env "${env[@]}" RANK=0 GLOO_SOCKET_IFNAME="csh$$" "$@" > "$work/out" 2> "$work/err" || rc=$?
  wait "$peer" || rc=$((rc ? rc : $?))
  [ "$rc" = 0 ] || cat "$work/err1" >&2
  return "$rc"
}

# Each app's recipe (scripts/train_*.sh; sentiment: one member of its first stage).
recipe() {
  case "$1" in
    sentiment) echo build/bin/cellstate-sentiment train --train "$data/sst2/stsa.binary.train" \
      --dev "$work/sst2.dev" --vocab-size 8000 --embed 128 --hidden 128 --bidirectional --layers 2 \
      --pooling max --dropout 0.5 --embed-dropout 0.3 --word-dropout 0.1 --sample-alpha 0.1 --batch-size 32 \
      --lr 0.001 --epochs 100 --eval-every 40 ;;
    ner) echo build/bin/cellstate-ner train --train "$data/conll2003/train.txt" --dev "$work/conll.dev" \
      --config "$work/ner.json" --eval-every 40 ;;
    textgen) echo build/bin/cellstate-textgen train --train "$data/tinyshakespeare/train.txt" --valid-fraction 0.01 \
      --vocab-size 2000 --spm-type unigram --layers 2 --hidden 512 --embed 512 --tie --dropout 0.4 --bptt 64 \
      --batch-size 32 --lr 0.002 --clip 1 --epochs 80 --eval-every 10 ;;
    translate) echo build/bin/cellstate-translate train --src-train "$data/multi30k/train.en.gz" \
      --tgt-train "$data/multi30k/train.de.gz" --src-dev "$work/dev.en" \
      --tgt-dev "$work/dev.de" --config "$work/translate.json" --dev-beam 1 --eval-every 10 ;;
  esac
}

# The NER and translation recipes are the JSON files their scripts write.
for app in ner translate; do
  sed -n "/<<'JSON'/,/^JSON\$/p" "scripts/train_$app.sh" | sed '1d;$d' > "$work/$app.json"
done

# A small dev sample, so evaluations between the timed windows are short.
{ zcat "$data/multi30k/val.en.gz" || true; } | head -100 > "$work/dev.en"  # (zcat stops early: SIGPIPE)
{ zcat "$data/multi30k/val.de.gz" || true; } | head -100 > "$work/dev.de"
head -200 "$data/sst2/stsa.binary.dev" > "$work/sst2.dev"
head -2000 "$data/conll2003/valid.txt" > "$work/conll.dev"

lscpu | grep -E "Model name|^CPU\(s\)" >&2
for app in $apps; do
  for round in $(seq "$rounds"); do
    for layout in "${layouts[@]}"; do
      read -r nproc threads bucket link <<< "$layout"
      model="$work/$app-$nproc-$bucket-$link-$round"
      echo "== $app, round $round: $nproc process(es) x $threads thread(s), --dist-bucket-mb $bucket, $link, $minutes min" >&2
      # shellcheck disable=SC2046
      set -- $(recipe "$app") --model "$model" --threads "$threads" --max-time "$minutes" \
        --dist-bucket-mb "$bucket" --patience 0 --checkpoint-every 0 --seed 1
      if [ "$link" = loopback ]; then
        "$@" --nproc "$nproc" > "$work/out" 2> "$work/err" || { cat "$work/err" >&2; exit 1; }
      else
        set_link "$link"
        run_two_hosts "$@" || { cat "$work/err" >&2; exit 1; }
      fi
      grep -o "model with [0-9]* parameters" "$work/err" | head -1 > "$model.parameters"
    done
  done
  /usr/bin/python3 - "$work" "$app" "$rounds" "${layouts[@]}" >> "$out/runs.jsonl" <<'PY'
import json, re, statistics, sys
work, app, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
for layout in sys.argv[4:]:
    nproc, threads, bucket, link = layout.split()
    rates, steps_ms, exchange, backward = [], [], [], []
    for r in range(1, rounds + 1):
        model = f"{work}/{app}-{nproc}-{bucket}-{link}-{r}"
        parameters = int(re.search(r"(\d+)", open(model + ".parameters").read()).group(1))
        records = [json.loads(l) for l in open(model + "/train_log.jsonl") if l.strip()]
        previous = 0
        for i, rec in enumerate(records):
            n, previous = rec["step"] - previous, rec["step"]
            if i == 0 or n < 5:  # warm-up, and a last window of a few steps
                continue
            rates.append(next(v for k, v in rec.items() if k.endswith("_per_s")))
            steps_ms.append(rec["step_ms"])
        exchange.append(records[-1].get("exchange_ms_per_step", 0.0))
        backward.append(records[-1].get("backward_ms_per_step", 0.0))
    print(json.dumps({"app": app, "processes": int(nproc), "threads": int(threads), "bucket_mb": float(bucket), "link": link,
                      "windows": len(rates), "tokens_per_s": round(statistics.median(rates), 1),
                      "step_ms": round(statistics.median(steps_ms), 2),
                      "exchange_ms_per_step": round(statistics.median(exchange), 2),
                      "backward_ms_per_step": round(statistics.median(backward), 2), "parameters": parameters}))
PY
  tail -n "${#layouts[@]}" "$out/runs.jsonl" >&2
done
sizes=$(/usr/bin/python3 -c "
import json
print(' '.join(sorted({str(json.loads(l)['parameters']) for l in open('$out/runs.jsonl')})))")
/usr/bin/python3 scripts/allreduce_bench.py $sizes > "$out/allreduce.jsonl"
cat "$out/allreduce.jsonl" >&2
/usr/bin/python3 scripts/scaling_model.py "$out/runs.jsonl" "$out/allreduce.jsonl"
echo "results in $out" >&2
