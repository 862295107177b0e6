#!/usr/bin/env bash
# check_layering_selftest.sh CHECKER: the layering check passes on a tree
# that respects the layers and fails, naming the file, on one where util/
# includes tasks/ (so the check itself cannot silently pass everything).
set -u
checker=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/lib/include/cellstate/util" "$tmp/lib/include/cellstate/tasks" "$tmp/lib/src/util"
printf '#pragma once\n#include "cellstate/util/text.h"\n' > "$tmp/lib/include/cellstate/util/io.h"
printf '#pragma once\n#include "cellstate/util/io.h"\n' > "$tmp/lib/include/cellstate/tasks/task.h"
bash "$checker" "$tmp" > "$tmp/good.out" || { echo "FAIL: a layered tree was rejected:"; cat "$tmp/good.out"; exit 1; }
printf '#include "cellstate/tasks/task.h"\n' > "$tmp/lib/src/util/io.cpp"
if bash "$checker" "$tmp" > "$tmp/bad.out"; then
  echo "FAIL: util/ including tasks/ was accepted"; exit 1
fi
grep -q "lib/src/util/io.cpp:1: util/ includes cellstate/tasks/task.h" "$tmp/bad.out" ||
  { echo "FAIL: the violation was not named:"; cat "$tmp/bad.out"; exit 1; }
printf '#include <boost/program_options.hpp>\n' > "$tmp/lib/src/util/io.cpp"
if bash "$checker" "$tmp" > "$tmp/boost.out"; then echo "FAIL: Boost in util/ was accepted"; exit 1; fi
echo "layering check: accepts the layered tree, rejects an upward include and Boost outside cli/"
