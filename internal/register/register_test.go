package register

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/avsidecar/avsidecar/internal/avclient"
)

// fakeAgent installs a hand-written avagent.bin: a shell script whose body
// decides what registering does.
func fakeAgent(t *testing.T, body string) avclient.Client {
	t.Helper()
	c := avclient.Client{Prefix: t.TempDir()}
	os.MkdirAll(filepath.Join(c.Prefix, "bin"), 0o755)
	os.MkdirAll(c.VarDir(), 0o755)
	script := "#!/bin/sh\nCFG=" + c.RegisteredFile() + "\nCID=" + c.IDFile() + "\n" + body + "\n"
	if err := os.WriteFile(c.Agent(), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return c
}

// listener is a TCP port that accepts, standing in for the MCS port.
func listener(t *testing.T) (string, int) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	a := l.Addr().(*net.TCPAddr)
	return a.IP.String(), a.Port
}

func newRegistrar(t *testing.T, c avclient.Client, server string, port int) *Registrar {
	t.Helper()
	r, err := New(Config{Client: c, Server: server, Port: port, Domain: "/clients", ClientName: "pod-0",
		ReceiptFile: filepath.Join(c.Prefix, "var/avsidecar/registration.json"),
		Timeout:     2 * time.Second, BackoffBase: time.Millisecond, BackoffMax: time.Millisecond, CheckTimeout: time.Second},
		zerolog.New(zerolog.NewTestWriter(t)))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// runUntil runs the registrar until it has made n attempts or registered.
func runUntil(t *testing.T, r *Registrar, n int) Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- r.Register(ctx) }()
	for {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			return r.Status()
		case <-ctx.Done():
			t.Fatal("registrar neither registered nor made enough attempts")
		case <-time.After(time.Millisecond):
			if r.Status().Attempts >= n {
				cancel()
				// nil only when the last attempt registered.
				if err := <-done; !errors.Is(err, context.Canceled) && (err != nil || !r.Status().Registered) {
					t.Fatalf("cancelled Register returned %v, want context.Canceled", err)
				}
				return r.Status()
			}
		}
	}
}

// onceListener is an MCS port that accepts one connection (the check
// before the attempt) and then closes: the server goes away while the
// command runs.
func onceListener(t *testing.T) (string, int) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		if c, err := l.Accept(); err == nil {
			c.Close()
		}
		l.Close()
	}()
	t.Cleanup(func() { l.Close() })
	a := l.Addr().(*net.TCPAddr)
	return a.IP.String(), a.Port
}

// TestOutcomes: an attempt's outcome comes from the reachability check,
// made before the command and again after it failed, and from what the
// command wrote; never from its exit code, which no public source
// documents (the same words give the same outcome with any code).
func TestOutcomes(t *testing.T) {
	host, port := listener(t)
	// A port nothing listens on: bound, then released.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedPort := l.Addr().(*net.TCPAddr).Port
	l.Close()
	tests := []struct {
		name, body, server string
		port               int
		outcome, errPart   string
	}{
		{"refused", `echo "registration refused: unknown domain" >&2; exit 1`, host, port, OutcomeRefused, "unknown domain"},
		{"refused, another code", `echo "registration refused: unknown domain" >&2; exit 2`, host, port, OutcomeRefused, "unknown domain"},
		{"refused, no words", `exit 9`, host, port, OutcomeRefused, "exit status 9"},
		{"mcs silent", `echo "MCS did not answer" >&2; exit 2`, host, port, OutcomeUnreachable, "did not answer"},
		{"mcs silent, another code", `echo "Error: cannot connect to MCS" >&2; exit 1`, host, port, OutcomeUnreachable, "cannot connect"},
		{"local error", `echo "cannot write avagent.cfg" >&2; exit 3`, host, port, OutcomeError, "cannot write"},
		{"local error, another code", `echo "open /x/cid.bin: read-only file system" >&2; exit 1`, host, port, OutcomeError, "read-only"},
		{"server gone during the attempt", `echo "registration failed" >&2; exit 1`, "", 0, OutcomeUnreachable, "connect to MCS"},
		{"timeout", `exec sleep 30`, host, port, OutcomeTimeout, "no answer"},
		{"no cfg", `exit 0`, host, port, OutcomeError, "left no avagent.cfg"},
		{"no cid", `echo "--cid=1" > "$CFG"; exit 0`, host, port, OutcomeError, "left no cid.bin"},
		{"unresolved", `exit 0`, "no-such-mcs.invalid", port, OutcomeUnresolved, "resolve no-such-mcs.invalid"},
		{"unreachable", `exit 0`, "127.0.0.1", closedPort, OutcomeUnreachable, "connect to MCS"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			server, port := tt.server, tt.port
			attempts := 2
			if server == "" {
				server, port = onceListener(t)
				attempts = 1
			}
			r := newRegistrar(t, fakeAgent(t, tt.body), server, port)
			if tt.name == "timeout" {
				r.cfg.Timeout = 200 * time.Millisecond
			}
			st := runUntil(t, r, attempts)
			if st.Registered || st.LastOutcome != tt.outcome || !strings.Contains(st.LastError, tt.errPart) {
				t.Fatalf("status %+v, want outcome %s with %q", st, tt.outcome, tt.errPart)
			}
			if st.Outcomes[tt.outcome] < attempts {
				t.Fatalf("outcomes %v: the registrar gave up", st.Outcomes)
			}
		})
	}
}

func TestRegistersOnceAndReusesReceipt(t *testing.T) {
	host, port := listener(t)
	counter := filepath.Join(t.TempDir(), "count")
	c := fakeAgent(t, `echo x >> `+counter+`; echo "server=$4" > "$CFG"; echo 1 > "$CID"`)
	st := runUntil(t, newRegistrar(t, c, host, port), 1)
	if !st.Registered || st.Reused || st.Attempts != 1 {
		t.Fatalf("first run %+v", st)
	}
	st = runUntil(t, newRegistrar(t, c, host, port), 1)
	if !st.Registered || !st.Reused || st.Attempts != 0 {
		t.Fatalf("second run %+v", st)
	}
	if b, _ := os.ReadFile(counter); strings.Count(string(b), "x") != 1 {
		t.Fatalf("registered %d times, want once", strings.Count(string(b), "x"))
	}

	// A changed server registers again.
	host2, port2 := listener(t)
	st = runUntil(t, newRegistrar(t, c, host2, port2), 1)
	if !st.Registered || st.Reused {
		t.Fatalf("changed server %+v", st)
	}
	if b, _ := os.ReadFile(counter); strings.Count(string(b), "x") != 2 {
		t.Fatalf("registered %d times, want twice", strings.Count(string(b), "x"))
	}

	// A lost avagent.cfg or cid.bin (a new PV, a var dir not persisted)
	// registers again under the same name.
	for i, lost := range []string{c.RegisteredFile(), c.IDFile()} {
		os.Remove(lost)
		st = runUntil(t, newRegistrar(t, c, host2, port2), 1)
		if !st.Registered || st.Reused {
			t.Fatalf("lost %s: %+v", lost, st)
		}
		if b, _ := os.ReadFile(counter); strings.Count(string(b), "x") != 3+i {
			t.Fatalf("lost %s: registered %d times, want %d", lost, strings.Count(string(b), "x"), 3+i)
		}
	}
}
