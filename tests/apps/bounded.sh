#!/usr/bin/env bash
# Bounded work and bad usage: every numeric option is range-checked when the
# command line is parsed (exit 2, one line), inputs have caps, and no option
# or input line can make a command take unbounded time or memory.
#   tests/apps/bounded.sh BIN_DIR TEST_DATA_DIR SOURCE_DIR
set -uo pipefail
bin=$1 data=$2 src=$3
source "$(dirname "$0")/cli_lib.sh"
s=$bin/cellstate-sentiment t=$bin/cellstate-translate n=$bin/cellstate-ner g=$bin/cellstate-textgen
refused() {  # DESCRIPTION EXPECTED_MESSAGE COMMAND...
  local what=$1 message=$2
  shift 2
  check "$what" 2 "$@" < /dev/null
  contains "$what: message" "$tmp/err" "$message"
  [ "$(wc -l < "$tmp/err")" = 1 ] || fail "$what: expected a one-line error, got $(wc -l < "$tmp/err") lines"
}
tiny=(--train "$data/sentiment_tiny.tsv" --dev "$data/sentiment_tiny.tsv" --model "$tmp/m" --threads 1 --quiet)

# Ranges, NaN and absurd values, at parse time.
refused "--batch-size 0" "--batch-size must be in [1, 65536], got 0" "$t" eval --src "$data/translate_tiny.en" \
  --ref "$data/translate_tiny.de" --batch-size 0
refused "--word-dropout 2" "--word-dropout must be in [0, 1), got 2" "$s" train "${tiny[@]}" --word-dropout 2
refused "--threshold nan" "--threshold must be in [0, 1], got nan" "$s" predict --threshold nan
refused "--sample-alpha -1" "--sample-alpha must be in [0, 1], got -1" "$s" train "${tiny[@]}" --sample-alpha -1
refused "--beam 1000" "--beam must be in [1, 64], got 1000" "$t" translate --beam 1000
refused "--beam 100000" "--beam must be in [1, 64]" "$t" translate --beam 100000
refused "--lr inf" "--lr must be in (0, 100], got inf" "$s" train "${tiny[@]}" --lr inf
refused "--temperature 0" "--temperature must be in (0, 100], got 0" "$g" generate --temperature 0
refused "--threads 100000" "--threads must be in [0, 4096], got 100000" "$s" predict --threads 100000
cores=$(nproc)
refused "--threads 4 x cores + 1" "--threads must be at most $((4 * cores))" "$s" predict --threads $((4 * cores + 1))
refused "--max-tokens -5" "--max-tokens must be in [1, 1000000], got -5" "$g" generate --max-tokens -5
refused "--hidden 0" "--hidden must be in [1, 65536], got 0" "$s" train "${tiny[@]}" --hidden 0
printf '{"epochs": -3}\n' > "$tmp/bad.json"
refused "a range in --config" "--epochs must be in [1, 1000000], got -3" "$s" train "${tiny[@]}" --config "$tmp/bad.json"

# Bad usage that used to be an internal error or silently accepted.
refused "--teacher without --augment-spans" "--teacher labels --augment-spans spans per text" \
  "$s" train "${tiny[@]}" --teacher "$tmp/nowhere"
refused "--augment-spans without --teacher" "--augment-spans needs a --teacher" "$s" train "${tiny[@]}" --augment-spans 2
refused "--teacher missing" "--teacher $tmp/nowhere: no such model directory" \
  "$s" train "${tiny[@]}" --teacher "$tmp/nowhere" --augment-spans 2
refused "unlabelled text as training data" "text.txt:1: expected labelled text: LABEL<TAB>TEXT (found no tab)" \
  "$s" train --train "$data/text.txt" --dev "$data/text.txt" --model "$tmp/m" --quiet
printf 'a fine film\rthe worst\r' > "$tmp/cr.txt"
refused "CR-only line endings" "cr.txt:1: a carriage return inside the line" "$s" predict "$tmp/cr.txt"
refused "--min-word-count above every count" "--min-word-count 100000: no training word occurs that often" \
  "$n" train --train "$data/ner_tiny.conll" --dev "$data/ner_tiny.conll" --model "$tmp/n" --min-word-count 100000 --quiet
refused "--attention-svg on a file" "--attention-svg: exists and is not a directory" \
  "$t" translate --attention-svg /dev/null "$data/translate_tiny.en"
refused "--attention-svg in a missing tree" "--attention-svg: its parent directory $tmp/no/such does not exist" \
  "$t" translate --attention-svg "$tmp/no/such/dir" "$data/translate_tiny.en"
[ -e "$tmp/no" ] && fail "--attention-svg created a directory tree"
check "--attention-svg makes one directory" 0 "$t" translate --attention-svg "$tmp/svg" --beam 1 "$data/translate_tiny.en"
[ -f "$tmp/svg/1.svg" ] || fail "--attention-svg: no $tmp/svg/1.svg"

# A config.json promising impossible sizes (edited by hand, loaded with --no-verify).
cp -r "$src/models/textgen-shakespeare" "$tmp/tg"
/usr/bin/python3 - "$tmp/tg/config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c["model"]["hidden"] = -1
json.dump(c, open(sys.argv[1], "w"))
PY
refused "hidden -1 in a config" 'config.json: config: "hidden" must be in [1, 65536], got -1' \
  "$g" generate --model "$tmp/tg" --no-verify --prompt x

# One absurd word or line costs time linear in its length.
/usr/bin/python3 -c "print('Paris ' + 'x' * 100000 + ' Berlin')" > "$tmp/long_word.txt"
check "a 100,000-character word" 0 timeout 60 "$n" predict --input-format raw --threads 1 "$tmp/long_word.txt"
contains "long word warned" "$tmp/err" "long_word.txt:1: a word of 100000 characters; its character features read only its first and last 32"
contains "long word tagged" "$tmp/out" '"text":"Berlin"'
printf 'Paris\n%s\n' "$(head -c 10000 /dev/zero | tr '\0' 'y')" > "$tmp/long_conll.txt"
check "a 10,000-character word in CoNLL input" 0 timeout 60 "$n" predict --input-format conll --threads 1 "$tmp/long_conll.txt"
contains "conll long word warned" "$tmp/err" "long_conll.txt:1: a word of 10000 characters"  # the sentence's line
/usr/bin/python3 -c "print(' '.join(['the king'] * 50000))" > "$tmp/long_line.txt"
check "textgen eval of a 450 KB line" 0 timeout 300 "$g" eval --data "$tmp/long_line.txt" --threads 1 --quiet
contains "long line evaluated" "$tmp/out" "bits/char"

# A line over the 1 MiB cap on input lines is cut at a character boundary,
# with a FILE:LINE warning, and the next line is read as usual.
/usr/bin/python3 -c "print('a good film ' + 'é' * 1200000); print('fine')" > "$tmp/huge_line.txt"
check "sentiment on a 2.4 MB line" 0 timeout 120 "$s" predict --threads 1 "$tmp/huge_line.txt"
contains "huge line warned" "$tmp/err" "huge_line.txt:1: a line of 2400012 bytes, cut to its first 1048576 (input lines are capped at 1048576 bytes)"
contains "the next line answered" "$tmp/out" "huge_line.txt	2	"
check "translate on a 2.4 MB line" 0 timeout 300 "$t" translate --threads 1 --beam 1 "$tmp/huge_line.txt"
contains "translate huge line warned" "$tmp/err" "huge_line.txt:1: a line of 2400012 bytes, cut to its first 1048576"

[ "$fails" = 0 ] && echo "all bounded-work checks passed"
exit "$fails"
