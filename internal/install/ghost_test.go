package install

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/rpmpack"
)

func ghost(f rpmpack.RPMFile) rpmpack.RPMFile {
	f.Type = rpmpack.GhostFile
	return f
}

// ghostFiles is the base package with %ghost entries of every kind: a
// file with a size (its content is not in the payload), one in a
// directory the package does not list, directories and a symlink.
func ghostFiles() []rpmpack.RPMFile {
	return append(baseFiles("1.0"),
		ghost(file(testPrefix+"/var/avagent.log", 0o640, "a size in the header")),
		ghost(file("/var/log/avamar/client.log", 0o600, "")),
		ghost(dir("/var/run/avamar", 0o750)),
		ghost(dir(testPrefix+"/var/cache", 0o700)),
		ghost(symlink(testPrefix+"/bin/current", "avagent.bin")),
		dir(testPrefix+"/lib", 0o700),
		file(testPrefix+"/lib/real", 0o600, "real"),
	)
}

// TestGhosts: rpm creates no %ghost entry, file, directory or link, and
// still applies everything else; so does the installer, with nothing left
// beside the ghost paths, and the next start has nothing to do.
func TestGhosts(t *testing.T) {
	root := t.TempDir()
	rpm := writeRPM(t, pack(t, packOpts{files: ghostFiles()}))
	if res := mustRun(t, rpm, root); !res.Changed {
		t.Fatalf("not installed: %+v", res)
	}
	for _, g := range []string{"opt/avamar/var/avagent.log", "var/log/avamar/client.log", "var/log/avamar", "var/run/avamar",
		"opt/avamar/var/cache", "opt/avamar/bin/current"} {
		if _, err := os.Lstat(filepath.Join(root, g)); !os.IsNotExist(err) {
			t.Errorf("%%ghost %s exists: %v", g, err)
		}
	}
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.Contains(d.Name(), ";") {
			t.Errorf("left beside its destination: %s", p)
		}
		return nil
	})
	if st, err := os.Stat(filepath.Join(root, "opt/avamar/lib")); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("lib: %v, %v; want mode 0700 applied", st, err)
	}
	if readFile(t, filepath.Join(root, "opt/avamar/lib/real")) != "real" {
		t.Errorf("lib/real not installed")
	}
	if res := mustRun(t, rpm, root); res.Changed || res.Restored != 0 {
		t.Errorf("second start: %+v, want nothing to do", res)
	}
	if exists(filepath.Join(root, "opt/avamar/var/avsidecar", journalName)) {
		t.Errorf("journal left")
	}
}
