#!/usr/bin/env bash
# Fine-tuning (train --init-from) in every app, on the tiny fixtures:
#  - it starts from the given weights: the fine-tuning run's evaluation
#    before its first step equals the source run's evaluation of the model it
#    saved (score and dev loss), and its first step's training loss, on a
#    batch that is the whole dev file, equals that dev loss (dropout off);
#  - the tokenizer is the source's, the source is recorded in config.json,
#    the learning rate defaults to half the source's;
#  - architecture options that do not fit are refused, a model of another
#    task is refused, --freeze keeps what it names fixed and refuses what
#    the model lacks, new labels are added.
#   tests/apps/finetune.sh BIN_DIR COMPARE_WEIGHTS TEST_DATA_DIR
set -uo pipefail
bindir=$1 compare=$2 data=$3
source "$(dirname "$0")/cli_lib.sh"

# starts_from APP SOURCE_DIR FINETUNED_DIR: the checks of the first bullet above.
starts_from() {
  /usr/bin/python3 - "$@" <<'PY' || fail "$1: the fine-tuned run does not start from $2's weights"
import json, sys
app, src, ft = sys.argv[1:4]
def log(d): return [json.loads(l) for l in open(d + "/train_log.jsonl")]
s, f = log(src), log(ft)
best = [r for r in s if r["improved"]][-1]           # the evaluation of what the source saved
first, step1 = f[0], f[1]
ok = True
def close(what, a, b, rel):
    global ok
    good = abs(a - b) <= rel * max(1.0, abs(b))
    print(f"{app}: {what}: {a!r} vs {b!r} {'ok' if good else 'DIFFER'}")
    ok = ok and good
assert first["step"] == 0 and step1["step"] == 1, (first["step"], step1["step"])
close("score before fine-tuning = source's score", first["score"], best["score"], 1e-9)
def dev_loss(r): return r["dev"]["loss_per_token"] if app == "textgen" else r["dev"]["loss"]
close("dev loss before fine-tuning = source's dev loss", dev_loss(first), dev_loss(best), 1e-6)
close("first step's training loss = source's loss on that batch", step1["train_loss"], dev_loss(best), 1e-5)
config = json.load(open(ft + "/config.json"))
src_config = json.load(open(src + "/config.json"))
ok = ok and config["init_from"]["dir"] == src and config["init_from"]["task"] == src_config["task"]
ok = ok and abs(config["training"]["lr"] - src_config["training"]["lr"] / 2) < 1e-12
sys.exit(0 if ok else 1)
PY
}

# ---------------------------------------------------------------- sentiment
bin=$bindir/cellstate-sentiment
s=$tmp/sentiment.src
check "sentiment: source" 0 "$bin" train --train "$data/sentiment_tiny.tsv" --dev "$data/sentiment_tiny.tsv" \
  --model "$s" --embed 16 --hidden 16 --vocab-size 60 --epochs 6 --lr 0.01 --batch-size 4 --dropout 0 \
  --embed-dropout 0 --word-dropout 0 --threads 1 --quiet
f=$tmp/sentiment.ft
check "sentiment: fine-tune" 0 "$bin" train --train "$data/sentiment_tiny.tsv" --dev "$data/sentiment_tiny.tsv" \
  --model "$f" --init-from "$s" --eval-every 1 --epochs 1 --batch-size 32 --threads 1
contains "sentiment: coverage reported" "$tmp/err" "0 of "
contains "sentiment: starting score shown" "$tmp/err" "before training: dev accuracy"
starts_from sentiment "$s" "$f"
cmp -s "$s/tokenizer.model" "$f/tokenizer.model" || fail "sentiment: the tokenizer is not the source's"
check "sentiment: an architecture option that does not fit" 2 "$bin" train --train "$data/sentiment_tiny.tsv" \
  --dev "$data/sentiment_tiny.tsv" --model "$tmp/x" --init-from "$s" --hidden 32
contains "sentiment: misfit message" "$tmp/err" "--hidden 32 does not fit the model --init-from $s starts from, whose --hidden is 16"
check "sentiment: a flag that does not fit" 2 "$bin" train --train "$data/sentiment_tiny.tsv" \
  --dev "$data/sentiment_tiny.tsv" --model "$tmp/x" --init-from "$s" --no-bidirectional
check "sentiment: an option that fits" 0 "$bin" train --train "$data/sentiment_tiny.tsv" \
  --dev "$data/sentiment_tiny.tsv" --model "$tmp/x" --init-from "$s" --hidden 16 --epochs 1 --threads 1 --quiet
