package k8s

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/avsidecar/avsidecar/internal/testkit"
)

// identityFiles are what makes the pod the same Avamar client and the same
// SSH host wherever it runs: the registration (avagent.cfg, cid.bin), the
// pinned name and port (.avagent), the stand-ins of the certificate files
// the server installs on a registered client (Dell KB 000222278; the kit's
// names), the install receipt and the SSH host keys.
var identityFiles = []string{
	"/var/avamar/avagent.cfg", "/var/avamar/cid.bin", "/var/avamar/.avagent",
	"/var/avamar/avkit-server-key.pem", "/var/avamar/avkit-client-cert.pem",
	"/usr/local/avamar/var/avsidecar/install.json",
	"/usr/local/avamar/var/avsidecar/ssh_host_ed25519_key", "/usr/local/avamar/var/avsidecar/ssh_host_rsa_key",
}

// identity returns the SHA-256 of each identity file as the pod sees it,
// and its avagent.cmd.
func identity(c *cluster, ns, pod string) (map[string]string, string) {
	c.t.Helper()
	out := c.must(append([]string{"exec", "-n", ns, pod, "-c", "avamar", "--", "sha256sum"}, identityFiles...)...)
	sums := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) == 2 {
			sums[f[1]] = f[0]
		}
	}
	if len(sums) != len(identityFiles) {
		c.t.Fatalf("%s: sha256sum of the identity files: %s", pod, out)
	}
	return sums, c.must("exec", "-n", ns, pod, "-c", "avamar", "--", "cat", "/var/avamar/avagent.cmd")
}

// moveOff cordons the node pod runs on and deletes the pod: the
// StatefulSet makes it again, and the scheduler puts it on the other node.
// The node is uncordoned once the pod is Ready there.
func (c *cluster) moveOff(ns, pod string) (from, to node, p corev1.Pod) {
	c.t.Helper()
	old, _ := c.pod(ns, pod)
	from = c.nodeOf(old)
	c.must("cordon", from.name)
	defer c.must("uncordon", from.name)
	begin := time.Now()
	c.must("delete", "pod", "-n", ns, pod, "--wait")
	p = c.waitPod(ns, pod, string(old.UID), 3*time.Minute)
	to = c.nodeOf(p)
	c.t.Logf("%s: moved from %s (%s) to %s (%s), Ready %s after the delete", pod, from.name, from.ip, to.name, to.ip, time.Since(begin).Round(time.Second))
	if to.name == from.name {
		c.t.Fatalf("%s came back on the cordoned node %s", pod, from.name)
	}
	return from, to, p
}

