// Package metrics serves avsidecar's Prometheus metrics at /metrics.
//
// The text exposition format (version 0.0.4) is written by hand: the
// Prometheus client library links the protobuf runtime, whose package
// initialisation alone costs a static binary more than 4 MiB of idle RSS.
// A scrape holds the HTTP middleware's request counter and latency
// histogram, a few Go runtime and process series read at scrape time, and
// the series of a Snapshot of the sidecar read at every scrape. The
// components keep their own counters and expose them through their
// Status(); the caller turns those into a Snapshot, so the numbers in
// /metrics and /v1/status can never disagree.
//
// Label values come only from fixed sets (phases, outcomes, handler names,
// status codes, backup states) or from the installed package's own header:
// each set is owned by the package whose values they are and handed over in
// Config.Labels, so a value added there gets its series here, and a
// snapshot value outside its set is a bug reported in the log, never
// counted under another value.
// client names, paths and remote addresses are never labels, and a Snapshot
// has no field that could carry a secret.
//
// Series (all prefixed avsidecar_):
//
//	build_info{version,revision,goversion}            1
//	phase{phase}                                      1 for the current phase, 0 for the others
//	ready                                             1 when /readyz passes
//	install_info{package,version,release}             1, once the client is installed
//	registration_attempts_total{outcome}              counter
//	registered                                        0/1
//	agent_up                                          0/1
//	agent_restarts_total                              counter
//	agent_uptime_seconds                              seconds since avagent last started
//	agent_daemonized                                  1 while the supervised avagent is a daemon it forked
//	ssh_logins_total, ssh_refusals_total              counters
//	ssh_sessions_refused_total                        counter (session cap reached)
//	ssh_handshakes_dropped_total                      counter (unauthenticated connection caps reached)
//	ssh_active_sessions                               gauge
//	ssh_authorized_keys_refused                       gauge (authorized_keys lines refused)
//	ssh_state{state}                                  1 for the SSH server's state; only when SSH is on
//	ssh_host_keys_replaced                            gauge (damaged host keys set aside at this start)
//	ssh_handshakes_evicted_total                      counter (stalled handshakes dropped for a newcomer)
//	browse_requests_total{code}                       counter
//	avagent_log_lines_total                           counter
//	last_backup_timestamp_seconds                     only when a backup is known
//	last_backup_check_timestamp_seconds               only when the REST API was asked
//	last_checkin_timestamp_seconds                    only when the REST API said when the agent last checked in
//	hook_runs_total{phase,outcome}                    counter, only when hooks are configured
//	hook_calls_total{phase,result}                    counter (scripts' calls), only when hooks are configured
//	hook_thaws_total{by}                              counter: freezes ended, by who ran the post hooks; only when hooks are configured
//	hook_freeze_open                                  1 while a freeze (a pre phase without its post) is open; only when hooks are configured
//	backup_api_state{state}                           only when the REST API is configured
//	http_connections_open                             gauge
//	http_connections_dropped_total                    counter (connection caps reached)
//	http_requests_total{handler,code}                 counter, from Instrument
//	http_request_duration_seconds{handler}            histogram, from Instrument
//
// and, under client_golang's names and meanings, go_goroutines,
// go_memstats_heap_alloc_bytes, go_memstats_sys_bytes,
// process_cpu_seconds_total, process_open_fds, process_max_fds,
// process_virtual_memory_bytes, process_resident_memory_bytes and
// process_start_time_seconds.
package metrics