check "sentiment: --freeze without --init-from" 2 "$bin" train --train "$data/sentiment_tiny.tsv" \
  --dev "$data/sentiment_tiny.tsv" --model "$tmp/y" --freeze embeddings
contains "sentiment: --freeze message" "$tmp/err" "--freeze keeps parts of a trained model fixed: give the model with --init-from"
check "sentiment: --freeze of what the model lacks" 2 "$bin" train --train "$data/sentiment_tiny.tsv" \
  --dev "$data/sentiment_tiny.tsv" --model "$tmp/y" --init-from "$s" --freeze crf
contains "sentiment: --freeze names the parameters" "$tmp/err" "the model has embedding, encoder, output"
[ ! -e "$tmp/y" ] || fail "sentiment: a refused run left a model"
check "sentiment: --ensemble beyond the source's" 2 "$bin" train --train "$data/sentiment_tiny.tsv" \
  --dev "$data/sentiment_tiny.tsv" --model "$tmp/y" --init-from "$s" --ensemble 2
check "sentiment: --init-from nowhere" 2 "$bin" train --train "$data/sentiment_tiny.tsv" \
  --dev "$data/sentiment_tiny.tsv" --model "$tmp/y" --init-from "$tmp/nowhere"
# --freeze embeddings: the embedding stays the source's, the rest moves.
check "sentiment: --freeze embeddings" 0 "$bin" train --train "$data/sentiment_tiny.tsv" --dev "$data/sentiment_tiny.tsv" \
  --model "$tmp/frozen" --init-from "$s" --freeze embeddings --lr 0.05 --epochs 2 --patience 0 --threads 1
contains "sentiment: --freeze reported" "$tmp/err" "--freeze embeddings: 1 tensors"
# (The last weights are the checkpoint's: weights.pt holds the best, which may be the starting point.)
"$compare" "$s/weights.pt" "$tmp/frozen/checkpoint.pt" 0 embedding. > /dev/null || fail "sentiment: a frozen embedding changed"
"$compare" "$s/weights.pt" "$tmp/frozen/checkpoint.pt" 1e-4 encoder. > /dev/null && fail "sentiment: the unfrozen encoder did not change"
# A new label: the source's come first, the new one is added.
{ cat "$data/sentiment_tiny.tsv"; printf 'neutral\tit was a film\nneutral\tthe film has actors\n'; } > "$tmp/three.tsv"
check "sentiment: new label" 0 "$bin" train --train "$tmp/three.tsv" --dev "$tmp/three.tsv" --model "$tmp/three" \
  --init-from "$s" --epochs 1 --threads 1
contains "sentiment: new label reported" "$tmp/err" "new: neutral"
contains "sentiment: three labels" "$tmp/three/config.json" '"labels": [
    "neg",
    "neutral",
    "pos"'
check "sentiment: the new model predicts" 0 "$bin" predict --model "$tmp/three" "$data/predict_lines.txt"

# ---------------------------------------------------------------- NER
bin=$bindir/cellstate-ner
s=$tmp/ner.src
check "ner: source" 0 "$bin" train --train "$data/ner_tiny.conll" --dev "$data/ner_tiny.conll" --model "$s" \
  --embed 8 --hidden 8 --char-embed 4 --char-hidden 4 --piece-vocab 60 --piece-embed 4 --epochs 4 --lr 0.01 \
  --batch-size 2 --dropout 0 --rare-word-dropout 0 --threads 1 --quiet
f=$tmp/ner.ft
check "ner: fine-tune" 0 "$bin" train --train "$data/ner_tiny.conll" --dev "$data/ner_tiny.conll" --model "$f" \
  --init-from "$s" --eval-every 1 --epochs 1 --batch-size 64 --threads 1
contains "ner: coverage reported" "$tmp/err" "training words (0.00%) are unknown"
starts_from ner "$s" "$f"
cmp -s "$s/words.txt" "$f/words.txt" || fail "ner: the vocabulary is not the source's"
cmp -s "$s/tokenizer.model" "$f/tokenizer.model" || fail "ner: the piece tokenizer is not the source's"
check "ner: a feature size that does not fit" 2 "$bin" train --train "$data/ner_tiny.conll" --dev "$data/ner_tiny.conll" \
  --model "$tmp/x.ner" --init-from "$s" --char-hidden 5
contains "ner: misfit message" "$tmp/err" "--char-hidden 5 does not fit"
check "ner: a sentiment model" 2 "$bin" train --train "$data/ner_tiny.conll" --dev "$data/ner_tiny.conll" \
  --model "$tmp/x.ner" --init-from "$tmp/sentiment.src"
