package integration

import (
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/avsidecar/avsidecar/internal/testkit"
)

// prefixDir is where the client lives under a test root.
func prefixDir(root string) string { return filepath.Join(root, "usr/local/avamar") }

// TestRestartKeepsIdentity restarts the sidecar as Kubernetes does: on the
// same volume from another node, on a new volume, and against a new
// server. Only the last two register, and always under the pod's name.
func TestRestartKeepsIdentity(t *testing.T) {
	w := newWorld(t, false)
	ctx := testContext(t, 3*time.Minute)

	// First start: registered once, the MCS reaches the agent.
	s := startPlain(t, w.bins.Avsidecar, w.env, w.http)
	s.log.Wait(t, 0, "registration", 60*time.Second, msg("register", "registered", "client", "pod-0"))
	if err := w.mcs.WaitReachable(ctx, "pod-0"); err != nil {
		t.Fatal(err)
	}
	s.eventually(t, "/readyz", 200, 20*time.Second)
	if got, want := mustRead(t, filepath.Join(prefixDir(w.root), "var/.avagent")), "--hostname=pod-0\n--listenport="+envValue(w.env, "AVAMAR_LISTEN_PORT")+"\n"; got != want {
		t.Fatalf(".avagent = %q, want %q: the pod name pinned, and the listen port", got, want)
	}
	s.stopGracefully(t)

	// Same volume, another node (a new NODE_IP): the same client, nothing
	// registered again; avagent.cmd names the new node before the agent
	// starts.
	env := withEnv(w.env, "NODE_IP", "127.0.0.2")
	s = startPlain(t, w.bins.Avsidecar, env, w.http)
	reused := s.log.Wait(t, 0, "reuse of the registration", 60*time.Second,
		msg("register", "already registered, not registering again", "client", "pod-0"))
	flags := s.log.Wait(t, 0, "the flag files", time.Second, msg("main", "flag files up to date"))
	if !strings.Contains(logField(flags, "written"), "avagent.cmd") || strings.Contains(logField(flags, "written"), ".avagent") {
		t.Fatalf("flag files written %v, want only avagent.cmd rewritten", flags["written"])
	}
	s.eventually(t, "/readyz", 200, 20*time.Second)
	if cmd := mustRead(t, filepath.Join(prefixDir(w.root), "var/avagent.cmd")); !strings.Contains(cmd, "--iplist=127.0.0.2\n") {
		t.Fatalf("avagent.cmd = %q, want the new node address", cmd)
	}
	if st := s.status(t)["registration"].(map[string]any); st["reused"] != true || st["attempts"].(float64) != 0 {
		t.Fatalf("registration status %v, want reused without attempts", st)
	}
	if n := w.mcs.Count("pod-0"); n != 1 {
		t.Fatalf("same volume registered again: %d registrations (log: %v)", n, reused)
	}
	s.stopGracefully(t)

	// A new volume, same pod name: registered again, under the same name.
	root2 := t.TempDir()
	rpms, _ := filepath.Glob(filepath.Join(w.root, "opt/avamar/*.rpm"))
	linkRPM(t, rpms[0], root2)
	s = startPlain(t, w.bins.Avsidecar, withEnv(w.env, "AVSIDECAR_ROOT", root2), w.http)
	s.log.Wait(t, 0, "registration on the new volume", 60*time.Second, msg("register", "registered", "client", "pod-0"))
	s.eventually(t, "/readyz", 200, 20*time.Second)
	regs := w.mcs.Registrations()
	if len(regs) != 2 || regs[0].Name != "pod-0" || regs[1].Name != "pod-0" {
		t.Fatalf("registrations %+v, want pod-0 twice", regs)
	}
	s.stopGracefully(t)

	// The first volume against another server: registered with it, and the
	// log names the old one.
	mcs2, err := testkit.StartMCS("127.0.0.1:0", testkit.MCSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mcs2.Close() })
	s = startPlain(t, w.bins.Avsidecar, withEnv(w.env, "AVAMAR_SERVER", mcs2.Addr()), w.http)
	changed := s.log.Wait(t, 0, "the changed registration", 60*time.Second, msg("register", "registration changed, registering again"))
	if logField(changed, "old_port") != strconv.Itoa(w.mcs.Port()) || logField(changed, "old_server") != "127.0.0.1" ||
		logField(changed, "old_client") != "pod-0" {
		t.Fatalf("changed registration logged %v, want the old server %s", changed, w.mcs.Addr())
	}
	s.log.Wait(t, 0, "registration with the new server", 60*time.Second, msg("register", "registered"))
	if err := mcs2.WaitReachable(ctx, "pod-0"); err != nil {
		t.Fatal(err)
	}
	s.eventually(t, "/readyz", 200, 20*time.Second)
	if a, b := w.mcs.Count("pod-0"), mcs2.Count("pod-0"); a != 2 || b != 1 {
		t.Fatalf("registrations: old server %d (want 2), new server %d (want 1)", a, b)
	}
	var rc struct {
		Port   int    `json:"port"`
		Client string `json:"client"`
	}
	if err := json.Unmarshal([]byte(mustRead(t, filepath.Join(prefixDir(w.root), "var/avsidecar/registration.json"))), &rc); err != nil ||
		rc.Port != mcs2.Port() || rc.Client != "pod-0" {
		t.Fatalf("receipt %+v (%v), want the new server's port %d", rc, err, mcs2.Port())
	}
	s.stopGracefully(t)
}

