package pid1

import (
	"errors"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
)

// TestMain plays the reaper's child when re-executed by Run: it orphans
// three processes, then waits for a forwarded SIGTERM and exits 7.
func TestMain(m *testing.M) {
	if !IsChild() {
		os.Exit(m.Run())
	}
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	for range 3 {
		// sh starts sleep in the background and exits: sleep is orphaned.
		if err := exec.Command("/bin/sh", "-c", "sleep 0.05 &").Run(); err != nil {
			os.Exit(3)
		}
	}
	<-term
	os.Exit(7)
}

// events is a zerolog writer that counts messages and wakes waiters.
type events struct {
	mu   sync.Mutex
	msgs []string
	more chan struct{}
}

func (e *events) Write(p []byte) (int, error) {
	e.mu.Lock()
	e.msgs = append(e.msgs, string(p))
	close(e.more)
	e.more = make(chan struct{})
	e.mu.Unlock()
	return len(p), nil
}

func (e *events) waitCount(t *testing.T, substr string, n int) {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		e.mu.Lock()
		c := 0
		for _, m := range e.msgs {
			if strings.Contains(m, substr) {
				c++
			}
		}
		more := e.more
		e.mu.Unlock()
		if c >= n {
			return
		}
		select {
		case <-more:
		case <-timeout:
			t.Fatalf("saw %d of %d %q", c, n, substr)
		}
	}
}

func TestRunReapsOrphansAndForwardsSignals(t *testing.T) {
	ev := &events{more: make(chan struct{})}
	log := zerolog.New(ev).Level(zerolog.DebugLevel)
	type result struct {
		code int
		err  error
	}
	done := make(chan result, 1)
	go func() {
		code, err := Run([]string{"-test.run=^$"}, log)
		done <- result{code, err}
	}()
	ev.waitCount(t, "reaped orphan", 3)
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil || r.code != 7 {
		t.Fatalf("Run = %d, %v; want the child's exit code 7", r.code, r.err)
	}
	// Nothing is left to reap: no zombie children of ours.
	var ws unix.WaitStatus
	if pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil); !errors.Is(err, unix.ECHILD) {
		t.Fatalf("Wait4 after Run = %d, %v; want ECHILD", pid, err)
	}
}
