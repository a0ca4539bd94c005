package k8s

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/avsidecar/avsidecar/internal/testkit"
)

// The second node: a network namespace of its own, joined to the host (the
// first node) by a veth pair, with its own pod range and bridge. Its
// programs run on the host's filesystem and mounts (nsenter --net only),
// as a node's do on its own machine, so the kubelet's volume mounts are
// the ones its containerd sees; a hostPath PersistentVolume on the host is
// then reachable from both nodes, the stand-in for network storage.
const (
	node2Name = "avsk8s-node2"
	// node2Netns is the node's network namespace, in /run/netns.
	node2Netns = "avsk8s-node2"
	// node2IP is the node's address, on its end of the veth pair;
	// node2Gateway is the host's end.
	node2IP      = "10.245.0.2"
	node2Gateway = "10.245.0.1"
	node2Veth    = "avsk8s-n2"
	node2Bridge  = "avsk8s1"
	node2PodCIDR = "10.244.1.0/24"
	// node2CgroupRoot is the second kubelet's cgroup root: each kubelet
	// removes the pod cgroups under its root that are not its pods', so
	// the two must not share one.
	node2CgroupRoot = "avsk8s-node2"
	// clusterCIDR holds both nodes' pod ranges: kube-proxy's "from a pod".
	clusterCIDR = "10.244.0.0/16"
)

// node is one node of the cluster.
type node struct {
	name, ip, podCIDR, bridge string
	// dir holds the node's files (the cluster's dir for the first node).
	dir string
	// netns is the node's network namespace; "" is the host's.
	netns string
	// suffix tells the node's programs apart in the cluster's procs and
	// logs ("" for the first node).
	suffix string
	// cgroupRoot is the kubelet's cgroup root; "" is /.
	cgroupRoot string
	// kubeletPort is the kubelet's port; 0 takes a free one.
	kubeletPort int
}

// sock is the node's containerd socket.
func (n node) sock() string { return filepath.Join(n.dir, "containerd", "containerd.sock") }

// secondNode is the second node, its files under the cluster's dir.
func secondNode(dir string) node {
	return node{
		name: node2Name, ip: node2IP, podCIDR: node2PodCIDR, bridge: node2Bridge,
		dir: filepath.Join(dir, "n2"), netns: node2Netns, suffix: "-2", cgroupRoot: node2CgroupRoot,
		// Its own network namespace: the kubelet's usual port is free.
		kubeletPort: 10250,
	}
}

// nodeByName returns the node of that name.
func (c *cluster) nodeByName(name string) node {
	c.t.Helper()
	for _, n := range c.nodes {
		if n.name == name {
			return n
		}
	}
	c.t.Fatalf("no node %q", name)
	return node{}
}

// ip runs ip(8) and fails the test on an error.
func (c *cluster) ip(args ...string) {
	c.t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		c.t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// netnsNode makes n's network namespace, the veth pair that joins it to
// the host, the routes both ways (the host reaches n's pods through n; n
// reaches everything else through the host), and n's cgroup root.
func (c *cluster) netnsNode(n node) {
	c.t.Helper()
	c.removeNetnsNode(n) // what a killed run left
	c.ip("netns", "add", n.netns)
	c.ip("link", "add", node2Veth, "type", "veth", "peer", "name", "eth0", "netns", n.netns)
	c.ip("addr", "add", node2Gateway+"/30", "dev", node2Veth)
	c.ip("link", "set", node2Veth, "up")
	c.ip("-n", n.netns, "link", "set", "lo", "up")
	c.ip("-n", n.netns, "addr", "add", n.ip+"/30", "dev", "eth0")
	c.ip("-n", n.netns, "link", "set", "eth0", "up")
	c.ip("-n", n.netns, "route", "add", "default", "via", node2Gateway)
	c.ip("route", "add", n.podCIDR, "via", n.ip, "dev", node2Veth)
	// The node routes between its pods and the rest (the bridge plugin
	// turns this on too, but only once the first pod starts).
	if out, err := exec.Command("nsenter", "--net="+filepath.Join(netnsDir, n.netns), "--", "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward").CombinedOutput(); err != nil {
		c.t.Fatalf("ip_forward in %s: %v\n%s", n.netns, err, out)
	}
	// The kubelet wants its cgroup root in every hierarchy; a new cpuset
	// cgroup has no CPUs or memory nodes until it is given its parent's.
	roots, _ := filepath.Glob("/sys/fs/cgroup/*")
	for _, r := range roots {
		if _, err := os.Stat(filepath.Join(r, "cgroup.procs")); err != nil {
			continue
		}
		d := filepath.Join(r, n.cgroupRoot)
		if err := os.Mkdir(d, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			c.t.Fatal(err)
		}
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			if b, err := os.ReadFile(filepath.Join(r, f)); err == nil {
				if err := os.WriteFile(filepath.Join(d, f), b, 0o644); err != nil {
					c.t.Fatal(err)
				}
			}
		}
	}
}

