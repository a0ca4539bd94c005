package register

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/avsidecar/avsidecar/internal/avclient"
	"github.com/avsidecar/avsidecar/internal/config"
)

// daemonClient installs a copy of sleep as avagent.bin (so that the lock
// file names a process that really runs the client's binary) and an init
// script whose register verb starts it in the background, like the real
// one, and whose stop verb runs stopBody.
func daemonClient(t *testing.T, stopBody string) (avclient.Client, string) {
	// The script is the client's own /etc/init.d/avagent, under its root.
	t.Helper()
	root := t.TempDir()
	c := avclient.Client{Root: root, Prefix: filepath.Join(root, "usr/local/avamar")}
	os.MkdirAll(filepath.Join(c.Prefix, "bin"), 0o755)
	os.MkdirAll(c.VarDir(), 0o755)
	os.MkdirAll(filepath.Dir(c.InitScript()), 0o755)
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep binary")
	}
	b, err := os.ReadFile(sleep)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(c.Agent(), b, 0o755); err != nil {
		t.Fatal(err)
	}
	script := c.InitScript()
	body := `#!/bin/sh
var=` + c.VarDir() + `
case $1 in
register)
	echo "$2 $3" >> "$var/register.args"
	echo "--cid=1" > "$var/avagent.cfg"
	echo 1 > "$var/cid.bin"
	"` + c.Agent() + `" 300 </dev/null >/dev/null 2>&1 &
	echo "$! avagent" > "$var/avagent.lck"
	echo "Client Agent started"
	;;
stop)
	` + stopBody + `
	;;
esac
`
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	return c, script
}

// TestInitScriptDaemonIsStopped: whatever the stop verb does, no daemon
// is left once Run returns, and the register verb got a bare host, even
// for a port other than the default (avagent.cmd's --mcsport carries it).
func TestInitScriptDaemonIsStopped(t *testing.T) {
	for _, tt := range []struct{ name, stop string }{
		{"stop verb works", `kill $(cut -d" " -f1 "$var/avagent.lck"); rm -f "$var/avagent.lck"; echo "Client Agent stopped"`},
		{"stop verb does nothing", `echo "Client Agent not running"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, _ := daemonClient(t, tt.stop)
			host, port := listener(t)
			r := newRegistrar(t, c, host, port)
			r.cfg.Mode, r.cfg.StopTimeout = config.ModeInitScript, 2*time.Second
			st := runUntil(t, r, 1)
			if !st.Registered {
				t.Fatalf("status %+v", st)
			}
			args, _ := os.ReadFile(filepath.Join(c.VarDir(), "register.args"))
			if want := host + " /clients\n"; string(args) != want {
				t.Errorf("register verb got %q, want %q", args, want)
			}
			if pid := c.DaemonPID(); pid != 0 {
				t.Fatalf("daemon %d still runs", pid)
			}
			if left := procsRunning(c.Agent()); len(left) > 0 {
				t.Fatalf("agent processes left: %v", left)
			}
		})
	}
}

// TestLeftoverDaemonStopped: a daemon an earlier start left is stopped
// before anything else, even when nothing needs registering.
func TestLeftoverDaemonStopped(t *testing.T) {
	c, _ := daemonClient(t, "")
	host, port := listener(t)
	// Registered before: a matching receipt, avagent.cfg and cid.bin.
	if err := writeReceipt(filepath.Join(c.Prefix, "var/avsidecar/registration.json"),
		Receipt{Server: host, Port: port, Domain: "/clients", Client: "pod-0"}); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(c.RegisteredFile(), []byte("--cid=1\n"), 0o644)
	os.WriteFile(c.IDFile(), []byte("1\n"), 0o644)
	old := exec.Command(c.Agent(), "300")
	if err := old.Start(); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(c.LockFile(), []byte(strconv.Itoa(old.Process.Pid)+" avagent\n"), 0o644)
	done := make(chan error, 1)
	go func() { done <- old.Wait() }()

	r := newRegistrar(t, c, host, port)
	if err := r.Register(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		ee, ok := err.(*exec.ExitError)
		if !ok || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGTERM {
			t.Fatalf("leftover daemon ended with %v, want SIGTERM", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("leftover daemon still runs after Run")
	}
}

// TestLockFileOfAnotherProcess: a stale lock file naming a process that
// does not run the agent is left alone.
func TestLockFileOfAnotherProcess(t *testing.T) {
	c, _ := daemonClient(t, "")
	other := exec.Command("sleep", "300")
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Process.Kill(); other.Wait() })
	os.WriteFile(c.LockFile(), []byte(strconv.Itoa(other.Process.Pid)+"\n"), 0o644)
	if pid := c.DaemonPID(); pid != 0 {
		t.Fatalf("DaemonPID = %d for a process that is not the agent", pid)
	}
	if pid, err := c.StopDaemon(context.Background(), time.Second); pid != 0 || err != nil {
		t.Fatalf("StopDaemon = %d, %v", pid, err)
	}
	if err := other.Process.Signal(syscall.Signal(0)); err != nil {
		t.Fatalf("the unrelated process was hit: %v", err)
	}
}

// procsRunning lists live processes whose executable is path.
func procsRunning(path string) []int {
	want, err := os.Stat(path)
	if err != nil {
		return nil
	}
	var out []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		exe, err := os.Stat(filepath.Join("/proc", e.Name(), "exe"))
		if err != nil || !os.SameFile(exe, want) {
			continue
		}
		stat, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		s := string(stat)
		if f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:]); len(f) > 0 && f[0] != "Z" {
			out = append(out, pid)
		}
	}
	return out
}