import (
	"bytes"
	"maps"
	"net/http"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// Labels are the fixed label sets, each from the package that owns it.
type Labels struct {
	// Phases are the values of the phase label, in the order a healthy
	// start goes through them.
	Phases []string
	// Outcomes are the values of the outcome label of registration
	// attempts.
	Outcomes []string
	// BackupStates are the values of the state label of backup_api_state.
	BackupStates []string
	// Handlers are the handler names Instrument accepts.
	Handlers []string
	// SSHStates are the values of the state label of ssh_state.
	SSHStates []string
	// HookPhases, HookOutcomes and HookResults are the values of the phase,
	// outcome and result labels of the hook series; HookThawBy those of the
	// by label of hook_thaws_total.
	HookPhases, HookOutcomes, HookResults, HookThawBy []string
	// DoctorChecks and DoctorStates are the values of the check and state
	// labels of doctor_state.
	DoctorChecks, DoctorStates []string
}

// codes are the status codes kept as they are in code labels; any other is
// counted under its class ("2xx", "4xx", ...).
var codes = map[int]bool{
	200: true, 204: true, 206: true, 301: true, 302: true, 304: true,
	400: true, 401: true, 403: true, 404: true, 405: true, 406: true, 409: true,
	413: true, 414: true, 429: true, 500: true, 501: true, 503: true,
}

// Install describes the installed Avamar client package.
type Install struct {
	// Package is the RPM name, e.g. AvamarClient; empty while not installed.
	Package string
	// Version is the RPM version, e.g. 7.5.101.
	Version string
	// Release is the RPM release, e.g. 101.
	Release string
}

// Snapshot is the state of the sidecar at one scrape, filled by the caller
// from the components' Status(). Counters are totals since the process
// started; they are never reported lower than at an earlier scrape.
type Snapshot struct {
	// Phase is one of Labels.Phases.
	Phase string
	// Ready is true when /readyz passes.
	Ready bool
	// Install is the installed client; no info series while Package is empty.
	Install Install
	// Registrations counts registration attempts by outcome (register's
	// Status().Outcomes), each one of Labels.Outcomes.
	Registrations map[string]int
	// Registered is true once the client is registered (or a matching
	// receipt made it unnecessary).
	Registered bool
	// AgentUp is true while avagent runs.
	AgentUp bool
	// AgentRestarts counts avagent restarts (supervise's Status().Restarts).
	AgentRestarts int
	// AgentUptime is how long the running avagent has been up; 0 when down.
	AgentUptime time.Duration
	// SSHLogins counts successful SSH authentications.
	SSHLogins uint64
	// SSHRefusals counts refused SSH authentication attempts.
	SSHRefusals uint64
	// SSHActiveSessions is the number of open SSH sessions.
	SSHActiveSessions int
	// SSHSessionsRefused counts sessions refused by the session cap.
	SSHSessionsRefused uint64
	// SSHHandshakesDropped counts connections closed at once by the
	// unauthenticated connection caps (a flood, or a scanner).
	SSHHandshakesDropped uint64
	// SSHAuthorizedKeysRefused is the number of authorized_keys lines
	// currently refused (unparsable, or with options the server cannot
	// honour): keys someone meant to let in and cannot.
	SSHAuthorizedKeysRefused int
	// SSHState is the SSH server's state, one of Labels.SSHStates; empty
	// when SSH is off, and then the series is absent.
	SSHState string
	// SSHHostKeysReplaced is the number of damaged host keys set aside and
	// made again at this start.
	SSHHostKeysReplaced int
	// SSHHandshakesEvicted counts unauthenticated connections dropped to
	// make room for a newcomer.
	SSHHandshakesEvicted uint64
	// BrowseRequests counts answered browse requests by status code, as in
	// browse's Status().Requests ("200", "404", ...). Codes outside a fixed
	// set are counted under their class ("4xx"); anything unparsable as
	// "other".
	BrowseRequests map[string]uint64
	// AvagentLogLines counts avagent.log lines re-emitted (logfollow's
	// Status().Lines).
	AvagentLogLines uint64
	// HTTPConnsOpen is the number of HTTP connections open now.
	HTTPConnsOpen int
	// HTTPConnsDropped counts HTTP connections closed at once because a
	// connection cap was reached.
	HTTPConnsDropped uint64
	// LastBackup is the time of the client's newest backup; zero when
	// unknown, and then the series is absent (not 0, which would read as
	// "1970" and fire every freshness alert).
	LastBackup time.Time
	// LastBackupCheck is when the REST API was last asked; zero: absent.
	LastBackupCheck time.Time
	// BackupAPIState is backupapi's state, one of Labels.BackupStates;
	// empty when the REST API is not configured, and then the series is
	// absent.
	BackupAPIState string
	// LastCheckin is when the Avamar server last heard from the agent;
	// zero: absent.
	LastCheckin time.Time
	// AgentDaemonized is true while the supervised avagent is a daemon it
	// forked despite --daemon=false.
	AgentDaemonized bool
	// HooksConfigured makes the hook series exist (from then on).
	HooksConfigured bool
	// HookRuns counts hook runs by "phase/outcome" (hooks' Status().Hooks).
	HookRuns map[string]uint64
	// HookCalls counts the scripts' calls by "phase/result" (hooks'
	// Status().Calls).
	HookCalls map[string]uint64
	// HookThaws counts ended freezes by who ran the post hooks (hooks'
	// Status().Thaws).
	HookThaws map[string]uint64
	// HookFreezeOpen is true while a freeze is open.
	HookFreezeOpen bool
	// Doctor is each doctor check's state, by check; nil before the
	// doctor's first report, and then the series is absent.
	Doctor map[string]string
}

// Config says what the metrics describe.
type Config struct {
	// Version is avsidecar's version, for build_info.
	Version string
	// Revision is the VCS revision avsidecar was built from, for build_info.
	Revision string
	// Labels are the values of the labelled series.
	Labels Labels
	// Snapshot is called at every scrape, possibly from several goroutines
	// at once; it must be cheap and must not block. Nil: only build info,
	// HTTP, Go and process metrics.
	Snapshot func() Snapshot
}

// buckets are the upper bounds of the latency histogram, in seconds.
var buckets = [...]float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 120}

