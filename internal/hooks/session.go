package hooks

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/avsidecar/avsidecar/internal/pid1"
)

// markerPrefix starts the line a session's client prints after each
// statement: seeing it says the statement before it succeeded (the
// clients stop at the first error).
const markerPrefix = "avsidecar-session-done-"

// sessionEndGrace is how long a session's client may take to exit once its
// input is closed before its process group is killed.
const sessionEndGrace = 5 * time.Second

// session is a session hook's running client.
type session struct {
	hook Hook
	proc *pid1.Process
	in   *os.File // the client's standard input

	mu      sync.Mutex
	markers map[string]bool
	changed chan struct{} // closed, and replaced, at every line
	out     outputTail
	n       int
}

// startSession starts a session hook's client and runs its pre
// statements; r gets the outcome. The session is returned when they all
// succeeded, and is then open until finish.
func (h *Hooks) startSession(ctx context.Context, phase string, hook Hook, r *Result) *session {
	s := &session{hook: hook, markers: map[string]bool{}, changed: make(chan struct{})}
	cmd := exec.Command(hook.Session.Command[0], hook.Session.Command[1:]...)
	cmd.Env = append(os.Environ(), "AVSIDECAR_HOOK_PHASE="+phase, "AVSIDECAR_HOOK_NAME="+hook.Name)
	in, w, err := os.Pipe()
	if err != nil {
		r.Outcome, r.Error = OutcomeError, fmt.Sprintf("start %s: %v", hook.Session.Command[0], err)
		return nil
	}
	cmd.Stdin = in
	s.proc, err = pid1.StartLines(cmd, s.line)
	in.Close()
	if err != nil {
		w.Close()
		r.Outcome, r.Error = OutcomeError, fmt.Sprintf("start %s: %v", hook.Session.Command[0], err)
		return nil
	}
	s.in = w
	if hook.Session.Dialect == DialectPsql {
		if err := s.send(ctx, `\set ON_ERROR_STOP on`); err != nil {
			err = fmt.Errorf("the client did not start: %w", err)
			r.Output = s.out.lines()
			s.kill()
			r.Outcome, r.Error = outcomeOf(ctx), err.Error()
			return nil
		}
	}
	err = s.run(ctx, hook.Session.Pre)
	r.Output = s.out.lines()
	if err != nil {
		s.kill()
		r.Outcome, r.Error = outcomeOf(ctx), err.Error()
		return nil
	}
	r.Outcome = OutcomeOK
	return s
}

// line takes one line of the client's output.
func (s *session) line(l string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if strings.HasPrefix(l, markerPrefix) {
		s.markers[l] = true
	} else {
		s.out.add(l)
	}
	close(s.changed)
	s.changed = make(chan struct{})
}

// run sends statements one at a time, and fails at the first that does
// not succeed, naming it by its place in the list (its text may hold a
// secret).
func (s *session) run(ctx context.Context, statements []string) error {
	for i, st := range statements {
		if err := s.send(ctx, st); err != nil {
			return fmt.Errorf("statement %d: %w", i+1, err)
		}
	}
	return nil
}

// send sends one statement followed by a marker, and waits for the
// marker: the statement succeeded. The client ending first, or ctx, is a
// failure.
func (s *session) send(ctx context.Context, statement string) error {
	s.n++
	marker := fmt.Sprintf("%s%d", markerPrefix, s.n)
	text := strings.TrimSpace(statement)
	if !strings.HasPrefix(text, `\`) && !strings.HasSuffix(text, ";") {
		text += ";"
	}
	switch s.hook.Session.Dialect {
	case DialectPsql:
		text += "\n\\echo " + marker
	case DialectMariaDB:
		text += "\nSELECT '" + marker + "';"
	}
	if _, err := s.in.WriteString(text + "\n"); err != nil {
		return fmt.Errorf("the client does not read: %w", err)
	}
	return s.wait(ctx, marker)
}

// wait waits for marker.
func (s *session) wait(ctx context.Context, marker string) error {
	for {
		s.mu.Lock()
		seen, changed := s.markers[marker], s.changed
		s.mu.Unlock()
		if seen {
			return nil
		}
		select {
		case <-changed:
		case <-s.proc.Done():
			s.mu.Lock()
			seen = s.markers[marker]
			s.mu.Unlock()
			if seen {
				return nil
			}
			return fmt.Errorf("the client ended before answering (%v)", s.proc.Wait())
		case <-ctx.Done():
			return errors.New("no answer in time")
		}
	}
}

// alive reports whether the client still runs: its session, and what it
// holds, are still there.
func (s *session) alive() bool {
	select {
	case <-s.proc.Done():
		return false
	default:
		return true
	}
}

// finish runs the session's post statements, closes its input and waits
// for the client to end; r gets the outcome. A client that ended before
// (a killed client, a restarted database) fails: what it held was let go
// while Avamar copied.
func (s *session) finish(ctx context.Context, r *Result) {
	defer s.kill()
	if !s.alive() {
		r.Outcome, r.Error = OutcomeFailed, fmt.Sprintf("the session ended before the post phase (%v): what it held was let go during the backup", s.proc.Wait())
		r.Output = s.out.lines()
		return
	}
	err := s.run(ctx, s.hook.Session.Post)
	if err != nil && !s.alive() {
		// A client learns that its connection is gone when it next uses it.
		err = fmt.Errorf("the session ended during the backup, what it held was let go: %w", err)
	}
	s.in.Close()
	if err == nil {
		end, cancel := context.WithTimeout(ctx, sessionEndGrace)
		defer cancel()
		if werr := s.proc.WaitContext(end); werr != nil {
			err = fmt.Errorf("the client's exit: %w", werr)
		}
	}
	r.Output = s.out.lines()
	if err != nil {
		r.Outcome, r.Error = outcomeOf(ctx), err.Error()
		return
	}
	r.Outcome = OutcomeOK
}

// kill ends the client and its process group, which ends the session on
// the server, and with it what the session held.
func (s *session) kill() {
	s.in.Close()
	if s.alive() {
		_ = s.proc.SignalGroup(syscall.SIGKILL)
		<-s.proc.Done()
	}
}

// outcomeOf is the outcome of a step that failed under ctx.
func outcomeOf(ctx context.Context) string {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return OutcomeTimeout
	}
	return OutcomeFailed
}
