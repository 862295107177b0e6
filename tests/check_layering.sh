#!/usr/bin/env bash
# check_layering.sh [ROOT]: fails (exit 1) when a folder of the library
# includes one above it, or Boost outside cli/. The layers, bottom up:
#
#   util
#   dist (data-parallel communication: c10d)
#   nn (+ data/tag_scheme.h)   data   decode   eval (+ data/tag_scheme.h)   train (+ dist)
#   models (nn, decode/step_model.h)
#   tasks (all of the above)            bench (util, nn)
#   cli (tasks and below; the only user of Boost.ProgramOptions)
#   serve (tasks and below, and cli/vocabulary.h for the options' ranges)
#
# A folder may include itself and what its line lists; lib/src/FOLDER sees
# what lib/include/cellstate/FOLDER sees.
set -u
root=${1:-$(cd "$(dirname "$0")/.." && pwd)}
declare -A allowed=(
  [util]="util"
  [nn]="util nn data/tag_scheme.h"
  [data]="util data"
  [decode]="util decode"
  [eval]="util eval data/tag_scheme.h"
  [dist]="util dist"
  [train]="util dist train"
  [models]="util nn models decode/step_model.h"
  [tasks]="util dist nn data decode eval train models tasks"
  [bench]="util nn bench"
  [cli]="util dist nn data decode eval train models tasks cli"
  [serve]="util dist nn data decode eval train models tasks serve cli/vocabulary.h"
)
status=0
checked=0
for folder in "${!allowed[@]}"; do
  for dir in "$root/lib/include/cellstate/$folder" "$root/lib/src/$folder"; do
    [ -d "$dir" ] || continue
    while IFS= read -r -d '' file; do
      checked=$((checked + 1))
      while IFS=: read -r line target; do
        ok=0
        for a in ${allowed[$folder]}; do
          case "$target" in "$a"/*|"$a") ok=1 ;; esac
        done
        if [ "$ok" = 0 ]; then
          echo "layering: ${file#"$root"/}:$line: $folder/ includes cellstate/$target (allowed: ${allowed[$folder]})"
          status=1
        fi
      done < <(grep -n '#include "cellstate/' "$file" | sed -E 's|^([0-9]+):.*#include "cellstate/([^"]+)".*|\1:\2|')
      if [ "$folder" != cli ] && grep -qn '#include <boost/' "$file"; then
        echo "layering: ${file#"$root"/}: Boost outside cli/"
        status=1
      fi
    done < <(find "$dir" -name '*.h' -print0 -o -name '*.cpp' -print0)
  done
done
# Every folder of the library must be one the table knows.
for dir in "$root"/lib/include/cellstate/*/; do
  folder=$(basename "$dir")
  [ -n "${allowed[$folder]+x}" ] || { echo "layering: lib/include/cellstate/$folder/ is not in the layer table"; status=1; }
done
[ "$checked" -gt 0 ] || { echo "layering: no library files under $root"; exit 1; }
[ "$status" = 0 ] && echo "layering: $checked files, every include points down"
exit $status
