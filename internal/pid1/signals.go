package pid1

import (
	"context"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"syscall"

	"github.com/rs/zerolog"
)

// Signals PID 1 may be sent, and what avsidecar does with each. Go's
// default for most of them is to exit (SIGHUP, SIGUSR1) or to exit with a
// stack dump and code 2 (SIGQUIT, SIGABRT, SIGSYS, SIGTRAP): as PID 1 that
// would take avagent down with the container, in the middle of a backup, on
// a signal an operator sent out of habit (`kill -HUP` reloads sshd).
var (
	// stopSignals stop the sidecar gracefully, exit 0.
	stopSignals = []os.Signal{syscall.SIGTERM, syscall.SIGINT}
	// dumpSignals write every goroutine's stack to stderr, and the sidecar
	// goes on, as kill -3 does to a JVM: the way to see where a hung
	// supervisor hangs without stopping the backup agent.
	dumpSignals = []os.Signal{syscall.SIGQUIT}
	// ignoredSignals are logged and ignored. Nothing needs SIGHUP to be
	// reloaded: authorized_keys is watched, and the browse token and the
	// REST credentials are read when they are used. The fault signals here
	// only arrive from kill(2): a real fault of the process is still a
	// crash.
	ignoredSignals = []os.Signal{
		syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGABRT, syscall.SIGSYS,
		syscall.SIGTRAP, syscall.SIGBUS, syscall.SIGFPE, syscall.SIGSEGV, syscall.SIGILL,
		syscall.SIGALRM, syscall.SIGVTALRM, syscall.SIGXCPU, syscall.SIGXFSZ, syscall.SIGPWR,
		syscall.SIGSTKFLT, syscall.SIGTSTP, syscall.SIGTTIN, syscall.SIGTTOU, syscall.SIGIO,
	}
	// silentSignals are ignored without a log line. SIGPIPE: a write to a
	// closed stdout (a container runtime's log pipe gone) fails with EPIPE
	// instead of killing the process, and logging it would write to that
	// same pipe again.
	silentSignals = []os.Signal{syscall.SIGPIPE}
)

// StopContext handles every signal avsidecar may get: the returned context
// ends at the first SIGTERM or SIGINT; SIGQUIT writes a goroutine dump to
// stderr; every other signal is logged (as "signal ignored") and ignored.
// No signal ends the process but by that graceful stop, SIGKILL, or a real
// fault. The cancel function stops the handling and releases ctx.
func StopContext(parent context.Context, log zerolog.Logger) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(parent)
	ch := make(chan os.Signal, 8)
	var all []os.Signal
	for _, set := range [][]os.Signal{stopSignals, dumpSignals, ignoredSignals, silentSignals} {
		all = append(all, set...)
	}
	signal.Notify(ch, all...)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case sig := <-ch:
				handleSignal(sig, log, cancel)
			}
		}
	}()
	return ctx, func() {
		cancel()
		<-done
		signal.Stop(ch)
	}
}

func handleSignal(sig os.Signal, log zerolog.Logger, stop context.CancelFunc) {
	switch {
	case slices.Contains(stopSignals, sig):
		log.Info().Str("signal", sig.String()).Msg("stop signal received")
		stop()
	case slices.Contains(dumpSignals, sig):
		n := writeStacks(os.Stderr)
		log.Warn().Str("signal", sig.String()).Int("bytes", n).Msg("goroutine dump written to stderr, going on")
	case slices.Contains(silentSignals, sig):
	default:
		log.Warn().Str("signal", sig.String()).Msg("signal ignored")
	}
}

// writeStacks writes the stacks of every goroutine, as the runtime does on
// a crash, and returns how many bytes it wrote.
func writeStacks(w *os.File) int {
	buf := make([]byte, 64<<10)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			_, _ = w.Write(buf[:n])
			return n
		}
		buf = make([]byte, 2*len(buf))
	}
}
