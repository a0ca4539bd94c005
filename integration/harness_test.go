// Package integration runs the built avsidecar binary against the test kit,
// as a kubelet and an Avamar server would see it.
package integration

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/avsidecar/avsidecar/internal/testkit"
)

// logLines follows a process's JSON log (testkit.LogLines).
type logLines = testkit.LogLines

// msg matches a log line by component and message, and optional fields.
var msg = testkit.Msg

// follow reads r into l until it ends, echoing each line into the test log
// when AVSIDECAR_TEST_VERBOSE is set.
func follow(t *testing.T, l *logLines, r io.Reader) {
	var each func(string)
	if os.Getenv("AVSIDECAR_TEST_VERBOSE") != "" {
		each = func(line string) { t.Log(line) }
	}
	l.Follow(r, each)
}

// sidecar is one avsidecar process under test.
type sidecar struct {
	cmd  *exec.Cmd
	log  *logLines
	http string
	// dial reaches http from where the test runs; nil dials directly. A
	// sidecar in a network namespace of its own needs one that enters it.
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
	done chan struct{}
	err  error
}

// startSidecar runs argv (the binary, maybe behind unshare) with env and
// follows its log.
func startSidecar(t *testing.T, argv []string, env []string, httpAddr string) *sidecar {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = env
	cmd.Stderr = testWriter{t, "stderr: "}
	// Its own process group, so that a failed test kills every process the
	// sidecar started, not only the first one.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &sidecar{cmd: cmd, log: testkit.NewLogLines(), http: httpAddr, done: make(chan struct{})}
	readDone := make(chan struct{})
	go func() { follow(t, s.log, out); close(readDone) }()
	go func() { <-readDone; s.err = cmd.Wait(); close(s.done) }()
	t.Cleanup(func() {
		select {
		case <-s.done:
			return
		default:
		}
		// Stopped as the kubelet stops it, so that it stops the agent it
		// supervises: the agent runs in a session of its own, which the
		// kill of this process group below does not reach. Behind unshare
		// the signal goes to the sidecar itself, PID 1 of its namespace:
		// unshare does not pass it on.
		target := cmd.Process.Pid
		if filepath.Base(argv[0]) == "unshare" {
			for _, p := range descendants(target) {
				if p.PPID == cmd.Process.Pid {
					target = p.PID
					break
				}
			}
		}
		_ = syscall.Kill(target, syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(30 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-s.done
		}
	})
	return s
}

// exitCode waits for the process to end and returns its exit code.
func (s *sidecar) exitCode(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-s.done:
	case <-time.After(timeout):
		t.Fatalf("avsidecar still running after %s", timeout)
	}
	if s.err == nil {
		return 0
	}
	if ee, ok := s.err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	t.Fatalf("wait: %v", s.err)
	return -1
}

// get fetches path from the sidecar's HTTP server.
func (s *sidecar) get(t *testing.T, path string) (int, string) {
	t.Helper()
	return s.getAuth(t, path, "")
}

// getAuth is get with a bearer token, unless token is empty.
func (s *sidecar) getAuth(t *testing.T, path, token string) (int, string) {
	t.Helper()
	c := http.Client{Timeout: 5 * time.Second}
	if s.dial != nil {
		c.Transport = &http.Transport{DialContext: s.dial, DisableKeepAlives: true}
	}
	req, err := http.NewRequest(http.MethodGet, "http://"+s.http+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// eventually polls an HTTP answer until it is the wanted code: readiness is
// state, not an event, so the probe is asked the way the kubelet asks it.
func (s *sidecar) eventually(t *testing.T, path string, code int, timeout time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got, body := s.get(t, path)
		if got == code {
			return body
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s = %d %q, want %d within %s", path, got, body, code, timeout)
		}
		select {
		case <-s.done:
			t.Fatalf("avsidecar exited while waiting for GET %s = %d", path, code)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// status decodes /v1/status.
func (s *sidecar) status(t *testing.T) map[string]any {
	t.Helper()
	code, body := s.get(t, "/v1/status")
	if code != 200 {
		t.Fatalf("/v1/status = %d %s", code, body)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(body), &m); err != nil {
		t.Fatalf("/v1/status: %v", err)
	}
	return m
}

type testWriter struct {
	t      *testing.T
	prefix string
}

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(w.prefix + strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// proc is a process seen in /proc.
type proc = testkit.Proc

// descendants lists every process below pid.
func descendants(pid int) []proc {
	all := testkit.Processes()
	children := map[int][]proc{}
	for _, p := range all {
		children[p.PPID] = append(children[p.PPID], p)
	}
	var out []proc
	var walk func(int)
	walk = func(p int) {
		for _, c := range children[p] {
			out = append(out, c)
			walk(c.PID)
		}
	}
	walk(pid)
	return out
}

// withCmdline lists every process on the machine whose command line
// contains s (a test's unique root directory).
func withCmdline(s string) []proc {
	var out []proc
	for _, p := range testkit.Processes() {
		if strings.Contains(p.Cmdline, s) {
			out = append(out, p)
		}
	}
	return out
}

func signal(t *testing.T, pid int, sig syscall.Signal) {
	t.Helper()
	if err := syscall.Kill(pid, sig); err != nil {
		t.Fatalf("kill %d %v: %v", pid, sig, err)
	}
}

// testContext is a context that ends with the test or after timeout.
func testContext(t *testing.T, timeout time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	return ctx
}
