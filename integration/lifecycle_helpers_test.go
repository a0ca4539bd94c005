package integration

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/avsidecar/avsidecar/internal/testkit"
)

// startPlain runs `avsidecar run` outside a PID namespace (its reaper is
// then a child subreaper), with env, and makes sure that the whole tree
// is gone when the test ends, even if the test fails half way.
func startPlain(t *testing.T, bin string, env []string, httpAddr string) *sidecar {
	t.Helper()
	s := startSidecar(t, []string{bin, "run"}, env, httpAddr)
	killTreeOnCleanup(t, s)
	return s
}

// killTreeOnCleanup SIGKILLs every process below s (the reaper's orphans
// included) when the test ends with s still running. It is registered after
// startSidecar's own cleanup, so it runs first.
func killTreeOnCleanup(t *testing.T, s *sidecar) {
	t.Cleanup(func() {
		select {
		case <-s.done:
			return
		default:
		}
		for _, p := range descendants(s.cmd.Process.Pid) {
			_ = syscall.Kill(p.PID, syscall.SIGKILL)
		}
	})
}

// stopGracefully sends SIGTERM to the sidecar
// and wants exit 0.
func (s *sidecar) stopGracefully(t *testing.T) {
	t.Helper()
	signal(t, s.cmd.Process.Pid, syscall.SIGTERM)
	if code := s.exitCode(t, 30*time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0", code)
	}
}

// liveAgents lists the live avagent.bin processes of the client installed
// under root, daemons included.
func liveAgents(root string) []proc {
	var out []proc
	for _, p := range withCmdline(root) {
		if p.State != "Z" && strings.Contains(p.Cmdline, "/bin/avagent.bin") {
			out = append(out, p)
		}
	}
	return out
}

// alive reports whether pid runs (a zombie does not).
func processAlive(pid int) bool {
	p, ok := testkit.Processes()[pid]
	return ok && p.State != "Z"
}

// setEnv returns env with key set to value (replaced or appended).
func withEnv(env []string, key, value string) []string {
	out := make([]string, 0, len(env)+1)
	for _, kv := range env {
		if !strings.HasPrefix(kv, key+"=") {
			out = append(out, kv)
		}
	}
	return append(out, key+"="+value)
}

// readFile returns a file's content, or fails the test.
func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// field returns a log line's field as a string.
func logField(m map[string]any, key string) string {
	if v, ok := m[key]; ok {
		return fmt.Sprint(v)
	}
	return ""
}

// ---- network namespaces ----

// netnsPair is two network namespaces joined by a veth pair: "server" and
// "pod", each with one address of a /24.
type netnsPair struct {
	server, pod     string // namespace names
	serverIf, podIf string // veth ends
	serverIP, podIP string
	ipCmd           string
	podDial         func(ctx context.Context, network, addr string) (net.Conn, error)
}

// newNetnsPair makes the namespaces and the veth pair; t.Cleanup removes
// them (the veth goes with its namespaces).
func newNetnsPair(t *testing.T, subnet string) *netnsPair {
	t.Helper()
	testkit.NeedRoot(t)
	n := &netnsPair{ipCmd: testkit.NeedCommand(t, "ip")}
	id := os.Getpid() % 100000
	n.server, n.pod = fmt.Sprintf("avs4-srv-%d", id), fmt.Sprintf("avs4-pod-%d", id)
	n.serverIf, n.podIf = fmt.Sprintf("avs4s%d", id), fmt.Sprintf("avs4p%d", id)
	n.serverIP, n.podIP = subnet+".1", subnet+".2"
	for _, ns := range []string{n.server, n.pod} {
		n.ip(t, "netns", "add", ns)
		t.Cleanup(func() { _ = exec.Command(n.ipCmd, "netns", "delete", ns).Run() })
	}
	n.ip(t, "link", "add", n.serverIf, "type", "veth", "peer", "name", n.podIf)
	t.Cleanup(func() { _ = exec.Command(n.ipCmd, "link", "delete", n.serverIf).Run() })
	n.ip(t, "link", "set", n.serverIf, "netns", n.server)
	n.ip(t, "link", "set", n.podIf, "netns", n.pod)
	n.ip(t, "-n", n.server, "addr", "add", n.serverIP+"/24", "dev", n.serverIf)
	n.ip(t, "-n", n.pod, "addr", "add", n.podIP+"/24", "dev", n.podIf)
	for _, ns := range []struct{ name, dev string }{{n.server, n.serverIf}, {n.pod, n.podIf}} {
		n.ip(t, "-n", ns.name, "link", "set", ns.dev, "up")
		n.ip(t, "-n", ns.name, "link", "set", "lo", "up")
	}
	n.podDial = dialerIn(n.pod)
	return n
}

