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
log=$(mktemp)
trap 'rm -f "$log"' EXIT

# corpus lists the inputs the fuzzer saved for a target (crashers among them).
corpus() { ls -1 "$1/testdata/fuzz/$2" 2>/dev/null || true; }

# fuzz_one runs one target. Go 1.26's fuzzer may end a run that found
# nothing with "context deadline exceeded" when its -fuzztime expires on a
# loaded machine (a race in its coordinator, go.dev/issue/75804, fixed in
# Go 1.27): such a run wrote no crasher, so it is run again, up to twice.
# A failing input always leaves a crasher and is never retried.
fuzz_one() {
  local pkg=$1 name=$2 try before
  for try in 1 2 3; do
    before=$(corpus "$pkg" "$name")
    if go test -run '^$' -fuzz "^${name}\$" -fuzztime "$time" -timeout "$timeout" "$pkg" 2>&1 | tee "$log"; then
      return 0
    fi
    if ! grep -q 'context deadline exceeded' "$log" || [ "$(corpus "$pkg" "$name")" != "$before" ]; then
      return 1
    fi
    echo "fuzz: $name ended with Go's fuzztime race (go.dev/issue/75804) and no crasher; run $try of 3"
  done
  return 1
}

while IFS= read -r line; do
  file=${line%%:*}
  name=$(sed -E 's/^func (Fuzz[A-Za-z0-9_]*).*/\1/' <<<"${line#*:}")
  pkg=./$(dirname "$file")
  count=$((count + 1))
  echo "fuzz: $pkg $name ($time)"
  if ! fuzz_one "$pkg" "$name"; then
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
