#!/bin/sh
# Cold walk of a 200,000-file tree: avsidecar /v1/walk (NDJSON through
# curl) against find -printf '%p %s\n', page cache dropped before each run.
#   bench/browse/walk.sh            (needs root, hyperfine, curl, go)
set -eu
B=${BENCH_DIR:-/tmp/bb}
DIR=$B/walk200k
RUNS=${RUNS:-5}
[ -d "$DIR" ] || go run ./bench/browse/mktree -dir "$DIR" -files 200000
go build -o "$B/bsrv" ./bench/browse/server
"$B/bsrv" -addr 127.0.0.1:9182 -roots "$DIR" ${WORKERS:+-workers $WORKERS} & SRV=$!
trap 'kill $SRV' EXIT
until curl -sf -o /dev/null "http://127.0.0.1:9182/v1/roots"; do :; done
echo "lines: find $(find "$DIR" -printf '%p %s\n' | wc -l) walk $(curl -s "http://127.0.0.1:9182/v1/walk?path=$DIR" | wc -l)"
hyperfine --runs "$RUNS" --prepare 'sync; echo 3 > /proc/sys/vm/drop_caches' \
	-n find "find $DIR -printf '%p %s\n' > /dev/null" \
	-n avsidecar-walk "curl -sf 'http://127.0.0.1:9182/v1/walk?path=$DIR' > /dev/null"
echo "warm:"
hyperfine --runs "$RUNS" --warmup 1 \
	-n find "find $DIR -printf '%p %s\n' > /dev/null" \
	-n avsidecar-walk "curl -sf 'http://127.0.0.1:9182/v1/walk?path=$DIR' > /dev/null"
