package hooks

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/avsidecar/avsidecar/internal/testkit"
)

// served runs h until the test ends and returns its Run's result channel.
func served(t *testing.T, h *Hooks) <-chan error {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Run did not return")
		}
	})
	return done
}

// waitFor polls cond: the hooks publish their state only as snapshots.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// dial reports whether the socket accepts a connection.
func dial(path string) bool {
	c, err := net.Dial("unix", path)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// TestServeAndInstallScripts: the socket answers at once, mode 0600; the
// scripts are installed once the package is, executable, and run this
// avsidecar's hook command on this socket; they are not rewritten when
// nothing changed.
func TestServeAndInstallScripts(t *testing.T) {
	dir := t.TempDir()
	installed := make(chan struct{})
	cfg := Config{Spec: `{"pre": [{"command": ["true"]}], "post": []}`, Socket: filepath.Join(dir, "run/h.sock"),
		ScriptsDir: filepath.Join(dir, "etc/scripts"), Command: "/opt/it's/avsidecar", Installed: installed, LeaseFile: filepath.Join(dir, "lease.json")}
	h, err := New(cfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	served(t, h)
	waitFor(t, "the socket", func() bool { return dial(cfg.Socket) })
	if fi, err := os.Stat(cfg.Socket); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v (%v), want 0600", fi.Mode(), err)
	}
	run, err := Call(context.Background(), cfg.Socket, PhasePre, []string{"--clause"})
	if err != nil || run.Result != ResultPassed || outcomes(run) != "pre-1=ok" {
		t.Fatalf("Call = %+v, %v", run, err)
	}
	if run, err := Call(context.Background(), cfg.Socket, PhasePost, nil); err != nil || run.Result != ResultPassed || len(run.Hooks) != 0 {
		t.Errorf("empty post phase: %+v, %v", run, err)
	}
	if _, err := Call(context.Background(), cfg.Socket, "during", nil); err == nil || !strings.Contains(err.Error(), `no phase "during"`) {
		t.Errorf("unknown phase: %v", err)
	}
	if _, err := os.Stat(cfg.ScriptsDir); !os.IsNotExist(err) {
		t.Fatalf("scripts written before the package was installed: %v", err)
	}

	close(installed)
	waitFor(t, "the scripts", func() bool { return len(h.Status().Scripts) == 2 })
	for phase, name := range map[string]string{PhasePre: PreScript, PhasePost: PostScript} {
		p := filepath.Join(cfg.ScriptsDir, name)
		b, err := os.ReadFile(p)
		fi, _ := os.Stat(p)
		want := `exec '/opt/it'\''s/avsidecar' hook --socket '` + cfg.Socket + `' ` + phase + ` "$@"` + "\n"
		if err != nil || !strings.HasSuffix(string(b), want) || !strings.HasPrefix(string(b), "#!/bin/sh\n"+scriptMark) || fi.Mode().Perm() != 0o755 {
			t.Errorf("%s (%v, %v):\n%s", name, err, fi.Mode(), b)
		}
	}
}

// TestScriptsNeverOverwriteOthers: a script avsidecar wrote at an earlier
// start is brought up to date; one of that name it did not write stays as
// it is.
func TestScriptsNeverOverwriteOthers(t *testing.T) {
	dir := t.TempDir()
	scripts := filepath.Join(dir, "scripts")
	os.MkdirAll(scripts, 0o755)
	old := script("/old/avsidecar", "/old.sock", PhasePost)
	os.WriteFile(filepath.Join(scripts, PostScript), []byte(old), 0o755)
	mine := "#!/bin/sh\necho the site's own script\n"
	os.WriteFile(filepath.Join(scripts, PreScript), []byte(mine), 0o755)
	logs := testkit.NewLogLines()
	h, _ := New(Config{Spec: `{}`, Socket: filepath.Join(dir, "h.sock"), ScriptsDir: scripts, Command: "/bin/avsidecar", LeaseFile: filepath.Join(dir, "lease.json")}, zerolog.New(logs))
	served(t, h)
	logs.Wait(t, 0, "refusal", 10*time.Second, testkit.Msg("", "hook scripts not installed"))
	if b, _ := os.ReadFile(filepath.Join(scripts, PreScript)); string(b) != mine {
		t.Errorf("the site's script was replaced:\n%s", b)
	}

	os.Remove(filepath.Join(scripts, PreScript))
	h, _ = New(Config{Spec: `{}`, Socket: filepath.Join(dir, "h2.sock"), ScriptsDir: scripts, Command: "/bin/avsidecar", LeaseFile: filepath.Join(dir, "lease.json")}, zerolog.New(logs))
	served(t, h)
	waitFor(t, "the scripts", func() bool { return len(h.Status().Scripts) == 2 })
	if b, _ := os.ReadFile(filepath.Join(scripts, PostScript)); string(b) != script("/bin/avsidecar", filepath.Join(dir, "h2.sock"), PhasePost) {
		t.Errorf("an earlier start's script was not brought up to date:\n%s", b)
	}
}

// TestBrokenConfiguration: a broken configuration is no failed start: it
// is reported, the socket and the scripts are there, and a call gets the
// error, so that the backup fails rather than runs without its hooks.
func TestBrokenConfiguration(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"bad json", Config{Spec: `{"pre": [{"command": []}]}`}, "give a command or an http call"},
		{"both", Config{Spec: `{}`, File: "/etc/hooks.json"}, "not both"},
		{"missing file", Config{File: filepath.Join(dir, "absent.json")}, "no such file"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d := t.TempDir()
			tt.cfg.Socket, tt.cfg.ScriptsDir, tt.cfg.Command = filepath.Join(d, "h.sock"), filepath.Join(d, "scripts"), "/bin/avsidecar"
			tt.cfg.LeaseFile = filepath.Join(d, "lease.json")
			h, err := New(tt.cfg, zerolog.Nop())
			if err != nil {
				t.Fatalf("New failed on a broken hook configuration: %v", err)
			}
			if err := h.ConfigError(); err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(h.Status().ConfigError, tt.want) {
				t.Fatalf("ConfigError = %v, status %q; want %q", err, h.Status().ConfigError, tt.want)
			}
			if absent := tt.name == "missing file"; h.Status().FileAbsent != absent {
				t.Errorf("FileAbsent = %v, want %v", h.Status().FileAbsent, absent)
			}
			served(t, h)
			waitFor(t, "the scripts", func() bool { return len(h.Status().Scripts) == 2 })
			_, err = Call(context.Background(), tt.cfg.Socket, PhasePre, nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Call = %v, want the configuration's error", err)
			}
			if h.Status().Calls["pre/failed"] != 1 {
				t.Errorf("calls %v", h.Status().Calls)
			}
		})
	}
}

