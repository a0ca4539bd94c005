package avclient

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// sleepAgent installs a copy of sleep as the client's avagent.bin, so that
// a process can really run the client's binary.
func sleepAgent(t *testing.T) Client {
	t.Helper()
	root := t.TempDir()
	c := Client{Root: root, Prefix: filepath.Join(root, "usr/local/avamar")}
	os.MkdirAll(filepath.Join(c.Prefix, "bin"), 0o755)
	os.MkdirAll(c.VarDir(), 0o755)
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatalf("no sleep binary: %v", err)
	}
	b, err := os.ReadFile(sleep)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(c.Agent(), b, 0o755); err != nil {
		t.Fatal(err)
	}
	return c
}

// startProc starts path with args and waits for it in the background; the
// returned channel gets its exit. The process is killed at the end of the
// test.
func startProc(t *testing.T, path string, args ...string) (*exec.Cmd, <-chan error) {
	t.Helper()
	cmd := exec.Command(path, args...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill() })
	return cmd, done
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestDaemonPIDFromLockFile: the pid is the lock file's first field; the
// pid file is read only when the lock file names no running agent.
func TestDaemonPIDFromLockFile(t *testing.T) {
	c := sleepAgent(t)
	agent, _ := startProc(t, c.Agent(), "300")
	other, _ := startProc(t, c.Agent(), "300")
	notAgent, _ := startProc(t, "sleep", "300")
	pid, otherPid, foreign := agent.Process.Pid, other.Process.Pid, notAgent.Process.Pid
	for _, tt := range []struct {
		name, lck, pidFile string
		want               int
	}{
		{"lock file, first field", strconv.Itoa(pid) + " 28002 avagent\n", "", pid},
		{"lock file wins over the pid file", strconv.Itoa(pid) + "\n", strconv.Itoa(otherPid) + "\n", pid},
		{"no lock file: the pid file", "", strconv.Itoa(otherPid) + "\n", otherPid},
		{"lock file of another program: the pid file", strconv.Itoa(foreign) + "\n", strconv.Itoa(otherPid), otherPid},
		{"garbage lock file", "avagent\n", "", 0},
		{"empty lock file", "", "", 0},
		{"our own pid", strconv.Itoa(os.Getpid()), "", 0},
		{"init", "1", "", 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			os.Remove(c.LockFile())
			os.Remove(c.PIDFile())
			if tt.lck != "" {
				write(t, c.LockFile(), tt.lck)
			}
			if tt.pidFile != "" {
				write(t, c.PIDFile(), tt.pidFile)
			}
			if got := c.DaemonPID(); got != tt.want {
				t.Fatalf("DaemonPID = %d, want %d", got, tt.want)
			}
		})
	}
}

// TestStopDaemonThroughLockFile: the daemon the lock file names is stopped
// with SIGTERM; a lock file naming an unrelated process hits nothing.
func TestStopDaemonThroughLockFile(t *testing.T) {
	c := sleepAgent(t)
	agent, done := startProc(t, c.Agent(), "300")
	write(t, c.LockFile(), strconv.Itoa(agent.Process.Pid)+" avagent\n")
	pid, err := c.StopDaemon(context.Background(), 5*time.Second)
	if err != nil || pid != agent.Process.Pid {
		t.Fatalf("StopDaemon = %d, %v", pid, err)
	}
	err = <-done
	if ee, ok := err.(*exec.ExitError); !ok || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGTERM {
		t.Fatalf("daemon ended with %v, want SIGTERM", err)
	}

	other, _ := startProc(t, "sleep", "300")
	write(t, c.LockFile(), strconv.Itoa(other.Process.Pid)+"\n")
	if pid, err := c.StopDaemon(context.Background(), time.Second); pid != 0 || err != nil {
		t.Fatalf("StopDaemon = %d, %v for a process that is not the agent", pid, err)
	}
	if err := other.Process.Signal(syscall.Signal(0)); err != nil {
		t.Fatalf("the unrelated process was hit: %v", err)
	}
}

