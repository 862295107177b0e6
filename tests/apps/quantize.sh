#!/usr/bin/env bash
# int8 model directories (dynamic quantization): `quantize` writes one from
# a shipped model, every use command loads it and runs int8 products by
# default, its quality stays near the float model's, and what cannot work is
# refused with a one-line error.
#   tests/apps/quantize.sh BIN_DIR TEST_DATA_DIR
set -uo pipefail
bin=$1 data=$2
source "$(dirname "$0")/cli_lib.sh"
textgen="$bin/cellstate-textgen" ner="$bin/cellstate-ner"

json_value() {  # FILE KEY: a top-level number of a JSON object
  /usr/bin/python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"
}

# --- textgen: the shipped model, quantized
q="$tmp/textgen-int8"
check "textgen quantize" 0 "$textgen" quantize --model shakespeare --output "$q"
contains "quantize reports the sizes" "$tmp/err" "MB, int8)"
contains "config says int8" "$q/config.json" '"dtype": "int8"'
[ -f "$q/MANIFEST.json" ] && [ -f "$q/tokenizer.model" ] || fail "quantized model incomplete"
shipped=$("$textgen" models --json | /usr/bin/python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m["name"] == "shakespeare": print(m["directory"])')
[ -n "$shipped" ] || fail "no shipped textgen model found"
before=$(stat -c %s "$shipped/weights.pt") after=$(stat -c %s "$q/weights.pt")
# The shipped weights are float16: int8 halves them (a quarter of float32).
[ $((after * 10)) -lt $((before * 6)) ] || fail "int8 weights $after bytes, float16 ones $before"

check "eval fp32" 0 "$textgen" eval --model shakespeare --data "$data/text.txt" --json --threads 1
cp "$tmp/out" "$tmp/fp32.json"
check "eval int8 (the default for an int8 model)" 0 "$textgen" eval --model "$q" --data "$data/text.txt" --json --threads 1
cp "$tmp/out" "$tmp/int8.json"
/usr/bin/python3 - "$tmp/fp32.json" "$tmp/int8.json" <<'PY' || fail "int8 eval not within 0.01 nats/char of fp32"
import json, sys
a, b = (json.load(open(p))["nats_per_char"] for p in sys.argv[1:3])
print(f"fp32 {a:.4f} int8 {b:.4f}")
sys.exit(0 if abs(a - b) <= 0.01 else 1)
PY
check "bench int8" 0 "$textgen" bench --model "$q" --tokens 20 --threads 1 --json
[ "$(json_value "$tmp/out" precision)" = int8 ] || fail "bench of an int8 model did not run int8 products"
check "bench int8 model at fp32" 0 "$textgen" bench --model "$q" --tokens 20 --threads 1 --json --precision fp32
[ "$(json_value "$tmp/out" precision)" = fp32 ] || fail "--precision fp32 not honoured"
check "generate" 0 "$textgen" generate --model "$q" --prompt "ROMEO:" --max-tokens 10 --seed 1
[ -s "$tmp/out" ] || fail "int8 generate printed nothing"

# --- refusals
check "output exists" 2 "$textgen" quantize --model shakespeare --output "$q"
contains "output exists: says so" "$tmp/err" "--overwrite"
check "overwrite" 0 "$textgen" quantize --model shakespeare --output "$q" --overwrite
check "output is the model" 2 "$textgen" quantize --model "$q" --output "$q"
contains "output is the model: says so" "$tmp/err" "another directory"
check "no output" 2 "$textgen" quantize --model shakespeare
check "not a model" 2 "$textgen" quantize --model "$tmp/nowhere" --output "$tmp/x"
check "another task's model" 2 "$ner" quantize --model "$q" --output "$tmp/x"
check "train at int8" 2 "$textgen" train --train "$data/textgen_tiny.txt" --model "$tmp/t" --precision int8
contains "train at int8: says why" "$tmp/err" "int8 is for use commands"
check "unknown precision" 2 "$textgen" eval --model "$q" --data "$data/text.txt" --precision int4
contains "unknown precision: lists them" "$tmp/err" "fp32, bf16 or int8"
# A CPU without int8 kernels (oneDNN told to use SSE4.1 only) refuses int8
# instead of computing it slowly; bf16 falls back to fp32 with a warning.
check "int8 on a CPU without it" 2 env DNNL_MAX_CPU_ISA=SSE41 "$textgen" eval --model "$q" --data "$data/text.txt"
contains "int8 on a CPU without it: says so" "$tmp/err" "int8 precision needs a CPU with AVX2 or AVX-512"
check "bf16 on a CPU without it" 0 env DNNL_MAX_CPU_ISA=SSE41 "$textgen" eval --model shakespeare --data "$data/text.txt" --precision bf16
contains "bf16 on a CPU without it: warns" "$tmp/err" "computing in fp32"
# A damaged int8 weights file is refused by the manifest (and, unverified,
# by the archive check): one line, no crash.
cp -r "$q" "$tmp/damaged"
printf '\x7f' | dd of="$tmp/damaged/weights.pt" bs=1 seek=5000 conv=notrunc status=none
check "damaged int8 weights" 2 "$textgen" eval --model "$tmp/damaged" --data "$data/text.txt"
contains "damaged int8 weights: names the file" "$tmp/err" "weights.pt"

# --- ner: another app's model round-trips, same entities
check "ner quantize (the shipped model by default)" 0 "$ner" quantize --output "$tmp/ner-int8"
check "ner predict fp32" 0 "$ner" predict --model conll2003 --threads 1 "$data/ner_raw.txt"
cp "$tmp/out" "$tmp/ner_fp32.txt"
check "ner predict int8" 0 "$ner" predict --model "$tmp/ner-int8" --threads 1 "$data/ner_raw.txt"
[ -s "$tmp/out" ] || fail "int8 tagging printed nothing"
[ "$(wc -l < "$tmp/out")" = "$(wc -l < "$tmp/ner_fp32.txt")" ] || fail "int8 tagging: not the lines fp32 tagging gave"
cmp -s "$tmp/ner_fp32.txt" "$tmp/out" || echo "note: int8 tags differ from fp32 on the fixture"

if [ "$fails" -ne 0 ]; then echo "$fails failure(s)"; exit 1; fi
echo "quantize: all checks passed"
