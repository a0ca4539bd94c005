package hooks

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/avsidecar/avsidecar/internal/testkit"
	"github.com/avsidecar/avsidecar/internal/testkit/mcsproto"
)

// agentWorld is the kit's fake agent running for a client whose scripts
// directory holds avsidecar's hook scripts, with avsidecar's own binary
// behind them: a backup work order goes through the same processes as in
// a pod (agent -> script -> avsidecar hook -> socket -> hooks).
type agentWorld struct {
	bins    testkit.Binaries
	prefix  string
	scripts string
	addr    string
	data    string
}

func newAgentWorld(t *testing.T) *agentWorld {
	t.Helper()
	w := &agentWorld{bins: testkit.BuildBinaries(t), prefix: t.TempDir()}
	w.scripts = filepath.Join(w.prefix, "etc/scripts")
	vardir := filepath.Join(w.prefix, "var")
	for _, d := range []string{w.scripts, vardir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	port := testkit.FreePort(t)
	w.addr = "127.0.0.1:" + strconv.Itoa(port)
	w.data = filepath.Join(t.TempDir(), "db")
	if err := os.WriteFile(w.data, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	agent := exec.Command(w.bins.Avkit, "avagent", "--daemon=false", "--vardir="+vardir, "--sysdir="+filepath.Join(w.prefix, "etc")+"/",
		"--listenport="+strconv.Itoa(port), "--hostname=pod-0")
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { agent.Process.Kill(); agent.Wait() })
	waitFor(t, "the agent", func() bool {
		b, _ := os.ReadFile(filepath.Join(vardir, "avagent.log"))
		return strings.Contains(string(b), "Client Agent started")
	})
	return w
}

// serve runs the sidecar's hooks with spec and waits for the scripts.
func (w *agentWorld) serve(t *testing.T, spec string) (*Hooks, context.CancelFunc) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "h.sock")
	h, err := New(Config{Spec: spec, Socket: sock, ScriptsDir: w.scripts, Command: w.bins.Avsidecar, LeaseFile: filepath.Join(t.TempDir(), "lease.json")}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	stop := func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
	t.Cleanup(func() { cancel() })
	waitFor(t, "the scripts for this socket", func() bool {
		pre, _ := os.ReadFile(filepath.Join(w.scripts, PreScript))
		post, _ := os.ReadFile(filepath.Join(w.scripts, PostScript))
		return strings.Contains(string(pre), sock) && strings.Contains(string(post), sock) && dial(sock)
	})
	return h, stop
}

