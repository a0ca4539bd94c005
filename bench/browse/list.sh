#!/bin/sh
# Listing a 10,000-entry directory repeatedly: avsidecar /v1/files against
# nginx autoindex_format json, both with wrk on 127.0.0.1.
#   bench/browse/list.sh            (needs nginx, wrk, go; run from the repo)
set -eu
B=${BENCH_DIR:-/tmp/bb}
DIR=$B/list/big10k
SECS=${SECS:-10}
[ -d "$DIR" ] || go run ./bench/browse/mktree -dir "$DIR" -files 10000 -per-dir 10000
go build -o "$B/bsrv" ./bench/browse/server
sed -e "s|@DIR@|$B|g" -e "s|@PORT@|9190|" -e "s|@ROOT@|$B/list|" bench/browse/nginx.conf.in > "$B/nginx.conf"
nginx -c "$B/nginx.conf" & NGINX=$!
"$B/bsrv" -addr 127.0.0.1:9181 -roots "$B/list" -max-limit 10000 & SRV=$!
"$B/bsrv" -addr 127.0.0.1:9184 -roots "$B/list" -max-limit 10000 -cache-dirs -1 & NOCACHE=$!
trap 'kill $NGINX $SRV $NOCACHE' EXIT
until curl -sf -o /dev/null http://127.0.0.1:9190/ && curl -sf -o /dev/null "http://127.0.0.1:9181/v1/roots"; do :; done
full="http://127.0.0.1:9181/v1/files?path=$DIR&limit=10000"
page="http://127.0.0.1:9181/v1/files?path=$DIR"
echo "bytes: nginx $(curl -s http://127.0.0.1:9190/big10k/ | wc -c) avsidecar-full $(curl -s "$full" | wc -c) avsidecar-page $(curl -s "$page" | wc -c)"
nocache="http://127.0.0.1:9184/v1/files?path=$DIR&limit=10000"
until curl -sf -o /dev/null "$nocache"; do :; done
for u in "http://127.0.0.1:9190/big10k/" "$full" "$page" "$nocache"; do
	echo "== $u"
	wrk -t2 -c16 -d"${SECS}s" "$u" | grep -E 'Requests/sec|Latency|Transfer'
done
