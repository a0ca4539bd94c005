#!/bin/sh
# Image size and memory of the running sidecar, against the whitepaper's
# recipe (an image with rpm and sshd, started by run.sh) built on the same
# base with the same client RPM.
#   bench/image/run.sh          (root, from the repository root; podman, runc, go)
#
# avsidecar's numbers come from the podman integration test, which builds
# the project's Dockerfile and the site image and runs the pod of nginx and
# the sidecar; it prints "bench:" lines. The peer is built and run here.
# Memory is VmRSS of every process in the container's PID namespace, read
# from the host's /proc once the container is serving.
set -eu
OUT=${BENCH_DIR:-/tmp/bench-image}
rm -rf "$OUT" && mkdir -p "$OUT/peer"
cat > "$OUT/containers.conf" <<'CONF'
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
CONF
export CONTAINERS_CONF="$OUT/containers.conf"
BASE=localhost/debian:bookworm
TAG=$$

# ns_rss CONTAINER: "name rss_kB pss_kB" for every process in its PID
# namespace (PSS counts pages shared between processes once in a sum).
ns_rss() {
	pid=$(podman inspect -f '{{.State.Pid}}' "$1")
	ns=$(readlink "/proc/$pid/ns/pid")
	for p in /proc/[0-9]*; do
		[ "$(readlink "$p/ns/pid" 2>/dev/null)" = "$ns" ] || continue
		n=$(awk '/^Name:/ {print $2}' "$p/status" 2>/dev/null) || continue
		rss=$(awk '/^VmRSS:/ {print $2}' "$p/status")
		pss=$(awk '/^Pss:/ {print $2}' "$p/smaps_rollup")
		echo "$n $rss $pss"
	done | sort
}

echo "== avsidecar (go test -run TestPodmanPod ./integration)"
if ! go test -count=1 -run TestPodmanPod -v ./integration > "$OUT/test.log" 2>&1; then
	tail -40 "$OUT/test.log"
	echo "the integration test failed; numbers above may be partial" >&2
fi
grep -o 'bench: .*' "$OUT/test.log" || true

echo "== peer: the whitepaper's image (rpm + openssh-server + run.sh)"
go build -o "$OUT/avkit" ./cmd/avkit
"$OUT/avkit" rpm -o "$OUT/peer" > /dev/null
cat > "$OUT/peer/run.sh" <<'SH'
rpm -ivh /tmp/AvamarClient-*.rpm
echo "--iplist=$NODE_IP" > /usr/local/avamar/var/avagent.cmd
/etc/init.d/avagent register "$AVAMAR_SERVER" "/clients"
/usr/sbin/sshd -D
SH
cat > "$OUT/peer/Containerfile" <<EOF2
FROM $BASE
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends rpm openssh-server \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /run/sshd && ssh-keygen -A
COPY AvamarClient-*.rpm /tmp/
COPY run.sh /run.sh
CMD ["/bin/sh", "/run.sh"]
EOF2
PEER=localhost/avsidecar-bench-peer:$TAG
podman build -q -t "$PEER" "$OUT/peer" > /dev/null
echo "bench: image=peer size_bytes=$(podman image inspect -f '{{.Size}}' "$PEER")"

NET=avs-bench-$TAG
podman network create "$NET" > /dev/null
cleanup() {
	podman rm -f -t 0 "avs-bench-mcs-$TAG" "avs-bench-peer-$TAG" > /dev/null 2>&1 || true
	podman network rm -f "$NET" > /dev/null 2>&1 || true
	podman rmi -f "$PEER" > /dev/null 2>&1 || true
}
trap cleanup EXIT
podman run -d --name "avs-bench-mcs-$TAG" --network "$NET" -v "$OUT/avkit:/usr/local/bin/avkit:ro" \
	"$BASE" /usr/local/bin/avkit mcs --addr :28001 > /dev/null
MCS_IP=$(podman inspect -f "{{(index .NetworkSettings.Networks \"$NET\").IPAddress}}" "avs-bench-mcs-$TAG")
podman run -d --name "avs-bench-peer-$TAG" --network "$NET" -e AVAMAR_SERVER="$MCS_IP" -e NODE_IP=127.0.0.1 \
	"$PEER" > /dev/null
# Serving once sshd runs: run.sh starts it last. Bounded wait, no event to
# wait on in the peer.
i=0
until ns_rss "avs-bench-peer-$TAG" | grep -q '^sshd '; do
	i=$((i + 1)); [ $i -lt 600 ] || { podman logs "avs-bench-peer-$TAG"; exit 1; }
	sleep 0.1
done
ns_rss "avs-bench-peer-$TAG" | awk '{print "bench: peer process=" $1 " rss_kib=" $2 " pss_kib=" $3; r += $2; p += $3} END {print "bench: peer total_rss_kib=" r " total_pss_kib=" p}'
