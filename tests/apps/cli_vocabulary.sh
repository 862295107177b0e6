#!/usr/bin/env bash
# Checks every app's --help against the shared vocabulary (cli/vocabulary.h):
# each option a command lists has a name from the vocabulary, of the same
# kind (a flag lists --NAME and --no-NAME and takes no value; any other
# option takes one); every vocabulary entry is used by some command; use
# commands show the shipped model's default (usage "[--model DIR]").
#   tests/apps/cli_vocabulary.sh VOCABULARY_BINARY APP_BINARY...
set -uo pipefail
vocabulary_bin=$1
shift
source "$(dirname "$0")/cli_lib.sh"

"$vocabulary_bin" > "$tmp/vocabulary" || { echo "FAIL: $vocabulary_bin"; exit 1; }
declare -A kind used range
while IFS=$'\t' read -r name k _ r; do
  [ -n "${kind[$name]:-}" ] && fail "vocabulary lists --$name twice"
  kind[$name]=$k
  range[$name]=$r
done < "$tmp/vocabulary"
[ "${#kind[@]}" -gt 50 ] || fail "vocabulary has only ${#kind[@]} entries"

# Option lines of Boost's help: "  --name arg (=x)  text", "  -q [ --quiet ]  text".
options_of() {  # HELP_FILE -> "name value|flag" lines
  grep -oE '^  (-[a-zA-Z] \[ )?--[a-z0-9-]+( \])?( arg)?' "$1" |
    sed -E 's/^  (-[a-zA-Z] \[ )?--([a-z0-9-]+)( \])?( arg)?$/\2 \4/' |
    awk '{print $1, ($2 == "arg" ? "value" : "flag")}'
}

commands=0
for app in "$@"; do
  program=$(basename "$app")
  "$app" --help > "$tmp/app_help" 2>&1 || fail "$program --help"
  subcommands=$(sed -n '/^Commands:/,$p' "$tmp/app_help" | awk 'NR > 1 && NF {print $1}')
  # An app without subcommands (cellstate-serve) is one command: "." here.
  grep -q '^Usage: ' "$tmp/app_help" && [ -z "$subcommands" ] && subcommands=.
  [ -n "$subcommands" ] || fail "$program --help lists no commands"
  for sub in $subcommands; do
    commands=$((commands + 1))
    if [ "$sub" = . ]; then
      where=$program
      cp "$tmp/app_help" "$tmp/help"
    else
      where="$program $sub"
      "$app" "$sub" --help > "$tmp/help" 2>&1 || { fail "$where --help exits non-zero"; continue; }
    fi
    options_of "$tmp/help" > "$tmp/options"
    # A numeric option needs a range in the vocabulary (checked at parse time);
    # --seed takes any 64-bit number.
    for name in $(grep -oE '^  --[a-z0-9-]+ arg \(=-?[0-9]+(\.[0-9]+)?(e[+-]?[0-9]+)?\)' "$tmp/help" | sed -E 's/^  --([a-z0-9-]+).*/\1/'); do
      [ "$name" = seed ] && continue
      [ "${range[$name]:--}" = - ] && fail "$where: --$name takes a number but has no range in the vocabulary"
    done
    [ -s "$tmp/options" ] || fail "$where --help lists no options"
    while read -r name k; do
      base=$name
      if [ "${name#no-}" != "$name" ] && [ -n "${kind[${name#no-}]:-}" ]; then
        base=${name#no-}
        [ "$k" = flag ] || fail "$where: --$name takes a value"
        [ "${kind[$base]}" = flag ] || fail "$where: --$name, but --$base is not a flag in the vocabulary"
        continue
      fi
      if [ -z "${kind[$name]:-}" ]; then
        fail "$where: --$name is not in the shared vocabulary (lib/src/cli/vocabulary.cpp)"
        continue
      fi
      used[$name]=1
      if [ "$k" != "${kind[$name]}" ]; then
        fail "$where: --$name is a $k here but a ${kind[$name]} in the vocabulary"
      elif [ "$k" = flag ] && [ "$name" != help ] && ! grep -qx "no-$name flag" "$tmp/options"; then
        fail "$where: the flag --$name has no --no-$name"
      fi
    done < "$tmp/options"
    # Use commands load the shipped model by default: --model is optional there
    # (train and seal write or rewrite a directory the user names).
    if [ "$sub" != train ] && [ "$sub" != seal ] && grep -q -- '--model arg' "$tmp/help"; then
      head -1 "$tmp/help" | grep -q -- '--model DIR' && ! head -1 "$tmp/help" | grep -qF -- '[--model DIR]' &&
        fail "$where: usage line makes --model look required (it defaults to the shipped model)"
    fi
  done
done
[ "$commands" -ge 16 ] || fail "only $commands commands checked"
for name in "${!kind[@]}"; do
  [ -n "${used[$name]:-}" ] || fail "vocabulary entry --$name is used by no command"
done

[ "$fails" = 0 ] && echo "cli vocabulary: $commands commands checked against ${#kind[@]} options"
exit $((fails > 0))
