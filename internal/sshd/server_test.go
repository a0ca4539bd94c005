package sshd

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pkg/sftp"
	"github.com/rs/zerolog"
	gossh "golang.org/x/crypto/ssh"
)

func TestExecExitStatusAndStreams(t *testing.T) {
	k := newUserKey(t)
	ts := startServer(t, k.line+"\n", nil)
	c := ts.mustDial(t, k)

	tests := []struct {
		cmd, stdin       string
		wantOut, wantErr string
		wantStatus       int
		wantSignal       string
	}{
		{cmd: "echo out; echo err >&2", wantOut: "out\n", wantErr: "err\n"},
		{cmd: "exit 3", wantStatus: 3},
		{cmd: "exit 255", wantStatus: 255},
		{cmd: "tr a-z A-Z", stdin: "hello\n", wantOut: "HELLO\n"},
		{cmd: "no-such-command-here", wantStatus: 127},
		{cmd: "kill -KILL $$", wantStatus: 128 + 9, wantSignal: "KILL"},
		{cmd: "pwd", wantOut: filepath.Dir(ts.keys) + "\n"},
	}
	for _, tt := range tests {
		t.Run(tt.cmd, func(t *testing.T) {
			out, errOut, err := run(t, c, tt.cmd, tt.stdin)
			var status int
			var signal string
			var ee *gossh.ExitError
			switch {
			case errors.As(err, &ee):
				status, signal = ee.ExitStatus(), ee.Signal()
			case err != nil:
				t.Fatalf("run: %v", err)
			}
			if status != tt.wantStatus || signal != tt.wantSignal {
				t.Errorf("exit = %d signal %q, want %d signal %q", status, signal, tt.wantStatus, tt.wantSignal)
			}
			if tt.wantOut != "" && out != tt.wantOut {
				t.Errorf("stdout = %q, want %q", out, tt.wantOut)
			}
			if tt.wantErr != "" && errOut != tt.wantErr {
				t.Errorf("stderr = %q, want %q", errOut, tt.wantErr)
			}
		})
	}
	fp := gossh.FingerprintSHA256(k.signer.PublicKey())
	if n := ts.log.Count(0, func(m map[string]any) bool {
		return m["message"] == "command" && m["command"] == "exit 3" && m["fingerprint"] == fp
	}); n != 1 {
		t.Errorf("command log lines with fingerprint = %d, want 1", n)
	}
	c.Close()
	ts.log.WaitN(t, 0, 1, "logout with the fingerprint", 10*time.Second, func(m map[string]any) bool {
		return m["message"] == "logout" && m["fingerprint"] == fp
	})
}

func TestSignalPassedThrough(t *testing.T) {
	k := newUserKey(t)
	ts := startServer(t, k.line+"\n", nil)
	c := ts.mustDial(t, k)
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	out, err := s.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start("echo ready; exec sleep 60"); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "ready\n" {
		t.Fatalf("read ready: %q %v", line, err)
	}
	if err := s.Signal(gossh.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var ee *gossh.ExitError
	if err := s.Wait(); !errors.As(err, &ee) || ee.Signal() != "TERM" {
		t.Fatalf("wait = %v, want exit by signal TERM", err)
	}
}

func TestPTYShellWindowChange(t *testing.T) {
	k := newUserKey(t)
	ts := startServer(t, k.line+"\n", nil)
	c := ts.mustDial(t, k)
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.RequestPty("xterm", 40, 100, gossh.TerminalModes{gossh.ECHO: 0}); err != nil {
		t.Fatal(err)
	}
	stdin, _ := s.StdinPipe()
	stdout, _ := s.StdoutPipe()
	if err := s.Shell(); err != nil {
		t.Fatal(err)
	}
	r := &lineWaiter{r: bufio.NewReader(stdout)}
	io.WriteString(stdin, "echo T=$(tty) TERM=$TERM SZ=$(stty size)\n")
	line := r.waitFor(t, "T=/dev/")
	if !strings.Contains(line, "TERM=xterm") || !strings.Contains(line, "SZ=40 100") {
		t.Fatalf("pty line = %q, want TERM=xterm and SZ=40 100", line)
	}
	if err := s.WindowChange(50, 120); err != nil {
		t.Fatal(err)
	}
	// window-change is not acknowledged; the shell asks until it sees it.
	deadline := time.Now().Add(10 * time.Second)
	for {
		io.WriteString(stdin, "echo SZ2=$(stty size)\n")
		line = r.waitFor(t, "SZ2=")
		if strings.Contains(line, "SZ2=50 120") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("window size never changed: %q", line)
		}
	}
	io.WriteString(stdin, "exit 7\n")
	var ee *gossh.ExitError
	if err := s.Wait(); !errors.As(err, &ee) || ee.ExitStatus() != 7 {
		t.Fatalf("wait = %v, want exit 7", err)
	}
}

