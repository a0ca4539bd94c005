// Package metrics serves avsidecar's Prometheus metrics at /metrics.
//
// Everything is registered in a registry of its own (never the global
// default one): the Go and process collectors, the HTTP middleware's request
// counter and latency histogram, and a collector that reads a Snapshot of the
// sidecar at every scrape. The components keep their own counters and expose
// them through their Status(); the caller turns those into a Snapshot, so
// the numbers in /metrics and /v1/status can never disagree.
//
// Label values come only from fixed sets (phases, outcomes, handler names,
// status codes, backup states) or from the installed package's own header:
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
//	ssh_logins_total, ssh_refusals_total              counters
//	ssh_sessions_refused_total                        counter (session cap reached)
//	ssh_handshakes_dropped_total                      counter (unauthenticated connection caps reached)
//	ssh_active_sessions                               gauge
//	browse_requests_total{code}                       counter
//	avagent_log_lines_total                           counter
//	last_backup_timestamp_seconds                     only when a backup is known
//	last_backup_check_timestamp_seconds               only when the REST API was asked
//	backup_api_state{state}                           only when the REST API is configured
//	http_requests_total{handler,code}                 counter, from Instrument
//	http_request_duration_seconds{handler}            histogram, from Instrument
package metrics

import (
	"fmt"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"
)

// Phases are the values of the phase label, in the order a healthy start
// goes through them.
var Phases = []string{"starting", "installing", "registering", "running", "stopping"}

// Outcomes are the values of the outcome label of registration attempts.
var Outcomes = []string{"success", "refused", "unreachable", "unresolved", "timeout", "error"}

// BackupStates are the values of the state label of backup_api_state.
var BackupStates = []string{"unknown", "ok", "unreachable", "unauthorized", "client-not-found", "error"}

// Handlers are the handler names Instrument keeps; any other name is
// counted as "other".
var Handlers = []string{"livez", "readyz", "startupz", "metrics", "status", "files", "stat", "walk", "du", "ui", "other"}

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
	// Phase is one of Phases; any other value sets every phase series to 0.
	Phase string
	// Ready is true when /readyz passes.
	Ready bool
	// Install is the installed client; no info series while Package is empty.
	Install Install
	// Registrations counts registration attempts by outcome (register's
	// Status().Outcomes). Outcomes not in Outcomes are counted as "error".
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
	// BrowseRequests counts answered browse requests by status code, as in
	// browse's Status().Requests ("200", "404", ...). Codes outside a fixed
	// set are counted under their class ("4xx"); anything unparsable as
	// "other".
	BrowseRequests map[string]uint64
	// AvagentLogLines counts avagent.log lines re-emitted (logfollow's
	// Status().Lines).
	AvagentLogLines uint64
	// LastBackup is the time of the client's newest backup; zero when
	// unknown, and then the series is absent (not 0, which would read as
	// "1970" and fire every freshness alert).
	LastBackup time.Time
	// LastBackupCheck is when the REST API was last asked; zero: absent.
	LastBackupCheck time.Time
	// BackupAPIState is backupapi's state (see BackupStates); empty when the
	// REST API is not configured, and then the series is absent.
	BackupAPIState string
}

// Config says what the metrics describe.
type Config struct {
	// Version is avsidecar's version, for build_info.
	Version string
	// Revision is the VCS revision avsidecar was built from, for build_info.
	Revision string
	// Snapshot is called at every scrape, possibly from several goroutines
	// at once; it must be cheap and must not block. Nil: only build info,
	// HTTP, Go and process metrics.
	Snapshot func() Snapshot
}

// Metrics owns the registry. Create it with New.
type Metrics struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	handler  http.Handler
}

