package install

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/avsidecar/avsidecar/internal/testkit"
	"github.com/google/rpmpack"
	"golang.org/x/sys/unix"
)

// setImmutable sets or clears the immutable attribute (chattr +i) of a
// directory: nothing may then change it, not even root.
func setImmutable(t testing.TB, dir string, on bool) {
	t.Helper()
	const immutable = 0x10 // FS_IMMUTABLE_FL
	f, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	flags, err := unix.IoctlGetInt(int(f.Fd()), unix.FS_IOC_GETFLAGS)
	testkit.Need(t, err == nil, "a file system with inode flags (chattr)")
	if on {
		flags |= immutable
	} else {
		flags &^= immutable
	}
	err = unix.IoctlSetPointerInt(int(f.Fd()), unix.FS_IOC_SETFLAGS, flags)
	testkit.Need(t, err == nil, "CAP_LINUX_IMMUTABLE (chattr +i)")
}

// TestFailedInstallRepaired: an install that fails once its files are in
// place (here a directory of the package is immutable, so its mode cannot
// be set) still sets every other directory's metadata, and leaves a root
// that the next start repairs once the cause is gone: the same tree as a
// clean install, no journal, no temporary file.
func TestFailedInstallRepaired(t *testing.T) {
	testkit.NeedRoot(t)
	files := []rpmpack.RPMFile{
		dir(testPrefix, 0o750),
		file(testPrefix+"/x", 0o644, "x"),
		dir(testPrefix+"/lib", 0o700),
		dir(testPrefix+"/lib/sub", 0o711),
		file(testPrefix+"/lib/sub/y", 0o600, "y"),
	}
	rpm := writeRPM(t, pack(t, packOpts{files: files}))
	stateDir := func(c *Config) { c.StateDir = "/state" }
	clean := t.TempDir()
	mustRun(t, rpm, clean, stateDir)
	want := snapshot(t, clean, "state")

	root := t.TempDir()
	prefix := filepath.Join(root, "opt/avamar")
	lib := filepath.Join(prefix, "lib")
	if err := os.MkdirAll(filepath.Join(lib, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	setImmutable(t, lib, true)
	t.Cleanup(func() { setImmutable(t, lib, false) })
	_, err := run(t, rpm, root, stateDir)
	if !errors.Is(err, unix.EPERM) {
		t.Fatalf("install with an immutable lib: %v, want EPERM", err)
	}
	if readFile(t, filepath.Join(prefix, "lib/sub/y")) != "y" || readFile(t, filepath.Join(prefix, "x")) != "x" {
		t.Fatalf("the files were not in place when it failed: the test tests nothing")
	}
	for rel, mode := range map[string]os.FileMode{"": 0o750, "lib/sub": 0o711} {
		if st, err := os.Stat(filepath.Join(prefix, rel)); err != nil || st.Mode().Perm() != mode {
			t.Errorf("%s: %v, %v; want mode %v: one directory's failure kept the others from their metadata", rel, st, err, mode)
		}
	}
	if !exists(filepath.Join(root, "state", journalName)) {
		t.Errorf("no journal after a failed install: the next start would trust it")
	}

	setImmutable(t, lib, false)
	if res := mustRun(t, rpm, root, stateDir); !res.Changed {
		t.Errorf("next start: %+v, want a full install", res)
	}
	diffTrees(t, want, snapshot(t, root, "state"))
	if exists(filepath.Join(root, "state", journalName)) {
		t.Errorf("journal left after the repair")
	}
	if res := mustRun(t, rpm, root, stateDir); res.Changed || res.Restored != 0 {
		t.Errorf("start after the repair: %+v, want nothing to do", res)
	}
}

// TestDirectoryInTheWay: a directory the package does not own where it
// has a file is refused before anything changes (rpm fails there too,
// half-way): the root stays as it was, and once the directory is gone the
// next start installs.
func TestDirectoryInTheWay(t *testing.T) {
	root := t.TempDir()
	rpm := writeRPM(t, pack(t, packOpts{}))
	writeFile(t, filepath.Join(root, "opt/avamar/bin/avagent.bin/data"), "not the package's")
	before := snapshot(t, root)
	_, err := run(t, rpm, root)
	if err == nil {
		t.Fatalf("installed over a directory it does not own")
	}
	t.Logf("refused: %v", err)
	diffTrees(t, before, snapshot(t, root))
	if err := os.RemoveAll(filepath.Join(root, "opt/avamar/bin/avagent.bin")); err != nil {
		t.Fatal(err)
	}
	if res := mustRun(t, rpm, root); !res.Changed {
		t.Errorf("next start: %+v", res)
	}
}
