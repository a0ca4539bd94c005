package inject

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"sigs.k8s.io/yaml"
)

// kubectlList is what `kubectl get statefulset,service -o yaml` prints: a v1
// List of objects as the API server keeps them, status and all.
func kubectlList(t *testing.T, format string, objs ...string) []byte {
	t.Helper()
	var items []any
	for _, o := range objs {
		var v map[string]any
		if err := yaml.Unmarshal([]byte(o), &v); err != nil {
			t.Fatal(err)
		}
		md := v["metadata"].(map[string]any)
		md["resourceVersion"], md["uid"], md["creationTimestamp"] = "4711", "0b1c2d3e", "2026-11-30T10:00:00Z"
		md["namespace"] = "shop"
		if v["kind"] == "StatefulSet" {
			v["status"] = map[string]any{"replicas": 2, "readyReplicas": 2, "availableReplicas": 2}
		}
		items = append(items, v)
	}
	l := map[string]any{"apiVersion": "v1", "kind": "List", "metadata": map[string]any{"resourceVersion": ""}, "items": items}
	b, err := yaml.Marshal(l)
	if err != nil {
		t.Fatal(err)
	}
	if format == "json" {
		if b, err = yaml.YAMLToJSON(b); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

// TestInjectList: a List, in YAML or JSON, is read item by item; its
// workloads are injected (the status dropped), its other items pass
// through as documents of their own.
func TestInjectList(t *testing.T) {
	sts := string(read(t, bareNginx).Data)
	svc := "apiVersion: v1\nkind: Service\nmetadata:\n  name: nginx\nspec:\n  clusterIP: None\n  selector:\n    app.kubernetes.io/name: nginx\n"
	for _, format := range []string{"yaml", "json"} {
		t.Run(format, func(t *testing.T) {
			res := run(t, Options{Image: "site:1"}, Input{Name: "kubectl get", Data: kubectlList(t, format, sts, svc)})
			var got []string
			for _, d := range docsOf(t, res.Output) {
				got = append(got, d.kind+"/"+d.ns+"/"+d.name)
			}
			want := []string{"StatefulSet/shop/nginx", "Service/shop/nginx-0-avagent", "Service/shop/nginx-1-avagent", "Service/shop/nginx"}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("documents (-want +got):\n%s", diff)
			}
			if bytes.Contains(res.Output, []byte("readyReplicas")) || !bytes.Contains(res.Output, []byte("resourceVersion: \"4711\"")) {
				t.Errorf("the status must go, the resourceVersion stay (kubectl apply then refuses a stale object):\n%s", res.Output)
			}
			if !hasLine(res.Notes, "kubectl get, document 1, item 2 (Service nginx): passed through: not a workload") {
				t.Errorf("notes %q", res.Notes)
			}
			back, err := Uninject([]Input{{Name: "x", Data: res.Output}}, UninjectOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(canonical(t, Input{Name: "list", Data: kubectlList(t, format, sts, svc)}), canonical(t, Input{Name: "back", Data: back.Output})); diff != "" {
				t.Errorf("uninject (-original +uninjected):\n%s", diff)
			}
		})
	}
}

// TestRead: files, directories (recursively with -R, as kubectl), stdin,
// and the caps: a file larger than MaxFileSize (or endless, /dev/zero) is
// refused with a message saying so, after reading no more than the cap.
func TestRead(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("b.yaml", "b")
	write("a.yml", "a")
	write("c.json", "c")
	write("notes.txt", "not read")
	write("sub/d.yaml", "d")
	names := func(in []Input) string {
		var n []string
		for _, i := range in {
			n = append(n, strings.TrimPrefix(i.Name, dir+"/")+"="+string(i.Data))
		}
		return strings.Join(n, " ")
	}
	in, err := Read([]string{dir, "-"}, false, strings.NewReader("s"))
	if err != nil || names(in) != "a.yml=a b.yaml=b c.json=c stdin=s" {
		t.Errorf("-f DIR -f -: %s %v", names(in), err)
	}
	if in, err = Read([]string{dir}, true, nil); err != nil || names(in) != "a.yml=a b.yaml=b c.json=c sub/d.yaml=d" {
		t.Errorf("-f DIR -R: %s %v", names(in), err)
	}
	empty := t.TempDir()
	_, err = Read([]string{empty, filepath.Join(dir, "missing.yaml")}, false, nil)
	for _, want := range []string{empty + ": no .yaml, .yml or .json file in the directory (-R reads its subdirectories)", "read " + filepath.Join(dir, "missing.yaml") + ": no such file or directory"} {
		if err == nil || !strings.Contains(err.Error(), want) || !errors.Is(err, ErrInput) {
			t.Errorf("error %v, want %q", err, want)
		}
	}

	big := filepath.Join(dir, "big.yaml")
	if err := os.WriteFile(big, bytes.Repeat([]byte("#"), MaxFileSize+1), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Read([]string{big}, false, nil); err == nil || !strings.Contains(err.Error(), "big.yaml is larger than 16 MiB, the most inject reads of one file") {
		t.Errorf("a file over the cap: %v", err)
	}
	zero, err := os.Open("/dev/zero")
	if err != nil {
		t.Skip("no /dev/zero")
	}
	defer zero.Close()
	counted := &countingReader{r: zero}
	if _, err := Read([]string{"-"}, false, counted); err == nil || !strings.Contains(err.Error(), "stdin is larger than 16 MiB") {
		t.Errorf("endless stdin: %v", err)
	}
	if counted.n > MaxFileSize+1 {
		t.Errorf("read %d bytes of an endless stdin, want at most %d", counted.n, MaxFileSize+1)
	}
	exact := filepath.Join(dir, "exact.yaml")
	if err := os.WriteFile(exact, bytes.Repeat([]byte("#"), MaxFileSize), 0o644); err != nil {
		t.Fatal(err)
	}
	var many []string
	for range MaxInputSize/MaxFileSize + 1 {
		many = append(many, exact)
	}
	if _, err := Read(many, false, nil); err == nil || !strings.Contains(err.Error(), "the input is larger than 64 MiB in all") {
		t.Errorf("many files: %v", err)
	}
}

type countingReader struct {
	r interface{ Read([]byte) (int, error) }
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// TestHostileYAML: aliases that expand exponentially and deep nesting are
// refused by the YAML decoder, as errors naming the document.
func TestHostileYAML(t *testing.T) {
	laughs := "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: lol\ndata:\n  a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n"
	prev := "a"
	for _, n := range []string{"b", "c", "d", "e", "f", "g", "h", "i"} {
		laughs += "  " + n + ": &" + n + " [" + strings.Repeat("*"+prev+",", 8) + "*" + prev + "]\n"
		prev = n
	}
	deep := "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: deep\nx: " + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + "\n"
	for name, doc := range map[string]string{"billion laughs": laughs, "deep nesting": deep} {
		t.Run(name, func(t *testing.T) {
			_, err := Inject([]Input{{Name: "hostile.yaml", Data: []byte(doc)}}, Options{Image: "site:1"})
			if err == nil || !errors.Is(err, ErrInput) || !strings.Contains(err.Error(), "hostile.yaml, document 1: not valid YAML") {
				t.Errorf("error %v", err)
			}
		})
	}
}

// TestInjectSelection: --only picks workloads (by kubectl's kinds and
// short names, with or without the namespace); the opt-out annotation
// keeps a workload away, noted, and is an error only when --only names
// it.
func TestInjectSelection(t *testing.T) {
	in := readPublic(t, "k8s-examples_databases_cassandra_cassandra-statefulset.yaml")
	in = append(in, readPublic(t, "k8s-website_zookeeper.yaml")...)
	for _, only := range []string{"sts/zk", "StatefulSet/zk", "statefulsets/zk"} {
		res := run(t, Options{Image: "site:1", Only: []string{only}}, in...)
		if !hasLine(res.Notes, "(StatefulSet cassandra): passed through: not named by --only") || !bytes.Contains(res.Output, []byte("name: zk-0-avagent")) || bytes.Contains(res.Output, []byte("cassandra-0-avagent")) {
			t.Errorf("--only %s: notes %q", only, res.Notes)
		}
	}
	optOut := bytes.Replace(in[1].Data, []byte("kind: StatefulSet\nmetadata:\n  name: zk\n"), []byte("kind: StatefulSet\nmetadata:\n  name: zk\n  annotations:\n    avsidecar.io/inject: \"false\"\n"), 1)
	res := run(t, Options{Image: "site:1"}, in[0], Input{Name: "zk", Data: optOut})
	if !hasLine(res.Notes, `(StatefulSet zk): passed through: opted out (avsidecar.io/inject: "false")`) || bytes.Contains(res.Output, []byte("zk-0-avagent")) {
		t.Errorf("opted out: notes %q", res.Notes)
	}
	_, err := Inject([]Input{in[0], {Name: "zk", Data: optOut}}, Options{Image: "site:1", Only: []string{"sts/zk", "deploy/nope"}})
	for _, want := range []string{`zk, document 4 (StatefulSet zk): named by --only, but annotated avsidecar.io/inject: "false"`, "--only deployment/nope: no such workload in the input"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v, want %q", err, want)
		}
	}
}

// TestInjectPorts: a NodePort of the input's Services is skipped; two
// workloads never share a port; a kept block that collides with another
// is an error naming both.
func TestInjectPorts(t *testing.T) {
	taken := "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  type: NodePort\n  selector: {app: web}\n  ports:\n  - port: 80\n    nodePort: 31001\n"
	in := append(readPublic(t, "k8s-website_zookeeper.yaml"), Input{Name: "web.yaml", Data: []byte(taken)})
	in = append(in, readPublic(t, "k8s-website_wordpress_mysql-deployment.yaml")...)
	res := run(t, Options{Image: "site:1"}, in...)
	nodePortsOnce(t, res.Output)
	for _, want := range []string{"(StatefulSet zk): avagent ports 31010-31012", "(Deployment wordpress-mysql): avagent ports 31020, the NodePorts of Service wordpress-mysql-avagent (new)"} {
		if !hasLine(res.Notes, want) {
			t.Errorf("no note %q in %q", want, res.Notes)
		}
	}
	// A kept block over a Service's NodePort, and two kept blocks that
	// overlap: each named.
	for edit, want := range map[[2]string]string{
		{`avsidecar.io/listen-port-base: "31010"`, `avsidecar.io/listen-port-base: "31000"`}: "(StatefulSet zk): its ports 31000-31002 (annotation avsidecar.io/listen-port-base) collide with Service web (nodePort 31001): change one of them",
		{`avsidecar.io/listen-port-base: "31020"`, `avsidecar.io/listen-port-base: "31011"`}: "(Deployment wordpress-mysql): its ports 31011 (annotation avsidecar.io/listen-port-base) collide with StatefulSet zk (ports 31010-31012)",
	} {
		kept := bytes.Replace(res.Output, []byte(edit[0]), []byte(edit[1]), 1)
		if _, err := Inject([]Input{{Name: "kept", Data: kept}}, Options{Image: "site:1"}); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v\nwant %q", err, want)
		}
	}
	bad := bytes.Replace(res.Output, []byte(`avsidecar.io/listen-port-base: "31020"`), []byte(`avsidecar.io/listen-port-base: "x"`), 1)
	if _, err := Inject([]Input{{Name: "bad", Data: bad}}, Options{Image: "site:1"}); err == nil || !strings.Contains(err.Error(), `annotation avsidecar.io/listen-port-base: "x" is not a port number`) {
		t.Errorf("a bad annotation: %v", err)
	}
}

// TestInjectWarnings: each warning, with the workload it is about.
func TestInjectWarnings(t *testing.T) {
	bare := string(read(t, bareNginx).Data)
	hostNet := strings.Replace(bare, "      containers:\n", "      hostNetwork: true\n      containers:\n", 1)
	nonRoot := strings.Replace(bare, "      containers:\n", "      securityContext:\n        runAsNonRoot: true\n      containers:\n", 1)
	ns := "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n  labels:\n    pod-security.kubernetes.io/enforce: restricted\n"
	inShop := strings.Replace(bare, "  name: nginx\n  labels:", "  name: nginx\n  namespace: shop\n  labels:", 1)
	rolling := strings.Replace(string(read(t, "testdata/deployment.yaml").Data), "  strategy:\n    type: Recreate\n", "", 1)
	for _, tc := range []struct{ name, in, want string }{
		{"hostNetwork", hostNet, "(StatefulSet nginx): hostNetwork: true: the sidecar's ports (9180, 2222, 31000-31001) bind on the node itself"},
		{"runAsNonRoot", nonRoot, "(StatefulSet nginx): the pod runs as non-root (runAsNonRoot: true), as the restricted Pod Security level asks"},
		{"a restricted namespace", ns + "---\n" + inShop, "(StatefulSet nginx): the namespace enforces the restricted Pod Security level: the sidecar runs as root"},
		{"rolling update", rolling, `(Deployment wiki): strategy RollingUpdate (the default): during a rollout the new pod starts before the old one stops, so two pods run the Avamar client "wiki" at once`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := run(t, Options{Image: "site:1"}, Input{Name: "app.yaml", Data: []byte(tc.in)})
			if len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], tc.want) {
				t.Errorf("warnings %q, want one with %q", res.Warnings, tc.want)
			}
		})
	}
	if res := run(t, Options{Image: "site:1"}, read(t, bareNginx)); len(res.Warnings) != 0 {
		t.Errorf("the bare example: warnings %q", res.Warnings)
	}
}

