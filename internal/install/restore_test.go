package install

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/avsidecar/avsidecar/internal/testkit"
)

// diskID is what shows that a file was not rewritten.
type diskID struct {
	Ino   uint64
	MTime int64
	CTime int64
}

// diskIDs records the inode and times of every non-directory under root
// but the paths in skip.
func diskIDs(t *testing.T, root string, skip ...string) map[string]diskID {
	t.Helper()
	out := map[string]diskID{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		for _, s := range skip {
			if rel == s {
				return nil
			}
		}
		st, err := os.Lstat(p)
		if err != nil {
			return err
		}
		sys := st.Sys().(*syscall.Stat_t)
		out[rel] = diskID{Ino: sys.Ino, MTime: sys.Mtim.Nano(), CTime: sys.Ctim.Nano()}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestRestoreMissing: a new container on the old volume lacks the files
// the package put outside the prefix (and, here, one inside). They come
// back from the payload as the install wrote them; nothing else is
// written and no scriptlet runs again.
func TestRestoreMissing(t *testing.T) {
	root := rootWithShell(t)
	rpm := writeRPM(t, pack(t, packOpts{pre: "echo pre $1 >> /scriptlet-runs", post: "echo post $1 >> /scriptlet-runs"}))
	var log logBuffer
	cfg := Config{RPM: rpm, Root: root, Prefix: "/opt/avamar", NoSync: true}
	if _, err := Install(context.Background(), cfg, log.logger()); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(root, "scriptlet-runs")); got != "pre 1\npost 1\n" {
		t.Fatalf("scriptlets of the install: %q", got)
	}
	state := "opt/avamar/var/avsidecar"
	want := snapshot(t, root, state)
	gone := []string{"etc/init.d/avagent", "opt/avamar/bin/avagent.bin"}
	present := diskIDs(t, root, gone...)
	for _, g := range gone {
		if err := os.Remove(filepath.Join(root, g)); err != nil {
			t.Fatal(err)
		}
	}

	log.Reset()
	res, err := Install(context.Background(), cfg, log.logger())
	if err != nil {
		t.Fatal(err)
	}
	if res.Changed || res.Restored != 2 || res.Name != "AvamarClient" {
		t.Errorf("result %+v, want Changed=false Restored=2", res)
	}
	diffTrees(t, want, snapshot(t, root, state)) // content, mode, owner, mtime; scriptlet-runs too
	after := diskIDs(t, root, gone...)
	for rel, id := range present {
		if after[rel] != id {
			t.Errorf("%s rewritten: %+v, was %+v", rel, after[rel], id)
		}
	}
	if got := readFile(t, filepath.Join(root, "scriptlet-runs")); got != "pre 1\npost 1\n" {
		t.Errorf("scriptlets ran again: %q", got)
	}
	if n := strings.Count(log.String(), `"message":"restored missing file"`); n != 2 {
		t.Errorf("%d restored lines, want 2:\n%s", n, log.String())
	}
	if !strings.Contains(log.String(), `"restored":2,"message":"receipt matches, missing files restored"`) {
		t.Errorf("no summary line:\n%s", log.String())
	}

	log.Reset()
	if res, err := Install(context.Background(), cfg, log.logger()); err != nil || res.Changed || res.Restored != 0 {
		t.Errorf("third start: %+v, %v", res, err)
	}
	if !strings.Contains(log.String(), "nothing to install") {
		t.Errorf("third start did more than the fast path:\n%s", log.String())
	}
}

// TestRestoreMissingDirectory: a whole package directory is restored,
// with its mode and mtime, and the receipt is not rewritten.
func TestRestoreMissingDirectory(t *testing.T) {
	root := t.TempDir()
	rpm := writeRPM(t, pack(t, packOpts{}))
	mustRun(t, rpm, root)
	state := "opt/avamar/var/avsidecar"
	want := snapshot(t, root, state)
	receipt := filepath.Join(root, state, receiptName)
	before, _ := os.Stat(receipt)
	beforeBody := readFile(t, receipt)
	if err := os.RemoveAll(filepath.Join(root, "opt/avamar/bin")); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	res := mustRun(t, rpm, root)
	if res.Changed || res.Restored != 4 { // bin, bin/agent, bin/avagent.bin, bin/secret
		t.Errorf("result %+v, want Changed=false Restored=4", res)
	}
	diffTrees(t, want, snapshot(t, root, state))
	// Its files are written into it: like an install, and rpm, that
	// leaves the directory with the time of the restore.
	if st, err := os.Stat(filepath.Join(root, "opt/avamar/bin")); err != nil || st.ModTime().Before(start) {
		t.Errorf("bin: %v, %v; want the time of the restore", st, err)
	}
	after, _ := os.Stat(receipt)
	if !after.ModTime().Equal(before.ModTime()) || readFile(t, receipt) != beforeBody {
		t.Errorf("receipt rewritten")
	}
}

// TestRestoreScriptletEdited: a missing file that %post edited at install
// cannot be made from the payload alone: the full install runs again,
// scriptlets included.
func TestRestoreScriptletEdited(t *testing.T) {
	root := rootWithShell(t)
	rpm := writeRPM(t, pack(t, packOpts{post: "echo '# post' >> /etc/init.d/avagent; echo post >> /scriptlet-runs"}))
	cfg := Config{RPM: rpm, Root: root, Prefix: "/opt/avamar", NoSync: true}
	if _, err := Install(context.Background(), cfg, testLogger(t)); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(root, "etc/init.d/avagent")); err != nil {
		t.Fatal(err)
	}
	res, err := Install(context.Background(), cfg, testLogger(t))
	if err != nil || !res.Changed || res.Restored != 0 {
		t.Errorf("result %+v, %v; want a full install", res, err)
	}
	if got := readFile(t, filepath.Join(root, "etc/init.d/avagent")); !strings.HasSuffix(got, "# post\n") {
		t.Errorf("init script without the %%post edit: %q", got)
	}
	if got := readFile(t, filepath.Join(root, "scriptlet-runs")); got != "post\npost\n" {
		t.Errorf("scriptlet runs: %q", got)
	}
}

