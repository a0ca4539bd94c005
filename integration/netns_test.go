package integration

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/avsidecar/avsidecar/internal/testkit"
)

// TestAcrossNetworkNamespaces runs the fake MCS in a "server" network
// namespace and the sidecar, as PID 1 of its own PID namespace, in a "pod"
// namespace whose node address is not loopback, with every default port
// (MCS 28001, agent 28002). The MCS registers the agent and calls it back at
// its --iplist and --listenport. Then the pod moves to another node on the
// same volume: nothing is registered again, the agent checks in with the MCS
// from its new address and the MCS calls it back there; a changed server on
// top of the move registers from the new address, and that MCS calls the
// agent back there.
func TestAcrossNetworkNamespaces(t *testing.T) {
	testkit.NeedRoot(t)
	unshare := testkit.NeedCommand(t, "unshare")
	bins := testkit.BuildBinaries(t)
	n := newNetnsPair(t, "10.77.0")
	mcs := startMCSProcess(t, n.exec(n.server, bins.Avkit, "mcs", "--addr", n.serverIP+":28001")...)

	root := t.TempDir()
	rpmDir := filepath.Join(root, "opt/avamar")
	if err := os.MkdirAll(rpmDir, 0o755); err != nil {
		t.Fatal(err)
	}
	testkit.WriteRPM(t, rpmDir, testkit.RPMOptions{})
	const httpAddr = "127.0.0.1:9180" // inside the pod namespace
	env := []string{
		"PATH=" + os.Getenv("PATH"),
		"AVSIDECAR_ROOT=" + root,
		"AVAMAR_SERVER=" + n.serverIP,
		"NODE_IP=" + n.podIP,
		"POD_NAME=pod-ns",
		"AVSIDECAR_HTTP_ADDR=" + httpAddr,
		"AVSIDECAR_SSH_ADDR=off",
		"AVSIDECAR_REGISTER_BACKOFF_MAX=1s",
		"AVSIDECAR_RESTART_BACKOFF_MAX=1s",
		"AVSIDECAR_SHUTDOWN_TIMEOUT=10s",
		"AVSIDECAR_LOG_LEVEL=debug",
	}
	start := func(env []string) *sidecar {
		s := startSidecar(t, n.exec(n.pod, unshare, "--pid", "--fork", "--mount-proc", bins.Avsidecar, "run"), env, httpAddr)
		s.dial = n.podDial
		killTreeOnCleanup(t, s)
		return s
	}
	stop := func(s *sidecar) {
		t.Helper()
		var init proc
		for _, p := range descendants(s.cmd.Process.Pid) {
			if strings.HasPrefix(p.Cmdline, bins.Avsidecar+" run") {
				init = p // the first in walk order is the topmost: PID 1 of the namespace
				break
			}
		}
		if init.PID == 0 {
			t.Fatal("no avsidecar under unshare")
		}
		signal(t, init.PID, syscall.SIGTERM)
		if code := s.exitCode(t, 20*time.Second); code != 0 {
			t.Fatalf("exit code %d after SIGTERM", code)
		}
		if left := withCmdline(root); len(left) > 0 {
			t.Fatalf("processes left: %+v", left)
		}
	}

	// Registered from the pod's address; the MCS reaches the agent there.
	s := start(env)
	s.log.Wait(t, 0, "registration", 60*time.Second, msg("register", "registered", "client", "pod-ns"))
	reg := mcs.log.Wait(t, 0, "the MCS's registration", 10*time.Second,
		msg("mcs", "client registered", "name", "pod-ns", "iplist", "10.77.0.2", "listenport", 28002))
	if !strings.HasPrefix(logField(reg, "remote"), "10.77.0.2:") {
		t.Fatalf("registration came from %s, want the pod's address", reg["remote"])
	}
	mcs.log.Wait(t, 0, "the MCS's callback", 30*time.Second, msg("mcs", "agent reachable", "name", "pod-ns", "agent", "10.77.0.2:28002"))
	s.eventually(t, "/readyz", 200, 30*time.Second)
	stop(s)

	// The pod comes back on another node with the same volume.
	n.movePod(t, "10.77.0.3")
	moved := withEnv(env, "NODE_IP", "10.77.0.3")
	s = start(moved)
	s.log.Wait(t, 0, "reuse of the registration", 60*time.Second, msg("register", "already registered, not registering again"))
	s.eventually(t, "/readyz", 200, 30*time.Second)
	if cmd := mustRead(t, filepath.Join(prefixDir(root), "var/avagent.cmd")); !strings.Contains(cmd, "--iplist=10.77.0.3\n") {
		t.Fatalf("avagent.cmd = %q after the move", cmd)
	}
	// The MCS learns the new address from the agent's check-in, not from a
	// registration, and its own callback reaches the agent there.
	hello := mcs.log.Wait(t, 0, "the agent's check-in from the new node", 30*time.Second,
		msg("mcs", "client checked in", "name", "pod-ns", "iplist", "10.77.0.3", "listenport", 28002, "moved", true))
	if !strings.HasPrefix(logField(hello, "remote"), "10.77.0.3:") {
		t.Fatalf("check-in came from %s, want the new node's address", hello["remote"])
	}
	if logField(hello, "client_id") != logField(reg, "client_id") {
		t.Fatalf("checked in as client %s, registered as %s", hello["client_id"], reg["client_id"])
	}
	mcs.log.Wait(t, 0, "the MCS's callback at the new address", 30*time.Second,
		msg("mcs", "agent reachable", "name", "pod-ns", "agent", "10.77.0.3:28002"))
	if got := mcs.registrations("pod-ns"); got != 1 {
		t.Fatalf("the move registered again: %d registrations", got)
	}
	stop(s)

	// Moved, and a new server: registered with it from the new address,
	// which that MCS calls back.
	mcs2 := startMCSProcess(t, n.exec(n.server, bins.Avkit, "mcs", "--addr", n.serverIP+":28011")...)
	s = start(withEnv(moved, "AVAMAR_SERVER", n.serverIP+":28011"))
	s.log.Wait(t, 0, "the changed registration", 60*time.Second,
		msg("register", "registration changed, registering again", "old_server", n.serverIP, "old_port", 28001))
	s.log.Wait(t, 0, "registration with the new server", 60*time.Second, msg("register", "registered"))
	mcs2.log.Wait(t, 0, "the new MCS's registration", 10*time.Second,
		msg("mcs", "client registered", "name", "pod-ns", "iplist", "10.77.0.3"))
	mcs2.log.Wait(t, 0, "the new MCS's callback", 30*time.Second, msg("mcs", "agent reachable", "name", "pod-ns", "agent", "10.77.0.3:28002"))
	s.eventually(t, "/readyz", 200, 30*time.Second)
	if a, b := mcs.registrations("pod-ns"), mcs2.registrations("pod-ns"); a != 1 || b != 1 {
		t.Fatalf("registrations: first server %d, second %d; want 1 and 1", a, b)
	}
	stop(s)
}
