package metrics

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/rs/zerolog"

	"github.com/avsidecar/avsidecar/internal/testkit"
)

// source is a Snapshot the test changes between scrapes.
type source struct {
	mu sync.Mutex
	s  Snapshot
}

func (src *source) set(s Snapshot) {
	src.mu.Lock()
	defer src.mu.Unlock()
	src.s = s
}

func (src *source) get() Snapshot {
	src.mu.Lock()
	defer src.mu.Unlock()
	return src.s
}

// serve starts a real loopback server for m's handler.
func serve(t *testing.T, m *Metrics) string {
	t.Helper()
	srv := httptest.NewServer(m.Handler())
	t.Cleanup(srv.Close)
	return srv.URL
}

// scrape fetches url, lints it with promlint and parses it with the
// Prometheus text parser.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	return parse(t, get(t, url))
}

// get fetches url and checks the status and content type of a scrape.
func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: %s", resp.Status)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/plain; version=0.0.4; charset=utf-8" {
		t.Fatalf("scrape: content type %q", ct)
	}
	return string(body)
}

// parse lints a scrape and parses it with the official text parser.
func parse(t *testing.T, text string) map[string]*dto.MetricFamily {
	t.Helper()
	problems, err := promlint.New(strings.NewReader(text)).Lint()
	if err != nil {
		t.Fatalf("lint scrape: %v", err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatalf("parse scrape: %v\n%s", err, text)
	}
	return fams
}

// flat renders the avsidecar_ counter and gauge series as name{labels} ->
// value.
func flat(fams map[string]*dto.MetricFamily) map[string]float64 {
	out := map[string]float64{}
	for name, f := range fams {
		if f == nil || !strings.HasPrefix(name, "avsidecar_") || f.GetType() == dto.MetricType_HISTOGRAM {
			continue
		}
		for _, m := range f.Metric {
			v := m.GetGauge().GetValue()
			if f.GetType() == dto.MetricType_COUNTER {
				v = m.GetCounter().GetValue()
			}
			out[key(name, m)] = v
		}
	}
	return out
}

func key(name string, m *dto.Metric) string {
	var ls []string
	for _, l := range m.Label {
		ls = append(ls, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
	}
	sort.Strings(ls)
	return name + "{" + strings.Join(ls, ",") + "}"
}

// checkCounters fails when a counter series went down or vanished between
// two scrapes.
func checkCounters(t *testing.T, prev, cur map[string]*dto.MetricFamily) {
	t.Helper()
	for name, f := range prev {
		if f.GetType() != dto.MetricType_COUNTER || !strings.HasPrefix(name, "avsidecar_") {
			continue
		}
		now := flat(map[string]*dto.MetricFamily{name: cur[name]})
		for k, v := range flat(map[string]*dto.MetricFamily{name: f}) {
			if n, ok := now[k]; !ok || n < v {
				t.Errorf("counter %s went from %v to %v (present: %v)", k, v, n, ok)
			}
		}
	}
}

// testLabels stand for the sets the sidecar hands over from their owners.
var testLabels = Labels{
	Phases:       []string{"starting", "installing", "registering", "running", "stopping"},
	Outcomes:     []string{"success", "refused", "unreachable", "unresolved", "timeout", "error"},
	BackupStates: []string{"unknown", "ok", "unreachable", "unauthorized", "client-not-found", "error"},
	Handlers:     []string{"livez", "readyz", "startupz", "metrics", "status", "files", "stat", "walk", "du", "ui", "other"},
	SSHStates:    []string{"starting", "serving", "failed", "stopped"},
	HookPhases:   []string{"pre", "post"},
	HookOutcomes: []string{"ok", "failed", "timeout", "error"},
	HookResults:  []string{"passed", "failed"},
	HookThawBy:   []string{"post", "expiry", "pre-failed", "caller-gone", "stop", "start"},
	DoctorChecks: []string{"mcs", "node-port"},
	DoctorStates: []string{"ok", "fault", "unknown", "pending"},
}

func newMetrics(t *testing.T, src *source) *Metrics {
	t.Helper()
	return newMetricsLog(t, src, zerolog.Nop())
}

func newMetricsLog(t *testing.T, src *source, log zerolog.Logger) *Metrics {
	t.Helper()
	cfg := Config{Version: "1.2.3", Revision: "abc123", Labels: testLabels}
	if src != nil {
		cfg.Snapshot = src.get
	}
	m, err := New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// base is the expected avsidecar_ series of a zero snapshot in phase p.
func base(p string) map[string]float64 {
	want := map[string]float64{
		`avsidecar_build_info{goversion="` + runtime.Version() + `",revision="abc123",version="1.2.3"}`: 1,
		`avsidecar_ready{}`:                          0,
		`avsidecar_registered{}`:                     0,
		`avsidecar_agent_up{}`:                       0,
		`avsidecar_agent_restarts_total{}`:           0,
		`avsidecar_agent_uptime_seconds{}`:           0,
		`avsidecar_ssh_logins_total{}`:               0,
		`avsidecar_ssh_refusals_total{}`:             0,
		`avsidecar_ssh_active_sessions{}`:            0,
		`avsidecar_ssh_authorized_keys_refused{}`:    0,
		`avsidecar_ssh_sessions_refused_total{}`:     0,
		`avsidecar_ssh_handshakes_dropped_total{}`:   0,
		`avsidecar_avagent_log_lines_total{}`:        0,
		`avsidecar_http_connections_open{}`:          0,
		`avsidecar_http_connections_dropped_total{}`: 0,
		`avsidecar_ssh_host_keys_replaced{}`:         0,
		`avsidecar_ssh_handshakes_evicted_total{}`:   0,
		`avsidecar_agent_daemonized{}`:               0,
	}
	for _, ph := range testLabels.Phases {
		want[`avsidecar_phase{phase="`+ph+`"}`] = bool01(ph == p)
	}
	for _, o := range testLabels.Outcomes {
		want[`avsidecar_registration_attempts_total{outcome="`+o+`"}`] = 0
	}
	return want
}

// hookSeries sets the whole grid of hook counters in w, at 0 unless runs,
// calls or thaws say otherwise.
func hookSeries(w map[string]float64, runs, calls, thaws map[string]float64) {
	for _, by := range testLabels.HookThawBy {
		w[`avsidecar_hook_thaws_total{by="`+by+`"}`] = thaws[by]
	}
	for _, ph := range testLabels.HookPhases {
		for _, o := range testLabels.HookOutcomes {
			w[`avsidecar_hook_runs_total{outcome="`+o+`",phase="`+ph+`"}`] = runs[ph+"/"+o]
		}
		for _, r := range testLabels.HookResults {
			w[`avsidecar_hook_calls_total{phase="`+ph+`",result="`+r+`"}`] = calls[ph+"/"+r]
		}
	}
}

// TestSeriesFollowSnapshot walks a sidecar through its life and checks the
// exact set of avsidecar_ series at every step, and that no counter ever
// goes down.
func TestSeriesFollowSnapshot(t *testing.T) {
	backup := time.Date(2026, 11, 22, 23, 0, 0, 0, time.UTC)
	check := time.Date(2026, 11, 23, 20, 0, 0, 500_000_000, time.UTC)
	checkin := time.Date(2026, 11, 23, 19, 30, 0, 0, time.UTC)
	install := Install{Package: "AvamarClient", Version: "7.5.101", Release: "101"}
	runs := map[string]float64{"pre/ok": 3, "pre/timeout": 1, "post/ok": 2, "post/failed": 1}
	calls := map[string]float64{"pre/passed": 2, "pre/failed": 1, "post/passed": 1, "post/failed": 1}
	thaws := map[string]float64{"post": 1, "expiry": 1}
	steps := []struct {
		name string
		snap Snapshot
		want func(map[string]float64)
	}{
		{"starting", Snapshot{Phase: "starting"}, func(map[string]float64) {}},
		{"installing", Snapshot{Phase: "installing"}, func(map[string]float64) {}},
		{"registering", Snapshot{
			Phase: "registering", Install: install,
			Registrations: map[string]int{"unreachable": 2, "refused": 1, "error": 1},
		}, func(w map[string]float64) {
			w[`avsidecar_install_info{package="AvamarClient",release="101",version="7.5.101"}`] = 1
			w[`avsidecar_registration_attempts_total{outcome="unreachable"}`] = 2
			w[`avsidecar_registration_attempts_total{outcome="refused"}`] = 1
			w[`avsidecar_registration_attempts_total{outcome="error"}`] = 1
		}},
		{"running", Snapshot{
			Phase: "running", Ready: true, Install: install, Registered: true,
			Registrations: map[string]int{"unreachable": 2, "refused": 1, "error": 1, "success": 1},
			AgentUp:       true, AgentUptime: 90 * time.Second, AgentRestarts: 1,
			SSHLogins: 3, SSHRefusals: 2, SSHActiveSessions: 1, SSHSessionsRefused: 1, SSHHandshakesDropped: 4,
			SSHAuthorizedKeysRefused: 2, BrowseRequests: map[string]uint64{"200": 5, "404": 1, "418": 1, "bad": 1},
			AvagentLogLines: 10, HTTPConnsOpen: 3, HTTPConnsDropped: 5,
			SSHState: "serving", SSHHostKeysReplaced: 1, SSHHandshakesEvicted: 7,
			LastBackup: backup, LastBackupCheck: check, BackupAPIState: "ok",
			LastCheckin: checkin, AgentDaemonized: true, HooksConfigured: true,
			HookRuns:  map[string]uint64{"pre/ok": 3, "pre/timeout": 1, "post/ok": 2, "post/failed": 1},
			HookCalls: map[string]uint64{"pre/passed": 2, "pre/failed": 1, "post/passed": 1, "post/failed": 1},
			HookThaws: map[string]uint64{"post": 1, "expiry": 1}, HookFreezeOpen: true,
			Doctor: map[string]string{"mcs": "ok", "node-port": "fault"},
		}, func(w map[string]float64) {
			for _, st := range testLabels.DoctorStates {
				w[`avsidecar_doctor_state{check="mcs",state="`+st+`"}`] = bool01(st == "ok")
				w[`avsidecar_doctor_state{check="node-port",state="`+st+`"}`] = bool01(st == "fault")
			}
			w[`avsidecar_hook_freeze_open{}`] = 1
			w[`avsidecar_http_connections_open{}`] = 3
			w[`avsidecar_ssh_host_keys_replaced{}`] = 1
			w[`avsidecar_ssh_handshakes_evicted_total{}`] = 7
			for _, st := range testLabels.SSHStates {
				w[`avsidecar_ssh_state{state="`+st+`"}`] = bool01(st == "serving")
			}
			w[`avsidecar_http_connections_dropped_total{}`] = 5
			w[`avsidecar_agent_daemonized{}`] = 1
			w[`avsidecar_last_checkin_timestamp_seconds{}`] = float64(checkin.Unix())
			hookSeries(w, runs, calls, thaws)
			w[`avsidecar_phase{phase="registering"}`] = 0
			w[`avsidecar_install_info{package="AvamarClient",release="101",version="7.5.101"}`] = 1
			w[`avsidecar_ready{}`] = 1
			w[`avsidecar_registered{}`] = 1
			w[`avsidecar_registration_attempts_total{outcome="unreachable"}`] = 2
			w[`avsidecar_registration_attempts_total{outcome="refused"}`] = 1
			w[`avsidecar_registration_attempts_total{outcome="error"}`] = 1
			w[`avsidecar_registration_attempts_total{outcome="success"}`] = 1
			w[`avsidecar_agent_up{}`] = 1
			w[`avsidecar_agent_uptime_seconds{}`] = 90
			w[`avsidecar_agent_restarts_total{}`] = 1
			w[`avsidecar_ssh_logins_total{}`] = 3
			w[`avsidecar_ssh_refusals_total{}`] = 2
			w[`avsidecar_ssh_sessions_refused_total{}`] = 1
			w[`avsidecar_ssh_handshakes_dropped_total{}`] = 4
			w[`avsidecar_ssh_active_sessions{}`] = 1
			w[`avsidecar_ssh_authorized_keys_refused{}`] = 2
			w[`avsidecar_browse_requests_total{code="200"}`] = 5
			w[`avsidecar_browse_requests_total{code="404"}`] = 1
			w[`avsidecar_browse_requests_total{code="4xx"}`] = 1
			w[`avsidecar_browse_requests_total{code="other"}`] = 1
			w[`avsidecar_avagent_log_lines_total{}`] = 10
			w[`avsidecar_last_backup_timestamp_seconds{}`] = float64(backup.Unix())
			w[`avsidecar_last_backup_check_timestamp_seconds{}`] = float64(check.Unix()) + 0.5
			for _, s := range testLabels.BackupStates {
				w[`avsidecar_backup_api_state{state="`+s+`"}`] = bool01(s == "ok")
			}
		}},
		{"agent crashed, api refuses", Snapshot{
			Phase: "running", Install: install, Registered: true,
			Registrations: map[string]int{"unreachable": 2, "refused": 1, "error": 1, "success": 1},
			AgentRestarts: 2, SSHLogins: 3, SSHRefusals: 2,
			BrowseRequests:  map[string]uint64{"200": 6},
			AvagentLogLines: 12,
			LastBackup:      backup, LastBackupCheck: check.Add(time.Minute), BackupAPIState: "unauthorized",
			HooksConfigured: true, HookRuns: map[string]uint64{"pre/ok": 1},
		}, func(w map[string]float64) {
			w[`avsidecar_hook_freeze_open{}`] = 0
			hookSeries(w, runs, calls, thaws) // counters hold their highest value
			w[`avsidecar_install_info{package="AvamarClient",release="101",version="7.5.101"}`] = 1
			w[`avsidecar_registered{}`] = 1
			w[`avsidecar_registration_attempts_total{outcome="unreachable"}`] = 2
			w[`avsidecar_registration_attempts_total{outcome="refused"}`] = 1
			w[`avsidecar_registration_attempts_total{outcome="error"}`] = 1
			w[`avsidecar_registration_attempts_total{outcome="success"}`] = 1
			w[`avsidecar_agent_restarts_total{}`] = 2
			w[`avsidecar_ssh_logins_total{}`] = 3
			w[`avsidecar_ssh_refusals_total{}`] = 2
			w[`avsidecar_ssh_sessions_refused_total{}`] = 1
			w[`avsidecar_ssh_handshakes_dropped_total{}`] = 4
			w[`avsidecar_http_connections_dropped_total{}`] = 5
			w[`avsidecar_ssh_handshakes_evicted_total{}`] = 7
			// Codes once seen keep their series.
			w[`avsidecar_browse_requests_total{code="200"}`] = 6
			w[`avsidecar_browse_requests_total{code="404"}`] = 1
			w[`avsidecar_browse_requests_total{code="4xx"}`] = 1
			w[`avsidecar_browse_requests_total{code="other"}`] = 1
			w[`avsidecar_avagent_log_lines_total{}`] = 12
			w[`avsidecar_last_backup_timestamp_seconds{}`] = float64(backup.Unix())
			w[`avsidecar_last_backup_check_timestamp_seconds{}`] = float64(check.Unix()) + 60.5
			for _, s := range testLabels.BackupStates {
				w[`avsidecar_backup_api_state{state="`+s+`"}`] = bool01(s == "unauthorized")
			}
		}},
		{"stopping", Snapshot{Phase: "stopping", Registrations: map[string]int{"success": 1}}, func(w map[string]float64) {
			// Counters hold their highest value; gauges drop.
			w[`avsidecar_http_connections_dropped_total{}`] = 5
			w[`avsidecar_ssh_handshakes_evicted_total{}`] = 7
			w[`avsidecar_registration_attempts_total{outcome="unreachable"}`] = 2
			w[`avsidecar_registration_attempts_total{outcome="refused"}`] = 1
			w[`avsidecar_registration_attempts_total{outcome="error"}`] = 1
			w[`avsidecar_registration_attempts_total{outcome="success"}`] = 1
			w[`avsidecar_agent_restarts_total{}`] = 2
			w[`avsidecar_ssh_logins_total{}`] = 3
			w[`avsidecar_ssh_refusals_total{}`] = 2
			w[`avsidecar_ssh_sessions_refused_total{}`] = 1
			w[`avsidecar_ssh_handshakes_dropped_total{}`] = 4
			w[`avsidecar_browse_requests_total{code="200"}`] = 6
			w[`avsidecar_browse_requests_total{code="404"}`] = 1
			w[`avsidecar_browse_requests_total{code="4xx"}`] = 1
			w[`avsidecar_browse_requests_total{code="other"}`] = 1
			w[`avsidecar_avagent_log_lines_total{}`] = 12
			hookSeries(w, runs, calls, thaws)
		}},
	}
	src := &source{}
	url := serve(t, newMetrics(t, src))
	var prev map[string]*dto.MetricFamily
	for _, step := range steps {
		src.set(step.snap)
		fams := scrape(t, url)
		want := base(step.snap.Phase)
		step.want(want)
		if diff := cmp.Diff(want, flat(fams)); diff != "" {
			t.Errorf("%s: series (-want +got):\n%s", step.name, diff)
		}
		if prev != nil {
			checkCounters(t, prev, fams)
		}
		prev = fams
	}
}

// TestUnknownValuesStayBounded feeds values no label set knows and checks
// that every label value is still from a fixed set, that nothing is counted
// under another value, and that each unknown value is logged once.
func TestUnknownValuesStayBounded(t *testing.T) {
	logged := testkit.NewLogLines()
	src := &source{}
	src.set(Snapshot{
		Phase:          "/etc/passwd",
		Registrations:  map[string]int{"client pod-7 at 10.0.0.7": 3},
		BrowseRequests: map[string]uint64{"/data/secret": 1, "999": 1, "-1": 1},
		BackupAPIState: "token abc expired",
	})
	url := serve(t, newMetricsLog(t, src, zerolog.New(logged)))
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, leak := range []string{"passwd", "pod-7", "10.0.0.7", "/data/secret", "token abc"} {
		if strings.Contains(string(body), leak) {
			t.Errorf("scrape shows %q", leak)
		}
	}
	fams := scrape(t, url)
	allowed := map[string][]string{
		"phase":   testLabels.Phases,
		"outcome": testLabels.Outcomes,
		"code":    {"200", "204", "206", "301", "302", "304", "400", "401", "403", "404", "405", "406", "409", "413", "414", "429", "500", "501", "503", "1xx", "2xx", "3xx", "4xx", "5xx", "other"},
		"state":   testLabels.BackupStates,
	}
	for name, f := range fams {
		if !strings.HasPrefix(name, "avsidecar_") || name == "avsidecar_build_info" {
			continue
		}
		for _, m := range f.Metric {
			for _, l := range m.Label {
				if !slices.Contains(allowed[l.GetName()], l.GetValue()) {
					t.Errorf("%s: label %s=%q is not from a fixed set", name, l.GetName(), l.GetValue())
				}
			}
		}
	}
	got := flat(fams)
	for _, ph := range testLabels.Phases {
		if v := got[`avsidecar_phase{phase="`+ph+`"}`]; v != 0 {
			t.Errorf("phase %s = %v for an unknown phase, want 0", ph, v)
		}
	}
	if v := got[`avsidecar_registration_attempts_total{outcome="error"}`]; v != 0 {
		t.Errorf("unknown outcome counted %v times as error, want 0", v)
	}
	scrape(t, url)
	for _, label := range []string{"phase", "outcome", "state"} {
		if n := logged.Count(0, func(m map[string]any) bool {
			return m["message"] == "metrics value outside its label set" && m["label"] == label
		}); n != 1 {
			t.Errorf("unknown %s logged %d times over three scrapes, want once", label, n)
		}
	}
	if v := got[`avsidecar_browse_requests_total{code="other"}`]; v != 3 {
		t.Errorf("unusable codes counted %v times as other, want 3", v)
	}
}

// TestCountersNeverGoBackwards feeds counts that go up and down, scraping
// from two goroutines at once.
func TestCountersNeverGoBackwards(t *testing.T) {
	src := &source{}
	url := serve(t, newMetrics(t, src))
	var prev map[string]*dto.MetricFamily
	for _, n := range []int{5, 3, 7, 0, 7, 8} {
		src.set(Snapshot{
			Phase: "running", Registrations: map[string]int{"success": n, "timeout": n},
			AgentRestarts: n, SSHLogins: uint64(n), SSHRefusals: uint64(n), AvagentLogLines: uint64(n),
			BrowseRequests: map[string]uint64{"200": uint64(n)},
		})
		var wg sync.WaitGroup
		var other map[string]*dto.MetricFamily
		wg.Go(func() { other = scrape(t, url) })
		fams := scrape(t, url)
		wg.Wait()
		if prev != nil {
			checkCounters(t, prev, fams)
			checkCounters(t, prev, other)
		}
		prev = fams
	}
	if v := flat(prev)[`avsidecar_agent_restarts_total{}`]; v != 8 {
		t.Errorf("restarts = %v at the end, want 8", v)
	}
}

// TestGoProcessAndBuildInfo checks the Go and process series against what
// the test process itself knows of them.
func TestGoProcessAndBuildInfo(t *testing.T) {
	before := time.Now()
	fams := scrape(t, serve(t, newMetrics(t, nil)))
	after := time.Now()
	value := func(name string, typ dto.MetricType) float64 {
		t.Helper()
		f, ok := fams[name]
		if !ok || len(f.Metric) != 1 {
			t.Errorf("%s: missing or not a single series", name)
			return 0
		}
		if f.GetType() != typ {
			t.Errorf("%s: type %v, want %v", name, f.GetType(), typ)
		}
		if typ == dto.MetricType_COUNTER {
			return f.Metric[0].GetCounter().GetValue()
		}
		return f.Metric[0].GetGauge().GetValue()
	}
	gauge := func(name string) float64 { t.Helper(); return value(name, dto.MetricType_GAUGE) }

	if v := gauge("go_goroutines"); v < 1 {
		t.Errorf("go_goroutines = %v", v)
	}
	if v := gauge("go_memstats_heap_alloc_bytes"); v <= 0 || v > gauge("go_memstats_sys_bytes") {
		t.Errorf("go_memstats_heap_alloc_bytes = %v, sys %v", v, gauge("go_memstats_sys_bytes"))
	}
	if v := value("process_cpu_seconds_total", dto.MetricType_COUNTER); v < 0 {
		t.Errorf("process_cpu_seconds_total = %v", v)
	}
	if v := gauge("process_resident_memory_bytes"); v < 1<<20 || v > gauge("process_virtual_memory_bytes") {
		t.Errorf("process_resident_memory_bytes = %v, virtual %v", v, gauge("process_virtual_memory_bytes"))
	}
	if v := gauge("process_open_fds"); v < 3 || v > gauge("process_max_fds") {
		t.Errorf("process_open_fds = %v, max %v", v, gauge("process_max_fds"))
	}
	// The boot time is in whole seconds: a start can read up to 1s late.
	start := gauge("process_start_time_seconds")
	if start > float64(after.Unix())+1 || start < float64(before.Add(-time.Hour).Unix()) {
		t.Errorf("process_start_time_seconds = %v, scraped at %v", start, before.Unix())
	}

	if _, ok := fams["avsidecar_build_info"]; !ok {
		t.Error("avsidecar_build_info missing")
	}
	// No request yet: an empty vector is not exposed.
	if _, ok := fams["avsidecar_http_requests_total"]; ok {
		t.Error("avsidecar_http_requests_total present before any request")
	}
	if _, ok := fams["avsidecar_phase"]; ok {
		t.Error("phase exposed without a snapshot")
	}
}

func TestParseStat(t *testing.T) {
	// Fields 3..24 of a real line, behind hostile command names.
	rest := " S 1 1 1 0 -1 4194560 1000 0 0 0 250 130 0 0 20 0 8 0 123456 1300000000 2000 18446744073709551615 1 1 0 0 0"
	for _, comm := range []string{"(avsidecar)", "(a) b) (c)", "(x 1 2 3)", "())"} {
		st, err := parseStat([]byte("42 " + comm + rest))
		if err != nil {
			t.Errorf("%s: %v", comm, err)
			continue
		}
		if want := (procStat{utime: 250, stime: 130, starttime: 123456, vsize: 1300000000, rss: 2000}); st != want {
			t.Errorf("%s: %+v, want %+v", comm, st, want)
		}
	}
	for _, bad := range []string{"", "42 avsidecar S 1", "42 (avsidecar) S 1 1 1", "42 (a)" + strings.Replace(rest, "250", "x", 1)} {
		if _, err := parseStat([]byte(bad)); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

// TestExposition checks the text itself: each family once, HELP before
// TYPE, families in name order, and the same text for the same state.
func TestExposition(t *testing.T) {
	src := &source{}
	src.set(Snapshot{Phase: "running", BrowseRequests: map[string]uint64{"404": 1, "200": 2, "500": 3}, BackupAPIState: "ok"})
	m := newMetrics(t, src)
	url := serve(t, m)
	m.Instrument("status", http.NotFoundHandler()).ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
	text := get(t, url)
	var names []string
	var help string
	for line := range strings.Lines(text) {
		switch {
		case strings.HasPrefix(line, "# HELP "):
			help = strings.Fields(line)[2]
		case strings.HasPrefix(line, "# TYPE "):
			name := strings.Fields(line)[2]
			if help != name {
				t.Errorf("TYPE of %s not right after its HELP", name)
			}
			names = append(names, name)
		case strings.HasPrefix(line, "#"):
			t.Errorf("stray comment %q", line)
		}
	}
	if !slices.IsSorted(names) || len(slices.Compact(slices.Clone(names))) != len(names) {
		t.Errorf("families not sorted and unique: %q", names)
	}
	avsidecar := func(text string) string {
		var out []string
		for line := range strings.Lines(text) {
			if strings.HasPrefix(line, "avsidecar_") && !strings.Contains(line, "agent_uptime") {
				out = append(out, line)
			}
		}
		return strings.Join(out, "")
	}
	for _, want := range []string{
		"avsidecar_browse_requests_total{code=\"200\"} 2\navsidecar_browse_requests_total{code=\"404\"} 1\navsidecar_browse_requests_total{code=\"500\"} 3\n",
		"avsidecar_http_requests_total{code=\"404\",handler=\"status\"} 1\n",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("scrape lacks %q", want)
		}
	}
	if again := get(t, url); avsidecar(again) != avsidecar(text) {
		t.Errorf("two scrapes of the same state differ:\n%s\n%s", avsidecar(text), avsidecar(again))
	}
}

// TestHostileLabelValues feeds package header fields that try to break out
// of their label and checks that the official parser reads them back
// exactly, with nothing else changed.
func TestHostileLabelValues(t *testing.T) {
	for _, in := range []Install{
		{Package: `Avamar"Client`, Version: `7.5\101`, Release: "1\n2"},
		{Package: `x"} avsidecar_ready 1`, Version: "1\navsidecar_registered 1\n# TYPE avsidecar_ready counter", Release: `\\"\`},
		{Package: "Avamar\xffClient", Version: "7.5.\xc3", Release: "r\u00e9lease \u2028"},
	} {
		src := &source{}
		src.set(Snapshot{Phase: "running", Install: in})
		fams := scrape(t, serve(t, newMetrics(t, src)))
		want := base("running")
		valid := func(s string) string { return strings.ToValidUTF8(s, "\uFFFD") }
		want[fmt.Sprintf("avsidecar_install_info{package=%q,release=%q,version=%q}", valid(in.Package), valid(in.Release), valid(in.Version))] = 1
		if diff := cmp.Diff(want, flat(fams)); diff != "" {
			t.Errorf("%q: series (-want +got):\n%s", in, diff)
		}
	}
}

// FuzzLabelValue: any label value is read back by the official parser as
// written (invalid UTF-8 as U+FFFD), and the scrape stays one series.
func FuzzLabelValue(f *testing.F) {
	for _, s := range []string{"", "7.5.101", `a"b`, `a\b`, "a\nb", `\`, `\"`, "\xff", "} 1\n# HELP"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		var buf bytes.Buffer
		fam := &family{name: "x_info", typ: gaugeType, help: v}
		fam.add(1, "v", v)
		writeText(&buf, []*family{fam})
		p := expfmt.NewTextParser(model.UTF8Validation)
		fams, err := p.TextToMetricFamilies(&buf)
		if err != nil {
			t.Fatalf("%q: %v", v, err)
		}
		ms := fams["x_info"].GetMetric()
		if len(fams) != 1 || len(ms) != 1 || len(ms[0].Label) != 1 {
			t.Fatalf("%q: %v", v, fams)
		}
		if got, want := ms[0].Label[0].GetValue(), strings.ToValidUTF8(v, "\uFFFD"); got != want {
			t.Errorf("label read back as %q, want %q", got, want)
		}
		// The parser skips the blanks between the name and the text.
		if got, want := fams["x_info"].GetHelp(), strings.TrimLeft(v, " \t"); got != want && utf8.ValidString(v) {
			t.Errorf("help read back as %q, want %q", got, want)
		}
	})
}

// TestInstrument serves instrumented handlers on a real server, calls them
// with a real client, and reads the counts and latencies back.
func TestInstrument(t *testing.T) {
	m := newMetrics(t, nil)
	release := make(chan struct{})
	mux := http.NewServeMux()
	mux.Handle("/livez", m.Instrument("livez", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	})))
	mux.Handle("/v1/files", m.Instrument("files", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, `{"error":"no such root"}`, http.StatusNotFound)
	})))
	mux.Handle("/v1/walk", m.Instrument("walk", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "{\"path\":\"/data/a\"}\n")
		f, ok := w.(http.Flusher)
		if !ok {
			t.Error("instrumented writer is not a Flusher")
			return
		}
		f.Flush()
		// The client must see the first line before the stream goes on.
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, "{\"path\":\"/data/b\"}\n")
	})))
	mux.Handle("/teapot", m.Instrument("other", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusTeapot)
	})))
	mux.Handle("/metrics", m.Instrument("metrics", m.Handler()))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	client := &http.Client{Timeout: 20 * time.Second}

	get := func(path string) *http.Response {
		resp, err := client.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	for _, p := range []string{"/livez", "/livez", "/v1/files", "/teapot"} {
		resp := get(p)
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	resp := get("/v1/walk")
	br := bufio.NewReader(resp.Body)
	line, err := br.ReadString('\n')
	if err != nil || line != "{\"path\":\"/data/a\"}\n" {
		t.Fatalf("first streamed line: %q, %v", line, err)
	}
	close(release)
	rest, _ := io.ReadAll(br)
	resp.Body.Close()
	if string(rest) != "{\"path\":\"/data/b\"}\n" {
		t.Fatalf("rest of stream: %q", rest)
	}

	fams := scrape(t, srv.URL+"/metrics")
	got := map[string]float64{}
	for _, mm := range fams["avsidecar_http_requests_total"].GetMetric() {
		got[key("requests", mm)] = mm.GetCounter().GetValue()
	}
	for _, mm := range fams["avsidecar_http_request_duration_seconds"].GetMetric() {
		got[key("latency", mm)] = float64(mm.GetHistogram().GetSampleCount())
	}
	want := map[string]float64{
		`requests{code="200",handler="livez"}`: 2,
		`requests{code="404",handler="files"}`: 1,
		`requests{code="200",handler="walk"}`:  1,
		`requests{code="4xx",handler="other"}`: 1,
		`latency{handler="livez"}`:             2,
		`latency{handler="files"}`:             1,
		`latency{handler="walk"}`:              1,
		`latency{handler="other"}`:             1,
		// This scrape is still running: its series exists, not yet counted.
		`latency{handler="metrics"}`: 0,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("instrumented series (-want +got):\n%s", diff)
	}
}

// TestHistogram checks the latency histogram on observations at its
// bounds (le is inclusive) and past its last bucket.
func TestHistogram(t *testing.T) {
	m := newMetrics(t, nil)
	m.Instrument("du", http.NotFoundHandler())
	for _, v := range []float64{0.001, 0.002, 0.0025, 120, 500} {
		m.latency["du"].observe(v)
	}
	fams := scrape(t, serve(t, m))
	h := fams["avsidecar_http_request_duration_seconds"].GetMetric()[0].GetHistogram()
	got := map[float64]uint64{}
	for _, b := range h.GetBucket() {
		got[b.GetUpperBound()] = b.GetCumulativeCount()
	}
	want := map[float64]uint64{.001: 1, .005: 3, .01: 3, .025: 3, .05: 3, .1: 3, .25: 3, .5: 3, 1: 3, 2.5: 3, 5: 3, 10: 3, 30: 3, 120: 4, math.Inf(1): 5}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("buckets (-want +got):\n%s", diff)
	}
	if h.GetSampleCount() != 5 || h.GetSampleSum() != 620.0055 {
		t.Errorf("count %d, sum %v; want 5, 620.0055", h.GetSampleCount(), h.GetSampleSum())
	}
}

func TestCodeLabel(t *testing.T) {
	for code, want := range map[int]string{200: "200", 201: "2xx", 404: "404", 418: "4xx", 503: "503", 599: "5xx", 0: "other", 1000: "other", 103: "1xx"} {
		if got := codeLabel(code); got != want {
			t.Errorf("codeLabel(%d) = %q, want %q", code, got, want)
		}
	}
}
