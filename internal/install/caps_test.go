package install

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/avsidecar/avsidecar/internal/testkit"
	"github.com/google/rpmpack"
	"golang.org/x/sys/unix"
)

// tagFileCaps is RPMTAG_FILECAPS: a file's capabilities, in text.
const tagFileCaps = 5010

// withCaps builds the base package with capabilities for some files.
func withCaps(t testing.TB, caps map[string]string) []byte {
	files := append(baseFiles("1.0"), file(testPrefix+"/bin/ping", 0o755, "ping"), file(testPrefix+"/bin/suid", 0o4755, "suid"))
	return pack(t, packOpts{files: files, tweak: func(r *rpmpack.RPM) {
		var texts []string
		for _, f := range sortedFiles(files) {
			texts = append(texts, caps[f.Name])
		}
		r.AddCustomTag(tagFileCaps, rpmpack.EntryStringSlice(texts))
	}})
}

func capability(t testing.TB, p string) []byte {
	t.Helper()
	buf := make([]byte, 64)
	n, err := unix.Lgetxattr(p, "security.capability", buf)
	if err == unix.ENODATA {
		return nil
	}
	if err != nil {
		t.Fatalf("getxattr %s: %v", p, err)
	}
	return buf[:n]
}

// TestCapabilities: file capabilities (%caps) are written as rpm writes
// them (the same security.capability as setcap(8) writes for the text),
// on a setuid file too; a file without them has none.
func TestCapabilities(t *testing.T) {
	testkit.NeedRoot(t)
	setcap := testkit.NeedCommand(t, "setcap")
	caps := map[string]string{testPrefix + "/bin/ping": "cap_net_raw=ep", testPrefix + "/bin/suid": "cap_sys_nice,cap_bpf+ep"}
	root := t.TempDir()
	mustRun(t, writeRPM(t, withCaps(t, caps)), root)
	ref := filepath.Join(t.TempDir(), "ref")
	for name, text := range caps {
		if err := os.WriteFile(ref, nil, 0o755); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(setcap, text, ref).CombinedOutput(); err != nil {
			t.Fatalf("setcap %s: %v\n%s", text, err, out)
		}
		got := filepath.Join(root, "opt/avamar", name[len(testPrefix):])
		if want := capability(t, ref); !bytes.Equal(capability(t, got), want) {
			t.Errorf("%s: security.capability %x, want %x (%s)", name, capability(t, got), want, text)
		}
	}
	if st, err := os.Stat(filepath.Join(root, "opt/avamar/bin/suid")); err != nil || st.Mode()&os.ModeSetuid == 0 {
		t.Errorf("bin/suid lost its setuid bit: %v, %v", st, err)
	}
	if c := capability(t, filepath.Join(root, "opt/avamar/bin/avagent.bin")); c != nil {
		t.Errorf("avagent.bin has capabilities %x", c)
	}
}

// TestCapabilitiesRefused: capabilities libcap would not read make the
// package unusable, before anything is written.
func TestCapabilitiesRefused(t *testing.T) {
	root := t.TempDir()
	_, err := run(t, writeRPM(t, withCaps(t, map[string]string{testPrefix + "/bin/ping": "cap_no_such=ep"})), root)
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte(`unknown capability "cap_no_such"`)) {
		t.Errorf("install: %v, want a refusal naming the capability", err)
	}
	if exists(filepath.Join(root, "opt")) {
		t.Errorf("the refused package left files")
	}
}
