package integration

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// hookWorld is a world whose sidecar has hooks: spec, served on a socket
// in its root.
func hookWorld(t *testing.T, spec, shutdown string) (*world, string) {
	t.Helper()
	w := newWorld(t, false, "AVSIDECAR_HOOKS="+spec, "AVSIDECAR_HOOKS_SOCKET=/run/avsidecar/hooks.sock",
		"AVSIDECAR_SHUTDOWN_TIMEOUT="+shutdown)
	return w, filepath.Join(w.root, "run/avsidecar/hooks.sock")
}

// hookCall runs `avsidecar hook PHASE` as the Avamar scripts do, in the
// background; the returned function waits for its exit code and output.
func hookCall(t *testing.T, bin, socket, phase string) func() (int, string) {
	t.Helper()
	cmd := hookCallCmd(t, bin, socket, phase)
	return func() (int, string) {
		select {
		case <-cmd.done:
		case <-time.After(2 * time.Minute):
			t.Fatalf("avsidecar hook %s still running", phase)
		}
		return cmd.ProcessState.ExitCode(), cmd.out.String()
	}
}

// hookProcess is a running `avsidecar hook`.
type hookProcess struct {
	*exec.Cmd
	out  bytes.Buffer
	done chan struct{}
}

// hookCallCmd starts `avsidecar hook PHASE`; the test kills it if it is
// still running at the end.
func hookCallCmd(t *testing.T, bin, socket, phase string) *hookProcess {
	t.Helper()
	p := &hookProcess{Cmd: exec.Command(bin, "hook", "--socket", socket, phase), done: make(chan struct{})}
	p.Stdout, p.Stderr = &p.out, &p.out
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.Wait(); close(p.done) }()
	t.Cleanup(func() { _ = p.Process.Kill(); <-p.done })
	return p
}

// stopDuringPost starts a sidecar as PID 1 with hooks spec, runs the pre
// phase and starts the post phase as the scripts do, waits for the post
// hook to write "resuming" into trace, sends SIGTERM and wants exit 0. It
// returns the world and the post call's end.
func stopDuringPost(t *testing.T, spec, shutdown, trace string) (*world, *sidecar, func() (int, string)) {
	t.Helper()
	w, sock := hookWorld(t, spec, shutdown)
	s := w.startPID1(t)
	s.waitHooks(t, sock)
	if code, out := hookCall(t, w.bins.Avsidecar, sock, "pre")(); code != 0 {
		t.Fatalf("hook pre: exit %d\n%s", code, out)
	}
	post := hookCall(t, w.bins.Avsidecar, sock, "post")
	waitFile(t, trace, "resuming", 30*time.Second)
	signal(t, s.init(t), syscall.SIGTERM)
	if code := s.exitCode(t, 30*time.Second); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
	return w, s, post
}

// waitHooks waits until the sidecar's hooks answer on sock: they serve
// from the start, before the install and the registration.
func (s *sidecar) waitHooks(t *testing.T, sock string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			return
		}
		select {
		case <-s.done:
			t.Fatal("avsidecar exited before its hooks answered")
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no hooks on %s within a minute", sock)
		}
	}
}

// stopPID1 stops a sidecar started by startPID1 as the kubelet does, at
// the end of a test: SIGTERM to PID 1 (unshare does not pass it on), and
// exit 0.
func (s *sidecar) stopPID1(t *testing.T) {
	t.Helper()
	signal(t, s.init(t), syscall.SIGTERM)
	if code := s.exitCode(t, 30*time.Second); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
}

// waitFile waits for path to hold want.
func waitFile(t *testing.T, path, want string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		b, _ := os.ReadFile(path)
		if strings.Contains(string(b), want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s holds %q, want %q within %s", path, b, want, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestStopWaitsForPostHook: SIGTERM a second into a 6 s post hook (the one
// that resumes the application). The sidecar, PID 1, waits for it within
// AVSIDECAR_SHUTDOWN_TIMEOUT (20 s), the hook ends, the script gets its
// answer, and the sidecar exits 0.
func TestStopWaitsForPostHook(t *testing.T) {
	trace := filepath.Join(t.TempDir(), "trace")
	spec := `{"pre": [{"name": "pause", "command": ["/bin/sh", "-c", "echo paused >> ` + trace + `"]}],
		"post": [{"name": "resume", "command": ["/bin/sh", "-c", "echo resuming >> ` + trace + `; sleep 6; echo resumed >> ` + trace + `"], "timeout": "1m"}]}`
	_, _, post := stopDuringPost(t, spec, "20s", trace)
	if b, _ := os.ReadFile(trace); string(b) != "paused\nresuming\nresumed\n" {
		t.Errorf("the post hook was cut: trace %q", b)
	}
	if code, out := post(); code != 0 || !strings.Contains(out, "resume (command): ok") {
		t.Errorf("hook post: exit %d\n%s", code, out)
	}
}

// TestStopCutsPostHookThenStartThaws: a post hook longer than the stop
// deadline is cut, and the cut is logged; the freeze lease stays, so the
// next start runs the post hooks before it installs or registers anything.
func TestStopCutsPostHookThenStartThaws(t *testing.T) {
	dir := t.TempDir()
	trace, once := filepath.Join(dir, "trace"), filepath.Join(dir, "once")
	// The first run of the post hook hangs; the next one is quick.
	resume := `echo resuming >> ` + trace + `; if [ -e ` + once + ` ]; then echo resumed >> ` + trace + `; else touch ` + once + `; sleep 60; fi`
	spec := `{"pre": [{"name": "pause", "command": ["/bin/sh", "-c", "echo paused >> ` + trace + `"]}],
		"post": [{"name": "resume", "command": ["/bin/sh", "-c", "` + resume + `"], "timeout": "2m"}]}`
	w, s, post := stopDuringPost(t, spec, "3s", trace)
	s.log.Wait(t, 0, "the cut logged", time.Second, msg("hooks", "hook phase cut by the stop", "phase", "post"))
	if code, out := post(); code == 0 {
		t.Errorf("hook post of a cut phase: exit 0\n%s", out)
	}

	s = w.startPID1(t)
	s.log.Wait(t, 0, "the thaw at start", 60*time.Second, msg("hooks", "freeze lease thawed", "by", "start"))
	s.log.Wait(t, 0, "the client located", 60*time.Second, msg("main", "client located"))
	raw := s.log.Raw()
	if thaw, located := strings.Index(raw, `"freeze lease thawed"`), strings.Index(raw, `"client located"`); thaw > located {
		t.Errorf("the thaw came after the install:\n%s", raw)
	}
	if b, _ := os.ReadFile(trace); string(b) != "paused\nresuming\nresuming\nresumed\n" {
		t.Errorf("trace %q, want the post hook run again at start", b)
	}
	st := s.status(t)["hooks"].(map[string]any)
	if st["lease"] != nil || st["last_thaw"].(map[string]any)["by"] != "start" {
		t.Errorf("after the thaw at start: lease %v, last thaw %v", st["lease"], st["last_thaw"])
	}
	m := s.scrape(t)
	if m["avsidecar_hook_thaws_total{by=start}"] != 1 || m["avsidecar_hook_freeze_open{}"] != 0 {
		t.Errorf("metrics after the thaw at start: %v", pick(m, "avsidecar_hook_thaws", "avsidecar_hook_freeze"))
	}
	out, err := exec.Command(w.bins.Avsidecar, "status", "--addr", w.http).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "the last freeze ended") || !strings.Contains(string(out), "by start") {
		t.Errorf("avsidecar status: %v\n%s", err, out)
	}
	s.stopPID1(t)
}
