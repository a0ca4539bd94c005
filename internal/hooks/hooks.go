// Package hooks makes a backup of the application consistent: it runs the
// operator's pre hooks before Avamar backs the pod up and the post hooks
// after, the way Velero, Stash and K8up run theirs.
//
// Avamar runs user scripts on the client before and after a backup: the
// dataset's plug-in options run_at_start and run_at_end ("Run user-defined
// script at beginning of backup", "... at end of backup") name a script on
// the client. avsidecar installs two such scripts, avsidecar-pre.sh and
// avsidecar-post.sh, in the client's etc/scripts directory. Each calls back
// into the running sidecar (`avsidecar hook pre`, `avsidecar hook post`)
// over a unix socket, which only processes of this container that may open
// the file can reach: no port is opened, and nothing on the pod's network
// can freeze the application. The sidecar runs the phase's hooks (commands
// run in the sidecar, which shares the pod's network with the application,
// such as `psql -h 127.0.0.1 -c CHECKPOINT`; or HTTP calls to it), each
// with its timeout and on-error policy, and answers; the script prints
// every hook's outcome and exits 0 when the phase passed, 1 when a hook
// with on_error fail did not succeed: Avamar then fails the backup.
//
// Every run is logged, kept in Status (the last runs, and counts) and
// counted in the metrics. A broken configuration is not a failed start: it
// is reported (ConfigError), the scripts are installed all the same, and a
// call gets the error, so that a backup that relies on the hooks fails
// visibly rather than running without them.
package hooks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/avsidecar/avsidecar/internal/atomicfile"
)

// Script names, in the client's scripts directory: what an Avamar
// administrator selects as the dataset's run-at-start and run-at-end
// scripts.
const (
	PreScript  = "avsidecar-pre.sh"
	PostScript = "avsidecar-post.sh"
)

// scriptMark is the second line of the scripts avsidecar writes, so that
// it never overwrites or removes a script it did not write.
const scriptMark = "# avsidecar hook script"

// keepRuns is how many phase runs Status keeps.
const keepRuns = 10

// Config says which hooks to run and where the scripts and socket go.
type Config struct {
	// Spec is the hooks' JSON (AVSIDECAR_HOOKS); empty when File gives it.
	Spec string
	// File is the host path of a file holding the JSON
	// (AVSIDECAR_HOOKS_FILE); empty when Spec gives it.
	File string
	// Socket is the host path of the unix socket the scripts call
	// (AVSIDECAR_HOOKS_SOCKET).
	Socket string
	// ScriptsDir is the host path of the client's scripts directory
	// (PREFIX/etc/scripts).
	ScriptsDir string
	// Command is the avsidecar binary the scripts run.
	Command string
	// Installed, when not nil, is closed once the client's package is
	// installed: the scripts go into its directory only then.
	Installed <-chan struct{}
	// HTTPClient makes the HTTP hooks' requests (default: a client with
	// the default transport; each hook's timeout bounds its request).
	HTTPClient *http.Client
}

// Status is a snapshot of the hooks. It holds no command line, URL query,
// header or output: those may carry secrets.
type Status struct {
	// Socket is the host path of the socket the scripts call.
	Socket string `json:"socket"`
	// Scripts are the host paths of the installed scripts.
	Scripts []string `json:"scripts,omitempty"`
	// ConfigError says why the configuration cannot be used.
	ConfigError string `json:"config_error,omitempty"`
	// Pre and Post describe the configured hooks.
	Pre  []HookInfo `json:"pre"`
	Post []HookInfo `json:"post"`
	// Runs are the last phase runs, oldest first.
	Runs []PhaseRun `json:"runs,omitempty"`
	// Hooks counts hook runs by phase and outcome ("pre/ok").
	Hooks map[string]uint64 `json:"hooks,omitempty"`
	// Calls counts phase runs by phase and result ("post/failed").
	Calls map[string]uint64 `json:"calls,omitempty"`
}

