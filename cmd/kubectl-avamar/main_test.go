package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"text/template"

	"sigs.k8s.io/yaml"
)

func runMain(t *testing.T, in string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	stdin = strings.NewReader(in)
	t.Cleanup(func() { stdin = os.Stdin })
	var out, errOut bytes.Buffer
	code = execute(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

const bareNginx = "../../examples/kustomize/nginx/statefulset.yaml"

// TestInjectCommand: manifests from stdin or -f, the result on stdout,
// notes on stderr; a bad manifest exits 2 with one message and writes no
// manifest.
func TestInjectCommand(t *testing.T) {
	bare, err := os.ReadFile(bareNginx)
	if err != nil {
		t.Fatal(err)
	}
	code, fromStdin, errOut := runMain(t, string(bare), "inject", "--image", "site:1")
	want := "kubectl avamar inject: note: stdin, document 1 (StatefulSet nginx): avagent ports 31000-31001, the NodePorts of Services nginx-0-avagent to nginx-1-avagent (new)\n"
	if code != 0 || !strings.Contains(fromStdin, "name: avamar\n") || errOut != want {
		t.Fatalf("inject from stdin: exit %d, stderr %q, want %q", code, errOut, want)
	}
	code, fromFile, _ := runMain(t, "", "inject", "-f", bareNginx, "--image", "site:1")
	if code != 0 || fromFile != fromStdin {
		t.Errorf("inject -f: exit %d, output differs from stdin's", code)
	}
	// Twice is once, through the command line.
	if code, again, _ := runMain(t, fromStdin, "inject", "-f", "-", "--image", "site:1"); code != 0 || again != fromStdin {
		t.Errorf("inject of inject's output changed it (exit %d)", code)
	}
	// Two files, one manifest out; browse off.
	dir := t.TempDir()
	svc := filepath.Join(dir, "svc.yaml")
	os.WriteFile(svc, []byte("apiVersion: v1\nkind: Service\nmetadata:\n  name: nginx\nspec:\n  clusterIP: None\n"), 0o644)
	code, out, _ := runMain(t, "", "inject", "-f", bareNginx, "-f", svc, "--image", "site:1", "--browse-roots", "off")
	if code != 0 || !strings.HasSuffix(out, "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: nginx\nspec:\n  clusterIP: None\n") || strings.Contains(out, "AVSIDECAR_BROWSE_ROOTS") {
		t.Errorf("two files, browse off: exit %d:\n%s", code, out)
	}

	bad := strings.Replace(string(bare), "containers:", "contaners:", 1)
	code, out, errOut = runMain(t, bad, "inject", "--image", "site:1")
	want = `kubectl avamar inject: stdin, document 1 (StatefulSet nginx): unknown field "spec.template.spec.contaners"` + "\n"
	if code != exitUsage || out != "" || errOut != want {
		t.Errorf("bad manifest: exit %d, stdout %q, stderr %q; want exit 2, no output, %q", code, out, errOut, want)
	}
	code, out, errOut = runMain(t, string(bare), "inject")
	if code != exitUsage || out != "" || !strings.Contains(errOut, "--image is required") {
		t.Errorf("no image: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	code, _, errOut = runMain(t, "", "inject", "--image", "x", "-f", filepath.Join(dir, "missing.yaml"))
	if code != exitUsage || !strings.Contains(errOut, "missing.yaml: no such file") {
		t.Errorf("missing file: exit %d, %q", code, errOut)
	}
}

// TestHelp: kubectl's help layout, with the plugin's name as kubectl
// shows it; an unknown command or flag exits 2 naming it.
func TestHelp(t *testing.T) {
	code, out, _ := runMain(t, "", "--help")
	for _, want := range []string{"Usage:\n  kubectl avamar [flags]\n  kubectl avamar [command]", "Available Commands:", "inject ", "uninject ", "status ", "version ",
		`Use "kubectl avamar [command] --help" for more information about a command.`} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("--help: exit %d, no %q in:\n%s", code, want, out)
		}
	}
	code, out, _ = runMain(t, "", "inject", "--help")
	if code != 0 || !strings.Contains(out, "Usage:\n  kubectl avamar inject [-f FILE|DIR]... --image IMAGE [flags]") || !strings.Contains(out, "Examples:") || !strings.Contains(out, "--only stringArray") {
		t.Errorf("inject --help: exit %d:\n%s", code, out)
	}
	code, out, _ = runMain(t, "", "status", "--help")
	for _, want := range []string{"-n, --namespace string", "--kubeconfig string", "--context string", "-A, --all-namespaces", "-o, --output string"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("status --help lacks %q", want)
		}
	}
	for _, args := range [][]string{{"frobnicate"}, {"inject", "--imag", "x"}, {"status", "-o", "name"}, {"version", "extra"}} {
		code, out, errOut := runMain(t, "", args...)
		if code != exitUsage || out != "" || !strings.HasPrefix(errOut, "kubectl avamar") {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want exit 2 and one message", args, code, out, errOut)
		}
	}
	if code, out, _ := runMain(t, "", "version"); code != 0 || !strings.HasPrefix(out, "kubectl-avamar ") {
		t.Errorf("version: %d %q", code, out)
	}
}

// TestUninjectCommand: inject then uninject through the command line,
// with -f DIR; the notes say what was left out.
func TestUninjectCommand(t *testing.T) {
	dir := t.TempDir()
	code, injected, _ := runMain(t, "", "inject", "-f", "../../internal/inject/testdata/public/k8s-website-mysql", "--image", "site:1", "--server", "mcs")
	if code != 0 || !strings.Contains(injected, "name: mysql-2-avagent") {
		t.Fatalf("inject -f DIR: exit %d", code)
	}
	if err := os.WriteFile(filepath.Join(dir, "injected.yaml"), []byte(injected), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runMain(t, "", "uninject", "-f", dir)
	if code != 0 || strings.Contains(out, "avamar") || !strings.Contains(errOut, "kubectl avamar uninject: note: left out of the output: configmap/avamar, service/mysql-0-avagent") {
		t.Errorf("uninject: exit %d, stderr %q", code, errOut)
	}
	// Bad YAML in the middle of a directory: every problem, exit 2, no
	// manifest.
	if err := os.WriteFile(filepath.Join(dir, "bad.yaml"), []byte("kind: [\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errOut = runMain(t, "", "inject", "-f", dir, "--image", "site:1")
	if code != exitUsage || out != "" || !strings.Contains(errOut, "kubectl avamar inject: "+filepath.Join(dir, "bad.yaml")+", document 1: not valid YAML") {
		t.Errorf("bad YAML in a directory: exit %d, stdout %d bytes, stderr %q", code, len(out), errOut)
	}
}

// TestKrewManifest renders the krew template as krew-release-bot does (its
// addURIAndSha puts the archive's URL and digest in) and reads it as krew's
// Plugin: the plugin is "avamar" (kubectl avamar), every platform runs
// this binary from its archive with the licence, at the tag's release.
func TestKrewManifest(t *testing.T) {
	text, err := os.ReadFile("../../.krew.yaml")
	if err != nil {
		t.Fatal(err)
	}
	const tag = "v0.1.0"
	tpl, err := template.New("krew").Funcs(template.FuncMap{"addURIAndSha": func(url, tag string) string {
		url = strings.ReplaceAll(url, "{{ .TagName }}", tag)
		return "uri: " + url + "\n      sha256: " + strings.Repeat("ab", 32)
	}}).Parse(string(text))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := tpl.Execute(&out, struct{ TagName string }{tag}); err != nil {
		t.Fatal(err)
	}
	var plugin struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name string `json:"name"`
		} `json:"metadata"`
		Spec struct {
			Version, Homepage, ShortDescription, Description, Caveats string
			Platforms                                                 []struct {
				Selector struct {
					MatchLabels map[string]string `json:"matchLabels"`
				} `json:"selector"`
				URI, Sha256, Bin string
				Files            []struct{ From, To string }
			} `json:"platforms"`
		} `json:"spec"`
	}
	if err := yaml.UnmarshalStrict(out.Bytes(), &plugin); err != nil {
		t.Fatalf("%v\n%s", err, out.Bytes())
	}
	if plugin.APIVersion != "krew.googlecontainertools.github.com/v1alpha2" || plugin.Kind != "Plugin" || plugin.Metadata.Name != "avamar" || plugin.Spec.Version != tag {
		t.Errorf("plugin %+v", plugin)
	}
	var platforms []string
	for _, p := range plugin.Spec.Platforms {
		os, arch := p.Selector.MatchLabels["os"], p.Selector.MatchLabels["arch"]
		platforms = append(platforms, os+"/"+arch)
		want := "https://github.com/avsidecar/avsidecar/releases/download/v0.1.0/kubectl-avamar_v0.1.0_" + os + "_" + arch + ".tar.gz"
		if p.URI != want || len(p.Sha256) != 64 || p.Bin != "kubectl-avamar" || len(p.Files) != 2 || p.Files[1].From != "LICENSE" {
			t.Errorf("%s/%s: %+v", os, arch, p)
		}
	}
	if got := strings.Join(platforms, " "); got != "linux/amd64 linux/arm64 darwin/amd64 darwin/arm64" {
		t.Errorf("platforms %s", got)
	}
}
