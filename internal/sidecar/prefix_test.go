package sidecar

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/avsidecar/avsidecar/internal/avclient"
	"github.com/avsidecar/avsidecar/internal/install"
	"github.com/avsidecar/avsidecar/internal/testkit"
)

// TestClientInOptAvamar: a client installed under /opt/avamar (as
// `rpm -i --relocate /usr/local/avamar=/opt/avamar` leaves it, the other
// default place Relax-and-Recover knows) is found with AVAMAR_PREFIX
// unset: nothing is installed again, and the var dir, the flag files and
// the registration are there.
func TestClientInOptAvamar(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "opt/avamar"), 0o755); err != nil {
		t.Fatal(err)
	}
	rpmPath := testkit.WriteRPM(t, filepath.Join(root, "opt/avamar"), testkit.RPMOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := install.Install(ctx, install.Config{RPM: rpmPath, Root: root, Prefix: "/opt/avamar"}, zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AVAMAR_PREFIX", "")
	os.Unsetenv("AVAMAR_PREFIX")
	s, _, m := realSidecar(t, testkit.RPMOptions{}, map[string]string{"AVSIDECAR_ROOT": root})
	if err := m.WaitReachable(ctx, "pod-0"); err != nil {
		t.Fatal(err)
	}
	st := eventually(t, s, "a running agent", func(st Status) bool { return st.Phase == PhaseRunning && st.Agent.Running })
	prefix := filepath.Join(root, "opt/avamar")
	t.Logf("AVAMAR_PREFIX unset: install %+v; client %+v", st.Install, st.Client)
	if s.cfg.Prefix != "/opt/avamar" || st.Client == nil || st.Client.Prefix != prefix || st.Client.VarDir != filepath.Join(prefix, "var") || st.Client.FoundBy != avclient.VarPrefix {
		t.Errorf("prefix %s, client %+v: want the client in /opt/avamar", s.cfg.Prefix, st.Client)
	}
	if st.Install == nil || st.Install.Changed {
		t.Errorf("install %+v: the client was installed again", st.Install)
	}
	for _, f := range []string{"avagent.cmd", ".avagent", "avagent.cfg", "cid.bin"} {
		if _, err := os.Stat(filepath.Join(prefix, "var", f)); err != nil {
			t.Error(err)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "usr/local/avamar")); err == nil {
		t.Error("a second client was installed in /usr/local/avamar")
	}
}