// HookInfo is what Status says of a configured hook.
type HookInfo struct {
	Name    string   `json:"name"`
	Kind    string   `json:"kind"`
	Timeout Duration `json:"timeout"`
	OnError string   `json:"on_error"`
}

// Hooks runs the phases and serves the scripts' calls. Create it with New
// and start it with Run.
type Hooks struct {
	cfg  Config
	log  zerolog.Logger
	http *http.Client
	spec Spec
	bad  error // the configuration's problem, if any

	running sync.Mutex // one phase at a time

	mu sync.Mutex
	st Status
}

// New reads the configuration. Only a Config avsidecar itself got wrong
// (no socket, scripts directory or command) is an error; a broken hook
// configuration is kept as ConfigError.
func New(cfg Config, log zerolog.Logger) (*Hooks, error) {
	if cfg.Socket == "" || cfg.ScriptsDir == "" || cfg.Command == "" {
		return nil, errors.New("hooks: socket, scripts dir and command are required")
	}
	h := &Hooks{cfg: cfg, log: log, http: cfg.HTTPClient}
	if h.http == nil {
		h.http = &http.Client{Transport: http.DefaultTransport}
	}
	h.st = Status{Socket: cfg.Socket, Pre: []HookInfo{}, Post: []HookInfo{}, Hooks: map[string]uint64{}, Calls: map[string]uint64{}}
	h.spec, h.bad = load(cfg)
	if h.bad != nil {
		h.st.ConfigError = h.bad.Error()
		return h, nil
	}
	h.st.Pre, h.st.Post = infos(h.spec.Pre), infos(h.spec.Post)
	return h, nil
}

// load reads the JSON from Spec or File.
func load(cfg Config) (Spec, error) {
	data := []byte(cfg.Spec)
	switch {
	case cfg.Spec != "" && cfg.File != "":
		return Spec{}, errors.New("hooks: set AVSIDECAR_HOOKS or AVSIDECAR_HOOKS_FILE, not both")
	case cfg.File != "":
		var err error
		if data, err = os.ReadFile(cfg.File); err != nil {
			return Spec{}, fmt.Errorf("hooks: %w", err)
		}
	case cfg.Spec == "":
		return Spec{}, errors.New("hooks: no configuration")
	}
	return Parse(data)
}

func infos(hooks []Hook) []HookInfo {
	out := make([]HookInfo, len(hooks))
	for i, h := range hooks {
		out[i] = HookInfo{Name: h.Name, Kind: h.Kind(), Timeout: h.Timeout, OnError: h.OnError}
	}
	return out
}

// ConfigError is the configuration's problem, or nil.
func (h *Hooks) ConfigError() error { return h.bad }

// Status returns a snapshot.
func (h *Hooks) Status() Status {
	h.mu.Lock()
	defer h.mu.Unlock()
	st := h.st
	st.Scripts = append([]string(nil), h.st.Scripts...)
	st.Runs = append([]PhaseRun(nil), h.st.Runs...)
	st.Hooks, st.Calls = make(map[string]uint64, len(h.st.Hooks)), make(map[string]uint64, len(h.st.Calls))
	for k, v := range h.st.Hooks {
		st.Hooks[k] = v
	}
	for k, v := range h.st.Calls {
		st.Calls[k] = v
	}
	return st
}

// RunPhase runs a phase's hooks now and records the run. Calls run one at
// a time.
func (h *Hooks) RunPhase(ctx context.Context, phase string) (PhaseRun, error) {
	if h.bad != nil {
		return PhaseRun{}, h.bad
	}
	var list []Hook
	switch phase {
	case PhasePre:
		list = h.spec.Pre
	case PhasePost:
		list = h.spec.Post
	default:
		return PhaseRun{}, fmt.Errorf("hooks: no phase %q", phase)
	}
	h.running.Lock()
	defer h.running.Unlock()
	run := h.runPhase(ctx, phase, list)
	h.record(run)
	ev := h.log.Info()
	if run.Result != ResultPassed {
		ev = h.log.Error()
	}
	ev.Str("phase", phase).Str("result", run.Result).Int("hooks", len(run.Hooks)).Strs("skipped", run.Skipped).
		Dur("took_ms", run.Duration).Msg("hook phase ran")
	return run, nil
}

