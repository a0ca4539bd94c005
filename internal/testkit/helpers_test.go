package testkit_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
	"golang.org/x/sys/unix"

	"github.com/avsidecar/avsidecar/internal/testkit"
)

// agentBin returns a path named avagent.bin that runs avkit, as in the RPM.
func agentBin(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "avagent.bin")
	if err := os.Symlink(testkit.BuildAvkit(t), p); err != nil {
		t.Fatal(err)
	}
	return p
}

// startMCS starts a fake MCS on 127.0.0.1 that the test closes.
func startMCS(t *testing.T, opts testkit.MCSOptions) *testkit.MCS {
	t.Helper()
	m, err := testkit.StartMCS("127.0.0.1:0", opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// writeFile writes content into dir/name.
func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// result is how a command ended.
type result struct {
	code   int
	stdout string
	stderr string
}

// runCmd runs a command to its end.
func runCmd(t *testing.T, name string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("run %s: %v", name, err)
		}
		code = ee.ExitCode()
	}
	return result{code: code, stdout: out.String(), stderr: errb.String()}
}

// startAgent starts the agent in the foreground as a child that the test
// stops, and returns once it logged that it started.
func startAgent(t *testing.T, bin, vardir string, args ...string) *exec.Cmd {
	t.Helper()
	log := filepath.Join(vardir, "avagent.log")
	before := fileLen(log)
	cmd := exec.Command(bin, append([]string{"--daemon=false", "--vardir=" + vardir}, args...)...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	waitLogFrom(t, log, before, "Client Agent started")
	return cmd
}

func fileLen(path string) int {
	b, _ := os.ReadFile(path)
	return len(b)
}

// waitLog waits until the file at path contains want, woken by inotify.
func waitLog(t *testing.T, path, want string) string {
	t.Helper()
	return waitLogFrom(t, path, 0, want)
}

// waitLogFrom is waitLog looking only after the first from bytes.
func waitLogFrom(t *testing.T, path string, from int, want string) string {
	t.Helper()
	w, err := fsnotify.NewWatcher()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := w.Add(filepath.Dir(path)); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(10 * time.Second)
	for {
		if b, err := os.ReadFile(path); err == nil && len(b) >= from && strings.Contains(string(b[from:]), want) {
			return string(b[from:])
		}
		select {
		case <-w.Events:
		case err := <-w.Errors:
			t.Fatal(err)
		case <-deadline:
			b, _ := os.ReadFile(path)
			t.Fatalf("%s never contained %q; it has:\n%s", path, want, b)
		}
	}
}

// waitExit waits for any process (not only a child) to end, through a
// pidfd, which becomes readable when the process exits.
func waitExit(t *testing.T, pid int) {
	t.Helper()
	fd, err := unix.PidfdOpen(pid, 0)
	if err == unix.ESRCH {
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 10000)
	if err != nil || n == 0 {
		t.Fatalf("process %d did not exit: %v", pid, err)
	}
}

// alive reports whether pid exists.
func alive(pid int) bool {
	return syscall.Kill(pid, 0) == nil
}

// ctxT is a context bounded by a generous deadline for one wait.
func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func itoa(n int) string { return strconv.Itoa(n) }
