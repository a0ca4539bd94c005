package supervise

import (
	"bufio"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
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
	for _, pid := range []int{leader, childPid} {
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

func TestRestartRequest(t *testing.T) {
	s, stop := start(t, Config{Path: "/bin/sleep", Args: []string{"60"}, StopTimeout: time.Second})
	defer stop()
	waitFor(t, "first start", func() bool { return s.Status().Running })
	first := s.Status().PID
	s.Restart()
	waitFor(t, "second start", func() bool { st := s.Status(); return st.Running && st.PID != first })
	if st := s.Status(); st.Restarts != 1 || st.ShortRuns != 0 {
		t.Fatalf("status after requested restart %+v", st)
	}
}
