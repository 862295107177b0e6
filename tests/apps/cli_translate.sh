#!/usr/bin/env bash
# End-to-end checks of the cellstate-translate command line: a tiny model
# learns its sentences, eval's BLEU, translate's formats, bad inputs.
#   tests/cli_translate.sh BINARY TEST_DATA_DIR SOURCE_DIR
set -uo pipefail
bin=$1 data=$2 src=$3
source "$(dirname "$0")/cli_lib.sh"

check "help" 0 "$bin" --help
contains "help lists commands" "$tmp/out" "translate"
check "train --help" 0 "$bin" train --help
contains "train --help shows defaults" "$tmp/out" "--label-smoothing arg (=0.1)"
check "bad beam" 2 "$bin" translate --beam 0
contains "bad beam message" "$tmp/err" "--beam must be in [1, 64]"
check "nbest over beam" 2 "$bin" translate --beam 2 --nbest 3
contains "nbest message" "$tmp/err" "--nbest must be in [1, --beam]"
check "missing model" 2 "$bin" translate --model "$tmp/nowhere" "$data/translate_tiny.en"
contains "missing model message" "$tmp/err" "nowhere: no such model directory"
check "mismatched line counts" 2 "$bin" train --src-train "$data/parallel_short.en" --tgt-train "$data/parallel.de" \
  --src-dev "$data/translate_tiny.en" --tgt-dev "$data/translate_tiny.de" --model "$tmp/x"
contains "line count message" "$tmp/err" "has 2 lines but"
check "every pair over --max-words" 2 "$bin" train --src-train "$data/translate_tiny.en" \
  --tgt-train "$data/translate_tiny.de" --src-dev "$data/translate_tiny.en" --tgt-dev "$data/translate_tiny.de" \
  --model "$tmp/x" --max-words 3
contains "max-words message" "$tmp/err" "no sentence pairs left (8 dropped (too long); the limit is 3 words a side)"

m="$tmp/model"
check "train tiny" 0 "$bin" train --src-train "$data/translate_tiny.en" --tgt-train "$data/translate_tiny.de" \
  --src-dev "$data/translate_tiny.en" --tgt-dev "$data/translate_tiny.de" --model "$m" --vocab-size 40 \
  --embed 32 --hidden 32 --dropout 0 --label-smoothing 0 --batch-size 4 --lr 0.01 --epochs 80 --patience 0 \
  --lr-schedule constant --threads 1
contains "train reports BLEU" "$tmp/err" "dev BLEU 100.00"
check "eval" 0 "$bin" eval --model "$m" --src "$data/translate_tiny.en" --ref "$data/translate_tiny.de" --beam 1
contains "eval BLEU line" "$tmp/out" "BLEU = 100.00"
contains "eval chrF" "$tmp/out" "chrF2 = 100.00"
check "translate greedy" 0 "$bin" translate --model "$m" --beam 1 "$data/translate_tiny.en"
cmp -s "$tmp/out" "$data/translate_tiny.de" || fail "greedy translations differ from the references"
# Short names: --model NAME finds the shipped model translate-DATASET-NAME.
shipped="$tmp/shipped"
mkdir -p "$shipped" && cp -r "$m" "$shipped/translate-tiny-en-de" && cp -r "$m" "$shipped/translate-tiny-en-xx"
check "translate --model SHORT_NAME" 0 env CELLSTATE_MODELS="$shipped" "$bin" translate --model en-xx --beam 1 \
  "$data/translate_tiny.en"
cmp -s "$tmp/out" "$data/translate_tiny.de" || fail "--model en-xx: translations differ"
check "translate --model DATASET-NAME" 0 env CELLSTATE_MODELS="$shipped" "$bin" eval --model tiny-en-de --beam 1 \
  --src "$data/translate_tiny.en" --ref "$data/translate_tiny.de"
