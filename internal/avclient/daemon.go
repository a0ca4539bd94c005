package avclient

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// DaemonPID returns the pid of the agent daemon this client's lock file
// names, and 0 when none runs. A running avagent records its pid as the
// first whitespace-separated field of var/avagent.lck (as public scripts
// read it); var/avagent.pid is read when the lock file is missing or names
// no running agent. A lock or pid file outlives a crashed agent and a pid
// outlives its process, so the number alone proves nothing: the process
// must run this client's avagent.bin.
func (c Client) DaemonPID() int {
	for _, file := range []string{c.LockFile(), c.PIDFile()} {
		if pid := recordedPID(file); pid != 0 && c.runsAgent(pid) {
			return pid
		}
	}
	return 0
}

// recordedPID is the pid in the first field of file, or 0 when there is
// none (or it is ours, our parent's, or init's).
func recordedPID(file string) int {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0
	}
	fields := strings.Fields(string(b))
	if len(fields) == 0 {
		return 0
	}
	pid, err := strconv.Atoi(fields[0])
	if err != nil || pid <= 1 || pid == os.Getpid() || pid == os.Getppid() {
		return 0
	}
	return pid
}

// runsAgent reports whether pid is a live (not zombie) process whose
// executable is this client's avagent.bin.
func (c Client) runsAgent(pid int) bool {
	proc := filepath.Join("/proc", strconv.Itoa(pid))
	stat, err := os.ReadFile(filepath.Join(proc, "stat"))
	if err != nil {
		return false
	}
	s := string(stat)
	if f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:]); len(f) == 0 || f[0] == "Z" || f[0] == "X" {
		return false
	}
	agent, err := os.Stat(c.Agent())
	if err != nil {
		return false
	}
	if exe, err := os.Stat(filepath.Join(proc, "exe")); err == nil && os.SameFile(exe, agent) {
		return true
	}
	// The binary may have been replaced by an upgrade since the daemon
	// started (its exe is then "(deleted)"): compare the path it was
	// started as.
	cmdline, err := os.ReadFile(filepath.Join(proc, "cmdline"))
	if err != nil {
		return false
	}
	argv0, _, _ := strings.Cut(string(cmdline), "\x00")
	want, err1 := filepath.EvalSymlinks(filepath.Dir(c.Agent()))
	got, err2 := filepath.EvalSymlinks(filepath.Dir(argv0))
	return err1 == nil && err2 == nil && want == got && filepath.Base(argv0) == filepath.Base(c.Agent())
}

// StopDaemon stops the agent DaemonPID names, if one runs: the daemon the
// init script's register verb starts, or one an earlier avsidecar left. It
// sends SIGTERM, waits up to timeout for the process to end, then sends
// SIGKILL. It returns the pid it stopped (0 when none ran).
func (c Client) StopDaemon(ctx context.Context, timeout time.Duration) (int, error) {
	pid := c.DaemonPID()
	if pid == 0 {
		return 0, nil
	}
	d, err := c.OpenDaemon(pid)
	if err != nil || d == nil {
		return 0, err
	}
	defer d.Close()
	return pid, d.Stop(ctx, timeout)
}

// FindDaemon waits up to wait for the lock file to name a running agent
// other than exited whose lock file was written at or after since: the
// daemon an agent started in its place when it daemonized although it was
// told --daemon=false. It returns that daemon, watched, or nil. When ctx
// ends it still looks for a moment (cancelGrace), so that a stop that
// comes as the agent forks still finds the daemon, to stop it.
func (c Client) FindDaemon(ctx context.Context, since time.Time, exited int, wait time.Duration) *Daemon {
	tick := time.NewTicker(lockPoll)
	defer tick.Stop()
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	done := ctx.Done()
	for {
		if fi, err := os.Stat(c.LockFile()); err == nil && !fi.ModTime().Before(since.Truncate(time.Second)) {
			if pid := recordedPID(c.LockFile()); pid != 0 && pid != exited && c.runsAgent(pid) {
				if d, err := c.OpenDaemon(pid); err == nil && d != nil {
					return d
				}
			}
		}
		select {
		case <-tick.C:
		case <-deadline.C:
			return nil
		case <-done:
			done = nil
			deadline.Reset(min(wait, cancelGrace))
		}
	}
}

