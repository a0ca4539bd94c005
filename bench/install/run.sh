#!/bin/sh
# Benchmark of `avsidecar install` against `rpm -i --root --nodeps
# --noscripts` on the same 200 MB packages (xz in one block, xz in several
# blocks as rpmbuild writes with threads, gzip), and of a start with a
# matching receipt. Run from the repository root as root;
# needs rpmbuild, rpm and hyperfine. Results go to $OUT (default
# /tmp/avsidecar-bench-install).
#
#   bench/install/run.sh            # everything
#   RUNS=5 bench/install/run.sh     # fewer hyperfine runs
#
# The payload is 200 MB of mixed content, so the size is real: 120 MB of
# random bytes (incompressible), 80 MB of base64 text (compresses to about
# 75%), and 600 small text files.
set -eu

OUT=${OUT:-/tmp/avsidecar-bench-install}
RUNS=${RUNS:-10}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

go build -o "$OUT/avsidecar" ./cmd/avsidecar

# Content, made once.
if [ ! -f "$OUT/content/.done" ]; then
	rm -rf "$OUT/content"
	mkdir -p "$OUT/content/bin" "$OUT/content/lib" "$OUT/content/share"
	i=0
	while [ $i -lt 40 ]; do
		head -c 3000000 /dev/urandom >"$OUT/content/lib/blob$i.so"
		head -c 1500000 /dev/urandom | base64 | head -c 2000000 >"$OUT/content/share/text$i.txt"
		i=$((i + 1))
	done
	i=0
	while [ $i -lt 600 ]; do
		head -c $((1000 + i * 13)) /dev/urandom | base64 >"$OUT/content/share/small$i.txt"
		i=$((i + 1))
	done
	touch "$OUT/content/.done"
fi

# Packages, built once per compression with rpmbuild.
build() { # name payload
	[ -f "$OUT/$1.rpm" ] && return
	top="$OUT/rpmbuild-$1"
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
%define _binary_payload $2
%define __os_install_post %{nil}
%define debug_package %{nil}
%define _build_id_links none
%description
200 MB of mixed content.
%install
mkdir -p %{buildroot}/usr/local/avamar/var %{buildroot}/etc/init.d
cp -r $OUT/content/bin $OUT/content/lib $OUT/content/share %{buildroot}/usr/local/avamar/
printf '#!/bin/sh\n' >%{buildroot}/etc/init.d/avagent
%files
%defattr(-,root,root)
/usr/local/avamar
%attr(0755,root,root) /etc/init.d/avagent
EOF
	rpmbuild --define "_topdir $top" -bb "$top/bench.spec" >"$top/build.log" 2>&1
	mv "$top"/RPMS/*/*.rpm "$OUT/$1.rpm"
}
build xz w2.xzdio
build xz-mt w2T.xzdio
build gzip w6.gzdio
ls -l "$OUT"/*.rpm

for c in xz xz-mt gzip; do
	R="$OUT/root-rpm-$c"
	A="$OUT/root-avs-$c"
	mkdir -p "$A/pkgs"
	cp "$OUT/$c.rpm" "$A/pkgs/client.rpm"
	hyperfine --runs "$RUNS" --warmup 1 --export-markdown "$OUT/$c.md" \
		--prepare "rm -rf $R; mkdir -p $R" \
		-n "rpm -i $c" "rpm -i --root $R --dbpath /rpmdb --nodeps --noscripts --relocate /usr/local/avamar=/opt/avamar $OUT/$c.rpm" \
		--prepare "rm -rf $A/opt $A/etc" \
		-n "avsidecar install $c" "$OUT/avsidecar install --root $A --rpm /pkgs/client.rpm --prefix /opt/avamar --noscripts" \
		--prepare "rm -rf $A/opt $A/etc" \
		-n "avsidecar install --nosync $c" "$OUT/avsidecar install --root $A --rpm /pkgs/client.rpm --prefix /opt/avamar --noscripts --nosync"
done

# A start with a matching receipt: the tree from the last run above stays.
A="$OUT/root-avs-gzip"
"$OUT/avsidecar" install --root "$A" --rpm /pkgs/client.rpm --prefix /opt/avamar --noscripts --nosync >/dev/null
hyperfine --runs 50 --warmup 3 -N --export-markdown "$OUT/receipt.md" \
	-n "avsidecar install, receipt matches" "$OUT/avsidecar install --root $A --rpm /pkgs/client.rpm --prefix /opt/avamar --noscripts"
cat "$OUT/xz.md" "$OUT/xz-mt.md" "$OUT/gzip.md" "$OUT/receipt.md"