contains "eval through a short name" "$tmp/out" "BLEU = 100.00"
check "unknown short name" 2 env CELLSTATE_MODELS="$shipped" "$bin" translate --model fr-xx "$data/translate_tiny.en"
contains "unknown short name message" "$tmp/err" "--model fr-xx: no such directory, and no shipped translate model is named so (shipped: en-de, en-xx)"
check "models" 0 env CELLSTATE_MODELS="$shipped" "$bin" models
contains "models lists en-de" "$tmp/out" "translate-tiny-en-de"
contains "models shows dev BLEU" "$tmp/out" "dev_bleu 100"
contains "models shows the data" "$tmp/out" "translate_tiny.en -> "
check "models --json" 0 env CELLSTATE_MODELS="$shipped" "$bin" models --json
[ "$(grep -c '"name":"en-xx"' "$tmp/out")" = 1 ] || fail "models --json: no en-xx line"
check "builtin encoder, same translations" 0 "$bin" translate --model "$m" --impl builtin --beam 1 "$data/translate_tiny.en"
cmp -s "$tmp/out" "$data/translate_tiny.de" || fail "--impl builtin translations differ"
check "translate beam" 0 "$bin" translate --model "$m" --beam 4 "$data/translate_tiny.en"
[ "$(wc -l < "$tmp/out")" = 8 ] || fail "beam: expected 8 lines"
contains "beam translation" "$tmp/out" "ein hund isst ."
check "stdin with an empty line" 0 bash -c "printf 'a dog is eating .\n\na man is running .\n' | '$bin' translate --model '$m'"
[ "$(cat "$tmp/out")" = "$(printf 'ein hund isst .\n\nein mann rennt .')" ] || fail "stdin: got '$(cat "$tmp/out")'"
check "jsonl nbest" 0 bash -c "echo 'a dog is eating .' | '$bin' translate --model '$m' --format jsonl --beam 3 --nbest 2 --attention-weights"
contains "jsonl has attention" "$tmp/out" '"attention":[['
contains "jsonl best text" "$tmp/out" '"text":"ein hund isst ."'
check "jsonl without attention" 0 bash -c "echo 'a dog is eating .' | '$bin' translate --model '$m' --format jsonl"
grep -q '"attention"' "$tmp/out" && fail "jsonl: attention without --attention-weights"
contains "jsonl joined translation" "$tmp/out" '"translation":"ein hund isst ."'
check "several sentences, blank and whitespace lines" 0 bash -c "printf 'a dog is eating . a dog is eating .\n\n   \n' | '$bin' translate --model '$m'"
[ "$(sed -n 1p "$tmp/out")" = "ein hund isst . ein hund isst ." ] || fail "two sentences on a line: got '$(sed -n 1p "$tmp/out")'"
[ "$(wc -l < "$tmp/out")" = 3 ] && [ -z "$(sed -n 2,3p "$tmp/out" | tr -d '\n')" ] || fail "blank and whitespace-only lines must give empty lines"
check "sampling" 0 bash -c "echo 'a dog is eating .' | '$bin' translate --model '$m' --sample --top-k 3 --temperature 0.5 --seed 4"
cp "$tmp/out" "$tmp/sample1"
check "sampling, old spelling" 0 bash -c "echo 'a dog is eating .' | '$bin' translate --model '$m' --sample-topk 3 --temperature 0.5 --seed 4"
cmp -s "$tmp/out" "$tmp/sample1" || fail "--sample-topk 3 must mean --sample --top-k 3"
contains "old spelling warned" "$tmp/err" "--sample-topk is deprecated: write --top-k --sample"
check "sampling option without --sample" 2 "$bin" translate --model "$m" --top-k 3
contains "sampling option message" "$tmp/err" "apply only with --sample"
check "text nbest" 0 bash -c "echo 'a dog is eating .' | '$bin' translate --model '$m' --beam 3 --nbest 2"
[ "$(wc -l < "$tmp/out")" = 2 ] || fail "--nbest 2 in text mode: 2 lines per input"
grep -qP '^-?[0-9]+\.[0-9]{4}\tein hund isst \.$' "$tmp/out" || fail "text nbest: SCORE<TAB>TEXT lines"
check "attention svg" 0 bash -c "printf 'a dog is eating .\n<b> & \"x\"\n' | '$bin' translate --model '$m' --attention-svg '$tmp/svg'"
[ -s "$tmp/svg/1.svg" ] && [ -s "$tmp/svg/2.svg" ] || fail "attention svg: files missing"
contains "svg document" "$tmp/svg/1.svg" "<svg xmlns="
contains "svg escapes" "$tmp/svg/2.svg" "&lt;"
# A sentence far longer than anything trained on still gives one line: its
# first 256 pieces (the model's max_source_tokens) translated, with a warning.
long=$(for i in $(seq 100); do printf 'a dog is running '; done)
check "over-long input" 0 bash -c "printf '%s\nend\n' '$long' | '$bin' translate --model '$m' --beam 2"
[ "$(wc -l < "$tmp/out")" = 2 ] || fail "over-long input: expected 2 lines"
contains "over-long input warning" "$tmp/err" "pieces; only the first 256 (the model's limit) are translated"
check "bench" 0 "$bin" bench --model "$m" --src "$data/translate_tiny.en" --singles 2
contains "bench output" "$tmp/out" "sentences/s"
# --dump-ids: the model's inputs (and with --tgt the targets) for the Python
# peer, which loads the same weights, searches the same way (it must find the
# same best beam-5 hypotheses) and trains, where Debian's Python has PyTorch.
check "bench --dump-ids --tgt" 0 "$bin" bench --model "$m" --src "$data/translate_tiny.en" --singles 1 \
  --tgt "$data/translate_tiny.de" --dump-ids "$tmp/ids.json"