// Metrics keeps the HTTP counts and serves /metrics. Create it with New.
type Metrics struct {
	cfg Config
	log zerolog.Logger

	mu sync.Mutex
	// requests counts answered requests by handler and code label.
	requests map[[2]string]uint64
	// latency is the histogram of each instrumented handler.
	latency map[string]*histogram
	// high keeps the highest value reported per Snapshot counter series,
	// so that a counter never goes backwards even if a component's count
	// does.
	high map[string]float64
	// warned are the values outside their label sets already logged.
	warned map[string]bool
	// hooksSeen is true once a snapshot had hooks configured.
	hooksSeen bool
}

// histogram counts observations per bucket (not cumulated; the last one is
// +Inf) with their sum.
type histogram struct {
	counts [len(buckets) + 1]uint64
	count  uint64
	sum    float64
}

// observe adds one observation, in the first bucket whose bound is >= v.
func (h *histogram) observe(v float64) {
	h.counts[sort.SearchFloat64s(buckets[:], v)]++
	h.count++
	h.sum += v
}

// New makes the metrics of one sidecar; nothing is read before a scrape.
func New(cfg Config, log zerolog.Logger) (*Metrics, error) {
	return &Metrics{
		cfg:      cfg,
		log:      log,
		requests: map[[2]string]uint64{},
		latency:  map[string]*histogram{},
		high:     map[string]float64{},
		warned:   map[string]bool{},
	}, nil
}

// scrapeBuffers keep the text of a scrape (some 20 KB) from one scrape to
// the next: Prometheus scrapes every pod every few seconds for its whole
// life, and a new buffer each time is most of an idle sidecar's garbage.
var scrapeBuffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		buf := scrapeBuffers.Get().(*bytes.Buffer)
		defer scrapeBuffers.Put(buf)
		buf.Reset()
		writeText(buf, m.families())
		w.Header().Set("Content-Type", contentType)
		w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
		_, _ = w.Write(buf.Bytes())
	})
}

// families gathers every family of one scrape.
func (m *Metrics) families() []*family {
	fams := append(goFamilies(), m.httpFamilies()...)
	if proc, err := processFamilies(); err != nil {
		m.log.Warn().Err(err).Msg("metrics scrape error")
	} else {
		fams = append(fams, proc...)
	}
	return append(fams, m.snapshotFamilies()...)
}

