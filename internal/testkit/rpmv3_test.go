package testkit_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/avsidecar/avsidecar/internal/testkit"
)

// TestBuildRPMv3: rpm reads the package as a v3 one (it warns that v3 is
// deprecated), finds its files, and verifies its digest.
func TestBuildRPMv3(t *testing.T) {
	rpm := testkit.NeedCommand(t, "rpm")
	b, err := testkit.BuildRPMv3("oldpkg", "1.0", "1", []testkit.V3File{
		{Path: "/opt/v3", Mode: 0o40755, MTime: 946684800},
		{Path: "/opt/v3/tool", Mode: 0o100755, Body: "tool\n", MTime: 946684800},
		{Path: "/opt/v3/link", Mode: 0o120777, Body: "tool", MTime: 946684800},
	})
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "oldpkg.rpm")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(rpm, "-qp", "--qf", "%{NEVRA} [%{FILENAMES} ]\n", p).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "v3 packages are deprecated") ||
		!strings.Contains(string(out), "oldpkg-1.0-1.noarch /opt/v3 /opt/v3/link /opt/v3/tool") {
		t.Errorf("rpm -qp: %v\n%s", err, out)
	}
	if out, err := exec.Command(rpm, "-K", p).CombinedOutput(); err != nil || !strings.Contains(string(out), "digests OK") {
		t.Errorf("rpm -K: %v\n%s", err, out)
	}
}
