#!/bin/sh
# Benchmark of `avsidecar install` (the receipt's syncfs on, as in
# production) against `rpm -i --root --nodeps --noscripts` on the same
# packages, in the same hyperfine run, and of a start with a matching
# receipt. Run from the repository root as root; needs rpmbuild, rpm and
# hyperfine. Results go to $OUT (default /tmp/avsidecar-bench-install).
#
#   bench/install/run.sh                       # everything
#   RUNS=5 bench/install/run.sh                # fewer hyperfine runs
#   PAYLOADS=bin COMPRESSIONS=xz bench/install/run.sh
#   PROFILE=1 bench/install/run.sh             # CPU profiles, no hyperfine
#   BUILD_ONLY=1 bench/install/run.sh          # build the packages, run nothing
#   BEFORE=/tmp/avsidecar-old bench/install/run.sh
#                                              # another avsidecar binary in the
#                                              # same hyperfine runs (before/after)
#
# Two payloads of real files from this machine, so that sizes and
# compressibility are real:
#   bin   120 MB of real binaries: the regular files under /usr/bin,
#         /usr/sbin and /usr/lib/x86_64-linux-gnu smaller than 30 MB, in
#         name order, until 120 MB;
#   tree  a 15,000-file source tree: the Go distribution's src, test,
#         api, doc, misc and lib directories.
# Three payload compressions, as rpmbuild names them: gzip (w6.gzdio),
# zstd (w19.zstdio, Fedora's) and xz (w6.xzdio, rpmbuild's default: one
# xz block); xz-mt (w2T.xzdio, several blocks) on request.
#
# Both roots are on a fresh ext4 file system, made for the run on a loop
# device with direct I/O over a fully written image (BENCH_FS=no installs
# under $OUT instead): a file system that years of use have aged can make
# every file creation cost tenths of a millisecond (this machine's does),
# which drowns what the installers do; and with direct I/O a flush writes
# to the disk, not to the host's page cache, so that the syncfs costs what
# it costs on a real disk. Each run starts after a sync.
set -eu

OUT=${OUT:-/tmp/avsidecar-bench-install}
RUNS=${RUNS:-10}
PAYLOADS=${PAYLOADS:-bin tree}
COMPRESSIONS=${COMPRESSIONS:-gzip zstd xz}
BENCH_FS=${BENCH_FS:-yes}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

ROOTS=$OUT
if [ "$BENCH_FS" = yes ]; then
	ROOTS=$OUT/fs
	mkdir -p "$ROOTS"
	if ! mountpoint -q "$ROOTS"; then
		if [ ! -f "$OUT/fs.img" ]; then
			dd if=/dev/zero of="$OUT/fs.img" bs=4M count=1536 status=none conv=fsync
		fi
		mkfs.ext4 -q -F "$OUT/fs.img"
		dev=$(losetup --direct-io=on -f --show "$OUT/fs.img")
		mount "$dev" "$ROOTS"
		trap 'umount "$ROOTS"; losetup -d "$dev"' EXIT
	fi
fi

go build -o "$OUT/avsidecar" ./cmd/avsidecar

# Content, made once per payload.
content() { # payload
	dir="$OUT/content-$1"
	[ -f "$dir/.done" ] && return
	rm -rf "$dir"
	mkdir -p "$dir/usr/local/avamar"
	case $1 in
	bin)
		find /usr/bin /usr/sbin /usr/lib/x86_64-linux-gnu -type f -size -30M | LC_ALL=C sort |
			awk -v max=$((120 * 1000 * 1000)) '{ cmd = "stat -c %s \"" $0 "\""; cmd | getline s; close(cmd); if (t + s > max) exit; t += s; print }' \
				>"$OUT/bin.list"
		while read -r f; do
			mkdir -p "$dir/usr/local/avamar/$(dirname "$f")"
			cp -p "$f" "$dir/usr/local/avamar/$f"
		done <"$OUT/bin.list"
		;;
	tree)
		for d in src test api doc misc lib; do
			cp -rp "$(go env GOROOT)/$d" "$dir/usr/local/avamar/"
		done
		;;
	esac
	touch "$dir/.done"
}

# Packages, built once per payload and compression with rpmbuild.
build() { # payload compression
	name=$1-$2
	[ -f "$OUT/$name.rpm" ] && return
	case $2 in
	gzip) payload=w6.gzdio ;;
	zstd) payload=w19.zstdio ;;
	xz) payload=w6.xzdio ;;
	xz-mt) payload=w2T.xzdio ;;
	esac
	top="$OUT/rpmbuild-$name"
	rm -rf "$top"
	mkdir -p "$top"
	cat >"$top/bench.spec" <<EOF
