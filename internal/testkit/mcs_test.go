package testkit_test

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/avsidecar/avsidecar/internal/testkit"
	"github.com/avsidecar/avsidecar/internal/testkit/fakeagent"
	"github.com/avsidecar/avsidecar/internal/testkit/mcsproto"
)

// registerRaw speaks the registration protocol directly, for tests that
// need more clients than processes are worth.
func registerRaw(addr, name string) (mcsproto.RegisterReply, error) {
	var reply mcsproto.RegisterReply
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return reply, err
	}
	defer conn.Close()
	req := mcsproto.Register{Op: mcsproto.OpRegister, Name: name, Domain: "/clients", IPList: "127.0.0.1", ListenPort: 1}
	if err := mcsproto.Write(conn, req); err != nil {
		return reply, err
	}
	err = mcsproto.Read(bufio.NewReader(conn), &reply)
	return reply, err
}

// TestMCSStorm plays 100 sidecars registering at once against an MCS that
// handles 10 at a time: the 10 in its slots are registered, the 90 others
// are refused as busy at once, and nothing is lost or counted twice.
func TestMCSStorm(t *testing.T) {
	const slots, storm = 10, 100
	m := startMCS(t, testkit.MCSOptions{MaxConcurrent: slots, Delay: 3 * time.Second})
	replies := make([]mcsproto.RegisterReply, storm)
	errs := make([]error, storm)
	var wg sync.WaitGroup
	for i := range slots {
		wg.Go(func() { replies[i], errs[i] = registerRaw(m.Addr(), fmt.Sprintf("pod-%03d", i)) })
		if err := m.WaitAttempts(ctxT(t), fmt.Sprintf("pod-%03d", i), 1); err != nil {
			t.Fatal(err)
		}
	}
	var late sync.WaitGroup
	for i := slots; i < storm; i++ {
		late.Go(func() { replies[i], errs[i] = registerRaw(m.Addr(), fmt.Sprintf("pod-%03d", i)) })
	}
	late.Wait()
	if n := len(m.Registrations()); n != 0 {
		t.Errorf("%d registrations done while the slots were busy, want 0", n)
	}
	wg.Wait()

	for i := range storm {
		wantOK := i < slots
		switch {
		case errs[i] != nil:
			t.Errorf("client %d: %v", i, errs[i])
		case replies[i].OK != wantOK:
			t.Errorf("client %d: reply %+v, want ok=%v", i, replies[i], wantOK)
		case !wantOK && replies[i].Reason != testkit.BusyReason:
			t.Errorf("client %d: reason %q, want busy", i, replies[i].Reason)
		}
	}
	if n := len(m.Registrations()); n != slots {
		t.Errorf("%d registrations, want %d", n, slots)
	}
	// The slots are free again.
	m.SetDelay(0)
	if r, err := registerRaw(m.Addr(), "pod-after"); err != nil || !r.OK {
		t.Errorf("registration after the storm: %+v, %v", r, err)
	}
}

// TestMCSClientGaveUp checks the hazard the product must respect: a client
// that stops waiting is registered all the same, so registering again
// makes a second registration.
func TestMCSClientGaveUp(t *testing.T) {
	m := startMCS(t, testkit.MCSOptions{Delay: 300 * time.Millisecond})
	conn, err := net.Dial("tcp", m.Addr())
	if err != nil {
		t.Fatal(err)
	}
	if err := mcsproto.Write(conn, mcsproto.Register{Op: mcsproto.OpRegister, Name: "impatient"}); err != nil {
		t.Fatal(err)
	}
	if err := m.WaitAttempts(ctxT(t), "impatient", 1); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	if err := m.WaitRegistered(ctxT(t), "impatient"); err != nil {
		t.Fatal(err)
	}
	if _, err := registerRaw(m.Addr(), "impatient"); err != nil {
		t.Fatal(err)
	}
	if n := m.Count("impatient"); n != 2 {
		t.Errorf("count %d, want 2", n)
	}
}

func TestMCSRejectsGarbage(t *testing.T) {
	m := startMCS(t, testkit.MCSOptions{})
	for _, msg := range []string{`{"op":"register","name":""}`, `{"op":"hello","name":"x"}`} {
		conn, err := net.Dial("tcp", m.Addr())
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintln(conn, msg)
		var reply mcsproto.RegisterReply
		err = mcsproto.Read(bufio.NewReader(conn), &reply)
		conn.Close()
		if err != nil || reply.OK || reply.Reason == "" {
			t.Errorf("%s: reply %+v, %v; want a refusal with a reason", msg, reply, err)
		}
	}
	if n := len(m.Registrations()); n != 0 {
		t.Errorf("%d registrations from garbage", n)
	}
}

