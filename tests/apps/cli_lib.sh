# Helpers for the command-line test scripts (sourced). Sets $tmp (removed on
# exit) and counts failures in $fails.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
check() {  # DESCRIPTION EXPECTED_STATUS COMMAND... ; output in $tmp/out, $tmp/err
  local what=$1 want=$2
  shift 2
  "$@" > "$tmp/out" 2> "$tmp/err"
  local got=$?
  if [ "$got" != "$want" ]; then
    echo "FAIL: $what: exit $got, expected $want"; sed 's/^/  stderr: /' "$tmp/err" | head -5; fails=$((fails + 1))
  fi
}
contains() {  # DESCRIPTION FILE TEXT
  grep -qF -- "$3" "$2" || { echo "FAIL: $1: '$3' not in $2:"; head -5 "$2" | sed 's/^/  /'; fails=$((fails + 1)); }
}
fail() {  # MESSAGE
  echo "FAIL: $1"; fails=$((fails + 1))
}
