package k8s

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/avsidecar/avsidecar/internal/testkit"
	"github.com/avsidecar/avsidecar/internal/testkit/avrest"
)

// TestNginxExample deploys examples/nginx as shipped on a real cluster,
// changing only what a user changes (images, the server in the ConfigMap,
// the Secret from real files, a local PersistentVolume per replica), and
// proves each claim of its README with kubectl and the MCS's own record.
// The numbered steps are those of the issue that asked for this test.
func TestNginxExample(t *testing.T) {
	needHost(t)
	sshBin := testkit.NeedCommand(t, "ssh")
	keygen := testkit.NeedCommand(t, "ssh-keygen")
	nodeIP := nodeAddress(t)
	start := time.Now()

	work := t.TempDir()
	bin := buildCluster(t, work)
	imgs := buildImages(t, work)
	c := startCluster(t, bin, nodeIP, imgs.archive)

	// The fake MCS runs on the host, outside the pod network, at the
	// node's address, as a real Avamar server is reached.
	mcsAddr := net.JoinHostPort(nodeIP, "28001")
	mcs, err := testkit.StartMCS(mcsAddr, testkit.MCSOptions{Log: zerolog.New(zerolog.NewTestWriter(t)).With().Str("who", "mcs").Logger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mcs.Close() })
	server := nodeIP // 28001 is the default port: the ConfigMap names the host only

	// The REST API stand-in on the host too, over TLS with a CA of its
	// own: the ConfigMap's rest-url and the Secret avamar-rest, with the
	// CA as its key ca.crt, turn the example's freshness check on.
	rest, err := avrest.Start(avrest.Config{Addr: net.JoinHostPort(nodeIP, "0"),
		ClientID: "avsidecar", ClientSecret: "k8s-test-oauth-secret", Username: "backup-viewer", Password: "k8s-test-password"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rest.Close)
	lastBackup := time.Date(2026, 11, 28, 21, 30, 0, 0, time.UTC)
	for i := range 2 {
		if err := rest.AddBackup(rest.AddClient("/clients", fmt.Sprintf("nginx-%d", i)), lastBackup.Add(time.Duration(i)*time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	restCA := filepath.Join(t.TempDir(), "avamar-ca.pem")
	if err := os.WriteFile(restCA, rest.CAPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	site := siteConfig{server: server, nodeIP: nodeIP, restURL: rest.URL(), restCA: restCA}

	keys := t.TempDir()
	ssh := sshClient{ssh: sshBin, knownHosts: filepath.Join(keys, "known_hosts")}
	oldKey := sshKey(t, keygen, keys, "operator")
	const token = "k8s-test-browse-token-0123456789abcdef"
	const page = "<h1>served by nginx, backed up by avamar</h1>\n"

	ns := "nginx-example"
	c.namespace(ns)
	c.enforce(ns, podSecurityLevel)
	for i := range 2 {
		c.localVolume(ns, fmt.Sprintf("nginx-%d", i), page)
	}
	deploy(t, c, ns, site, oldKey+".pub", token, imgs, false)
	watch := c.watchPods(ns)
	c.must("rollout", "status", "statefulset/nginx", "-n", ns, "--timeout=5m")
	t.Logf("bench: example deployed and Ready %s after the test started", time.Since(start).Round(time.Second))

	t.Run("1 Ready and probed by the kubelet", func(t *testing.T) {
		c := c.in(t)
		for i := range 2 {
			p := c.waitPod(ns, fmt.Sprintf("nginx-%d", i), "", time.Minute)
			for _, name := range []string{"nginx", "avamar"} {
				cs, _ := containerStatus(p, name)
				if !cs.Ready || cs.State.Running == nil {
					t.Errorf("%s/%s: ready=%v state=%+v", p.Name, name, cs.Ready, cs.State)
				}
			}
			t.Logf("%s: phase %s, Ready, containers nginx and avamar running", p.Name, p.Status.Phase)
		}
		// The kubelet's own count of the probes it ran.
		want := []struct{ container, probe string }{
			{"avamar", "Startup"}, {"avamar", "Liveness"}, {"nginx", "Readiness"},
		}
		// Each kubelet counts the probes of its own pods.
		var text string
		c.waitFor("the kubelets' probe counts", 2*time.Minute, func() error {
			text = ""
			for _, n := range c.nodes {
				text += c.must("get", "--raw", "/api/v1/nodes/"+n.name+"/proxy/metrics/probes") + "\n"
			}
			for _, w := range want {
				for i := range 2 {
					if n, _ := metric(text, "prober_probe_total", "namespace="+ns, fmt.Sprintf("pod=nginx-%d", i), "container="+w.container, "probe_type="+w.probe, "result=successful"); n < 1 {
						return fmt.Errorf("nginx-%d %s %s: %v successful", i, w.container, w.probe, n)
					}
				}
			}
			return nil
		})
		for _, w := range want {
			n, _ := metric(text, "prober_probe_total", "namespace="+ns, "pod=nginx-0", "container="+w.container, "probe_type="+w.probe, "result=successful")
			t.Logf("kubelet prober_probe_total{pod=nginx-0,container=%s,probe_type=%s,result=successful} = %v", w.container, w.probe, n)
		}
		// The decision of the README: no readiness probe on the sidecar.
		if n, ok := metric(text, "prober_probe_total", "namespace="+ns, "container=avamar", "probe_type=Readiness"); ok {
			t.Errorf("the kubelet ran %v readiness probes of the avamar container: the example must have none", n)
		}
		// The PodDisruptionBudget selects both replicas and lets one go.
		pdb := c.must("get", "poddisruptionbudget", "nginx", "-n", ns, "-o", "jsonpath={.status.currentHealthy} {.status.desiredHealthy} {.status.disruptionsAllowed}")
		t.Logf("PodDisruptionBudget nginx: currentHealthy, desiredHealthy, disruptionsAllowed = %s", pdb)
		if pdb != "2 1 1" {
			t.Errorf("PodDisruptionBudget nginx: %q, want 2 healthy, 1 desired, 1 disruption allowed", pdb)
		}
	})

	t.Run("11 Pod Security: the namespace enforces baseline, restricted refuses", func(t *testing.T) {
		c := c.in(t)
		label := c.must("get", "namespace", ns, "-o", `jsonpath={.metadata.labels.pod-security\.kubernetes\.io/enforce}`)
		if label != podSecurityLevel {
			t.Fatalf("namespace %s enforces %q", ns, label)
		}
		t.Logf("namespace %s enforces pod-security.kubernetes.io/enforce=%s: the API server admitted nginx-0 and nginx-1", ns, label)
		var sts appsv1.StatefulSet
		decodeFile(t, exampleFile(t, "statefulset.yaml"), &sts)
		refusal := restrictedRejects(t, c, sts)
		t.Logf("the same pod where restricted is enforced: %s", refusal)
		for _, want := range []string{`violates PodSecurity "restricted:latest"`, `container "avamar" must not include "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID" in securityContext.capabilities.add`, "runAsNonRoot != true", "runAsUser=0"} {
			if !strings.Contains(refusal, want) {
				t.Errorf("the refusal does not say %q", want)
			}
		}
	})

	t.Run("2 node IP, pod-index port, one registration each, reached through the NodePort", func(t *testing.T) {
		c := c.in(t)
		for i := range 2 {
			name, port := fmt.Sprintf("nginx-%d", i), 31000+i
			p, _ := c.pod(ns, name)
			nodeIP := c.nodeOf(p).ip
			if p.Status.HostIP != nodeIP {
				t.Errorf("%s on %s: status.hostIP %q, want the node's %s", name, p.Spec.NodeName, p.Status.HostIP, nodeIP)
			}
			if got := p.Labels[appsv1.PodIndexLabel]; got != strconv.Itoa(i) {
				t.Errorf("%s: pod-index label %q", name, got)
			}
			cmd := c.must("exec", "-n", ns, name, "-c", "avamar", "--", "cat", "/var/avamar/avagent.cmd")
			t.Logf("%s avagent.cmd: %q", name, cmd)
			for _, want := range []string{"--iplist=" + nodeIP, fmt.Sprintf("--listenport=%d", port)} {
				if !strings.Contains("\n"+cmd+"\n", "\n"+want+"\n") {
					t.Errorf("%s: avagent.cmd lacks the line %s", name, want)
				}
			}
			svc := c.must("get", "service", "-n", ns, name+"-avagent", "-o", "jsonpath={.spec.type} {.spec.ports[0].nodePort}")
			if svc != fmt.Sprintf("NodePort %d", port) {
				t.Errorf("service %s-avagent: %q", name, svc)
			}
			ctx, cancel := contextTimeout(2 * time.Minute)
			err := mcs.WaitReachable(ctx, name)
			cancel()
			if err != nil {
				t.Error(err)
			}
			ip, lport, _ := mcs.CallbackAddr(name)
			n := mcs.Count(name)
			t.Logf("MCS: %s (on %s) registered %d time(s), called back at %s:%d, reachable=%v", name, p.Spec.NodeName, n, ip, lport, mcs.Reachable(name))
			if n != 1 || ip != nodeIP || lport != port {
				t.Errorf("MCS: %s registered %d times, callback %s:%d; want once, at %s:%d", name, n, ip, lport, nodeIP, port)
			}
		}
		// The client's state is in /var/avamar, on the volume.
		st, _ := status(t, "http://"+c.portForward(ns, "pod/nginx-0", 9180))
		t.Logf("nginx-0 /v1/status client: var_dir %s, found_by %s", st.Client.VarDir, st.Client.FoundBy)
		if st.Client.VarDir != "/var/avamar" || st.Client.FoundBy != "state-dir" {
			t.Errorf("client var dir %q found by %q, want /var/avamar, state-dir", st.Client.VarDir, st.Client.FoundBy)
		}
	})

	t.Run("3 logs, browse page and API, SSH through port-forward", func(t *testing.T) {
		c := c.in(t)
		logs := testkit.NewLogLines()
		if _, err := logs.Write([]byte(c.must("logs", "-n", ns, "nginx-0", "-c", "avamar") + "\n")); err != nil {
			t.Fatal(err)
		}
		for _, comp := range []string{"main", "install", "register", "agent", "avagent.log"} {
			n := logs.Count(0, func(m map[string]any) bool { return m["component"] == comp })
			t.Logf("kubectl logs nginx-0 -c avamar: %d JSON lines of component %s", n, comp)
			if n == 0 {
				t.Errorf("no %s line in kubectl logs", comp)
			}
		}
		for _, m := range []struct{ comp, msg string }{{"install", "package installed"}, {"register", "registered"}} {
			if logs.Count(0, testkit.Msg(m.comp, m.msg)) != 1 {
				t.Errorf("kubectl logs: %s %q not logged once", m.comp, m.msg)
			}
		}
		if strings.Contains(logs.Raw(), token) {
			t.Error("the browse token is in the log")
		}

		web := "http://" + c.portForward(ns, "pod/nginx-0", 9180)
		code, browsePage := testkit.Get(web+"/", "")
		if code != http.StatusOK || !strings.Contains(browsePage, "<html") {
			t.Errorf("browse page: %d %.200q", code, browsePage)
		}
		code, body := testkit.Get(web+"/v1/files?path=/usr/share/nginx/html", token)
		var listing struct {
			Entries []struct{ Name, Type string }
		}
		if err := json.Unmarshal([]byte(body), &listing); code != http.StatusOK || err != nil || len(listing.Entries) != 1 || listing.Entries[0].Name != "index.html" {
			t.Errorf("browse API: %d %v %s", code, err, body)
		}
		t.Logf("port-forward 9180: GET / %d (%d bytes of HTML); /v1/files lists %+v", http.StatusOK, len(browsePage), listing.Entries)

		out, err := ssh.run(c.portForward(ns, "pod/nginx-0", 2222), "nginx-0", oldKey, "accept-new",
			"cat /usr/share/nginx/html/index.html && test -f /var/avamar/avagent.cfg && test -f /var/avamar/cid.bin && echo registered")
		if err != nil || out != page+"registered\n" {
			t.Errorf("ssh: %q %v", out, err)
		}
		t.Logf("port-forward 2222, ssh: %q", out)
	})

	t.Run("4 deleted pod comes back on its volume", func(t *testing.T) {
		c := c.in(t)
		old, _ := c.pod(ns, "nginx-0")
		c.must("delete", "pod", "-n", ns, "nginx-0", "--wait")
		p := c.waitPod(ns, "nginx-0", string(old.UID), 3*time.Minute)
		t.Logf("nginx-0: pod %s replaced by %s, Ready", old.UID, p.UID)
		logs := testkit.NewLogLines()
		if _, err := logs.Write([]byte(c.must("logs", "-n", ns, "nginx-0", "-c", "avamar") + "\n")); err != nil {
			t.Fatal(err)
		}
		for _, m := range []struct{ comp, msg string }{{"install", "package installed"}, {"install", "scriptlet started"}, {"register", "registered"}} {
			if n := logs.Count(0, testkit.Msg(m.comp, m.msg)); n != 0 {
				t.Errorf("the new pod logged %s %q %d times: it installed or registered again", m.comp, m.msg, n)
			}
		}
		if logs.Count(0, testkit.Msg("register", "already registered, not registering again")) != 1 {
			t.Error("the new pod did not log that it is already registered")
		}
		if n := mcs.Count("nginx-0"); n != 1 {
			t.Errorf("MCS: nginx-0 registered %d times, want still 1", n)
		}
		out, err := ssh.run(c.portForward(ns, "pod/nginx-0", 2222), "nginx-0", oldKey, "yes", "echo same host key")
		if err != nil {
			t.Errorf("ssh with the known host key: %v", err)
		}
		t.Logf("no install, no registration (MCS count %d), ssh StrictHostKeyChecking=yes: %q", mcs.Count("nginx-0"), out)
		st, _ := status(t, "http://"+c.portForward(ns, "pod/nginx-0", 9180))
		t.Logf("the new pod's /v1/status client: var_dir %s, found_by %s", st.Client.VarDir, st.Client.FoundBy)
		if st.Client.VarDir != "/var/avamar" {
			t.Errorf("the new pod's var dir %q, want /var/avamar, kept on the volume", st.Client.VarDir)
		}
	})

	t.Run("13 the pod moves to another node and back, the same client", func(t *testing.T) {
		c := c.in(t)
		move(t, c, mcs, ssh, oldKey, ns)
	})

	t.Run("14 the doctor names each cause, broken on purpose", func(t *testing.T) {
		c := c.in(t)
		breakDoctor(t, c, mcs, ns, site, oldKey+".pub", token, page, imgs)
	})

	t.Run("12 read-only root, hooks, backup freshness", func(t *testing.T) {
		c := c.in(t)
		out, err := c.kubectl("exec", "-n", ns, "nginx-0", "-c", "avamar", "--", "sh", "-c", "echo x > /usr/lib/avsidecar-write-test")
		t.Logf("a write to the root filesystem: %s", lineWith(fmt.Sprint(err), "Read-only"))
		if err == nil || !strings.Contains(err.Error(), "Read-only file system") {
			t.Errorf("a write to the root filesystem: %q %v, want Read-only file system", out, err)
		}
		// What Avamar runs at the start of a backup (the dataset's
		// run-at-start script): the ConfigMap's hooks.json.
		out, err = c.kubectl("exec", "-n", ns, "nginx-0", "-c", "avamar", "--", "/usr/local/avamar/etc/scripts/avsidecar-pre.sh")
		t.Logf("avsidecar-pre.sh, as Avamar runs it: %v\n%s", err, out)
		if err != nil {
			t.Errorf("the pre script failed: %v", err)
		}
		web := "http://" + c.portForward(ns, "pod/nginx-0", 9180)
		st, body := status(t, web)
		if st.Hooks == nil || st.Hooks.ConfigError != "" || len(st.Hooks.Pre) != 1 || st.Hooks.Pre[0].Name != "sync" || st.Hooks.Hooks["pre/ok"] != 1 {
			t.Errorf("/v1/status hooks: %.600s", body)
		}
		if len(st.Faults) > 0 {
			t.Errorf("faults: %v", st.Faults)
		}
		// The freshness check: the newest backup the REST API knows.
		c.waitFor("nginx-0's backup check", 2*time.Minute, func() error {
			if st, _ = status(t, web); st.Backup == nil || st.Backup.State != "ok" {
				return fmt.Errorf("backup %+v", st.Backup)
			}
			return nil
		})
		_, text := testkit.Get(web+"/metrics", "")
		v, _ := metric(text, "avsidecar_last_backup_timestamp_seconds")
		t.Logf("/v1/status backup: state %s, last_backup %s from %s; avsidecar_last_backup_timestamp_seconds %v", st.Backup.State, st.Backup.LastBackup.Format(time.RFC3339), st.Backup.BackupSource, v)
		if !st.Backup.LastBackup.Equal(lastBackup) || int64(v) != lastBackup.Unix() {
			t.Errorf("last backup %s (metric %v), want %s", st.Backup.LastBackup, v, lastBackup)
		}
		if n := rest.Counts(); n.Tokens == 0 || n.TokenRefusals != 0 {
			t.Errorf("REST stand-in counts %+v: want tokens issued, none refused", n)
		}
	})

	t.Run("5 authorized_keys rotated without a restart", func(t *testing.T) {
		c := c.in(t)
		before, _ := c.pod(ns, "nginx-1")
		cs0, _ := containerStatus(before, "avamar")
		newKey := sshKey(t, keygen, keys, "rotated")
		secret := c.must("create", "secret", "generic", "avsidecar", "-n", ns,
			"--from-file=authorized_keys="+newKey+".pub", "--from-literal=browse-token="+token,
			"--dry-run=client", "-o", "yaml")
		c.apply(ns, []byte(secret))
		begin := time.Now()
		fwd := c.portForward(ns, "pod/nginx-1", 2222)
		c.waitFor("the new key to log in", 3*time.Minute, func() error {
			_, err := ssh.run(fwd, "nginx-1", newKey, "accept-new", "true")
			return err
		})
		t.Logf("new key logs in %s after kubectl apply", time.Since(begin).Round(time.Second))
		if out, err := ssh.run(fwd, "nginx-1", oldKey, "yes", "true"); err == nil || !strings.Contains(out, "Permission denied") {
			t.Errorf("the old key: %v %q, want Permission denied", err, out)
		}
		after, _ := c.pod(ns, "nginx-1")
		cs1, _ := containerStatus(after, "avamar")
		if cs1.ContainerID != cs0.ContainerID || cs1.RestartCount != cs0.RestartCount || after.UID != before.UID {
			t.Errorf("the sidecar restarted: %s/%d -> %s/%d", cs0.ContainerID, cs0.RestartCount, cs1.ContainerID, cs1.RestartCount)
		}
		t.Logf("old key refused; same container %s, restartCount %d", cs1.ContainerID, cs1.RestartCount)
	})

	t.Run("7 avagent killed is restarted inside the pod", func(t *testing.T) {
		c := c.in(t)
		before, _ := c.pod(ns, "nginx-0")
		cs0, _ := containerStatus(before, "avamar")
		web := "http://" + c.portForward(ns, "pod/nginx-0", 9180)
		restarts := func() (int, float64) {
			_, body := testkit.Get(web+"/v1/status", "")
			var st struct {
				Agent struct{ Restarts int }
			}
			if err := json.Unmarshal([]byte(body), &st); err != nil {
				t.Fatalf("/v1/status: %v %s", err, body)
			}
			_, text := testkit.Get(web+"/metrics", "")
			m, _ := metric(text, "avsidecar_agent_restarts_total")
			return st.Agent.Restarts, m
		}
		r0, m0 := restarts()
		// The agent's pid, from inside the container: the process whose
		// executable is avagent.bin.
		c.must("exec", "-n", ns, "nginx-0", "-c", "avamar", "--", "sh", "-c",
			`for p in /proc/[0-9]*; do case "$(readlink $p/exe)" in */avagent.bin) kill -KILL ${p#/proc/}; echo killed ${p#/proc/};; esac; done`)
		var r1 int
		var m1 float64
		c.waitFor("avagent restarted", 2*time.Minute, func() error {
			r1, m1 = restarts()
			if r1 <= r0 || m1 <= m0 {
				return fmt.Errorf("restarts %d (metric %v)", r1, m1)
			}
			return nil
		})
		ctx, cancel := contextTimeout(time.Minute)
		defer cancel()
		if err := mcs.WaitReachable(ctx, "nginx-0"); err != nil {
			t.Error(err)
		}
		after, _ := c.pod(ns, "nginx-0")
		cs1, _ := containerStatus(after, "avamar")
		if cs1.RestartCount != cs0.RestartCount || cs1.ContainerID != cs0.ContainerID {
			t.Errorf("the container restarted: restartCount %d -> %d", cs0.RestartCount, cs1.RestartCount)
		}
		t.Logf("/v1/status agent.restarts %d -> %d, avsidecar_agent_restarts_total %v -> %v, pod restartCount %d -> %d",
			r0, r1, m0, m1, cs0.RestartCount, cs1.RestartCount)
	})

	t.Run("6 clean stop inside the grace period, rollout restart completes", func(t *testing.T) {
		c := c.in(t)
		var uids []string
		for i := range 2 {
			p, _ := c.pod(ns, fmt.Sprintf("nginx-%d", i))
			uids = append(uids, string(p.UID))
		}
		begin := time.Now()
		c.must("rollout", "restart", "statefulset/nginx", "-n", ns)
		c.must("rollout", "status", "statefulset/nginx", "-n", ns, "--timeout=5m")
		t.Logf("rollout restart completed in %s", time.Since(begin).Round(time.Second))
		for i, uid := range uids {
			s, err := watch.stopOf(uid, "avamar")
			if err != nil {
				t.Error(err)
				continue
			}
			t.Logf("nginx-%d (%s): avamar exited %d (%s) %s after the delete, grace %ds", i, uid, s.exitCode, s.reason, s.took, s.grace)
			if s.exitCode != 0 || s.took >= time.Duration(s.grace)*time.Second {
				t.Errorf("nginx-%d: exit code %d after %s, want 0 inside %ds", i, s.exitCode, s.took, s.grace)
			}
			if p, _ := c.pod(ns, fmt.Sprintf("nginx-%d", i)); string(p.UID) == uid {
				t.Errorf("nginx-%d was not replaced", i)
			}
		}
	})

	t.Run("8 MCS down: nginx stays in service", func(t *testing.T) {
		c := c.in(t)
		mcsDown(t, c, mcs, ns, page, "nginx-2", func() {
			// Scaling up as the README says: the replica's Service first.
			var svc corev1.Service
			decodeNth(t, exampleFile(t, "service.yaml"), 2, &svc)
			svc.ResourceVersion = ""
			svc.Name = "nginx-2-avagent"
			svc.Spec.Selector[appsv1.StatefulSetPodNameLabel] = "nginx-2"
			svc.Spec.Ports[0].Port, svc.Spec.Ports[0].NodePort = 31002, 31002
			svc.Spec.Ports[0].TargetPort.IntVal = 31002
			b, _ := json.Marshal(svc)
			c.apply(ns, b)
			c.localVolume(ns, "nginx-2", page)
			c.must("scale", "statefulset/nginx", "-n", ns, "--replicas=3")
		})
	})
	c.must("delete", "namespace", ns, "--wait", "--timeout=3m")

	t.Run("9 native sidecar: up before nginx, down after it", func(t *testing.T) {
		c := c.in(t)
		native(t, c, mcs, site, oldKey+".pub", token, page, imgs)
	})

	t.Run("10 an injected workload", func(t *testing.T) {
		c := c.in(t)
		injected(t, c, mcs, server, oldKey+".pub", token, page, imgs)
	})
	t.Run("15 kubectl avamar on public manifests", func(t *testing.T) {
		pluginProof(t, c.in(t), pluginEnv{mcs: mcs, rest: rest, site: site, authorizedKeys: oldKey + ".pub", token: token, imgs: imgs})
	})
	t.Logf("bench: whole test %s", time.Since(start).Round(time.Second))
}

// siteConfig is what a user sets in the example: the Avamar server, the
// REST API's URL and CA, and the address the NetworkPolicy admits the
// server from.
type siteConfig struct {
	server, nodeIP  string
	restURL, restCA string
}

// deploy applies the example to namespace as README steps 3 and 4 do: the
// Secrets from real files and literals, the ConfigMap with the server and
// the REST URL, the Services, NetworkPolicies and PodDisruptionBudget as
// shipped (the policy's server address set), the StatefulSet with the
// site's images (native: the native-sidecar variant, made with the
// README's kubectl patch).
func deploy(t *testing.T, c *cluster, ns string, site siteConfig, authorizedKeys, token string, imgs images, native bool) {
	t.Helper()
	c.must("create", "secret", "generic", "avsidecar", "-n", ns,
		"--from-file=authorized_keys="+authorizedKeys, "--from-literal=browse-token="+token)
	c.must("create", "secret", "generic", "avamar-rest", "-n", ns,
		"--from-literal=client_id=avsidecar", "--from-literal=client_secret=k8s-test-oauth-secret",
		"--from-literal=username=backup-viewer", "--from-literal=password=k8s-test-password",
		"--from-file=ca.crt="+site.restCA)
	var cm corev1.ConfigMap
	decodeFile(t, exampleFile(t, "configmap.yaml"), &cm)
	cm.Data["server"] = site.server
	cm.Data["rest-url"] = site.restURL
	b, err := json.Marshal(cm)
	if err != nil {
		t.Fatal(err)
	}
	c.apply(ns, b)
	c.must("apply", "-n", ns, "-f", exampleFile(t, "service.yaml"), "-f", exampleFile(t, "pdb.yaml"))
	policies, err := os.ReadFile(exampleFile(t, "networkpolicy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	c.apply(ns, []byte(strings.Replace(string(policies), "cidr: 192.0.2.10/32", "cidr: "+site.nodeIP+"/32", 1)))
	var sts appsv1.StatefulSet
	if native {
		out := c.must("patch", "--local", "-f", exampleFile(t, "statefulset.yaml"), "--type=json",
			"--patch-file", exampleFile(t, "native-sidecar.json"), "-o", "json")
		if err := json.Unmarshal([]byte(out), &sts); err != nil {
			t.Fatal(err)
		}
	} else {
		decodeFile(t, exampleFile(t, "statefulset.yaml"), &sts)
	}
	c.apply(ns, siteStatefulSet(t, &sts, imgs))
}

// mcsDown takes the MCS down, runs change (which brings a new replica,
// pod, that must register), and proves what the README says: every
// replica stays Ready and in the nginx Service, serving, while the new
// one's /readyz says 503 naming the registration; then the MCS comes back
// and the replica registers.
func mcsDown(t *testing.T, c *cluster, mcs *testkit.MCS, ns, page, pod string, change func()) {
	t.Helper()
	if err := mcs.SetDown(true); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := mcs.SetDown(false); err != nil {
			t.Error(err)
		}
	}()
	attempts, registered := mcs.Attempts(pod), mcs.Count(pod)
	change()
	p := c.waitPod(ns, pod, "", 3*time.Minute)
	web := "http://" + c.portForward(ns, "pod/"+pod, 9180)
	var code int
	var body string
	c.waitFor(pod+"'s /readyz naming the registration", 2*time.Minute, func() error {
		code, body = testkit.Get(web+"/readyz?verbose", "")
		if code != http.StatusServiceUnavailable || !strings.Contains(body, "[-]registered: not registered after") {
			return fmt.Errorf("%d %s", code, body)
		}
		return nil
	})
	t.Logf("%s Ready=%v with the MCS down; /readyz: %d\n%s", pod, podReady(p), code, body)
	_, text := testkit.Get(web+"/metrics", "")
	if v, ok := metric(text, "avsidecar_ready"); !ok || v != 0 {
		t.Errorf("%s: avsidecar_ready %v (found %v), want 0", pod, v, ok)
	}
	if n := mcs.Attempts(pod); n != attempts {
		t.Errorf("the MCS saw %d registration attempts of %s while down", n-attempts, pod)
	}

	// Every replica Ready, in the Service's endpoints, and serving.
	pods := map[string]corev1.Pod{}
	out := c.must("get", "pods", "-n", ns, "-l", "app.kubernetes.io/name=nginx", "-o", "json")
	var list corev1.PodList
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatal(err)
	}
	for _, p := range list.Items {
		pods[p.Name] = p
		if !podReady(p) {
			t.Errorf("%s is not Ready with the MCS down", p.Name)
		}
	}
	var slices discoveryv1.EndpointSliceList
	if err := json.Unmarshal([]byte(c.must("get", "endpointslices", "-n", ns, "-l", "kubernetes.io/service-name=nginx", "-o", "json")), &slices); err != nil {
		t.Fatal(err)
	}
	ready := map[string]string{}
	for _, s := range slices.Items {
		for _, e := range s.Endpoints {
			if e.TargetRef != nil && e.Conditions.Ready != nil && *e.Conditions.Ready && len(e.Addresses) > 0 {
				ready[e.TargetRef.Name] = e.Addresses[0]
			}
		}
	}
	if len(ready) != len(pods) || len(pods) == 0 {
		t.Errorf("Service nginx: ready endpoints %v, pods %d", ready, len(pods))
	}
	for name, addr := range ready {
		if code, body := testkit.Get("http://"+net.JoinHostPort(addr, "80")+"/", ""); code != http.StatusOK || body != page {
			t.Errorf("nginx at endpoint %s (%s): %d %q", addr, name, code, body)
		}
	}
	t.Logf("Service nginx ready endpoints with the MCS down: %v, each serving the page", ready)
	if code, body := testkit.Get("http://"+c.portForward(ns, "service/nginx", 80)+"/", ""); code != http.StatusOK || body != page {
		t.Errorf("port-forward service/nginx: %d %q", code, body)
	}

	// Back up: the replica registers, and its backup is ready.
	if err := mcs.SetDown(false); err != nil {
		t.Fatal(err)
	}
	c.waitFor("the registration of "+pod, 4*time.Minute, func() error {
		if n := mcs.Count(pod); n <= registered {
			return fmt.Errorf("%d registrations", n)
		}
		return nil
	})
	c.waitFor(pod+"'s /readyz", time.Minute, func() error {
		if code, body := testkit.Get(web+"/readyz", ""); code != http.StatusOK {
			return fmt.Errorf("%d %s", code, body)
		}
		return nil
	})
	t.Logf("MCS up again: %s registered (registrations of the name: %d), /readyz 200", pod, mcs.Count(pod))
}

// native deploys the native-sidecar variant with the MCS down from the
// start, and proves that the sidecar is started before nginx (its startup
// probe gates nginx), that nginx serves while the backup is not ready,
// and that on deletion nginx is stopped before the sidecar.
func native(t *testing.T, c *cluster, mcs *testkit.MCS, site siteConfig, authorizedKeys, token, page string, imgs images) {
	ns := "nginx-native"
	c.namespace(ns)
	c.enforce(ns, podSecurityLevel)
	for i := range 2 {
		c.localVolume(ns, fmt.Sprintf("nginx-%d", i), page)
	}
	watch := c.watchPods(ns)
	mcsDown(t, c, mcs, ns, page, "nginx-1", func() {
		deploy(t, c, ns, site, authorizedKeys, token, imgs, true)
		c.waitPod(ns, "nginx-0", "", 3*time.Minute)
	})
	c.must("rollout", "status", "statefulset/nginx", "-n", ns, "--timeout=5m")

	var uids []string
	for i := range 2 {
		name := fmt.Sprintf("nginx-%d", i)
		p, _ := c.pod(ns, name)
		uids = append(uids, string(p.UID))
		if len(p.Spec.InitContainers) != 1 || p.Spec.InitContainers[0].Name != "avamar" || p.Spec.InitContainers[0].RestartPolicy == nil || *p.Spec.InitContainers[0].RestartPolicy != corev1.ContainerRestartPolicyAlways {
			t.Fatalf("%s: the avamar container is not a native sidecar: %+v", name, p.Spec.InitContainers)
		}
		// Start: no recorded version of the pod has nginx started while
		// the sidecar had not passed its startup probe.
		for _, v := range watch.versions(string(p.UID)) {
			side, _ := containerStatus(v, "avamar")
			app, _ := containerStatus(v, "nginx")
			if (app.State.Running != nil || app.State.Terminated != nil) && (side.Started == nil || !*side.Started) {
				t.Errorf("%s: nginx %+v while the sidecar had not started (%+v)", name, app.State, side.State)
			}
		}
		side, _ := containerStatus(p, "avamar")
		app, _ := containerStatus(p, "nginx")
		if side.State.Running == nil || app.State.Running == nil || app.State.Running.StartedAt.Before(&side.State.Running.StartedAt) {
			t.Errorf("%s: sidecar %+v, nginx %+v", name, side.State, app.State)
		} else {
			t.Logf("%s: sidecar started %s, nginx started %s; %d recorded versions, none with nginx before the sidecar's startup probe passed",
				name, side.State.Running.StartedAt.Format(time.RFC3339), app.State.Running.StartedAt.Format(time.RFC3339), len(watch.versions(string(p.UID))))
		}
	}
	// Stop: delete the pods (as a scale down or drain does); nginx ends
	// first, the sidecar after it, cleanly.
	c.must("delete", "namespace", ns, "--wait", "--timeout=3m")
	for i, uid := range uids {
		side, err := watch.stopOf(uid, "avamar")
		if err != nil {
			t.Error(err)
			continue
		}
		app, err := watch.stopOf(uid, "nginx")
		if err != nil {
			t.Error(err)
			continue
		}
		t.Logf("nginx-%d: nginx ended %s after the delete (exit %d), the sidecar %s (exit %d), grace %ds", i, app.took, app.exitCode, side.took, side.exitCode, side.grace)
		if side.exitCode != 0 || side.took >= time.Duration(side.grace)*time.Second {
			t.Errorf("nginx-%d: sidecar exit code %d after %s, want 0 inside %ds", i, side.exitCode, side.took, side.grace)
		}
		if side.took < app.took {
			t.Errorf("nginx-%d: the sidecar ended %s before nginx", i, app.took-side.took)
		}
		killing := c.kubeletLines(fmt.Sprintf(`pod="%s/nginx-%d"`, ns, i), "Killing container with a grace period")
		var order []string
		for _, l := range killing {
			if j := strings.Index(l, `containerName="`); j >= 0 {
				order = append(order, strings.SplitN(l[j+len(`containerName="`):], `"`, 2)[0])
			}
		}
		t.Logf("kubelet, nginx-%d: killed in the order %v", i, order)
		if len(order) < 2 || order[0] != "nginx" || order[len(order)-1] != "avamar" {
			t.Errorf("nginx-%d: the kubelet stopped the containers in the order %v, want nginx first and avamar last", i, order)
		}
	}
}

// decodeNth decodes the n-th document (from 0) of a multi-document YAML
// file strictly into v.
func decodeNth(t *testing.T, path string, n int, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var docs []string
	for _, d := range strings.Split(string(b), "\n---\n") {
		if strings.Contains(d, "apiVersion:") {
			docs = append(docs, d)
		}
	}
	if n >= len(docs) {
		t.Fatalf("%s has %d documents, not %d", path, len(docs), n+1)
	}
	if err := yamlStrict(docs[n], v); err != nil {
		t.Fatalf("%s document %d: %v", path, n, err)
	}
}

// lineWith is the line of text that holds word (a command's own message
// among kubectl's, a pod's row of a table), or "".
func lineWith(text, word string) string {
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, word) {
			return strings.TrimSpace(l)
		}
	}
	return ""
}