// TestRestoreTestkitInitScript: the test kit's %post rewrites
// /etc/init.d/avagent with sed -i, which at the package's own prefix
// changes its mtime but not its content. A new container lacks the file;
// it is restored as the install left it (mtime included) and %post does
// not run again.
func TestRestoreTestkitInitScript(t *testing.T) {
	root := rootWithShell(t, "grep", "sed", "mkdir", "cat")
	rpmPath, err := testkit.BuildRPMFile(t.TempDir(), testkit.RPMOptions{AgentBinary: "/bin/true"})
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{RPM: rpmPath, Root: root, Prefix: "/usr/local/avamar", NoSync: true}
	if res, err := Install(context.Background(), cfg, testLogger(t)); err != nil || !res.Changed {
		t.Fatalf("install: %+v, %v", res, err)
	}
	initScript := filepath.Join(root, "etc/init.d/avagent")
	want := snapshot(t, root, "usr/local/avamar/var/avsidecar")
	if want["etc/init.d/avagent"].MTime == want["usr/local/avamar/bin/avagent.bin"].MTime {
		t.Fatalf("%%post did not rewrite the init script: the test proves nothing")
	}
	if err := os.Remove(initScript); err != nil {
		t.Fatal(err)
	}
	res, err := Install(context.Background(), cfg, testLogger(t))
	if err != nil || res.Changed || res.Restored != 1 {
		t.Errorf("second start: %+v, %v; want Restored=1", res, err)
	}
	diffTrees(t, want, snapshot(t, root, "usr/local/avamar/var/avsidecar")) // install.log: %post ran once
	if res, err := Install(context.Background(), cfg, testLogger(t)); err != nil || res.Changed || res.Restored != 0 {
		t.Errorf("third start: %+v, %v", res, err)
	}
}
