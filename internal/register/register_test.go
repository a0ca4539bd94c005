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
	script := "#!/bin/sh\nCFG=" + c.RegisteredFile() + "\n" + body + "\n"
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
		{"mcs silent", `echo "MCS did not answer" >&2; exit 2`, host, port, OutcomeUnreachable, "did not answer"},
		{"local error", `echo "cannot write avagent.cfg" >&2; exit 3`, host, port, OutcomeError, "cannot write"},
		{"timeout", `exec sleep 30`, host, port, OutcomeTimeout, "no answer"},
		{"no cfg", `exit 0`, host, port, OutcomeError, "left no avagent.cfg"},
		{"unresolved", `exit 0`, "no-such-mcs.invalid", port, OutcomeUnresolved, "resolve no-such-mcs.invalid"},
		{"unreachable", `exit 0`, "127.0.0.1", closedPort, OutcomeUnreachable, "connect to MCS"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRegistrar(t, fakeAgent(t, tt.body), tt.server, tt.port)
			if tt.name == "timeout" {
				r.cfg.Timeout = 200 * time.Millisecond
			}
			st := runUntil(t, r, 2)
			if st.Registered || st.LastOutcome != tt.outcome || !strings.Contains(st.LastError, tt.errPart) {
				t.Fatalf("status %+v, want outcome %s with %q", st, tt.outcome, tt.errPart)
			}
			if st.Outcomes[tt.outcome] < 2 {
				t.Fatalf("outcomes %v: the registrar gave up", st.Outcomes)
			}
		})
	}
}

func TestRegistersOnceAndReusesReceipt(t *testing.T) {
	host, port := listener(t)
	counter := filepath.Join(t.TempDir(), "count")
	c := fakeAgent(t, `echo x >> `+counter+`; echo "server=$4" > "$CFG"`)
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

	// A lost avagent.cfg (a new PV) registers again under the same name.
	os.Remove(c.RegisteredFile())
	st = runUntil(t, newRegistrar(t, c, host2, port2), 1)
	if !st.Registered || st.Reused {
		t.Fatalf("lost cfg %+v", st)
	}
}