// New builds the registry with every collector registered.
func New(cfg Config, log zerolog.Logger) (*Metrics, error) {
	reg := prometheus.NewRegistry()
	m := &Metrics{
		reg: reg,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "avsidecar_http_requests_total",
			Help: "HTTP requests answered, by handler and status code (or class).",
		}, []string{"handler", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "avsidecar_http_request_duration_seconds",
			Help:    "Time to answer an HTTP request (a whole stream for walk), by handler.",
			Buckets: []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 120},
		}, []string{"handler"}),
	}
	for _, c := range []prometheus.Collector{
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.requests,
		m.latency,
		newSnapshotCollector(cfg),
	} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register collector: %w", err)
		}
	}
	m.handler = promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		Registry:      reg,
		ErrorHandling: promhttp.ContinueOnError,
		ErrorLog:      promLogger{log},
	})
	return m, nil
}

// Handler serves the registry in the Prometheus exposition formats.
func (m *Metrics) Handler() http.Handler { return m.handler }

// Registry is the registry, for callers that add a collector of their own.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Instrument wraps h so that its requests are counted by status code and
// timed, under handler, which should be one of Handlers (others are counted
// as "other"). The wrapper keeps http.Flusher working for streams.
func (m *Metrics) Instrument(handler string, h http.Handler) http.Handler {
	if !slices.Contains(Handlers, handler) {
		handler = "other"
	}
	latency := m.latency.WithLabelValues(handler)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &recorder{ResponseWriter: w}
		defer func() {
			latency.Observe(time.Since(start).Seconds())
			m.requests.WithLabelValues(handler, codeLabel(rec.status())).Inc()
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

// promLogger puts promhttp's errors on the logger.
type promLogger struct{ log zerolog.Logger }

// Println logs one promhttp error.
func (l promLogger) Println(v ...any) {
	l.log.Warn().Str("error", fmt.Sprint(v...)).Msg("metrics scrape error")
}

// snapshotCollector turns a Snapshot into series at scrape time.
type snapshotCollector struct {
	cfg Config

	buildInfo, phase, ready, installInfo, registrations, registered,
	agentUp, agentRestarts, agentUptime, sshLogins, sshRefusals, sshActive,
	sshSessionsRefused, sshDropped,
	browse, logLines, lastBackup, lastCheck, backupState *prometheus.Desc

	// high keeps the highest value reported per counter series, so that a
	// counter never goes backwards even if a component's count does.
	mu   sync.Mutex
	high map[string]float64
}

func newSnapshotCollector(cfg Config) *snapshotCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("avsidecar_"+name, help, labels, nil)
	}
	return &snapshotCollector{
		cfg:                cfg,
		buildInfo:          d("build_info", "avsidecar's build; always 1.", "version", "revision", "goversion"),
		phase:              d("phase", "1 for the current phase of the sidecar, 0 for the others.", "phase"),
		ready:              d("ready", "1 when the readiness check passes."),
		installInfo:        d("install_info", "The installed Avamar client package; always 1.", "package", "version", "release"),
		registrations:      d("registration_attempts_total", "Registration attempts by outcome.", "outcome"),
		registered:         d("registered", "1 once the client is registered with the Avamar server."),
		agentUp:            d("agent_up", "1 while avagent runs."),
		agentRestarts:      d("agent_restarts_total", "Restarts of avagent."),
		agentUptime:        d("agent_uptime_seconds", "Seconds since avagent last started; 0 while down."),
		sshLogins:          d("ssh_logins_total", "Successful SSH authentications."),
		sshRefusals:        d("ssh_refusals_total", "Refused SSH authentication attempts."),
		sshActive:          d("ssh_active_sessions", "Open SSH sessions."),
		sshSessionsRefused: d("ssh_sessions_refused_total", "SSH sessions refused because the session cap was reached."),
		sshDropped:         d("ssh_handshakes_dropped_total", "SSH connections closed at once because the unauthenticated connection caps were reached."),
		browse:             d("browse_requests_total", "Answered browse requests by status code (or class).", "code"),
		logLines:           d("avagent_log_lines_total", "Lines of avagent.log re-emitted on the sidecar's log."),
		lastBackup:         d("last_backup_timestamp_seconds", "Unix time of the client's newest backup on the Avamar server; absent while unknown."),
		lastCheck:          d("last_backup_check_timestamp_seconds", "Unix time the Avamar REST API was last asked for backups."),
		backupState:        d("backup_api_state", "1 for the current state of the backup check against the Avamar REST API.", "state"),
		high:               map[string]float64{},
	}
}