func (n *netnsPair) ip(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(n.ipCmd, args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// movePod gives the pod namespace a new address in place of the old one,
// as a pod rescheduled to another node sees a new status.hostIP.
func (n *netnsPair) movePod(t *testing.T, newIP string) {
	t.Helper()
	n.ip(t, "-n", n.pod, "addr", "del", n.podIP+"/24", "dev", n.podIf)
	n.ip(t, "-n", n.pod, "addr", "add", newIP+"/24", "dev", n.podIf)
	n.podIP = newIP
}

// exec returns argv run inside namespace ns.
func (n *netnsPair) exec(ns string, argv ...string) []string {
	return append([]string{n.ipCmd, "netns", "exec", ns}, argv...)
}

// dialerIn dials from inside network namespace ns: a socket belongs to the
// namespace of the thread that made it, so the dial runs on a locked thread
// moved into ns. The thread is never unlocked, so the runtime discards it
// instead of reusing it in the wrong namespace.
func dialerIn(ns string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		type result struct {
			c   net.Conn
			err error
		}
		ch := make(chan result, 1)
		go func() {
			runtime.LockOSThread()
			f, err := os.Open(filepath.Join("/run/netns", ns))
			if err != nil {
				ch <- result{nil, err}
				return
			}
			defer f.Close()
			if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
				ch <- result{nil, fmt.Errorf("setns %s: %w", ns, err)}
				return
			}
			var d net.Dialer
			c, err := d.DialContext(ctx, network, addr)
			ch <- result{c, err}
		}()
		r := <-ch
		return r.c, r.err
	}
}

// mcsProcess is `avkit mcs` running as a process (in a namespace), whose
// JSON log tells what it did.
type mcsProcess struct {
	cmd  *exec.Cmd
	log  *logLines
	done chan struct{}
}

// startMCSProcess runs argv (avkit mcs behind ip netns exec) and follows
// its log; it waits until the MCS says it started.
func startMCSProcess(t *testing.T, argv ...string) *mcsProcess {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stderr = testWriter{t, "mcs stderr: "}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	m := &mcsProcess{cmd: cmd, log: testkit.NewLogLines(), done: make(chan struct{})}
	go func() { follow(t, m.log, out); _ = cmd.Wait(); close(m.done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-m.done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-m.done
		}
	})
	m.log.Wait(t, 0, "the MCS to start", 20*time.Second, msg("mcs", "mcs started"))
	return m
}

// registrations counts the MCS's "client registered" lines for name.
func (m *mcsProcess) registrations(name string) int {
	return m.log.Count(0, msg("mcs", "client registered", "name", name))
}

// freePorts returns n distinct ports, free on every address a moment ago,
// from below the kernel's ephemeral range: a port the kernel picked for
// someone's :0 listener or outgoing connection cannot take them in the
// meantime. All are held open together, so none is handed out twice.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if v, err := strconv.Atoi(f[0]); err == nil {
				low = v
			}
		}
	}
	const base = 10000
	if low-base < 4*n {
		t.Fatalf("no room for %d ports below the ephemeral range at %d", n, low)
	}
	ports := make([]int, 0, n)
	for p := base + rand.IntN(low-base-2*n); p < low && len(ports) < n; p++ {
		l, err := net.Listen("tcp", ":"+strconv.Itoa(p))
		if err != nil {
			continue
		}
		ls = append(ls, l)
		ports = append(ports, p)
	}
	if len(ports) < n {
		t.Fatalf("found %d free ports, want %d", len(ports), n)
	}
	return ports
}

// linkRPM puts a hard link (or copy) of rpm into root's /opt/avamar, so a
// storm of roots shares one built package.
func linkRPM(t *testing.T, rpm, root string) {
	t.Helper()
	dir := filepath.Join(root, "opt/avamar")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, filepath.Base(rpm))
	if err := os.Link(rpm, dst); err == nil {
		return
	}
	b, err := os.ReadFile(rpm)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatal(err)
	}
}