// TestMCSFromNetworkNamespace registers an agent that lives in its own
// network namespace, as a sidecar in a pod does: the MCS listens on
// 0.0.0.0 and calls the agent back at its namespace's address.
func TestMCSFromNetworkNamespace(t *testing.T) {
	testkit.NeedRoot(t)
	ip := testkit.NeedCommand(t, "ip")
	c := newClient(t, "pod-netns")
	m, err := testkit.StartMCS("0.0.0.0:0", testkit.MCSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })

	ns := fmt.Sprintf("avkit-%d", os.Getpid())
	host, guest := fmt.Sprintf("avk%dh", os.Getpid()%100000), fmt.Sprintf("avk%dg", os.Getpid()%100000)
	hostIP, guestIP := "10.231.7.1", "10.231.7.2"
	mustIP := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(ip, args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	mustIP("netns", "add", ns)
	t.Cleanup(func() { _ = exec.Command(ip, "netns", "delete", ns).Run() })
	mustIP("link", "add", host, "type", "veth", "peer", "name", guest)
	t.Cleanup(func() { _ = exec.Command(ip, "link", "delete", host).Run() })
	mustIP("link", "set", guest, "netns", ns)
	mustIP("addr", "add", hostIP+"/30", "dev", host)
	mustIP("link", "set", host, "up")
	mustIP("-n", ns, "addr", "add", guestIP+"/30", "dev", guest)
	mustIP("-n", ns, "link", "set", guest, "up")
	mustIP("-n", ns, "link", "set", "lo", "up")

	writeFile(t, c.vardir, fakeagent.CmdFile, fmt.Sprintf("--iplist=%s\n--listenport=%d\n", guestIP, c.port))
	r := runCmd(t, ip, "netns", "exec", ns, c.bin, "--init", "--daemon=false", "--mcsaddr="+hostIP,
		fmt.Sprintf("--mcsport=%d", m.Port()), "--vardir="+c.vardir)
	if r.code != 0 {
		t.Fatalf("register from the namespace: exit %d, %s", r.code, r.stderr)
	}
	regs := m.Registrations()
	if len(regs) != 1 || !strings.HasPrefix(regs[0].Remote, guestIP+":") {
		t.Fatalf("registrations %+v, want one from %s", regs, guestIP)
	}

	agent := exec.Command(ip, "netns", "exec", ns, c.bin, "--daemon=false", "--vardir="+c.vardir)
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = agent.Process.Kill(); _ = agent.Wait() })
	if err := m.WaitReachable(ctxT(t), "pod-netns"); err != nil {
		t.Fatal(err)
	}
	waitLog(t, filepath.Join(c.vardir, "avagent.log"), "MCS callback from avkit-mcs ("+hostIP+":")
}

// helloRaw speaks the check-in protocol directly.
func helloRaw(t *testing.T, addr string, h mcsproto.Hello) mcsproto.HelloReply {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	h.Op = mcsproto.OpHello
	if err := mcsproto.Write(conn, h); err != nil {
		t.Fatal(err)
	}
	var reply mcsproto.HelloReply
	if err := mcsproto.Read(bufio.NewReader(conn), &reply); err != nil {
		t.Fatal(err)
	}
	return reply
}

// TestMCSHelloMovesCallback plays a pod moved to another node with the same
// volume: the agent starts again with a new --iplist and --listenport and
// says hello; the MCS calls it back there, and it is still one
// registration.
func TestMCSHelloMovesCallback(t *testing.T) {
	m := startMCS(t, testkit.MCSOptions{})
	c := newClient(t, "pod-move")
	if r := c.register(t, m); r.code != 0 {
		t.Fatalf("register: exit %d, stderr %s", r.code, r.stderr)
	}
	agent := startAgent(t, c.bin, c.vardir)
	if err := m.WaitReachable(ctxT(t), "pod-move"); err != nil {
		t.Fatal(err)
	}
	if err := m.WaitCheckIns(ctxT(t), "pod-move", 1); err != nil {
		t.Fatal(err) // a registered agent checks in at every start
	}
	if err := agent.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	_ = agent.Wait()
	if err := m.WaitUnreachable(ctxT(t), "pod-move"); err != nil {
		t.Fatal(err)
	}

	// The new node: another address and port. The old port is left
	// unused, so only a callback at the new address can succeed.
	newPort := testkit.FreePort(t)
	writeFile(t, c.vardir, fakeagent.CmdFile, "--iplist=127.0.0.2\n--listenport="+itoa(newPort)+"\n")
	startAgent(t, c.bin, c.vardir)
	if err := m.WaitCheckIns(ctxT(t), "pod-move", 2); err != nil {
		t.Fatal(err)
	}
	if err := m.WaitReachable(ctxT(t), "pod-move"); err != nil {
		t.Fatal(err)
	}
	if ip, port, ok := m.CallbackAddr("pod-move"); !ok || ip != "127.0.0.2" || port != newPort {
		t.Errorf("callback at %s:%d (%v), want 127.0.0.2:%d", ip, port, ok, newPort)
	}
	if n := m.Count("pod-move"); n != 1 {
		t.Errorf("count %d after the move, want 1: a hello is not a registration", n)
	}
	if n := m.Attempts("pod-move"); n != 1 {
		t.Errorf("%d registration attempts, want 1", n)
	}
	waitLog(t, filepath.Join(c.vardir, "avagent.log"), "checked in with MCS 127.0.0.1:"+itoa(m.Port())+" as client pod-move at 127.0.0.2:"+itoa(newPort))
	waitLog(t, filepath.Join(c.vardir, "avagent.log"), "MCS callback from avkit-mcs")
}

