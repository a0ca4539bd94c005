// Package k8s proves examples/nginx on a real Kubernetes cluster of two
// nodes that the test builds, starts and tears down itself: etcd, the
// control plane, and on each node a kubelet and kube-proxy, from one
// binary built from the pinned wrapper module in cluster/; containerd,
// runc and the CNI plugins from Debian; images built with podman and
// imported into each node's containerd (no registry). The first node is
// the host; the second has a network namespace of its own (nodes_test.go).
// See TestNginxExample for what is proved.
package k8s

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/avsidecar/avsidecar/internal/testkit"
)

// The cluster's fixed names and ranges. The pod and service ranges are
// private ranges that live only on this host: pods on the bridge, service
// addresses in kube-proxy's rules.
const (
	nodeName    = "avsk8s-node"
	bridgeName  = "avsk8s0"
	podCIDR     = "10.244.0.0/24"
	serviceCIDR = "10.96.0.0/24"
	// pauseImage is the sandbox image, built from ./pause.
	pauseImage = "localhost/avsk8s-pause:1"
)

// programs are the names the cluster binary answers to (cluster/main.go).
var programs = []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "kubectl"}

// cluster is one running cluster of two nodes.
type cluster struct {
	t   *testing.T
	dir string
	// nodes are the cluster's nodes: the host, and one in a network
	// namespace of its own.
	nodes []node
	// bin holds the program names, links to the cluster binary.
	bin    string
	nodeIP string
	// apiserver is the API server's https URL.
	apiserver  string
	kubeconfig string
	// sock is the first node's containerd socket, also in its shims'
	// command lines (the second's is under dir).
	sock  string
	procs map[string]*proc
	// hostDirs are the directories outside dir that the node's programs
	// create where they please (containerd's shim sockets, the kubelet's
	// log links), with whether each existed before the cluster started:
	// teardown removes the new ones if they are empty.
	hostDirs map[string]bool
	// madeNetnsMount is true when guardNetnsDir made /run/netns a mount
	// point, which teardown undoes when nothing else uses it.
	madeNetnsMount bool
	// netnsBefore are the entries of /var/run/netns before containerd
	// started, so teardown removes only the sandboxes' own.
	netnsBefore map[string]bool
}

// proc is one program of the cluster, running in its own process group,
// its output in a log file under the cluster's directory.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

// clusterCache keeps the last cluster binary built on this host, under a
// key of its sources and the Go version: a warm run skips even the link
// (half a minute on 2 cores).
const clusterCache = "/var/tmp/avsidecar-k8s-cluster"

// buildCluster builds the cluster binary from the wrapper module, or takes
// it from clusterCache, and returns the directory of its program links.
func buildCluster(t *testing.T, dir string) string {
	t.Helper()
	root, err := testkit.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(root, "integration", "k8s", "cluster")
	goVersion, err := exec.Command("go", "env", "GOVERSION").Output()
	if err != nil {
		t.Fatalf("go env GOVERSION: %v", err)
	}
	h := sha256.New()
	h.Write(goVersion)
	for _, f := range []string{"go.mod", "go.sum", "main.go"} {
		b, err := os.ReadFile(filepath.Join(src, f))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(h, "%s %d\n", f, len(b))
		h.Write(b)
	}
	cached := filepath.Join(clusterCache, hex.EncodeToString(h.Sum(nil))[:16], "cluster")
	start := time.Now()
	if _, err := os.Stat(cached); err != nil {
		// Another version's binary is of no more use.
		_ = os.RemoveAll(clusterCache)
		if err := os.MkdirAll(filepath.Dir(cached), 0o755); err != nil {
			t.Fatal(err)
		}
		tmp := cached + ".tmp"
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", tmp, ".")
		cmd.Dir = src
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOWORK=off")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build the cluster binary: %v\n%s", err, out)
		}
		if err := os.Rename(tmp, cached); err != nil {
			t.Fatal(err)
		}
		t.Logf("bench: cluster binary built in %s", time.Since(start).Round(100*time.Millisecond))
	} else {
		t.Logf("bench: cluster binary taken from %s", cached)
	}
	bin := filepath.Join(dir, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, p := range programs {
		if err := os.Symlink(cached, filepath.Join(bin, p)); err != nil {
			t.Fatal(err)
		}
	}
	return bin
}

