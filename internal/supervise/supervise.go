// Package supervise keeps one foreground process running: it starts it in
// its own process group, restarts it with capped backoff when it exits,
// reports crash loops, and stops the whole group on shutdown.
//
// A process told to stay in the foreground may daemonize anyway: it exits 0
// at once and leaves a daemon in its place, in a session of its own. With
// Config.Adopt the supervisor asks, after such an exit, for that daemon; it
// then supervises the daemon as it would its own child (its end is an
// exit, restarted with backoff; a stop is SIGTERM, then SIGKILL, to it and
// its group) and says so in Status.Daemonized.
//
// Restart waits use "equal jitter": the n-th wait is drawn from
// [c/2, c) where c = min(BackoffMax, BackoffBase*2^n). Unlike full jitter
// every wait is at least as long as the one before (until the cap), so a
// crash loop visibly slows down, while pods that crash together still
// spread out. A run that lasts StableAfter resets the backoff.
package supervise

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/avsidecar/avsidecar/internal/backoff"
	"github.com/avsidecar/avsidecar/internal/millis"
	"github.com/avsidecar/avsidecar/internal/pid1"
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
	// LogFile is the process's own log; the last lines it wrote during a
	// run are kept in Status.LogTail when it exits, so a crash says why.
	// Empty means the value of a --logfile=PATH argument in Args, if any
	// (avagent's convention), else no tail.
	LogFile string
	// LogTailLines is how many lines of LogFile to keep (default 10).
	LogTailLines int
	// Adopt, when set, is called when the process exits with status 0 by
	// itself. started is when this run began, pid the process that exited.
	// It returns the daemon the process left in its place, watched, or nil
	// when there is none (then the exit is an exit like any other). It is
	// called even when ctx has ended meanwhile, and should look for a
	// moment then too: a daemon it finds is stopped at once.
	Adopt func(ctx context.Context, started time.Time, pid int) Daemon
}

// Daemon is a process that is not the supervisor's child but runs in the
// place of one: an agent that daemonized.
type Daemon interface {
	// PID is the daemon's process id.
	PID() int
	// Done is closed once the daemon has ended.
	Done() <-chan struct{}
	// Stop ends the daemon: SIGTERM, then SIGKILL after timeout.
	Stop(ctx context.Context, timeout time.Duration) error
	// Close stops watching it.
	Close()
}

// maxTailBytes bounds how much of the end of LogFile is read at an exit.
const maxTailBytes = 16 << 10

// Status is a snapshot of the supervised process.
type Status struct {
	Running   bool      `json:"running"`
	PID       int       `json:"pid,omitempty"`
	StartedAt time.Time `json:"started_at,omitzero"`
	Starts    int       `json:"starts"`
	Restarts  int       `json:"restarts"`
	// LastExit describes the last exit: "exit status 1" or "signal: killed".
	LastExit string `json:"last_exit,omitempty"`
	// LastExitCode is the last exit's code; -1 when a signal ended it or
	// it never started.
	LastExitCode int `json:"last_exit_code,omitempty"`
	// LastSignal names the signal that ended the last run ("killed"), if one did.
	LastSignal string    `json:"last_signal,omitempty"`
	LastExitAt time.Time `json:"last_exit_at,omitzero"`
	// LastRun is how long the last run lasted.
	LastRun millis.Duration `json:"last_run_ms,omitempty"`
	// LogTail holds the last lines the process wrote to its log file
	// during its last run, oldest first.
	LogTail []string `json:"log_tail,omitempty"`
	// ShortRuns counts the exits in a row that came before StableAfter;
	// a run that lasts StableAfter resets it.
	ShortRuns int `json:"short_runs"`
	// CrashLoop is true while the process is down after CrashLoopAfter
	// short runs in a row. A start clears it (so that a fixed agent is
	// ready at once); another short run sets it again.
	CrashLoop bool `json:"crash_loop"`
	// Backoff is the wait before the pending restart.
	Backoff millis.Duration `json:"backoff_ms,omitempty"`
	// NextStart is when the next restart is due while it waits out a backoff.
	NextStart time.Time `json:"next_start,omitzero"`
	// Daemonized is true while the supervised process is a daemon the
	// started one left in its place (see Config.Adopt); PID is the
	// daemon's then.
	Daemonized bool `json:"daemonized,omitempty"`
	// Adoptions counts the daemons adopted so far.
	Adoptions int `json:"adoptions,omitempty"`
}

