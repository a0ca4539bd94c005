package install

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestDirectoryMTimes: as with rpm, a package directory gets the
// package's mtime when the install makes or meets it, and keeps it only
// when nothing is then written into it: a directory the install puts
// files or new directories in has the time of the install.
func TestDirectoryMTimes(t *testing.T) {
	root := t.TempDir()
	// An existing directory whose only child exists too: nothing is
	// written into it.
	if err := os.MkdirAll(filepath.Join(root, "opt/avamar/var/avsidecar"), 0o755); err != nil {
		t.Fatal(err)
	}
	files := append(baseFiles("1.0"), dir(testPrefix+"/share", 0o755), dir(testPrefix+"/share/empty", 0o755))
	rpm := writeRPM(t, pack(t, packOpts{files: files}))
	start := time.Now()
	mustRun(t, rpm, root, func(c *Config) { c.StateDir = "/state" })
	shipped := time.Unix(int64(testMTime), 0)
	for rel, installed := range map[string]bool{
		"opt/avamar":             true,  // bin, etc, share made in it
		"opt/avamar/bin":         true,  // files written in it
		"opt/avamar/share":       true,  // share/empty made in it
		"opt/avamar/share/empty": false, // empty
		"opt/avamar/var":         false, // its only child existed
	} {
		st, err := os.Stat(filepath.Join(root, rel))
		if err != nil {
			t.Fatal(err)
		}
		switch mt := st.ModTime(); {
		case installed && mt.Before(start):
			t.Errorf("%s: mtime %v, want the time of the install (rpm's)", rel, mt)
		case !installed && !mt.Equal(shipped):
			t.Errorf("%s: mtime %v, want the package's %v", rel, mt, shipped)
		}
	}
}