// needHost needs what the cluster runs on: root, containerd and its
// tools, the CNI plugins, iptables, and a node address.
func needHost(t *testing.T) {
	t.Helper()
	testkit.NeedRoot(t)
	for _, c := range []string{"containerd", "containerd-shim-runc-v2", "ctr", "runc", "iptables", "iptables-save", "ip", "mount", "umount", "podman"} {
		testkit.NeedCommand(t, c)
	}
	for _, p := range []string{"bridge", "host-local", "loopback"} {
		_, err := os.Stat(filepath.Join("/usr/lib/cni", p))
		testkit.Need(t, err == nil, "the CNI plugin /usr/lib/cni/"+p+" (Debian's containernetworking-plugins)")
	}
}

// startCluster starts a cluster whose node address is nodeIP, with the
// images in the archive images (podman save) imported into its
// containerd, and stops it, leaving nothing behind, when the test ends.
func startCluster(t *testing.T, bin, nodeIP, images string) *cluster {
	t.Helper()
	// Short: unix socket paths under it must stay within 108 bytes.
	dir, err := os.MkdirTemp("", "avsk8s-")
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{t: t, dir: dir, bin: bin, nodeIP: nodeIP, procs: map[string]*proc{}}
	t.Cleanup(c.teardown)
	begin := time.Now()
	c.pki()

	// etcd, on loopback.
	etcdPort, peerPort := testkit.FreePort(t), testkit.FreePort(t)
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", etcdPort)
	c.start("etcd", "--name=avsk8s", "--data-dir="+filepath.Join(dir, "etcd"),
		"--listen-client-urls="+etcdURL, "--advertise-client-urls="+etcdURL,
		fmt.Sprintf("--listen-peer-urls=http://127.0.0.1:%d", peerPort),
		fmt.Sprintf("--initial-advertise-peer-urls=http://127.0.0.1:%d", peerPort),
		fmt.Sprintf("--initial-cluster=avsk8s=http://127.0.0.1:%d", peerPort),
		"--unsafe-no-fsync", "--log-level=warn")
	c.waitHTTP("etcd", etcdURL+"/health", nil)

	// The control plane, all with the admin identity (system:masters).
	apiPort := testkit.FreePort(t)
	c.apiserver = fmt.Sprintf("https://%s", net.JoinHostPort(nodeIP, strconv.Itoa(apiPort)))
	pki := func(name string) string { return filepath.Join(dir, "pki", name) }
	c.start("kube-apiserver", "--etcd-servers="+etcdURL,
		"--bind-address="+nodeIP, "--advertise-address="+nodeIP, fmt.Sprintf("--secure-port=%d", apiPort),
		"--service-cluster-ip-range="+serviceCIDR, "--authorization-mode=RBAC",
		"--client-ca-file="+pki("ca.crt"), "--tls-cert-file="+pki("apiserver.crt"), "--tls-private-key-file="+pki("apiserver.key"),
		"--kubelet-client-certificate="+pki("admin.crt"), "--kubelet-client-key="+pki("admin.key"),
		// The node's name does not resolve: reach the kubelet at its IP.
		"--kubelet-preferred-address-types=InternalIP",
		"--service-account-issuer=https://kubernetes.default.svc", "--service-account-key-file="+pki("sa.pub"),
		"--service-account-signing-key-file="+pki("sa.key"), "--api-audiences=https://kubernetes.default.svc",
		"--profiling=false")
	c.kubeconfig = filepath.Join(dir, "kubeconfig")
	c.writeFile(c.kubeconfig, fmt.Sprintf(kubeconfigTemplate, c.apiserver, pki("ca.crt"), pki("admin.crt"), pki("admin.key")))
	c.waitHTTP("kube-apiserver", c.apiserver+"/readyz", c.adminTLS())
	c.start("kube-controller-manager", "--kubeconfig="+c.kubeconfig, "--leader-elect=false", "--secure-port=0",
		"--service-account-private-key-file="+pki("sa.key"), "--root-ca-file="+pki("ca.crt"),
		"--use-service-account-credentials=false")
	c.start("kube-scheduler", "--kubeconfig="+c.kubeconfig, "--leader-elect=false", "--secure-port=0")

	// The nodes: each with its containerd, kubelet and kube-proxy; the
	// second in a network namespace of its own, routed to the first.
	c.guardNetnsDir()
	c.hostDirs = map[string]bool{}
	for _, d := range []string{"/run/containerd/s", "/run/containerd/runc", "/run/containerd", "/var/log/containers", "/var/log/pods"} {
		_, err := os.Stat(d)
		c.hostDirs[d] = err == nil
	}
	c.netnsBefore = map[string]bool{}
	if entries, err := os.ReadDir(netnsDir); err == nil {
		for _, e := range entries {
			c.netnsBefore[e.Name()] = true
		}
	}
	first := node{name: nodeName, ip: nodeIP, podCIDR: podCIDR, bridge: bridgeName, dir: dir}
	second := secondNode(dir)
	c.nodes = []node{first, second}
	c.sock = first.sock()
	c.netnsNode(second)
	c.startNode(first, images)
	c.startNode(second, images)
	for _, n := range c.nodes {
		c.waitFor("the node "+n.name+" Ready", 3*time.Minute, func() error {
			out, err := c.kubectl("get", "node", n.name, "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)
			if err != nil {
				return err
			}
			if out != "True" {
				return fmt.Errorf("Ready=%q", out)
			}
			return nil
		})
	}
	// The first Pod is refused until its ServiceAccount exists.
	c.waitFor("the default ServiceAccount", 2*time.Minute, func() error {
		_, err := c.kubectl("get", "serviceaccount", "default", "-n", "default")
		return err
	})
	t.Logf("bench: cluster up in %s (nodes %s at %s, %s at %s)", time.Since(begin).Round(100*time.Millisecond), first.name, first.ip, second.name, second.ip)
	return c
}

// in returns the cluster for use in the (sub)test t, whose failures end t.
func (c *cluster) in(t *testing.T) *cluster {
	cc := *c
	cc.t = t
	return &cc
}

// kubectl runs kubectl against the cluster and returns its trimmed stdout.
func (c *cluster) kubectl(args ...string) (string, error) {
	return c.kubectlIn(nil, args...)
}

// kubectlIn is kubectl with stdin.
func (c *cluster) kubectlIn(stdin []byte, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(c.bin, "kubectl"), args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+c.kubeconfig)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("kubectl %s: %w\n%s%s", strings.Join(args, " "), err, stdout.Bytes(), stderr.Bytes())
	}
	return strings.TrimSpace(stdout.String()), nil
}