// lineWaiter reads lines until one contains a marker.
type lineWaiter struct{ r *bufio.Reader }

func (w *lineWaiter) waitFor(t *testing.T, marker string) string {
	t.Helper()
	for {
		line, err := w.r.ReadString('\n')
		if strings.Contains(line, marker) && !strings.Contains(line, "echo ") {
			return strings.TrimSpace(line)
		}
		if err != nil {
			t.Fatalf("no line with %q: %v", marker, err)
		}
	}
}

func TestEnvironment(t *testing.T) {
	k := newUserKey(t)
	ts := startServer(t, `environment="FROM_KEY=yes" `+k.line+"\n", func(c *Config) {
		c.Env = []string{"PATH=/usr/bin:/bin", "BASE=1"}
	})
	c := ts.mustDial(t, k)
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Setenv("LANG", "C.UTF-8"); err != nil {
		t.Errorf("LANG refused: %v", err)
	}
	for _, name := range []string{"LD_PRELOAD", "PATH", "BASH_ENV", "FROM_KEY"} {
		if err := s.Setenv(name, "evil"); err == nil {
			t.Errorf("env %s accepted, want refused", name)
		}
	}
	out, err := s.Output(`echo "$LANG|$LD_PRELOAD|$PATH|$BASE|$FROM_KEY|${SSH_CONNECTION:+set}|$USER"`)
	if err != nil {
		t.Fatal(err)
	}
	want := "C.UTF-8||/usr/bin:/bin|1|yes|set|" + ts.user.name + "\n"
	if string(out) != want {
		t.Errorf("env = %q, want %q", out, want)
	}
}

func TestKeyOptionsHonoured(t *testing.T) {
	forced, noPTY, restricted := newUserKey(t), newUserKey(t), newUserKey(t)
	ts := startServer(t, strings.Join([]string{
		`command="echo forced:$SSH_ORIGINAL_COMMAND" ` + forced.line,
		`no-pty ` + noPTY.line,
		`restrict ` + restricted.line,
	}, "\n")+"\n", nil)

	c := ts.mustDial(t, forced)
	if out, _, err := run(t, c, "rm -rf /tmp/x", ""); err != nil || out != "forced:rm -rf /tmp/x\n" {
		t.Errorf("forced command output = %q, %v", out, err)
	}
	// The forced command also replaces the sftp subsystem.
	if _, err := sftp.NewClient(c); err == nil {
		t.Errorf("sftp worked for a key with a forced command")
	}

	for _, k := range []userKey{noPTY, restricted} {
		c := ts.mustDial(t, k)
		s, err := c.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		if err := s.RequestPty("xterm", 24, 80, nil); err == nil {
			t.Errorf("pty granted to a no-pty/restrict key")
		}
		s.Close()
	}
}

func TestSFTPGoClient(t *testing.T) {
	k := newUserKey(t)
	ts := startServer(t, k.line+"\n", nil)
	c := ts.mustDial(t, k)
	sc, err := sftp.NewClient(c)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	data := bytes.Repeat([]byte("avsidecar"), 100000)
	f, err := sc.Create("up.bin")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	f.Close()
	got, err := os.ReadFile(filepath.Join(filepath.Dir(ts.keys), "up.bin"))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("uploaded file differs (err %v, %d bytes)", err, len(got))
	}
	rf, err := sc.Open("up.bin")
	if err != nil {
		t.Fatal(err)
	}
	back, err := io.ReadAll(rf)
	rf.Close()
	if err != nil || !bytes.Equal(back, data) {
		t.Fatalf("downloaded file differs (err %v, %d bytes)", err, len(back))
	}
}

