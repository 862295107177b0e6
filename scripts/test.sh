#!/usr/bin/env bash
# Sets up if needed, builds, and runs every test (GoogleTest under ctest).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
ctest --test-dir build --output-on-failure -j2 "$@"
