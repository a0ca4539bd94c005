package main

import (
	"os/exec"
	"strings"
	"testing"
)

// heavyDeps are the libraries PID 1 must never link: avsidecar runs in every
// backed-up pod, and the operator's tools that need them (inject, fleet
// status) live in cmd/kubectl-avamar.
var heavyDeps = []string{
	"k8s.io/",
	"sigs.k8s.io/",
	"helm.sh/",
	"github.com/fxamacker/cbor",
	"github.com/json-iterator/go",
}

// TestLinksNoKubernetesLibrary fails when a change brings a Kubernetes
// library (or one of its codecs) back into the avsidecar binary.
func TestLinksNoKubernetesLibrary(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	var bad []string
	for _, pkg := range strings.Fields(string(out)) {
		for _, h := range heavyDeps {
			if strings.HasPrefix(pkg, h) {
				bad = append(bad, pkg)
			}
		}
	}
	if len(bad) > 0 {
		t.Errorf("avsidecar links %d packages it must not (operator tools belong in cmd/kubectl-avamar):\n%s", len(bad), strings.Join(bad, "\n"))
	}
}