func TestStatus(t *testing.T) {
	k, other := newUserKey(t), newUserKey(t)
	ts := startServer(t, k.line+"\nnot a key\n", nil)
	c := ts.mustDial(t, k)
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := ts.dial(other); err == nil {
		t.Fatal("unknown key logged in")
	}
	st := ts.Status()
	if st.Addr != ts.addr || len(st.HostKeyFingerprints) != 2 || st.AuthorizedKeys != 1 ||
		st.AuthorizedKeysRefused != 1 || st.AuthorizedKeysMissing || st.AuthorizedKeysEmpty ||
		st.ActiveSessions != 1 || st.Logins != 1 || st.Refusals == 0 {
		t.Errorf("status = %+v", st)
	}
}

func TestShutdownClosesSessions(t *testing.T) {
	k := newUserKey(t)
	for _, tt := range []struct {
		name, cmd string
		wantKill  bool
	}{
		{"hangup", "echo ready; exec sleep 60", false},
		{"ignores hangup", "trap '' HUP; echo ready; sleep 60 & wait", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			const timeout = 2 * time.Second
			ts := startServer(t, k.line+"\n", func(c *Config) { c.ShutdownTimeout = timeout })
			c := ts.mustDial(t, k)
			s, err := c.NewSession()
			if err != nil {
				t.Fatal(err)
			}
			out, _ := s.StdoutPipe()
			if err := s.Start(tt.cmd); err != nil {
				t.Fatal(err)
			}
			if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || line != "ready\n" {
				t.Fatalf("read ready: %q %v", line, err)
			}
			// stop returns once Run has: a shutdown that overran its
			// timeout hangs here until the test's own deadline.
			ts.stop()
			if err := s.Wait(); err == nil {
				t.Errorf("session ended cleanly, want ended by shutdown")
			}
			killed := ts.log.Count(0, msgIs("ssh sessions still open at shutdown timeout; killing them")) > 0
			if killed != tt.wantKill {
				t.Errorf("killed at timeout = %v, want %v", killed, tt.wantKill)
			}
			if _, err := ts.dial(k); err == nil {
				t.Errorf("login after shutdown succeeded")
			}
		})
	}
}

// TestShutdownClosesSFTP: an open sftp session is closed at once, not
// killed at the deadline.
func TestShutdownClosesSFTP(t *testing.T) {
	k := newUserKey(t)
	ts := startServer(t, k.line+"\n", func(c *Config) { c.ShutdownTimeout = 5 * time.Second })
	c := ts.mustDial(t, k)
	sc, err := sftp.NewClient(c)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	if _, err := sc.Getwd(); err != nil {
		t.Fatal(err)
	}
	ts.stop()
	if ts.log.Count(0, msgIs("ssh sessions still open at shutdown timeout; killing them")) != 0 {
		t.Errorf("sftp session had to be killed")
	}
	if _, err := sc.Getwd(); err == nil {
		t.Errorf("sftp still answers after shutdown")
	}
}

func TestHostKeysMadeOnceAndKept(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	firstKeys, err := loadHostKeys(dir, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	first := firstKeys.signers
	if len(first) != 2 || first[0].PublicKey().Type() != gossh.KeyAlgoED25519 || first[1].PublicKey().Type() != gossh.KeyAlgoRSA {
		t.Fatalf("host key types wrong: %d keys", len(first))
	}
	for _, name := range []string{"ssh_host_ed25519_key", "ssh_host_rsa_key"} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: mode %v err %v, want 0600", name, fi.Mode(), err)
		}
	}
	// A loosened mode is tightened on the next start.
	if err := os.Chmod(filepath.Join(dir, "ssh_host_rsa_key"), 0o644); err != nil {
		t.Fatal(err)
	}
	secondKeys, err := loadHostKeys(dir, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	second := secondKeys.signers
	for i := range first {
		if !bytes.Equal(first[i].PublicKey().Marshal(), second[i].PublicKey().Marshal()) {
			t.Errorf("host key %d changed across starts", i)
		}
	}
	if fi, _ := os.Stat(filepath.Join(dir, "ssh_host_rsa_key")); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode not tightened: %v", fi.Mode())
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Errorf("state dir has %d entries, want the 2 keys only", len(entries))
	}
}

