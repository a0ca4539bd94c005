package examples

import (
	"bytes"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/avsidecar/avsidecar/internal/inject"
	"github.com/avsidecar/avsidecar/internal/testkit"
)

// kustomize is the kustomize the tests render with, a current release run
// from the Go module proxy (Debian's kubectl is too old for components).
const kustomize = "sigs.k8s.io/kustomize/kustomize/v5@v5.8.1"

var kustomizeOK = sync.OnceValues(func() ([]byte, error) {
	return exec.Command("go", "run", kustomize, "version").CombinedOutput()
})

// kustomizeBuild renders a kustomization directory. Without the module
// proxy (a laptop offline) the test skips; in CI it fails.
func kustomizeBuild(t *testing.T, dir string) []byte {
	t.Helper()
	out, err := kustomizeOK()
	testkit.Need(t, err == nil, "kustomize through `go run "+kustomize+"` ("+strings.TrimSpace(string(out))+")")
	var stdout, stderr bytes.Buffer
	cmd := exec.Command("go", "run", kustomize, "build", dir)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("kustomize build %s: %v\n%s", dir, err, stderr.String())
	}
	return stdout.Bytes()
}

// exampleInject is what examples/nginx is made with.
var exampleInject = inject.Options{Image: "registry.example.com/avsidecar-site:7.5.101", Server: "avamar.example.com"}

func injectFiles(t *testing.T, o inject.Options, files ...string) []byte {
	t.Helper()
	var in []inject.Input
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		in = append(in, inject.Input{Name: f, Data: b})
	}
	res, err := inject.Inject(in, o)
	if err != nil {
		t.Fatal(err)
	}
	return res.Output
}

// theSecret is the nginx example's Secret, which neither inject nor
// kustomize writes (the operator creates it from files).
func theSecret(t *testing.T) []object {
	t.Helper()
	objs, err := loadDir("nginx")
	if err != nil {
		t.Fatal(err)
	}
	return slices.DeleteFunc(objs, func(o object) bool { return o.kind != "Secret" })
}

// normalized encodes each object by kind/name with the sidecar's env
// sorted by name: a strategic merge patch moves the variables it sets to
// the front, and where no value refers to another ($(VAR)) their order
// means nothing.
func normalized(t *testing.T, objs []object) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, o := range objs {
		if sts, ok := o.typed.(*appsv1.StatefulSet); ok {
			for i := range sts.Spec.Template.Spec.Containers {
				c := &sts.Spec.Template.Spec.Containers[i]
				for _, e := range c.Env {
					if strings.Contains(e.Value, "$(") {
						t.Fatalf("container %s: %s refers to another variable: its order matters, compare it as it is", c.Name, e.Name)
					}
				}
				slices.SortFunc(c.Env, func(a, b corev1.EnvVar) int { return strings.Compare(a.Name, b.Name) })
			}
		}
		b, err := yaml.Marshal(o.typed)
		if err != nil {
			t.Fatal(err)
		}
		out[o.kind+"/"+o.name] = string(b)
	}
	return out
}

// TestKustomizeMakesWhatInjectMakes holds the kustomize component and
// inject together: the nginx overlay (the bare StatefulSet, the component,
// nginx's own mounts, Services and ConfigMap) renders what inject makes of
// the same bare StatefulSet and Service. inject and the example are held
// together by internal/inject's TestInjectMakesTheExample.
func TestKustomizeMakesWhatInjectMakes(t *testing.T) {
	rendered, err := decodeFile("kustomize build", kustomizeBuild(t, "kustomize/nginx"))
	if err != nil {
		t.Fatal(err)
	}
	injected, err := decodeFile("inject", injectFiles(t, exampleInject, "kustomize/nginx/statefulset.yaml", "kustomize/nginx/service.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(normalized(t, injected), normalized(t, rendered)); diff != "" {
		t.Errorf("kustomize build kustomize/nginx differs from kubectl avamar inject (-inject +kustomize):\n%s", diff)
	}
	// The sidecar comes after nginx, so that kubectl logs and exec still
	// default to nginx.
	for _, o := range rendered {
		if sts, ok := o.typed.(*appsv1.StatefulSet); ok {
			if cs := sts.Spec.Template.Spec.Containers; len(cs) != 2 || cs[0].Name != "nginx" {
				t.Errorf("containers %v: nginx must stay first", cs)
			}
		}
	}
}

// TestMadeManifestsAreDeployable runs the manifest checker on what inject
// and kustomize make, with the Secret the operator creates: deployable as
// far as a static reading tells, per-replica ports included; and a replica
// without its Service is caught.
func TestMadeManifestsAreDeployable(t *testing.T) {
	cases := map[string][]byte{
		"inject of the bare nginx":  injectFiles(t, exampleInject, "kustomize/nginx/statefulset.yaml", "kustomize/nginx/service.yaml"),
		"inject of a Deployment":    injectFiles(t, inject.Options{Image: "site:1", Server: "mcs.example.com"}, "../internal/inject/testdata/deployment.yaml"),
		"kustomize build of nginx":  kustomizeBuild(t, "kustomize/nginx"),
		"inject of the example too": injectFiles(t, exampleInject, "nginx/statefulset.yaml", "nginx/service.yaml", "nginx/configmap.yaml"),
	}
	for name, manifest := range cases {
		objs, err := decodeFile(name, manifest)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if p := check(append(objs, theSecret(t)...)); len(p) > 0 {
			t.Errorf("%s has %d problems:\n%s", name, len(p), render(p))
		}
	}
	scaled := bytes.Replace(cases["kustomize build of nginx"], []byte("replicas: 2"), []byte("replicas: 3"), 1)
	objs, err := decodeFile("scaled", scaled)
	if err != nil {
		t.Fatal(err)
	}
	checkErr(t, render(check(append(objs, theSecret(t)...))), "pod nginx-2: no NodePort Service publishes avagent's listen port 31002")
}