// must is kubectl that fails the test on an error.
func (c *cluster) must(args ...string) string {
	c.t.Helper()
	out, err := c.kubectl(args...)
	if err != nil {
		c.t.Fatal(err)
	}
	return out
}

// apply is `kubectl apply -f -` of manifest.
func (c *cluster) apply(namespace string, manifest []byte) {
	c.t.Helper()
	if _, err := c.kubectlIn(manifest, "apply", "-n", namespace, "-f", "-"); err != nil {
		c.t.Fatal(err)
	}
}

// portForward runs `kubectl port-forward` to target's port and returns the
// local address; it stops when the test ends.
func (c *cluster) portForward(namespace, target string, port int) string {
	c.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, filepath.Join(c.bin, "kubectl"), "port-forward", "-n", namespace, "--address=127.0.0.1", target, fmt.Sprintf(":%d", port))
	cmd.Env = append(os.Environ(), "KUBECONFIG="+c.kubeconfig)
	out, err := cmd.StdoutPipe()
	if err != nil {
		c.t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
	})
	// "Forwarding from 127.0.0.1:40123 -> 9180"
	re := regexp.MustCompile(`Forwarding from (127\.0\.0\.1:\d+) ->`)
	lines := bufio.NewScanner(out)
	for lines.Scan() {
		if m := re.FindStringSubmatch(lines.Text()); m != nil {
			go func() { _, _ = io.Copy(io.Discard, out) }()
			return m[1]
		}
	}
	_ = cmd.Wait()
	c.t.Fatalf("kubectl port-forward %s %d: no forwarding\n%s", target, port, stderr.Bytes())
	return ""
}

