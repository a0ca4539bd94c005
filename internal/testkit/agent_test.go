package testkit_test

import (
	"bufio"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"golang.org/x/sys/unix"

	"github.com/avsidecar/avsidecar/internal/testkit"
	"github.com/avsidecar/avsidecar/internal/testkit/fakeagent"
	"github.com/avsidecar/avsidecar/internal/testkit/mcsproto"
)

// client is one fake client's var/ directory and ports.
type client struct {
	bin    string
	vardir string
	port   int
}

// newClient prepares a var/ with the flag files the product writes.
func newClient(t *testing.T, name string) client {
	t.Helper()
	c := client{bin: agentBin(t), vardir: t.TempDir(), port: testkit.FreePort(t)}
	writeFile(t, c.vardir, fakeagent.CmdFile, "--iplist=127.0.0.1\n--listenport="+itoa(c.port)+"\n")
	writeFile(t, c.vardir, fakeagent.DotFile, "--hostname="+name+"\n")
	return c
}

// register runs avagent.bin --init against m, as SPEC says the product does.
func (c client) register(t *testing.T, m *testkit.MCS, extra ...string) result {
	t.Helper()
	args := append([]string{"--init", "--daemon=false", "--mcsaddr=127.0.0.1",
		"--mcsport=" + itoa(m.Port()), "--dpndomain=/clients", "--vardir=" + c.vardir}, extra...)
	return runCmd(t, c.bin, args...)
}

func TestRegisterAccepted(t *testing.T) {
	m := startMCS(t, testkit.MCSOptions{})
	c := newClient(t, "pod-a")

	r := c.register(t, m)
	if r.code != fakeagent.ExitOK {
		t.Fatalf("register: exit %d, stderr %s", r.code, r.stderr)
	}
	want := []testkit.Registration{{Name: "pod-a", Domain: "/clients", IPList: "127.0.0.1", ListenPort: c.port}}
	got := m.Registrations()
	if diff := cmp.Diff(want, got, cmpopts.IgnoreFields(testkit.Registration{}, "ClientID", "Remote", "Time")); diff != "" {
		t.Errorf("registrations (-want +got):\n%s", diff)
	}
	cfg, err := os.ReadFile(filepath.Join(c.vardir, fakeagent.CfgFile))
	if err != nil {
		t.Fatalf("no avagent.cfg after registration: %v", err)
	}
	for _, line := range []string{"--mcsaddr=127.0.0.1", "--hostname=pod-a", "--dpndomain=/clients", "--cid=" + got[0].ClientID} {
		if !strings.Contains(string(cfg), line+"\n") {
			t.Errorf("avagent.cfg lacks %q:\n%s", line, cfg)
		}
	}
	if cid, err := os.ReadFile(filepath.Join(c.vardir, fakeagent.IDFile)); err != nil || strings.TrimSpace(string(cid)) != got[0].ClientID {
		t.Errorf("cid.bin = %q (%v), want the client id %s", cid, err, got[0].ClientID)
	}
	if m.Count("pod-a") != 1 || m.Attempts("pod-a") != 1 {
		t.Errorf("count %d, attempts %d; want 1, 1", m.Count("pod-a"), m.Attempts("pod-a"))
	}
}

func TestRegisterRefused(t *testing.T) {
	m := startMCS(t, testkit.MCSOptions{Refuse: "license expired"})
	c := newClient(t, "pod-r")

	r := c.register(t, m)
	if r.code != fakeagent.ExitFailure || !strings.Contains(r.stderr, "license expired") {
		t.Fatalf("refused register: exit %d, stderr %q; want %d and the reason", r.code, r.stderr, fakeagent.ExitFailure)
	}
	for _, f := range []string{fakeagent.CfgFile, fakeagent.IDFile} {
		if _, err := os.Stat(filepath.Join(c.vardir, f)); !os.IsNotExist(err) {
			t.Errorf("%s written after a refusal: %v", f, err)
		}
	}

	m.SetRefuse("")
	if r := c.register(t, m); r.code != fakeagent.ExitOK {
		t.Fatalf("register after refusals stopped: exit %d, stderr %s", r.code, r.stderr)
	}
	if m.Count("pod-r") != 1 || m.Attempts("pod-r") != 2 {
		t.Errorf("count %d, attempts %d; want 1, 2", m.Count("pod-r"), m.Attempts("pod-r"))
	}
}