// backup runs a backup with avsidecar's scripts selected in the dataset.
func (w *agentWorld) backup(t *testing.T) mcsproto.BackupReply {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r, err := testkit.RunBackup(ctx, w.addr, mcsproto.Backup{RunAtStart: PreScript, RunAtEnd: PostScript, Paths: []string{w.data}})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func steps(r mcsproto.BackupReply) string {
	var out []string
	for _, s := range r.Steps {
		out = append(out, s.Step+"="+strconv.Itoa(s.ExitCode))
	}
	return strings.Join(out, " ")
}

func output(r mcsproto.BackupReply, step string) string {
	for _, s := range r.Steps {
		if s.Step == step {
			return strings.Join(s.Output, "\n")
		}
	}
	return ""
}

func (w *agentWorld) dataIs(t *testing.T, want string) {
	t.Helper()
	if b, _ := os.ReadFile(w.data); string(b) != want {
		t.Errorf("data %q, want %q", b, want)
	}
	if err := os.WriteFile(w.data, nil, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestBackupWithHooks runs backups through the fake agent, the installed
// scripts and the real avsidecar binary: pre hooks run before the backup
// (which captures what they did) and post hooks after; a hook past its
// timeout is killed; on_error fail aborts the backup (or fails it, after),
// continue lets it go on; a broken configuration or a sidecar that is not
// there fails the backup instead of letting it run without its hooks.
func TestBackupWithHooks(t *testing.T) {
	w := newAgentWorld(t)
	rec := func(word string) string {
		return `["/bin/sh", "-c", "echo ` + word + ` >> ` + w.data + `"]`
	}

	t.Run("order", func(t *testing.T) {
		h, _ := w.serve(t, `{"pre": [{"name": "checkpoint", "command": `+rec("pre")+`}], "post": [{"name": "resume", "command": `+rec("post")+`}]}`)
		r := w.backup(t)
		if !r.OK || steps(r) != "run_at_start=0 backup=0 run_at_end=0" || r.Captured[w.data] != "pre\n" {
			t.Fatalf("backup %+v, want pre, a backup that sees pre only, post", r)
		}
		w.dataIs(t, "pre\npost\n")
		for _, want := range []string{"avsidecar hook pre: checkpoint (command): ok in", "avsidecar hook pre: passed (1 hooks"} {
			if !strings.Contains(output(r, mcsproto.StepRunAtStart), want) {
				t.Errorf("run-at-start output lacks %q:\n%s", want, output(r, mcsproto.StepRunAtStart))
			}
		}
		if st := h.Status(); st.Calls["pre/passed"] != 1 || st.Calls["post/passed"] != 1 || st.Hooks["pre/ok"] != 1 || st.Hooks["post/ok"] != 1 {
			t.Errorf("status counts %v %v", st.Calls, st.Hooks)
		}
	})

	t.Run("timeout fails the backup", func(t *testing.T) {
		_, _ = w.serve(t, `{"pre": [{"name": "freeze", "command": ["sleep", "30"], "timeout": "300ms"}, {"name": "after", "command": `+rec("pre")+`}],
			"post": [{"command": `+rec("post")+`}]}`)
		r := w.backup(t)
		if r.OK || steps(r) != "run_at_start=1" {
			t.Fatalf("backup %+v, want it aborted by the start script", r)
		}
		out := output(r, mcsproto.StepRunAtStart)
		for _, want := range []string{"freeze (command): timeout", "no end within 300ms", "after: skipped", "the pre hooks failed",
			"the post hooks ran at once (pre-failed)"} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
		// The post hooks undid what the pre phase did before it failed.
		w.dataIs(t, "post\n")
	})

	t.Run("timeout, continue", func(t *testing.T) {
		_, _ = w.serve(t, `{"pre": [{"command": ["sleep", "30"], "timeout": "300ms", "on_error": "continue"}, {"command": `+rec("pre")+`}],
			"post": [{"command": `+rec("post")+`}]}`)
		r := w.backup(t)
		if !r.OK || steps(r) != "run_at_start=0 backup=0 run_at_end=0" || r.Captured[w.data] != "pre\n" {
			t.Fatalf("backup %+v, want it to go on", r)
		}
		w.dataIs(t, "pre\npost\n")
	})

	t.Run("failed post hook", func(t *testing.T) {
		_, _ = w.serve(t, `{"post": [{"name": "resume", "command": ["sh", "-c", "exit 3"]}, {"name": "log", "command": `+rec("post")+`}]}`)
		r := w.backup(t)
		if r.OK || steps(r) != "run_at_start=0 backup=0 run_at_end=1" || !strings.Contains(r.Reason, "exception") {
			t.Fatalf("backup %+v, want it failed after the fact", r)
		}
		// Every post hook ran: the application must be resumed.
		w.dataIs(t, "post\n")
	})

	t.Run("broken configuration", func(t *testing.T) {
		_, _ = w.serve(t, `{"pre": [{"command": ["true"], "timeout": "forever"}]}`)
		r := w.backup(t)
		if r.OK || steps(r) != "run_at_start=1" || !strings.Contains(output(r, mcsproto.StepRunAtStart), "did not run the pre hooks") {
			t.Fatalf("backup %+v, want it aborted with the configuration's error", r)
		}
	})

	t.Run("sidecar gone", func(t *testing.T) {
		_, stop := w.serve(t, `{"pre": [{"command": `+rec("pre")+`}]}`)
		stop()
		r := w.backup(t)
		if r.OK || steps(r) != "run_at_start=1" || !strings.Contains(output(r, mcsproto.StepRunAtStart), "call the sidecar's hooks") {
			t.Fatalf("backup %+v, want it aborted", r)
		}
		w.dataIs(t, "")
	})
}
