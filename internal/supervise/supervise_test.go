package supervise

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// waitFor polls cond until it holds; the supervisor publishes state only as
// snapshots, so there is no event to wait on.
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

func start(t *testing.T, cfg Config) (*Supervisor, func()) {
	t.Helper()
	s, err := New(cfg, zerolog.New(zerolog.NewTestWriter(t)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	return s, func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
}

func TestRestartsAndReportsCrashLoop(t *testing.T) {
	s, stop := start(t, Config{Path: "/bin/sh", Args: []string{"-c", "exit 3"},
		BackoffBase: time.Millisecond, BackoffMax: 4 * time.Millisecond, StableAfter: time.Hour, CrashLoopAfter: 3})
	defer stop()
	waitFor(t, "a crash loop", func() bool { return s.Status().CrashLoop })
	st := s.Status()
	if st.LastExit != "exit status 3" || st.Restarts < 2 || st.ShortRuns < 3 {
		t.Fatalf("status %+v", st)
	}
}

func TestStableRunResetsCrashLoop(t *testing.T) {
	dir := t.TempDir()
	broken := filepath.Join(dir, "broken")
	if err := os.WriteFile(broken, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	// Exits at once while the file exists, then stays up.
	script := `if [ -e "$1" ]; then exit 1; fi; exec sleep 60`
	s, stop := start(t, Config{Path: "/bin/sh", Args: []string{"-c", script, "sh", broken},
		BackoffBase: time.Millisecond, BackoffMax: 2 * time.Millisecond, StableAfter: 50 * time.Millisecond, CrashLoopAfter: 2})
	defer stop()
	waitFor(t, "a crash loop", func() bool { return s.Status().CrashLoop })
	os.Remove(broken)
	waitFor(t, "recovery", func() bool { st := s.Status(); return st.Running && !st.CrashLoop && st.ShortRuns == 0 })
}

// TestStopKillsTheGroup runs a leader that ignores SIGTERM and has a child:
// after Run returns, neither may be left.
func TestStopKillsTheGroup(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "child.pid")
	script := `trap '' TERM; sleep 300 & echo $! > "$1"; wait`
	s, stop := start(t, Config{Path: "/bin/sh", Args: []string{"-c", script, "sh", pidFile}, StopTimeout: 100 * time.Millisecond})
	var childPid int
	waitFor(t, "the grandchild", func() bool {
		b, err := os.ReadFile(pidFile)
		childPid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil && childPid > 0
	})
	leader := s.Status().PID
	stop()
	// SIGKILL is delivered, not awaited: give the kernel a moment to end
	// the orphaned grandchild, which is not ours to wait for.
	for _, pid := range []int{leader, childPid} {
		deadline := time.Now().Add(2 * time.Second)
		for alive(pid) && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		if alive(pid) {
			t.Errorf("pid %d survived the stop", pid)
		}
	}
}

// alive reports whether pid is a live process (zombies count as dead).
func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil {
		return false
	}
	f, err := os.Open(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return false
	}
	defer f.Close()
	line, _ := bufio.NewReader(f).ReadString('\n')
	fields := strings.Fields(line[strings.LastIndexByte(line, ')')+1:])
	return len(fields) > 0 && fields[0] != "Z"
}

// events is a zerolog writer that keeps every JSON line, so a test can read
// the logged fields.
type events struct {
	mu    sync.Mutex
	lines []map[string]any
}

func (e *events) Write(p []byte) (int, error) {
	var m map[string]any
	if err := json.Unmarshal(p, &m); err == nil {
		e.mu.Lock()
		e.lines = append(e.lines, m)
		e.mu.Unlock()
	}
	return len(p), nil
}

func (e *events) with(message string) []map[string]any {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []map[string]any
	for _, m := range e.lines {
		if m["message"] == message {
			out = append(out, m)
		}
	}
	return out
}

func startLogged(t *testing.T, cfg Config) (*Supervisor, *events, func()) {
	t.Helper()
	ev := &events{}
	s, err := New(cfg, zerolog.New(ev))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	return s, ev, func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
}

// TestCrashLoopKeepsLogTailAndGrowsBackoff: each short run's exit reports
// its code, the lines it wrote to its log (not older ones), and a wait no
// shorter than the one before until the cap.
func TestCrashLoopKeepsLogTailAndGrowsBackoff(t *testing.T) {
	logFile := filepath.Join(t.TempDir(), "agent.log")
	old := ""
	for i := range 50 {
		old += "old line " + strconv.Itoa(i) + "\n"
	}
	os.WriteFile(logFile, []byte(old), 0o644)
	script := `f=${1#--logfile=}; for i in 1 2 3 4 5 6 7 8 9 10 11 12; do echo "run line $i" >> "$f"; done; echo "fatal: disk on fire" >> "$f"; exit 7`
	s, ev, stop := startLogged(t, Config{Path: "/bin/sh", Args: []string{"-c", script, "sh", "--logfile=" + logFile},
		BackoffBase: 20 * time.Millisecond, BackoffMax: 160 * time.Millisecond, StableAfter: time.Hour, CrashLoopAfter: 3})
	defer stop()
	waitFor(t, "five exits", func() bool { return len(ev.with("agent exited, restarting")) >= 5 })
	st := s.Status()
	if !st.CrashLoop || st.LastExitCode != 7 || st.LastSignal != "" || st.LastExit != "exit status 7" {
		t.Fatalf("status %+v", st)
	}
	if len(st.LogTail) != 10 || st.LogTail[9] != "fatal: disk on fire" || st.LogTail[0] != "run line 4" {
		t.Fatalf("log tail %q, want this run's last 10 lines", st.LogTail)
	}
	exits := ev.with("agent exited, restarting")
	// Ceilings 20, 40, 80, 160ms: each wait lies above the one before; the
	// fifth is at the cap, in [80, 160).
	var prev float64
	for i, m := range exits[:5] {
		b := m["backoff_ms"].(float64) // zerolog writes durations in ms
		if m["attempt"].(float64) != float64(i+1) {
			t.Errorf("exit %d logged attempt %v", i+1, m["attempt"])
		}
		if i < 4 && b <= prev || i == 4 && b < 80 {
			t.Errorf("exit %d: backoff %vms after %vms, want growth up to the cap", i+1, b, prev)
		}
		if b >= 160 {
			t.Errorf("backoff %vms beyond the 160ms cap", b)
		}
		prev = b
	}
	if first := exits[0]["backoff_ms"].(float64); first < 10 || first >= 20 {
		t.Errorf("first backoff %vms, want [10,20)", first)
	}
	if loops := ev.with("agent is crash looping"); len(loops) != 1 || loops[0]["exit_code"].(float64) != 7 ||
		len(loops[0]["log_tail"].([]any)) != 10 {
		t.Errorf("crash loop lines %v, want one naming exit 7 with the tail", loops)
	}
}

func TestSignalledExit(t *testing.T) {
	s, _, stop := startLogged(t, Config{Path: "/bin/sh", Args: []string{"-c", "kill -KILL $$"},
		BackoffBase: time.Millisecond, BackoffMax: time.Millisecond, StableAfter: time.Hour})
	defer stop()
	waitFor(t, "an exit", func() bool { return s.Status().LastExit != "" })
	if st := s.Status(); st.LastSignal != "killed" || st.LastExitCode != -1 || st.LastExit != "signal: killed" {
		t.Fatalf("status %+v", st)
	}
}

// TestStableRunResetsBackoff: after a run that lasted StableAfter the next
// wait starts from the base again.
func TestStableRunResetsBackoff(t *testing.T) {
	dir := t.TempDir()
	stable := filepath.Join(dir, "stable")
	// Short runs until the file exists; then one run that outlives
	// StableAfter and exits when the file is removed.
	script := `if [ -e "$1" ]; then while [ -e "$1" ]; do sleep 0.01; done; fi; exit 1`
	s, ev, stop := startLogged(t, Config{Path: "/bin/sh", Args: []string{"-c", script, "sh", stable},
		BackoffBase: 10 * time.Millisecond, BackoffMax: 80 * time.Millisecond, StableAfter: 100 * time.Millisecond, CrashLoopAfter: 2})
	defer stop()
	waitFor(t, "backoff at its cap", func() bool {
		ex := ev.with("agent exited, restarting")
		return len(ex) >= 4 && ex[len(ex)-1]["backoff_ms"].(float64) >= 40
	})
	os.WriteFile(stable, nil, 0o644)
	waitFor(t, "a stable run", func() bool { return len(ev.with("agent stable again")) == 1 })
	if st := s.Status(); st.ShortRuns != 0 || st.CrashLoop || !st.Running {
		t.Fatalf("status after a stable run %+v", st)
	}
	n := len(ev.with("agent exited, restarting"))
	os.Remove(stable)
	waitFor(t, "the stable run's exit", func() bool { return len(ev.with("agent exited, restarting")) > n })
	m := ev.with("agent exited, restarting")[n]
	if m["attempt"].(float64) != 1 || m["backoff_ms"].(float64) >= 10 || m["short_runs"].(float64) != 0 {
		t.Fatalf("exit after a stable run logged %v, want attempt 1, backoff < 10ms, no short run", m)
	}
}
