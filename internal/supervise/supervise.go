// Package supervise keeps one foreground process running: it starts it in
// its own process group, restarts it with capped backoff when it exits,
// reports crash loops, and stops the whole group on shutdown.
package supervise

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/avsidecar/avsidecar/internal/backoff"
)

// Config says what to run and how to treat its exits.
type Config struct {
	// Path is the executable.
	Path string
	// Args are the arguments after the executable name.
	Args []string
	// Env is the child's environment; nil inherits avsidecar's.
	Env []string
	// Dir is the child's working directory; empty inherits avsidecar's.
	Dir string
	// BackoffBase is the first restart wait's ceiling (default 1s).
	BackoffBase time.Duration
	// BackoffMax caps the wait between restarts (AVSIDECAR_RESTART_BACKOFF_MAX).
	BackoffMax time.Duration
	// StableAfter is how long a run must last to count as healthy: it
	// resets the backoff and the crash-loop count (default 30s).
	StableAfter time.Duration
	// CrashLoopAfter is how many short runs in a row make a crash loop
	// (default 3).
	CrashLoopAfter int
	// StopTimeout is how long the group gets between SIGTERM and SIGKILL.
	StopTimeout time.Duration
}

// Status is a snapshot of the supervised process.
type Status struct {
	Running   bool      `json:"running"`
	PID       int       `json:"pid,omitempty"`
	StartedAt time.Time `json:"started_at,omitzero"`
	Starts    int       `json:"starts"`
	Restarts  int       `json:"restarts"`
	// LastExit describes the last exit: "exit status 1" or "signal: killed".
	LastExit   string    `json:"last_exit,omitempty"`
	LastExitAt time.Time `json:"last_exit_at,omitzero"`
	// ShortRuns counts the exits in a row that came before StableAfter.
	ShortRuns int  `json:"short_runs"`
	CrashLoop bool `json:"crash_loop"`
	// NextStart is when the next restart is due while it waits out a backoff.
	NextStart time.Time `json:"next_start,omitzero"`
}

// Supervisor runs one process under supervision.
type Supervisor struct {
	cfg Config
	log zerolog.Logger

	mu      sync.Mutex
	status  Status
	restart chan struct{}
}

// New checks cfg and fills its defaults.
func New(cfg Config, log zerolog.Logger) (*Supervisor, error) {
	if cfg.Path == "" {
		return nil, errors.New("supervise: no executable")
	}
	if cfg.BackoffBase <= 0 {
		cfg.BackoffBase = time.Second
	}
	if cfg.BackoffMax < cfg.BackoffBase {
		cfg.BackoffMax = cfg.BackoffBase
	}
	if cfg.StableAfter <= 0 {
		cfg.StableAfter = 30 * time.Second
	}
	if cfg.CrashLoopAfter <= 0 {
		cfg.CrashLoopAfter = 3
	}
	if cfg.StopTimeout <= 0 {
		cfg.StopTimeout = 10 * time.Second
	}
	return &Supervisor{cfg: cfg, log: log, restart: make(chan struct{}, 1)}, nil
}

// Status returns a snapshot.
func (s *Supervisor) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.status
}

// Restart asks for the running process to be stopped and started again at
// once, without backoff (for example after its flag files changed).
func (s *Supervisor) Restart() {
	select {
	case s.restart <- struct{}{}:
	default:
	}
}

// Run keeps the process running until ctx is done, then stops its group and
// returns nil. A process that cannot even start (a missing executable) is
// retried like one that exited: the volume it lives on may come back.
func (s *Supervisor) Run(ctx context.Context) error {
	b := backoff.Backoff{Base: s.cfg.BackoffBase, Max: s.cfg.BackoffMax, Jitter: true}
	for {
		started := time.Now()
		err, requested := s.runOnce(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if requested {
			b.Reset()
			continue
		}
		wait := s.exited(err, time.Since(started), &b)
		s.log.Warn().Str("exit", s.Status().LastExit).Dur("backoff", wait).
			Int("attempt", s.Status().ShortRuns).Bool("crash_loop", s.Status().CrashLoop).Msg("agent exited, restarting")
		if !backoff.Sleep(ctx, wait) {
			return nil
		}
	}
}

// exited records an exit and returns how long to wait before the next start.
func (s *Supervisor) exited(err error, ran time.Duration, b *backoff.Backoff) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := &s.status
	st.Running, st.PID = false, 0
	st.LastExit, st.LastExitAt = describeExit(err), time.Now()
	if ran >= s.cfg.StableAfter {
		b.Reset()
		st.ShortRuns = 0
	}
	st.ShortRuns++
	wasLoop := st.CrashLoop
	st.CrashLoop = st.ShortRuns >= s.cfg.CrashLoopAfter
	if st.CrashLoop && !wasLoop {
		s.log.Error().Int("short_runs", st.ShortRuns).Str("exit", st.LastExit).Msg("agent is crash looping")
	}
	wait := b.Next()
	st.NextStart = time.Now().Add(wait)
	return wait
}