// TestStopDaemonKillsWhatIgnoresSIGTERM: a daemon that ignores SIGTERM is
// killed after the timeout.
func TestStopDaemonKillsWhatIgnoresSIGTERM(t *testing.T) {
	c := sleepAgent(t)
	// sh execs the agent with SIGTERM ignored (inherited across exec).
	script := filepath.Join(t.TempDir(), "stubborn")
	write(t, script, "#!/bin/sh\ntrap '' TERM\nexec \""+c.Agent()+"\" 300\n")
	os.Chmod(script, 0o755)
	agent, done := startProc(t, script)
	// Wait until the shell has become the agent.
	deadline := time.Now().Add(5 * time.Second)
	for !c.runsAgent(agent.Process.Pid) {
		if time.Now().After(deadline) {
			t.Fatal("the script never became the agent")
		}
		time.Sleep(5 * time.Millisecond)
	}
	write(t, c.LockFile(), strconv.Itoa(agent.Process.Pid)+"\n")
	start := time.Now()
	if _, err := c.StopDaemon(context.Background(), 200*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	err := <-done
	if ee, ok := err.(*exec.ExitError); !ok || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("daemon ended with %v after %v, want SIGKILL", err, time.Since(start))
	}
}

// TestFindDaemon: a lock file written by a new agent process is found and
// the process watched until it ends; an older lock file, or one naming the
// process that just exited, is not.
func TestFindDaemon(t *testing.T) {
	c := sleepAgent(t)
	agent, _ := startProc(t, c.Agent(), "300")
	pid := agent.Process.Pid
	write(t, c.LockFile(), strconv.Itoa(pid)+"\n")
	past := time.Now().Add(-time.Hour)
	os.Chtimes(c.LockFile(), past, past)
	ctx := context.Background()
	if d := c.FindDaemon(ctx, time.Now(), 0, 100*time.Millisecond); d != nil {
		t.Fatalf("found %d through a lock file older than the run", d.PID())
	}
	if d := c.FindDaemon(ctx, past, pid, 100*time.Millisecond); d != nil {
		t.Fatalf("found the process that exited, %d", d.PID())
	}
	since := time.Now()
	go func() {
		// The daemon writes its lock file a moment after the start.
		time.Sleep(100 * time.Millisecond)
		os.Chtimes(c.LockFile(), time.Now(), time.Now())
	}()
	d := c.FindDaemon(ctx, since, 0, 5*time.Second)
	if d == nil || d.PID() != pid {
		t.Fatalf("FindDaemon = %v, want %d", d, pid)
	}
	defer d.Close()
	select {
	case <-d.Done():
		t.Fatal("Done before the daemon ended")
	default:
	}
	agent.Process.Kill()
	select {
	case <-d.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Done not closed after the daemon ended")
	}
}

// TestPidfdReadableSurvivesSignals: a live process's pidfd is never taken
// for ended while signals interrupt poll(2), as the runtime's preemption
// signals do at any time (a live daemon once looked dead that way, and a
// second agent was started beside it); once the process ends, it is.
func TestPidfdReadableSurvivesSignals(t *testing.T) {
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ended := false
	t.Cleanup(func() {
		if !ended {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	fd, err := unix.PidfdOpen(cmd.Process.Pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	// A storm of SIGURG at this process (the runtime's own preemption
	// signal, which it handles), while poll is asked over and over.
	stop := make(chan struct{})
	storm := make(chan struct{})
	go func() {
		defer close(storm)
		for {
			select {
			case <-stop:
				return
			default:
				_ = unix.Kill(os.Getpid(), unix.SIGURG)
			}
		}
	}()
	for i := range 200_000 {
		if pidfdReadable(fd) {
			close(stop)
			<-storm
			t.Fatalf("a live process taken for ended at poll %d", i)
		}
	}
	close(stop)
	<-storm
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	ended = true
	if !pidfdReadable(fd) {
		t.Error("an ended process's pidfd is not readable")
	}
}
