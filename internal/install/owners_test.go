package install

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/avsidecar/avsidecar/internal/testkit"
	"github.com/google/rpmpack"
)

// TestUnknownOwner: an owner or group the root does not know becomes
// root, as with rpm, and the file loses its setuid (unknown owner) or
// setgid (unknown group) bit: root must not get a set-ID program it never
// meant to have.
func TestUnknownOwner(t *testing.T) {
	testkit.NeedRoot(t)
	root := rootWithUsers(t)
	owned := func(f rpmpack.RPMFile, user, group string) rpmpack.RPMFile {
		f.Owner, f.Group = user, group
		return f
	}
	files := append(baseFiles("1.0"),
		owned(file(testPrefix+"/bin/suid", 0o4755, "suid"), "nosuchuser", "daemon"),
		owned(file(testPrefix+"/bin/sgid", 0o2755, "sgid"), "daemon", "nosuchgroup"),
		owned(file(testPrefix+"/bin/both", 0o6755, "both"), "nosuchuser", "nosuchgroup"),
		owned(file(testPrefix+"/bin/known", 0o6750, "known"), "daemon", "daemon"),
		owned(dir(testPrefix+"/shared", 0o2775), "root", "nosuchgroup"),
	)
	mustRun(t, writeRPM(t, pack(t, packOpts{files: files})), root)
	for rel, want := range map[string]struct {
		mode     os.FileMode
		uid, gid uint32
	}{
		"bin/suid":  {0o755, 0, 1},
		"bin/sgid":  {0o755, 1, 0},
		"bin/both":  {0o755, 0, 0},
		"bin/known": {0o750 | os.ModeSetuid | os.ModeSetgid, 1, 1},
		"shared":    {0o775 | os.ModeDir, 0, 0},
	} {
		st, err := os.Lstat(filepath.Join(root, "opt/avamar", rel))
		if err != nil {
			t.Fatal(err)
		}
		sys := st.Sys().(*syscall.Stat_t)
		if st.Mode() != want.mode || sys.Uid != want.uid || sys.Gid != want.gid {
			t.Errorf("%s: %v %d:%d, want %v %d:%d", rel, st.Mode(), sys.Uid, sys.Gid, want.mode, want.uid, want.gid)
		}
	}
}