// netnsDir is where containerd, `ip netns add` and podman keep network
// namespaces.
const netnsDir = "/run/netns"

// guardNetnsDir makes netnsDir a shared mount point of its own before the
// first sandbox, as `ip netns add` and podman do on first use. Done later,
// while sandboxes' namespaces are mounted in it, their remount copies
// those mounts: containerd then cannot remove a sandbox's namespace and its
// pod stays Terminating. Tests of other packages that run in parallel
// (`ip netns add`, podman) find it done and leave it alone.
func (c *cluster) guardNetnsDir() {
	c.t.Helper()
	if err := os.MkdirAll(netnsDir, 0o755); err != nil {
		c.t.Fatal(err)
	}
	if isMountPoint(netnsDir) {
		return
	}
	if err := syscall.Mount(netnsDir, netnsDir, "none", syscall.MS_BIND|syscall.MS_REC, ""); err != nil {
		c.t.Fatalf("bind %s: %v", netnsDir, err)
	}
	c.madeNetnsMount = true
	if err := syscall.Mount("", netnsDir, "none", syscall.MS_SHARED|syscall.MS_REC, ""); err != nil {
		c.t.Fatalf("make %s shared: %v", netnsDir, err)
	}
}

// isMountPoint reports whether path is a mount point.
func isMountPoint(path string) bool {
	for _, m := range mountsUnder(path) {
		if m == path {
			return true
		}
	}
	return false
}

// start starts one of the cluster binary's programs.
func (c *cluster) start(name string, args ...string) {
	c.t.Helper()
	c.startPath(name, filepath.Join(c.bin, name), args...)
}

// startPath starts the program at path as name, in its own process group.
func (c *cluster) startPath(name, path string, args ...string) {
	c.t.Helper()
	log := filepath.Join(c.dir, "logs", name+".log")
	if err := os.MkdirAll(filepath.Dir(log), 0o755); err != nil {
		c.t.Fatal(err)
	}
	f, err := os.Create(log)
	if err != nil {
		c.t.Fatal(err)
	}
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		c.t.Fatalf("start %s: %v", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: log, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	c.procs[name] = p
}

// stop stops a program: SIGTERM to its group, SIGKILL after timeout.
func (c *cluster) stop(name string, timeout time.Duration) {
	p := c.procs[name]
	if p == nil {
		return
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(timeout):
		c.t.Logf("%s did not stop within %s: killed", name, timeout)
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
	delete(c.procs, name)
}

// waitFor polls check until it returns nil; it fails the test at timeout,
// or at once when a program of the cluster has exited.
func (c *cluster) waitFor(what string, timeout time.Duration, check func() error) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	var last error
	for {
		if last = check(); last == nil {
			return
		}
		for _, p := range c.procs {
			select {
			case <-p.done:
				c.t.Fatalf("waiting for %s: %s exited (%v); its errors:\n%s\nits log ends:\n%s", what, p.name, p.err, errorLines(p.log, 20), tail(p.log, 20))
			default:
			}
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("%s: not within %s: %v", what, timeout, last)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// waitHTTP waits for url to answer 200.
func (c *cluster) waitHTTP(what, url string, tlsConf *tls.Config) {
	c.t.Helper()
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsConf}}
	defer client.CloseIdleConnections()
	c.waitFor(what, 2*time.Minute, func() error {
		resp, err := client.Get(url)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %d %s", url, resp.StatusCode, b)
		}
		return nil
	})
}

// adminTLS is the TLS configuration of the admin identity.
func (c *cluster) adminTLS() *tls.Config {
	c.t.Helper()
	cert, err := tls.LoadX509KeyPair(filepath.Join(c.dir, "pki", "admin.crt"), filepath.Join(c.dir, "pki", "admin.key"))
	if err != nil {
		c.t.Fatal(err)
	}
	ca, err := os.ReadFile(filepath.Join(c.dir, "pki", "ca.crt"))
	if err != nil {
		c.t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	return &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool}
}

func (c *cluster) writeFile(path, content string) {
	c.t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		c.t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		c.t.Fatal(err)
	}
}

