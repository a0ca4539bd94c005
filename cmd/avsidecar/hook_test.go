package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
)

// TestHookUsage: the hook command wants pre or post, and fails (exit 1,
// so Avamar fails the backup) when no sidecar answers on the socket.
func TestHookUsage(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "absent.sock")
	for _, tt := range []struct {
		args []string
		code int
		err  string
	}{
		{[]string{"hook"}, exitConfig, "hook needs pre or post"},
		{[]string{"hook", "during"}, exitConfig, "hook needs pre or post"},
		{[]string{"hook", "--socket", missing, "pre", "--clause"}, exitFailure, "call the sidecar's hooks at " + missing},
	} {
		var stdout, stderr bytes.Buffer
		if code := execute(tt.args, &stdout, &stderr); code != tt.code || !strings.Contains(stderr.String(), tt.err) {
			t.Errorf("%q: exit %d, stderr %q; want %d with %q", tt.args, code, stderr.String(), tt.code, tt.err)
		}
	}
}