// TestInjectNamesEveryProblem: several bad documents are all named, each
// on its line, and nothing is written.
func TestInjectNamesEveryProblem(t *testing.T) {
	bare := string(read(t, bareNginx).Data)
	bad1 := strings.Replace(bare, "containers:", "contaners:", 1)
	bad2 := strings.Replace(strings.Replace(bare, "name: nginx\n  labels", "name: web\n  labels", 1), "replicas: 2", "replicas: two", 1)
	res, err := Inject([]Input{{Name: "a.yaml", Data: []byte(bad1)}, {Name: "b.yaml", Data: []byte("kind: [\n")}, {Name: "c.yaml", Data: []byte(bad2)}}, Options{Image: "site:1"})
	var p Problems
	if !errors.As(err, &p) || len(p) != 3 || res.Output != nil {
		t.Fatalf("error %v (%d problems), output %d bytes", err, len(p), len(res.Output))
	}
	for i, want := range []string{`a.yaml, document 1 (StatefulSet nginx): unknown field "spec.template.spec.contaners"`, "b.yaml, document 1: not valid YAML", "c.yaml, document 1 (StatefulSet web): json: cannot unmarshal string"} {
		if !strings.HasPrefix(p[i], want) {
			t.Errorf("problem %d: %q, want %q", i, p[i], want)
		}
	}
}