// removeNetnsNode removes n's network namespace (its bridge, its iptables
// rules and its end of the veth pair go with it; the host's end and route
// follow) and n's cgroups.
func (c *cluster) removeNetnsNode(n node) {
	if _, err := os.Stat(filepath.Join(netnsDir, n.netns)); err == nil {
		if out, err := exec.Command("ip", "netns", "del", n.netns).CombinedOutput(); err != nil {
			c.t.Errorf("teardown: ip netns del %s: %v %s", n.netns, err, out)
		}
	}
	if _, err := net.InterfaceByName(node2Veth); err == nil {
		if out, err := exec.Command("ip", "link", "del", node2Veth).CombinedOutput(); err != nil {
			c.t.Errorf("teardown: ip link del %s: %v %s", node2Veth, err, out)
		}
	}
	removeCgroups(c.t, n.cgroupRoot)
}

// startIn starts a program of the cluster binary on node n.
func (c *cluster) startIn(n node, name string, args ...string) {
	c.t.Helper()
	c.startPathIn(n, name, filepath.Join(c.bin, name), args...)
}

// startPathIn starts the program at path on node n, as name and n's
// suffix: in n's network namespace, if it has one.
func (c *cluster) startPathIn(n node, name, path string, args ...string) {
	c.t.Helper()
	if n.netns == "" {
		c.startPath(name+n.suffix, path, args...)
		return
	}
	c.startPath(name+n.suffix, "nsenter", append([]string{"--net=" + filepath.Join(netnsDir, n.netns), "--", path}, args...)...)
}

// startNode starts n's containerd, with the images imported, its kubelet
// and its kube-proxy.
func (c *cluster) startNode(n node, images string) {
	c.t.Helper()
	t := c.t
	pki := func(name string) string { return filepath.Join(c.dir, "pki", name) }
	sock := n.sock()
	c.writeFile(filepath.Join(n.dir, "containerd", "config.toml"), fmt.Sprintf(containerdConfig,
		filepath.Join(n.dir, "containerd", "root"), filepath.Join(n.dir, "containerd", "state"), sock,
		filepath.Join(n.dir, "containerd", "opt"), pauseImage, filepath.Join(n.dir, "containerd", "runc"), filepath.Join(n.dir, "cni", "net.d")))
	c.writeFile(filepath.Join(n.dir, "cni", "net.d", "10-avsk8s.conflist"), fmt.Sprintf(cniConfig,
		n.bridge, n.podCIDR, filepath.Join(n.dir, "cni", "ipam")))
	c.startPathIn(n, "containerd", "containerd", "--config", filepath.Join(n.dir, "containerd", "config.toml"))
	c.waitFor(n.name+"'s containerd socket", time.Minute, func() error {
		return exec.Command("ctr", "--address", sock, "version").Run()
	})
	importStart := time.Now()
	if out, err := exec.Command("ctr", "--address", sock, "-n", "k8s.io", "images", "import", images).CombinedOutput(); err != nil {
		t.Fatalf("ctr images import on %s: %v\n%s", n.name, err, out)
	}
	t.Logf("bench: images imported into %s's containerd in %s", n.name, time.Since(importStart).Round(100*time.Millisecond))

	port := n.kubeletPort
	if port == 0 {
		port = testkit.FreePort(t)
	}
	kubeletConf := filepath.Join(n.dir, "kubelet.yaml")
	conf := fmt.Sprintf(kubeletConfig, pki("ca.crt"), sock, port, filepath.Join(n.dir, "pod-logs"))
	if n.cgroupRoot != "" {
		conf += "cgroupRoot: /" + n.cgroupRoot + "\n"
	}
	c.writeFile(kubeletConf, conf)
	c.startIn(n, "kubelet", "--config="+kubeletConf, "--kubeconfig="+c.kubeconfig,
		"--root-dir="+filepath.Join(n.dir, "kubelet"), "--cert-dir="+filepath.Join(n.dir, "kubelet-pki"),
		"--hostname-override="+n.name, "--node-ip="+n.ip, "--v=2")
	proxyConf := filepath.Join(n.dir, "kube-proxy.yaml")
	c.writeFile(proxyConf, fmt.Sprintf(proxyConfig, c.kubeconfig, clusterCIDR, n.name,
		testkit.FreePort(t), testkit.FreePort(t)))
	c.startIn(n, "kube-proxy", "--config="+proxyConf)
}
