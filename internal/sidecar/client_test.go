package sidecar

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/avsidecar/avsidecar/internal/avclient"
	"github.com/avsidecar/avsidecar/internal/config"
	"github.com/avsidecar/avsidecar/internal/hooks"
	"github.com/avsidecar/avsidecar/internal/install"
	"github.com/avsidecar/avsidecar/internal/testkit"
	"github.com/avsidecar/avsidecar/internal/testkit/mcsproto"
)

// realSidecar builds the sidecar's real parts for the kit's client RPM
// (opts) under a fresh root, against a fake MCS, with env's variables on
// top of the defaults, and runs it until the test ends.
func realSidecar(t *testing.T, opts testkit.RPMOptions, env map[string]string) (*Sidecar, string, *testkit.MCS) {
	t.Helper()
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "opt/avamar"), 0o755); err != nil {
		t.Fatal(err)
	}
	testkit.WriteRPM(t, filepath.Join(root, "opt/avamar"), opts)
	m, err := testkit.StartMCS("127.0.0.1:0", testkit.MCSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	vars := map[string]string{
		"AVSIDECAR_ROOT": root, "AVAMAR_SERVER": "127.0.0.1:" + strconv.Itoa(m.Port()), "NODE_IP": "127.0.0.1",
		"AVAMAR_CLIENT_NAME": "pod-0", "AVAMAR_LISTEN_PORT": strconv.Itoa(testkit.FreePort(t)),
		"AVSIDECAR_HTTP_ADDR": "127.0.0.1:0", "AVSIDECAR_SSH_ADDR": "off", "AVSIDECAR_HOOKS_SOCKET": "/run/h.sock",
		"AVSIDECAR_REGISTER_BACKOFF_MAX": "1s", "AVSIDECAR_RESTART_BACKOFF_MAX": "1s", "AVSIDECAR_SHUTDOWN_TIMEOUT": "10s",
	}
	for k, v := range env {
		vars[k] = v
	}
	for k, v := range vars {
		t.Setenv(k, v)
	}
	cfg, err := config.Load(config.ScopeRun, config.Sources{Hostname: os.Hostname, FindRPM: install.FindRPM, FindPrefix: avclient.FindPrefix})
	if err != nil {
		t.Fatal(err)
	}
	logs := testkit.NewLogLines()
	s, err := New(cfg, zerolog.New(logs), Tuning{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	agent := filepath.Join(root, testkit.RPMPrefix, "bin/avagent.bin")
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("Run did not return")
		}
		for _, p := range testkit.Processes() {
			if strings.HasPrefix(p.Cmdline, agent+" ") && p.State != "Z" {
				t.Errorf("agent %d left after the stop: %s", p.PID, p.Cmdline)
			}
		}
		if t.Failed() {
			t.Logf("sidecar log:\n%s", logs.Raw())
		}
	})
	return s, root, m
}

// eventually polls the sidecar's status until cond holds: the status is
// only published as snapshots.
func eventually(t *testing.T, s *Sidecar, what string, cond func(Status) bool) Status {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		st := s.Status()
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; status %+v", what, st)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestClientStateInVarAvamar runs the real parts against the kit's client
// that keeps its state in /var/avamar: the sidecar finds that directory
// once the package is installed (through the var/ link or as the package's
// directory), writes the flag files there, registers there (avagent.cfg
// and cid.bin), follows avagent.log there, and says so in the status. With
// --fake-daemonize the agent forks a daemon: the supervisor adopts it
// through avagent.lck. The stop leaves no agent behind either way.
func TestClientStateInVarAvamar(t *testing.T) {
	for _, tt := range []struct {
		name      string
		link      bool
		daemonize bool
	}{
		{"package dir, foreground agent", false, false},
		{"var link, daemonizing agent", true, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{}
			if tt.daemonize {
				env["AVAMAR_AGENT_FLAGS"] = "--fake-daemonize"
			}
			if tt.link {
				// The package makes var/ a link: the state dir may not be
				// a directory there before the install.
				env["AVSIDECAR_STATE_DIR"] = "/var/avamar/avsidecar"
			}
			s, root, m := realSidecar(t, testkit.RPMOptions{StateDir: "/var/avamar", StateLink: tt.link}, env)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			if err := m.WaitReachable(ctx, "pod-0"); err != nil {
				t.Fatal(err)
			}
			state := filepath.Join(root, "var/avamar")
			st := eventually(t, s, "a running agent whose log is followed", func(st Status) bool {
				return st.Phase == PhaseRunning && st.Agent.Running && st.Agent.Daemonized == tt.daemonize && st.AgentLog.Lines > 0
			})
			how := map[bool]string{false: avclient.VarStateDir, true: avclient.VarSymlink}[tt.link]
			if st.Client == nil || st.Client.VarDir != state || st.Client.FoundBy != how {
				t.Errorf("client layout %+v, want %s found by %s", st.Client, state, how)
			}
			if st.AgentLog.Path != filepath.Join(state, "avagent.log") {
				t.Errorf("following %s, want /var/avamar's avagent.log", st.AgentLog.Path)
			}
			for _, f := range []string{"avagent.cmd", ".avagent", "avagent.cfg", "cid.bin", "avagent.lck"} {
				if _, err := os.Stat(filepath.Join(state, f)); err != nil {
					t.Errorf("%s not in /var/avamar: %v", f, err)
				}
			}
			if st.Agent.Daemonized != tt.daemonize {
				t.Errorf("agent daemonized %v, want %v: %+v", st.Agent.Daemonized, tt.daemonize, st.Agent)
			}
			lck, _ := os.ReadFile(filepath.Join(state, "avagent.lck"))
			if f := strings.Fields(string(lck)); len(f) == 0 || f[0] != strconv.Itoa(st.Agent.PID) {
				t.Errorf("supervising pid %d, lock file %q", st.Agent.PID, lck)
			}
		})
	}
}

