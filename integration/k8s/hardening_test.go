package k8s

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/avsidecar/avsidecar/internal/testkit"
)

// podSecurityLevel is the Pod Security Standard examples/nginx meets, as
// its README says: the namespaces of the test enforce it, so the real
// admission plugin of the API server judges every pod.
const podSecurityLevel = "baseline"

// enforce labels a namespace with a Pod Security level to enforce.
func (c *cluster) enforce(ns, level string) {
	c.t.Helper()
	c.must("label", "namespace", ns, "--overwrite",
		"pod-security.kubernetes.io/enforce="+level, "pod-security.kubernetes.io/enforce-version=latest")
}

// sidecarStatus is what the test reads of /v1/status.
type sidecarStatus struct {
	Client struct {
		VarDir  string `json:"var_dir"`
		FoundBy string `json:"found_by"`
	} `json:"client"`
	Agent struct {
		Restarts int `json:"restarts"`
	} `json:"agent"`
	Backup *struct {
		State        string    `json:"state"`
		Message      string    `json:"message"`
		LastBackup   time.Time `json:"last_backup"`
		BackupSource string    `json:"backup_source"`
	} `json:"backup"`
	Hooks *struct {
		Scripts     []string                `json:"scripts"`
		ConfigError string                  `json:"config_error"`
		Pre         []struct{ Name string } `json:"pre"`
		Hooks       map[string]uint64       `json:"hooks"`
	} `json:"hooks"`
	Faults map[string]string `json:"faults"`
}

// status reads a sidecar's /v1/status through a port-forward base URL.
func status(t *testing.T, web string) (sidecarStatus, string) {
	t.Helper()
	code, body := testkit.Get(web+"/v1/status", "")
	var st sidecarStatus
	if err := json.Unmarshal([]byte(body), &st); code != http.StatusOK || err != nil {
		t.Fatalf("/v1/status: %d %v %.300s", code, err, body)
	}
	return st, body
}

// restrictedRejects makes a Pod of the example's pod template in a
// namespace that enforces the next level up, restricted, and returns the
// admission plugin's refusal: what that level rejects and why.
func restrictedRejects(t *testing.T, c *cluster, sts appsv1.StatefulSet) string {
	t.Helper()
	ns := "nginx-restricted"
	c.namespace(ns)
	c.enforce(ns, "restricted")
	pod := corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: "nginx-0", Namespace: ns, Labels: sts.Spec.Template.Labels},
		Spec:       sts.Spec.Template.Spec,
	}
	// The claim's volume, as the StatefulSet controller adds it.
	for _, pvc := range sts.Spec.VolumeClaimTemplates {
		pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{Name: pvc.Name, VolumeSource: corev1.VolumeSource{
			PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: pvc.Name + "-nginx-0"}}})
	}
	b, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	out, err := c.kubectlIn(b, "create", "--dry-run=server", "-f", "-")
	c.must("delete", "namespace", ns, "--wait", "--timeout=2m")
	if err == nil {
		t.Fatalf("the restricted level admitted the example's pod: %s", out)
	}
	return err.Error()
}

// bareWeb is an application of the test's own, without the sidecar: an
// nginx StatefulSet with one volume, as an operator has it before
// `kubectl avamar inject`.
const bareWeb = `apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: web
  labels:
    app: web
spec:
  serviceName: web
  replicas: 1
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
        - name: web
          image: %s
          ports:
            - containerPort: 80
          volumeMounts:
            - name: data
              mountPath: /usr/share/nginx/html
  volumeClaimTemplates:
    - metadata:
        name: data
      spec:
        accessModes: ["ReadWriteOnce"]
        resources:
          requests:
            storage: 1Gi
`