func TestRegisterDownThenUp(t *testing.T) {
	m := startMCS(t, testkit.MCSOptions{Down: true})
	c := newClient(t, "pod-d")

	if r := c.register(t, m); r.code != fakeagent.ExitFailure {
		t.Fatalf("register with the MCS down: exit %d, stderr %s; want %d", r.code, r.stderr, fakeagent.ExitFailure)
	}
	if err := m.SetDown(false); err != nil {
		t.Fatal(err)
	}
	if r := c.register(t, m); r.code != fakeagent.ExitOK {
		t.Fatalf("register with the MCS up: exit %d, stderr %s", r.code, r.stderr)
	}
	if err := m.SetDown(true); err != nil {
		t.Fatal(err)
	}
	if r := c.register(t, m); r.code != fakeagent.ExitFailure {
		t.Fatalf("register with the MCS down again: exit %d; want %d", r.code, fakeagent.ExitFailure)
	}
	if m.Count("pod-d") != 1 {
		t.Errorf("count %d, want 1", m.Count("pod-d"))
	}
}

func TestRegisterDelay(t *testing.T) {
	const delay = 400 * time.Millisecond
	m := startMCS(t, testkit.MCSOptions{})
	m.SetDelay(delay)
	c := newClient(t, "pod-slow")

	start := time.Now()
	r := c.register(t, m)
	if r.code != fakeagent.ExitOK {
		t.Fatalf("register: exit %d, stderr %s", r.code, r.stderr)
	}
	if took := time.Since(start); took < delay {
		t.Errorf("registration took %v, less than the MCS delay %v", took, delay)
	}
}

// TestMaxConcurrentBusy fills the MCS's two slots with slow registrations
// and checks that a third one is refused as busy while they run.
func TestMaxConcurrentBusy(t *testing.T) {
	m := startMCS(t, testkit.MCSOptions{MaxConcurrent: 2, Delay: 2 * time.Second})
	var wg sync.WaitGroup
	codes := make([]int, 2)
	for i := range 2 {
		c := newClient(t, "pod-"+itoa(i))
		wg.Go(func() { codes[i] = c.register(t, m).code })
		if err := m.WaitAttempts(ctxT(t), "pod-"+itoa(i), 1); err != nil {
			t.Fatal(err)
		}
	}
	r := newClient(t, "pod-late").register(t, m)
	if r.code != fakeagent.ExitFailure || !strings.Contains(r.stderr, "busy") {
		t.Errorf("third registration: exit %d, stderr %q; want busy refusal", r.code, r.stderr)
	}
	wg.Wait()
	if codes[0] != 0 || codes[1] != 0 {
		t.Errorf("registrations in the slots exited %v, want 0 0", codes)
	}
	if n := len(m.Registrations()); n != 2 {
		t.Errorf("%d registrations, want 2", n)
	}
}

func TestRunAnswersCallback(t *testing.T) {
	m := startMCS(t, testkit.MCSOptions{})
	c := newClient(t, "pod-cb")
	if r := c.register(t, m); r.code != 0 {
		t.Fatalf("register: exit %d, stderr %s", r.code, r.stderr)
	}
	agent := startAgent(t, c.bin, c.vardir)
	if err := m.WaitReachable(ctxT(t), "pod-cb"); err != nil {
		t.Fatal(err)
	}
	log := waitLog(t, filepath.Join(c.vardir, "avagent.log"), "MCS callback from avkit-mcs")
	if !strings.Contains(log, "client pod-cb") {
		t.Errorf("log does not name the client:\n%s", log)
	}
	lck, _ := os.ReadFile(filepath.Join(c.vardir, fakeagent.LockFile))
	if f := strings.Fields(string(lck)); len(f) == 0 || f[0] != itoa(agent.Process.Pid) {
		t.Errorf("lock file %q, want the pid %d first", lck, agent.Process.Pid)
	}

	if err := agent.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := agent.Wait(); err != nil {
		t.Errorf("agent on SIGTERM: %v, want exit 0", err)
	}
	if err := m.WaitUnreachable(ctxT(t), "pod-cb"); err != nil {
		t.Fatal(err)
	}
	waitLog(t, filepath.Join(c.vardir, "avagent.log"), "Client Agent stopping")
	if _, err := os.Stat(filepath.Join(c.vardir, fakeagent.LockFile)); !os.IsNotExist(err) {
		t.Errorf("lock file left after a clean stop: %v", err)
	}
}

