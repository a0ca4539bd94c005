package hooks

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/avsidecar/avsidecar/internal/millis"
	"github.com/avsidecar/avsidecar/internal/pid1"
)

// Outcomes of one hook, as in results, logs and metrics.
const (
	OutcomeOK      = "ok"      // exit status 0, or a 2xx answer
	OutcomeFailed  = "failed"  // another exit status or answer
	OutcomeTimeout = "timeout" // the hook's timeout passed: killed, or the request cancelled
	OutcomeError   = "error"   // could not start, or no answer
)

// Outcomes lists the outcomes: the label values of the hook metrics.
var Outcomes = []string{OutcomeOK, OutcomeFailed, OutcomeTimeout, OutcomeError}

// Results of a phase: whether the script told Avamar to go on.
const (
	ResultPassed = "passed"
	ResultFailed = "failed"
)

// Results lists the results of a phase: the label values of the call
// metric.
var Results = []string{ResultPassed, ResultFailed}

// Bounds of what a hook's result keeps for the script's caller: the end
// of its output (at most outputLines lines, outputBytes bytes in all, a
// longer line cut to its end) and its error. They bound the answer a
// script reads (MaxAnswer).
const (
	outputLines = 20
	outputBytes = 4 << 10
	errorBytes  = 512
)

// outputTail keeps the end of an output within the bounds.
type outputTail struct {
	tail []string
	size int
}

func (o *outputTail) add(line string) {
	if len(line) > outputBytes {
		line = line[len(line)-outputBytes:]
	}
	o.tail = append(o.tail, line)
	o.size += len(line)
	for len(o.tail) > outputLines || o.size > outputBytes {
		o.size -= len(o.tail[0])
		o.tail = o.tail[1:]
	}
}

// lines returns a copy of what is kept.
func (o *outputTail) lines() []string { return append([]string(nil), o.tail...) }

// bounded cuts an error message to errorBytes.
func bounded(msg string) string {
	if len(msg) <= errorBytes {
		return msg
	}
	return msg[:errorBytes-3] + "..."
}

// Result is one hook's run.
type Result struct {
	Name    string `json:"name"`
	Kind    string `json:"kind"`
	OnError string `json:"on_error"`
	Outcome string `json:"outcome"`
	// ExitCode is a command's exit status (-1 for a signal); a session's
	// client's when it ended at once.
	ExitCode *int `json:"exit_code,omitempty"`
	// HTTPStatus is an HTTP hook's answer.
	HTTPStatus int `json:"http_status,omitempty"`
	// Error says why, when the outcome is not ok.
	Error    string          `json:"error,omitempty"`
	Started  time.Time       `json:"started"`
	Duration millis.Duration `json:"duration_ms"`
	// Output is the end of a command's output. It goes back to the script
	// (Avamar keeps it with the backup's log), never to avsidecar's logs
	// or status: a hook's output is the application's business.
	Output []string `json:"output,omitempty"`
}

// PhaseRun is one run of a phase: the hooks it ran, in order.
type PhaseRun struct {
	Phase string `json:"phase"`
	// By says who ran a post phase (ByPost, ByExpiry, ...); empty for a
	// pre phase, and for a post phase with no freeze open.
	By string `json:"by,omitempty"`
	// Result is passed or failed: whether the script exits 0.
	Result   string          `json:"result"`
	Started  time.Time       `json:"started"`
	Duration millis.Duration `json:"duration_ms"`
	Hooks    []Result        `json:"hooks"`
	// Skipped names the hooks not run because one before failed with
	// on_error fail.
	Skipped []string `json:"skipped,omitempty"`
	// Cut says the stop's deadline killed the phase's hooks.
	Cut bool `json:"cut,omitempty"`
	// Undo is the post phase that a failed pre phase, or one whose caller
	// left, ran at once.
	Undo *PhaseRun `json:"undo,omitempty"`
	// Late is set on a post call that came after its freeze had ended
	// otherwise: it ran nothing, and fails, since the end of that backup's
	// copy was not frozen.
	Late *Thaw `json:"late,omitempty"`
}

// runPhase runs hooks in order. A hook that fails with on_error fail fails
// the phase; in the pre phase the hooks after it are skipped (the backup
// will not happen), in the post phase they still run (whatever the backup
// did, the application must be resumed).
func (h *Hooks) runPhase(ctx context.Context, phase string, hooks []Hook) PhaseRun {
	run := PhaseRun{Phase: phase, Result: ResultPassed, Started: time.Now(), Hooks: []Result{}}
	for i, hook := range hooks {
		if run.Result == ResultFailed && phase == PhasePre {
			for _, rest := range hooks[i:] {
				run.Skipped = append(run.Skipped, rest.Name)
			}
			break
		}
		h.ran(&run, h.runHook(ctx, phase, hook))
	}
	run.Duration = millis.Since(run.Started)
	return run
}

// ran adds a hook's result to run, logs it, and fails run when the hook
// failed with on_error fail.
func (h *Hooks) ran(run *PhaseRun, r Result) {
	r.Error = bounded(r.Error)
	run.Hooks = append(run.Hooks, r)
	ev := h.log.Info()
	if r.Outcome != OutcomeOK {
		ev = h.log.Warn()
	}
	ev.Str("phase", run.Phase).Str("hook", r.Name).Str("kind", r.Kind).Str("outcome", r.Outcome).
		Str("on_error", r.OnError).Dur("took_ms", r.Duration.D()).Str("error", r.Error).Msg("hook ran")
	if r.Outcome != OutcomeOK && r.OnError == OnErrorFail {
		run.Result = ResultFailed
	}
}