// Supervisor runs one process under supervision.
type Supervisor struct {
	cfg Config
	log zerolog.Logger

	mu     sync.Mutex
	status Status
}

// New checks cfg and fills its defaults.
func New(cfg Config, log zerolog.Logger) (*Supervisor, error) {
	if cfg.Path == "" {
		return nil, errors.New("supervise: no executable")
	}
	if cfg.BackoffBase <= 0 {
		cfg.BackoffBase = time.Second
	}
	if cfg.BackoffMax <= 0 {
		cfg.BackoffMax = time.Minute
	}
	// The operator's cap wins over the default base.
	cfg.BackoffBase = min(cfg.BackoffBase, cfg.BackoffMax)
	if cfg.StableAfter <= 0 {
		cfg.StableAfter = 30 * time.Second
	}
	if cfg.CrashLoopAfter <= 0 {
		cfg.CrashLoopAfter = 3
	}
	if cfg.StopTimeout <= 0 {
		cfg.StopTimeout = 10 * time.Second
	}
	if cfg.LogFile == "" {
		for _, a := range cfg.Args {
			if v, ok := strings.CutPrefix(a, "--logfile="); ok {
				cfg.LogFile = v
			}
		}
	}
	if cfg.LogTailLines <= 0 {
		cfg.LogTailLines = 10
	}
	return &Supervisor{cfg: cfg, log: log}, nil
}

// Status returns a snapshot.
func (s *Supervisor) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.status
	st.LogTail = append([]string(nil), s.status.LogTail...)
	return st
}

// Run keeps the process running until ctx is done, then stops its group and
// returns nil. A process that cannot even start (a missing executable) is
// retried like one that exited: the volume it lives on may come back.
func (s *Supervisor) Run(ctx context.Context) error {
	b := backoff.Backoff{Base: s.cfg.BackoffBase, Max: s.cfg.BackoffMax}
	attempt := 0 // exits since the last stable run
	for {
		started := time.Now()
		logStart, err := s.runOnce(ctx)
		if ctx.Err() != nil {
			return nil
		}
		ran := time.Since(started)
		if ran >= s.cfg.StableAfter {
			b.Reset()
			attempt = 0
		}
		attempt++
		wait := equalJitter(b.Next())
		st := s.exited(err, ran, wait, logStart)
		ev := s.log.Warn()
		if st.CrashLoop {
			ev = s.log.Error()
		}
		ev.Int("attempt", attempt).Dur("backoff_ms", wait).Str("exit", st.LastExit).Int("exit_code", st.LastExitCode).
			Str("signal", st.LastSignal).Dur("ran_ms", ran).Int("short_runs", st.ShortRuns).Bool("crash_loop", st.CrashLoop).
			Strs("log_tail", st.LogTail).Msg("agent exited, restarting")
		if !backoff.Sleep(ctx, wait) {
			return nil
		}
	}
}

// equalJitter draws a wait from [ceiling/2, ceiling).
func equalJitter(ceiling time.Duration) time.Duration {
	half := ceiling / 2
	if half <= 0 {
		return ceiling
	}
	return half + rand.N(ceiling-half)
}