// TestFlagFiles checks the order: avagent.cfg < avagent.cmd < .avagent <
// command line, and that unknown flags are ignored with a warning.
func TestFlagFiles(t *testing.T) {
	m := startMCS(t, testkit.MCSOptions{})
	c := newClient(t, "pinned")
	writeFile(t, c.vardir, fakeagent.CmdFile, "--iplist=127.0.0.2\n--listenport=28999\n--hostname=from-cmd\n--no-such-flag=1\n")

	r := c.register(t, m)
	if r.code != 0 {
		t.Fatalf("register: exit %d, stderr %s", r.code, r.stderr)
	}
	if !strings.Contains(r.stderr, `ignoring unknown flag "--no-such-flag=1"`) {
		t.Errorf("no warning about the unknown flag; stderr %q", r.stderr)
	}
	if r := c.register(t, m, "--hostname=from-cli", "--iplist=127.0.0.3"); r.code != 0 {
		t.Fatalf("register: exit %d, stderr %s", r.code, r.stderr)
	}
	var got []string
	for _, reg := range m.Registrations() {
		got = append(got, reg.Name+"@"+reg.IPList+":"+itoa(reg.ListenPort))
	}
	want := []string{"pinned@127.0.0.2:28999", "from-cli@127.0.0.3:28999"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("registrations (-want +got):\n%s", diff)
	}
}

// lockPID reads the pid, the first field of a lock file.
func lockPID(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		t.Fatalf("empty lock file %s", path)
	}
	pid, err := strconv.Atoi(f[0])
	if err != nil {
		t.Fatalf("lock file %q: %v", b, err)
	}
	return pid
}

// TestDaemon checks the init script flow: avagent.bin (daemon by default)
// starts a detached copy, which records its pid in avagent.lck, and says
// "Client Agent started" once it has.
func TestDaemon(t *testing.T) {
	c := newClient(t, "pod-daemon")
	r := runCmd(t, c.bin, "--vardir="+c.vardir)
	if r.code != 0 || !strings.Contains(r.stdout, "Client Agent started") {
		t.Fatalf("daemon start: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	pid := lockPID(t, filepath.Join(c.vardir, fakeagent.LockFile))
	if !alive(pid) {
		t.Fatalf("lock file names %d: no live daemon", pid)
	}
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })
	waitLog(t, filepath.Join(c.vardir, "avagent.log"), "Client Agent started: pid "+itoa(pid))
	conn, err := net.Dial("tcp", "127.0.0.1:"+itoa(c.port))
	if err != nil {
		t.Fatalf("daemon does not listen: %v", err)
	}
	conn.Close()
	sid, _ := unix.Getsid(pid)
	if sid != pid {
		t.Errorf("daemon session %d, want its own (%d)", sid, pid)
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitExit(t, pid)
}

func TestCrashAfter(t *testing.T) {
	c := newClient(t, "pod-crash")
	r := runCmd(t, c.bin, "--daemon=false", "--vardir="+c.vardir, "--fake-crash-after=100ms", "--fake-exit-code=7")
	if r.code != 7 {
		t.Fatalf("exit %d, want 7 (stderr %s)", r.code, r.stderr)
	}
	waitLog(t, filepath.Join(c.vardir, "avagent.log"), "fake crash after 100ms")
	if _, err := os.Stat(filepath.Join(c.vardir, fakeagent.LockFile)); err != nil {
		t.Errorf("a crash should leave its stale lock file: %v", err)
	}
}

// TestDaemonizeAnyway: with --fake-daemonize (here from avagent.cmd, as
// AVAMAR_AGENT_FLAGS puts it) an agent told --daemon=false exits 0 at once
// and leaves a daemon of its own session, which records itself in
// avagent.lck and serves.
func TestDaemonizeAnyway(t *testing.T) {
	c := newClient(t, "pod-forks")
	writeFile(t, c.vardir, fakeagent.CmdFile, "--iplist=127.0.0.1\n--listenport="+itoa(c.port)+"\n--fake-daemonize\n")
	r := runCmd(t, c.bin, "--daemon=false", "--vardir="+c.vardir)
	if r.code != 0 {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	log := waitLog(t, filepath.Join(c.vardir, "avagent.log"), "Client Agent started: pid")
	pid := lockPID(t, filepath.Join(c.vardir, fakeagent.LockFile))
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })
	if !strings.Contains(log, "daemonized despite --daemon=false: daemon pid "+itoa(pid)) {
		t.Errorf("log does not name the daemon %d:\n%s", pid, log)
	}
	if sid, _ := unix.Getsid(pid); sid != pid {
		t.Errorf("daemon session %d, want its own (%d)", sid, pid)
	}
	conn, err := net.Dial("tcp", "127.0.0.1:"+itoa(c.port))
	if err != nil {
		t.Fatalf("daemon does not listen: %v", err)
	}
	conn.Close()
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitExit(t, pid)
}

