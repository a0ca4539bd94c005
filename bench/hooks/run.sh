#!/usr/bin/env bash
# Fault injection of the freeze lease: for each fault, how long a real
# MariaDB stays frozen (the longest stall of a writer committing one
# transaction at a time) when its read lock is held by a session hook of
# the real sidecar (PID 1), with max_freeze 5s. Needs root, MariaDB
# (mariadb-server) and util-linux's unshare; results go in BENCHMARKS.md.
#
#   bench/hooks/run.sh          # 20 runs of each case
#   RUNS=3 bench/hooks/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
AVSIDECAR_HOOK_FAULTS="${RUNS:-20}" go test -count=1 -v -timeout 60m -run '^TestHookFaults$' ./integration/ |
  grep -E '^\s+(\||max_freeze)|^(--- |ok|FAIL)' | sed -E 's/^\s+//'