// thawRun is the post phase that ends a freeze: the sessions the pre hooks
// opened are finished first, the last opened first (they hold the freezes
// avsidecar can always end itself), then every post hook runs.
func (h *Hooks) thawRun(ctx context.Context, by string) PhaseRun {
	run := PhaseRun{Phase: PhasePost, By: by, Result: ResultPassed, Started: time.Now(), Hooks: []Result{}}
	for i := len(h.sessions) - 1; i >= 0; i-- {
		s := h.sessions[i]
		r := Result{Name: s.hook.Name, Kind: s.hook.Kind(), OnError: s.hook.OnError, Started: time.Now()}
		hctx, cancel := context.WithTimeout(ctx, time.Duration(s.hook.Timeout))
		s.finish(hctx, &r)
		cancel()
		r.Duration = millis.Since(r.Started)
		h.ran(&run, r)
	}
	h.sessions = nil
	post := h.runPhase(ctx, PhasePost, h.spec.Post)
	for _, r := range post.Hooks {
		run.Hooks = append(run.Hooks, r)
		if r.Outcome != OutcomeOK && r.OnError == OnErrorFail {
			run.Result = ResultFailed
		}
	}
	run.Duration = millis.Since(run.Started)
	return run
}

// runHook runs one hook within its timeout.
func (h *Hooks) runHook(ctx context.Context, phase string, hook Hook) Result {
	r := Result{Name: hook.Name, Kind: hook.Kind(), OnError: hook.OnError, Started: time.Now()}
	timeout := time.Duration(hook.Timeout)
	hctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	switch {
	case hook.HTTP != nil:
		h.call(hctx, hook, &r)
	case hook.Session != nil:
		if s := h.startSession(hctx, phase, hook, &r); s != nil {
			h.sessions = append(h.sessions, s)
		}
	default:
		h.command(hctx, phase, hook, &r)
	}
	r.Duration = millis.Since(r.Started)
	if r.Outcome != OutcomeOK && errors.Is(hctx.Err(), context.DeadlineExceeded) && ctx.Err() == nil {
		r.Outcome, r.Error = OutcomeTimeout, fmt.Sprintf("no end within %s", timeout)
	}
	return r
}

// command runs a command hook in its own process group, with the phase and
// the hook's name in its environment; the group is killed when ctx ends.
func (h *Hooks) command(ctx context.Context, phase string, hook Hook, r *Result) {
	cmd := exec.Command(hook.Command[0], hook.Command[1:]...)
	cmd.Env = append(os.Environ(), "AVSIDECAR_HOOK_PHASE="+phase, "AVSIDECAR_HOOK_NAME="+hook.Name)
	var out outputTail
	p, err := pid1.StartLines(cmd, out.add)
	if err != nil {
		r.Outcome, r.Error = OutcomeError, fmt.Sprintf("start %s: %v", hook.Command[0], err)
		return
	}
	err = p.WaitContext(ctx)
	r.Output = out.lines()
	var ee *pid1.ExitError
	switch {
	case err == nil:
		r.Outcome, r.ExitCode = OutcomeOK, new(int)
	case errors.As(err, &ee):
		code := ee.ExitCode()
		r.Outcome, r.ExitCode, r.Error = OutcomeFailed, &code, ee.Error()
	default:
		r.Outcome, r.Error = OutcomeError, err.Error()
	}
}

// hookClient makes the HTTP hooks' requests; each hook's timeout bounds
// its request. It follows no redirect: Go's client would send a 307 or
// 308 request again, body and headers (a token, say) included, wherever
// the Location points, plain http and other hosts too. A redirect is the
// hook's answer, and not a 2xx one: the hook failed, and the fix is its
// URL.
var hookClient = &http.Client{
	Transport:     http.DefaultTransport,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// call makes an HTTP hook's request.
func (h *Hooks) call(ctx context.Context, hook Hook, r *Result) {
	var body io.Reader
	if hook.HTTP.Body != "" {
		body = strings.NewReader(hook.HTTP.Body)
	}
	req, err := http.NewRequestWithContext(ctx, hook.HTTP.Method, hook.HTTP.URL, body)
	if err != nil {
		r.Outcome, r.Error = OutcomeError, "request to "+redactURL(hook.HTTP.URL)+": bad request"
		return
	}
	for k, v := range hook.HTTP.Headers {
		req.Header.Set(k, v)
	}
	resp, err := h.http.Do(req)
	if err != nil {
		// The error names the URL with its query: say only where.
		r.Outcome, r.Error = OutcomeError, "request to "+redactURL(hook.HTTP.URL)+": no answer"
		return
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	r.HTTPStatus = resp.StatusCode
	if resp.StatusCode/100 == 2 {
		r.Outcome = OutcomeOK
		return
	}
	r.Outcome, r.Error = OutcomeFailed, fmt.Sprintf("%s answered %s", redactURL(hook.HTTP.URL), resp.Status)
}
