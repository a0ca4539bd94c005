#!/bin/sh
# Peak RSS (VmHWM) of the browse server, a fresh server per case.
#
# walk: one /v1/walk of trees of 10k, 100k and 1M entries through curl.
# list: C clients (1, 5, 50, 200) listing one 200,000-entry directory at
#       once for SECS seconds with wrk (pages of 1000, so every listing
#       expiry of the cache makes all of them miss together), with the cache
#       on (default) and off (-cache-dirs -1); wrk's non-2xx count is the
#       answers refused by the in-flight cap (503).
#   bench/browse/mem.sh [walk|list]     (needs curl, wrk, go; from the repo)
#   SRV_BIN=/path/to/server  compares another build of bench/browse/server
set -eu
B=${BENCH_DIR:-/tmp/bb}
SECS=${SECS:-10}
PORT=${PORT:-9183}
BIN=${SRV_BIN:-$B/bsrv}
[ -n "${SRV_BIN:-}" ] || go build -o "$BIN" ./bench/browse/server

SRV=
trap '[ -z "$SRV" ] || kill $SRV 2>/dev/null' EXIT
start() {
	"$BIN" -addr 127.0.0.1:$PORT "$@" & SRV=$!
	until curl -sf -o /dev/null "http://127.0.0.1:$PORT/v1/roots"; do
		kill -0 $SRV 2>/dev/null || { echo "server did not start" >&2; exit 1; }
	done
}
stop() {
	kill $SRV
	wait $SRV 2>/dev/null || true
	SRV=
}
hwm() { awk '/VmHWM/ {print $2}' /proc/$SRV/status; }

walk() {
	for n in 10k:10000 100k:100000 1m:1000000; do
		name=${n%%:*} files=${n#*:}
		DIR=$B/mem$name
		[ -d "$DIR" ] || go run ./bench/browse/mktree -dir "$DIR" -files "$files"
		start -roots "$DIR"
		idle=$(hwm)
		lines=$(curl -sf "http://127.0.0.1:$PORT/v1/walk?path=$DIR" | wc -l)
		echo "walk $name: $lines entries, peak RSS before walk ${idle} kB, after walk $(hwm) kB"
		stop
	done
}

list() {
	DIR=$B/flat200k
	[ -d "$DIR" ] || go run ./bench/browse/mktree -dir "$DIR" -files 200000 -per-dir 200000
	for cache in on off; do
		for c in ${CLIENTS:-1 5 50 200}; do
			if [ $cache = on ]; then start -roots "$DIR" -max-limit 1000; else start -roots "$DIR" -max-limit 1000 -cache-dirs -1; fi
			idle=$(hwm)
			out=$(wrk -t$(( c < 2 ? 1 : 2 )) -c"$c" -d"${SECS}s" --timeout 60s "http://127.0.0.1:$PORT/v1/files?path=$DIR&limit=1000")
			reqs=$(echo "$out" | awk '/requests in/ {print $1}')
			non2xx=$(echo "$out" | awk '/Non-2xx/ {print $NF}')
			echo "list cache=$cache clients=$c: peak RSS idle ${idle} kB, under load $(hwm) kB; $reqs answers, ${non2xx:-0} non-2xx"
			stop
		done
	done
}

case ${1:-all} in
walk) walk ;;
list) list ;;
all) walk; list ;;
*) echo "usage: $0 [walk|list]" >&2; exit 2 ;;
esac
