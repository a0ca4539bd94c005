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
