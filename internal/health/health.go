// Package health serves the kubelet's probes: /livez, /startupz and
// /readyz. Liveness only says the supervisor answers; readiness and start-up
// run named checks and say which failed and why, in the body, the way the
// Kubernetes API server's own probes do. An optional check reports a side
// part's trouble in the verbose body ("[!]ssh: ...") without failing the
// probe: a broken side feature must not take the pod out of service.
package health

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// Check is one named condition.
type Check struct {
	// Name appears in the probe body: [+]name ok / [-]name: reason.
	Name string
	// Fn returns nil when the condition holds, else why not.
	Fn func(ctx context.Context) error
	// Optional checks never fail the probe; ?verbose shows their failures
	// as [!]name: reason.
	Optional bool
}

// Config lists the checks of each probe.
type Config struct {
	// Startup must all pass before /startupz answers 200.
	Startup []Check
	// Ready must all pass before /readyz answers 200.
	Ready []Check
	// Timeout bounds each check (default 2s, below the kubelet's 1s-10s
	// probe timeouts' upper end).
	Timeout time.Duration
}

// Handler answers the three probes.
type Handler struct {
	cfg Config
	mux *http.ServeMux
}

// New returns the probe handler.
func New(cfg Config) *Handler {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Second
	}
	h := &Handler{cfg: cfg, mux: http.NewServeMux()}
	h.mux.HandleFunc("GET /livez", func(w http.ResponseWriter, r *http.Request) {
		write(w, http.StatusOK, "ok\n")
	})
	h.mux.Handle("GET /startupz", h.probe("startupz", cfg.Startup))
	h.mux.Handle("GET /readyz", h.probe("readyz", cfg.Ready))
	return h
}

// ServeHTTP serves /livez, /startupz and /readyz.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

// Result is the outcome of one check.
type Result struct {
	Name     string `json:"name"`
	OK       bool   `json:"ok"`
	Err      string `json:"error,omitempty"`
	Optional bool   `json:"optional,omitempty"`
}

// Passed reports whether results pass as a probe: every check that is not
// optional is OK.
func Passed(results []Result) bool {
	for _, r := range results {
		if !r.OK && !r.Optional {
			return false
		}
	}
	return true
}

// Run runs checks and reports each result.
func Run(ctx context.Context, checks []Check, timeout time.Duration) []Result {
	out := make([]Result, len(checks))
	for i, c := range checks {
		cctx, cancel := context.WithTimeout(ctx, timeout)
		err := c.Fn(cctx)
		cancel()
		out[i] = Result{Name: c.Name, OK: err == nil, Optional: c.Optional}
		if err != nil {
			out[i].Err = err.Error()
		}
	}
	return out
}

func (h *Handler) probe(name string, checks []Check) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, verbose := r.URL.Query()["verbose"]
		results := Run(r.Context(), checks, h.cfg.Timeout)
		var b strings.Builder
		failed := false
		for _, res := range results {
			switch {
			case !res.OK && res.Optional:
				if verbose {
					fmt.Fprintf(&b, "[!]%s: %s\n", res.Name, oneLine(res.Err))
				}
			case !res.OK:
				failed = true
				fmt.Fprintf(&b, "[-]%s: %s\n", res.Name, oneLine(res.Err))
			case verbose:
				fmt.Fprintf(&b, "[+]%s ok\n", res.Name)
			}
		}
		if failed {
			fmt.Fprintf(&b, "%s check failed\n", name)
			write(w, http.StatusServiceUnavailable, b.String())
			return
		}
		if verbose {
			fmt.Fprintf(&b, "%s check passed\n", name)
			write(w, http.StatusOK, b.String())
			return
		}
		write(w, http.StatusOK, "ok\n")
	})
}

func write(w http.ResponseWriter, code int, body string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(body))
}

// oneLine keeps a reason on its line, so the body stays one line per check.
func oneLine(s string) string { return strings.ReplaceAll(strings.TrimSpace(s), "\n", " ") }
