package inject

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// publicDir holds manifests published by others (SOURCES.md there).
const publicDir = "testdata/public"

// publicCases are the real manifests inject is tried on, and what it must
// make of each: the workloads it injects, the documents it passes
// through with why, and the warnings.
var publicCases = []struct {
	file     string
	injected []string          // Kind/name
	passed   map[string]string // Kind/name -> why, in part
	warnings []string          // in part
}{
	{file: "k8s-examples_databases_cassandra_cassandra-statefulset.yaml", injected: []string{"StatefulSet/cassandra"},
		passed: map[string]string{"StorageClass/fast": "storage.k8s.io/v1/StorageClass is not a workload"}},
	{file: "k8s-examples_databases_cassandra_cassandra-service.yaml",
		passed: map[string]string{"Service/cassandra": "not a workload"}},
	{file: "k8s-examples_web_guestbook_all-in-one_guestbook-all-in-one.yaml", passed: map[string]string{
		"Deployment/redis-master": "no persistent volume", "Deployment/redis-replica": "no persistent volume",
		"Deployment/frontend": "no persistent volume", "Service/frontend": "not a workload"}},
	{file: "k8s-examples_cockroachdb_cockroachdb-statefulset.yaml", injected: []string{"StatefulSet/cockroachdb"},
		passed: map[string]string{"PodDisruptionBudget/cockroachdb-budget": "policy/v1beta1/PodDisruptionBudget is not a workload",
			"Service/cockroachdb-public": "not a workload"}},
	{file: "k8s-examples_databases_mysql-cinder-pd_mysql.yaml",
		passed: map[string]string{"Pod/mysql": "inject the workload that makes the pod"}},
	{file: "k8s-examples_storage_minio_minio-distributed-statefulset.yaml", injected: []string{"StatefulSet/minio"}},
	{file: "k8s-examples_storage_minio_minio-standalone-deployment.yaml", injected: []string{"Deployment/minio-deployment"}},
	{file: "k8s-examples_volumes_nfs_nfs-server-deployment.yaml", injected: []string{"Deployment/nfs-server"},
		warnings: []string{`strategy RollingUpdate (the default): during a rollout the new pod starts before the old one stops, so two pods run the Avamar client "nfs-server" at once`}},
	{file: "k8s-website-mysql", injected: []string{"StatefulSet/mysql"},
		passed: map[string]string{"ConfigMap/mysql": "not a workload", "Service/mysql-read": "not a workload"}},
	{file: "k8s-website_wordpress_mysql-deployment.yaml", injected: []string{"Deployment/wordpress-mysql"},
		passed: map[string]string{"PersistentVolumeClaim/mysql-pv-claim": "not a workload"}},
	{file: "k8s-website_zookeeper.yaml", injected: []string{"StatefulSet/zk"},
		passed: map[string]string{"PodDisruptionBudget/zk-pdb": "policy/v1/PodDisruptionBudget is not a workload"}},
	{file: "helm-cockroachdb-21.0.1-template.yaml", injected: []string{"StatefulSet/db-cockroachdb"},
		passed: map[string]string{"Job/db-cockroachdb-init": "a Job is not backed up", "CronJob/db-cockroachdb-rotate-self-signer": "a CronJob is not backed up",
			"Pod/db-cockroachdb-test": "inject the workload that makes the pod", "ClusterRole/db-cockroachdb-default": "is not a workload"},
		warnings: []string{"the pod runs as non-root (runAsNonRoot: true), as the restricted Pod Security level asks: the sidecar runs as root with the capabilities CHOWN, DAC_OVERRIDE, FOWNER and FSETID"}},
}

