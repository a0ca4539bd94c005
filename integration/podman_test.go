package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/avsidecar/avsidecar/internal/testkit"
)

// TestPodmanPod runs the product as it ships: the project's Dockerfile, the
// site image with the (fake) client RPM from examples/nginx/Dockerfile, and
// a pod of nginx and the sidecar sharing a volume, as in
// examples/nginx/statefulset.yaml. The MCS runs in a container on a network
// of its own and reaches the agent the way a real server does: at NODE_IP,
// the node's address, on a port the node forwards to this pod only (the
// manifests' per-pod NodePort; a published port here).
func TestPodmanPod(t *testing.T) {
	pm := newPodman(t)
	ssh := testkit.NeedCommand(t, "ssh")
	sshKeygen := testkit.NeedCommand(t, "ssh-keygen")
	manifest := loadExampleSidecar(t)

	// Images: base (cached), nginx (cached), product and site (per run).
	base := pm.BaseImage(testkit.PodmanBaseImage)
	nginxImage := pm.nginxImage(base)
	bins := testkit.BuildBinaries(t)
	productImage, binary := pm.ProductImage(base)
	siteImage, rpm := pm.SiteImage(productImage, "localhost/avsidecar-test-site:"+pm.ID, testkit.RPMOptions{})
	t.Logf("images: product %s, site %s (RPM %s), nginx %s", productImage, siteImage, filepath.Base(rpm), nginxImage)
	for _, img := range []struct{ role, ref string }{{"base", base}, {"product", productImage}, {"site", siteImage}} {
		t.Logf("bench: image=%s size_bytes=%s", img.role, pm.Run("image", "inspect", "--format", "{{.Size}}", img.ref))
	}
	if fi, err := os.Stat(binary); err == nil {
		t.Logf("bench: binary=avsidecar size_bytes=%d", fi.Size())
	}
	if fi, err := os.Stat(rpm); err == nil {
		t.Logf("bench: rpm size_bytes=%d", fi.Size())
	}

	// Networks: the MCS's own, and the pod's. NODE_IP is the host's
	// address on the pod's network, as status.hostIP is the node's.
	mcsNet, podNet := pm.Name("mcs"), pm.Name("pod")
	for _, n := range []string{mcsNet, podNet} {
		pm.Run("network", "create", n)
		pm.Cleanup("network", "rm", "-f", n)
	}
	nodeIP := pm.Run("network", "inspect", "--format", "{{range .Subnets}}{{.Gateway}}{{end}}", podNet)
	if net.ParseIP(nodeIP) == nil {
		t.Fatalf("gateway of %s: %q", podNet, nodeIP)
	}

	mcs := pm.Name("mcs")
	pm.Run(append(append([]string{"run", "-d", "--name", mcs, "--network", mcsNet,
		"-v", bins.Avkit + ":/usr/local/bin/avkit:ro"}, testkit.PodmanLimits...),
		base, "/usr/local/bin/avkit", "mcs", "--addr", ":28001")...)
	pm.Cleanup("rm", "-f", "-t", "0", mcs)
	mcsLog := pm.follow(mcs, "mcs")
	mcsLog.WaitN(t, 0, 1, "mcs started", time.Minute, msg("mcs", "mcs started"))
	mcsIP := pm.inspect(mcs).NetworkSettings.Networks[mcsNet].IPAddress

	// The PersistentVolume: its subPaths html (nginx's files), avamar (the
	// client prefix) and init.d; and the Secret's two files.
	data := t.TempDir()
	html, avamar, initd := filepath.Join(data, "html"), filepath.Join(data, "avamar"), filepath.Join(data, "init.d")
	sshDir, browseDir := filepath.Join(data, "secret-ssh"), filepath.Join(data, "secret-browse")
	for _, d := range []string{html, filepath.Join(html, "assets"), avamar, initd, sshDir, browseDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	const page = "<h1>served by nginx, backed up by avamar</h1>\n"
	podmanWriteFile(t, filepath.Join(html, "index.html"), page)
	podmanWriteFile(t, filepath.Join(html, "assets", "site.css"), "h1 { color: teal }\n")
	key := filepath.Join(data, "id_ed25519")
	if out, err := exec.Command(sshKeygen, "-q", "-t", "ed25519", "-N", "", "-C", "operator@test", "-f", key).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	pub, err := os.ReadFile(key + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	podmanWriteFile(t, filepath.Join(sshDir, "authorized_keys"), string(pub))
	const token = "podman-test-browse-token-0123456789abcdef"
	podmanWriteFile(t, filepath.Join(browseDir, "token"), token+"\n")

	listenPort := podmanFreePort(t)
	sshPort := strings.TrimPrefix(manifest.env["AVSIDECAR_SSH_ADDR"], ":")
	env := map[string]string{
		"AVAMAR_SERVER":               mcsIP,
		"NODE_IP":                     nodeIP,
		"POD_NAME":                    "nginx-0",
		"AVAMAR_DOMAIN":               "/clients",
		"AVAMAR_LISTEN_PORT":          strconv.Itoa(listenPort),
		"AVSIDECAR_BROWSE_ROOTS":      "/var/www/html",
		"AVSIDECAR_BROWSE_TOKEN_FILE": "/etc/avsidecar/browse/token",
		"AVSIDECAR_SSH_ADDR":          manifest.env["AVSIDECAR_SSH_ADDR"],
		"AVSIDECAR_SHUTDOWN_TIMEOUT":  manifest.env["AVSIDECAR_SHUTDOWN_TIMEOUT"],
		// The MCS is up: keep a transient failure's retry short.
		"AVSIDECAR_REGISTER_BACKOFF_MAX": "2s",
	}

	type started struct {
		pod, sidecar, nginx string
		podIP               string
		log                 *logLines
	}
	// startPod makes a new pod, as a rescheduled StatefulSet pod is: new
	// containers (nothing kept in their filesystems), the same volume.
	startPod := func(round int, image string) started {
		t.Helper()
		pod := pm.Name(fmt.Sprintf("pod%d", round))
		pm.Run("pod", "create", "--name", pod, "--network", podNet,
			"-p", fmt.Sprintf("%d:%d", listenPort, listenPort))
		pm.Cleanup("pod", "rm", "-f", "-t", "0", pod)
		s := started{pod: pod, sidecar: pod + "-avamar", nginx: pod + "-nginx"}
		pm.Run(append(append([]string{"run", "-d", "--pod", pod, "--name", s.nginx,
			"-v", html + ":/var/www/html:ro"}, testkit.PodmanLimits...), nginxImage)...)
		args := []string{"run", "-d", "--pod", pod, "--name", s.sidecar,
			"--cap-drop", "all", "--security-opt", "no-new-privileges",
			"-v", html + ":/var/www/html",
			"-v", avamar + ":/usr/local/avamar",
			"-v", initd + ":/etc/init.d",
			"-v", sshDir + ":/etc/avsidecar/ssh:ro",
			"-v", browseDir + ":/etc/avsidecar/browse:ro"}
		for _, c := range manifest.capAdd {
			args = append(args, "--cap-add", c)
		}
		for k, v := range env {
			args = append(args, "-e", k+"="+v)
		}
		// No command: the image's ENTRYPOINT and CMD, as in the StatefulSet.
		pm.Run(append(append(args, testkit.PodmanLimits...), image)...)
		s.log = pm.follow(s.sidecar, fmt.Sprintf("avamar[%d]", round))
		s.podIP = pm.inspect(s.sidecar).NetworkSettings.Networks[podNet].IPAddress
		if net.ParseIP(s.podIP) == nil {
			t.Fatalf("pod IP: %q", s.podIP)
		}
		return s
	}

	// Round 1: first start. Installs, registers, becomes ready.
	start := time.Now()
	p1 := startPod(1, siteImage)
	podmanWaitReady(t, pm, p1.sidecar, "http://"+net.JoinHostPort(p1.podIP, "9180")+"/readyz", 3*time.Minute)
	t.Logf("round 1: ready %s after the pod started", time.Since(start).Round(time.Millisecond))
	// The MCS called the agent back at NODE_IP:listenport, through the
	// node's port forward: the per-pod port scheme works end to end.
	reachable := msg("mcs", "agent reachable", "name", "nginx-0")
	mcsLog.WaitN(t, 0, 1, "the MCS reaching the agent", time.Minute, reachable)
	if n := mcsLog.Count(0, msg("mcs", "client registered", "name", "nginx-0")); n != 1 {
		t.Fatalf("MCS registrations of nginx-0 after the first start: %d, want 1", n)
	}
	if _, err := os.Stat(filepath.Join(avamar, "var", "avagent.cfg")); err != nil {
		t.Errorf("registration is not on the volume: %v", err)
	}

	// Every probe of the manifest passes on the running pod.
	for _, path := range manifest.probes {
		if code, body := testkit.Get("http://"+net.JoinHostPort(p1.podIP, "9180")+path, ""); code != http.StatusOK {
			t.Errorf("probe %s: %d %s", path, code, body)
		}
	}

	// nginx serves the shared files; the browser lists the same files.
	if code, body := testkit.Get("http://"+net.JoinHostPort(p1.podIP, "80")+"/", ""); code != 200 || body != page {
		t.Errorf("nginx: %d %q", code, body)
	}
	filesURL := "http://" + net.JoinHostPort(p1.podIP, "9180") + "/v1/files?path=/var/www/html"
	if code, _ := testkit.Get(filesURL, ""); code != http.StatusUnauthorized && code != http.StatusForbidden {
		t.Errorf("browse from another address without the token: %d, want 401 or 403", code)
	}
	code, body := testkit.Get(filesURL, token)
	var listing struct {
		Path    string
		Entries []struct{ Name, Type string }
	}
	if err := json.Unmarshal([]byte(body), &listing); code != 200 || err != nil {
		t.Errorf("browse: %d %v %s", code, err, body)
	} else {
		got := map[string]string{}
		for _, e := range listing.Entries {
			got[e.Name] = e.Type
		}
		if got["index.html"] != "file" || got["assets"] != "dir" || len(got) != 2 {
			t.Errorf("browse /var/www/html: %v, want index.html (file) and assets (dir)", got)
		}
	}

	// SSH with the key in the mounted authorized_keys runs a command.
	knownHosts := filepath.Join(data, "known_hosts")
	sshRun := func(podIP, hostKeyChecking string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, ssh, "-i", key, "-p", sshPort,
			"-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=10",
			// The pod's IP changes between pods; its identity must not.
			"-o", "HostKeyAlias=nginx-0",
			"-o", "UserKnownHostsFile="+knownHosts, "-o", "StrictHostKeyChecking="+hostKeyChecking,
			"root@"+podIP, "cat /var/www/html/index.html && test -f /usr/local/avamar/var/avagent.cfg && echo registered").CombinedOutput()
		if err != nil {
			t.Errorf("ssh: %v\n%s", err, out)
		}
		return string(out)
	}
	if out := sshRun(p1.podIP, "accept-new"); !strings.Contains(out, page+"registered\n") {
		t.Errorf("ssh output %q", out)
	}

	// Memory of the running sidecar, for BENCHMARKS.md (bench/image/run.sh).
	rssSum, pssSum := 0, 0
	pid1 := pm.inspect(p1.sidecar).State.Pid
	tree := podmanTree(t, pid1)
	// The image's ENTRYPOINT in exec form: avsidecar itself is the
	// container's PID 1, no shell in between to swallow SIGTERM.
	for _, pr := range tree {
		if pr.pid == pid1 && pr.comm != "avsidecar" {
			t.Errorf("the container's PID 1 is %s, not avsidecar", pr.comm)
		}
	}
	for _, pr := range tree {
		t.Logf("bench: pid=%d comm=%s rss_kib=%d hwm_kib=%d pss_kib=%d cmd=%q", pr.pid, pr.comm, pr.rssKiB, pr.hwmKiB, pr.pssKiB, pr.cmdline)
		if pr.comm == "avsidecar" {
			rssSum, pssSum = rssSum+pr.rssKiB, pssSum+pr.pssKiB
		}
	}
	t.Logf("bench: avsidecar_rss_kib=%d avsidecar_pss_kib=%d", rssSum, pssSum)

	// podman stop: SIGTERM, then SIGKILL after the grace period. avsidecar
	// must be gone with 0 well before.
	stopAndCheck := func(s started) {
		t.Helper()
		grace := manifest.grace
		begin := time.Now()
		pm.Run("stop", "-t", strconv.Itoa(grace), s.sidecar)
		took := time.Since(begin)
		st := pm.inspect(s.sidecar).State
		t.Logf("stop took %s, exit code %d", took.Round(time.Millisecond), st.ExitCode)
		if st.ExitCode != 0 {
			t.Errorf("sidecar exit code %d after podman stop, want 0", st.ExitCode)
		}
		if took >= time.Duration(grace)*time.Second {
			t.Errorf("stop took %s, not inside the grace period %ds", took, grace)
		}
		pm.Run("stop", "-t", "10", s.nginx)
		// Deleted, as the StatefulSet deletes a pod before making its
		// successor: the published port is free again.
		pm.Run("pod", "rm", s.pod)
	}
	unreachable := msg("mcs", "agent unreachable", "name", "nginx-0")
	before := mcsLog.Count(0, unreachable)
	stopAndCheck(p1)
	// The MCS notices the agent gone (it calls back every 2s), so its
	// reaching the next one is news.
	mcsLog.WaitN(t, 0, before+1, "the MCS noticing the agent gone", time.Minute, unreachable)
	reachedBefore := mcsLog.Count(0, reachable)

	// Round 2: a new pod on the same volume. Nothing is installed or
	// registered again, and the SSH host key is the same.
	p2 := startPod(2, siteImage)
	podmanWaitReady(t, pm, p2.sidecar, "http://"+net.JoinHostPort(p2.podIP, "9180")+"/readyz", 2*time.Minute)
	mcsLog.WaitN(t, 0, reachedBefore+1, "the MCS reaching the restarted agent", time.Minute, reachable)
	if n := mcsLog.Count(0, msg("mcs", "client registered", "name", "nginx-0")); n != 1 {
		t.Errorf("MCS registrations of nginx-0 after the restart: %d, want still 1", n)
	}
	// Ready implies the install step is over (startup needs it): whatever
	// it did, it must not have installed the package or run its scriptlets.
	p2.log.WaitN(t, 0, 1, "the registration receipt honoured", time.Minute, msg("register", "already registered, not registering again"))
	for _, what := range []struct{ component, message string }{
		{"install", "package installed"},
		{"install", "scriptlet started"},
		{"register", "registered"},
	} {
		if n := p2.log.Count(0, msg(what.component, what.message)); n != 0 {
			t.Errorf("the restarted sidecar logged %s %q %d times: it installed or registered again", what.component, what.message, n)
		}
	}
	if out := sshRun(p2.podIP, "yes"); !strings.Contains(out, "registered\n") {
		t.Errorf("ssh after restart: %q", out)
	}
	stopAndCheck(p2)

	// Round 3: the README's RPM upgrade. A site image with a newer client
	// on the same volume installs it once and keeps the registration.
	upImage, newRPM := pm.SiteImage(productImage, "localhost/avsidecar-test-site:"+pm.ID+"-up", testkit.RPMOptions{Version: "7.5.102"})
	p3 := startPod(3, upImage)
	podmanWaitReady(t, pm, p3.sidecar, "http://"+net.JoinHostPort(p3.podIP, "9180")+"/readyz", 2*time.Minute)
	p3.log.WaitN(t, 0, 1, "the new client installed", time.Minute, msg("install", "package installed", "version", "7.5.102-"+testkit.DefaultRPMRelease))
	if n := mcsLog.Count(0, msg("mcs", "client registered", "name", "nginx-0")); n != 1 {
		t.Errorf("MCS registrations of nginx-0 after the upgrade to %s: %d, want still 1", filepath.Base(newRPM), n)
	}
	if n := p3.log.Count(0, msg("register", "registered")); n != 0 {
		t.Errorf("the upgraded sidecar registered again")
	}
	stopAndCheck(p3)
}

// exampleSidecar is what the test takes from examples/nginx/statefulset.yaml,
// so the pod runs with the manifest's rights and settings.
type exampleSidecar struct {
	capAdd []string
	env    map[string]string
	grace  int
	// probes are the paths of the startup and liveness probes (the
	// example has no readiness probe on the sidecar).
	probes []string
}

func loadExampleSidecar(t *testing.T) exampleSidecar {
	t.Helper()
	root, err := testkit.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(root, "examples/nginx/statefulset.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var sts appsv1.StatefulSet
	if err := yaml.UnmarshalStrict(b, &sts); err != nil {
		t.Fatal(err)
	}
	spec := sts.Spec.Template.Spec
	e := exampleSidecar{env: map[string]string{}, grace: 30}
	if spec.TerminationGracePeriodSeconds != nil {
		e.grace = int(*spec.TerminationGracePeriodSeconds)
	}
	var ct *corev1.Container
	for i := range spec.Containers {
		if spec.Containers[i].Name == "avamar" {
			ct = &spec.Containers[i]
		}
	}
	if ct == nil || ct.SecurityContext == nil || ct.SecurityContext.Capabilities == nil {
		t.Fatal("statefulset.yaml: no avamar container with capabilities")
	}
	for _, c := range ct.SecurityContext.Capabilities.Add {
		e.capAdd = append(e.capAdd, string(c))
	}
	for _, p := range []*corev1.Probe{ct.StartupProbe, ct.LivenessProbe} {
		if p == nil || p.HTTPGet == nil {
			t.Fatal("statefulset.yaml: the avamar container lacks an httpGet probe")
		}
		e.probes = append(e.probes, p.HTTPGet.Path)
	}
	for _, v := range ct.Env {
		if v.ValueFrom == nil {
			e.env[v.Name] = v.Value
		}
	}
	for _, k := range []string{"AVSIDECAR_SSH_ADDR", "AVSIDECAR_SHUTDOWN_TIMEOUT"} {
		if e.env[k] == "" {
			t.Fatalf("statefulset.yaml: the avamar container sets no %s", k)
		}
	}
	return e
}

// podmanWaitReady polls the readiness probe as the kubelet does, until 200. It
// fails at once when the container stops.
func podmanWaitReady(t *testing.T, pm *podman, container, url string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	last := ""
	for time.Now().Before(deadline) {
		code, body := testkit.Get(url, "")
		if code == http.StatusOK {
			return
		}
		last = fmt.Sprintf("%d %s", code, body)
		if st := pm.inspect(container).State; !st.Running {
			t.Fatalf("%s stopped (%s, exit %d) before ready; last probe: %s", container, st.Status, st.ExitCode, last)
		}
		<-tick.C
	}
	t.Fatalf("%s not ready within %s; last probe: %s", url, timeout, last)
}

// podmanProc is one process of a container, seen from the host.
type podmanProc struct {
	pid    int
	comm   string
	rssKiB int
	hwmKiB int
	// pssKiB is the proportional set size: pages shared between
	// processes counted once in total.
	pssKiB  int
	cmdline string
}

// podmanTree returns the process pid (a container's PID 1) and its
// descendants, with their resident memory, from the host's /proc.
func podmanTree(t *testing.T, pid int) []podmanProc {
	t.Helper()
	in := []int{pid}
	for _, p := range descendants(pid) {
		in = append(in, p.PID)
	}
	var out []podmanProc
	for _, p := range in {
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p))
		if err != nil {
			continue
		}
		cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p))
		pr := podmanProc{pid: p, cmdline: strings.TrimSpace(strings.ReplaceAll(string(cmd), "\x00", " "))}
		for _, l := range strings.Split(string(st), "\n") {
			k, v, _ := strings.Cut(l, ":")
			f := strings.Fields(v)
			switch {
			case k == "Name" && len(f) > 0:
				pr.comm = f[0]
			case k == "VmRSS" && len(f) > 0:
				pr.rssKiB, _ = strconv.Atoi(f[0])
			case k == "VmHWM" && len(f) > 0:
				pr.hwmKiB, _ = strconv.Atoi(f[0])
			}
		}
		if sm, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", p)); err == nil {
			for _, l := range strings.Split(string(sm), "\n") {
				if f := strings.Fields(l); len(f) >= 2 && f[0] == "Pss:" {
					pr.pssKiB, _ = strconv.Atoi(f[1])
				}
			}
		}
		out = append(out, pr)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].pid < out[j].pid })
	return out
}

// podmanFreePort is a TCP port free on the host now, for the pod's
// published avagent port.
func podmanFreePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func podmanWriteFile(t *testing.T, p, s string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}
