package testkit

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strconv"
	"testing"
)

// InCI reports whether the tests run in CI, where nothing may be skipped.
func InCI() bool { return os.Getenv("CI") == "true" }

// Need skips the test with a clear message when ok is false, except in CI
// (CI=true), where a missing prerequisite is a failure: CI installs
// everything the tests use, so a skip there would hide a broken setup.
func Need(tb testing.TB, ok bool, what string) {
	tb.Helper()
	if ok {
		return
	}
	if InCI() {
		tb.Fatalf("needs %s (CI=true: skipping is not allowed)", what)
	}
	tb.Skipf("needs %s; skipped outside CI", what)
}

// NeedRoot needs the test process to run as root.
func NeedRoot(tb testing.TB) {
	tb.Helper()
	Need(tb, os.Geteuid() == 0, "root")
}

// NeedCommand needs an executable on PATH and returns its path.
func NeedCommand(tb testing.TB, name string) string {
	tb.Helper()
	p, err := exec.LookPath(name)
	Need(tb, err == nil, "the "+name+" command")
	return p
}

// FreePort returns a TCP port that nothing listens on, for a server the
// test starts as a separate process and so cannot hand a listener.
//
// The port is drawn from freePorts, below the kernel's ephemeral range
// (net.ipv4.ip_local_port_range, 32768-60999 by default): a port the
// kernel handed out for the asking is one it hands out again, as the
// source port of any test's next connection, and the server then fails
// with "address already in use" (it did, under CI's load). The range also
// stays clear of the cluster test's NodePorts (30000-32767) and of the
// Avamar ports (27000-29000) that tests bind on other addresses. It is
// checked free on every address, as the servers bind it.
func FreePort(tb testing.TB) int {
	tb.Helper()
	port, err := PickPort()
	if err != nil {
		tb.Fatal(err)
	}
	return port
}

// PickPort is FreePort for programs that are not tests (the benchmarks).
func PickPort() (int, error) {
	for range 200 {
		port := freePorts.lo + rand.IntN(freePorts.hi-freePorts.lo+1)
		l, err := net.Listen("tcp", ":"+strconv.Itoa(port))
		if err != nil {
			continue
		}
		l.Close()
		return port, nil
	}
	return 0, fmt.Errorf("no free port in %d-%d after 200 tries", freePorts.lo, freePorts.hi)
}

// freePorts is the range FreePort draws from.
var freePorts = struct{ lo, hi int }{10000, 26999}
