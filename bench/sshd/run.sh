#!/usr/bin/env bash
# bench/sshd/run.sh: avsidecar's embedded SSH server against OpenSSH's sshd
# on the same machine in the same run.
#
#   1. sftp download of a 1 GiB file to /dev/null from each server, with the
#      same client and the same options (hyperfine, both orders to spread
#      the noise of a shared machine over both servers);
#   2. resident memory (VmRSS) the embedded server adds: the harness with
#      -noserver, then idle, then with 10 open sessions.
#
# Usage: bench/sshd/run.sh            (from the repository root)
#        RUNS=3 SIZE=256M bench/sshd/run.sh
#        PEER_SFTP=internal-sftp bench/sshd/run.sh   (sftp inside sshd's process)
#        CIPHER=aes128-gcm@openssh.com bench/sshd/run.sh
# Needs: go, hyperfine, jq, OpenSSH (ssh, sftp, sshd, ssh-keygen). Run as
# root (sshd wants /run/sshd).
set -euo pipefail

RUNS=${RUNS:-5}
SIZE=${SIZE:-1G}
BUF=${BUF:-262144}
REQS=${REQS:-64}
PEER_SFTP=${PEER_SFTP:-/usr/lib/openssh/sftp-server}
CIPHER=${CIPHER:-}
W=$(mktemp -d /tmp/sshd-bench.XXXXXX)
. "$(dirname "$0")/lib.sh"

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

# cpu_ticks PID: CPU time of a process and of its waited-for children
# (sshd's per-connection processes and sftp-server), in clock ticks. Less
# sensitive than wall time to the other load of a shared machine.
cpu_ticks() { awk '{print $14 + $15 + $16 + $17}' "/proc/$1/stat"; }

go build -o "$W/harness" ./bench/sshd
setup_keys

A=$(free_port)
"$W/harness" -addr "127.0.0.1:$A" -keys "$W/authorized_keys" -hostkeys "$W/state" >"$W/harness.out" &
PIDS+=($!)
HARNESS=$!

B=$(free_port)
write_sshd_config "Subsystem sftp $PEER_SFTP"
/usr/sbin/sshd -D -f "$W/sshd_config" -p "$B" &
PIDS+=($!)
SSHD=$!

wait_for grep -q ready "$W/harness.out"
wait_for sh -c "ss -ltn | grep -q '127.0.0.1:$B '"

head -c "$SIZE" /dev/urandom >"$W/big"
echo "get $W/big /dev/null" >"$W/batch"

CLIENT="-F /dev/null -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR -o IdentitiesOnly=yes -i $W/id"
SFTP="sftp $CLIENT -B $BUF -R $REQS -b $W/batch"
if [ -n "$CIPHER" ]; then SFTP="$SFTP -c $CIPHER"; fi
echo "## sftp download of $SIZE, $RUNS runs each, peer sftp: $PEER_SFTP"
echo "client: $SFTP -P PORT root@127.0.0.1"
cpu_a0=$(cpu_ticks "$HARNESS")
cpu_b0=$(cpu_ticks "$SSHD")
hyperfine --warmup 1 --runs "$RUNS" --export-json "$W/ab.json" \
	-n avsidecar "$SFTP -P $A root@127.0.0.1" -n openssh "$SFTP -P $B root@127.0.0.1"
hyperfine --warmup 1 --runs "$RUNS" --export-json "$W/ba.json" \
	-n openssh "$SFTP -P $B root@127.0.0.1" -n avsidecar "$SFTP -P $A root@127.0.0.1"

cpu_a1=$(cpu_ticks "$HARNESS")
cpu_b1=$(cpu_ticks "$SSHD")

bytes=$(stat -c %s "$W/big")
# Each server served 2 * (RUNS + 1 warmup) downloads.
awk -v a=$((cpu_a1 - cpu_a0)) -v b=$((cpu_b1 - cpu_b0)) -v n=$((2 * (RUNS + 1))) -v bytes="$bytes" -v hz="$(getconf CLK_TCK)" 'BEGIN {
	gib = n * bytes / 1073741824
	printf "server CPU per GiB sent: avsidecar %.2f s, openssh %.2f s (sshd + sftp-server)\n", a / hz / gib, b / hz / gib
}'

jq -s -r --argjson bytes "$bytes" '
	[.[].results[]] | group_by(.command) | map({name: .[0].command, times: (map(.times) | add)})
	| map(.mean = ((.times | add) / (.times | length)))
	| map(.mibs = ($bytes / 1048576 / .mean)) as $r
	| ($r | map("\(.name): mean \(.mean * 1000 | round / 1000) s over \(.times | length) runs, \(.mibs | round) MiB/s") | .[]),
	  "throughput ratio avsidecar/openssh: \((($r[] | select(.name == "avsidecar") | .mibs) / ($r[] | select(.name == "openssh") | .mibs)) * 100 | round / 100)"
' "$W/ab.json" "$W/ba.json"

echo "## resident memory (VmRSS)"
# A fresh harness for idle numbers: the one above has served 1 GiB.
"$W/harness" -noserver >"$W/base.out" &
PIDS+=($!)
BASE=$!
C=$(free_port)
"$W/harness" -addr "127.0.0.1:$C" -keys "$W/authorized_keys" -hostkeys "$W/state" >"$W/fresh.out" &
PIDS+=($!)
FRESH=$!
wait_for grep -q ready "$W/base.out"
wait_for grep -q ready "$W/fresh.out"
base=$(rss_kb "$BASE")
idle=$(rss_kb "$FRESH")
for i in $(seq 10); do
	ssh $CLIENT -p "$C" root@127.0.0.1 'echo up; exec sleep 600' >"$W/session.$i" </dev/null &
	PIDS+=($!)
done
wait_for sh -c "[ \$(cat $W/session.* | grep -c up) -eq 10 ]"
ten=$(rss_kb "$FRESH")
echo "harness without server: ${base} KiB"
echo "server idle:            ${idle} KiB (adds $((idle - base)) KiB)"
echo "server, 10 sessions:    ${ten} KiB (adds $((ten - base)) KiB, $(((ten - idle) / 10)) KiB per session)"