// TestCrashIfExists plays a crash loop and its fix, through avagent.cmd as
// the operator's AVAMAR_AGENT_FLAGS would.
func TestCrashIfExists(t *testing.T) {
	c := newClient(t, "pod-loop")
	marker := writeFile(t, t.TempDir(), "broken", "")
	writeFile(t, c.vardir, fakeagent.CmdFile, "--listenport="+itoa(c.port)+"\n--fake-crash-if-exists="+marker+"\n--fake-log-lines=3\n")
	for range 2 {
		if r := runCmd(t, c.bin, "--daemon=false", "--vardir="+c.vardir); r.code != 1 {
			t.Fatalf("exit %d with the marker present, want 1", r.code)
		}
	}
	if err := os.Remove(marker); err != nil {
		t.Fatal(err)
	}
	agent := startAgent(t, c.bin, c.vardir)
	log := waitLog(t, filepath.Join(c.vardir, "avagent.log"), "fake log line 3 of 3")
	if n := strings.Count(log, "fake crash at start"); n != 2 {
		t.Errorf("%d crash lines, want 2:\n%s", n, log)
	}
	_ = agent.Process.Signal(syscall.SIGTERM)
	if err := agent.Wait(); err != nil {
		t.Errorf("agent on SIGTERM: %v", err)
	}
}

// TestOrphans makes this test process a subreaper and checks that the
// agent's orphans are handed to it, then reaps them.
func TestOrphans(t *testing.T) {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	defer unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)

	c := newClient(t, "pod-orphans")
	agent := startAgent(t, c.bin, c.vardir, "--fake-orphans=3", "--fake-orphan-life=1s")
	log := waitLog(t, filepath.Join(c.vardir, "avagent.log"), "orphan pid")
	pids := regexp.MustCompile(`orphan pid (\d+)`).FindAllStringSubmatch(log, -1)
	if len(pids) != 3 {
		t.Fatalf("%d orphan pids logged, want 3:\n%s", len(pids), log)
	}
	for _, p := range pids {
		pid, _ := strconv.Atoi(p[1])
		if ppid := parentOf(t, pid); ppid != os.Getpid() {
			t.Errorf("orphan %d has parent %d, want the subreaper %d", pid, ppid, os.Getpid())
		}
		var ws unix.WaitStatus
		got, err := unix.Wait4(pid, &ws, 0, nil)
		if err != nil || got != pid || ws.ExitStatus() != 0 {
			t.Errorf("reap orphan %d: got %d, %v, status %v", pid, got, err, ws)
		}
	}
	_ = agent.Process.Signal(syscall.SIGTERM)
	if err := agent.Wait(); err != nil {
		t.Errorf("agent on SIGTERM: %v", err)
	}
}

