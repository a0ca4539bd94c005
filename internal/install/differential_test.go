package install

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/avsidecar/avsidecar/internal/testkit"
)

// rpmbuildPayloads are the payload compressions of the differential
// test, as rpmbuild names them (_binary_payload).
var rpmbuildPayloads = map[string]string{
	"gzip": "w9.gzdio",
	"xz":   "w6.xzdio",
	// Threads make rpmbuild write several xz blocks: decoded in parallel.
	"xz-blocks": "w0T.xzdio",
	"lzma":      "w6.lzdio",
	"zstd":      "w19.zstdio",
	"bzip2":     "w9.bzdio",
	"none":      "w.ufdio",
}

var rpmbuildCache sync.Map // "payload version" -> path

// buildWithRPMBuild builds testdata/differential.spec with rpmbuild and
// returns the package's path. Packages are built once per test binary.
func buildWithRPMBuild(t testing.TB, payload, version string) string {
	t.Helper()
	testkit.NeedCommand(t, "rpmbuild")
	key := payload + " " + version
	if p, ok := rpmbuildCache.Load(key); ok {
		return p.(string)
	}
	spec, err := os.ReadFile("testdata/differential.spec")
	if err != nil {
		t.Fatal(err)
	}
	top, err := os.MkdirTemp("", "avsidecar-rpmbuild-")
	if err != nil {
		t.Fatal(err)
	}
	s := strings.ReplaceAll(string(spec), "@PAYLOAD@", payload)
	s = strings.ReplaceAll(s, "@VERSION@", version)
	specPath := filepath.Join(top, "test.spec")
	if err := os.WriteFile(specPath, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("rpmbuild", "--define", "_topdir "+top, "-bb", specPath)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("rpmbuild: %v\n%s", err, out)
	}
	matches, _ := filepath.Glob(filepath.Join(top, "RPMS", "*", "*.rpm"))
	if len(matches) != 1 {
		t.Fatalf("rpmbuild made %v", matches)
	}
	rpmbuildCache.Store(key, matches[0])
	return matches[0]
}

// rootWithUsers makes a root whose /etc/passwd and /etc/group know
// daemon, so owners are resolved (by rpm and by the installer) inside it.
func rootWithUsers(t testing.TB) string {
	t.Helper()
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{
		"etc/passwd": "root:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n",
		"etc/group":  "root:x:0:\ndaemon:x:1:\n",
	} {
		if err := os.WriteFile(filepath.Join(root, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// rpmInstall installs pkg with the real rpm under root, relocated like
// the installer does. Scriptlets are off: the roots have no /bin/sh
// (scriptlets have their own test).
func rpmInstall(t testing.TB, pkg, root string) {
	t.Helper()
	rpm := testkit.NeedCommand(t, "rpm")
	cmd := exec.Command(rpm, "-i", "--root", root, "--dbpath", "/rpmdb", "--nodeps", "--noscripts",
		"--relocate", testPrefix+"=/opt/avamar", pkg)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("rpm -i: %v\n%s", err, out)
	}
}

// skipInDiff are paths only one side has: rpm's database and the
// installer's receipt.
var skipInDiff = []string{"rpmdb", "opt/avamar/var/avsidecar"}

// TestDifferential installs the same packages with rpm and with the
// installer and compares the trees: paths, types, modes, owners, sizes,
// contents, link targets, hard link counts and mtimes of files and links.
func TestDifferential(t *testing.T) {
	testkit.NeedRoot(t)
	testkit.NeedCommand(t, "rpm")
	type tc struct {
		name string
		pkg  func(t *testing.T) string
	}
	var cases []tc
	for name, payload := range rpmbuildPayloads {
		cases = append(cases, tc{"rpmbuild/" + name, func(t *testing.T) string { return buildWithRPMBuild(t, payload, "1.0") }})
	}
	for _, c := range []string{"gzip", "xz", "lzma", "zstd"} {
		cases = append(cases, tc{"rpmpack/" + c, func(t *testing.T) string {
			return writeRPM(t, pack(t, packOpts{compressor: c, pre: "echo pre", post: "echo post"}))
		}})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			pkg := c.pkg(t)
			byRPM, byUs := rootWithUsers(t), rootWithUsers(t)
			rpmInstall(t, pkg, byRPM)
			res := mustRun(t, pkg, byUs, func(c *Config) { c.NoScripts = true })
			if !res.Changed || res.Name != "AvamarClient" {
				t.Errorf("result %+v, want a changed AvamarClient", res)
			}
			want, got := snapshot(t, byRPM, skipInDiff...), snapshot(t, byUs, skipInDiff...)
			if len(want) < 10 {
				t.Fatalf("rpm installed only %d paths", len(want))
			}
			diffTrees(t, want, got)
		})
	}
}