func (h *Hooks) record(run PhaseRun) {
	h.mu.Lock()
	defer h.mu.Unlock()
	kept := run
	kept.Hooks = make([]Result, len(run.Hooks))
	for i, r := range run.Hooks {
		r.Output = nil // for the script's caller only
		kept.Hooks[i] = r
		h.st.Hooks[run.Phase+"/"+r.Outcome]++
	}
	h.st.Calls[run.Phase+"/"+run.Result]++
	h.st.Runs = append(h.st.Runs, kept)
	if len(h.st.Runs) > keepRuns {
		h.st.Runs = h.st.Runs[len(h.st.Runs)-keepRuns:]
	}
}

// Run serves the scripts' calls on the socket until ctx ends, then returns
// nil; once the package is installed it installs the scripts. It fails
// when the socket cannot be made.
func (h *Hooks) Run(ctx context.Context) error {
	ln, err := listen(h.cfg.Socket)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: h.handler(), ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
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
			// A running phase is waited for: its hooks resume the
			// application, and its script waits for the answer.
			shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := srv.Shutdown(shut); err != nil {
				srv.Close()
			}
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
// or an {"error"} (503 when the configuration is broken, 404 for an unknown
// phase).
func (h *Hooks) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/hooks/{phase}", func(w http.ResponseWriter, r *http.Request) {
		var req request
		_ = json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&req)
		phase := r.PathValue("phase")
		if phase != PhasePre && phase != PhasePost {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": fmt.Sprintf("no phase %q: want pre or post", phase)})
			return
		}
		h.log.Info().Str("phase", phase).Int("args", len(req.Args)).Msg("hook script called")
		// A caller that goes away (Avamar killed its script) does not cut
		// the hooks short: each has its own timeout, and a post hook that
		// resumes the application must not be killed half way.
		run, err := h.RunPhase(context.WithoutCancel(r.Context()), phase)
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

// installScripts writes the two scripts into the scripts directory, each
// only when its content changes, never over a file avsidecar did not
// write.
func (h *Hooks) installScripts() error {
	var installed []string
	for _, s := range []struct{ name, phase string }{{PreScript, PhasePre}, {PostScript, PhasePost}} {
		path := filepath.Join(h.cfg.ScriptsDir, s.name)
		if b, err := os.ReadFile(path); err == nil && !strings.HasPrefix(string(b), "#!/bin/sh\n"+scriptMark) {
			return fmt.Errorf("install %s: a script avsidecar did not write is there", path)
		}
		changed, err := atomicfile.WriteIfChanged(path, []byte(script(h.cfg.Command, h.cfg.Socket, s.phase)), 0o755)
		if err != nil {
			return fmt.Errorf("install hook script: %w", err)
		}
		if changed {
			h.log.Info().Str("path", path).Msg("hook script installed")
		}
		installed = append(installed, path)
	}
	h.mu.Lock()
	h.st.Scripts = installed
	h.mu.Unlock()
	return nil
}

// script is the text of a phase's script.
func script(command, socket, phase string) string {
	return "#!/bin/sh\n" + scriptMark + " (written at every start of avsidecar).\n" +
		"# Select it in the Avamar dataset as the run-" + map[string]string{PhasePre: "at-start", PhasePost: "at-end"}[phase] +
		" script: it runs the sidecar's " + phase + " hooks.\n" +
		"exec " + quote(command) + " hook --socket " + quote(socket) + " " + phase + " \"$@\"\n"
}

// quote is s in single quotes for /bin/sh.
func quote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