// parentOf reads a process's parent pid from /proc.
func parentOf(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile("/proc/" + itoa(pid) + "/status")
	if err != nil {
		t.Fatalf("orphan %d: %v", pid, err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "PPid:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	t.Fatalf("no PPid for %d", pid)
	return 0
}

// TestRegisterSilentServer: a port that accepts and hangs up without an
// answer is an unreachable MCS, not a refusal. (A shadowed error once made
// it look like a refusal with no reason.)
func TestRegisterSilentServer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			bufio.NewReader(conn).ReadString('\n') // take the request, answer nothing
			conn.Close()
		}
	}()
	c := newClient(t, "pod-s")
	r := runCmd(t, c.bin, "--init", "--daemon=false", "--mcsaddr=127.0.0.1",
		"--mcsport="+itoa(ln.Addr().(*net.TCPAddr).Port), "--dpndomain=/clients", "--vardir="+c.vardir)
	if r.code != fakeagent.ExitFailure || !strings.Contains(r.stderr, "did not answer") {
		t.Fatalf("silent MCS: exit %d, stderr %q; want %d, did not answer", r.code, r.stderr, fakeagent.ExitFailure)
	}
}

// TestBackupRunsScripts: a backup work order runs the dataset's
// run-at-start script, the backup (which reads the dataset's files), then
// the run-at-end script, from the scripts directory next to --sysdir; a
// failed start script aborts the backup and skips the end script; a failed
// end script fails the backup after it was taken.
func TestBackupRunsScripts(t *testing.T) {
	c := newClient(t, "pod-backup")
	sysdir := t.TempDir()
	scripts := filepath.Join(sysdir, "scripts")
	if err := os.Mkdir(scripts, 0o755); err != nil {
		t.Fatal(err)
	}
	data := writeFile(t, t.TempDir(), "data", "")
	script := func(name, body string) {
		p := writeFile(t, scripts, name, "#!/bin/sh\n"+body+"\n")
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	script("pre.sh", `echo pre >> "`+data+`"; echo "pre says $0"`)
	script("post.sh", `echo post >> "`+data+`"`)
	script("bad-pre.sh", `echo "cannot quiesce" >&2; exit 3`)
	script("bad-post.sh", `exit 4`)
	startAgent(t, c.bin, c.vardir, "--sysdir="+sysdir+"/")
	addr := "127.0.0.1:" + itoa(c.port)
	steps := func(r mcsproto.BackupReply) string {
		var out []string
		for _, s := range r.Steps {
			out = append(out, s.Step+"="+itoa(s.ExitCode))
		}
		return strings.Join(out, " ")
	}

	r, err := testkit.RunBackup(ctxT(t), addr, mcsproto.Backup{RunAtStart: "pre.sh", RunAtEnd: "post.sh", Paths: []string{data}})
	if err != nil {
		t.Fatal(err)
	}
	if !r.OK || steps(r) != "run_at_start=0 backup=0 run_at_end=0" || r.Captured[data] != "pre\n" {
		t.Fatalf("backup %+v, want start, backup (seeing only pre), end", r)
	}
	if got, _ := os.ReadFile(data); string(got) != "pre\npost\n" {
		t.Errorf("data %q, want pre then post", got)
	}
	if out := r.Steps[0].Output; len(out) != 1 || !strings.HasSuffix(out[0], "scripts/pre.sh") {
		t.Errorf("start script output %q", out)
	}

	r, _ = testkit.RunBackup(ctxT(t), addr, mcsproto.Backup{RunAtStart: "bad-pre.sh", RunAtEnd: "post.sh", Paths: []string{data}})
	if r.OK || steps(r) != "run_at_start=3" || !strings.Contains(r.Reason, "aborted") || r.Steps[0].Output[0] != "cannot quiesce" {
		t.Fatalf("backup with a failing start script %+v", r)
	}
	r, _ = testkit.RunBackup(ctxT(t), addr, mcsproto.Backup{RunAtEnd: "bad-post.sh", Paths: []string{data}})
	if r.OK || steps(r) != "backup=0 run_at_end=4" || !strings.Contains(r.Reason, "exception") {
		t.Fatalf("backup with a failing end script %+v", r)
	}
	r, _ = testkit.RunBackup(ctxT(t), addr, mcsproto.Backup{RunAtStart: "../pre.sh"})
	if r.OK || steps(r) != "run_at_start=-1" {
		t.Fatalf("backup with a path for a script %+v", r)
	}
	if got, _ := os.ReadFile(data); string(got) != "pre\npost\n" {
		t.Errorf("data %q: a failed or refused script ran anyway", got)
	}
	waitLog(t, filepath.Join(c.vardir, "avagent.log"), "run_at_end script bad-post.sh exited 4")
}
