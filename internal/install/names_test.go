package install

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

// TestLongNames: rpm installs names of up to 246 bytes (its temporary
// name adds 9 to the 255 a name may have), and so does the installer, a
// %config file's .rpmnew included (7 bytes); a longer one is refused
// before anything is written, as rpm cannot install it either.
func TestLongNames(t *testing.T) {
	for _, n := range []int{239, 246} {
		root := t.TempDir()
		name := strings.Repeat("n", n)
		files := append(baseFiles("1.0"), file(testPrefix+"/bin/"+name, 0o644, "long\n"), config(testPrefix+"/etc/"+name, "conf\n"))
		mustRun(t, writeRPM(t, pack(t, packOpts{files: files})), root)
		if readFile(t, filepath.Join(root, "opt/avamar/bin", name)) != "long\n" {
			t.Errorf("name of %d bytes not installed", n)
		}
		// An upgrade over an edited one writes the new one beside it.
		writeFile(t, filepath.Join(root, "opt/avamar/etc", name), "edited\n")
		files = append(baseFiles("2.0"), file(testPrefix+"/bin/"+name, 0o644, "long\n"), config(testPrefix+"/etc/"+name, "conf 2\n"))
		mustRun(t, writeRPM(t, pack(t, packOpts{version: "2.0", files: files})), root)
		if readFile(t, filepath.Join(root, "opt/avamar/etc", name+".rpmnew")) != "conf 2\n" {
			t.Errorf("no .rpmnew for a name of %d bytes", n)
		}
	}
	root := t.TempDir()
	files := append(baseFiles("1.0"), file(testPrefix+"/bin/"+strings.Repeat("n", 247), 0o644, "long\n"))
	_, err := run(t, writeRPM(t, pack(t, packOpts{files: files})), root)
	if !errors.Is(err, ErrUnusable) || !strings.Contains(err.Error(), "247 bytes is too long") {
		t.Errorf("name of 247 bytes: %v, want a refusal that says why", err)
	}
	if exists(filepath.Join(root, "opt")) {
		t.Errorf("the refused package left files")
	}
}
