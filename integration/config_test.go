package integration

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/avsidecar/avsidecar/internal/testkit"
)

// TestBadConfigurationExits2 starts the real binary with hostile
// environments: each gets exit 2, one stderr line naming every problem,
// and the same error as one JSON line on stdout, for kubectl logs.
func TestBadConfigurationExits2(t *testing.T) {
	bins := testkit.BuildBinaries(t)
	good := func(root string) map[string]string {
		return map[string]string{"AVSIDECAR_ROOT": root, "AVAMAR_SERVER": "mcs", "NODE_IP": "10.0.0.7", "POD_NAME": "p", "AVSIDECAR_SSH_ADDR": "off"}
	}
	withRPMs := func(t *testing.T, n int) string {
		root := t.TempDir()
		os.MkdirAll(filepath.Join(root, "opt/avamar"), 0o755)
		for i := range n {
			os.WriteFile(filepath.Join(root, "opt/avamar", "AvamarClient-linux-sles11-x86_64-7.5."+string(rune('0'+i))+".rpm"), []byte("x"), 0o644)
		}
		return root
	}
	tests := []struct {
		name  string
		rpms  int
		env   map[string]string
		wants []string
	}{
		{"missing server", 1, map[string]string{"AVAMAR_SERVER": ""}, []string{"AVAMAR_SERVER is required"}},
		{"bad duration", 1, map[string]string{"AVSIDECAR_REGISTER_TIMEOUT": "forever"}, []string{"AVSIDECAR_REGISTER_TIMEOUT"}},
		{"port out of range", 1, map[string]string{"AVAMAR_LISTEN_PORT": "65536"}, []string{"AVAMAR_LISTEN_PORT"}},
		{"no rpm", 0, nil, []string{"no file matches"}},
		{"two rpms", 2, nil, []string{"2 files match"}},
		{"everything at once", 0, map[string]string{"AVAMAR_SERVER": "", "NODE_IP": "", "AVSIDECAR_SHUTDOWN_TIMEOUT": "0"},
			[]string{"AVAMAR_SERVER", "NODE_IP", "AVSIDECAR_SHUTDOWN_TIMEOUT", "no file matches"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := good(withRPMs(t, tt.rpms))
			for k, v := range tt.env {
				env[k] = v
			}
			cmd := exec.Command(bins.Avsidecar, "run")
			cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
			for k, v := range env {
				if v != "" {
					cmd.Env = append(cmd.Env, k+"="+v)
				}
			}
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			ee, ok := err.(*exec.ExitError)
			if !ok || ee.ExitCode() != 2 {
				t.Fatalf("exit %v, want 2; stderr %q", err, stderr.String())
			}
			lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
			if len(lines) != 1 {
				t.Fatalf("stderr has %d lines, want one: %q", len(lines), stderr.String())
			}
			var logged map[string]any
			if err := json.Unmarshal(stdout.Bytes(), &logged); err != nil || logged["component"] != "main" || logged["level"] != "error" {
				t.Fatalf("stdout is not one JSON error line: %q (%v)", stdout.String(), err)
			}
			for _, w := range tt.wants {
				if !strings.Contains(lines[0], w) {
					t.Errorf("stderr %q does not name %q", lines[0], w)
				}
				if e, _ := logged["error"].(string); !strings.Contains(e, w) {
					t.Errorf("log line %q does not name %q", stdout.String(), w)
				}
			}
		})
	}
}