// httpFamilies copies Instrument's counts.
func (m *Metrics) httpFamilies() []*family {
	requests := &family{name: "avsidecar_http_requests_total", typ: counterType,
		help: "HTTP requests answered, by handler and status code (or class)."}
	latency := &family{name: "avsidecar_http_request_duration_seconds", typ: histogramType,
		help: "Time to answer an HTTP request (a whole stream for walk), by handler."}
	m.mu.Lock()
	defer m.mu.Unlock()
	for k, n := range m.requests {
		requests.add(float64(n), "code", k[1], "handler", k[0])
	}
	for handler, h := range m.latency {
		c := *h
		latency.series = append(latency.series, series{labels: []string{"handler", handler}, hist: &c})
	}
	return []*family{requests, latency}
}

// Instrument wraps h so that its requests are counted by status code and
// timed, under handler, one of Labels.Handlers. The wrapper keeps
// http.Flusher working for streams.
func (m *Metrics) Instrument(handler string, h http.Handler) http.Handler {
	if !slices.Contains(m.cfg.Labels.Handlers, handler) {
		panic("metrics: handler " + handler + " is not in Labels.Handlers")
	}
	// The latency series exists from now on, so that a handler's first
	// request is seen as an increase from 0.
	m.mu.Lock()
	latency := m.latency[handler]
	if latency == nil {
		latency = &histogram{}
		m.latency[handler] = latency
	}
	m.mu.Unlock()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &recorder{ResponseWriter: w}
		defer func() {
			took := time.Since(start).Seconds()
			m.mu.Lock()
			defer m.mu.Unlock()
			latency.observe(took)
			m.requests[[2]string{handler, codeLabel(rec.status())}]++
		}()
		h.ServeHTTP(rec, r)
	})
}

// recorder remembers the status code written through it.
type recorder struct {
	http.ResponseWriter
	code int
}

// WriteHeader records the first final status code.
func (r *recorder) WriteHeader(code int) {
	if r.code == 0 && code >= 200 {
		r.code = code
	}
	r.ResponseWriter.WriteHeader(code)
}

