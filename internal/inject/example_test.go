package inject

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

// The example's files, and the bare application they add the sidecar to.
const (
	exampleDir = "../../examples/nginx"
	bareNginx  = "../../examples/kustomize/nginx/statefulset.yaml"
)

// exampleOptions are the options that make examples/nginx.
var exampleOptions = Options{Image: "registry.example.com/avsidecar-site:7.5.101", Server: "avamar.example.com"}

// pendingInExample are the changes inject makes that examples/nginx has
// not taken yet, each applied to the example's StatefulSet before the two
// are compared. When the example takes one, delete its entry here (the
// test fails until then, so that the list cannot go stale).
var pendingInExample = []struct {
	what  string
	apply func(sidecar *corev1.Container) bool
}{}

// TestInjectMakesTheExample is the one place that holds inject and
// examples/nginx together: injecting the bare nginx StatefulSet with the
// example's image and server gives the example's StatefulSet, its avagent
// Services and its ConfigMap, field for field. When the example changes,
// change inject or pendingInExample with it.
func TestInjectMakesTheExample(t *testing.T) {
	bare, err := os.ReadFile(bareNginx)
	if err != nil {
		t.Fatal(err)
	}
	res, err := Inject([]Input{{Name: bareNginx, Data: bare}}, exampleOptions)
	if err != nil {
		t.Fatal(err)
	}
	got := objects(t, Input{Name: "inject output", Data: res.Output})

	var example []document
	for _, f := range []string{"configmap.yaml", "statefulset.yaml", "service.yaml"} {
		b, err := os.ReadFile(filepath.Join(exampleDir, f))
		if err != nil {
			t.Fatal(err)
		}
		d, err := decode(Input{Name: f, Data: b})
		if err != nil {
			t.Fatal(err)
		}
		example = append(example, d...)
	}
	want := map[string]string{}
	for _, d := range example {
		switch o := d.obj.(type) {
		case *corev1.Service:
			if o.Spec.ClusterIP == corev1.ClusterIPNone {
				continue // the application's governing Service, not the sidecar's
			}
		case *appsv1.StatefulSet:
			i := slices.IndexFunc(o.Spec.Template.Spec.Containers, isSidecar)
			if i < 0 {
				t.Fatalf("%s: no container %q", d.where, ContainerName)
			}
			for _, p := range pendingInExample {
				if !p.apply(&o.Spec.Template.Spec.Containers[i]) {
					t.Errorf("examples/nginx has taken this change: delete it from pendingInExample: %s", p.what)
				}
			}
		}
		want[key(d)] = encoded(t, d.obj)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("inject of %s is not examples/nginx (-example +inject):\n%s", bareNginx, diff)
	}
}

// objects decodes a manifest into kind/name -> the object as encode writes
// it, so that two manifests compare field by field whatever their layout.
func objects(t *testing.T, in Input) map[string]string {
	t.Helper()
	docs, err := decode(in)
	if err != nil {
		t.Fatalf("%s does not decode: %v", in.Name, err)
	}
	out := map[string]string{}
	for _, d := range docs {
		out[key(d)] = encoded(t, d.obj)
	}
	return out
}

func key(d document) string { return d.gvk + " " + d.ns + "/" + d.name }

func encoded(t *testing.T, obj any) string {
	t.Helper()
	b, err := encode(obj)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
