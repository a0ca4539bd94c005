package install

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/avsidecar/avsidecar/internal/testkit"
)

// edgePreamble is what every spec of testdata/edge shares; %s is the
// payload compression.
const edgePreamble = `Version: 1
Release: 1
License: MIT
BuildArch: noarch
%%define _binary_payload %s
%%define __os_install_post %%{nil}
%%define debug_package %%{nil}
%%define _build_id_links none
`

// buildEdge builds testdata/edge/NAME.spec with rpmbuild and returns the
// package's path.
func buildEdge(t testing.TB, name, payload string) string {
	t.Helper()
	testkit.NeedCommand(t, "rpmbuild")
	spec, err := os.ReadFile(filepath.Join("testdata/edge", name+".spec"))
	if err != nil {
		t.Fatal(err)
	}
	top := t.TempDir()
	specPath := filepath.Join(top, name+".spec")
	body := fmt.Sprintf(edgePreamble, payload) + string(spec)
	if err := os.WriteFile(specPath, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if out, err := exec.Command("rpmbuild", "--define", "_topdir "+top, "-bb", specPath).CombinedOutput(); err != nil {
		t.Fatalf("rpmbuild %s: %v\n%s", name, err, out)
	}
	matches, _ := filepath.Glob(filepath.Join(top, "RPMS", "*", "*.rpm"))
	if len(matches) != 1 {
		t.Fatalf("rpmbuild made %v", matches)
	}
	// The build root can hold a 4 GiB file (sparse, but not for long).
	_ = os.RemoveAll(filepath.Join(top, "BUILDROOT"))
	t.Logf("built %s in %v", filepath.Base(matches[0]), time.Since(start).Round(time.Millisecond))
	return matches[0]
}

// rootLinks gives a root /var/run -> /run, as Debian's images have,
// /var/lock -> ../run/lock, and /opt/app -> /data/app, an operator's
// link to a volume.
func rootLinks(t testing.TB, root string) {
	t.Helper()
	for _, d := range []string{"run/lock", "data/app", "var", "opt"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for link, target := range map[string]string{"var/run": "/run", "var/lock": "../run/lock", "opt/app": "/data/app"} {
		if err := os.Symlink(target, filepath.Join(root, link)); err != nil {
			t.Fatal(err)
		}
	}
}

// TestEdgePackages builds the packages of testdata/edge with rpmbuild
// and installs each with rpm and with the installer: the trees must be
// the same, or both must refuse.
func TestEdgePackages(t *testing.T) {
	testkit.NeedRoot(t)
	testkit.NeedCommand(t, "rpm")
	for _, c := range []struct {
		spec, payload string
		build         func(testing.TB) string // instead of a spec
		setup         func(testing.TB, string)
		want          string
	}{
		{spec: "ghost", payload: "w9.gzdio", want: verdictSame},
		{spec: "modes", payload: "w9.gzdio", want: verdictSame},
		{spec: "caps", payload: "w9.gzdio", want: verdictSame},
		{spec: "hardlinks", payload: "w9.gzdio", want: verdictSame},
		{spec: "hardlinks", payload: "w6.xzdio", want: verdictSame},
		{spec: "large", payload: "w1.zstdio", want: verdictSame},
		{spec: "prefixes", payload: "w9.gzdio", want: verdictSame},
		{spec: "prefixes-agent", payload: "w9.gzdio", want: verdictSame},
		{spec: "names", payload: "w9.gzdio", want: verdictSame},
		{spec: "names-toolong", payload: "w9.gzdio", want: verdictBoth},
		{spec: "rootlinks", payload: "w9.gzdio", setup: rootLinks, want: verdictSame},
		{spec: "v3", payload: "gzip", build: buildV3, want: verdictSame},
		{spec: "rootdir", payload: "w9.gzdio", want: verdictSame},
	} {
		t.Run(c.spec+"/"+c.payload, func(t *testing.T) {
			start := time.Now()
			var pkg string
			if c.build != nil {
				pkg = c.build(t)
			} else {
				pkg = buildEdge(t, c.spec, c.payload)
			}
			o := compareWithRPM(t, corpusCase{name: c.spec, path: pkg, setup: c.setup})
			t.Logf("%s: rpm %s; installer %s (%v)", o.verdict, o.rpm, o.ours, time.Since(start).Round(time.Millisecond))
			if o.verdict != c.want {
				t.Errorf("%s, want %s: rpm %s; installer %s\n%s", o.verdict, c.want, o.rpm, o.ours, o.detail)
			}
		})
	}
}

// buildV3 writes a package as rpm 3 wrote them, old-style file list and
// all (testkit.BuildRPMv3): rpmbuild cannot make one any more.
func buildV3(t testing.TB) string {
	t.Helper()
	const y2k = 946684800
	b, err := testkit.BuildRPMv3("oldpkg", "1.0", "1", []testkit.V3File{
		{Path: "/opt/v3", Mode: 0o40755, MTime: y2k},
		{Path: "/opt/v3/bin", Mode: 0o40755, MTime: y2k},
		{Path: "/opt/v3/bin/tool", Mode: 0o100755, Body: "#!/bin/sh\necho old\n", MTime: y2k},
		{Path: "/opt/v3/doc", Mode: 0o40755, MTime: y2k},
		{Path: "/opt/v3/doc/README", Mode: 0o100644, Body: "read me\n", MTime: y2k + 1},
		{Path: "/opt/v3/doc/empty", Mode: 0o100644, MTime: y2k},
		{Path: "/opt/v3/tool", Mode: 0o120777, Body: "bin/tool", MTime: y2k},
	})
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "oldpkg-1.0-1.noarch.rpm")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
