package install

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/rpmpack"
)

func readFile(t testing.TB, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func writeFile(t testing.TB, p, body string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// v2Files is the next version: avagent.bin changes, bin/secret goes,
// bin/avtar.bin arrives, the %config file's shipped content changes and
// a plain file that was modified by the operator is dropped.
func v2Files(cfgBody string) []rpmpack.RPMFile {
	var out []rpmpack.RPMFile
	for _, f := range baseFiles("2.0") {
		switch f.Name {
		case testPrefix + "/bin/secret":
			continue
		case testPrefix + "/etc/avagent.cfg":
			f = config(f.Name, cfgBody)
		}
		out = append(out, f)
	}
	return append(out, file(testPrefix+"/bin/avtar.bin", 0o755, "avtar 2.0\n"))
}

func TestUpgrade(t *testing.T) {
	root := t.TempDir()
	p := func(rel string) string { return filepath.Join(root, "opt/avamar", rel) }
	mustRun(t, writeRPM(t, pack(t, packOpts{version: "1.0"})), root)

	// The operator edits the config; the client registers (var/ holds
	// files the package does not own).
	writeFile(t, p("etc/avagent.cfg"), "--listenport=29000\n")
	writeFile(t, p("var/avagent.cfg"), "registered\n")
	writeFile(t, p("bin/local-tool"), "not the package's\n")

	res := mustRun(t, writeRPM(t, pack(t, packOpts{version: "2.0", files: v2Files("--listenport=28002\n--new=1\n")})), root)
	if !res.Changed || res.Version != "2.0" {
		t.Fatalf("result %+v", res)
	}
	if got := readFile(t, p("bin/avagent.bin")); !strings.Contains(got, "agent 2.0") {
		t.Errorf("avagent.bin not replaced: %q", got)
	}
	if exists(p("bin/secret")) {
		t.Errorf("bin/secret, dropped by 2.0, is still there")
	}
	if got := readFile(t, p("bin/avtar.bin")); got != "avtar 2.0\n" {
		t.Errorf("new file: %q", got)
	}
	if got := readFile(t, p("etc/avagent.cfg")); got != "--listenport=29000\n" {
		t.Errorf("modified config replaced: %q", got)
	}
	if got := readFile(t, p("etc/avagent.cfg.rpmnew")); got != "--listenport=28002\n--new=1\n" {
		t.Errorf("rpmnew: %q", got)
	}
	if got := readFile(t, p("var/avagent.cfg")); got != "registered\n" {
		t.Errorf("registration changed: %q", got)
	}
	if got := readFile(t, p("bin/local-tool")); got != "not the package's\n" {
		t.Errorf("unowned file changed: %q", got)
	}
}

func TestUpgradeConfig(t *testing.T) {
	for _, c := range []struct {
		name       string
		edit       bool   // the operator edits the config after 1.0
		v2Body     string // what 2.0 ships
		wantBody   string
		wantRPMNew bool
	}{
		{name: "unedited, changed by the package", v2Body: "new\n", wantBody: "new\n"},
		{name: "edited, unchanged by the package", edit: true, v2Body: "--listenport=28002\n", wantBody: "edited\n"},
		{name: "edited, changed by the package", edit: true, v2Body: "new\n", wantBody: "edited\n", wantRPMNew: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			root := t.TempDir()
			cfg := filepath.Join(root, "opt/avamar/etc/avagent.cfg")
			mustRun(t, writeRPM(t, pack(t, packOpts{version: "1.0"})), root)
			if c.edit {
				writeFile(t, cfg, "edited\n")
			}
			mustRun(t, writeRPM(t, pack(t, packOpts{version: "2.0", files: v2Files(c.v2Body)})), root)
			if got := readFile(t, cfg); got != c.wantBody {
				t.Errorf("config is %q, want %q", got, c.wantBody)
			}
			if got := exists(cfg + ".rpmnew"); got != c.wantRPMNew {
				t.Errorf(".rpmnew exists: %v, want %v", got, c.wantRPMNew)
			}
		})
	}
}

// TestUpgradeDroppedConfig keeps an edited %config file the new package
// no longer has as .rpmsave, as rpm does, and removes an unedited one.
func TestUpgradeDroppedConfig(t *testing.T) {
	root := t.TempDir()
	files := append(baseFiles("1.0"), config(testPrefix+"/etc/old.cfg", "old\n"), config(testPrefix+"/etc/gone.cfg", "gone\n"))
	mustRun(t, writeRPM(t, pack(t, packOpts{files: files})), root)
	writeFile(t, filepath.Join(root, "opt/avamar/etc/old.cfg"), "edited\n")
	mustRun(t, writeRPM(t, pack(t, packOpts{version: "2.0"})), root)
	if exists(filepath.Join(root, "opt/avamar/etc/old.cfg")) || exists(filepath.Join(root, "opt/avamar/etc/gone.cfg")) {
		t.Errorf("dropped config files are still there")
	}
	if got := readFile(t, filepath.Join(root, "opt/avamar/etc/old.cfg.rpmsave")); got != "edited\n" {
		t.Errorf("rpmsave: %q", got)
	}
}

// TestReceiptMatches: a second install of the same file changes nothing,
// not even the receipt.
func TestReceiptMatches(t *testing.T) {
	root := t.TempDir()
	rpm := writeRPM(t, pack(t, packOpts{}))
	first := mustRun(t, rpm, root)
	before := snapshot(t, root)
	receipt, _ := os.Stat(filepath.Join(root, "opt/avamar/var/avsidecar", receiptName))
	second := mustRun(t, rpm, root)
	if second.Changed || second.SHA256 != first.SHA256 || second.Files != first.Files {
		t.Errorf("second install %+v, first %+v", second, first)
	}
	diffTrees(t, before, snapshot(t, root))
	after, _ := os.Stat(filepath.Join(root, "opt/avamar/var/avsidecar", receiptName))
	if !after.ModTime().Equal(receipt.ModTime()) {
		t.Errorf("receipt rewritten")
	}

	// A copy of the same file (another inode) is recognised by its digest.
	cp := filepath.Join(t.TempDir(), "copy.rpm")
	writeFile(t, cp, readFile(t, rpm))
	if res := mustRun(t, cp, root); res.Changed {
		t.Errorf("copy of the installed rpm installed again")
	}
	diffTrees(t, before, snapshot(t, root))
}

// TestStateDebrisCleared: a kill while the journal or receipt was being
// written leaves its temporary file. The next start with a matching receipt
// removes it and installs nothing (it once stayed forever, found by
// TestKillDuringInstall).
func TestStateDebrisCleared(t *testing.T) {
	root := t.TempDir()
	rpm := writeRPM(t, pack(t, packOpts{}))
	mustRun(t, rpm, root)
	state := filepath.Join(root, "opt/avamar/var/avsidecar")
	before := snapshot(t, root, "opt/avamar/var/avsidecar")
	// Debris of this version, and of earlier ones (another suffix).
	for _, name := range []string{journalName + tmpSuffix, receiptName + tmpSuffix, journalName + oldTmpSuffix, receiptName + oldTmpSuffix} {
		debris := filepath.Join(state, name)
		writeFile(t, debris, `{"format":`)
		if res := mustRun(t, rpm, root); res.Changed || res.Restored != 0 {
			t.Errorf("%s debris: install %+v, want nothing installed", name, res)
		}
		if _, err := os.Lstat(debris); !os.IsNotExist(err) {
			t.Errorf("%s left after the next start: %v", debris, err)
		}
		diffTrees(t, before, snapshot(t, root, "opt/avamar/var/avsidecar"))
	}
}

// TestRepair: a receipt without its files (a new container with the old
// volume) installs again.
func TestRepair(t *testing.T) {
	root := t.TempDir()
	rpm := writeRPM(t, pack(t, packOpts{}))
	mustRun(t, rpm, root)
	want := snapshot(t, root, "opt/avamar/var/avsidecar")
	if err := os.RemoveAll(filepath.Join(root, "opt/avamar/bin")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "etc/init.d/avagent"), []byte("damaged"), 0o755); err != nil {
		t.Fatal(err)
	}
	if res := mustRun(t, rpm, root); !res.Changed {
		t.Errorf("damaged installation not repaired")
	}
	diffTrees(t, want, snapshot(t, root, "opt/avamar/var/avsidecar"))
}

