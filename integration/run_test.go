package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/avsidecar/avsidecar/internal/testkit"
)

// world is one sidecar's surroundings: a root with the kit's RPM in it, and
// a fake MCS.
type world struct {
	bins testkit.Binaries
	root string
	mcs  *testkit.MCS
	env  []string
	http string
}

func newWorld(t *testing.T, mcsDown bool, extraEnv ...string) *world {
	t.Helper()
	w := &world{bins: testkit.BuildBinaries(t), root: t.TempDir()}
	rpmDir := filepath.Join(w.root, "opt/avamar")
	if err := os.MkdirAll(rpmDir, 0o755); err != nil {
		t.Fatal(err)
	}
	testkit.WriteRPM(t, rpmDir, testkit.RPMOptions{})
	mcs, err := testkit.StartMCS("127.0.0.1:0", testkit.MCSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mcs.Close() })
	if mcsDown {
		if err := mcs.SetDown(true); err != nil {
			t.Fatal(err)
		}
	}
	w.mcs = mcs
	w.http = "127.0.0.1:" + strconv.Itoa(testkit.FreePort(t))
	w.env = append([]string{
		"PATH=" + os.Getenv("PATH"),
		"AVSIDECAR_ROOT=" + w.root,
		"AVAMAR_SERVER=" + mcs.Addr(),
		"NODE_IP=127.0.0.1",
		"POD_NAME=pod-0",
		"AVAMAR_LISTEN_PORT=" + strconv.Itoa(testkit.FreePort(t)),
		"AVSIDECAR_HTTP_ADDR=" + w.http,
		"AVSIDECAR_SSH_ADDR=off",
		"AVSIDECAR_REGISTER_BACKOFF_MAX=200ms",
		"AVSIDECAR_RESTART_BACKOFF_MAX=100ms",
		"AVSIDECAR_SHUTDOWN_TIMEOUT=10s",
		"AVSIDECAR_LOG_LEVEL=debug",
	}, extraEnv...)
	return w
}

// startPID1 runs avsidecar as PID 1 of a new PID namespace.
func (w *world) startPID1(t *testing.T) *sidecar {
	t.Helper()
	unshare := testkit.NeedCommand(t, "unshare")
	testkit.NeedRoot(t)
	return startSidecar(t, []string{unshare, "--pid", "--fork", "--mount-proc", w.bins.Avsidecar, "run"}, w.env, w.http)
}

// init finds the sidecar's PID 1 (the child of unshare) by its host pid.
func (s *sidecar) init(t *testing.T) int {
	t.Helper()
	for _, p := range descendants(s.cmd.Process.Pid) {
		if p.PPID == s.cmd.Process.Pid {
			return p.PID
		}
	}
	t.Fatal("no PID 1 under unshare")
	return 0
}