// exited records an exit that is followed by a wait before the next start,
// and returns the new status. logStart is the size LogFile had when the
// run began, so that the tail is this run's.
func (s *Supervisor) exited(err error, ran, wait time.Duration, logStart int64) Status {
	tail := s.logTail(logStart)
	s.mu.Lock()
	defer s.mu.Unlock()
	st := &s.status
	st.Running, st.PID, st.Daemonized = false, 0, false
	st.LastExit, st.LastExitAt, st.LastRun = describeExit(err), time.Now(), millis.Duration(ran)
	st.LastExitCode, st.LastSignal = exitCodeAndSignal(err)
	st.LogTail = tail
	if ran >= s.cfg.StableAfter {
		st.ShortRuns = 0
	} else {
		st.ShortRuns++
	}
	wasLoop := st.CrashLoop
	st.CrashLoop = st.ShortRuns >= s.cfg.CrashLoopAfter
	if st.CrashLoop && !wasLoop && st.ShortRuns == s.cfg.CrashLoopAfter {
		s.log.Error().Int("short_runs", st.ShortRuns).Str("exit", st.LastExit).Int("exit_code", st.LastExitCode).
			Str("signal", st.LastSignal).Strs("log_tail", tail).Msg("agent is crash looping")
	}
	st.Backoff = millis.Duration(wait)
	st.NextStart = time.Now().Add(wait)
	out := *st
	out.LogTail = append([]string(nil), tail...)
	return out
}