// Describe sends every descriptor.
func (c *snapshotCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		c.buildInfo, c.phase, c.ready, c.installInfo, c.registrations, c.registered,
		c.agentUp, c.agentRestarts, c.agentUptime, c.sshLogins, c.sshRefusals, c.sshActive,
		c.sshSessionsRefused, c.sshDropped, c.browse, c.logLines, c.lastBackup, c.lastCheck, c.backupState,
	} {
		ch <- d
	}
}

// Collect reads one Snapshot and sends its series.
func (c *snapshotCollector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	ch <- prometheus.MustNewConstMetric(c.buildInfo, prometheus.GaugeValue, 1,
		c.cfg.Version, c.cfg.Revision, runtime.Version())
	if c.cfg.Snapshot == nil {
		return
	}
	s := c.cfg.Snapshot()

	for _, p := range Phases {
		gauge(c.phase, bool01(s.Phase == p), p)
	}
	gauge(c.ready, bool01(s.Ready))
	if s.Install.Package != "" {
		gauge(c.installInfo, 1, s.Install.Package, s.Install.Version, s.Install.Release)
	}

	// Counters are computed under the lock and sent after it: a send may
	// block on the registry.
	for _, m := range c.counters(s) {
		ch <- m
	}

	gauge(c.registered, bool01(s.Registered))
	gauge(c.agentUp, bool01(s.AgentUp))
	gauge(c.agentUptime, s.AgentUptime.Seconds())
	gauge(c.sshActive, float64(s.SSHActiveSessions))
	if !s.LastBackup.IsZero() {
		gauge(c.lastBackup, unixSeconds(s.LastBackup))
	}
	if !s.LastBackupCheck.IsZero() {
		gauge(c.lastCheck, unixSeconds(s.LastBackupCheck))
	}
	if s.BackupAPIState != "" {
		for _, st := range BackupStates {
			gauge(c.backupState, bool01(s.BackupAPIState == st), st)
		}
	}
}

// counters builds the counter series of s, each at least as high as at the
// previous scrape.
func (c *snapshotCollector) counters(s Snapshot) []prometheus.Metric {
	outcomes := map[string]float64{}
	for o, n := range s.Registrations {
		if !slices.Contains(Outcomes, o) {
			o = "error"
		}
		outcomes[o] += float64(n)
	}
	browse := map[string]float64{}
	for code, n := range s.BrowseRequests {
		browse[codeLabelString(code)] += float64(n)
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	var out []prometheus.Metric
	counter := func(d *prometheus.Desc, key string, v float64, labels ...string) {
		v = max(v, c.high[key])
		c.high[key] = v
		out = append(out, prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...))
	}
	for _, o := range Outcomes {
		counter(c.registrations, "registrations/"+o, outcomes[o], o)
	}
	counter(c.agentRestarts, "agent_restarts", float64(s.AgentRestarts))
	counter(c.sshLogins, "ssh_logins", float64(s.SSHLogins))
	counter(c.sshRefusals, "ssh_refusals", float64(s.SSHRefusals))
	counter(c.sshSessionsRefused, "ssh_sessions_refused", float64(s.SSHSessionsRefused))
	counter(c.sshDropped, "ssh_handshakes_dropped", float64(s.SSHHandshakesDropped))
	counter(c.logLines, "avagent_log_lines", float64(s.AvagentLogLines))
	// Codes seen once keep their series.
	for code, n := range browse {
		c.high["browse/"+code] = max(c.high["browse/"+code], n)
	}
	for key, v := range c.high {
		if code, ok := strings.CutPrefix(key, "browse/"); ok {
			out = append(out, prometheus.MustNewConstMetric(c.browse, prometheus.CounterValue, v, code))
		}
	}
	return out
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
