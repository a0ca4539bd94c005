package k8s

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/avsidecar/avsidecar/internal/testkit"
	"github.com/avsidecar/avsidecar/internal/testkit/avrest"
)

// pluginEnv is what the plugin's proof shares with TestNginxExample: the
// fake MCS and REST API on the host, the site's settings, the SSH key and
// browse token of the example, the images.
type pluginEnv struct {
	mcs            *testkit.MCS
	rest           *avrest.Server
	site           siteConfig
	authorizedKeys string
	token          string
	imgs           images
}

// publicManifests are the real manifests the proof deploys (internal/inject
// testdata/public, SOURCES.md there): the MySQL tutorial of kubernetes.io
// (a StatefulSet with two init containers, two containers and a
// volumeClaimTemplate, its ConfigMap and Services) as a directory, and
// WordPress's MySQL Deployment (a Deployment on a PersistentVolumeClaim,
// with its claim and Service).
var publicManifests = []string{"k8s-website-mysql", "k8s-website_wordpress_mysql-deployment.yaml"}

// pluginProof proves kubectl-avamar on a real cluster with real public
// manifests: inject's output applied as it is makes every pod Ready,
// registered once with the MCS, which calls each agent back at NODE_IP and
// the NodePort inject chose, with its browse root served; the application
// keeps its ServiceAccount token while the sidecar has none; `kubectl
// avamar status -A`, run by kubectl as a plugin, lists each pod with the
// values the MCS and the REST API know, and an unreachable one with why;
// uninject of `kubectl get -o yaml` applied brings the workloads back
// without the sidecar.
//
// No registry is reachable here, so the manifests' images cannot be
// pulled: localize rewrites each application container to the test's pause
// image and each init container to a shell that succeeds, drops the
// probes that would call the missing programs and the resource requests a
// test node cannot give, and scales the StatefulSet to 2. Everything else
// (containers, init containers, mounts, claims, Services) stays as
// published.
// buildPlugin builds kubectl-avamar from this tree, for the test.
func buildPlugin(t *testing.T) string {
	t.Helper()
	plugin := filepath.Join(t.TempDir(), "kubectl-avamar")
	if err := testkit.GoBuild(plugin, "./cmd/kubectl-avamar"); err != nil {
		t.Fatal(err)
	}
	return plugin
}

// kubectlAvamar runs `kubectl avamar ARGS` as a user does: kubectl finds
// the plugin on PATH. It returns stdout; a failure fails the test.
func (c *cluster) kubectlAvamar(plugin string, args ...string) string {
	c.t.Helper()
	cmd := exec.Command(filepath.Join(c.bin, "kubectl"), append([]string{"avamar"}, args...)...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+c.kubeconfig, "PATH="+filepath.Dir(plugin)+":"+os.Getenv("PATH"))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		c.t.Fatalf("kubectl avamar %s: %v\n%s", strings.Join(args, " "), err, stderr.Bytes())
	}
	return string(out)
}

