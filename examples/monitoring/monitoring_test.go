// Package monitoring_test keeps the monitoring examples in step with what
// avsidecar exports: every avsidecar_ series and label value the alerts use
// must appear in a real scrape of internal/metrics, and the container and
// port they name must exist in the nginx example; promtool checks the rules
// and runs their unit tests; every alert has its runbook; and every query
// of the Grafana dashboard answers from a real Prometheus scraping a real
// avsidecar.
package monitoring_test

import (
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/rs/zerolog"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/avsidecar/avsidecar/internal/backupapi"
	"github.com/avsidecar/avsidecar/internal/doctor"
	"github.com/avsidecar/avsidecar/internal/metrics"
	"github.com/avsidecar/avsidecar/internal/register"
	"github.com/avsidecar/avsidecar/internal/sidecar"
)

type rule struct {
	Alert       string            `json:"alert"`
	Expr        string            `json:"expr"`
	For         string            `json:"for,omitempty"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
}

type ruleFile struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name   string            `json:"name"`
		Labels map[string]string `json:"labels"`
	} `json:"metadata"`
	Spec struct {
		Groups []struct {
			Name  string `json:"name"`
			Rules []rule `json:"rules"`
		} `json:"groups"`
	} `json:"spec"`
}

// loadRuleFile decodes prometheusrule.yaml strictly.
func loadRuleFile(t *testing.T) ruleFile {
	t.Helper()
	data, err := os.ReadFile("prometheusrule.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var f ruleFile
	if err := yaml.UnmarshalStrict(data, &f); err != nil {
		t.Fatalf("prometheusrule.yaml: %v", err)
	}
	if f.APIVersion != "monitoring.coreos.com/v1" || f.Kind != "PrometheusRule" {
		t.Fatalf("prometheusrule.yaml is %s %s", f.APIVersion, f.Kind)
	}
	return f
}

func loadRules(t *testing.T) []rule {
	t.Helper()
	f := loadRuleFile(t)
	var rules []rule
	for _, g := range f.Spec.Groups {
		rules = append(rules, g.Rules...)
	}
	return rules
}

// scrapedSeries scrapes internal/metrics fed with a snapshot that has every
// field set, and returns family name -> label name -> values seen.
func scrapedSeries(t *testing.T) map[string]map[string][]string {
	t.Helper()
	full := metrics.Snapshot{
		Phase: "running", Ready: true, Registered: true, AgentUp: true,
		Install:        metrics.Install{Package: "AvamarClient", Version: "7.5.101", Release: "101"},
		Registrations:  map[string]int{"success": 1},
		AgentRestarts:  1,
		BrowseRequests: map[string]uint64{"200": 1},
		LastBackup:     time.Now(), LastBackupCheck: time.Now(), BackupAPIState: "ok",
		Doctor: map[string]string{"mcs": "ok"},
	}
	m, err := metrics.New(metrics.Config{Snapshot: func() metrics.Snapshot { return full }, Labels: sidecar.MetricLabels}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string][]string{}
	for name, f := range fams {
		out[name] = map[string][]string{}
		for _, mm := range f.Metric {
			for _, l := range mm.Label {
				out[name][l.GetName()] = append(out[name][l.GetName()], l.GetValue())
			}
		}
	}
	return out
}

var (
	seriesRe = regexp.MustCompile(`\b(avsidecar_[a-z_]+)(\{[^}]*\})?`)
	matchRe  = regexp.MustCompile(`([a-z_]+)(=~|!~|=|!=)"([^"]*)"`)
)

func TestRulesUseExportedSeries(t *testing.T) {
	rules := loadRules(t)
	if len(rules) == 0 {
		t.Fatal("no rules")
	}
	exported := scrapedSeries(t)
	names := map[string]bool{}
	for _, r := range rules {
		if r.Alert == "" || r.Expr == "" || names[r.Alert] {
			t.Errorf("rule %q: empty or duplicate", r.Alert)
		}
		names[r.Alert] = true
		if r.For != "" {
			if _, err := model.ParseDuration(r.For); err != nil {
				t.Errorf("%s: for %q: %v", r.Alert, r.For, err)
			}
		}
		if r.Labels["severity"] == "" || r.Annotations["summary"] == "" {
			t.Errorf("%s: needs a severity and a summary", r.Alert)
		}
		for _, m := range seriesRe.FindAllStringSubmatch(r.Expr, -1) {
			labels, ok := exported[m[1]]
			if !ok {
				t.Errorf("%s: %s is not exported by internal/metrics", r.Alert, m[1])
				continue
			}
			for _, lm := range matchRe.FindAllStringSubmatch(m[2], -1) {
				values, ok := labels[lm[1]]
				if !ok {
					t.Errorf("%s: %s has no label %s", r.Alert, m[1], lm[1])
					continue
				}
				known := allValues(m[1], lm[1], values)
				for _, v := range strings.Split(lm[3], "|") {
					if !slices.Contains(known, v) {
						t.Errorf("%s: %s{%s=%q} can never match", r.Alert, m[1], lm[1], v)
					}
				}
			}
		}
	}
}

// allValues is every value a label can take: the fixed sets of
// their owners, else the values seen in the scrape.
func allValues(series, label string, seen []string) []string {
	switch label {
	case "phase":
		return sidecar.Phases
	case "state":
		if series == "avsidecar_doctor_state" {
			return doctor.States
		}
		return backupapi.States
	case "outcome":
		return register.Outcomes
	}
	return seen
}

// TestRulesMatchTheExample checks the container and port names the rules
// and the PodMonitor rely on against the nginx example.
func TestRulesMatchTheExample(t *testing.T) {
	data, err := os.ReadFile("../nginx/statefulset.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var sts appsv1.StatefulSet
	if err := yaml.Unmarshal(data, &sts); err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(sts.Spec.Template.Spec.Containers, func(c corev1.Container) bool { return c.Name == "avamar" })
	if i < 0 {
		t.Fatal(`no container "avamar" in the nginx example, which the runbooks and the PodMonitor name`)
	}
	ports := sts.Spec.Template.Spec.Containers[i].Ports
	if !slices.ContainsFunc(ports, func(p corev1.ContainerPort) bool { return p.Name == "avsidecar" }) {
		t.Error(`container "avamar" has no port named "avsidecar" for the PodMonitor`)
	}
	pm, err := os.ReadFile("podmonitor.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"port: avsidecar", "path: /metrics", "app.kubernetes.io/name: " + sts.Spec.Template.Labels["app.kubernetes.io/name"]} {
		if !strings.Contains(string(pm), want) {
			t.Errorf("podmonitor.yaml lacks %q", want)
		}
	}
}