// TestHooksThroughTheClient: with hooks configured, a backup the MCS
// starts with avsidecar's scripts selected runs the pre hooks, the backup
// and the post hooks; /v1/status and /metrics show the runs. A broken
// configuration is a fault, not a failed start, and fails the backup.
func TestHooksThroughTheClient(t *testing.T) {
	avsidecar := testkit.BuildAvsidecar(t)
	old := hookCommand
	hookCommand = func() (string, error) { return avsidecar, nil }
	t.Cleanup(func() { hookCommand = old })
	data := filepath.Join(t.TempDir(), "db")
	os.WriteFile(data, nil, 0o644)
	rec := func(word string) string { return `["/bin/sh", "-c", "echo ` + word + ` >> ` + data + `"]` }
	order := mcsproto.Backup{RunAtStart: hooks.PreScript, RunAtEnd: hooks.PostScript, Paths: []string{data}}

	t.Run("configured", func(t *testing.T) {
		s, _, m := realSidecar(t, testkit.RPMOptions{}, map[string]string{
			"AVSIDECAR_HOOKS": `{"pre": [{"name": "checkpoint", "command": ` + rec("pre") + `}], "post": [{"name": "resume", "command": ` + rec("post") + `}]}`,
		})
		eventually(t, s, "scripts installed and the agent running", func(st Status) bool {
			return st.Phase == PhaseRunning && st.Agent.Running && st.Hooks != nil && len(st.Hooks.Scripts) == 2
		})
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		if err := m.WaitReachable(ctx, "pod-0"); err != nil {
			t.Fatal(err)
		}
		r, err := m.Backup(ctx, "pod-0", order)
		if err != nil || !r.OK || r.Captured[data] != "pre\n" {
			t.Fatalf("backup %+v, %v", r, err)
		}
		if b, _ := os.ReadFile(data); string(b) != "pre\npost\n" {
			t.Errorf("data %q", b)
		}
		st := s.Status()
		if len(st.Hooks.Runs) != 2 || st.Hooks.Calls["pre/passed"] != 1 || st.Hooks.Calls["post/passed"] != 1 || st.Faults != nil {
			t.Errorf("hooks status %+v, faults %v", st.Hooks, st.Faults)
		}
		_, body := get(t, s, "/metrics")
		for _, want := range []string{`avsidecar_hook_calls_total{phase="pre",result="passed"} 1`, `avsidecar_hook_runs_total{outcome="ok",phase="post"} 1`} {
			if !strings.Contains(body, want) {
				t.Errorf("no %s in /metrics", want)
			}
		}
	})

	t.Run("broken", func(t *testing.T) {
		s, _, m := realSidecar(t, testkit.RPMOptions{}, map[string]string{"AVSIDECAR_HOOKS": `{"pre": [{"command": ["true"], "on_error": "maybe"}]}`})
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		if err := m.WaitReachable(ctx, "pod-0"); err != nil {
			t.Fatal(err)
		}
		eventually(t, s, "a running agent", func(st Status) bool { return st.Phase == PhaseRunning && st.Agent.Running })
		expect(t, s, "/readyz?verbose", 200, `[!]hooks: hooks: pre hook "pre-1": on_error "maybe"`)
		eventually(t, s, "the scripts", func(st Status) bool { return len(st.Hooks.Scripts) == 2 })
		r, err := m.Backup(ctx, "pod-0", order)
		if err != nil || r.OK || len(r.Steps) != 1 {
			t.Fatalf("backup %+v, %v: want it aborted", r, err)
		}
	})
}