// TestCrashLoopReportedAndRecovers breaks the agent: every start crashes.
// The crash loop shows on /readyz, in the log and in the status with the
// exit code and the agent's last log lines; restarts slow down; and once
// the agent is fixed it is ready again without a restart of the sidecar.
func TestCrashLoopReportedAndRecovers(t *testing.T) {
	broken := filepath.Join(t.TempDir(), "broken")
	if err := os.WriteFile(broken, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	w := newWorld(t, false, "AVAMAR_AGENT_FLAGS=--fake-crash-if-exists="+broken, "AVSIDECAR_RESTART_BACKOFF_MAX=4s")
	s := startPlain(t, w.bins.Avsidecar, w.env, w.http)
	s.log.Wait(t, 0, "registration", 60*time.Second, msg("register", "registered"))

	// Three short runs in a row: a crash loop. Equal jitter from a 1s base
	// puts the waits in [0.5,1), [1,2), [2,4) seconds: each longer.
	third := s.log.WaitN(t, 0, 3, "three crashes", 60*time.Second, msg("agent", "agent exited, restarting"))
	body := mustGetCode(t, s, "/readyz", 503)
	if !strings.Contains(body, "[-]agent: crash looping: 3 short runs, last exit status 1") {
		t.Fatalf("/readyz during the crash loop: %q", body)
	}
	if third["crash_loop"] != true {
		t.Fatalf("third exit not a crash loop: %v", third)
	}
	var prev float64
	for i := 1; i <= 3; i++ {
		m := s.log.WaitN(t, 0, i, "crash", time.Second, msg("agent", "agent exited, restarting"))
		b := m["backoff_ms"].(float64) // ms
		if m["attempt"].(float64) != float64(i) || m["exit_code"].(float64) != 1 || b <= prev || b < 500*float64(int(1)<<(i-1)) {
			t.Fatalf("exit %d logged %v after a backoff of %vms, want attempt %d, exit code 1, a growing wait", i, m, prev, i)
		}
		prev = b
	}
	loop := s.log.Wait(t, 0, "the crash loop report", time.Second, msg("agent", "agent is crash looping"))
	if !strings.Contains(logField(loop, "log_tail"), "fake crash at start") || logField(loop, "exit_code") != "1" {
		t.Fatalf("crash loop logged %v, want exit code 1 and the agent's log tail", loop)
	}
	agent := s.status(t)["agent"].(map[string]any)
	tail, _ := json.Marshal(agent["log_tail"])
	if agent["crash_loop"] != true || agent["last_exit_code"].(float64) != 1 || !strings.Contains(string(tail), "fake crash at start: "+broken+" exists") {
		t.Fatalf("status agent %v, want a crash loop with exit code 1 and the log tail", agent)
	}

	// Fixed: the next start stays up, readiness comes back.
	from := s.log.Mark()
	if err := os.Remove(broken); err != nil {
		t.Fatal(err)
	}
	s.log.Wait(t, from, "a start after the fix", 30*time.Second, msg("agent", "agent started"))
	s.eventually(t, "/readyz", 200, 20*time.Second)
	if err := w.mcs.WaitReachable(testContext(t, 30*time.Second), "pod-0"); err != nil {
		t.Fatal(err)
	}
	if agent := s.status(t)["agent"].(map[string]any); agent["crash_loop"] != false || agent["running"] != true {
		t.Fatalf("status agent after the fix %v", agent)
	}
	s.stopGracefully(t)
}

// mustGetCode fetches path once and wants code.
func mustGetCode(t *testing.T, s *sidecar, path string, code int) string {
	t.Helper()
	got, body := s.get(t, path)
	if got != code {
		t.Fatalf("GET %s = %d %q, want %d", path, got, body, code)
	}
	return body
}

// TestInitScriptModeLeavesOneSupervisedAgent registers through
// /etc/init.d/avagent, whose register verb starts a daemon: the daemon is
// stopped and exactly one agent runs, in the foreground, under the
// sidecar. A daemon left running with old flags does not survive the next
// start, which runs the agent with its new flags.
func TestInitScriptModeLeavesOneSupervisedAgent(t *testing.T) {
	w := newWorld(t, false, "AVAMAR_REGISTER_MODE=initscript")
	s := startPlain(t, w.bins.Avsidecar, w.env, w.http)
	s.log.Wait(t, 0, "registration", 60*time.Second, msg("register", "registered"))
	stopped := s.log.Wait(t, 0, "the register verb's daemon stopped", 10*time.Second, msg("register", "init script daemon stopped"))
	daemon := int(stopped["pid"].(float64))
	s.eventually(t, "/readyz", 200, 20*time.Second)
	if err := w.mcs.WaitReachable(testContext(t, 30*time.Second), "pod-0"); err != nil {
		t.Fatal(err)
	}
	if processAlive(daemon) {
		t.Fatalf("the register verb's daemon %d still runs", daemon)
	}
	supervised := int(s.status(t)["agent"].(map[string]any)["pid"].(float64))
	checkOneSupervisedAgent(t, s, w.root, supervised)
	// The verb got the MCS's port (not the default 28001) and avagent --init
	// recorded it.
	if cfg := mustRead(t, filepath.Join(prefixDir(w.root), "var/avagent.cfg")); !strings.Contains(cfg, "--mcsport="+strconv.Itoa(w.mcs.Port())+"\n") {
		t.Fatalf("avagent.cfg = %q, want the MCS port %d", cfg, w.mcs.Port())
	}
	if n := w.mcs.Count("pod-0"); n != 1 {
		t.Fatalf("%d registrations, want 1", n)
	}
	s.stopGracefully(t)
	if left := liveAgents(w.root); len(left) > 0 {
		t.Fatalf("agents left after the stop: %+v", left)
	}

	// A daemon started by hand (`/etc/init.d/avagent start`) with the flags
	// of this start keeps running; the next start moves the listen port.
	out, err := exec.Command(filepath.Join(w.root, "etc/init.d/avagent"), "start").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Client Agent started") {
		t.Fatalf("init script start: %v\n%s", err, out)
	}
	old, _ := strconv.Atoi(strings.Fields(mustRead(t, filepath.Join(prefixDir(w.root), "var/avagent.lck")) + " x")[0])
	t.Cleanup(func() {
		if processAlive(old) {
			_ = exec.Command("kill", "-9", strconv.Itoa(old)).Run()
		}
	})
	oldPort := envValue(w.env, "AVAMAR_LISTEN_PORT")
	newPort := strconv.Itoa(testkit.FreePort(t))
	s = startPlain(t, w.bins.Avsidecar, withEnv(w.env, "AVAMAR_LISTEN_PORT", newPort), w.http)
	left := s.log.Wait(t, 0, "the leftover daemon stopped", 30*time.Second, msg("register", "leftover agent daemon stopped"))
	if int(left["pid"].(float64)) != old {
		t.Fatalf("stopped %v, want the leftover daemon %d", left["pid"], old)
	}
	s.log.Wait(t, 0, "reuse of the registration", 10*time.Second, msg("register", "already registered, not registering again"))
	// Ready means the agent accepts on the new port: it runs with the new
	// avagent.cmd. Nothing listens on the old one any more.
	s.eventually(t, "/readyz", 200, 20*time.Second)
	if c, err := net.DialTimeout("tcp", "127.0.0.1:"+oldPort, time.Second); err == nil {
		c.Close()
		t.Fatalf("something still listens on the old port %s", oldPort)
	}
	if processAlive(old) {
		t.Fatalf("leftover daemon %d still runs", old)
	}
	checkOneSupervisedAgent(t, s, w.root, int(s.status(t)["agent"].(map[string]any)["pid"].(float64)))
	if n := w.mcs.Count("pod-0"); n != 1 {
		t.Fatalf("%d registrations, want 1", n)
	}
	s.stopGracefully(t)
}

// checkOneSupervisedAgent wants exactly one live agent under root: pid, a
// foreground (--daemon=false) child of the sidecar's main process.
func checkOneSupervisedAgent(t *testing.T, s *sidecar, root string, pid int) {
	t.Helper()
	agents := liveAgents(root)
	if len(agents) != 1 {
		t.Fatalf("%d live agents, want exactly one: %+v", len(agents), agents)
	}
	a := agents[0]
	if a.PID != pid || strings.Contains(a.Cmdline, "--daemon=true") || !strings.Contains(a.Cmdline, "--daemon=false") {
		t.Fatalf("the live agent %+v is not the supervised foreground agent %d", a, pid)
	}
	if a.PPID != s.cmd.Process.Pid {
		t.Fatalf("the agent's parent is %d, want avsidecar %d", a.PPID, s.cmd.Process.Pid)
	}
}

// envValue returns key's value in env.
func envValue(env []string, key string) string {
	v := ""
	for _, kv := range env {
		if k, val, ok := strings.Cut(kv, "="); ok && k == key {
			v = val
		}
	}
	return v
}
