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
answers_each_line() {  # DESCRIPTION FIRST_LINE SECOND_LINE COMMAND...
  # Drives COMMAND through a pipe that stays open: the answer to the first
  # line must come out before the second line is written (so another program
  # can use the command as a subprocess, one line at a time).
  local what=$1 first=$2 second=$3
  shift 3
  local fifo="$tmp/stdin.fifo"
  rm -f "$fifo" && mkfifo "$fifo"
  # The command's redirections open only once the FIFO has a writer (below),
  # so its output file is made first: polling must not race its creation.
  : > "$tmp/stream.out"
  "$@" < "$fifo" >> "$tmp/stream.out" 2> "$tmp/stream.err" &
  local pid=$!
  exec 7> "$fifo"
  printf '%s\n' "$first" >&7
  local tries=0
  while [ "$(wc -l < "$tmp/stream.out")" -lt 1 ] && [ "$tries" -lt 300 ] && kill -0 "$pid" 2> /dev/null; do
    sleep 0.1
    tries=$((tries + 1))
  done
  local answered
  answered=$(wc -l < "$tmp/stream.out")
  printf '%s\n' "$second" >&7
  exec 7>&-
  wait "$pid"
  local status=$?
  [ "$answered" -ge 1 ] || fail "$what: no answer to the first line within 30 s while the input stayed open"
  [ "$status" = 0 ] || { fail "$what: exit $status"; sed 's/^/  stderr: /' "$tmp/stream.err" | head -5; }
  [ "$(wc -l < "$tmp/stream.out")" -gt "$answered" ] || fail "$what: no answer to the second line"
}
