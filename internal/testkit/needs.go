package testkit

import (
	"net"
	"os"
	"os/exec"
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

// FreePort returns a loopback TCP port that was free a moment ago, for a
// server the test starts as a separate process and so cannot hand a
// listener.
func FreePort(tb testing.TB) int {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
