package hooks

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/avsidecar/avsidecar/internal/testkit"
)

// servedSpec serves spec on a fresh socket until the test ends, with its
// log in logs, and returns the hooks and the socket.
func servedSpec(t *testing.T, spec string, logs *testkit.LogLines) (*Hooks, string) {
	t.Helper()
	dir := t.TempDir()
	sock := filepath.Join(dir, "h.sock")
	h, err := New(Config{Spec: spec, Socket: sock, ScriptsDir: filepath.Join(dir, "scripts"), Command: "/bin/avsidecar",
		LeaseFile: filepath.Join(dir, "state/lease.json")}, zerolog.New(logs))
	if err != nil {
		t.Fatal(err)
	}
	if err := h.ConfigError(); err != nil {
		t.Fatal(err)
	}
	served(t, h)
	waitFor(t, "the socket", func() bool { return dial(sock) })
	return h, sock
}

// phases lists the phases of the recorded runs, in order.
func phases(st Status) string {
	var out []string
	for _, r := range st.Runs {
		out = append(out, r.Phase)
	}
	return strings.Join(out, ",")
}

// TestQueuedPhaseOfAGoneCaller: a pre hook holds the phase; a post and a
// second pre queue behind it; the second pre's caller is killed while it
// waits. That pre never starts: the runs are pre, post, and the
// application is not left frozen by a pre nobody waits for.
func TestQueuedPhaseOfAGoneCaller(t *testing.T) {
	dir := t.TempDir()
	fifo, trace := filepath.Join(dir, "release"), filepath.Join(dir, "trace")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	rec := func(word, then string) string {
		return `{"command": ["/bin/sh", "-c", ` + jsonString(`echo `+word+` >> `+trace+then) + `]}`
	}
	// The first pre waits for the test to write a line into the FIFO.
	logs := testkit.NewLogLines()
	released := filepath.Join(dir, "released")
	h, sock := servedSpec(t, `{"pre": [`+rec("pre", `; [ -e `+released+` ] || read x < `+fifo)+`], "post": [`+rec("post", "")+`]}`, logs)

	var wg sync.WaitGroup
	results := map[string]error{}
	var mu sync.Mutex
	call := func(ctx context.Context, name, phase string) {
		wg.Go(func() {
			_, err := Call(ctx, sock, phase, nil)
			mu.Lock()
			results[name] = err
			mu.Unlock()
		})
	}
	called := func(phase string) func(map[string]any) bool {
		return testkit.Msg("", "hook script called", "phase", phase)
	}

	call(context.Background(), "first pre", PhasePre)
	waitFor(t, "the first pre hook", func() bool { b, _ := os.ReadFile(trace); return string(b) == "pre\n" })
	call(context.Background(), "post", PhasePost)
	logs.Wait(t, 0, "the post call", 10*time.Second, called(PhasePost))
	gone, leave := context.WithCancel(context.Background())
	call(gone, "second pre", PhasePre)
	logs.WaitN(t, 0, 2, "the second pre call", 10*time.Second, called(PhasePre))
	leave()

	if err := os.WriteFile(released, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(fifo, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(f, "go")
	f.Close()
	wg.Wait()
	// Either the server saw the caller leave while it waited, or it ran
	// that pre after the post (the defect): wait for one of the two.
	waitFor(t, "the second pre dropped or run", func() bool {
		b, _ := os.ReadFile(trace)
		return logs.Count(0, testkit.Msg("", "hook phase not run: its caller left", "phase", PhasePre)) == 1 || len(h.Status().Runs) == 3 ||
			strings.Count(string(b), "\n") == 3
	})
	if results["first pre"] != nil || results["post"] != nil || !errors.Is(results["second pre"], context.Canceled) {
		t.Errorf("calls: %v", results)
	}
	if b, _ := os.ReadFile(trace); string(b) != "pre\npost\n" {
		t.Errorf("hooks ran %q, want pre then post", b)
	}
	if got := phases(h.Status()); got != "pre,post" {
		t.Errorf("runs %s, want pre,post", got)
	}
}

// TestLargeOutputPassedPhase: twelve hooks that pass, each printing 64 KiB
// of control bytes on one line, make a phase that passes and is reported
// as passed: the output kept is bounded, and the client reads every
// answer the server can give.
func TestLargeOutputPassedPhase(t *testing.T) {
	var list []string
	for i := range 12 {
		list = append(list, `{"name": "noisy-`+fmt.Sprint(i)+`", "command": ["/bin/sh", "-c", "head -c 65536 /dev/zero | tr '\\000' '\\001'"]}`)
	}
	_, sock := servedSpec(t, `{"pre": [`+strings.Join(list, ",")+`]}`, testkit.NewLogLines())
	run, err := Call(context.Background(), sock, PhasePre, nil)
	if err != nil {
		t.Fatalf("a passed phase reported as: %v", err)
	}
	if run.Result != ResultPassed || len(run.Hooks) != 12 {
		t.Fatalf("run %+v", run)
	}
	for _, r := range run.Hooks {
		n := 0
		for _, o := range r.Output {
			n += len(o)
		}
		if n == 0 || n > outputBytes {
			t.Errorf("%s kept %d bytes of output, want 1 to %d", r.Name, n, outputBytes)
		}
	}
}

// TestStalledConnectionsClosed: 400 connections that send a request's
// headers announcing a body and never send it are all closed by the
// server; it never holds more than its cap of them; and a script's call
// is answered once the flood is gone.
func TestStalledConnectionsClosed(t *testing.T) {
	logs := testkit.NewLogLines()
	_, sock := servedSpec(t, `{"pre": [{"command": ["true"]}]}`, logs)
	const n = 400
	conns := make([]net.Conn, 0, n)
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	for range n {
		c, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatalf("dial %d: %v", len(conns), err)
		}
		conns = append(conns, c)
		// A write to a connection the server closed at once may fail: that
		// is the cap at work.
		_, _ = io.WriteString(c, "POST /v1/hooks/pre HTTP/1.1\r\nHost: avsidecar\r\nContent-Length: 65536\r\n\r\n")
	}
	// Every connection ends from the server's side: EOF, a reset, or an
	// answer followed by EOF. A connection still open after a minute is
	// one the server would keep for ever.
	var wg sync.WaitGroup
	var mu sync.Mutex
	open := 0
	for _, c := range conns {
		wg.Go(func() {
			_ = c.SetReadDeadline(time.Now().Add(time.Minute))
			_, err := io.Copy(io.Discard, c)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				mu.Lock()
				open++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if open > 0 {
		t.Fatalf("%d of %d stalled connections still open after a minute", open, n)
	}
	run, err := Call(context.Background(), sock, PhasePre, nil)
	if err != nil || run.Result != ResultPassed {
		t.Fatalf("a call after the flood: %+v, %v", run, err)
	}
}
