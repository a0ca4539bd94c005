// Package pid1 lets avsidecar run as a container's init process.
//
// It follows git-sync's pid1 design: the process the kernel started becomes
// a small reaper that starts the real avsidecar again as its only child,
// forwards signals to it, and reaps every process that gets orphaned in the
// container. Exactly one loop calls wait(2) for any child (Wait4(-1)), and
// the real avsidecar keeps ordinary os/exec semantics for its own children,
// because orphans are never its problem. Outside a PID namespace the reaper
// marks itself PR_SET_CHILD_SUBREAPER so that the same holds.
package pid1

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
)

// childEnv marks the re-executed child, so that it does not reap again.
const childEnv = "AVSIDECAR_REAPED_CHILD"

// IsChild reports whether this process is the child of an avsidecar reaper.
func IsChild() bool { return os.Getenv(childEnv) == "1" }

// forwarded are the signals the reaper passes on to the child. SIGCHLD is
// the reaper's own; SIGKILL and SIGSTOP cannot be caught.
var forwarded = []os.Signal{
	syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT,
	syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH,
}

// Run starts this executable again with args as the reaper's child, forwards
// signals to it and reaps every child until the main child exits. It returns
// the exit code the process should end with: the child's own, or 128+signal
// when a signal killed it.
func Run(args []string, log zerolog.Logger) (int, error) {
	exe, err := os.Executable()
	if err != nil {
		return 1, fmt.Errorf("find own executable: %w", err)
	}
	if os.Getpid() != 1 {
		if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
			return 1, fmt.Errorf("become child subreaper: %w", err)
		}
	}

	sigs := make(chan os.Signal, 32)
	signal.Notify(sigs, append([]os.Signal{syscall.SIGCHLD}, forwarded...)...)
	defer signal.Stop(sigs)

	argv := append([]string{os.Args[0]}, args...)
	pid, err := syscall.ForkExec(exe, argv, &syscall.ProcAttr{
		Env:   append(os.Environ(), childEnv+"=1"),
		Files: []uintptr{0, 1, 2},
	})
	if err != nil {
		return 1, fmt.Errorf("start avsidecar child: %w", err)
	}
	log.Debug().Int("pid", pid).Msg("reaper started child")

	for {
		if code, done := reap(pid, log); done {
			return code, nil
		}
		sig := <-sigs
		if sig == syscall.SIGCHLD {
			continue
		}
		if err := unix.Kill(pid, sig.(syscall.Signal)); err != nil && !errors.Is(err, unix.ESRCH) {
			log.Warn().Err(err).Str("signal", sig.String()).Msg("forward signal")
		}
	}
}

// reap collects every exited child without blocking. It reports the main
// child's exit code once that child is gone.
func reap(child int, log zerolog.Logger) (code int, done bool) {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if pid <= 0 || err != nil {
			return code, done
		}
		if pid != child {
			log.Debug().Int("pid", pid).Int("status", exitCode(ws)).Msg("reaped orphan")
			continue
		}
		code, done = exitCode(ws), true
		if ws.Signaled() {
			log.Error().Int("pid", pid).Str("signal", ws.Signal().String()).Msg("avsidecar child killed by signal")
		}
	}
}

func exitCode(ws unix.WaitStatus) int {
	if ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
}
