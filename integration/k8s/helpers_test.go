package k8s

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/avsidecar/avsidecar/internal/testkit"
)

// nginxContainerfile is an nginx image from the local Debian base, with
// Debian's nginx-light serving /usr/share/nginx/html as the official
// nginx image the example names does, and logging to the container.
const nginxContainerfile = `FROM %s
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nginx-light \
 && rm -rf /var/lib/apt/lists/* \
 && ln -sf /dev/stdout /var/log/nginx/access.log \
 && ln -sf /dev/stderr /var/log/nginx/error.log \
 && sed -i 's#root /var/www/html;#root /usr/share/nginx/html;#' /etc/nginx/sites-available/default \
 && grep -q 'root /usr/share/nginx/html;' /etc/nginx/sites-available/default
STOPSIGNAL SIGQUIT
CMD ["nginx", "-g", "daemon off;"]
`

// images are the images the cluster runs, saved into one archive for
// containerd.
type images struct {
	archive string
	site    string
	nginx   string
}

// buildImages builds, with podman, the sandbox image from ./pause, the
// product and site images as examples/nginx/README.md steps 1 and 2 do
// (with the kit's RPM), and the nginx image, and saves them in one archive.
func buildImages(t *testing.T, dir string) images {
	t.Helper()
	start := time.Now()
	pm := testkit.NewPodman(t)
	base := pm.BaseImage(testkit.PodmanBaseImage)
	nginx := pm.CachedImage("localhost/avsk8s-nginx", base, fmt.Sprintf(nginxContainerfile, base), map[string][]byte{})
	product, _ := pm.ProductImage(base)
	site, _ := pm.SiteImage(product, "localhost/avsidecar-site:"+pm.ID, testkit.RPMOptions{})

	pauseDir := t.TempDir()
	if err := testkit.GoBuild(filepath.Join(pauseDir, "pause"), "./integration/k8s/pause"); err != nil {
		t.Fatal(err)
	}
	cf := filepath.Join(pauseDir, "Containerfile")
	if err := os.WriteFile(cf, []byte("FROM scratch\nCOPY pause /pause\nENTRYPOINT [\"/pause\"]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	pause := pm.Build(pauseImage, cf, pauseDir)

	archive := filepath.Join(dir, "images.tar")
	pm.Run("save", "-q", "-m", "--format", "docker-archive", "-o", archive, pause, site, nginx)
	t.Logf("bench: images built and saved in %s (site %s, nginx %s)", time.Since(start).Round(100*time.Millisecond), site, nginx)
	return images{archive: archive, site: site, nginx: nginx}
}

// exampleFile reads a file of examples/nginx.
func exampleFile(t *testing.T, name string) string {
	t.Helper()
	root, err := testkit.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(root, "examples", "nginx", name)
}

// decodeFile decodes the single-document YAML file path strictly into v.
func decodeFile(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// siteStatefulSet is the example's StatefulSet with the images a user
// sets: the site image for the avamar container (a container or, in the
// native-sidecar variant, an init container) and the nginx image.
func siteStatefulSet(t *testing.T, sts *appsv1.StatefulSet, imgs images) []byte {
	t.Helper()
	set := func(cts []corev1.Container) {
		for i := range cts {
			switch cts[i].Name {
			case "avamar":
				cts[i].Image = imgs.site
			case "nginx":
				cts[i].Image = imgs.nginx
			}
		}
	}
	set(sts.Spec.Template.Spec.Containers)
	set(sts.Spec.Template.Spec.InitContainers)
	b, err := json.Marshal(sts)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// pod returns a pod of the namespace; ok is false when it does not exist.
func (c *cluster) pod(namespace, name string) (corev1.Pod, bool) {
	c.t.Helper()
	var p corev1.Pod
	out, err := c.kubectl("get", "pod", "-n", namespace, name, "-o", "json", "--ignore-not-found")
	if err != nil {
		c.t.Fatal(err)
	}
	if out == "" {
		return p, false
	}
	if err := json.Unmarshal([]byte(out), &p); err != nil {
		c.t.Fatal(err)
	}
	return p, true
}

// containerStatus is the status of the container name, regular or init.
func containerStatus(p corev1.Pod, name string) (corev1.ContainerStatus, bool) {
	for _, s := range append(append([]corev1.ContainerStatus{}, p.Status.ContainerStatuses...), p.Status.InitContainerStatuses...) {
		if s.Name == name {
			return s, true
		}
	}
	return corev1.ContainerStatus{}, false
}

// podReady is the pod's Ready condition.
func podReady(p corev1.Pod) bool {
	for _, cond := range p.Status.Conditions {
		if cond.Type == corev1.PodReady {
			return cond.Status == corev1.ConditionTrue
		}
	}
	return false
}

// waitPod waits for a pod named name, other than the one with uid
// notUID, to be Ready, and returns it.
func (c *cluster) waitPod(namespace, name, notUID string, timeout time.Duration) corev1.Pod {
	c.t.Helper()
	var p corev1.Pod
	c.waitFor("pod "+name+" Ready", timeout, func() error {
		var ok bool
		if p, ok = c.pod(namespace, name); !ok {
			return fmt.Errorf("no pod %s", name)
		}
		if string(p.UID) == notUID {
			return fmt.Errorf("still the old pod %s", notUID)
		}
		if !podReady(p) {
			return fmt.Errorf("not Ready: %+v", p.Status.Conditions)
		}
		return nil
	})
	return p
}

// namespace creates a namespace that teardown deletes, and waits for its
// default ServiceAccount, without which no pod is admitted.
func (c *cluster) namespace(name string) {
	c.t.Helper()
	c.apply("default", []byte(fmt.Sprintf(`{"apiVersion":"v1","kind":"Namespace","metadata":{"name":%q,"labels":{"avsk8s/test":"1"}}}`, name)))
	c.waitFor("the ServiceAccount default in "+name, time.Minute, func() error {
		_, err := c.kubectl("get", "serviceaccount", "default", "-n", name)
		return err
	})
}

// localVolume makes the PersistentVolume of one replica, as a cluster
// admin provides it, bound in advance to the StatefulSet's claim data-POD,
// with the site's page in html/. It is a hostPath volume on a directory of
// the host without node affinity: both nodes' kubelets run on the host's
// filesystem, so it stands in for network storage (NFS, a cloud disk that
// follows the pod) that a pod finds again on whichever node it lands.
func (c *cluster) localVolume(namespace, pod, page string) string {
	c.t.Helper()
	dir := filepath.Join(c.dir, "pv", namespace, pod)
	if err := os.MkdirAll(filepath.Join(dir, "html"), 0o755); err != nil {
		c.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "html", "index.html"), []byte(page), 0o644); err != nil {
		c.t.Fatal(err)
	}
	pv := map[string]any{
		"apiVersion": "v1", "kind": "PersistentVolume",
		"metadata": map[string]any{"name": namespace + "-data-" + pod},
		"spec": map[string]any{
			"capacity":                      map[string]string{"storage": "10Gi"},
			"accessModes":                   []string{"ReadWriteOnce"},
			"persistentVolumeReclaimPolicy": "Retain",
			"claimRef":                      map[string]string{"namespace": namespace, "name": "data-" + pod},
			"hostPath":                      map[string]string{"path": dir, "type": "Directory"},
		},
	}
	b, err := json.Marshal(pv)
	if err != nil {
		c.t.Fatal(err)
	}
	c.apply("default", b)
	return dir
}

// podWatch records every version of the pods of a namespace that the API
// server reports, from `kubectl get pods -w`, for claims about what
// happened between two moments (stop order, exit codes of deleted pods).
type podWatch struct {
	mu   sync.Mutex
	pods []corev1.Pod
	stop func()
}

// watchPods starts recording the pods of namespace.
func (c *cluster) watchPods(namespace string) *podWatch {
	c.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, filepath.Join(c.bin, "kubectl"), "get", "pods", "-n", namespace, "-w", "-o", "json", "--output-watch-events")
	cmd.Env = append(os.Environ(), "KUBECONFIG="+c.kubeconfig)
	out, err := cmd.StdoutPipe()
	if err != nil {
		c.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	w := &podWatch{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		dec := json.NewDecoder(out)
		for {
			var ev struct {
				Type   string
				Object corev1.Pod
			}
			if err := dec.Decode(&ev); err != nil {
				return
			}
			w.mu.Lock()
			w.pods = append(w.pods, ev.Object)
			w.mu.Unlock()
		}
	}()
	w.stop = func() {
		cancel()
		_ = cmd.Wait()
		<-done
	}
	c.t.Cleanup(w.stop)
	return w
}

// versions returns the recorded versions of the pod with uid, oldest
// first.
func (w *podWatch) versions(uid string) []corev1.Pod {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []corev1.Pod
	for _, p := range w.pods {
		if string(p.UID) == uid {
			out = append(out, p)
		}
	}
	return out
}

// stopOf is how a deleted pod's container ended, from the recorded
// versions of the pod: its exit code and how long after the deletion
// request it ended.
type stopOf struct {
	exitCode int32
	reason   string
	took     time.Duration
	grace    int64
}

func (w *podWatch) stopOf(uid, container string) (stopOf, error) {
	var s stopOf
	var requested, finished time.Time
	for _, p := range w.versions(uid) {
		if p.DeletionTimestamp != nil && p.DeletionGracePeriodSeconds != nil && requested.IsZero() {
			s.grace = *p.DeletionGracePeriodSeconds
			requested = p.DeletionTimestamp.Add(-time.Duration(s.grace) * time.Second)
		}
		if cs, ok := containerStatus(p, container); ok && cs.State.Terminated != nil {
			s.exitCode, s.reason = cs.State.Terminated.ExitCode, cs.State.Terminated.Reason
			finished = cs.State.Terminated.FinishedAt.Time
		}
	}
	if requested.IsZero() {
		return s, fmt.Errorf("pod %s: no deletion recorded", uid)
	}
	if finished.IsZero() {
		return s, fmt.Errorf("pod %s: no terminated state of %s recorded", uid, container)
	}
	s.took = finished.Sub(requested)
	return s, nil
}

// sshClient runs OpenSSH's ssh against a port-forwarded sidecar.
type sshClient struct {
	ssh        string
	knownHosts string
}

// run runs cmd as root@addr with the key; strict is StrictHostKeyChecking
// (accept-new the first time, yes after: the host key must not change).
// The alias names the pod in known_hosts whatever local port it has.
func (s sshClient) run(addr, alias, key, strict, cmd string) (string, error) {
	host, port, _ := strings.Cut(addr, ":")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, s.ssh, "-i", key, "-p", port,
		"-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR",
		"-o", "HostKeyAlias="+alias, "-o", "UserKnownHostsFile="+s.knownHosts,
		"-o", "StrictHostKeyChecking="+strict, "root@"+host, cmd).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ssh %s: %w\n%s", alias, err, out)
	}
	return string(out), nil
}

// sshKey makes an ed25519 key pair and returns the private key's path.
func sshKey(t *testing.T, keygen, dir, name string) string {
	t.Helper()
	key := filepath.Join(dir, name)
	if out, err := exec.Command(keygen, "-q", "-t", "ed25519", "-N", "", "-C", name+"@test", "-f", key).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	return key
}

// metric returns the value of the Prometheus sample whose name and labels
// (a subset, "k=v" each) match, from the text exposition; ok is false
// when there is none.
func metric(text, name string, labels ...string) (float64, bool) {
	sum, found := 0.0, false
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		lbl, value := "", ""
		if i := strings.LastIndexByte(line, ' '); i > 0 {
			lbl, value = line[:i], line[i+1:]
		}
		ok := true
		for _, l := range labels {
			k, v, _ := strings.Cut(l, "=")
			if !strings.Contains(lbl, k+`="`+v+`"`) {
				ok = false
			}
		}
		if !ok {
			continue
		}
		f, err := strconv.ParseFloat(value, 64)
		if err != nil {
			continue
		}
		sum, found = sum+f, true
	}
	return sum, found
}

