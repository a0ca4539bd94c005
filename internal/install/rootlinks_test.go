package install

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/rpmpack"
)

// TestSymlinksOfTheRoot: absolute symlinks of the root (/var/run -> /run,
// as Debian's images have; /opt/app -> /data/app, an operator's volume)
// and relative ones that climb above it are followed inside the root, as
// rpm (chrooted) follows them, for install, check, restore and upgrade;
// nothing is ever written outside the root.
func TestSymlinksOfTheRoot(t *testing.T) {
	root := t.TempDir()
	name := fmt.Sprintf("avs-test-%d", rand.Uint64()) // unique, to see the host untouched
	for _, d := range []string{"run", "data/app", "var", "opt", "etc", "tmp"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for link, target := range map[string]string{
		"var/run":   "/run",
		"opt/app":   "/data/app",
		"etc/climb": "../../../../../tmp",
	} {
		if err := os.Symlink(target, filepath.Join(root, link)); err != nil {
			t.Fatal(err)
		}
	}
	files := func(v string) []rpmpack.RPMFile {
		fs := []rpmpack.RPMFile{
			dir(testPrefix, 0o755), dir(testPrefix+"/bin", 0o750),
			file(testPrefix+"/bin/avagent.bin", 0o755, "agent "+v),
			dir("/var/run/"+name, 0o700),
			file("/var/run/"+name+"/avagent.pid", 0o644, "pid "+v),
			file("/etc/climb/"+name, 0o644, "climbed "+v),
		}
		if v == "1" {
			fs = append(fs, file("/var/run/"+name+"/old", 0o644, "only in 1"))
		}
		return fs
	}
	prefix := func(c *Config) { c.Prefix = "/opt/app/avamar" }
	v1 := writeRPM(t, pack(t, packOpts{version: "1", files: files("1")}))
	mustRun(t, v1, root, prefix)
	for rel, want := range map[string]string{
		"data/app/avamar/bin/avagent.bin": "agent 1",
		"run/" + name + "/avagent.pid":    "pid 1",
		"tmp/" + name:                     "climbed 1",
	} {
		if got, err := os.ReadFile(filepath.Join(root, rel)); err != nil || string(got) != want {
			t.Errorf("%s: %q, %v; want %q", rel, got, err, want)
		}
	}
	if st, err := os.Stat(filepath.Join(root, "run", name)); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("run/%s: %v, %v; want the package's mode 0700 on the link's target", name, st, err)
	}
	for _, host := range []string{"/run/" + name, "/data/app/avamar", "/tmp/" + name} {
		if _, err := os.Lstat(host); err == nil {
			t.Errorf("%s written outside the root", host)
		}
	}
	// The next start sees it installed; a missing file is restored where
	// it was.
	if res := mustRun(t, v1, root, prefix); res.Changed || res.Restored != 0 {
		t.Errorf("second start: %+v, want nothing to do", res)
	}
	if err := os.Remove(filepath.Join(root, "run", name, "avagent.pid")); err != nil {
		t.Fatal(err)
	}
	if res := mustRun(t, v1, root, prefix); res.Restored != 1 {
		t.Errorf("start without avagent.pid: %+v, want it restored", res)
	}
	// An upgrade replaces and removes through the links too.
	mustRun(t, writeRPM(t, pack(t, packOpts{version: "2", files: files("2")})), root, prefix)
	if got := readFile(t, filepath.Join(root, "run", name, "avagent.pid")); got != "pid 2" {
		t.Errorf("after the upgrade: %q", got)
	}
	if exists(filepath.Join(root, "run", name, "old")) {
		t.Errorf("the file 2 dropped is still there")
	}
	for _, link := range []string{"var/run", "opt/app", "etc/climb"} {
		if st, err := os.Lstat(filepath.Join(root, link)); err != nil || st.Mode()&os.ModeSymlink == 0 {
			t.Errorf("%s is no longer a symlink: %v, %v", link, st, err)
		}
	}
}
