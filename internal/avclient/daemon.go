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

// DaemonPID returns the pid recorded in var/avagent.pid when it names a
// live process running this client's avagent.bin, and 0 otherwise. A pid
// file outlives a crashed agent and a pid outlives its process, so the
// number alone proves nothing: the process must run this client's binary.
func (c Client) DaemonPID() int {
	b, err := os.ReadFile(c.PIDFile())
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 || pid == os.Getpid() || pid == os.Getppid() {
		return 0
	}
	if !c.runsAgent(pid) {
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

// StopDaemon stops the agent that var/avagent.pid names, if one runs: the
// daemon the init script starts, or one an earlier avsidecar left. It
// sends SIGTERM, waits up to timeout for the process to end, then sends
// SIGKILL. It returns the pid it stopped (0 when none ran). The process is
// not started by avsidecar, so only the reaper waits for it (once it is
// orphaned here): a pidfd tells when it has ended.
func (c Client) StopDaemon(ctx context.Context, timeout time.Duration) (int, error) {
	pid := c.DaemonPID()
	if pid == 0 {
		return 0, nil
	}
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		if errors.Is(err, unix.ESRCH) {
			return 0, nil
		}
		return pid, fmt.Errorf("stop agent daemon %d: %w", pid, err)
	}
	defer unix.Close(fd)
	if !c.runsAgent(pid) { // the pid may have been reused between the check and the open
		return 0, nil
	}
	if err := unix.PidfdSendSignal(fd, unix.SIGTERM, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
		return pid, fmt.Errorf("stop agent daemon %d: %w", pid, err)
	}
	if exited(ctx, fd, timeout) {
		return pid, nil
	}
	if err := unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
		return pid, fmt.Errorf("kill agent daemon %d: %w", pid, err)
	}
	if !exited(ctx, fd, 5*time.Second) {
		return pid, fmt.Errorf("agent daemon %d survived SIGKILL", pid)
	}
	return pid, nil
}

// exited waits until the process of pidfd fd ends, ctx ends, or timeout
// passes, and reports whether it ended.
func exited(ctx context.Context, fd int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		// Poll in short slices so that a cancelled ctx is noticed.
		slice := min(time.Until(deadline), 100*time.Millisecond)
		if slice <= 0 || ctx.Err() != nil {
			return false
		}
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, int(slice.Milliseconds())+1)
		if err == nil && n > 0 {
			return true
		}
		if err != nil && !errors.Is(err, unix.EINTR) {
			return false
		}
	}
}
