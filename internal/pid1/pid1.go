// Package pid1 lets avsidecar run as a container's init process, and is the
// one owner of wait(2) in it.
//
// In a container every orphaned process is re-parented to PID 1 and stays a
// zombie until PID 1 waits for it. After Reap, one goroutine collects every
// child that exits, with Wait4(-1): a child avsidecar started through Start
// or StartLines gets its status delivered to its Process; any other is an
// orphan, reaped and logged. Outside a PID namespace Reap makes the process a
// child subreaper (PR_SET_CHILD_SUBREAPER), so the orphans of its tree come
// to it the same way.
//
// The reaper lives in the process it serves, rather than in a second copy of
// the binary that re-executes the first (git-sync's design): a second Go
// runtime and every package's init cost more idle memory than the rest of
// the sidecar together. The price is a rule: once Reap has run, os/exec must
// never wait. A Cmd's Wait, Run, Output or CombinedOutput would race the
// reaper and fail with ECHILD, so every child is started with Start or
// StartLines and waited for with Process.Wait. Before Reap (the install
// command, and tests), Start waits through os/exec, so the same code runs
// both ways. TestNothingElseWaits enforces the rule: it type-checks every
// package avsidecar links, its dependencies included, and fails on any use
// outside this package of those methods, of (*os.Process).Wait or of a wait
// system call.
package pid1

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
)

// OutputGrace is how long StartLines keeps reading a child's output after
// the child exited: a daemon it started may hold the pipe open for ever.
const OutputGrace = time.Second

// reaper is the process-wide state: whether Reap ran, and the children
// whose exit someone waits for.
var reaper struct {
	mu       sync.Mutex
	on       bool
	log      zerolog.Logger
	children map[int]*Process // started by Start while reaping, not yet exited
	plain    int              // started before Reap and not yet exited
}

// Reap makes this process the reaper of its container (or, when it is not
// PID 1, of its own tree) and starts the one goroutine that calls wait(2).
// It must run before the first Start that it is to cover.
func Reap(log zerolog.Logger) error {
	reaper.mu.Lock()
	defer reaper.mu.Unlock()
	if reaper.on {
		return errors.New("reaper already running")
	}
	if reaper.plain > 0 {
		return fmt.Errorf("%d children started before the reaper still run", reaper.plain)
	}
	if os.Getpid() != 1 {
		if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
			return fmt.Errorf("become child subreaper: %w", err)
		}
	}
	// One pending SIGCHLD is enough: each wake-up collects every child that
	// has exited by then, and a later exit sends a new signal.
	sigchld := make(chan os.Signal, 1)
	signal.Notify(sigchld, syscall.SIGCHLD)
	reaper.on, reaper.log, reaper.children = true, log, map[int]*Process{}
	go func() {
		for {
			reapExited()
			<-sigchld
		}
	}()
	return nil
}

// reapExited collects every child that has exited, without blocking.
func reapExited() {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if pid <= 0 || err != nil {
			return // none has exited yet, or there are no children (ECHILD)
		}
		// Start holds the lock from fork to registration, so a child of
		// ours that exited at once is registered by the time this looks.
		reaper.mu.Lock()
		p := reaper.children[pid]
		delete(reaper.children, pid)
		log := reaper.log
		reaper.mu.Unlock()
		if p == nil {
			log.Debug().Int("pid", pid).Str("exit", describe(ws)).Msg("reaped orphan")
			continue
		}
		_ = p.cmd.Process.Release() // its pidfd; the pid is gone
		p.exited(ws, nil)
	}
}

// Process is a child started by Start or StartLines.
type Process struct {
	// Pid is the child's process id, and the id of its process group.
	Pid int

	cmd  *exec.Cmd
	exit chan struct{} // closed once the child has exited
	done chan struct{} // closed once it exited and its output ended
	ws   syscall.WaitStatus
	err  error // a failure to wait, not an exit status
}