// TestRunCancelledAtOnce: a context cancelled before Serve starts must
// still stop Run promptly and release the port Listen bound.
func TestRunCancelledAtOnce(t *testing.T) {
	for range 20 {
		srv, err := New(Config{Addr: "127.0.0.1:0", AuthorizedKeysFile: "/nonexistent", HostKeyDir: hostKeyDir(t)}, zerolog.Nop())
		if err != nil {
			t.Fatal(err)
		}
		if err := srv.Listen(); err != nil {
			t.Fatal(err)
		}
		addr := srv.Addr().String()
		done := make(chan error, 1)
		go func() { done <- srv.Run(cancelled()) }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("Run = %v, want nil", err)
			}
		case <-time.After(15 * time.Second):
			t.Fatal("Run did not return after cancellation")
		}
		if st := srv.Status(); st.State != StateStopped {
			t.Fatalf("state after Run = %q, want %q", st.State, StateStopped)
		}
		if l, err := net.Listen("tcp", addr); err != nil {
			t.Fatalf("port still held: %v", err)
		} else {
			l.Close()
		}
	}
}

// TestNewIsCheap: New touches no file and no socket; Status answers from
// New on; Listen makes the keys and binds, once however often it is
// called; Run serves and ends stopped.
func TestNewIsCheap(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	keys := filepath.Join(t.TempDir(), "authorized_keys")
	port := freePort(t)
	srv, err := New(Config{Addr: port, AuthorizedKeysFile: keys, HostKeyDir: dir}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("New touched the host key dir: %v", err)
	}
	if l, err := net.Listen("tcp", port); err != nil {
		t.Errorf("New bound the port: %v", err)
	} else {
		l.Close()
	}
	if srv.Addr() != nil {
		t.Errorf("Addr before Listen = %v, want nil", srv.Addr())
	}
	if st := srv.Status(); st.State != StateStarting || st.Addr != port || len(st.HostKeyFingerprints) != 0 || st.AuthorizedKeys != 0 {
		t.Errorf("status after New = %+v", st)
	}
	k := newUserKey(t)
	writeAtomic(t, keys, k.line+"\n")

	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatalf("second Listen: %v", err)
	}
	if got := srv.Addr().String(); got != port {
		t.Errorf("Addr = %s, want %s", got, port)
	}
	st := srv.Status()
	if st.State != StateStarting || len(st.HostKeyFingerprints) != 2 || st.AuthorizedKeys != 1 {
		t.Errorf("status after Listen = %+v", st)
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	ts := &testServer{Server: srv, addr: port}
	c, err := ts.dial(k)
	if err != nil {
		t.Fatalf("login: %v", err)
	}
	c.Close()
	if st := srv.Status(); st.State != StateServing {
		t.Errorf("state while serving = %q", st.State)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if st := srv.Status(); st.State != StateStopped || st.Error != "" {
		t.Errorf("status after Run = %+v", st)
	}
	if err := srv.Run(context.Background()); err == nil {
		t.Errorf("second Run succeeded")
	}
}

// freePort is a loopback address whose port was free a moment ago.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func TestNewRefusesBadConfig(t *testing.T) {
	for _, cfg := range []Config{
		{AuthorizedKeysFile: "/x", HostKeyDir: "/y"},
		{Addr: "127.0.0.1:0", HostKeyDir: "/y"},
		{Addr: "127.0.0.1:0", AuthorizedKeysFile: "/x"},
		{Addr: "256.0.0.1:0", AuthorizedKeysFile: "/x", HostKeyDir: "/y"},
		{Addr: "127.0.0.1", AuthorizedKeysFile: "/x", HostKeyDir: "/y"},
		{Addr: "127.0.0.1:65536", AuthorizedKeysFile: "/x", HostKeyDir: "/y"},
		{Addr: ":ssh", AuthorizedKeysFile: "/x", HostKeyDir: "/y"},
		{Addr: ":22", AuthorizedKeysFile: "/x", HostKeyDir: "/y", Shell: "sh"},
	} {
		if _, err := New(cfg, zerolog.Nop()); err == nil {
			t.Errorf("New(%+v) succeeded", cfg)
		}
	}
}

func cancelled() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}
