#!/usr/bin/env bash
# The whole test suite: setup (idempotent), build, then unit (no root), integration
# (root, real network namespaces) and end-to-end tests (the lab).
# The last line is the plain summary "N passed, N failed" (skipped tests are counted on the line above).
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || { echo "setup failed"; echo "0 passed, 1 failed"; exit 1; }
export PATH="$PWD/node_modules/.bin:$PATH"

dirs=(dist/test/unit dist/test/integration dist/test/e2e)
[ $# -gt 0 ] && dirs=("$@")
log=$(mktemp /tmp/skiff-test.XXXXXX)
# Coverage is collected over the compiled JS (mapped back to TypeScript) and
# reported; a threshold is not enforced.
tap --reporter=tap --allow-incomplete-coverage --coverage-report=text-summary \
    --timeout=1800 --jobs=2 "${dirs[@]}" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}

tally=$(grep -E '^# \{ total: ' "$log" | tail -1)
# Repeat the failures (with their diagnostics) just above the summary, so a
# truncated CI log still names what failed.
if grep -q 'not ok' "$log"; then
  echo "# failures:"
  grep -n -A 14 'not ok' "$log" | head -300
fi
rm -f "$log"
num() { echo "$tally" | grep -oE "$1: [0-9]+" | grep -oE '[0-9]+' || echo 0; }
pass=$(num pass); fail=$(num fail); skip=$(num skip)
if [ -z "$tally" ]; then fail=$((fail + 1)); fi
if [ "$rc" -ne 0 ] && [ "$fail" -eq 0 ]; then fail=1; fi
echo "${skip} skipped"
echo "${pass} passed, ${fail} failed"
[ "$fail" -eq 0 ]