// TestRunAsPID1 is issue 2's walk through the product: the MCS comes up
// late, the agent is killed, orphans are reaped, SIGTERM stops everything,
// and a second start on the same volume does nothing twice.
func TestRunAsPID1(t *testing.T) {
	ssh := testkit.NeedCommand(t, "ssh")
	keygen := testkit.NeedCommand(t, "ssh-keygen")
	keys := t.TempDir()
	key := filepath.Join(keys, "id")
	if out, err := exec.Command(keygen, "-q", "-t", "ed25519", "-N", "", "-f", key).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	sshPort := strconv.Itoa(testkit.FreePort(t))
	w := newWorld(t, true, "AVAMAR_AGENT_FLAGS=--fake-orphans=3", "AVSIDECAR_SSH_ADDR=127.0.0.1:"+sshPort)
	// The default authorized_keys, inside AVSIDECAR_ROOT.
	authorized := filepath.Join(w.root, "etc/avsidecar/ssh/authorized_keys")
	if err := os.MkdirAll(filepath.Dir(authorized), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(key+".pub", authorized); err != nil {
		t.Fatal(err)
	}
	s := w.startPID1(t)

	// The MCS is down: the sidecar serves probes, retries and says why.
	s.log.Wait(t, 0, "an unreachable registration attempt", 60*time.Second,
		msg("register", "registration failed", "outcome", "unreachable"))
	s.log.Wait(t, 0, "a second attempt", 10*time.Second, msg("register", "registration failed", "attempt", 2))
	if code, body := s.get(t, "/livez"); code != 200 {
		t.Fatalf("/livez = %d %s", code, body)
	}
	if code, body := s.get(t, "/startupz"); code != 200 {
		t.Fatalf("/startupz = %d %s once installed", code, body)
	}
	if code, body := s.get(t, "/readyz"); code != 503 || !strings.Contains(body, "[-]registered: not registered after") {
		t.Fatalf("/readyz = %d %q, want 503 naming registration", code, body)
	}

	// The MCS comes up: registered, the MCS reaches the agent, ready.
	if err := w.mcs.SetDown(false); err != nil {
		t.Fatal(err)
	}
	s.log.Wait(t, 0, "registration", 30*time.Second, msg("register", "registered"))
	ctx := testContext(t, 30*time.Second)
	if err := w.mcs.WaitReachable(ctx, "pod-0"); err != nil {
		t.Fatalf("MCS never reached the agent: %v", err)
	}
	s.eventually(t, "/readyz", 200, 10*time.Second)

	// The agent's orphans are reaped by PID 1.
	s.log.WaitN(t, 0, 3, "three reaped orphans", 30*time.Second, msg("main", "reaped orphan"))

	// avagent is killed: restarted, ready again.
	var agent proc
	for _, p := range descendants(s.cmd.Process.Pid) {
		if strings.Contains(p.Cmdline, "avagent.bin --daemon=false") {
			agent = p
		}
	}
	if agent.PID == 0 {
		t.Fatal("no avagent process in the sidecar")
	}
	from := s.log.Mark()
	signal(t, agent.PID, syscall.SIGKILL)
	s.log.Wait(t, from, "the agent's exit", 10*time.Second, msg("agent", "agent exited, restarting"))
	s.log.Wait(t, from, "the agent's restart", 10*time.Second, msg("agent", "agent started"))
	s.eventually(t, "/readyz", 200, 10*time.Second)
	if st := s.status(t); st["agent"].(map[string]any)["restarts"].(float64) < 1 {
		t.Fatalf("status does not count the restart: %v", st["agent"])
	}

	// An SSH command's exit status comes back through PID 1's reaper,
	// and its own orphan is reaped like the agent's.
	from = s.log.Mark()
	cmd := exec.Command(ssh, "-i", key, "-p", sshPort, "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
		"-o", "UserKnownHostsFile=/dev/null", "root@127.0.0.1", "sleep 0.01 & echo via-pid1; exit 3")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != 3 || string(out) != "via-pid1\n" {
		t.Fatalf("ssh: %v, output %q; want exit 3 and via-pid1\n%s", err, out, stderr.String())
	}
	s.log.Wait(t, from, "the SSH command's orphan reaped", 10*time.Second, msg("main", "reaped orphan"))

	// No zombies: every process left under PID 1 is alive.
	for _, p := range descendants(s.cmd.Process.Pid) {
		if p.State == "Z" {
			t.Errorf("zombie %d %q", p.PID, p.Cmdline)
		}
	}

	// SIGTERM: readiness fails, everything stops, exit 0, nothing left.
	signal(t, s.init(t), syscall.SIGTERM)
	if code := s.exitCode(t, 15*time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0", code)
	}
	s.log.Wait(t, 0, "the stop", time.Second, msg("main", "stopped"))
	if left := withCmdline(w.root); len(left) > 0 {
		t.Fatalf("processes left after stop: %+v", left)
	}
	if n := w.mcs.Count("pod-0"); n != 1 {
		t.Fatalf("MCS has %d registrations of pod-0, want 1", n)
	}

	// A second start on the same root installs and registers nothing.
	before := snapshot(t, filepath.Join(w.root, "usr/local/avamar"))
	s2 := w.startPID1(t)
	s2.log.Wait(t, 0, "reuse of the registration", 30*time.Second, msg("register", "already registered, not registering again"))
	s2.eventually(t, "/readyz", 200, 20*time.Second)
	st := s2.status(t)
	if inst := st["install"].(map[string]any); inst["changed"] != false {
		t.Fatalf("second start reinstalled: %v", inst)
	}
	if n := w.mcs.Count("pod-0"); n != 1 {
		t.Fatalf("second start registered again: %d registrations", n)
	}
	after := snapshot(t, filepath.Join(w.root, "usr/local/avamar"))
	for path, mt := range before {
		if after[path] != mt && !strings.HasPrefix(filepath.Base(path), "avagent.log") && !strings.HasSuffix(path, ".pid") {
			t.Errorf("second start rewrote %s", path)
		}
	}
	signal(t, s2.init(t), syscall.SIGTERM)
	if code := s2.exitCode(t, 15*time.Second); code != 0 {
		t.Fatalf("second run exit code %d", code)
	}
}

// snapshot maps every file below dir to its modification time.
func snapshot(t *testing.T, dir string) map[string]time.Time {
	t.Helper()
	out := map[string]time.Time{}
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if !fi.IsDir() {
			out[p] = fi.ModTime()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