// logSize is LogFile's current size (0 when there is none).
func (s *Supervisor) logSize() int64 {
	if s.cfg.LogFile == "" {
		return 0
	}
	fi, err := os.Stat(s.cfg.LogFile)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// logTail reads the last LogTailLines lines LogFile got since offset from,
// reading at most maxTailBytes from its end. A file that shrank (rotated
// or truncated) is read from its start.
func (s *Supervisor) logTail(from int64) []string {
	if s.cfg.LogFile == "" {
		return nil
	}
	f, err := os.Open(s.cfg.LogFile)
	if err != nil {
		return nil
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil
	}
	size := fi.Size()
	if from > size {
		from = 0
	}
	start := max(from, size-maxTailBytes)
	buf := make([]byte, size-start)
	n, _ := f.ReadAt(buf, start)
	buf = buf[:n]
	if start > from { // the first line is cut: drop it
		if i := bytes.IndexByte(buf, '\n'); i >= 0 {
			buf = buf[i+1:]
		}
	}
	lines := strings.Split(strings.TrimRight(string(buf), "\n"), "\n")
	if len(lines) == 1 && lines[0] == "" {
		return nil
	}
	if len(lines) > s.cfg.LogTailLines {
		lines = lines[len(lines)-s.cfg.LogTailLines:]
	}
	return lines
}

// runOnce starts the process and waits for it to exit or for ctx. It
// reports the size the log file had at the start, and the exit error.
func (s *Supervisor) runOnce(ctx context.Context) (logStart int64, exitErr error) {
	logStart = s.logSize()
	started := time.Now()
	cmd := exec.Command(s.cfg.Path, s.cfg.Args...)
	cmd.Env, cmd.Dir = s.cfg.Env, s.cfg.Dir
	p, err := pid1.StartLines(cmd, func(line string) {
		s.log.Info().Str("line", line).Msg("agent output")
	})
	if err != nil {
		return logStart, fmt.Errorf("start %s: %w", s.cfg.Path, err)
	}
	s.mu.Lock()
	s.status.Running, s.status.PID, s.status.StartedAt = true, p.Pid, time.Now()
	s.status.NextStart, s.status.Backoff, s.status.CrashLoop = time.Time{}, 0, false
	s.status.Starts++
	if s.status.Starts > 1 {
		s.status.Restarts++
	}
	s.mu.Unlock()
	s.log.Info().Int("pid", p.Pid).Str("path", s.cfg.Path).Msg("agent started")

	stable := time.NewTimer(s.cfg.StableAfter)
	defer stable.Stop()
	for {
		select {
		case <-p.Done():
			err := p.Wait()
			if err != nil || s.cfg.Adopt == nil {
				return logStart, err
			}
			// Even when a stop has come meanwhile: a daemon left in the
			// agent's place must be found to be stopped.
			d := s.cfg.Adopt(ctx, started, p.Pid)
			if d == nil {
				return logStart, nil
			}
			return logStart, s.superviseDaemon(ctx, d, stable)
		case <-stable.C:
			s.stableAgain(p.Pid)
		case <-ctx.Done():
			s.stop(p)
			s.markStopped()
			return logStart, nil
		}
	}
}

// stableAgain records that the run of pid has lasted StableAfter.
func (s *Supervisor) stableAgain(pid int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.status.ShortRuns > 0 || s.status.CrashLoop {
		s.log.Info().Int("pid", pid).Msg("agent stable again")
	}
	s.status.ShortRuns, s.status.CrashLoop = 0, false
}

// errDaemonEnded is the exit of an adopted daemon: not being its parent,
// the supervisor cannot know its status.
var errDaemonEnded = errors.New("daemon ended")

// superviseDaemon supervises the daemon a started process left in its
// place until it ends (errDaemonEnded) or ctx is done (it is stopped: nil).
func (s *Supervisor) superviseDaemon(ctx context.Context, d Daemon, stable *time.Timer) error {
	defer d.Close()
	s.mu.Lock()
	s.status.PID, s.status.Daemonized = d.PID(), true
	s.status.Adoptions++
	s.mu.Unlock()
	s.log.Warn().Int("pid", d.PID()).Msg("agent daemonized despite --daemon=false, supervising the daemon")
	for {
		select {
		case <-d.Done():
			s.log.Warn().Int("pid", d.PID()).Msg("agent daemon ended")
			return fmt.Errorf("%w: pid %d", errDaemonEnded, d.PID())
		case <-stable.C:
			s.stableAgain(d.PID())
		case <-ctx.Done():
			if err := d.Stop(context.Background(), s.cfg.StopTimeout); err != nil {
				s.log.Error().Err(err).Int("pid", d.PID()).Msg("agent daemon not stopped")
			} else {
				s.log.Info().Int("pid", d.PID()).Msg("agent daemon stopped")
			}
			s.markStopped()
			return nil
		}
	}
}

func (s *Supervisor) markStopped() {
	s.mu.Lock()
	s.status.Running, s.status.PID, s.status.Daemonized = false, 0, false
	s.mu.Unlock()
}

// stop sends SIGTERM to the process group, waits up to StopTimeout for the
// leader to exit, then SIGKILLs the group. The group is killed at the end in
// any case, so no helper of the agent outlives it.
func (s *Supervisor) stop(p *pid1.Process) {
	_ = p.SignalGroup(syscall.SIGTERM) // ESRCH: already gone
	t := time.NewTimer(s.cfg.StopTimeout)
	defer t.Stop()
	select {
	case <-p.Done():
		s.log.Info().Int("pid", p.Pid).Str("exit", describeExit(p.Wait())).Msg("agent stopped")
	case <-t.C:
		s.log.Warn().Int("pid", p.Pid).Dur("timeout_ms", s.cfg.StopTimeout).Msg("agent ignored SIGTERM, killing its group")
		_ = p.SignalGroup(syscall.SIGKILL)
		<-p.Done()
	}
	_ = p.SignalGroup(syscall.SIGKILL)
}

// exitCodeAndSignal splits an exit into its code (-1 for a signal or a
// failed start) and the name of the signal that ended it, if any.
func exitCodeAndSignal(err error) (int, string) {
	if err == nil {
		return 0, ""
	}
	var ee *pid1.ExitError
	if !errors.As(err, &ee) {
		return -1, ""
	}
	if ee.Status.Signaled() {
		return -1, ee.Status.Signal().String()
	}
	return ee.ExitCode(), ""
}

func describeExit(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}
