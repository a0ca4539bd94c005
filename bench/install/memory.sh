#!/bin/sh
# Peak memory of `avsidecar install` on a large multi-block xz package, as
# the kernel accounts it (maximum RSS, from GNU time), with GOMAXPROCS 2,
# 16 and 64: the decoding is bounded by bytes, not by cores. Run from the
# repository root as root; needs rpmbuild and /usr/bin/time.
#
#   bench/install/memory.sh
#   BEFORE=/tmp/avsidecar-old bench/install/memory.sh   # another binary too
#
# The package is TestPayloadMemoryBounded's (internal/rpm): rpmbuild with
# w7T2.xzdio (xz -7, two threads: blocks of 48 MiB with a 16 MiB
# dictionary), 24 files of 48 MiB, zeros after a random head. CONTENT=DIR
# packs the files under DIR instead (real data takes xz far longer).
set -eu

OUT=${OUT:-/tmp/avsidecar-bench-memory}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
go build -o "$OUT/avsidecar" ./cmd/avsidecar

if [ ! -f "$OUT/big.rpm" ]; then
	if [ "${CONTENT:-}" ]; then
		files="cp -a $CONTENT/. ."
	else
		files='for i in $(seq 24); do head -c 65536 /dev/urandom > f$i; head -c $((48*1024*1024 - 65536)) /dev/zero >> f$i; done'
	fi
	top="$OUT/rpmbuild"
	rm -rf "$top"
	mkdir -p "$top"
	cat >"$top/big.spec" <<SPEC
Name: AvamarClient
Version: 7.5.101
Release: 101
Summary: avsidecar install memory benchmark package
License: MIT
BuildArch: x86_64
Prefix: /usr/local/avamar
AutoReqProv: no
%define _binary_payload w7T2.xzdio
%define __os_install_post %{nil}
%define debug_package %{nil}
%define _build_id_links none
%description
Large files in 48 MiB xz blocks.
%install
mkdir -p %{buildroot}/usr/local/avamar/data
cd %{buildroot}/usr/local/avamar/data
$files
%files
%defattr(-,root,root)
/usr/local/avamar
SPEC
	rpmbuild --define "_topdir $top" -bb "$top/big.spec" >"$top/build.log" 2>&1
	mv "$top"/RPMS/*/*.rpm "$OUT/big.rpm"
	rm -rf "$top"
fi
ls -l "$OUT/big.rpm"

echo "| binary | GOMAXPROCS | peak RSS | wall |"
echo "| --- | --- | --- | --- |"
for bin in "$OUT/avsidecar" ${BEFORE:-}; do
	for procs in 2 16 64; do
		rm -rf "$OUT/root"
		mkdir -p "$OUT/root/pkgs"
		cp "$OUT/big.rpm" "$OUT/root/pkgs/client.rpm"
		GOMAXPROCS=$procs /usr/bin/time -f '%M %e' -o "$OUT/time" \
			"$bin" install --root "$OUT/root" --rpm /pkgs/client.rpm --prefix /opt/avamar --noscripts >/dev/null
		read -r kb secs <"$OUT/time"
		echo "| $bin | $procs | $((kb / 1024)) MiB | $secs s |"
	done
done
rm -rf "$OUT/root"
