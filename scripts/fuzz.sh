#!/usr/bin/env bash
# Runs every fuzz target of the module for a bounded time each.
# Usage: scripts/fuzz.sh [duration]   (default 10s per target)
# A target that fails leaves its crasher under the package's
# testdata/fuzz/<target>/ (commit it as a regression input after the fix);
# the script goes on with the others and exits 1, naming the failures.
set -euo pipefail
cd "$(dirname "$0")/.."
time=${1:-10s}
# A hung target (or a build that never ends) must not hold CI: each run
# gets the fuzz time plus room for the build and the seed corpus.
timeout=${FUZZ_TIMEOUT:-10m}
failed=()
count=0
while IFS= read -r line; do
  file=${line%%:*}
  name=$(sed -E 's/^func (Fuzz[A-Za-z0-9_]*).*/\1/' <<<"${line#*:}")
  pkg=./$(dirname "$file")
  count=$((count + 1))
  echo "fuzz: $pkg $name ($time)"
  if ! go test -run '^$' -fuzz "^${name}\$" -fuzztime "$time" -timeout "$timeout" "$pkg"; then
    failed+=("$pkg $name")
  fi
done < <(grep -rE --include='*_test.go' '^func Fuzz[A-Za-z0-9_]*\(' . | sed -E 's#^\./##' | sort)
if [ "$count" -eq 0 ]; then
  echo "fuzz: no fuzz targets found" >&2
  exit 1
fi
if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz: ${#failed[@]} of $count targets failed:" >&2
  printf '  %s\n' "${failed[@]}" >&2
  exit 1
fi
echo "fuzz: $count targets ran $time each without a failure"