func readPublic(t *testing.T, name string) []Input {
	t.Helper()
	in, err := Read([]string{filepath.Join(publicDir, name)}, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	return in
}

// canonical is a manifest as kind/namespace/name -> the object: the
// decoded kinds as encode writes them, the others as sorted JSON, so that
// two manifests compare by content whatever their layout and comments.
func canonical(t *testing.T, in ...Input) map[string]string {
	t.Helper()
	docs, err := decodeAll(in)
	if err != nil {
		t.Fatalf("does not decode: %v", err)
	}
	out := map[string]string{}
	for _, d := range docs {
		k := d.kind + "/" + d.ns + "/" + d.name
		if _, dup := out[k]; dup {
			t.Fatalf("%s twice", k)
		}
		if d.obj != nil {
			out[k] = encoded(t, d.obj)
			continue
		}
		js, err := yaml.YAMLToJSON(d.raw)
		if err != nil {
			t.Fatal(err)
		}
		var v any
		if err := json.Unmarshal(js, &v); err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(v)
		out[k] = string(b)
	}
	return out
}

// TestPublicManifests: on every real manifest, inject injects the
// workloads that can take the sidecar and passes the rest through with
// why, warns where it must, is idempotent byte for byte, writes
// manifests that decode strictly with every NodePort once, and uninject
// gives back the original, object for object.
func TestPublicManifests(t *testing.T) {
	o := Options{Image: "registry.example.com/avsidecar-site:7.5.101", Server: "avamar.example.com"}
	for _, tc := range publicCases {
		t.Run(tc.file, func(t *testing.T) {
			in := readPublic(t, tc.file)
			res := run(t, o, in...)
			var injected []string
			for _, d := range docsOf(t, res.Output) {
				if w, ok := asWorkload(&d); ok && hasSidecar(w) {
					injected = append(injected, w.kind+"/"+w.name)
					if w.annotations[AnnotationPortBase] == "" {
						t.Errorf("%s %s: no annotation %s", w.kind, w.name, AnnotationPortBase)
					}
				}
			}
			if diff := cmp.Diff(tc.injected, injected); diff != "" {
				t.Errorf("injected (-want +got):\n%s", diff)
			}
			for obj, why := range tc.passed {
				kind, name, _ := strings.Cut(obj, "/")
				if !hasLine(res.Notes, fmt.Sprintf("(%s %s): passed through: ", kind, name)) || !hasLine(res.Notes, why) {
					t.Errorf("no note that %s passed through because %q; notes:\n%s", obj, why, strings.Join(res.Notes, "\n"))
				}
			}
			for _, w := range tc.warnings {
				if !hasLine(res.Warnings, w) {
					t.Errorf("no warning %q; warnings:\n%s", w, strings.Join(res.Warnings, "\n"))
				}
			}
			if len(tc.warnings) == 0 && len(res.Warnings) > 0 {
				t.Errorf("warnings %q", res.Warnings)
			}
			if len(tc.injected) == 0 {
				if !hasLine(res.Notes, "nothing injected") || !bytes.Equal(res.Output, concat(in)) {
					t.Errorf("nothing to inject: the output must be the input, with a note")
				}
			}
			nodePortsOnce(t, res.Output)

			again := run(t, o, Input{Name: "output", Data: res.Output})
			if diff := cmp.Diff(string(res.Output), string(again.Output)); diff != "" {
				t.Errorf("injecting twice differs from once (-once +twice):\n%s", diff)
			}

			back, err := Uninject([]Input{{Name: "injected", Data: res.Output}}, UninjectOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(canonical(t, in...), canonical(t, Input{Name: "uninjected", Data: back.Output})); diff != "" {
				t.Errorf("uninject did not give back the original (-original +uninjected):\n%s", diff)
			}
		})
	}
}

// concat is the documents of in as inject passes them through.
func concat(in []Input) []byte {
	var b bytes.Buffer
	for _, i := range in {
		docs, _ := decode(i)
		for _, d := range docs {
			if b.Len() > 0 {
				b.WriteString("---\n")
			}
			b.Write(bytes.TrimLeft(d.raw, "\n"))
		}
	}
	return b.Bytes()
}

// nodePortsOnce fails when two Services of a manifest take one NodePort,
// or an avagent Service's port differs from its NodePort.
func nodePortsOnce(t *testing.T, manifest []byte) {
	t.Helper()
	seen := map[int32]string{}
	for _, d := range docsOf(t, manifest) {
		s, ok := d.obj.(*corev1.Service)
		if !ok {
			continue
		}
		for _, p := range s.Spec.Ports {
			if p.NodePort == 0 {
				continue
			}
			if other, dup := seen[p.NodePort]; dup {
				t.Errorf("NodePort %d is taken by Services %s and %s", p.NodePort, other, s.Name)
			}
			seen[p.NodePort] = s.Name
			if strings.HasSuffix(s.Name, "-avagent") && (p.Port != p.NodePort || p.TargetPort.IntVal != p.Port) {
				t.Errorf("Service %s: port %d, targetPort %v, nodePort %d: the same number, where avagent listens", s.Name, p.Port, p.TargetPort, p.NodePort)
			}
		}
	}
}

// TestPublicManifestsAtOnce: every real manifest in one run (several -f,
// a directory among them): each workload gets its own block of NodePorts,
// in steps of 10 from the base, and a second run keeps every block.
func TestPublicManifestsAtOnce(t *testing.T) {
	var in []Input
	for _, tc := range publicCases {
		if !strings.HasPrefix(tc.file, "helm-") { // a chart of its own release
			in = append(in, readPublic(t, tc.file)...)
		}
	}
	o := Options{Image: "site:1"}
	res := run(t, o, in...)
	nodePortsOnce(t, res.Output)
	bases := map[string]string{}
	for _, d := range docsOf(t, res.Output) {
		if w, ok := asWorkload(&d); ok && hasSidecar(w) {
			bases[w.name] = w.annotations[AnnotationPortBase]
		}
	}
	want := map[string]string{"cassandra": "31000", "cockroachdb": "31010", "minio": "31020", "minio-deployment": "31030",
		"nfs-server": "31040", "mysql": "31050", "wordpress-mysql": "31060", "zk": "31070"}
	if diff := cmp.Diff(want, bases); diff != "" {
		t.Errorf("port bases (-want +got):\n%s", diff)
	}
	if !hasLine(res.Notes, "(StatefulSet cockroachdb): avagent ports 31010-31012, the NodePorts of Services cockroachdb-0-avagent to cockroachdb-2-avagent (new)") {
		t.Errorf("notes:\n%s", strings.Join(res.Notes, "\n"))
	}
	// Again, with the workloads in another order and another base: each
	// keeps its block.
	docs := bytes.Split(res.Output, []byte("---\n"))
	slices.Reverse(docs)
	again := run(t, Options{Image: "site:1", ListenPortBase: 30000}, Input{Name: "reversed", Data: bytes.Join(docs, []byte("---\n"))})
	if diff := cmp.Diff(canonical(t, Input{Name: "once", Data: res.Output}), canonical(t, Input{Name: "again", Data: again.Output})); diff != "" {
		t.Errorf("a second run moved ports (-first +second):\n%s", diff)
	}
	if !hasLine(again.Notes, "(StatefulSet cockroachdb): avagent ports 31010-31012, the NodePorts of Services cockroachdb-0-avagent to cockroachdb-2-avagent (kept from its annotation avsidecar.io/listen-port-base)") {
		t.Errorf("notes:\n%s", strings.Join(again.Notes, "\n"))
	}
}

// TestHelmPostRender: the chart's `helm template` output, given on stdin
// as helm gives it to a post-renderer, comes out as what helm itself
// printed with the plugin of cmd/kubectl-avamar/helm: object for object
// (helm re-sorts the documents and adds "# Source:" comments).
func TestHelmPostRender(t *testing.T) {
	in := readPublic(t, "helm-cockroachdb-21.0.1-template.yaml")
	res := run(t, Options{Image: "registry.example.com/avsidecar-site:7.5.101", Server: "avamar.example.com"}, Input{Name: "stdin", Data: in[0].Data})
	helm := readPublic(t, "helm-cockroachdb-21.0.1-post-rendered.yaml")
	got, want := canonical(t, Input{Name: "inject", Data: res.Output}), canonical(t, helm...)
	// What helm changes by itself, whatever the post-renderer (here cat):
	// inject passes it through as the chart made it.
	template, cat := canonical(t, in...), canonical(t, readPublic(t, "helm-cockroachdb-21.0.1-post-rendered-by-cat.yaml")...)
	for k, v := range template {
		if cat[k] == v {
			continue
		}
		if got[k] != v || want[k] != cat[k] {
			t.Errorf("%s: helm rewrites it, inject must pass it through", k)
		}
		t.Logf("%s: rewritten by helm itself, passed through by inject", k)
		delete(got, k)
		delete(want, k)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("inject of the rendered chart is not what helm post-rendered (-helm +inject):\n%s", diff)
	}
	var sts *appsv1.StatefulSet
	for _, d := range docsOf(t, res.Output) {
		if s, ok := d.obj.(*appsv1.StatefulSet); ok {
			sts = s
		}
	}
	if sts == nil || len(sts.Spec.Template.Spec.Containers) != 2 {
		t.Fatalf("the chart's StatefulSet was not injected")
	}
	keys := make([]string, 0, len(got))
	for k := range got {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	t.Logf("helm post-render: %d objects: %s", len(keys), strings.Join(keys, ", "))
}
