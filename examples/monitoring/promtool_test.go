package monitoring_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/avsidecar/avsidecar/internal/testkit"
)

// runbookBase is where the alerts' runbook_url point: this directory's
// runbooks/ on the project's main branch.
const runbookBase = "https://github.com/avsidecar/avsidecar/blob/main/examples/monitoring/runbooks/"

// writeRules writes the PrometheusRule's groups as a plain Prometheus rule
// file, what promtool and a Prometheus server read, and returns its path.
func writeRules(t *testing.T, dir string, edit func(string) string) string {
	t.Helper()
	out, err := yaml.Marshal(map[string]any{"groups": loadRuleFile(t).Spec.Groups})
	if err != nil {
		t.Fatal(err)
	}
	text := string(out)
	if edit != nil {
		text = edit(text)
	}
	p := filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func promtool(t *testing.T, dir string, args ...string) (string, error) {
	t.Helper()
	bin := testkit.NeedCommand(t, "promtool")
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestPromtoolCheckRules: the rules are valid PromQL with valid templates,
// as Prometheus itself would load them.
func TestPromtoolCheckRules(t *testing.T) {
	dir := t.TempDir()
	writeRules(t, dir, nil)
	out, err := promtool(t, dir, "check", "rules", "rules.yaml")
	if err != nil || !strings.Contains(out, "SUCCESS") {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
	// The check can fail: a broken expression is refused.
	writeRules(t, dir, func(s string) string { return strings.Replace(s, "== 1", "== == 1", 1) })
	if out, err := promtool(t, dir, "check", "rules", "rules.yaml"); err == nil {
		t.Errorf("promtool accepted a broken expression:\n%s", out)
	}
}

// TestPromtoolTestRules runs prometheusrule_test.yaml: each alert fires
// for the pod that is in trouble, after its `for`, with its labels and
// annotations rendered, and not for the pod next to it.
func TestPromtoolTestRules(t *testing.T) {
	dir := t.TempDir()
	tests, err := os.ReadFile("prometheusrule_test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "prometheusrule_test.yaml"), tests, 0o644); err != nil {
		t.Fatal(err)
	}
	writeRules(t, dir, nil)
	out, err := promtool(t, dir, "test", "rules", "prometheusrule_test.yaml")
	if err != nil || !strings.Contains(out, "SUCCESS") {
		t.Fatalf("promtool test rules: %v\n%s", err, out)
	}
	// Every alert is tested.
	for _, r := range loadRules(t) {
		if !strings.Contains(string(tests), "alertname: "+r.Alert+"\n") {
			t.Errorf("prometheusrule_test.yaml does not test %s", r.Alert)
		}
	}
	// The tests bite: a day's threshold made ten days fails them.
	writeRules(t, dir, func(s string) string { return strings.Replace(s, "> 86400", "> 864000", 1) })
	if out, err := promtool(t, dir, "test", "rules", "prometheusrule_test.yaml"); err == nil {
		t.Errorf("the unit tests passed with a broken rule:\n%s", out)
	}
}

// runbookSections are what every runbook says, in this order.
var runbookSections = []string{"## Meaning", "## Impact", "## Diagnosis", "## Mitigation"}

// TestRunbooks: every alert links its runbook, which exists here and says
// what the alert means and what to do; every runbook belongs to an alert.
func TestRunbooks(t *testing.T) {
	linked := map[string]bool{}
	for _, r := range loadRules(t) {
		url := r.Annotations["runbook_url"]
		if url != runbookBase+r.Alert+".md" {
			t.Errorf("%s: runbook_url %q, want %s%s.md", r.Alert, url, runbookBase, r.Alert)
			continue
		}
		name := r.Alert + ".md"
		linked[name] = true
		b, err := os.ReadFile(filepath.Join("runbooks", name))
		if err != nil {
			t.Errorf("%s: %v", r.Alert, err)
			continue
		}
		text := string(b)
		if !strings.HasPrefix(text, "# "+r.Alert+"\n") {
			t.Errorf("runbooks/%s does not start with # %s", name, r.Alert)
		}
		last := -1
		for _, s := range runbookSections {
			i := strings.Index(text, "\n"+s+"\n")
			if i < 0 || i < last {
				t.Errorf("runbooks/%s: no %q section in its place", name, s)
			}
			last = i
		}
		// Other alerts it names exist.
		for _, m := range regexp.MustCompile("`(Avamar[A-Za-z]+)`").FindAllStringSubmatch(text, -1) {
			if !slices.ContainsFunc(loadRules(t), func(o rule) bool { return o.Alert == m[1] }) {
				t.Errorf("runbooks/%s names %s, which is no alert", name, m[1])
			}
		}
	}
	files, err := filepath.Glob("runbooks/*.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if !linked[filepath.Base(f)] {
			t.Errorf("%s belongs to no alert", f)
		}
	}
}