Name: AvamarClient
Version: 7.5.101
Release: 101
Summary: avsidecar install benchmark package
License: MIT
BuildArch: x86_64
Prefix: /usr/local/avamar
AutoReqProv: no
%define _binary_payload $payload
%define __os_install_post %{nil}
%define debug_package %{nil}
%define _build_id_links none
%description
The $1 payload.
%install
mkdir -p %{buildroot}
cp -a $OUT/content-$1/usr %{buildroot}/
mkdir -p %{buildroot}/usr/local/avamar/var %{buildroot}/etc/init.d
printf '#!/bin/sh\n' >%{buildroot}/etc/init.d/avagent
%files
%defattr(-,root,root)
/usr/local/avamar
%attr(0755,root,root) /etc/init.d/avagent
EOF
	rpmbuild --define "_topdir $top" -bb "$top/bench.spec" >"$top/build.log" 2>&1
	mv "$top"/RPMS/*/*.rpm "$OUT/$name.rpm"
	rm -rf "$top"
}

for p in $PAYLOADS; do
	content "$p"
	for c in $COMPRESSIONS; do build "$p" "$c"; done
done
ls -l "$OUT"/*.rpm
[ "${BUILD_ONLY:-}" ] && exit 0
uptime

if [ "${PROFILE:-}" ]; then
	# Where the time of one install goes, per package: a CPU profile of
	# the install in process (go test), syncfs on.
	for p in $PAYLOADS; do
		for c in $COMPRESSIONS; do
			AVSIDECAR_BENCH_RPM="$OUT/$p-$c.rpm" AVSIDECAR_BENCH_DIR="$ROOTS" go test ./internal/install -run '^$' -bench '^BenchmarkInstallRPM$' \
				-benchtime 3x -cpuprofile "$OUT/$p-$c.pprof" -o "$OUT/install.test" | grep Benchmark
			go tool pprof -top -nodecount 25 "$OUT/install.test" "$OUT/$p-$c.pprof" >"$OUT/$p-$c.top"
			head -32 "$OUT/$p-$c.top"
		done
	done
	exit 0
fi

for p in $PAYLOADS; do
	for c in $COMPRESSIONS; do
		name=$p-$c
		R="$ROOTS/root-rpm"
		A="$ROOTS/root-avs"
		mkdir -p "$A/pkgs"
		cp "$OUT/$name.rpm" "$A/pkgs/client.rpm"
		set --
		if [ "${BEFORE:-}" ]; then
			B="$ROOTS/root-before"
			mkdir -p "$B/pkgs"
			cp "$OUT/$name.rpm" "$B/pkgs/client.rpm"
			set -- --prepare "sh -c 'rm -rf $B/opt $B/etc; sync'" \
				-n "before install $name" "$BEFORE install --root $B --rpm /pkgs/client.rpm --prefix /opt/avamar --noscripts"
		fi
		hyperfine -N --runs "$RUNS" --warmup 1 --export-markdown "$OUT/$name.md" --export-json "$OUT/$name.json" \
			--prepare "sh -c 'rm -rf $R; sync'" \
			-n "rpm -i $name" "rpm -i --root $R --dbpath /rpmdb --nodeps --noscripts --relocate /usr/local/avamar=/opt/avamar $OUT/$name.rpm" \
			--prepare "sh -c 'rm -rf $A/opt $A/etc; sync'" \
			-n "avsidecar install $name" "$OUT/avsidecar install --root $A --rpm /pkgs/client.rpm --prefix /opt/avamar --noscripts" \
			"$@"
		rm -rf "$R" "$A/opt" "$A/etc" "$ROOTS/root-before"
	done
done
uptime

# A start with a matching receipt.
A="$ROOTS/root-avs"
cp "$OUT/$(echo $PAYLOADS | cut -d' ' -f1)-$(echo $COMPRESSIONS | cut -d' ' -f1).rpm" "$A/pkgs/client.rpm"
"$OUT/avsidecar" install --root "$A" --rpm /pkgs/client.rpm --prefix /opt/avamar --noscripts >/dev/null
hyperfine -N --runs 50 --warmup 3 --export-markdown "$OUT/receipt.md" \
	-n "avsidecar install, receipt matches" "$OUT/avsidecar install --root $A --rpm /pkgs/client.rpm --prefix /opt/avamar --noscripts"
rm -rf "$A/opt" "$A/etc"

# The table: each package, rpm's mean, avsidecar's, the ratio (and the
# BEFORE binary's, from the same runs).
echo
if [ "${BEFORE:-}" ]; then
	echo "| package | rpm -i | avsidecar install | ratio | before | ratio |"
	echo "| --- | --- | --- | --- | --- | --- |"
else
	echo "| package | rpm -i | avsidecar install | ratio |"
	echo "| --- | --- | --- | --- |"
fi
for p in $PAYLOADS; do
	for c in $COMPRESSIONS; do
		python3 - "$OUT/$p-$c.json" "$p-$c" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))["results"]
f = lambda x: "%.3f s ± %.3f" % (x["mean"], x["stddev"])
row = [sys.argv[2], f(r[0])]
for x in r[1:]:
    row += [f(x), "%.2f" % (x["mean"] / r[0]["mean"])]
print("| " + " | ".join(row) + " |")
EOF
	done
done
cat "$OUT/receipt.md"
