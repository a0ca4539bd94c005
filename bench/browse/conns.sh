#!/bin/sh
# What idle keep-alive connections cost the server and whether an
# IdleTimeout closes them: CONNS connections send one /v1/roots each and
# stay idle for HOLD; VmRSS of the server is read before, when all are
# idle, and after HOLD. Run once without IdleTimeout (avsidecar run today
# sets only ReadHeaderTimeout) and once with IDLE. Then what large headers
# cost, with and without MaxHeaderBytes (below).
#   bench/browse/conns.sh        (needs curl, go; from the repo)
set -eu
B=${BENCH_DIR:-/tmp/bb}
CONNS=${CONNS:-8000}
IDLE=${IDLE:-60s}
HOLD=${HOLD:-65s}
PORT=${PORT:-9185}
go build -o "$B/bsrv" ./bench/browse/server
go build -o "$B/idle" ./bench/browse/idle
mkdir -p "$B/connsroot"
SRV=
trap '[ -z "$SRV" ] || kill $SRV 2>/dev/null' EXIT
rss() { awk '/VmRSS/ {print $2}' /proc/$SRV/status; }
for idle in 0 "$IDLE"; do
	"$B/bsrv" -addr 127.0.0.1:$PORT -roots "$B/connsroot" -idle-timeout "$idle" & SRV=$!
	until curl -sf -o /dev/null "http://127.0.0.1:$PORT/v1/roots"; do
		kill -0 $SRV 2>/dev/null || { echo "server did not start" >&2; exit 1; }
	done
	before=$(rss)
	"$B/idle" -addr 127.0.0.1:$PORT -conns "$CONNS" -hold "$HOLD" | while read -r line; do
		echo "idle-timeout=$idle: $line; server VmRSS $(rss) kB (before: $before kB)"
	done
	kill $SRV
	wait $SRV 2>/dev/null || true
	SRV=
done

# Large headers: HCONNS connections each send one header line of HBYTES
# and never end the request, against Go's default MaxHeaderBytes (1 MB)
# and against MAXHDR; VmRSS while they are held and peak RSS after.
HCONNS=${HCONNS:-300}
HBYTES=${HBYTES:-1000000}
MAXHDR=${MAXHDR:-65536}
for mh in 0 "$MAXHDR"; do
	"$B/bsrv" -addr 127.0.0.1:$PORT -roots "$B/connsroot" -max-header-bytes "$mh" & SRV=$!
	until curl -sf -o /dev/null "http://127.0.0.1:$PORT/v1/roots"; do
		kill -0 $SRV 2>/dev/null || { echo "server did not start" >&2; exit 1; }
	done
	before=$(rss)
	"$B/idle" -addr 127.0.0.1:$PORT -conns "$HCONNS" -header-bytes "$HBYTES" -hold 8s | while read -r line; do
		echo "max-header-bytes=$mh: $line; server VmRSS $(rss) kB, VmHWM $(awk '/VmHWM/ {print $2}' /proc/$SRV/status) kB (before: $before kB)"
	done
	kill $SRV
	wait $SRV 2>/dev/null || true
	SRV=
done

# A cap on connections that never blocks accept (bench/browse/server
# -max-conns: past the cap a new connection closes the oldest idle one):
# CONNS connections as above, with and without MAXCONNS, and whether a new
# request is still served at once.
MAXCONNS=${MAXCONNS:-512}
for mc in 0 "$MAXCONNS"; do
	"$B/bsrv" -addr 127.0.0.1:$PORT -roots "$B/connsroot" -idle-timeout "$IDLE" -max-header-bytes "$MAXHDR" -max-conns "$mc" & SRV=$!
	until curl -sf -o /dev/null "http://127.0.0.1:$PORT/v1/roots"; do
		kill -0 $SRV 2>/dev/null || { echo "server did not start" >&2; exit 1; }
	done
	before=$(rss)
	"$B/idle" -addr 127.0.0.1:$PORT -conns "$CONNS" -hold 5s | while read -r line; do
		echo "max-conns=$mc: $line; server VmRSS $(rss) kB (before: $before kB); a new request: $(curl -s -o /dev/null -w '%{http_code} in %{time_total}s' "http://127.0.0.1:$PORT/v1/roots")"
	done
	kill $SRV
	wait $SRV 2>/dev/null || true
	SRV=
done