// move proves the promise of a StatefulSet's identity: cordon the node
// nginx-0 runs on and delete the pod; it comes back on the other node, on
// the same volume, as the same client, and the Avamar server reaches it at
// its new node. Then it moves back. Then both replicas run on different
// nodes at once, each reached at its own.
func move(t *testing.T, c *cluster, mcs *testkit.MCS, ssh sshClient, key, ns string) {
	const pod, port = "nginx-0", 31000
	for _, leg := range []string{"to the other node", "back"} {
		t.Logf("nginx-0 moves %s", leg)
		sums0, cmd0 := identity(c, ns, pod)
		regs, checkIns := mcs.Count(pod), mcs.CheckIns(pod)
		from, to, p := c.moveOff(ns, pod)
		if p.Status.HostIP != to.ip {
			t.Errorf("%s: status.hostIP %s on %s (%s)", pod, p.Status.HostIP, to.name, to.ip)
		}

		// No reinstall, no registration: the pod's log, and the server's
		// own count.
		logs := testkit.NewLogLines()
		if _, err := logs.Write([]byte(c.must("logs", "-n", ns, pod, "-c", "avamar") + "\n")); err != nil {
			t.Fatal(err)
		}
		for _, m := range []struct{ comp, msg string }{{"install", "package installed"}, {"install", "scriptlet started"}, {"register", "registered"}} {
			if n := logs.Count(0, testkit.Msg(m.comp, m.msg)); n != 0 {
				t.Errorf("%s on %s logged %s %q %d times", pod, to.name, m.comp, m.msg, n)
			}
		}
		if logs.Count(0, testkit.Msg("register", "already registered, not registering again")) != 1 {
			t.Errorf("%s on %s did not log that it is already registered", pod, to.name)
		}
		ctx, cancel := contextTimeout(2 * time.Minute)
		if err := mcs.WaitCheckIns(ctx, pod, checkIns+1); err != nil {
			t.Error(err)
		}
		if err := mcs.WaitReachable(ctx, pod); err != nil {
			t.Error(err)
		}
		cancel()
		ip, lport, _ := mcs.CallbackAddr(pod)
		t.Logf("MCS: %s registered %d time(s) (before the move %d), check-ins %d -> %d, calls it back at %s:%d, reachable=%v",
			pod, mcs.Count(pod), regs, checkIns, mcs.CheckIns(pod), ip, lport, mcs.Reachable(pod))
		if mcs.Count(pod) != regs || regs != 1 || ip != to.ip || lport != port {
			t.Errorf("MCS: %s registered %d times (want still 1), called back at %s:%d (want %s:%d)", pod, mcs.Count(pod), ip, lport, to.ip, port)
		}

		// The same SSH host, the same client.
		if out, err := ssh.run(c.portForward(ns, "pod/"+pod, 2222), pod, key, "yes", "echo same host key"); err != nil {
			t.Errorf("ssh to %s on %s with the known host key: %v", pod, to.name, err)
		} else {
			t.Logf("ssh StrictHostKeyChecking=yes to %s on %s: %q", pod, to.name, strings.TrimSpace(out))
		}
		sums1, cmd1 := identity(c, ns, pod)
		for _, f := range identityFiles {
			if sums0[f] != sums1[f] {
				t.Errorf("%s changed in the move: %s -> %s", f, sums0[f], sums1[f])
			}
		}
		t.Logf("identity files unchanged across the move (%d: %s)", len(identityFiles), strings.Join(identityFiles, ", "))
		t.Logf("avagent.cmd on %s: %q; on %s: %q", from.name, cmd0, to.name, cmd1)
		if !strings.Contains("\n"+cmd0+"\n", "\n--iplist="+from.ip+"\n") || !strings.Contains("\n"+cmd1+"\n", "\n--iplist="+to.ip+"\n") {
			t.Errorf("avagent.cmd: %q before, %q after: want --iplist %s then %s", cmd0, cmd1, from.ip, to.ip)
		}

		// The server reaches the agent at the new node's address. At the
		// old node's, the NodePort (externalTrafficPolicy: Local, as
		// shipped) answers only traffic that node itself sends: the
		// server runs on the host, the first node.
		reach(t, mcs, pod, to, port, true)
		reach(t, mcs, pod, from, port, from.netns == "")
	}

	// Both replicas at once on different nodes, each reached at its own.
	p0, _ := c.pod(ns, "nginx-0")
	if p1, _ := c.pod(ns, "nginx-1"); p1.Spec.NodeName == p0.Spec.NodeName {
		c.moveOff(ns, "nginx-1")
	}
	seen := map[string]string{}
	for i := range 2 {
		name, port := fmt.Sprintf("nginx-%d", i), 31000+i
		p, _ := c.pod(ns, name)
		n := c.nodeOf(p)
		seen[n.name] = name
		ctx, cancel := contextTimeout(2 * time.Minute)
		err := mcs.WaitReachable(ctx, name)
		cancel()
		if err != nil {
			t.Error(err)
		}
		ip, lport, _ := mcs.CallbackAddr(name)
		t.Logf("%s on %s: the MCS calls it back at %s:%d", name, n.name, ip, lport)
		if ip != n.ip || lport != port {
			t.Errorf("%s on %s (%s): called back at %s:%d", name, n.name, n.ip, ip, lport)
		}
		reach(t, mcs, name, n, port, true)
	}
	if len(seen) != 2 {
		t.Errorf("the replicas share a node: %v", seen)
	}
}

// reach pings pod's agent at n's address, as the MCS calls it back, and
// checks whether it answers as want says.
func reach(t *testing.T, mcs *testkit.MCS, pod string, n node, port int, want bool) {
	t.Helper()
	addr := net.JoinHostPort(n.ip, strconv.Itoa(port))
	ctx, cancel := contextTimeout(5 * time.Second)
	defer cancel()
	err := mcs.PingAt(ctx, addr, pod)
	t.Logf("the MCS (on the host) pings %s at %s (%s): %v", pod, addr, n.name, errOr(err, "answered"))
	if (err == nil) != want {
		t.Errorf("ping %s at %s (%s): %v, want answered=%v", pod, addr, n.name, err, want)
	}
}

// errOr is err's text, or ok when err is nil.
func errOr(err error, ok string) string {
	if err == nil {
		return ok
	}
	return err.Error()
}
