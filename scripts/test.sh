#!/usr/bin/env bash
# Sets up if needed, builds, and runs every test (GoogleTest under ctest),
# then each fuzz target for FUZZ_SECONDS (default 20; 0 skips them).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
ctest --test-dir build --output-on-failure -j2 "$@"
if [ "${FUZZ_SECONDS:-20}" != 0 ]; then bash scripts/fuzz.sh --time "${FUZZ_SECONDS:-20}"; fi