// Start starts cmd in a process group of its own (unless it asks for a new
// session) and returns at once; Wait gives its exit. cmd's Stdin, Stdout and
// Stderr must be nil or *os.File, so that nothing but the child holds them,
// and cmd must not come from exec.CommandContext: use WaitContext.
func Start(cmd *exec.Cmd) (*Process, error) {
	for _, f := range []any{cmd.Stdin, cmd.Stdout, cmd.Stderr} {
		if _, ok := f.(*os.File); f != nil && !ok {
			return nil, fmt.Errorf("start %s: stdio must be nil or *os.File, not %T", cmd.Path, f)
		}
	}
	if cmd.Cancel != nil || cmd.WaitDelay != 0 {
		return nil, fmt.Errorf("start %s: use WaitContext, not exec.CommandContext or WaitDelay", cmd.Path)
	}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	if !cmd.SysProcAttr.Setsid {
		cmd.SysProcAttr.Setpgid = true
	}

	p := &Process{cmd: cmd, exit: make(chan struct{})}
	p.done = p.exit // StartLines waits for the output as well
	reaper.mu.Lock()
	defer reaper.mu.Unlock()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p.Pid = cmd.Process.Pid
	if reaper.on {
		reaper.children[p.Pid] = p
		return p, nil
	}
	reaper.plain++
	go func() {
		err := cmd.Wait()
		reaper.mu.Lock()
		reaper.plain--
		reaper.mu.Unlock()
		if cmd.ProcessState != nil {
			if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok {
				p.exited(ws, nil)
				return
			}
		}
		p.exited(0, fmt.Errorf("wait for %s: %w", cmd.Path, err))
	}()
	return p, nil
}

func (p *Process) exited(ws syscall.WaitStatus, err error) {
	p.ws, p.err = ws, err
	close(p.exit)
}

// StartLines starts cmd like Start, with its stdout and stderr on one pipe,
// and calls line for each line the child writes, in order. A line longer
// than 64 KiB comes in pieces. The process is done once it has exited and
// its output has ended, or OutputGrace after it exited.
func StartLines(cmd *exec.Cmd, line func(string)) (*Process, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	cmd.Stdout, cmd.Stderr = w, w
	p, err := Start(cmd)
	w.Close()
	if err != nil {
		r.Close()
		return nil, err
	}
	// Nobody waits on p before it is returned; the reaper only closes exit.
	p.done = make(chan struct{})
	output := make(chan struct{})
	go func() {
		defer close(output)
		ReadLines(r, line)
	}()
	go func() {
		<-p.exit
		t := time.NewTimer(OutputGrace)
		select {
		case <-output:
		case <-t.C:
			r.Close() // ends the read
			<-output
		}
		t.Stop()
		r.Close()
		close(p.done)
	}()
	return p, nil
}

// Done is closed once the process has exited (and, for StartLines, its
// output has ended).
func (p *Process) Done() <-chan struct{} { return p.done }

// Wait waits for the process to be done. It returns nil for exit status 0,
// an *ExitError for any other exit.
func (p *Process) Wait() error {
	<-p.done
	if p.err != nil {
		return p.err
	}
	if p.ws.Exited() && p.ws.ExitStatus() == 0 {
		return nil
	}
	return &ExitError{Status: p.ws}
}

// WaitContext is Wait, but SIGKILLs the process group when ctx ends first.
func (p *Process) WaitContext(ctx context.Context) error {
	select {
	case <-p.done:
	case <-ctx.Done():
		_ = p.SignalGroup(syscall.SIGKILL)
	}
	return p.Wait()
}

// SignalGroup sends sig to the process's group. The kernel keeps the id
// from being reused while any member lives, so this never hits a stranger;
// ESRCH says the group is gone, which callers stopping it may ignore.
func (p *Process) SignalGroup(sig syscall.Signal) error {
	return syscall.Kill(-p.Pid, sig)
}

// ExitError is an exit other than status 0.
type ExitError struct {
	Status syscall.WaitStatus
}

func (e *ExitError) Error() string { return describe(e.Status) }

// ExitCode is the exit status, or -1 when a signal ended the process.
func (e *ExitError) ExitCode() int {
	if e.Status.Signaled() {
		return -1
	}
	return e.Status.ExitStatus()
}

// describe says how a process ended, as os.ProcessState does.
func describe(ws syscall.WaitStatus) string {
	if ws.Signaled() {
		s := "signal: " + ws.Signal().String()
		if ws.CoreDump() {
			s += " (core dumped)"
		}
		return s
	}
	return "exit status " + strconv.Itoa(ws.ExitStatus())
}

// ReadLines calls fn for each line r yields, without its line ending; a
// line longer than 64 KiB comes in pieces.
func ReadLines(r io.Reader, fn func(string)) {
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			fn(strings.TrimRight(string(line), "\r\n"))
		}
		if err != nil && err != bufio.ErrBufferFull {
			return
		}
	}
}