// injected deploys bareWeb made by the real `kubectl avamar inject`, piped to
// kubectl apply as its usage says, in a namespace that enforces the
// example's Pod Security level, and proves that it runs, registers once
// and that the MCS reaches its agent at NODE_IP:port (the node it landed
// on) through the NodePort Service inject wrote.
func injected(t *testing.T, c *cluster, mcs *testkit.MCS, server, authorizedKeys, token, page string, imgs images) {
	bin := filepath.Join(t.TempDir(), "kubectl-avamar")
	if err := testkit.GoBuild(bin, "./cmd/kubectl-avamar"); err != nil {
		t.Fatal(err)
	}
	const base = 31100 // a block of its own: NodePorts are cluster-wide
	cmd := exec.Command(bin, "inject", "--image", imgs.site, "--server", server, "--listen-port-base", fmt.Sprint(base))
	cmd.Stdin = strings.NewReader(fmt.Sprintf(bareWeb, imgs.nginx))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	manifest, err := cmd.Output()
	if err != nil {
		t.Fatalf("kubectl avamar inject: %v\n%s", err, stderr.String())
	}
	t.Logf("kubectl avamar inject of a bare StatefulSet web: %d bytes of manifests; notes: %q", len(manifest), stderr.String())
	if err := os.WriteFile(filepath.Join(c.dir, "web-injected.yaml"), manifest, 0o644); err != nil {
		t.Fatal(err)
	}

	ns := "web-injected"
	c.namespace(ns)
	c.enforce(ns, podSecurityLevel)
	c.localVolume(ns, "web-0", page)
	c.must("create", "secret", "generic", "avsidecar", "-n", ns,
		"--from-file=authorized_keys="+authorizedKeys, "--from-literal=browse-token="+token)
	c.apply(ns, manifest)
	c.must("rollout", "status", "statefulset/web", "-n", ns, "--timeout=5m")
	p := c.waitPod(ns, "web-0", "", 3*time.Minute)
	cs, _ := containerStatus(p, "avamar")
	if p.Status.Phase != corev1.PodRunning || cs.State.Running == nil {
		t.Errorf("web-0: phase %s, avamar %+v", p.Status.Phase, cs.State)
	}
	ctx, cancel := contextTimeout(2 * time.Minute)
	defer cancel()
	if err := mcs.WaitReachable(ctx, "web-0"); err != nil {
		t.Fatal(err)
	}
	ip, port, _ := mcs.CallbackAddr("web-0")
	nodeIP := c.nodeOf(p).ip // the node it landed on
	svc := c.must("get", "service", "-n", ns, "web-0-avagent", "-o", "jsonpath={.spec.type} {.spec.ports[0].nodePort}")
	t.Logf("web-0 Running and Ready in a namespace enforcing %s; MCS: registered %d time(s), reached at %s:%d through Service web-0-avagent (%s)",
		podSecurityLevel, mcs.Count("web-0"), ip, port, svc)
	if n := mcs.Count("web-0"); n != 1 || ip != nodeIP || port != base || svc != fmt.Sprintf("NodePort %d", base) {
		t.Errorf("web-0: registered %d times, reached at %s:%d, Service %q; want once, at %s:%d through NodePort %d", n, ip, port, svc, nodeIP, base, base)
	}

	// A bad setting: the sidecar exits 2, and with terminationMessagePolicy
	// FallbackToLogsOnError the pod's status (what kubectl describe shows)
	// says why, from the end of its log.
	c.must("patch", "configmap", "avamar", "-n", ns, "--type=merge", "-p", `{"data":{"domain":"clients"}}`)
	c.must("delete", "pod", "web-0", "-n", ns, "--wait")
	var term *corev1.ContainerStateTerminated
	c.waitFor("web-0's sidecar to exit on the bad domain", 2*time.Minute, func() error {
		p, ok := c.pod(ns, "web-0")
		if !ok {
			return fmt.Errorf("no pod web-0")
		}
		cs, _ := containerStatus(p, "avamar")
		switch {
		case cs.LastTerminationState.Terminated != nil:
			term = cs.LastTerminationState.Terminated
		case cs.State.Terminated != nil:
			term = cs.State.Terminated
		default:
			return fmt.Errorf("avamar %+v", cs.State)
		}
		return nil
	})
	const want = `AVAMAR_DOMAIN "clients" must be an absolute Avamar domain`
	t.Logf("web-0's sidecar with domain \"clients\": exit code %d, reason %s, termination message (%d bytes) ends %q",
		term.ExitCode, term.Reason, len(term.Message), tailOf(term.Message, 200))
	if term.ExitCode != 2 || !strings.Contains(term.Message, want) {
		t.Errorf("the termination message does not say %q (exit code %d)", want, term.ExitCode)
	}
	c.must("delete", "namespace", ns, "--wait", "--timeout=3m")
}

// tailOf is the last n bytes of s.
func tailOf(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[len(s)-n:]
}
