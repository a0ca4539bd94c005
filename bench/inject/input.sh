#!/usr/bin/env bash
# What kubectl avamar inject holds for a large input: the peak RSS and time
# of this tree's kubectl-avamar and of a peer built from another commit
# (default: a2cdda3, before input was capped), on a 15 MiB manifest (the
# nginx StatefulSet and 2 KB ConfigMaps, under the cap), a 64 MiB one
# (over it) and /dev/zero (this tree only: the peer reads it until memory
# runs out). Usage: bash bench/inject/input.sh [PEER-COMMIT]
set -euo pipefail
cd "$(dirname "$0")/../.."
peer=${1:-a2cdda3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

go build -o "$work/new" ./cmd/kubectl-avamar
git archive "$peer" | (mkdir "$work/peer-src" && tar x -C "$work/peer-src")
(cd "$work/peer-src" && go build -o "$work/peer" ./cmd/kubectl-avamar)

manifest() { # FILE BYTES
	cp examples/kustomize/nginx/statefulset.yaml "$1"
	local doc i=0 x
	x=$(head -c 2000 /dev/zero | tr '\0' x)
	while [ "$(stat -c %s "$1")" -lt "$2" ]; do
		doc=""
		for _ in $(seq 1 100); do
			doc+=$'---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-'$i$'\ndata:\n  k: "'$x$'"\n'
			i=$((i + 1))
		done
		printf '%s' "$doc" >>"$1"
	done
}
manifest "$work/15m.yaml" $((15 << 20))
manifest "$work/64m.yaml" $((64 << 20))

run() { # NAME BINARY INPUT
	/usr/bin/time -f "$1 $(basename "$3"): %e s, max RSS %M KiB, exit %x" \
		"$2" inject --image site:1 -f "$3" >/dev/null 2>"$work/err" || true
	tail -1 "$work/err"
}
for input in "$work/15m.yaml" "$work/64m.yaml"; do
	run peer "$work/peer" "$input"
	run new "$work/new" "$input"
done
run new "$work/new" /dev/zero
ls -l "$work/new" "$work/peer" | awk '{print $5, $NF}'