// TestOldSymlinkNotFollowed: 1.0 ships bin/tools -> /etc (a symlink); 2.0
// ships bin/tools as a directory with a file in it. The file must land in
// the new directory, never through the old link.
func TestOldSymlinkNotFollowed(t *testing.T) {
	root := t.TempDir()
	outside := t.TempDir()
	mustRun(t, writeRPM(t, pack(t, packOpts{files: append(baseFiles("1.0"), symlink(testPrefix+"/bin/tools", "../etc"))})), root)
	// Make the link point somewhere a write through it would show.
	if err := os.Remove(filepath.Join(root, "opt/avamar/bin/tools")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(root, "opt/avamar/bin/tools")); err != nil {
		t.Fatal(err)
	}
	files := append(baseFiles("2.0"), file(testPrefix+"/bin/tools/x", 0o644, "x\n"))
	mustRun(t, writeRPM(t, pack(t, packOpts{version: "2.0", files: files})), root)
	st, err := os.Lstat(filepath.Join(root, "opt/avamar/bin/tools"))
	if err != nil || !st.IsDir() {
		t.Fatalf("bin/tools: %v, %v; want a directory", st, err)
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 0 {
		t.Errorf("written through the old symlink: %v", entries)
	}
}

func TestFindRPM(t *testing.T) {
	root := t.TempDir()
	if _, err := FindRPM(root, "/opt/avamar/AvamarClient-*.rpm"); err == nil || !strings.Contains(err.Error(), "no file matches") {
		t.Errorf("none: %v", err)
	}
	writeFile(t, filepath.Join(root, "opt/avamar/AvamarClient-1.rpm"), "x")
	got, err := FindRPM(root, "/opt/avamar/AvamarClient-*.rpm")
	if err != nil || got != filepath.Join(root, "opt/avamar/AvamarClient-1.rpm") {
		t.Errorf("one: %q, %v", got, err)
	}
	writeFile(t, filepath.Join(root, "opt/avamar/AvamarClient-2.rpm"), "x")
	if _, err := FindRPM(root, "/opt/avamar/AvamarClient-*.rpm"); err == nil || !strings.Contains(err.Error(), "2 files match") {
		t.Errorf("two: %v", err)
	}
	if _, err := FindRPM(root, "relative.rpm"); err == nil {
		t.Errorf("relative pattern accepted")
	}
	// A path that is no glob is named as it is, with the root.
	missing := filepath.Join(root, "opt/avamar/AvamarClient-3.rpm")
	if _, err := FindRPM(root, "/opt/avamar/AvamarClient-3.rpm"); err == nil || err.Error() != "find rpm: "+missing+" does not exist" {
		t.Errorf("a missing path: %v", err)
	}
	if _, err := FindRPM(root, "/opt/avamar"); err == nil || !strings.Contains(err.Error(), "is a directory") {
		t.Errorf("a directory: %v", err)
	}
	if got, err := FindRPM(root, "/opt/avamar/AvamarClient-2.rpm"); err != nil || got != filepath.Join(root, "opt/avamar/AvamarClient-2.rpm") {
		t.Errorf("a path: %q, %v", got, err)
	}
}

func TestNotRelocatable(t *testing.T) {
	root := t.TempDir()
	res := mustRun(t, writeRPM(t, pack(t, packOpts{noPrefixes: true})), root)
	if !res.Changed || !exists(filepath.Join(root, testPrefix, "bin/avagent.bin")) {
		t.Errorf("a package without prefixes is installed at its own paths")
	}
	_, err := run(t, writeRPM(t, pack(t, packOpts{})), t.TempDir(), func(c *Config) { c.From = "/elsewhere" })
	if !errors.Is(err, ErrUnusable) {
		t.Errorf("relocating from a path that is not a prefix: %v", err)
	}
}

func TestModes(t *testing.T) {
	root := t.TempDir()
	mustRun(t, writeRPM(t, pack(t, packOpts{})), root)
	for rel, want := range map[string]fs.FileMode{
		"opt/avamar/bin/secret":      0o600,
		"opt/avamar/bin/avagent.bin": 0o755,
		"opt/avamar/etc/avagent.cfg": 0o644,
		"etc/init.d/avagent":         0o755,
		"opt/avamar/bin":             fs.ModeDir | 0o755,
	} {
		st, err := os.Lstat(filepath.Join(root, rel))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode() != want {
			t.Errorf("%s: mode %v, want %v", rel, st.Mode(), want)
		}
	}
	if l, err := os.Readlink(filepath.Join(root, "opt/avamar/bin/agent")); err != nil || l != "avagent.bin" {
		t.Errorf("symlink: %q, %v", l, err)
	}
}

// TestConcurrentInstalls: installs into one root take turns; all succeed
// and exactly one of them installs.
func TestConcurrentInstalls(t *testing.T) {
	root := t.TempDir()
	rpm := writeRPM(t, pack(t, packOpts{}))
	const n = 4
	results := make(chan Result, n)
	errs := make(chan error, n)
	for range n {
		go func() {
			res, err := run(t, rpm, root)
			results <- res
			errs <- err
		}()
	}
	changed := 0
	for range n {
		if err := <-errs; err != nil {
			t.Error(err)
		}
		if (<-results).Changed {
			changed++
		}
	}
	if changed != 1 {
		t.Errorf("%d installs changed the root, want 1", changed)
	}
}

// TestDirectorySymlinkKept: an operator links var/ to a volume; installs
// keep the link, write through it, and a start still matches the receipt.
func TestDirectorySymlinkKept(t *testing.T) {
	root := t.TempDir()
	rpm := writeRPM(t, pack(t, packOpts{}))
	volume := filepath.Join(root, "volume")
	if err := os.MkdirAll(filepath.Join(root, "opt/avamar"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(volume, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../../volume", filepath.Join(root, "opt/avamar/var")); err != nil {
		t.Fatal(err)
	}
	mustRun(t, rpm, root)
	if st, err := os.Lstat(filepath.Join(root, "opt/avamar/var")); err != nil || st.Mode()&fs.ModeSymlink == 0 {
		t.Fatalf("var is no longer the operator's symlink: %v, %v", st, err)
	}
	if !exists(filepath.Join(volume, "avsidecar", receiptName)) {
		t.Errorf("the receipt is not on the volume")
	}
	if res := mustRun(t, rpm, root); res.Changed {
		t.Errorf("a start after installing through a directory symlink installs again")
	}
}

// TestSignaturePresent: a signed package installs (there is no keyring to
// check it against) and says so, in the result and the log.
func TestSignaturePresent(t *testing.T) {
	signed := pack(t, packOpts{tweak: func(r *rpmpack.RPM) {
		r.SetPGPSigner(func([]byte) ([]byte, error) { return []byte("not a real signature"), nil })
	}})
	var log logBuffer
	res, err := Install(context.Background(), Config{RPM: writeRPM(t, signed), Root: t.TempDir(), Prefix: "/opt/avamar", NoSync: true}, log.logger())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(res.Signature, "not checked") || !strings.Contains(log.String(), "signature is not checked") {
		t.Errorf("signature %q; log:\n%s", res.Signature, log.String())
	}
	res, err = Install(context.Background(), Config{RPM: writeRPM(t, pack(t, packOpts{})), Root: t.TempDir(), Prefix: "/opt/avamar", NoSync: true}, log.logger())
	if err != nil || res.Signature != "none" {
		t.Errorf("unsigned: %q, %v", res.Signature, err)
	}
}

// TestKilledInstallsKeepDigests replays what TestKillDuringInstall found:
// an install of 2 killed after renaming its %config file into place, then
// an install of 1 killed after writing its journal, then an install of 1
// that runs to the end. The config file holds 2's content, which no
// operator wrote: it must be replaced, not kept as "edited".
func TestKilledInstallsKeepDigests(t *testing.T) {
	cfgPath := testPrefix + "/etc/avagent.cfg"
	v1 := writeRPM(t, pack(t, packOpts{version: "1.0"}))
	v2files := v2Files("version 2\n")
	v2 := writeRPM(t, pack(t, packOpts{version: "2.0", files: v2files}))
	root := t.TempDir()
	mustRun(t, v1, root)

	// Install 2, killed after its config file was renamed into place: its
	// journal and that file are what it leaves.
	scratch := t.TempDir()
	mustRun(t, v2, scratch)
	state := "opt/avamar/var/avsidecar/"
	writeFile(t, filepath.Join(root, state, journalName), readFile(t, filepath.Join(scratch, state, receiptName)))
	writeFile(t, filepath.Join(root, "opt/avamar/etc/avagent.cfg"), "version 2\n")

	// Install 1, killed after writing its journal.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Install(ctx, Config{RPM: v1, Root: root, Prefix: "/opt/avamar", NoSync: true}, testLogger(t)); err == nil {
		t.Fatal("an install with a cancelled context succeeded")
	}

	mustRun(t, v1, root)
	if got := readFile(t, filepath.Join(root, "opt/avamar/etc/avagent.cfg")); got != "--listenport=28002\n" {
		t.Errorf("%s is %q, want 1.0's content", cfgPath, got)
	}
	if exists(filepath.Join(root, "opt/avamar/etc/avagent.cfg.rpmnew")) {
		t.Errorf("an .rpmnew was made for a file no operator edited")
	}
}
