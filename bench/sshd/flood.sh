#!/usr/bin/env bash
# bench/sshd/flood.sh: does a real OpenSSH login get through a flood of
# stalled handshakes? avsidecar's embedded SSH server against OpenSSH's
# sshd on the same machine in the same run, both with their defaults.
#
# Two floods (bench/sshd/flood: connections that send a version line, or
# nothing with MODE=silent, then fall silent; each one the server closes
# is opened again at once):
#   same:  128 connections from 127.0.0.1, the address every `kubectl
#          port-forward` user arrives from; the login comes from 127.0.0.1
#   other: 16 connections from each of 127.0.0.2-5; the login comes from
#          127.0.0.6
# Once the flood holds its slots, TRIES logins (`ssh -b SOURCE ... true`)
# run one after the other; the figure is the share that logged in.
#
# Usage: bench/sshd/flood.sh                 (from the repository root)
#        TRIES=200 MODE=silent bench/sshd/flood.sh
#        BEFORE=<git revision> bench/sshd/flood.sh   (also the harness of that revision)
# Needs: go, OpenSSH (ssh, sshd, ssh-keygen), git for BEFORE. Run as root
# (sshd wants /run/sshd).
set -euo pipefail

TRIES=${TRIES:-100}
MODE=${MODE:-banner}
BEFORE=${BEFORE:-}
W=$(mktemp -d /tmp/sshd-flood.XXXXXX)
. "$(dirname "$0")/lib.sh"

go build -o "$W/harness" ./bench/sshd
go build -o "$W/flood" ./bench/sshd/flood
if [ -n "$BEFORE" ]; then
	mkdir "$W/before-src"
	git archive "$BEFORE" | tar -x -C "$W/before-src"
	(cd "$W/before-src" && go build -o "$W/harness-before" ./bench/sshd)
fi
setup_keys

# start_server NAME: starts it on a free port; sets PORT and SERVER.
start_server() {
	PORT=$(free_port)
	case $1 in
	avsidecar | avsidecar-before)
		local bin=$W/harness
		[ "$1" = avsidecar-before ] && bin=$W/harness-before
		"$bin" -addr "127.0.0.1:$PORT" -keys "$W/authorized_keys" -hostkeys "$W/state" >"$W/$1.out" &
		SERVER=$!
		wait_for grep -q ready "$W/$1.out"
		;;
	openssh)
		write_sshd_config
		/usr/sbin/sshd -D -f "$W/sshd_config" -p "$PORT" &
		SERVER=$!
		wait_for sh -c "ss -ltn | grep -q '127.0.0.1:$PORT '"
		;;
	esac
	PIDS+=("$SERVER")
}

CLIENT=(-F /dev/null -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes
	-o LogLevel=ERROR -o IdentitiesOnly=yes -o IdentityAgent=none -o ConnectTimeout=10 -i "$W/id")

# measure SERVER_NAME FLOOD_NAME: one line of results.
measure() {
	local name=$1 flood=$2 sources conns ready user
	case $flood in
	same) sources=127.0.0.1 conns=128 user=127.0.0.1 ready=16 ;;
	other) sources=127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5 conns=16 user=127.0.0.6 ready=64 ;;
	esac
	# OpenSSH's MaxStartups 10:30:100 counts every address together.
	[ "$name" = openssh ] && [ "$flood" = same ] && ready=100
	start_server "$name"
	"$W/flood" -addr "127.0.0.1:$PORT" -sources "$sources" -conns "$conns" -mode "$MODE" -ready "$ready" >"$W/flood.out" &
	local flooder=$!
	PIDS+=("$flooder")
	wait_for grep -q ready "$W/flood.out"
	local ok=0 first=0 start end
	start=$(date +%s.%N)
	for i in $(seq "$TRIES"); do
		if ssh "${CLIENT[@]}" -b "$user" -p "$PORT" root@127.0.0.1 true </dev/null 2>/dev/null; then
			ok=$((ok + 1))
			[ "$first" = 0 ] && first=$i
		fi
	done
	end=$(date +%s.%N)
	kill "$flooder"
	wait "$flooder" || true
	kill "$SERVER"
	wait "$SERVER" || true
	awk -v n="$name" -v f="$flood" -v ok="$ok" -v t="$TRIES" -v first="$first" -v s="$start" -v e="$end" \
		-v fl="$(grep attempts "$W/flood.out")" 'BEGIN {
		printf "%-16s %-5s logins %3d/%d (%.0f%%)  first at try %s  %.1f s  flood: %s\n",
			n, f, ok, t, 100 * ok / t, (first ? first : "-"), e - s, fl
	}'
}

echo "## logins through a flood of stalled handshakes ($MODE), $TRIES tries each"
servers=(avsidecar openssh)
[ -n "$BEFORE" ] && servers=(avsidecar-before avsidecar openssh)
for flood in same other; do
	for name in "${servers[@]}"; do
		measure "$name" "$flood"
	done
done