// TestSocketPaths: a stale socket is replaced; a live one is not taken
// over; a path too long for a unix socket is a clear error.
func TestSocketPaths(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "h.sock")
	stale, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()
	h, _ := New(Config{Spec: `{}`, Socket: sock, ScriptsDir: filepath.Join(dir, "s"), Command: "/bin/avsidecar", LeaseFile: filepath.Join(dir, "lease.json")}, zerolog.Nop())
	served(t, h)
	waitFor(t, "the socket", func() bool { return dial(sock) })

	second, _ := New(Config{Spec: `{}`, Socket: sock, ScriptsDir: filepath.Join(dir, "s2"), Command: "/bin/avsidecar", LeaseFile: filepath.Join(dir, "lease.json")}, zerolog.Nop())
	if err := second.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "another process serves it") {
		t.Errorf("second Run = %v", err)
	}
	long := filepath.Join(dir, strings.Repeat("x", 120), "h.sock")
	third, _ := New(Config{Spec: `{}`, Socket: long, ScriptsDir: filepath.Join(dir, "s3"), Command: "/bin/avsidecar", LeaseFile: filepath.Join(dir, "lease.json")}, zerolog.Nop())
	if err := third.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "AVSIDECAR_HOOKS_SOCKET") {
		t.Errorf("long path Run = %v", err)
	}
}
