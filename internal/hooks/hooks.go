// Package hooks makes a backup of the application consistent: it runs the
// operator's pre hooks before Avamar backs the pod up and the post hooks
// after, the way Velero, Stash and K8up run theirs, and it never leaves
// the application frozen.
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
// run in the sidecar, which shares the pod's network with the application;
// HTTP calls to it; or database sessions that stay open from pre to post),
// each with its timeout and on-error policy, and answers; the script prints
// every hook's outcome and exits 0 when the phase passed, 1 when a hook
// with on_error fail did not succeed: Avamar then fails the backup.
//
// The freeze lease: every pre phase opens a lease, written durably to the
// state directory before its first hook runs, that ends when the post
// hooks have run. Whoever comes first runs them: the post call; the
// lease's expiry after max_freeze; a failed pre phase (what the pre hooks
// before the failure did is undone at once, by the whole post list); a pre
// phase whose caller left; the sidecar's stop; or, after a sidecar that
// was killed with a freeze open, its next start, before anything else. A
// post call that comes after another ended the freeze runs nothing and
// fails: the end of that backup's copy was not frozen. Post hooks must
// therefore be safe to run when the pre hooks ran only in part, and again
// after a crash.
//
// Phases run one at a time, in the order they are called; a call whose
// caller leaves while it waits is never run. Every run is logged, kept in
// Status (the last runs, the open lease, how freezes ended, and counts)
// and counted in the metrics. A broken configuration is not a failed
// start: it is reported (ConfigError), the scripts are installed all the
// same, and a call gets the error, so that a backup that relies on the
// hooks fails visibly rather than running without them.
package hooks

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// keepRuns is how many phase runs Status keeps.
const keepRuns = 10

// DefaultStopTimeout is how long a stop waits for a running phase and the
// thaw of an open freeze when Config.StopTimeout is not set.
const DefaultStopTimeout = 15 * time.Second

// Config says which hooks to run and where the scripts, socket and lease
// go.
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
	// LeaseFile is the host path of the freeze lease's record, in the
	// state directory on the volume, so that a start after a kill finds a
	// freeze left open.
	LeaseFile string
	// StopTimeout is how long Run, once its context ends, waits for a
	// running phase and for the thaw of an open freeze before it kills
	// their hooks (default DefaultStopTimeout); it must end before the
	// sidecar's own stop deadline.
	StopTimeout time.Duration
	// Installed, when not nil, is closed once the client's package is
	// installed: the scripts go into its directory only then.
	Installed <-chan struct{}
}

// Status is a snapshot of the hooks. It holds no command line, statement,
// URL query, header or output: those may carry secrets.
type Status struct {
	// Socket is the host path of the socket the scripts call.
	Socket string `json:"socket"`
	// Scripts are the host paths of the installed scripts.
	Scripts []string `json:"scripts,omitempty"`
	// ConfigError says why the configuration cannot be used.
	ConfigError string `json:"config_error,omitempty"`
	// FileAbsent is true when AVSIDECAR_HOOKS_FILE names no file: no hooks
	// are configured (the example and kubectl avamar inject mount the
	// ConfigMap's hooks.json as optional). It is also a ConfigError, so that
	// a backup whose scripts call the hooks fails rather than runs without
	// them; but it is no fault of a sidecar that takes no such backup.
	FileAbsent bool `json:"file_absent,omitempty"`
	// MaxFreeze is how long a freeze may last before avsidecar runs the
	// post hooks itself.
	MaxFreeze Duration `json:"max_freeze"`
	// Pre and Post describe the configured hooks.
	Pre  []HookInfo `json:"pre"`
	Post []HookInfo `json:"post"`
	// Lease is the open freeze, if any.
	Lease *Lease `json:"lease,omitempty"`
	// LastThaw says how the last freeze ended, and who ran its post hooks.
	LastThaw *Thaw `json:"last_thaw,omitempty"`
	// Runs are the last phase runs, oldest first.
	Runs []PhaseRun `json:"runs,omitempty"`
	// Hooks counts hook runs by phase and outcome ("pre/ok").
	Hooks map[string]uint64 `json:"hooks,omitempty"`
	// Calls counts the scripts' calls by phase and result ("post/failed").
	Calls map[string]uint64 `json:"calls,omitempty"`
	// Thaws counts ended freezes by who ran the post hooks ("expiry").
	Thaws map[string]uint64 `json:"thaws,omitempty"`
}

