package supervise

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/avsidecar/avsidecar/internal/avclient"
	"github.com/avsidecar/avsidecar/internal/testkit"
)

// fakeClient installs the kit's fake agent as a client's avagent.bin, with
// avagent.cmd holding a free listen port and extra flag lines.
func fakeClient(t *testing.T, extra ...string) (avclient.Client, int) {
	t.Helper()
	avkit := testkit.BuildAvkit(t)
	root := t.TempDir()
	c := avclient.Client{Root: root, Prefix: filepath.Join(root, "usr/local/avamar")}
	for _, d := range []string{filepath.Dir(c.Agent()), c.VarDir()} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(avkit)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(c.Agent(), b, 0o755); err != nil {
		t.Fatal(err)
	}
	port := testkit.FreePort(t)
	cmd := append([]string{"--iplist=127.0.0.1", "--listenport=" + strconv.Itoa(port), "--hostname=pod-0"}, extra...)
	if err := os.WriteFile(c.CmdFile(), []byte(strings.Join(cmd, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return c, port
}

// agentConfig supervises c's agent in the foreground, adopting a daemon it
// leaves in its place as the sidecar does.
func agentConfig(c avclient.Client) Config {
	return Config{
		Path: c.Agent(), Args: c.RunArgs(),
		BackoffBase: 10 * time.Millisecond, BackoffMax: 20 * time.Millisecond, StopTimeout: 5 * time.Second,
		Adopt: func(ctx context.Context, started time.Time, pid int) Daemon {
			if d := c.FindDaemon(ctx, started, pid, 10*time.Second); d != nil {
				return d
			}
			return nil
		},
	}
}

// accepts reports whether something accepts TCP on port.
func accepts(port int) bool {
	conn, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), time.Second)
	if err != nil {
		return false
	}
	conn.Close()
	return true
}

// agentPIDs lists the live processes running c's agent.
func agentPIDs(c avclient.Client) []int {
	var out []int
	for _, p := range testkit.Processes() {
		if strings.HasPrefix(p.Cmdline, c.Agent()+" ") && p.State != "Z" {
			out = append(out, p.PID)
		}
	}
	return out
}

// TestForegroundAgent: the fake agent told --daemon=false stays the
// supervisor's child; the stop ends it and leaves nothing.
func TestForegroundAgent(t *testing.T) {
	c, port := fakeClient(t)
	s, stop := start(t, agentConfig(c))
	waitFor(t, "the agent listening", func() bool { return s.Status().Running && accepts(port) })
	st := s.Status()
	if st.Daemonized || st.Adoptions != 0 {
		t.Fatalf("status %+v: a foreground agent taken for a daemon", st)
	}
	if pids := agentPIDs(c); len(pids) != 1 || pids[0] != st.PID {
		t.Fatalf("agents %v, want only the child %d", pids, st.PID)
	}
	stop()
	if pids := agentPIDs(c); len(pids) != 0 {
		t.Fatalf("agents left after the stop: %v", pids)
	}
}

// TestDaemonizingAgent: an agent that daemonizes despite --daemon=false is
// found through avagent.lck and supervised: status names the daemon, its
// death is an exit that is restarted (and the new daemon adopted), and the
// stop ends it with SIGTERM.
func TestDaemonizingAgent(t *testing.T) {
	c, port := fakeClient(t, "--fake-daemonize")
	s, ev, stop := startLogged(t, agentConfig(c))
	waitFor(t, "a daemon adopted", func() bool { st := s.Status(); return st.Running && st.Daemonized })
	st := s.Status()
	lck, _ := os.ReadFile(c.LockFile())
	if f := strings.Fields(string(lck)); len(f) == 0 || f[0] != strconv.Itoa(st.PID) {
		t.Fatalf("status pid %d, lock file %q", st.PID, lck)
	}
	if !accepts(port) {
		t.Fatal("the adopted daemon does not listen")
	}
	if pids := agentPIDs(c); len(pids) != 1 || pids[0] != st.PID {
		t.Fatalf("agents %v, want only the daemon %d", pids, st.PID)
	}
	if len(ev.with("agent daemonized despite --daemon=false, supervising the daemon")) != 1 {
		t.Errorf("no log line for the adoption")
	}

	// The daemon dies: the supervisor sees it and starts the agent again,
	// which daemonizes again.
	first := st.PID
	if err := killPID(first); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a second daemon", func() bool {
		st := s.Status()
		return st.Running && st.Daemonized && st.PID != first && st.Adoptions == 2
	})
	if st := s.Status(); st.Restarts != 1 || !strings.Contains(st.LastExit, "daemon ended") {
		t.Errorf("after the daemon's death: %+v", st)
	}
	second := s.Status().PID
	stop()
	if pids := agentPIDs(c); len(pids) != 0 {
		t.Fatalf("agents left after the stop: %v", pids)
	}
	if _, err := os.Stat(c.LockFile()); !os.IsNotExist(err) {
		t.Errorf("lock file of the daemon %d still there: the stop was not a SIGTERM it handled (%v)", second, err)
	}
	if len(ev.with("agent daemon stopped")) != 1 {
		t.Errorf("no log line for the daemon's stop")
	}
}

func killPID(pid int) error {
	p, err := os.FindProcess(pid)
	if err != nil {
		return err
	}
	if err := p.Kill(); err != nil {
		return fmt.Errorf("kill %d: %w", pid, err)
	}
	return nil
}

// TestStopWhileLookingForTheDaemon: a stop that comes as the agent forks,
// before its daemon is found, still finds the daemon and stops it.
func TestStopWhileLookingForTheDaemon(t *testing.T) {
	c, _ := fakeClient(t, "--fake-daemonize")
	cfg := agentConfig(c)
	ctx, cancel := context.WithCancel(context.Background())
	find := cfg.Adopt
	cfg.Adopt = func(actx context.Context, started time.Time, pid int) Daemon {
		cancel() // the stop comes now
		<-actx.Done()
		return find(actx, started, pid)
	}
	ev := &events{}
	s, err := New(cfg, zerolog.New(ev))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Run(ctx); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if pids := agentPIDs(c); len(pids) != 0 {
		t.Fatalf("agents left after the stop: %v", pids)
	}
	if len(ev.with("agent daemon stopped")) != 1 {
		t.Errorf("the daemon was not found and stopped")
	}
}