// runOnce starts the process and waits for it to exit, for ctx, or for a
// restart request. It reports the exit error and whether a restart was
// requested.
func (s *Supervisor) runOnce(ctx context.Context) (error, bool) {
	cmd := exec.Command(s.cfg.Path, s.cfg.Args...)
	cmd.Env, cmd.Dir = s.cfg.Env, s.cfg.Dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out := lineLogger(s.log)
	defer out.Close()
	cmd.Stdout, cmd.Stderr = out, out
	// Grandchildren may keep the output pipe open; do not wait on them.
	cmd.WaitDelay = time.Second

	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", s.cfg.Path, err), false
	}
	s.mu.Lock()
	s.status.Running, s.status.PID, s.status.StartedAt = true, cmd.Process.Pid, time.Now()
	s.status.NextStart = time.Time{}
	s.status.Starts++
	if s.status.Starts > 1 {
		s.status.Restarts++
	}
	s.mu.Unlock()
	s.log.Info().Int("pid", cmd.Process.Pid).Str("path", s.cfg.Path).Msg("agent started")

	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	stable := time.NewTimer(s.cfg.StableAfter)
	defer stable.Stop()
	for {
		select {
		case err := <-done:
			return err, false
		case <-stable.C:
			s.mu.Lock()
			if s.status.ShortRuns > 0 || s.status.CrashLoop {
				s.log.Info().Int("pid", cmd.Process.Pid).Msg("agent stable again")
			}
			s.status.ShortRuns, s.status.CrashLoop = 0, false
			s.mu.Unlock()
		case <-ctx.Done():
			s.stop(cmd.Process.Pid, done)
			s.markStopped()
			return nil, false
		case <-s.restart:
			s.log.Info().Int("pid", cmd.Process.Pid).Msg("agent restart requested")
			s.stop(cmd.Process.Pid, done)
			s.markStopped()
			return nil, true
		}
	}
}

func (s *Supervisor) markStopped() {
	s.mu.Lock()
	s.status.Running, s.status.PID = false, 0
	s.mu.Unlock()
}

// stop sends SIGTERM to the process group, waits up to StopTimeout for the
// leader to exit, then SIGKILLs the group. The group is killed at the end in
// any case, so no helper of the agent outlives it.
func (s *Supervisor) stop(pid int, done <-chan error) {
	signalGroup(pid, syscall.SIGTERM)
	t := time.NewTimer(s.cfg.StopTimeout)
	defer t.Stop()
	select {
	case err := <-done:
		s.log.Info().Int("pid", pid).Str("exit", describeExit(err)).Msg("agent stopped")
	case <-t.C:
		s.log.Warn().Int("pid", pid).Dur("timeout", s.cfg.StopTimeout).Msg("agent ignored SIGTERM, killing its group")
		signalGroup(pid, syscall.SIGKILL)
		<-done
	}
	signalGroup(pid, syscall.SIGKILL)
}

// signalGroup signals the process group led by pid; a group that is already
// gone (ESRCH) is not an error.
func signalGroup(pid int, sig syscall.Signal) {
	_ = syscall.Kill(-pid, sig)
}

func describeExit(err error) string {
	if err == nil {
		return "exit status 0"
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ProcessState.String()
	}
	return err.Error()
}

// lineLogger returns a writer that logs each line the agent prints.
func lineLogger(log zerolog.Logger) io.WriteCloser {
	r, w := io.Pipe()
	go func() {
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 0, 4096), 64*1024)
		for sc.Scan() {
			log.Info().Str("line", sc.Text()).Msg("agent output")
		}
		_, _ = io.Copy(io.Discard, r)
	}()
	return w
}