// HookInfo is what Status says of a configured hook.
type HookInfo struct {
	Name    string   `json:"name"`
	Kind    string   `json:"kind"`
	Timeout Duration `json:"timeout"`
	OnError string   `json:"on_error"`
}

// Hooks runs the phases and serves the scripts' calls. Create it with New,
// call ThawAtStart first, then Run.
type Hooks struct {
	cfg  Config
	log  zerolog.Logger
	http *http.Client
	spec Spec
	bad  error // the configuration's problem, if any

	// slot is held by the phase that runs: one at a time.
	slot chan struct{}
	// stopping is closed when the stop begins: no phase starts after.
	stopping     chan struct{}
	stoppingOnce sync.Once
	// cut ends when the stop's deadline passes: the hooks still running
	// are killed.
	cut    context.Context
	cutNow context.CancelFunc

	// Held by the slot's holder only.
	sessions []*session  // opened by the pre hooks of the open freeze
	expiry   *time.Timer // the open lease's
	late     *Thaw       // a freeze ended otherwise than by post, for the late post call

	mu sync.Mutex
	st Status
}

// New reads the configuration. Only a Config avsidecar itself got wrong
// (no socket, scripts directory, command or lease file) is an error; a
// broken hook configuration is kept as ConfigError.
func New(cfg Config, log zerolog.Logger) (*Hooks, error) {
	if cfg.Socket == "" || cfg.ScriptsDir == "" || cfg.Command == "" || cfg.LeaseFile == "" {
		return nil, errors.New("hooks: socket, scripts dir, command and lease file are required")
	}
	if cfg.StopTimeout <= 0 {
		cfg.StopTimeout = DefaultStopTimeout
	}
	h := &Hooks{cfg: cfg, log: log, http: hookClient, slot: make(chan struct{}, 1), stopping: make(chan struct{})}
	h.cut, h.cutNow = context.WithCancel(context.Background())
	h.st = Status{Socket: cfg.Socket, Pre: []HookInfo{}, Post: []HookInfo{},
		Hooks: map[string]uint64{}, Calls: map[string]uint64{}, Thaws: map[string]uint64{}}
	h.spec, h.bad = load(cfg)
	if h.bad != nil {
		h.st.ConfigError = h.bad.Error()
		h.st.FileAbsent = cfg.File != "" && errors.Is(h.bad, fs.ErrNotExist)
		return h, nil
	}
	h.st.MaxFreeze = h.spec.MaxFreeze
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
	st.Hooks, st.Calls, st.Thaws = copyCounts(h.st.Hooks), copyCounts(h.st.Calls), copyCounts(h.st.Thaws)
	if h.st.Lease != nil {
		l := *h.st.Lease
		st.Lease = &l
	}
	if h.st.LastThaw != nil {
		t := *h.st.LastThaw
		st.LastThaw = &t
	}
	return st
}

