#!/bin/sh
# Peak RSS of the server while walking trees of 10k, 100k and 1M entries
# through /v1/walk: a fresh server per tree, VmHWM read after the walk.
#   bench/browse/mem.sh             (needs curl, go)
set -eu
B=${BENCH_DIR:-/tmp/bb}
go build -o "$B/bsrv" ./bench/browse/server
for n in 10k:10000 100k:100000 1m:1000000; do
	name=${n%%:*} files=${n#*:}
	DIR=$B/mem$name
	[ -d "$DIR" ] || go run ./bench/browse/mktree -dir "$DIR" -files "$files"
	"$B/bsrv" -addr 127.0.0.1:9183 -roots "$DIR" & SRV=$!
	until curl -sf -o /dev/null "http://127.0.0.1:9183/v1/roots"; do :; done
	idle=$(awk '/VmHWM/ {print $2}' /proc/$SRV/status)
	lines=$(curl -sf "http://127.0.0.1:9183/v1/walk?path=$DIR" | wc -l)
	peak=$(awk '/VmHWM/ {print $2}' /proc/$SRV/status)
	echo "$name: $lines entries, peak RSS before walk ${idle} kB, after walk ${peak} kB"
	kill $SRV
	wait $SRV 2>/dev/null || true
done