// pki writes the cluster's CA, the API server's serving certificate, the
// admin client certificate (system:masters, used by every component) and
// the service account signing key.
func (c *cluster) pki() {
	c.t.Helper()
	dir := filepath.Join(c.dir, "pki")
	caKey, caCert := c.issue(dir, "ca", &x509.Certificate{
		Subject: pkix.Name{CommonName: "avsk8s-ca"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}, nil, nil)
	c.issue(dir, "apiserver", &x509.Certificate{
		Subject:     pkix.Name{CommonName: "kube-apiserver"},
		DNSNames:    []string{"kubernetes", "kubernetes.default", "kubernetes.default.svc", "localhost"},
		IPAddresses: []net.IP{net.ParseIP(c.nodeIP), net.ParseIP("127.0.0.1"), net.ParseIP("10.96.0.1")},
		KeyUsage:    x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, caKey, caCert)
	c.issue(dir, "admin", &x509.Certificate{
		Subject:  pkix.Name{CommonName: "admin", Organization: []string{"system:masters"}},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, caKey, caCert)
	sa, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		c.t.Fatal(err)
	}
	der, err := x509.MarshalECPrivateKey(sa)
	if err != nil {
		c.t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&sa.PublicKey)
	if err != nil {
		c.t.Fatal(err)
	}
	c.writeFile(filepath.Join(dir, "sa.key"), string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})))
	c.writeFile(filepath.Join(dir, "sa.pub"), string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub})))
}

// issue makes a key and a certificate from tpl, signed by parent (self
// signed when parent is nil), and writes NAME.key and NAME.crt.
func (c *cluster) issue(dir, name string, tpl *x509.Certificate, parentKey *ecdsa.PrivateKey, parent *x509.Certificate) (*ecdsa.PrivateKey, *x509.Certificate) {
	c.t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		c.t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		c.t.Fatal(err)
	}
	tpl.SerialNumber = serial
	tpl.NotBefore = time.Now().Add(-time.Hour)
	tpl.NotAfter = time.Now().Add(24 * time.Hour)
	if parent == nil {
		parent, parentKey = tpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		c.t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		c.t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		c.t.Fatal(err)
	}
	c.writeFile(filepath.Join(dir, name+".crt"), string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	c.writeFile(filepath.Join(dir, name+".key"), string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})))
	return key, cert
}