// cancelGrace is how long FindDaemon goes on looking once its context has
// ended.
const cancelGrace = time.Second

// lockPoll is how often FindDaemon looks at the lock file: a daemon writes
// it once, soon after it starts.
const lockPoll = 50 * time.Millisecond

// Daemon is a running agent that is not avsidecar's child (a daemon the
// init script started, one an earlier start left, one an agent forked in
// its place), watched through a pidfd: its end is seen by the runtime's
// poller, without a thread or a timer, and a signal can never reach a
// process that reused its pid. Once orphaned, it is reaped by avsidecar's
// reaper like any orphan.
type Daemon struct {
	pid  int
	f    *os.File
	done chan struct{}
}

// OpenDaemon watches pid, which must run this client's agent; it returns
// nil (and no error) when it does not, or no longer, run.
func (c Client) OpenDaemon(pid int) (*Daemon, error) {
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if errors.Is(err, unix.ESRCH) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("watch agent daemon %d: %w", pid, err)
	}
	f := os.NewFile(uintptr(fd), "pidfd")
	if !c.runsAgent(pid) { // the pid may have been reused between the check and the open
		f.Close()
		return nil, nil
	}
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("watch agent daemon %d: %w", pid, err)
	}
	d := &Daemon{pid: pid, f: f, done: make(chan struct{})}
	go func() {
		defer close(d.done)
		// A pidfd is readable once its process has ended; until then the
		// poller parks this goroutine. Close ends the wait too.
		_ = rc.Read(func(fd uintptr) bool {
			return pidfdReadable(int(fd))
		})
	}()
	return d, nil
}

// pidfdReadable reports whether the pidfd fd is readable (its process
// ended), or broken. poll(2) is asked again when a signal interrupts it:
// the runtime's own (SIGURG, which preempts goroutines) arrive at any time,
// and an EINTR taken for the end made a live daemon look dead, and the
// supervisor start a second agent beside it.
func pidfdReadable(fd int) bool {
	for {
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		return err != nil || n > 0
	}
}

// PID is the daemon's process id.
func (d *Daemon) PID() int { return d.pid }

// Done is closed once the daemon has ended (or Close was called).
func (d *Daemon) Done() <-chan struct{} { return d.done }

// Close stops watching.
func (d *Daemon) Close() { d.f.Close() }

// signal sends sig to the daemon and, when it leads a process group (a
// daemon calls setsid), to its group, so that no helper of it outlives it.
// A daemon that is gone is not an error.
func (d *Daemon) signal(sig unix.Signal) error {
	rc, err := d.f.SyscallConn()
	if err != nil {
		return nil // closed: nothing to signal
	}
	var serr error
	_ = rc.Control(func(fd uintptr) { serr = unix.PidfdSendSignal(int(fd), sig, nil, 0) })
	if serr != nil && !errors.Is(serr, unix.ESRCH) {
		return fmt.Errorf("signal agent daemon %d: %w", d.pid, serr)
	}
	if pgid, err := unix.Getpgid(d.pid); err == nil && pgid == d.pid {
		_ = unix.Kill(-d.pid, sig)
	}
	return nil
}

// Stop sends SIGTERM, waits up to timeout for the daemon to end, then sends
// SIGKILL and waits a little more. It returns nil once the daemon has ended.
func (d *Daemon) Stop(ctx context.Context, timeout time.Duration) error {
	if err := d.signal(unix.SIGTERM); err != nil {
		return err
	}
	if d.wait(ctx, timeout) {
		return nil
	}
	if err := d.signal(unix.SIGKILL); err != nil {
		return err
	}
	if !d.wait(context.Background(), 5*time.Second) {
		return fmt.Errorf("agent daemon %d survived SIGKILL", d.pid)
	}
	return nil
}

// wait reports whether the daemon ended within timeout, ctx permitting.
func (d *Daemon) wait(ctx context.Context, timeout time.Duration) bool {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-d.done:
		return true
	case <-t.C:
	case <-ctx.Done():
	}
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}
