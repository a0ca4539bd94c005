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

// outputTail bounds the output of a command kept for the script's caller.
const (
	outputLines = 20
	outputBytes = 4 << 10
)

// Result is one hook's run.
type Result struct {
	Name    string `json:"name"`
	Kind    string `json:"kind"`
	OnError string `json:"on_error"`
	Outcome string `json:"outcome"`
	// ExitCode is a command's exit status (-1 for a signal).
	ExitCode *int `json:"exit_code,omitempty"`
	// HTTPStatus is an HTTP hook's answer.
	HTTPStatus int `json:"http_status,omitempty"`
	// Error says why, when the outcome is not ok.
	Error    string        `json:"error,omitempty"`
	Started  time.Time     `json:"started"`
	Duration time.Duration `json:"duration_ns"`
	// Output is the end of a command's output. It goes back to the script
	// (Avamar keeps it with the backup's log), never to avsidecar's logs
	// or status: a hook's output is the application's business.
	Output []string `json:"output,omitempty"`
}

// PhaseRun is one call of a phase: the hooks it ran, in order.
type PhaseRun struct {
	Phase string `json:"phase"`
	// Result is passed or failed: whether the script exits 0.
	Result   string        `json:"result"`
	Started  time.Time     `json:"started"`
	Duration time.Duration `json:"duration_ns"`
	Hooks    []Result      `json:"hooks"`
	// Skipped names the hooks not run because one before failed with
	// on_error fail.
	Skipped []string `json:"skipped,omitempty"`
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
		r := h.runHook(ctx, phase, hook)
		run.Hooks = append(run.Hooks, r)
		ev := h.log.Info()
		if r.Outcome != OutcomeOK {
			ev = h.log.Warn()
		}
		ev.Str("phase", phase).Str("hook", r.Name).Str("kind", r.Kind).Str("outcome", r.Outcome).
			Str("on_error", r.OnError).Dur("took_ms", r.Duration).Str("error", r.Error).Msg("hook ran")
		if r.Outcome != OutcomeOK && hook.OnError == OnErrorFail {
			run.Result = ResultFailed
		}
	}
	run.Duration = time.Since(run.Started)
	return run
}

// runHook runs one hook within its timeout.
func (h *Hooks) runHook(ctx context.Context, phase string, hook Hook) Result {
	r := Result{Name: hook.Name, Kind: hook.Kind(), OnError: hook.OnError, Started: time.Now()}
	timeout := time.Duration(hook.Timeout)
	hctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if hook.HTTP != nil {
		h.call(hctx, hook, &r)
	} else {
		h.command(hctx, phase, hook, &r)
	}
	r.Duration = time.Since(r.Started)
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
	var tail []string
	size := 0
	p, err := pid1.StartLines(cmd, func(line string) {
		tail = append(tail, line)
		size += len(line)
		for len(tail) > outputLines || size > outputBytes && len(tail) > 1 {
			size -= len(tail[0])
			tail = tail[1:]
		}
	})
	if err != nil {
		r.Outcome, r.Error = OutcomeError, fmt.Sprintf("start %s: %v", hook.Command[0], err)
		return
	}
	err = p.WaitContext(ctx)
	r.Output = tail
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
