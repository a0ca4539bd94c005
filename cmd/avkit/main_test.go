package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/avsidecar/avsidecar/internal/testkit"
	"github.com/avsidecar/avsidecar/internal/testkit/fakeagent"
)

func run(t *testing.T, name string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), out.String(), errb.String()
	} else if err != nil {
		t.Fatal(err)
	}
	return 0, out.String(), errb.String()
}

// TestMCSCommand runs avkit mcs and registers an agent with it: the
// registration shows as a JSON line on stdout.
func TestMCSCommand(t *testing.T) {
	avkit := testkit.BuildAvkit(t)
	port := testkit.FreePort(t)
	mcs := exec.Command(avkit, "mcs", "--addr", "127.0.0.1:"+strconv.Itoa(port), "--delay", "10ms")
	stdout, err := mcs.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := mcs.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mcs.Process.Kill(); _ = mcs.Wait() })
	lines := bufio.NewScanner(stdout)
	next := func(msg string) map[string]any {
		t.Helper()
		for lines.Scan() {
			var m map[string]any
			if err := json.Unmarshal(lines.Bytes(), &m); err != nil {
				t.Fatalf("not a JSON line: %q", lines.Text())
			}
			if m["message"] == msg {
				return m
			}
		}
		t.Fatalf("avkit mcs ended before %q: %v", msg, lines.Err())
		return nil
	}
	next("mcs started")

	vardir := t.TempDir()
	code, _, stderr := run(t, avkit, "avagent", "--init", "--daemon=false", "--mcsaddr=127.0.0.1",
		"--mcsport="+strconv.Itoa(port), "--hostname=pod-cli", "--iplist=127.0.0.1", "--vardir="+vardir)
	if code != 0 {
		t.Fatalf("avkit avagent --init: exit %d, %s", code, stderr)
	}
	reg := next("client registered")
	if reg["name"] != "pod-cli" || reg["component"] != "mcs" || reg["iplist"] != "127.0.0.1" {
		t.Errorf("registration line %v", reg)
	}

	if err := mcs.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	next("mcs stopping")
	if err := mcs.Wait(); err != nil {
		t.Errorf("avkit mcs on SIGTERM: %v", err)
	}
}

// TestAvagentSubcommandDaemon checks that "avkit avagent" daemonizes
// through the subcommand, not only under the avagent.bin name.
func TestAvagentSubcommandDaemon(t *testing.T) {
	avkit := testkit.BuildAvkit(t)
	vardir := t.TempDir()
	code, out, stderr := run(t, avkit, "avagent", "--vardir="+vardir, "--listenport="+strconv.Itoa(testkit.FreePort(t)))
	if code != 0 || out != "Client Agent started\n" {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, stderr)
	}
	b, err := os.ReadFile(filepath.Join(vardir, fakeagent.LockFile))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.Fields(string(b) + " x")[0])
	if err != nil {
		t.Fatal(err)
	}
	cmdline, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if !bytes.Contains(cmdline, []byte("avagent\x00")) || !bytes.Contains(cmdline, []byte("--daemon=false")) {
		t.Errorf("daemon command line %q", cmdline)
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatalf("daemon %d: %v", pid, err)
	}
	// The daemon is not our child: wait for its end through a pidfd.
	fd, err := unix.PidfdOpen(pid, 0)
	if err == nil {
		defer unix.Close(fd)
		if n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 10000); n != 1 {
			t.Errorf("daemon %d did not stop on SIGTERM: %v", pid, err)
		}
	}
}

func TestRPMCommand(t *testing.T) {
	rpmBin := testkit.NeedCommand(t, "rpm")
	avkit := testkit.BuildAvkit(t)
	dir := t.TempDir()
	code, out, stderr := run(t, avkit, "rpm", "-o", dir, "--version", "19.10.0", "--release", "7", "--compression", "zstd")
	if code != 0 {
		t.Fatalf("avkit rpm: exit %d, %s", code, stderr)
	}
	want := filepath.Join(dir, "AvamarClient-linux-sles11-x86_64-19.10.0-7.rpm")
	if strings.TrimSpace(out) != want {
		t.Errorf("avkit rpm printed %q, want %q", out, want)
	}
	q, err := exec.Command(rpmBin, "-qp", "--queryformat", "%{VERSION}-%{RELEASE} %{PAYLOADCOMPRESSOR}", want).Output()
	if err != nil || string(q) != "19.10.0-7 zstd" {
		t.Errorf("rpm -qp: %q, %v", q, err)
	}
}

func TestUsageErrors(t *testing.T) {
	avkit := testkit.BuildAvkit(t)
	for _, args := range [][]string{{}, {"nope"}, {"rpm"}, {"mcs", "--bogus"}, {"rpm", "-o", "x", "extra"}} {
		if code, _, stderr := run(t, avkit, args...); code != 2 || stderr == "" {
			t.Errorf("avkit %q: exit %d, stderr %q; want 2 and a message", args, code, stderr)
		}
	}
	if code, out, _ := run(t, avkit, "help"); code != 0 || !strings.Contains(out, "usage: avkit") {
		t.Errorf("avkit help: exit %d, %q", code, out)
	}
	// Help must not be taken for an unknown flag and start a daemon.
	if code, out, _ := run(t, avkit, "avagent", "--help"); code != 0 || !strings.Contains(out, "fake-crash-after") {
		t.Errorf("avkit avagent --help: exit %d, %q", code, out)
	}
}