contains "dump has source, beam-5 and target ids" "$tmp/ids.json" '"sentences":[{"beam5":['
contains "dump has targets" "$tmp/ids.json" '"target":[2,'
contains "dump has the config" "$tmp/ids.json" '"seq2seq":{'
check "bench --tgt without --dump-ids" 2 "$bin" bench --model "$m" --src "$data/translate_tiny.en" --tgt "$data/translate_tiny.de"
contains "tgt without dump message" "$tmp/err" "--tgt is read only with --dump-ids"
check "bench --tgt line count" 2 "$bin" bench --model "$m" --src "$data/translate_tiny.en" --tgt "$data/parallel_short.en" \
  --dump-ids "$tmp/bad.json"
contains "tgt line count message" "$tmp/err" "parallel_short.en:3: expected as many lines as"
if /usr/bin/python3 -c "import torch" 2>/dev/null; then
  check "python peer translates and trains" 0 /usr/bin/python3 "$src/bench/translate_python.py" "$tmp/ids.json" \
    --weights "$m/weights.pt" --train-ids "$tmp/ids.json" --threads 1 --singles 2 --train-steps 2 --train-batch 4
  contains "python peer reports" "$tmp/out" '"train_tokens_per_s"'
  contains "python peer searched as cellstate did" "$tmp/out" '"beam5_same_as_cellstate": 1.0'
fi
check "invalid utf-8" 2 "$bin" translate --model "$m" "$data/invalid_utf8.txt"
contains "invalid utf-8 message" "$tmp/err" "invalid_utf8.txt:2: invalid UTF-8"

if [ -f "$src/models/translate-multi30k-en-de/weights.pt" ]; then
  check "shipped model" 0 "$bin" translate --threads 1 "$src/models/samples/translate/sentences.en"
  [ "$(wc -l < "$tmp/out")" = 6 ] || fail "shipped model: expected 6 lines"
  contains "shipped model translates" "$tmp/out" "Hund"
fi
for pair in "en-fr:chiens" "en-cs:psi"; do  # the other shipped directions, by their short names
  if [ -f "$src/models/translate-multi30k-${pair%%:*}/weights.pt" ]; then
    echo "Two dogs are playing in the snow." > "$tmp/dogs.en"
    check "shipped ${pair%%:*}" 0 "$bin" translate --threads 1 --model "${pair%%:*}" "$tmp/dogs.en"
    contains "shipped ${pair%%:*} translates" "$tmp/out" "${pair#*:}"
  fi
done
if [ -f "$src/models/translate-multi30k-de-en/weights.pt" ]; then  # and the one into English
  echo "Zwei Hunde spielen im Schnee." > "$tmp/dogs.de"
  check "shipped de-en" 0 "$bin" translate --threads 1 --model de-en "$tmp/dogs.de"
  contains "shipped de-en translates" "$tmp/out" "dogs"
  check "models lists de-en" 0 "$bin" models
  contains "models lists de-en" "$tmp/out" "translate-multi30k-de-en"
fi
answers_each_line "translate answers each line of a pipe at once" "A man is riding a bike." "Two dogs play in the snow." \
  "$bin" translate --threads 1
check "version" 0 "$bin" --version
contains "version" "$tmp/out" "cellstate-translate 0."
[ "$fails" = 0 ] && echo "all cellstate-translate CLI checks passed"
exit "$fails"