func copyCounts(m map[string]uint64) map[string]uint64 {
	out := make(map[string]uint64, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// Errors of a call that ran no phase.
var (
	errStopping = errors.New("the sidecar is stopping: no phase starts now")
)

// acquire takes the phase slot, unless ctx ends or the stop begins first.
func (h *Hooks) acquire(ctx context.Context) error {
	select {
	case <-h.stopping:
		return errStopping
	default:
	}
	select {
	case h.slot <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-h.stopping:
		return errStopping
	}
}

func (h *Hooks) release() { <-h.slot }

// RunPhase runs a phase's hooks for a caller and records the run. Calls
// run one at a time, in turn; one whose ctx ends while it waits (its
// caller left) is not run. Once started, a phase is not cut short by ctx:
// its hooks' timeouts, the lease and the stop's deadline bound it.
func (h *Hooks) RunPhase(ctx context.Context, phase string) (PhaseRun, error) {
	if h.bad != nil {
		return PhaseRun{}, h.bad
	}
	if phase != PhasePre && phase != PhasePost {
		return PhaseRun{}, fmt.Errorf("hooks: no phase %q", phase)
	}
	if err := h.acquire(ctx); err != nil {
		if ctx.Err() != nil {
			h.log.Warn().Str("phase", phase).Msg("hook phase not run: its caller left")
		}
		return PhaseRun{}, err
	}
	defer h.release()
	var run PhaseRun
	var err error
	if phase == PhasePre {
		run, err = h.pre(ctx)
	} else {
		run = h.post()
	}
	if err != nil {
		return PhaseRun{}, err
	}
	h.record(run, true)
	if run.Undo != nil {
		h.record(*run.Undo, false)
	}
	return run, nil
}

// pre opens a lease, durably, and runs the pre hooks within it. A failed
// phase, one whose caller left, and one that outlived the lease end the
// freeze at once.
func (h *Hooks) pre(ctx context.Context) (PhaseRun, error) {
	if l := h.lease(); l != nil {
		return PhaseRun{}, fmt.Errorf("a freeze is open since %s: it ends with the post hooks, at %s at the latest; no pre phase runs before",
			l.Opened.Format(time.RFC3339), l.Deadline.Format(time.RFC3339))
	}
	now := time.Now()
	max := time.Duration(h.spec.MaxFreeze)
	l := Lease{ID: strconv.FormatInt(now.UnixNano(), 10), Opened: now, Deadline: now.Add(max), MaxFreeze: h.spec.MaxFreeze}
	if err := writeLease(h.cfg.LeaseFile, l, nil); err != nil {
		return PhaseRun{}, fmt.Errorf("the pre hooks did not run: a freeze that cannot be recorded cannot be guarded: %w", err)
	}
	h.late = nil
	h.setLease(&l)
	h.expiry = time.AfterFunc(max, func() { h.expire(l.ID) })
	h.log.Info().Str("lease", l.ID).Time("deadline", l.Deadline).Dur("max_freeze_ms", max).Msg("freeze lease opened")

	pctx, cancel := context.WithDeadline(h.cut, l.Deadline)
	run := h.runPhase(pctx, PhasePre, h.spec.Pre)
	cancel()
	var by string
	switch {
	case h.cut.Err() != nil:
		run.Cut = true
		h.log.Error().Str("phase", PhasePre).Str("lease", l.ID).Bool("lease_open", true).Msg("hook phase cut by the stop")
		return run, nil // the lease stays open: the next start thaws
	case time.Now().After(l.Deadline):
		by = ByExpiry
	case run.Result == ResultFailed:
		by = ByPreFailed
	case ctx.Err() != nil:
		by = ByCallerGone
	default:
		return run, nil
	}
	undo := h.thaw(by)
	run.Undo = &undo
	return run, nil
}

// post ends the open freeze. With none open, a post call after a freeze
// that ended otherwise is late: it runs nothing and fails. Otherwise (no
// pre phase ran) the post hooks run as they are.
func (h *Hooks) post() PhaseRun {
	if h.lease() != nil {
		return h.thaw(ByPost)
	}
	if late := h.late; late != nil {
		h.late = nil
		h.log.Error().Str("lease", late.Lease.ID).Str("by", late.By).Time("thawed", late.At).
			Msg("late post call: the freeze had ended before it, the post hooks do not run again")
		return PhaseRun{Phase: PhasePost, Result: ResultFailed, Started: time.Now(), Hooks: []Result{}, Late: late}
	}
	return h.runPhase(h.cut, PhasePost, h.spec.Post)
}

// thaw ends the open freeze: the sessions end and the post hooks run, and
// the lease is closed on disk. The caller holds the slot. Cut by the
// stop, the lease stays open on disk, for the next start.
func (h *Hooks) thaw(by string) PhaseRun {
	l := h.lease()
	if h.expiry != nil {
		h.expiry.Stop()
		h.expiry = nil
	}
	run := h.thawRun(h.cut, by)
	if h.cut.Err() != nil {
		run.Cut = true
		h.log.Error().Str("phase", PhasePost).Str("by", by).Str("lease", l.ID).Bool("lease_open", true).
			Msg("hook phase cut by the stop")
		return run
	}
	t := Thaw{Lease: *l, By: by, At: time.Now(), Result: run.Result}
	if err := writeLease(h.cfg.LeaseFile, *l, &t); err != nil {
		h.log.Error().Err(err).Msg("freeze lease not closed on disk: the next start runs the post hooks again")
	}
	if by != ByPost {
		h.late = &t
	}
	h.mu.Lock()
	h.st.Lease, h.st.LastThaw = nil, &t
	h.st.Thaws[by]++
	h.mu.Unlock()
	ev := h.log.Info()
	if by != ByPost {
		ev = h.log.Error()
	}
	ev.Str("by", by).Str("lease", l.ID).Str("result", run.Result).Dur("frozen_ms", t.At.Sub(l.Opened)).Msg("freeze lease thawed")
	return run
}

// expire ends the freeze id when its deadline has passed and nothing else
// ended it.
func (h *Hooks) expire(id string) {
	if err := h.acquire(h.cut); err != nil {
		return // the stop ends it
	}
	defer h.release()
	if l := h.lease(); l == nil || l.ID != id {
		return
	}
	h.record(h.thaw(ByExpiry), false)
}

// ThawAtStart ends a freeze that a killed sidecar left open: it runs the
// post hooks before anything else starts. ctx ending (a stop) cuts it
// after the stop timeout, and the lease stays open.
func (h *Hooks) ThawAtStart(ctx context.Context) {
	l, err := readOpenLease(h.cfg.LeaseFile)
	if err != nil {
		h.log.Error().Err(err).Msg("freeze lease unreadable")
	}
	if l == nil {
		return
	}
	h.log.Error().Str("lease", l.ID).Time("opened", l.Opened).Msg("freeze lease found open at start: running the post hooks first")
	if h.bad != nil {
		h.log.Error().Err(h.bad).Msg("the freeze cannot be ended: the hook configuration is broken")
		return
	}
	stop := context.AfterFunc(ctx, h.beginStop)
	defer stop()
	if err := h.acquire(ctx); err != nil {
		return
	}
	defer h.release()
	h.setLease(l)
	h.record(h.thaw(ByStart), false)
}

// beginStop refuses every phase from now on and kills the hooks still
// running once the stop timeout has passed.
func (h *Hooks) beginStop() {
	h.stoppingOnce.Do(func() {
		close(h.stopping)
		time.AfterFunc(h.cfg.StopTimeout, h.cutNow)
	})
}

// stopPhases waits for the running phase and ends an open freeze, within
// the stop timeout; beginStop has run.
func (h *Hooks) stopPhases() {
	select {
	case h.slot <- struct{}{}:
	case <-h.cut.Done():
		// The running phase's hooks are being killed; it ends at once.
		select {
		case h.slot <- struct{}{}:
		case <-time.After(250 * time.Millisecond):
			return
		}
	}
	defer h.release()
	if h.lease() != nil && h.cut.Err() == nil {
		h.record(h.thaw(ByStop), false)
	}
}

func (h *Hooks) lease() *Lease {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.st.Lease
}

func (h *Hooks) setLease(l *Lease) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.st.Lease = l
}

// record keeps a run in Status, counts it (as a script's call when call is
// set) and logs it.
func (h *Hooks) record(run PhaseRun, call bool) {
	h.mu.Lock()
	kept := run
	kept.Hooks = make([]Result, len(run.Hooks))
	for i, r := range run.Hooks {
		r.Output = nil // for the script's caller only
		kept.Hooks[i] = r
		h.st.Hooks[run.Phase+"/"+r.Outcome]++
	}
	kept.Undo = nil // recorded as a run of its own
	if call {
		h.st.Calls[run.Phase+"/"+run.Result]++
	}
	h.st.Runs = append(h.st.Runs, kept)
	if len(h.st.Runs) > keepRuns {
		h.st.Runs = h.st.Runs[len(h.st.Runs)-keepRuns:]
	}
	h.mu.Unlock()
	ev := h.log.Info()
	if run.Result != ResultPassed {
		ev = h.log.Error()
	}
	ev.Str("phase", run.Phase).Str("by", run.By).Str("result", run.Result).Int("hooks", len(run.Hooks)).Strs("skipped", run.Skipped).
		Bool("cut", run.Cut).Bool("late", run.Late != nil).Dur("took_ms", run.Duration.D()).Msg("hook phase ran")
}