contains "ner: wrong task message" "$tmp/err" "expected a 'ner' model"
# New entity types: a source that never saw MISC, fine-tuned on data that has it.
sed 's/I-MISC$/O/' "$data/ner_tiny.conll" > "$tmp/nomisc.conll"
check "ner: source without MISC" 0 "$bin" train --train "$tmp/nomisc.conll" --dev "$tmp/nomisc.conll" \
  --model "$tmp/ner.nomisc" --embed 8 --hidden 8 --char-embed 4 --char-hidden 4 --piece-vocab 0 --epochs 2 \
  --threads 1 --quiet
check "ner: fine-tune with MISC" 0 "$bin" train --train "$data/ner_tiny.conll" --dev "$data/ner_tiny.conll" \
  --model "$tmp/ner.misc" --init-from "$tmp/ner.nomisc" --epochs 2 --threads 1 --freeze layers=1
contains "ner: new tags reported" "$tmp/err" "new: B-MISC E-MISC"
contains "ner: --freeze layers=1 reported" "$tmp/err" "--freeze layers=1: 8 tensors"
check "ner: the new model tags" 0 "$bin" eval --model "$tmp/ner.misc" --data "$data/ner_tiny.conll"
contains "ner: MISC evaluated" "$tmp/out" "MISC"

# ---------------------------------------------------------------- textgen
bin=$bindir/cellstate-textgen
s=$tmp/textgen.src
check "textgen: source" 0 "$bin" train --train "$data/textgen_tiny.txt" --valid "$data/textgen_tiny.txt" --model "$s" \
  --embed 16 --hidden 16 --tie --vocab-size 60 --epochs 3 --lr 0.01 --bptt 8 --batch-size 2 --dropout 0 --threads 1 \
  --quiet
f=$tmp/textgen.ft
# One stream (batch 1) of the whole text in one window: the first step's batch is what evaluation reads.
check "textgen: fine-tune" 0 "$bin" train --train "$data/textgen_tiny.txt" --valid "$data/textgen_tiny.txt" \
  --model "$f" --init-from "$s" --eval-every 1 --epochs 1 --bptt 1000 --batch-size 1 --threads 1
starts_from textgen "$s" "$f"
cmp -s "$s/tokenizer.model" "$f/tokenizer.model" || fail "textgen: the tokenizer is not the source's"
check "textgen: --no-tie does not fit a tied model" 2 "$bin" train --train "$data/textgen_tiny.txt" \
  --valid "$data/textgen_tiny.txt" --model "$tmp/x.textgen" --init-from "$s" --no-tie
check "textgen: --vocab-size that does not fit" 2 "$bin" train --train "$data/textgen_tiny.txt" \
  --valid "$data/textgen_tiny.txt" --model "$tmp/x.textgen" --init-from "$s" --vocab-size 80
contains "textgen: misfit message" "$tmp/err" "--vocab-size 80 does not fit"
check "textgen: --freeze layers beyond the model's" 2 "$bin" train --train "$data/textgen_tiny.txt" \
  --valid "$data/textgen_tiny.txt" --model "$tmp/x.textgen" --init-from "$s" --freeze layers=3
contains "textgen: --freeze layers message" "$tmp/err" "expected K in [1, 2]"

# ---------------------------------------------------------------- translate
bin=$bindir/cellstate-translate
s=$tmp/translate.src
tr_data=(--src-train "$data/translate_tiny.en" --tgt-train "$data/translate_tiny.de"
         --src-dev "$data/translate_tiny.en" --tgt-dev "$data/translate_tiny.de")
check "translate: source" 0 "$bin" train "${tr_data[@]}" --model "$s" --embed 16 --hidden 16 --vocab-size 60 \
  --epochs 4 --lr 0.01 --batch-size 2 --dropout 0 --label-smoothing 0 --threads 1 --quiet
f=$tmp/translate.ft
check "translate: fine-tune" 0 "$bin" train "${tr_data[@]}" --model "$f" --init-from "$s" --eval-every 1 \
  --epochs 1 --batch-size 64 --threads 1
starts_from translate "$s" "$f"
check "translate: --separate-vocab does not fit a joint vocabulary" 2 "$bin" train "${tr_data[@]}" --model "$tmp/x.translate" \
  --init-from "$s" --separate-vocab
check "translate: --attention that does not fit" 2 "$bin" train "${tr_data[@]}" --model "$tmp/x.translate" \
  --init-from "$s" --attention dot
contains "translate: misfit message" "$tmp/err" "--attention dot does not fit"
check "translate: fine-tuned model translates" 0 "$bin" translate --model "$f" "$data/translate_tiny.en"

[ "$fails" = 0 ] && echo "finetune: all checks passed"
exit $((fails > 0))
