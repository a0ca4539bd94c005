package monitoring_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/avsidecar/avsidecar/internal/testkit"
)

// dashboard is the part of a Grafana dashboard the test reads.
type dashboard struct {
	UID        string  `json:"uid"`
	Title      string  `json:"title"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []struct {
			Name  string          `json:"name"`
			Type  string          `json:"type"`
			Query json.RawMessage `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	Title      string `json:"title"`
	Type       string `json:"type"`
	Datasource struct {
		UID string `json:"uid"`
	} `json:"datasource"`
	Targets []struct {
		RefID        string `json:"refId"`
		Expr         string `json:"expr"`
		LegendFormat string `json:"legendFormat"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // a row's
}

func loadDashboard(t *testing.T) dashboard {
	t.Helper()
	b, err := os.ReadFile("dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("dashboard.json: %v", err)
	}
	return d
}

// The demo's identity as the test's Prometheus labels it, as a PodMonitor
// labels a pod's target.
const (
	demoNamespace = "demo"
	demoPod       = "avkit-demo"
)

// selectorRe finds the series a query selects: a name before a matcher.
var selectorRe = regexp.MustCompile(`\b([a-zA-Z_:][a-zA-Z0-9_:]*)\{`)

// grafanaVars stands for what Grafana puts in place of its variables.
var grafanaVars = strings.NewReplacer(
	"${namespace}", demoNamespace, "$namespace", demoNamespace,
	"${pod}", demoPod, "$pod", demoPod,
	"$__rate_interval", "1m", "$__interval", "15s", "$__range", "5m",
)

// TestDashboardQueries checks every query of dashboard.json against a real
// Prometheus (Debian's) scraping a real avsidecar (the avkit demo: the
// fake MCS, the fake REST API with a recent backup): each answers with
// series, and the labels its legend shows are on them. The alerts are
// loaded into the same Prometheus, which must evaluate them without error.
func TestDashboardQueries(t *testing.T) {
	d := loadDashboard(t)
	if d.UID == "" || d.Title == "" {
		t.Fatal("dashboard.json needs a uid and a title")
	}
	prometheus := testkit.NeedCommand(t, "prometheus")
	start := time.Now()
	httpAddr := startDemo(t)
	t.Logf("demo ready after %s", time.Since(start))
	prom := startPrometheus(t, prometheus, httpAddr)

	// Enough scrapes for a rate over a minute, and the REST check done.
	prom.until(t, `count_over_time(avsidecar_last_backup_timestamp_seconds{job="avsidecar"}[1m]) >= 5`, 2*time.Minute)
	t.Logf("scraped after %s", time.Since(start))

	var panels []panel
	for _, p := range d.Panels {
		panels = append(panels, p)
		panels = append(panels, p.Panels...)
	}
	queries := 0
	for _, p := range panels {
		if p.Type == "row" {
			continue
		}
		if p.Datasource.UID != "${datasource}" || len(p.Targets) == 0 {
			t.Errorf("panel %q: datasource %q and %d queries, want ${datasource} and some", p.Title, p.Datasource.UID, len(p.Targets))
		}
		for _, tg := range p.Targets {
			queries++
			expr := grafanaVars.Replace(tg.Expr)
			if strings.Contains(expr, "$") {
				t.Errorf("panel %q %s: a variable the test does not know: %s", p.Title, tg.RefID, expr)
				continue
			}
			// Each series it selects exists, even where `or vector(0)`
			// would answer without it.
			for _, m := range selectorRe.FindAllStringSubmatch(expr, -1) {
				if s, err := prom.query(m[1] + `{job="avsidecar"}`); err != nil || len(s) == 0 {
					t.Errorf("panel %q %s: %s is not scraped from avsidecar (%v)", p.Title, tg.RefID, m[1], err)
				}
			}
			series, err := prom.query(expr)
			if err != nil {
				t.Errorf("panel %q %s: %s: %v", p.Title, tg.RefID, expr, err)
				continue
			}
			if len(series) == 0 {
				t.Errorf("panel %q %s: no series: %s", p.Title, tg.RefID, expr)
				continue
			}
			for _, m := range regexp.MustCompile(`\{\{\s*(\w+)\s*\}\}`).FindAllStringSubmatch(tg.LegendFormat, -1) {
				if series[0][m[1]] == "" {
					t.Errorf("panel %q %s: the legend shows {{%s}}, which the series lack: %v", p.Title, tg.RefID, m[1], series[0])
				}
			}
		}
	}
	if queries < 10 {
		t.Errorf("%d queries checked: the dashboard lost its panels?", queries)
	}

	// The variables' label_values(METRIC, LABEL) queries find the demo.
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct {
			Query string `json:"query"`
		}
		if err := json.Unmarshal(v.Query, &q); err != nil {
			t.Fatalf("variable %s: %v", v.Name, err)
		}
		m := regexp.MustCompile(`^label_values\((.+), (\w+)\)$`).FindStringSubmatch(q.Query)
		if m == nil {
			t.Errorf("variable %s: %q is not label_values(METRIC, LABEL)", v.Name, q.Query)
			continue
		}
		values, err := prom.labelValues(m[2], grafanaVars.Replace(m[1]))
		want := map[string]string{"namespace": demoNamespace, "pod": demoPod}[v.Name]
		if err != nil || len(values) != 1 || values[0] != want {
			t.Errorf("variable %s: %s gives %v, %v; want [%s]", v.Name, q.Query, values, err, want)
		}
	}

	// The alerts load and evaluate in a real Prometheus.
	var rules struct {
		Data struct {
			Groups []struct {
				Rules []struct {
					Name      string `json:"name"`
					Health    string `json:"health"`
					LastError string `json:"lastError"`
				} `json:"rules"`
			} `json:"groups"`
		} `json:"data"`
	}
	if err := prom.get("/api/v1/rules", nil, &rules); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, g := range rules.Data.Groups {
		for _, r := range g.Rules {
			n++
			if r.Health != "ok" {
				t.Errorf("alert %s: health %q %s", r.Name, r.Health, r.LastError)
			}
		}
	}
	if n != len(loadRules(t)) {
		t.Errorf("Prometheus loaded %d rules, prometheusrule.yaml has %d", n, len(loadRules(t)))
	}
	// A healthy demo fires none of them.
	if series, err := prom.query(`ALERTS{alertstate="firing"}`); err != nil || len(series) != 0 {
		t.Errorf("alerts firing on a healthy sidecar: %v %v", series, err)
	}
}

// startDemo runs `avkit demo` (the README's first command) on free ports
// until the test ends, and returns its HTTP address once avsidecar is
// ready.
func startDemo(t *testing.T) string {
	t.Helper()
	avkit := testkit.BuildAvkit(t)
	port := func() string { return "127.0.0.1:" + strconv.Itoa(testkit.FreePort(t)) }
	httpAddr := port()
	demo := exec.Command(avkit, "demo", "-mcs", port(), "-http", httpAddr, "-ssh", port(),
		"-listen-port", strconv.Itoa(testkit.FreePort(t)))
	out, err := demo.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	demo.Stderr = demo.Stdout
	if _, err := demo.StdinPipe(); err != nil { // the demo reads commands from stdin
		t.Fatal(err)
	}
	if err := demo.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	t.Cleanup(func() {
		_ = demo.Process.Signal(syscall.SIGINT) // the demo stops avsidecar and removes its files
		select {
		case <-exited:
		case <-time.After(45 * time.Second):
			_ = demo.Process.Kill()
			<-exited
		}
	})
	ready := make(chan struct{})
	var transcript strings.Builder
	go func() {
		defer close(exited)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			transcript.WriteString(sc.Text() + "\n")
			if strings.Contains(sc.Text(), "avsidecar is ready") {
				close(ready)
			}
		}
		_ = demo.Wait()
	}()
	select {
	case <-ready:
	case <-exited:
		t.Fatalf("the demo ended before it was ready:\n%s", transcript.String())
	case <-time.After(3 * time.Minute):
		t.Fatal("the demo was not ready within 3 minutes")
	}
	return httpAddr
}

// prometheusServer is a Prometheus started for one test.
type prometheusServer struct {
	base string
}

// startPrometheus runs Prometheus scraping the avsidecar at target every
// second, with the alerts of prometheusrule.yaml, until the test ends.
func startPrometheus(t *testing.T, bin, target string) *prometheusServer {
	t.Helper()
	dir := t.TempDir()
	writeRules(t, dir, nil)
	config := fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [rules.yaml]
scrape_configs:
  - job_name: avsidecar
    static_configs:
      - targets: [%q]
        labels: {namespace: %q, pod: %q, container: avamar}
`, target, demoNamespace, demoPod)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(testkit.FreePort(t))
	cmd := exec.Command(bin, "--config.file=prometheus.yml", "--storage.tsdb.path=data",
		"--web.listen-address="+addr, "--log.level=warn")
	cmd.Dir = dir
	logs := &strings.Builder{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	p := &prometheusServer{base: "http://" + addr}
	// Prometheus says when it is ready on /-/ready; nothing else tells.
	deadline := time.Now().Add(time.Minute)
	for {
		resp, err := http.Get(p.base + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		select {
		case <-done:
			t.Fatalf("prometheus exited:\n%s", logs.String())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus not ready within a minute:\n%s", logs.String())
		}
	}
}

func (p *prometheusServer) get(path string, params url.Values, into any) error {
	resp, err := http.Get(p.base + path + "?" + params.Encode())
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("HTTP %d: %s", resp.StatusCode, body)
	}
	return json.Unmarshal(body, into)
}

// query evaluates an instant query now and returns the label sets of its
// series.
func (p *prometheusServer) query(expr string) ([]map[string]string, error) {
	var r struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string `json:"resultType"`
			Result     []struct {
				Metric map[string]string `json:"metric"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := p.get("/api/v1/query", url.Values{"query": {expr}}, &r); err != nil {
		return nil, err
	}
	if r.Status != "success" {
		return nil, fmt.Errorf("%s", r.Error)
	}
	out := make([]map[string]string, len(r.Data.Result))
	for i, s := range r.Data.Result {
		out[i] = s.Metric
	}
	return out, nil
}

// labelValues is Grafana's label_values(match, label).
func (p *prometheusServer) labelValues(label, match string) ([]string, error) {
	var r struct {
		Data []string `json:"data"`
	}
	err := p.get("/api/v1/label/"+label+"/values", url.Values{"match[]": {match}}, &r)
	return r.Data, err
}

// until waits for expr to have a series, up to timeout: the scrapes
// happen in another process, on its own clock.
func (p *prometheusServer) until(t *testing.T, expr string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		series, err := p.query(expr)
		if err != nil {
			t.Fatalf("%s: %v", expr, err)
		}
		if len(series) > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %s", expr, timeout)
		}
		time.Sleep(250 * time.Millisecond)
	}
}
