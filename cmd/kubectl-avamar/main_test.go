package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func runMain(t *testing.T, in string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	stdin = strings.NewReader(in)
	t.Cleanup(func() { stdin = os.Stdin })
	var out, errOut bytes.Buffer
	code = execute(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

const bareNginx = "../../examples/kustomize/nginx/statefulset.yaml"

// TestInjectCommand: manifests from stdin or -f, the result on stdout,
// notes on stderr; a bad manifest exits 2 with one message and writes no
// manifest.
func TestInjectCommand(t *testing.T) {
	bare, err := os.ReadFile(bareNginx)
	if err != nil {
		t.Fatal(err)
	}
	code, fromStdin, errOut := runMain(t, string(bare), "inject", "--image", "site:1")
	if code != 0 || !strings.Contains(fromStdin, "name: avamar\n") || errOut != "" {
		t.Fatalf("inject from stdin: exit %d, stderr %q", code, errOut)
	}
	code, fromFile, _ := runMain(t, "", "inject", "-f", bareNginx, "--image", "site:1")
	if code != 0 || fromFile != fromStdin {
		t.Errorf("inject -f: exit %d, output differs from stdin's", code)
	}
	// Twice is once, through the command line.
	if code, again, _ := runMain(t, fromStdin, "inject", "-f", "-", "--image", "site:1"); code != 0 || again != fromStdin {
		t.Errorf("inject of inject's output changed it (exit %d)", code)
	}
	// Two files, one manifest out; browse off.
	dir := t.TempDir()
	svc := filepath.Join(dir, "svc.yaml")
	os.WriteFile(svc, []byte("apiVersion: v1\nkind: Service\nmetadata:\n  name: nginx\nspec:\n  clusterIP: None\n"), 0o644)
	code, out, _ := runMain(t, "", "inject", "-f", bareNginx, "-f", svc, "--image", "site:1", "--browse-roots", "off")
	if code != 0 || !strings.HasSuffix(out, "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: nginx\nspec:\n  clusterIP: None\n") || strings.Contains(out, "AVSIDECAR_BROWSE_ROOTS") {
		t.Errorf("two files, browse off: exit %d:\n%s", code, out)
	}

	bad := strings.Replace(string(bare), "containers:", "contaners:", 1)
	code, out, errOut = runMain(t, bad, "inject", "--image", "site:1")
	want := `kubectl avamar inject: stdin, document 1 (StatefulSet nginx): unknown field "spec.template.spec.contaners"` + "\n"
	if code != exitUsage || out != "" || errOut != want {
		t.Errorf("bad manifest: exit %d, stdout %q, stderr %q; want exit 2, no output, %q", code, out, errOut, want)
	}
	code, out, errOut = runMain(t, string(bare), "inject")
	if code != exitUsage || out != "" || !strings.Contains(errOut, "--image is required") {
		t.Errorf("no image: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	code, _, errOut = runMain(t, "", "inject", "--image", "x", "-f", filepath.Join(dir, "missing.yaml"))
	if code != exitUsage || !strings.Contains(errOut, "missing.yaml: no such file") {
		t.Errorf("missing file: exit %d, %q", code, errOut)
	}
}
