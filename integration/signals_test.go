package integration

import (
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSignalsAsPID1 sends PID 1 every signal an operator or a runtime might
// send besides the stop signals: none may end it or touch avagent. SIGQUIT
// dumps the goroutines and goes on; the rest are logged and ignored
// (SIGPIPE silently). Then SIGTERM still stops it cleanly, exit 0.
func TestSignalsAsPID1(t *testing.T) {
	w := newWorld(t, false)
	s := w.startPID1(t)
	s.eventually(t, "/readyz", 200, 60*time.Second)
	agent := agentPID(t, s)
	init := s.init(t)

	for _, sig := range []syscall.Signal{syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGABRT, syscall.SIGSYS,
		syscall.SIGTRAP, syscall.SIGBUS, syscall.SIGFPE, syscall.SIGSEGV, syscall.SIGALRM, syscall.SIGTSTP, syscall.SIGPWR} {
		from := s.log.Mark()
		signal(t, init, sig)
		s.log.Wait(t, from, sig.String()+" logged as ignored", 10*time.Second, msg("main", "signal ignored", "signal", sig.String()))
	}
	from := s.log.Mark()
	signal(t, init, syscall.SIGQUIT)
	dump := s.log.Wait(t, from, "the goroutine dump", 10*time.Second, msg("main", "goroutine dump written to stderr, going on"))
	if n, _ := dump["bytes"].(float64); n < 100 {
		t.Errorf("goroutine dump of %v bytes", dump["bytes"])
	}
	signal(t, init, syscall.SIGPIPE)

	// Still serving, still ready, the same avagent.
	s.eventually(t, "/readyz", 200, 10*time.Second)
	if now := agentPID(t, s); now != agent {
		t.Fatalf("avagent is pid %d after the signals, was %d", now, agent)
	}
	if st := s.status(t); st["agent"].(map[string]any)["restarts"].(float64) != 0 {
		t.Fatalf("avagent restarted: %v", st["agent"])
	}

	signal(t, init, syscall.SIGTERM)
	if code := s.exitCode(t, 15*time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0", code)
	}
	s.log.Wait(t, 0, "the stop", time.Second, msg("main", "stopped"))
}

// agentPID is the host pid of the sidecar's running avagent.
func agentPID(t *testing.T, s *sidecar) int {
	t.Helper()
	for _, p := range descendants(s.cmd.Process.Pid) {
		if strings.Contains(p.Cmdline, "avagent.bin --daemon=false") && p.State != "Z" {
			return p.PID
		}
	}
	t.Fatal("no avagent process in the sidecar")
	return 0
}