func pluginProof(t *testing.T, c *cluster, env pluginEnv) {
	root, err := testkit.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	plugin := buildPlugin(t)
	if st, err := os.Stat(plugin); err == nil {
		t.Logf("bench: kubectl-avamar binary %d bytes (%.1f MiB)", st.Size(), float64(st.Size())/(1<<20))
	}

	ns := "plugin-public"
	c.namespace(ns)
	c.enforce(ns, podSecurityLevel)
	src := filepath.Join(root, "internal", "inject", "testdata", "public")
	manifests := t.TempDir()
	for _, m := range publicManifests {
		localize(t, filepath.Join(src, m), filepath.Join(manifests, m), env.imgs)
	}

	// What the operator creates once per namespace: the Secrets of the
	// example, the ConfigMap with the server and the REST API, the
	// application's own Secret; the volumes a cluster admin provides.
	c.must("create", "secret", "generic", "avsidecar", "-n", ns,
		"--from-file=authorized_keys="+env.authorizedKeys, "--from-literal=browse-token="+env.token)
	c.must("create", "secret", "generic", "avamar-rest", "-n", ns,
		"--from-literal=client_id=avsidecar", "--from-literal=client_secret=k8s-test-oauth-secret",
		"--from-literal=username=backup-viewer", "--from-literal=password=k8s-test-password",
		"--from-file=ca.crt="+env.site.restCA)
	var cm corev1.ConfigMap
	decodeFile(t, exampleFile(t, "configmap.yaml"), &cm)
	cm.Data["server"], cm.Data["rest-url"] = env.site.server, env.site.restURL
	b, err := json.Marshal(cm)
	if err != nil {
		t.Fatal(err)
	}
	c.apply(ns, b)
	c.must("create", "secret", "generic", "mysql-pass", "-n", ns, "--from-literal=password=k8s-test-mysql")
	pods := map[string]struct {
		claim, sub string // the PersistentVolumeClaim, the subPath the application mounts
		client     string
	}{
		"mysql-0":         {"data-mysql-0", "mysql", "mysql-0"},
		"mysql-1":         {"data-mysql-1", "mysql", "mysql-1"},
		"wordpress-mysql": {"mysql-pv-claim", "", "wordpress-mysql"},
	}
	lastBackup := time.Date(2026, 12, 1, 2, 0, 0, 0, time.UTC)
	for _, p := range pods {
		claimVolume(t, c, ns, p.claim, filepath.Join(p.sub, "ibdata1"))
		if err := env.rest.AddBackup(env.rest.AddClient("/clients", p.client), lastBackup); err != nil {
			t.Fatal(err)
		}
	}

	// inject, as an operator runs it: a directory and a file, the output
	// applied as it is.
	cmd := exec.Command(plugin, "inject", "-f", filepath.Join(manifests, publicManifests[0]), "-f", filepath.Join(manifests, publicManifests[1]), "--image", env.imgs.site)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	manifest, err := cmd.Output()
	if err != nil {
		t.Fatalf("kubectl avamar inject: %v\n%s", err, stderr.Bytes())
	}
	t.Logf("kubectl avamar inject -f %s -f %s: %d bytes of manifests; stderr:\n%s", publicManifests[0], publicManifests[1], len(manifest), stderr.Bytes())
	c.apply(ns, manifest)
	c.must("rollout", "status", "statefulset/mysql", "-n", ns, "--timeout=5m")
	c.must("rollout", "status", "deployment/wordpress-mysql", "-n", ns, "--timeout=5m")

	wantPort := map[string]int{"mysql-0": 31000, "mysql-1": 31001, "wordpress-mysql": 31010}
	podOf := map[string]corev1.Pod{}
	for name, p := range pods {
		pod := c.podOf(ns, name)
		podOf[name] = pod
		ctx, cancel := contextTimeout(3 * time.Minute)
		err := env.mcs.WaitReachable(ctx, p.client)
		cancel()
		if err != nil {
			t.Errorf("%s: %v", p.client, err)
			continue
		}
		ip, port, _ := env.mcs.CallbackAddr(p.client)
		t.Logf("%s (pod %s): Ready; MCS: registered %d time(s), called back at %s:%d", p.client, pod.Name, env.mcs.Count(p.client), ip, port)
		if n := env.mcs.Count(p.client); n != 1 || ip != env.site.nodeIP || port != wantPort[name] {
			t.Errorf("%s: registered %d times, called back at %s:%d; want once, at %s:%d", p.client, n, ip, port, env.site.nodeIP, wantPort[name])
		}

		// The browse root is the application's mount of its volume.
		web := "http://" + c.portForward(ns, "pod/"+pod.Name, 9180)
		code, body := testkit.Get(web+"/v1/files?path=/var/lib/mysql", env.token)
		var listing struct{ Entries []struct{ Name string } }
		err = json.Unmarshal([]byte(body), &listing)
		if code != http.StatusOK || err != nil || !slices.ContainsFunc(listing.Entries, func(e struct{ Name string }) bool { return e.Name == "ibdata1" }) {
			t.Errorf("%s: browse /var/lib/mysql: %d %v %.300s", pod.Name, code, err, body)
		}
		t.Logf("%s: GET /v1/files?path=/var/lib/mysql (bearer token): %d, %d entries %v", pod.Name, code, len(listing.Entries), listing.Entries)

		// The token: in the application's containers (the API server
		// mounts it), not in the sidecar, where SSH logins land.
		for _, ct := range append(slices.Clone(pod.Spec.InitContainers), pod.Spec.Containers...) {
			i := slices.IndexFunc(ct.VolumeMounts, func(m corev1.VolumeMount) bool { return m.MountPath == serviceAccountTokenPath })
			switch {
			case ct.Name == "avamar" && (i < 0 || ct.VolumeMounts[i].Name != "avamar-no-token"):
				t.Errorf("%s: the sidecar's mount at %s: %+v", pod.Name, serviceAccountTokenPath, ct.VolumeMounts)
			case ct.Name != "avamar" && (i < 0 || !strings.HasPrefix(ct.VolumeMounts[i].Name, "kube-api-access-")):
				t.Errorf("%s: container %s has no ServiceAccount token: %+v", pod.Name, ct.Name, ct.VolumeMounts)
			}
		}
		if out := c.must("exec", "-n", ns, pod.Name, "-c", "avamar", "--", "ls", "-A", serviceAccountTokenPath); out != "" {
			t.Errorf("%s: the sidecar sees %q in %s", pod.Name, out, serviceAccountTokenPath)
		}
	}
	t.Logf("browse roots served; the ServiceAccount token in every application container and init container, none in the sidecars")

	// A pod with the sidecar's name that answers nothing: a row that says
	// why, not a failed command.
	mute := fmt.Sprintf(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"mute"},"spec":{"containers":[{"name":"avamar","image":%q,"ports":[{"name":"avsidecar","containerPort":9180}]}]}}`, pauseImage)
	c.apply(ns, []byte(mute))
	c.waitPod(ns, "mute", "", 2*time.Minute)

	// status, through kubectl's plugin mechanism.
	kubectlPlugin := func(args ...string) string {
		t.Helper()
		return c.kubectlAvamar(plugin, args...)
	}
	var rows struct {
		Items []struct {
			Namespace, Pod, Client, Callback, Error, Version string
			Reached, Registered                              bool
			AgentRunning                                     bool              `json:"agent_running"`
			LastBackup                                       time.Time         `json:"last_backup"`
			Faults                                           map[string]string `json:"faults"`
		}
	}
	c.waitFor("kubectl avamar status to see every backup", 3*time.Minute, func() error {
		rows.Items = nil
		if err := json.Unmarshal([]byte(kubectlPlugin("status", "-A", "-o", "json")), &rows); err != nil {
			return err
		}
		for _, r := range rows.Items {
			if r.Reached && r.LastBackup.IsZero() {
				return fmt.Errorf("%s: no last backup yet", r.Pod)
			}
		}
		return nil
	})
	t.Logf("kubectl avamar status -A, as printed:\n%s", kubectlPlugin("status", "-A"))
	seen := map[string]bool{}
	for _, r := range rows.Items {
		if r.Namespace != ns {
			continue
		}
		if r.Pod == "mute" {
			seen["mute"] = true
			if r.Reached || !strings.Contains(r.Error, "connection refused") {
				t.Errorf("mute: reached %v, error %q: want a row saying the connection was refused", r.Reached, r.Error)
			}
			continue
		}
		name := r.Client
		seen[name] = true
		p, ok := pods[name]
		if !ok {
			t.Errorf("status row of an unknown client %q (pod %s)", name, r.Pod)
			continue
		}
		want := fmt.Sprintf("%s:%d", env.site.nodeIP, wantPort[name])
		if !r.Reached || !r.Registered || !r.AgentRunning || r.Callback != want || !r.LastBackup.Equal(lastBackup) || r.Version == "" || r.Pod != podOf[name].Name || len(r.Faults) > 0 {
			t.Errorf("status of %s: %+v; want registered, agent running, callback %s, last backup %s (client %s)", r.Pod, r, want, lastBackup, p.client)
		}
	}
	if len(seen) != len(pods)+1 {
		t.Errorf("status -A rows of %s: %v, want %d pods and mute", ns, seen, len(pods))
	}
	c.must("delete", "pod", "mute", "-n", ns, "--wait")

	// uninject what runs now, from `kubectl get -o yaml` (a List), and
	// apply it: the workloads come back as published, without the sidecar.
	current := c.must("get", "statefulset/mysql", "deployment/wordpress-mysql", "-n", ns, "-o", "yaml")
	cmd = exec.Command(plugin, "uninject")
	cmd.Stdin = strings.NewReader(current)
	stderr.Reset()
	cmd.Stderr = &stderr
	back, err := cmd.Output()
	if err != nil {
		t.Fatalf("kubectl avamar uninject: %v\n%s", err, stderr.Bytes())
	}
	t.Logf("kubectl get -o yaml | kubectl avamar uninject: stderr:\n%s", stderr.Bytes())
	c.apply(ns, back)
	c.must("rollout", "status", "statefulset/mysql", "-n", ns, "--timeout=5m")
	c.must("rollout", "status", "deployment/wordpress-mysql", "-n", ns, "--timeout=5m")
	c.waitFor("pods without the sidecar", 3*time.Minute, func() error {
		var list corev1.PodList
		if err := json.Unmarshal([]byte(c.must("get", "pods", "-n", ns, "-o", "json")), &list); err != nil {
			return err
		}
		for _, p := range list.Items {
			if _, ok := containerStatus(p, "avamar"); ok || slices.ContainsFunc(p.Spec.Containers, func(ct corev1.Container) bool { return ct.Name == "avamar" }) {
				return fmt.Errorf("%s still has the sidecar", p.Name)
			}
		}
		if len(list.Items) != len(pods) {
			return fmt.Errorf("%d pods", len(list.Items))
		}
		return nil
	})
	for _, w := range []string{"statefulset/mysql", "deployment/wordpress-mysql"} {
		names := c.must("get", w, "-n", ns, "-o", `jsonpath={range .spec.template.spec.initContainers[*]}{.name} {end}/{range .spec.template.spec.containers[*]}{.name} {end}/{.metadata.annotations}`)
		t.Logf("%s after uninject: init containers / containers / annotations: %s", w, names)
		if strings.Contains(names, "avamar") || strings.Contains(names, "avsidecar.io") {
			t.Errorf("%s still has the sidecar: %s", w, names)
		}
	}
	if out := kubectlPlugin("status", "-n", ns); out != "" {
		t.Errorf("status after uninject: %q, want no rows", out)
	}
	c.must("delete", "namespace", ns, "--wait", "--timeout=3m")
}

// serviceAccountTokenPath is where the API server mounts a pod's token.
const serviceAccountTokenPath = "/var/run/secrets/kubernetes.io/serviceaccount"

// podOf returns the Ready pod of a StatefulSet replica (its own name) or of
// a Deployment (named after it).
func (c *cluster) podOf(ns, name string) corev1.Pod {
	c.t.Helper()
	if p, ok := c.pod(ns, name); ok {
		return c.waitPod(ns, p.Name, "", 3*time.Minute)
	}
	var list corev1.PodList
	if err := json.Unmarshal([]byte(c.must("get", "pods", "-n", ns, "-o", "json")), &list); err != nil {
		c.t.Fatal(err)
	}
	for _, p := range list.Items {
		if strings.HasPrefix(p.Name, name+"-") && p.DeletionTimestamp == nil {
			return c.waitPod(ns, p.Name, "", 3*time.Minute)
		}
	}
	c.t.Fatalf("no pod of %s in %s", name, ns)
	return corev1.Pod{}
}

// claimVolume makes a local PersistentVolume bound in advance to the
// claim, holding one file at rel, as a cluster admin provides volumes.
func claimVolume(t *testing.T, c *cluster, ns, claim, rel string) {
	t.Helper()
	dir := filepath.Join(c.dir, "pv", ns, claim)
	if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, rel)), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, rel), []byte("data of "+claim+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	pv := map[string]any{
		"apiVersion": "v1", "kind": "PersistentVolume",
		"metadata": map[string]any{"name": ns + "-" + claim},
		"spec": map[string]any{
			"capacity":                      map[string]string{"storage": "100Gi"},
			"accessModes":                   []string{"ReadWriteOnce"},
			"persistentVolumeReclaimPolicy": "Retain",
			"claimRef":                      map[string]string{"namespace": ns, "name": claim},
			"local":                         map[string]string{"path": dir},
			"nodeAffinity": map[string]any{"required": map[string]any{"nodeSelectorTerms": []any{
				map[string]any{"matchExpressions": []any{map[string]any{"key": "kubernetes.io/hostname", "operator": "In", "values": []string{nodeName}}}},
			}}},
		},
	}
	b, err := json.Marshal(pv)
	if err != nil {
		t.Fatal(err)
	}
	c.apply("default", b)
}

// localize copies the manifest file or directory src to dst with the
// images this cluster has (see pluginProof).
func localize(t *testing.T, src, dst string, imgs images) {
	t.Helper()
	st, err := os.Stat(src)
	if err != nil {
		t.Fatal(err)
	}
	if st.IsDir() {
		entries, err := os.ReadDir(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(dst, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			localize(t, filepath.Join(src, e.Name()), filepath.Join(dst, e.Name()), imgs)
		}
		return
	}
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, doc := range strings.Split(string(b), "\n---\n") {
		var obj map[string]any
		if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
			t.Fatalf("%s: %v", src, err)
		}
		if spec, ok := obj["spec"].(map[string]any); ok && (obj["kind"] == "StatefulSet" || obj["kind"] == "Deployment") {
			if obj["kind"] == "StatefulSet" {
				spec["replicas"] = 2
			}
			pod := spec["template"].(map[string]any)["spec"].(map[string]any)
			for _, key := range []string{"initContainers", "containers"} {
				cts, _ := pod[key].([]any)
				for _, ct := range cts {
					m := ct.(map[string]any)
					for _, k := range []string{"command", "args", "readinessProbe", "livenessProbe", "startupProbe", "lifecycle", "resources", "imagePullPolicy"} {
						delete(m, k)
					}
					if key == "initContainers" {
						m["image"], m["command"] = imgs.nginx, []string{"sh", "-c", "true"}
					} else {
						m["image"] = pauseImage
					}
				}
			}
		}
		y, err := yaml.Marshal(obj)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(y))
	}
	if err := os.WriteFile(dst, []byte(strings.Join(out, "---\n")), 0o644); err != nil {
		t.Fatal(err)
	}
}