// TestUninject: the sidecar out, the grace period inject raised given
// back, the avagent Services and inject's ConfigMap left out with a note
// saying how to delete them; a workload without the sidecar passes.
func TestUninject(t *testing.T) {
	short := strings.Replace(string(read(t, bareNginx).Data), "      containers:\n", "      terminationGracePeriodSeconds: 10\n      containers:\n", 1)
	in := []Input{{Name: "nginx", Data: []byte(short)}, read(t, "testdata/deployment.yaml")}
	res := run(t, Options{Image: "site:1", Server: "mcs"}, in[0])
	if !hasLine(res.Notes, "terminationGracePeriodSeconds 10 raised to 30") {
		t.Errorf("notes %q", res.Notes)
	}
	back, err := Uninject([]Input{{Name: "injected", Data: res.Output}, in[1]}, UninjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(canonical(t, in...), canonical(t, Input{Name: "back", Data: back.Output})); diff != "" {
		t.Errorf("(-original +uninjected):\n%s", diff)
	}
	for _, want := range []string{"StatefulSet nginx: sidecar taken out", "left out of the output: configmap/avamar, service/nginx-0-avagent, service/nginx-1-avagent; kubectl apply does not delete them: kubectl delete configmap/avamar service/nginx-0-avagent service/nginx-1-avagent"} {
		if !hasLine(back.Notes, want) {
			t.Errorf("no note %q in %q", want, back.Notes)
		}
	}
	// --only: the other workload keeps its sidecar, and the namespace's
	// ConfigMap with it.
	two := run(t, Options{Image: "site:1", Server: "mcs"}, in...)
	back, err = Uninject([]Input{{Name: "two", Data: two.Output}}, UninjectOptions{Only: []string{"deploy/wiki"}})
	if err != nil {
		t.Fatal(err)
	}
	got := canonical(t, Input{Name: "back", Data: back.Output})
	if _, ok := got["ConfigMap//avamar"]; !ok || !strings.Contains(got["StatefulSet//nginx"], "name: avamar\n") || strings.Contains(got["Deployment//wiki"], "avamar-no-token") {
		t.Errorf("--only deploy/wiki: %v", got)
	}
	for _, bad := range []UninjectOptions{{Only: []string{"sts/nope"}}, {Only: []string{"pod/x"}}} {
		if _, err := Uninject([]Input{{Name: "two", Data: two.Output}}, bad); err == nil || !errors.Is(err, ErrInput) {
			t.Errorf("--only %v: %v", bad.Only, err)
		}
	}
	// What never had the sidecar passes through.
	plain := Input{Name: "svc", Data: []byte("apiVersion: v1\nkind: Service\nmetadata:\n  name: x\n")}
	if back, err := Uninject([]Input{plain}, UninjectOptions{}); err != nil || !bytes.Equal(back.Output, plain.Data) || !hasLine(back.Notes, "nothing to uninject") {
		t.Errorf("nothing to uninject: %v %q", err, back.Notes)
	}
}