// Write records an implicit 200.
func (r *recorder) Write(b []byte) (int, error) {
	if r.code == 0 {
		r.code = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

// Flush lets streaming handlers (walk) flush through the wrapper.
func (r *recorder) Flush() {
	if r.code == 0 {
		r.code = http.StatusOK
	}
	_ = http.NewResponseController(r.ResponseWriter).Flush()
}

// Unwrap lets http.ResponseController reach the real writer.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

func (r *recorder) status() int {
	if r.code == 0 {
		return http.StatusOK
	}
	return r.code
}

// codeLabel bounds the code label: known codes as they are, others by class.
func codeLabel(code int) string {
	if codes[code] {
		return strconv.Itoa(code)
	}
	if code >= 100 && code < 600 {
		return strconv.Itoa(code/100) + "xx"
	}
	return "other"
}

// codeLabelString is codeLabel for codes given as text.
func codeLabelString(s string) string {
	code, err := strconv.Atoi(s)
	if err != nil {
		return "other"
	}
	return codeLabel(code)
}

// snapshotFamilies reads one Snapshot and turns it into families.
func (m *Metrics) snapshotFamilies() []*family {
	f := func(name, typ, help string) *family {
		return &family{name: "avsidecar_" + name, typ: typ, help: help}
	}
	buildInfo := f("build_info", gaugeType, "avsidecar's build; always 1.")
	buildInfo.add(1, "goversion", runtime.Version(), "revision", m.cfg.Revision, "version", m.cfg.Version)
	if m.cfg.Snapshot == nil {
		return []*family{buildInfo}
	}
	s := m.cfg.Snapshot()

	gauge := func(name, help string, v float64) *family {
		g := f(name, gaugeType, help)
		g.add(v)
		return g
	}
	phase := f("phase", gaugeType, "1 for the current phase of the sidecar, 0 for the others.")
	m.checkLabel("phase", m.cfg.Labels.Phases, s.Phase)
	for _, p := range m.cfg.Labels.Phases {
		phase.add(bool01(s.Phase == p), "phase", p)
	}
	installInfo := f("install_info", gaugeType, "The installed Avamar client package; always 1.")
	if s.Install.Package != "" {
		installInfo.add(1, "package", s.Install.Package, "release", s.Install.Release, "version", s.Install.Version)
	}
	fams := []*family{
		buildInfo, phase, installInfo,
		gauge("ready", "1 when the readiness check passes.", bool01(s.Ready)),
		gauge("registered", "1 once the client is registered with the Avamar server.", bool01(s.Registered)),
		gauge("agent_up", "1 while avagent runs.", bool01(s.AgentUp)),
		gauge("agent_uptime_seconds", "Seconds since avagent last started; 0 while down.", s.AgentUptime.Seconds()),
		gauge("agent_daemonized", "1 while the supervised avagent is a daemon it forked despite --daemon=false.", bool01(s.AgentDaemonized)),
		gauge("ssh_active_sessions", "Open SSH sessions.", float64(s.SSHActiveSessions)),
		gauge("http_connections_open", "HTTP connections open.", float64(s.HTTPConnsOpen)),
		gauge("ssh_host_keys_replaced", "Damaged SSH host keys set aside and made again at this start.", float64(s.SSHHostKeysReplaced)),
		gauge("ssh_authorized_keys_refused", "Lines of authorized_keys currently refused (unparsable, or with options the server cannot honour).",
			float64(s.SSHAuthorizedKeysRefused)),
	}
	if !s.LastBackup.IsZero() {
		fams = append(fams, gauge("last_backup_timestamp_seconds",
			"Unix time of the client's newest backup on the Avamar server; absent while unknown.", unixSeconds(s.LastBackup)))
	}
	if !s.LastBackupCheck.IsZero() {
		fams = append(fams, gauge("last_backup_check_timestamp_seconds",
			"Unix time the Avamar REST API was last asked for backups.", unixSeconds(s.LastBackupCheck)))
	}
	if s.SSHState != "" {
		state := f("ssh_state", gaugeType, "1 for the current state of the SSH server; absent while SSH is off.")
		m.checkLabel("state", m.cfg.Labels.SSHStates, s.SSHState)
		for _, st := range m.cfg.Labels.SSHStates {
			state.add(bool01(s.SSHState == st), "state", st)
		}
		fams = append(fams, state)
	}
	if !s.LastCheckin.IsZero() {
		fams = append(fams, gauge("last_checkin_timestamp_seconds",
			"Unix time the Avamar server last heard from the agent, from the REST API; absent while unknown.", unixSeconds(s.LastCheckin)))
	}
	if s.BackupAPIState != "" {
		state := f("backup_api_state", gaugeType, "1 for the current state of the backup check against the Avamar REST API.")
		m.checkLabel("state", m.cfg.Labels.BackupStates, s.BackupAPIState)
		for _, st := range m.cfg.Labels.BackupStates {
			state.add(bool01(s.BackupAPIState == st), "state", st)
		}
		fams = append(fams, state)
	}
	if s.Doctor != nil {
		doc := f("doctor_state", gaugeType, "1 for the current state of each of the doctor's checks (what keeps the Avamar server from reaching the client); a fault names its cause in /v1/status.")
		for _, check := range m.cfg.Labels.DoctorChecks {
			m.checkLabel("state", m.cfg.Labels.DoctorStates, s.Doctor[check])
			for _, st := range m.cfg.Labels.DoctorStates {
				doc.add(bool01(s.Doctor[check] == st), "check", check, "state", st)
			}
		}
		fams = append(fams, doc)
	}
	if s.HooksConfigured {
		fams = append(fams, gauge("hook_freeze_open", "1 while a freeze is open: pre hooks ran and their post hooks have not.", bool01(s.HookFreezeOpen)))
	}
	return append(fams, m.counters(s)...)
}

// counters builds the counter families of s, each series at least as high
// as at the previous scrape.
func (m *Metrics) counters(s Snapshot) []*family {
	outcomes := map[string]float64{}
	for o, n := range s.Registrations {
		m.checkLabel("outcome", m.cfg.Labels.Outcomes, o)
		outcomes[o] += float64(n)
	}
	browse := map[string]float64{}
	for code, n := range s.BrowseRequests {
		browse[codeLabelString(code)] += float64(n)
	}

	m.mu.Lock()
	defer m.mu.Unlock()
	var fams []*family
	counter := func(name, help string) *family {
		c := &family{name: "avsidecar_" + name, typ: counterType, help: help}
		fams = append(fams, c)
		return c
	}
	add := func(c *family, key string, v float64, labels ...string) {
		v = max(v, m.high[key])
		m.high[key] = v
		c.add(v, labels...)
	}
	registrations := counter("registration_attempts_total", "Registration attempts by outcome.")
	for _, o := range m.cfg.Labels.Outcomes {
		add(registrations, "registrations/"+o, outcomes[o], "outcome", o)
	}
	add(counter("agent_restarts_total", "Restarts of avagent."), "agent_restarts", float64(s.AgentRestarts))
	add(counter("ssh_logins_total", "Successful SSH authentications."), "ssh_logins", float64(s.SSHLogins))
	add(counter("ssh_refusals_total", "Refused SSH authentication attempts."), "ssh_refusals", float64(s.SSHRefusals))
	add(counter("ssh_sessions_refused_total", "SSH sessions refused because the session cap was reached."),
		"ssh_sessions_refused", float64(s.SSHSessionsRefused))
	add(counter("ssh_handshakes_dropped_total", "SSH connections closed at once because the unauthenticated connection caps were reached."),
		"ssh_handshakes_dropped", float64(s.SSHHandshakesDropped))
	add(counter("ssh_handshakes_evicted_total", "Unauthenticated SSH connections dropped to make room for a newcomer."),
		"ssh_handshakes_evicted", float64(s.SSHHandshakesEvicted))
	add(counter("http_connections_dropped_total", "HTTP connections closed at once because a connection cap was reached."),
		"http_connections_dropped", float64(s.HTTPConnsDropped))
	add(counter("avagent_log_lines_total", "Lines of avagent.log re-emitted on the sidecar's log."),
		"avagent_log_lines", float64(s.AvagentLogLines))
	// Codes seen once keep their series.
	for code, n := range browse {
		m.high["browse/"+code] = max(m.high["browse/"+code], n)
	}
	requests := counter("browse_requests_total", "Answered browse requests by status code (or class).")
	for _, key := range slices.Sorted(maps.Keys(m.high)) {
		if code, ok := strings.CutPrefix(key, "browse/"); ok {
			requests.add(m.high[key], "code", code)
		}
	}
	// Once there, the hook counters stay, as every counter does.
	m.hooksSeen = m.hooksSeen || s.HooksConfigured
	if m.hooksSeen {
		runs := counter("hook_runs_total", "Backup hook runs by phase and outcome.")
		calls := counter("hook_calls_total", "Calls of the run-at-start (pre) and run-at-end (post) scripts by phase and result.")
		for _, phase := range m.cfg.Labels.HookPhases {
			for _, o := range m.cfg.Labels.HookOutcomes {
				add(runs, "hook_runs/"+phase+"/"+o, float64(s.HookRuns[phase+"/"+o]), "outcome", o, "phase", phase)
			}
			for _, r := range m.cfg.Labels.HookResults {
				add(calls, "hook_calls/"+phase+"/"+r, float64(s.HookCalls[phase+"/"+r]), "phase", phase, "result", r)
			}
		}
		thaws := counter("hook_thaws_total", "Freezes ended, by who ran the post hooks: post (the post call), expiry, pre-failed, caller-gone, stop, start.")
		for _, by := range m.cfg.Labels.HookThawBy {
			add(thaws, "hook_thaws/"+by, float64(s.HookThaws[by]), "by", by)
		}
	}
	return fams
}

// checkLabel logs, once per value, a snapshot value outside its label set:
// a component reports a value its owner did not list, a bug.
func (m *Metrics) checkLabel(label string, set []string, v string) {
	if slices.Contains(set, v) {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	key := "unknown/" + label + "/" + v
	if m.warned[key] {
		return
	}
	m.warned[key] = true
	m.log.Error().Str("label", label).Str("value", v).Msg("metrics value outside its label set")
}

func unixSeconds(t time.Time) float64 {
	return float64(t.UnixNano()) / 1e9
}

func bool01(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