// TestMCSHelloRefused: only the client the MCS registered, with the id it
// gave, may move its callback.
func TestMCSHelloRefused(t *testing.T) {
	m := startMCS(t, testkit.MCSOptions{})
	reg, err := registerRaw(m.Addr(), "pod-known")
	if err != nil || !reg.OK {
		t.Fatalf("register: %+v, %v", reg, err)
	}
	tests := []struct {
		name string
		h    mcsproto.Hello
	}{
		{"unknown name", mcsproto.Hello{Name: "pod-stranger", ClientID: reg.ClientID, IPList: "127.0.0.9", ListenPort: 1}},
		{"wrong client id", mcsproto.Hello{Name: "pod-known", ClientID: "not-the-id", IPList: "127.0.0.9", ListenPort: 1}},
		{"no client id", mcsproto.Hello{Name: "pod-known", IPList: "127.0.0.9", ListenPort: 1}},
		{"no name", mcsproto.Hello{ClientID: reg.ClientID, IPList: "127.0.0.9", ListenPort: 1}},
	}
	for _, tc := range tests {
		if r := helloRaw(t, m.Addr(), tc.h); r.OK || r.Reason == "" {
			t.Errorf("%s: reply %+v, want a refusal with a reason", tc.name, r)
		}
	}
	if ip, port, _ := m.CallbackAddr("pod-known"); ip != "127.0.0.1" || port != 1 {
		t.Errorf("refused hellos moved the callback to %s:%d", ip, port)
	}
	if n := m.CheckIns("pod-known") + m.CheckIns("pod-stranger"); n != 0 {
		t.Errorf("%d check-ins counted from refused hellos", n)
	}

	// The known client, with its id, is heard; still one registration.
	if r := helloRaw(t, m.Addr(), mcsproto.Hello{Name: "pod-known", ClientID: reg.ClientID, IPList: "127.0.0.9", ListenPort: 2}); !r.OK {
		t.Fatalf("hello of the known client: %+v", r)
	}
	if ip, port, _ := m.CallbackAddr("pod-known"); ip != "127.0.0.9" || port != 2 {
		t.Errorf("callback at %s:%d after the hello, want 127.0.0.9:2", ip, port)
	}
	if c, n := m.CheckIns("pod-known"), m.Count("pod-known"); c != 1 || n != 1 {
		t.Errorf("check-ins %d, registrations %d; want 1 and 1", c, n)
	}
}

// TestAgentHelloWhileMCSDown: the check-in is best effort. An agent that
// starts while its MCS is down serves at once, logs the failed attempt,
// and the MCS hears it when it comes back within the retries.
func TestAgentHelloWhileMCSDown(t *testing.T) {
	m := startMCS(t, testkit.MCSOptions{})
	c := newClient(t, "pod-late")
	if r := c.register(t, m); r.code != 0 {
		t.Fatalf("register: exit %d, stderr %s", r.code, r.stderr)
	}
	if err := m.SetDown(true); err != nil {
		t.Fatal(err)
	}
	startAgent(t, c.bin, c.vardir)
	waitLog(t, filepath.Join(c.vardir, "avagent.log"), "check-in with MCS 127.0.0.1:"+itoa(m.Port())+" failed (attempt 1, backoff 250ms)")
	if err := m.SetDown(false); err != nil {
		t.Fatal(err)
	}
	if err := m.WaitCheckIns(ctxT(t), "pod-late", 1); err != nil {
		t.Fatal(err)
	}
	if n := m.Count("pod-late"); n != 1 {
		t.Errorf("count %d, want 1", n)
	}
	waitLog(t, filepath.Join(c.vardir, "avagent.log"), "checked in with MCS")
}