// klogTime is the time of a klog line ("I0721 10:11:12.123456 ..."), in
// the current year.
var klogLine = regexp.MustCompile(`^[IWEF](\d{4} \d{2}:\d{2}:\d{2}\.\d{6})`)

// kubeletLines returns the kubelets' log lines that contain every one of
// the strings, with their klog times: both nodes', one after the other.
func (c *cluster) kubeletLines(contains ...string) []string {
	var b []byte
	for _, n := range c.nodes {
		l, err := os.ReadFile(filepath.Join(c.dir, "logs", "kubelet"+n.suffix+".log"))
		if err != nil {
			c.t.Fatal(err)
		}
		b = append(append(b, l...), '\n')
	}
	var out []string
	for _, line := range bytes.Split(b, []byte("\n")) {
		ok := true
		for _, s := range contains {
			if !bytes.Contains(line, []byte(s)) {
				ok = false
				break
			}
		}
		if ok && klogLine.Match(line) {
			out = append(out, string(line))
		}
	}
	return out
}

// contextTimeout is a context that ends after d.
func contextTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}

// yamlStrict decodes one YAML document strictly into v.
func yamlStrict(doc string, v any) error {
	return yaml.UnmarshalStrict([]byte(doc), v)
}

// nodeOf is the node a pod runs on, as the API server says.
func (c *cluster) nodeOf(p corev1.Pod) node {
	c.t.Helper()
	return c.nodeByName(p.Spec.NodeName)
}
