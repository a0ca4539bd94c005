package hooks

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/avsidecar/avsidecar/internal/connlimit"
)

// Bounds of the socket's server. A script sends a small request at once
// and then waits, maybe long, for its phase: a connection that sends
// nothing, or announces a body it never sends, is closed after
// readTimeout, and at most maxConns are open at a time, with
// reserveConns more for newcomers whose request has arrived whole (a
// script's, during a flood of silent ones; see connlimit); any other
// newcomer over the cap is closed at once.
const (
	readTimeout  = 5 * time.Second
	idleTimeout  = 10 * time.Second
	maxConns     = 16
	reserveConns = 4
	maxRequest   = 64 << 10
)

// Run serves the scripts' calls on the socket until ctx ends; once the
// package is installed it installs the scripts. When ctx ends, no phase
// starts any more; the running one, and the thaw of an open freeze, are
// waited for up to the stop timeout, then cut (and logged as cut: the
// lease stays open for the next start). It returns nil then, and fails
// when the socket cannot be made.
func (h *Hooks) Run(ctx context.Context) error {
	ln, err := listen(h.cfg.Socket)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: connlimit.Track(h.handler()), ConnContext: connlimit.ConnContext,
		ReadHeaderTimeout: readTimeout, IdleTimeout: idleTimeout}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(connlimit.New(ln, maxConns, 0, reserveConns)) }()
	defer os.Remove(h.cfg.Socket)

	scripts := h.cfg.Installed
	if scripts == nil {
		ready := make(chan struct{})
		close(ready)
		scripts = ready
	}
	for {
		select {
		case <-scripts:
			scripts = nil
			if err := h.installScripts(); err != nil {
				h.log.Error().Err(err).Msg("hook scripts not installed")
			}
		case err := <-served:
			return fmt.Errorf("serve hooks on %s: %w", h.cfg.Socket, err)
		case <-ctx.Done():
			h.beginStop()
			// Shutdown closes the socket and waits for the calls in
			// flight: their phases end, or are cut, with stopPhases.
			shut := make(chan struct{})
			go func() {
				sctx, cancel := context.WithTimeout(context.Background(), h.cfg.StopTimeout+3*time.Second)
				defer cancel()
				_ = srv.Shutdown(sctx)
				close(shut)
			}()
			h.stopPhases()
			select {
			case <-shut:
			case <-time.After(250 * time.Millisecond):
			}
			srv.Close()
			return nil
		}
	}
}

// listen makes the socket, mode 0600, replacing a stale one a killed
// sidecar left.
func listen(path string) (net.Listener, error) {
	if len(path) >= len(syscall.RawSockaddrUnix{}.Path) {
		return nil, fmt.Errorf("hooks socket %s: the path is longer than a unix socket's %d bytes: set AVSIDECAR_HOOKS_SOCKET", path, len(syscall.RawSockaddrUnix{}.Path)-1)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("hooks socket: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return nil, fmt.Errorf("hooks socket %s: another process serves it", path)
		}
		_ = os.Remove(path)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("hooks socket: %w", err)
	}
	// Not the umask: it is the whole process's, and other parts write
	// files meanwhile.
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("hooks socket: %w", err)
	}
	return ln, nil
}

// request is what a script sends.
type request struct {
	// Args are the script's arguments (Avamar's run_at_start_clause flags).
	Args []string `json:"args,omitempty"`
}

// handler answers POST /v1/hooks/{phase} with the PhaseRun as JSON (200),
// or an {"error"} (503 when no phase ran: a broken configuration, a freeze
// already open, the stop; 404 for an unknown phase; 400 for a bad
// request).
func (h *Hooks) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/hooks/{phase}", func(w http.ResponseWriter, r *http.Request) {
		// The body within readTimeout; then no read deadline, so that the
		// request's context ends only when the caller leaves.
		rc := http.NewResponseController(w)
		_ = rc.SetReadDeadline(time.Now().Add(readTimeout))
		var req request
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxRequest)).Decode(&req); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": fmt.Sprintf("read the request: %v", err)})
			return
		}
		_ = rc.SetReadDeadline(time.Time{})
		phase := r.PathValue("phase")
		if phase != PhasePre && phase != PhasePost {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": fmt.Sprintf("no phase %q: want pre or post", phase)})
			return
		}
		h.log.Info().Str("phase", phase).Int("args", len(req.Args)).Msg("hook script called")
		run, err := h.RunPhase(r.Context(), phase)
		if err != nil {
			h.mu.Lock()
			h.st.Calls[phase+"/"+ResultFailed]++
			h.mu.Unlock()
			h.log.Error().Str("phase", phase).Err(err).Msg("hook phase not run")
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, run)
	})
	return mux
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