// teardown stops everything the cluster started, in the order that lets
// each part clean up after itself, then removes what a crash could leave
// (sandboxes, mounts, the bridge, kube-proxy's and the kubelet's iptables
// chains, cgroups) and fails the test if anything remains.
func (c *cluster) teardown() {
	t := c.t
	begin := time.Now()
	if t.Failed() {
		for _, name := range []string{"kubelet", "kubelet-2", "containerd", "containerd-2", "kube-controller-manager", "kube-apiserver"} {
			if p := c.procs[name]; p != nil {
				t.Logf("%s log (end):\n%s", name, tail(p.log, 30))
			}
		}
	}
	// Workloads first, while the kubelet runs: it stops their containers
	// within their grace periods and releases their sandboxes.
	if c.procs["kubelet"] != nil && c.procs["kube-apiserver"] != nil {
		if out, err := c.kubectl("get", "namespaces", "-l", "avsk8s/test", "-o", "name"); err == nil && out != "" {
			args := append([]string{"delete", "--wait", "--timeout=3m"}, strings.Fields(out)...)
			if _, err := c.kubectl(args...); err != nil {
				t.Logf("teardown: %v", err)
			}
		}
	}
	c.stop("kube-proxy", 10*time.Second)
	c.stop("kube-proxy-2", 10*time.Second)
	c.stop("kubelet", 20*time.Second)
	c.stop("kubelet-2", 20*time.Second)
	c.stop("kube-scheduler", 10*time.Second)
	c.stop("kube-controller-manager", 10*time.Second)
	c.stop("kube-apiserver", 20*time.Second)
	c.stop("etcd", 10*time.Second)
	c.stop("containerd", 20*time.Second)
	c.stop("containerd-2", 20*time.Second)
	// Sandboxes the kubelet did not get to stop: their shims and
	// containers (the shims' children) are killed, their network
	// namespaces unmounted.
	for _, pid := range c.shimTrees() {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	c.waitGone(time.Minute)
	c.unmountUnder(c.dir)
	if entries, err := os.ReadDir(netnsDir); err == nil {
		for _, e := range entries {
			if c.netnsBefore != nil && !c.netnsBefore[e.Name()] && strings.HasPrefix(e.Name(), "cni-") {
				p := filepath.Join(netnsDir, e.Name())
				_ = syscall.Unmount(p, syscall.MNT_DETACH)
				if err := os.Remove(p); err != nil {
					t.Errorf("teardown: %v", err)
				}
			}
		}
	}
	for _, n := range c.nodes {
		if n.netns != "" {
			c.removeNetnsNode(n)
		}
	}
	if entries, err := os.ReadDir(netnsDir); err == nil && len(entries) == 0 && c.madeNetnsMount {
		if err := syscall.Unmount(netnsDir, syscall.MNT_DETACH); err != nil {
			t.Errorf("teardown: unmount %s: %v", netnsDir, err)
		}
	}
	if _, err := net.InterfaceByName(bridgeName); err == nil {
		if out, err := exec.Command("ip", "link", "del", bridgeName).CombinedOutput(); err != nil {
			t.Errorf("teardown: ip link del %s: %v %s", bridgeName, err, out)
		}
	}
	if c.bin != "" {
		if out, err := exec.Command(filepath.Join(c.bin, "kube-proxy"), "--cleanup").CombinedOutput(); err != nil {
			t.Logf("teardown: kube-proxy --cleanup: %v\n%s", err, tail2(out, 10))
		}
	}
	removeKubeChains(t)
	removeCgroups(t, "kubepods")
	removeContainerLogLinks(c.dir)
	for _, d := range []string{"/run/containerd/s", "/run/containerd/runc", "/run/containerd", "/var/log/containers", "/var/log/pods"} {
		if existed, known := c.hostDirs[d]; known && !existed {
			if err := os.Remove(d); err != nil && !errors.Is(err, os.ErrNotExist) {
				t.Errorf("teardown: %v", err)
			}
		}
	}
	if err := os.RemoveAll(c.dir); err != nil {
		t.Errorf("teardown: remove %s: %v", c.dir, err)
	}
	t.Logf("bench: cluster torn down in %s", time.Since(begin).Round(100*time.Millisecond))
	c.checkClean()
}

// shimTrees are the pids of containerd's shims for this cluster and of
// all their descendants (the containers' processes).
func (c *cluster) shimTrees() []int {
	procs := testkit.Processes()
	var out []int
	for pid, p := range procs {
		if strings.Contains(p.Cmdline, c.sock) || strings.Contains(p.Cmdline, c.dir) {
			out = append(out, pid)
			out = append(out, descendants(procs, pid)...)
		}
	}
	return out
}

// descendants are the pids below pid in procs.
func descendants(procs map[int]testkit.Proc, pid int) []int {
	var out []int
	for q, p := range procs {
		if p.PPID == pid {
			out = append(out, q)
			out = append(out, descendants(procs, q)...)
		}
	}
	return out
}

// waitGone waits for the shims and their containers to be gone.
func (c *cluster) waitGone(timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for len(c.shimTrees()) > 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
}

// unmountUnder unmounts every mount point under dir, deepest first.
func (c *cluster) unmountUnder(dir string) {
	for _, m := range mountsUnder(dir) {
		if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
			c.t.Logf("teardown: unmount %s: %v", m, err)
		}
	}
}

// mountsUnder lists the mount points under dir, deepest first.
func mountsUnder(dir string) []string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		mp := unescapeMount(f[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space...).
func unescapeMount(s string) string {
	return regexp.MustCompile(`\\[0-7]{3}`).ReplaceAllStringFunc(s, func(e string) string {
		n, _ := strconv.ParseUint(e[1:], 8, 8)
		return string(rune(n))
	})
}

// removeKubeChains removes what remains of the KUBE-* chains in every
// table (kube-proxy --cleanup leaves the kubelet's canaries): the rules
// that jump to them, then the chains.
func removeKubeChains(t *testing.T) {
	for _, tool := range []string{"iptables", "ip6tables"} {
		for _, table := range []string{"filter", "nat", "mangle"} {
			out, err := exec.Command(tool, "-w", "-t", table, "-S").Output()
			if err != nil {
				continue
			}
			var chains []string
			for _, rule := range strings.Split(string(out), "\n") {
				f := strings.Fields(rule)
				switch {
				case len(f) >= 2 && f[0] == "-N" && strings.HasPrefix(f[1], "KUBE-"):
					chains = append(chains, f[1])
				case len(f) >= 2 && f[0] == "-A" && !strings.HasPrefix(f[1], "KUBE-") && strings.Contains(rule, " KUBE-"):
					args := append([]string{"-w", "-t", table, "-D"}, f[1:]...)
					if out, err := exec.Command(tool, args...).CombinedOutput(); err != nil {
						t.Logf("teardown: %s %s: %v %s", tool, strings.Join(args, " "), err, out)
					}
				}
			}
			for _, ch := range chains {
				_ = exec.Command(tool, "-w", "-t", table, "-F", ch).Run()
			}
			for _, ch := range chains {
				if out, err := exec.Command(tool, "-w", "-t", table, "-X", ch).CombinedOutput(); err != nil {
					t.Logf("teardown: %s -t %s -X %s: %v %s", tool, table, ch, err, out)
				}
			}
		}
	}
}

// removeCgroups removes the kubelet's cgroup tree named name in every
// cgroup v1 hierarchy (or the v2 one), deepest first.
func removeCgroups(t *testing.T, name string) {
	roots, _ := filepath.Glob("/sys/fs/cgroup/*/" + name)
	if fi, err := os.Stat("/sys/fs/cgroup/" + name); err == nil && fi.IsDir() {
		roots = append(roots, "/sys/fs/cgroup/"+name)
	}
	for _, root := range roots {
		var dirs []string
		_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			if err := syscall.Rmdir(dirs[i]); err != nil && !errors.Is(err, syscall.ENOENT) {
				t.Logf("teardown: rmdir %s: %v", dirs[i], err)
			}
		}
	}
}

// removeContainerLogLinks removes the kubelet's links in
// /var/log/containers that point into dir.
func removeContainerLogLinks(dir string) {
	entries, _ := os.ReadDir("/var/log/containers")
	for _, e := range entries {
		p := filepath.Join("/var/log/containers", e.Name())
		if target, err := os.Readlink(p); err == nil && strings.HasPrefix(target, dir) {
			_ = os.Remove(p)
		}
	}
}

// checkClean fails the test when the cluster left anything on the host:
// processes, mounts, the bridge, iptables chains, cgroups.
func (c *cluster) checkClean() {
	t := c.t
	for pid, p := range testkit.Processes() {
		if strings.Contains(p.Cmdline, c.dir) {
			t.Errorf("left behind: process %d %s", pid, p.Cmdline)
		}
	}
	if m := mountsUnder(c.dir); len(m) > 0 {
		t.Errorf("left behind: mounts %v", m)
	}
	if _, err := net.InterfaceByName(bridgeName); err == nil {
		t.Errorf("left behind: the bridge %s", bridgeName)
	}
	if _, err := net.InterfaceByName(node2Veth); err == nil {
		t.Errorf("left behind: the second node's veth %s", node2Veth)
	}
	if _, err := os.Stat(filepath.Join(netnsDir, node2Netns)); err == nil {
		t.Errorf("left behind: the second node's network namespace %s", node2Netns)
	}
	if roots, _ := filepath.Glob("/sys/fs/cgroup/*/" + node2CgroupRoot); len(roots) > 0 {
		t.Errorf("left behind: cgroups %v", roots)
	}
	if entries, err := os.ReadDir(netnsDir); err == nil {
		for _, e := range entries {
			if !c.netnsBefore[e.Name()] && strings.HasPrefix(e.Name(), "cni-") {
				t.Errorf("left behind: network namespace %s", e.Name())
			}
		}
	}
	for _, tool := range []string{"iptables", "ip6tables"} {
		out, err := exec.Command(tool + "-save").Output()
		if err != nil {
			continue
		}
		if n := strings.Count(string(out), "KUBE-"); n > 0 {
			t.Errorf("left behind: %d KUBE- lines in %s-save", n, tool)
		}
	}
	if roots, _ := filepath.Glob("/sys/fs/cgroup/*/kubepods"); len(roots) > 0 {
		t.Errorf("left behind: cgroups %v", roots)
	}
}

// errorLines returns the last n lines of the file at path that are klog
// errors or fatal errors, or otherwise say error.
func errorLines(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "E") || strings.HasPrefix(line, "F") || strings.Contains(strings.ToLower(line), "error") {
			out = append(out, line)
		}
	}
	return tail2([]byte(strings.Join(out, "\n")), n)
}

// tail returns the last n lines of the file at path.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	return tail2(b, n)
}

func tail2(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// nodeAddress is the host's address on its default route: the node's
// InternalIP, where the MCS listens and the pods reach it, as a real
// server reached at a routable address.
func nodeAddress(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("ip", "-j", "-4", "route", "show", "default").Output()
	if err != nil {
		t.Fatalf("ip route: %v", err)
	}
	var routes []struct{ Dev, Prefsrc string }
	if err := json.Unmarshal(out, &routes); err != nil || len(routes) == 0 {
		testkit.Need(t, false, "a default route (its interface's address is the node's IP)")
	}
	if routes[0].Prefsrc != "" {
		return routes[0].Prefsrc
	}
	ifc, err := net.InterfaceByName(routes[0].Dev)
	if err != nil {
		t.Fatal(err)
	}
	addrs, err := ifc.Addrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil {
			return ipn.IP.String()
		}
	}
	t.Fatalf("no IPv4 address on %s", routes[0].Dev)
	return ""
}

const kubeconfigTemplate = `apiVersion: v1
kind: Config
clusters:
- name: avsk8s
  cluster:
    server: %s
    certificate-authority: %s
users:
- name: admin
  user:
    client-certificate: %s
    client-key: %s
contexts:
- name: avsk8s
  context:
    cluster: avsk8s
    user: admin
current-context: avsk8s
`

// containerdConfig: the CRI plugin with runc and cgroupfs, the local
// pause image, and oom_score_adj restricted (this host gives no
// CAP_SYS_RESOURCE, without which every sandbox fails to start).
const containerdConfig = `version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.internal.v1.tracing"]
[grpc]
  address = %q
[plugins."io.containerd.internal.v1.opt"]
  path = %q
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "/usr/sbin/runc"
        Root = %q
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = %q
`

// cniConfig: one bridge, addresses from host-local, no masquerade (pods
// talk only to this host).
const cniConfig = `{
  "cniVersion": "1.0.0",
  "name": "avsk8s",
  "plugins": [
    {
      "type": "bridge",
      "bridge": %q,
      "isGateway": true,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": %q}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": %q
      }
    }
  ]
}
`

// kubeletConfig: cgroup v1 with cgroupfs, the apiserver's client CA for
// its clients, a short sync period so Secret updates reach pods quickly,
// no cluster DNS.
const kubeletConfig = `apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: false
  x509:
    clientCAFile: %s
authorization:
  mode: AlwaysAllow
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://%s
port: %d
readOnlyPort: 0
healthzPort: 0
podLogsDir: %s
syncFrequency: 10s
resolvConf: ""
serializeImagePulls: false
evictionHard:
  memory.available: 100Mi
  nodefs.available: 2%%
  imagefs.available: 2%%
`

// proxyConfig: iptables mode; no conntrack sysctls (this host may not set
// them); NodePorts on the node's address only.
const proxyConfig = `apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: %s
mode: iptables
clusterCIDR: %s
hostnameOverride: %s
healthzBindAddress: 127.0.0.1:%d
metricsBindAddress: 127.0.0.1:%d
nodePortAddresses: ["primary"]
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
`
