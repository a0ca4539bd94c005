package sshd

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"
)

// TestHostileLogins is the table of ways in that must stay shut.
func TestHostileLogins(t *testing.T) {
	good, unknown, far, negated := newUserKey(t), newUserKey(t), newUserKey(t), newUserKey(t)
	ts := startServer(t, strings.Join([]string{
		good.line,
		`from="10.0.0.0/8,192.168.*" ` + far.line,
		`from="!127.0.0.1,*" ` + negated.line,
		`permitopen="127.0.0.1:80" ` + unknown.line, // refused line: option not supported
	}, "\n")+"\n", nil)

	// notOffered: the server lists only publickey, so the client has
	// nothing left to try (OpenSSH's "Permission denied (publickey)").
	const notOffered = "no supported methods remain"
	tests := []struct {
		name    string
		auth    []gossh.AuthMethod
		wantErr string
	}{
		{"password", []gossh.AuthMethod{gossh.Password("root")}, notOffered},
		{"keyboard-interactive", []gossh.AuthMethod{gossh.KeyboardInteractive(
			func(string, string, []string, []bool) ([]string, error) { return []string{"root"}, nil })}, notOffered},
		{"unknown key", []gossh.AuthMethod{gossh.PublicKeys(newUserKey(t).signer)}, "attempted methods [none publickey]"},
		{"key on a refused line", []gossh.AuthMethod{gossh.PublicKeys(unknown.signer)}, "attempted methods [none publickey]"},
		{"from= mismatch", []gossh.AuthMethod{gossh.PublicKeys(far.signer)}, "attempted methods [none publickey]"},
		{"from= negated", []gossh.AuthMethod{gossh.PublicKeys(negated.signer)}, "attempted methods [none publickey]"},
		{"no auth", nil, notOffered},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := ts.Status().Refusals
			c, err := gossh.Dial("tcp", ts.addr, ts.clientConfig(tt.auth...))
			if err == nil {
				c.Close()
				t.Fatal("logged in")
			}
			if !strings.Contains(err.Error(), "unable to authenticate") || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("dial error = %v, want an authentication failure with %q", err, tt.wantErr)
			}
			if tt.wantErr != notOffered && ts.Status().Refusals <= before {
				t.Errorf("refusal not counted")
			}
		})
	}
	if _, err := ts.dial(good); err != nil {
		t.Fatalf("good key refused: %v", err)
	}
	// Refusals name the key by fingerprint and never print the key.
	fp := gossh.FingerprintSHA256(far.signer.PublicKey())
	if ts.log.Count(0, func(m map[string]any) bool {
		return m["message"] == "key refused" && m["fingerprint"] == fp && m["reason"] == errFrom.Error()
	}) == 0 {
		t.Errorf("no key refused log line for the from= mismatch")
	}
	raw := ts.log.Raw()
	for _, k := range []userKey{good, far, negated, unknown} {
		if strings.Contains(raw, strings.Fields(k.line)[1]) {
			t.Errorf("the log contains a public key")
		}
	}
}

func TestForwardingRefused(t *testing.T) {
	k := newUserKey(t)
	ts := startServer(t, k.line+"\n", nil)
	c := ts.mustDial(t, k)

	target, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	if conn, err := c.Dial("tcp", target.Addr().String()); err == nil {
		conn.Close()
		t.Errorf("local forwarding (direct-tcpip) allowed")
	}
	if l, err := c.Listen("tcp", "127.0.0.1:0"); err == nil {
		l.Close()
		t.Errorf("remote forwarding (tcpip-forward) allowed")
	}
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, req := range []string{"auth-agent-req@openssh.com", "x11-req"} {
		ok, err := s.SendRequest(req, true, gossh.Marshal(struct {
			Single        bool
			Proto, Cookie string
			Screen        uint32
		}{false, "MIT-MAGIC-COOKIE-1", "00", 0}))
		if err != nil || ok {
			t.Errorf("%s: ok=%v err=%v, want refused", req, ok, err)
		}
	}
	if _, _, err := c.OpenChannel("auth-agent@openssh.com", nil); err == nil {
		t.Errorf("agent channel opened")
	}
	if ts.log.Count(0, msgIs("request refused")) == 0 || ts.log.Count(0, msgIs("channel refused")) == 0 ||
		ts.log.Count(0, msgIs("forwarding refused")) != 2 {
		t.Errorf("refusals not logged")
	}
}

func TestTooManySessions(t *testing.T) {
	k := newUserKey(t)
	ts := startServer(t, k.line+"\n", func(c *Config) { c.MaxSessions = 2 })
	c1, c2 := ts.mustDial(t, k), ts.mustDial(t, k)
	s1, err := c1.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	s2, err := c2.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	_, err = c1.NewSession()
	var oce *gossh.OpenChannelError
	if !errors.As(err, &oce) || oce.Reason != gossh.ResourceShortage {
		t.Fatalf("third session: %v, want resource shortage", err)
	}
	if st := ts.Status(); st.ActiveSessions != 2 || st.SessionsRefused != 1 {
		t.Errorf("status = %+v", st)
	}
	// A closed session frees its slot.
	s1.Close()
	s2.Close()
	ts.log.WaitN(t, 0, 2, "both sessions removed", 10*time.Second, msgIs("session removed"))
	if out, _, err := run(t, c1, "echo again", ""); err != nil || out != "again\n" {
		t.Errorf("session after close: %q %v", out, err)
	}
}

func TestKeysReloadedOnChange(t *testing.T) {
	a, b := newUserKey(t), newUserKey(t)
	ts := startServer(t, a.line+"\n"+b.line+"\n", nil)
	loaded := func(n int) func(map[string]any) bool {
		return func(m map[string]any) bool {
			return m["message"] == "authorized keys loaded" && m["keys"] == float64(n)
		}
	}
	if _, err := ts.dial(a); err != nil {
		t.Fatalf("a refused before the change: %v", err)
	}
	writeAtomic(t, ts.keys, b.line+"\n")
	ts.log.WaitN(t, 0, 1, "reload with 1 key", 10*time.Second, loaded(1))
	if _, err := ts.dial(a); err == nil {
		t.Errorf("removed key still logs in")
	}
	if _, err := ts.dial(b); err != nil {
		t.Errorf("kept key refused: %v", err)
	}
	// In-place edits (no rename) are seen too.
	if err := os.WriteFile(ts.keys, []byte(a.line+"\n"+b.line+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ts.log.WaitN(t, 0, 2, "reload with 2 keys (the start was the first)", 10*time.Second, loaded(2))
	if _, err := ts.dial(a); err != nil {
		t.Errorf("re-added key refused: %v", err)
	}
}

// TestKeysReloadedOnSecretSwap does what the kubelet does to a Secret
// volume: a new timestamped directory, a new ..data symlink renamed over
// the old one, the old directory removed. The file itself is a symlink
// through ..data and is never written.
func TestKeysReloadedOnSecretSwap(t *testing.T) {
	a, b := newUserKey(t), newUserKey(t)
	mount := t.TempDir()
	writeVersion := func(name, content string) {
		if err := os.Mkdir(filepath.Join(mount, name), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(mount, name, "authorized_keys"), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeVersion("..2026_11_23_20_00_00.1", a.line+"\n")
	must(t, os.Symlink("..2026_11_23_20_00_00.1", filepath.Join(mount, "..data")))
	must(t, os.Symlink("..data/authorized_keys", filepath.Join(mount, "authorized_keys")))

	ts := startServer(t, "", func(c *Config) { c.AuthorizedKeysFile = filepath.Join(mount, "authorized_keys") })
	if _, err := ts.dial(a); err != nil {
		t.Fatalf("a refused: %v", err)
	}
	writeVersion("..2026_11_23_20_05_00.2", b.line+"\n")
	must(t, os.Symlink("..2026_11_23_20_05_00.2", filepath.Join(mount, "..data_tmp")))
	must(t, os.Rename(filepath.Join(mount, "..data_tmp"), filepath.Join(mount, "..data")))
	must(t, os.RemoveAll(filepath.Join(mount, "..2026_11_23_20_00_00.1")))

	fpB := gossh.FingerprintSHA256(b.signer.PublicKey())
	ts.log.WaitN(t, 0, 1, "reload after the swap", 10*time.Second, func(map[string]any) bool {
		ks := ts.keys_()
		return ks.count == 1 && ks.byKey[sha256.Sum256(b.signer.PublicKey().Marshal())] != nil
	})
	if _, err := ts.dial(a); err == nil {
		t.Errorf("key of the old Secret version still logs in")
	}
	if _, err := ts.dial(b); err != nil {
		t.Errorf("key of the new Secret version (%s) refused: %v", fpB, err)
	}
}

func (ts *testServer) keys_() *keySet { return ts.Server.keys.Load() }

func TestMissingAndEmptyKeysFile(t *testing.T) {
	k := newUserKey(t)
	ts := startServer(t, "", nil)
	if st := ts.Status(); !st.AuthorizedKeysMissing || st.AuthorizedKeys != 0 {
		t.Errorf("status with no file = %+v", st)
	}
	if ts.log.Count(0, msgIs("authorized keys file missing; nobody can log in")) != 1 {
		t.Errorf("missing file not logged")
	}
	if _, err := ts.dial(k); err == nil {
		t.Fatal("logged in without an authorized_keys file")
	}
	writeAtomic(t, ts.keys, "# only a comment\n\n")
	ts.log.WaitN(t, 0, 1, "empty file logged", 10*time.Second, msgIs("authorized keys file has no usable key; nobody can log in"))
	if st := ts.Status(); st.AuthorizedKeysMissing || !st.AuthorizedKeysEmpty {
		t.Errorf("status with empty file = %+v", st)
	}
	writeAtomic(t, ts.keys, k.line+"\n")
	ts.log.WaitN(t, 0, 1, "keys loaded", 10*time.Second, msgIs("authorized keys loaded"))
	if _, err := ts.dial(k); err != nil {
		t.Errorf("login after the file appeared: %v", err)
	}
	must(t, os.Remove(ts.keys))
	ts.log.WaitN(t, 0, 2, "missing again", 10*time.Second, msgIs("authorized keys file missing; nobody can log in"))
	if _, err := ts.dial(k); err == nil {
		t.Errorf("logged in after the file was removed")
	}
}

// TestKeysDirAppearsLater: the Secret directory may not exist when the
// server starts; the resync starts the watch once it does.
func TestKeysDirAppearsLater(t *testing.T) {
	k := newUserKey(t)
	dir := filepath.Join(t.TempDir(), "later")
	ts := startServer(t, "", func(c *Config) {
		c.AuthorizedKeysFile = filepath.Join(dir, "authorized_keys")
		c.KeysResync = 100 * time.Millisecond
	})
	ts.log.WaitN(t, 0, 1, "watch failure logged", 10*time.Second, msgIs("cannot watch authorized keys directory yet"))
	must(t, os.Mkdir(dir, 0o755))
	writeAtomic(t, filepath.Join(dir, "authorized_keys"), k.line+"\n")
	ts.log.WaitN(t, 0, 1, "keys loaded", 10*time.Second, msgIs("authorized keys loaded"))
	if _, err := ts.dial(k); err != nil {
		t.Fatalf("login: %v", err)
	}
	// Later changes are followed too.
	writeAtomic(t, filepath.Join(dir, "authorized_keys"), "")
	ts.log.WaitN(t, 0, 1, "empty file", 10*time.Second, msgIs("authorized keys file has no usable key; nobody can log in"))
	if n := ts.log.Count(0, msgIs("cannot watch authorized keys directory yet")); n != 1 {
		t.Errorf("watch failure logged %d times, want once", n)
	}
}

// flood opens n idle TCP connections from source and sorts them into
// held (the server sent its version line) and dropped (closed without a
// byte).
func flood(t *testing.T, addr, source string, n int) (dropped int, held []net.Conn) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(source)}, Timeout: 5 * time.Second}
	for range n {
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("dial from %s: %v", source, err)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 4)
		if _, err := io.ReadFull(c, buf); err != nil {
			dropped++
			c.Close()
			continue
		}
		held = append(held, c)
	}
	t.Cleanup(func() {
		for _, c := range held {
			c.Close()
		}
	})
	return dropped, held
}

// coinNever makes every newcomer from an address at its cap dropped.
func coinNever(s *Server) { s.coin = func() bool { return false } }

// TestUnauthenticatedFlood holds many idle connections open from one
// address: those over the caps are closed at once, memory stays bounded,
// and a client from another address still logs in, even once every slot
// is taken.
func TestUnauthenticatedFlood(t *testing.T) {
	k := newUserKey(t)
	ts := startServer(t, k.line+"\n", func(c *Config) {
		// A long grace: no held connection may expire during the flood.
		c.MaxHandshakes, c.MaxHandshakesPerSource, c.LoginGraceTimeout = 8, 4, time.Minute
	}, coinNever)
	baseGoroutines := runtime.NumGoroutine()
	dropped, held := flood(t, ts.addr, "127.0.0.2", 200)
	if len(held) != 4 || dropped != 196 {
		t.Fatalf("one source held %d and dropped %d, want 4 held (per-source cap)", len(held), dropped)
	}
	if g := runtime.NumGoroutine(); g > baseGoroutines+4*8+20 {
		t.Errorf("%d goroutines with the flood, %d before: not bounded", g, baseGoroutines)
	}
	if _, err := ts.dial(k); err != nil {
		t.Fatalf("login from another address during the flood: %v", err)
	}
	if _, more := flood(t, ts.addr, "127.0.0.3", 10); len(more) != 4 {
		t.Fatalf("second source held %d, want 4 (global cap 8)", len(more))
	}
	if st := ts.Status(); st.Handshakes != 8 {
		t.Fatalf("handshakes = %d, want 8 (every slot)", st.Handshakes)
	}
	// The global cap is reached: a stall of a busier address makes room.
	c, err := ts.dial(k)
	if err != nil {
		t.Fatalf("login while every handshake slot is taken: %v", err)
	}
	c.Close()
	if st := ts.Status(); st.HandshakesDropped != 196+6+1 || st.HandshakesEvicted != 1 || st.Handshakes != 7 {
		t.Errorf("dropped = %d evicted = %d handshakes = %d, want %d, 1, 7", st.HandshakesDropped, st.HandshakesEvicted,
			st.Handshakes, 196+6+1)
	}
}

// TestLoginGraceFreesSlots: connections that never log in are closed at
// the login grace timeout, and their slots serve a real login again.
func TestLoginGraceFreesSlots(t *testing.T) {
	k := newUserKey(t)
	const grace = 3 * time.Second
	ts := startServer(t, k.line+"\n", func(c *Config) {
		c.MaxHandshakes, c.MaxHandshakesPerSource, c.LoginGraceTimeout = 2, 2, grace
	}, coinNever)
	// From the address the login comes from: its own crowd, so the
	// login is dropped until the grace frees the slots.
	_, held := flood(t, ts.addr, "127.0.0.1", 2)
	if len(held) != 2 {
		t.Fatalf("held %d, want 2", len(held))
	}
	if c, err := ts.dial(k); err == nil {
		c.Close()
		t.Fatalf("login while every handshake slot of its address is taken and the coin says drop")
	}
	ts.log.WaitN(t, 0, 2, "login grace timeouts", grace+10*time.Second, msgIs("login grace timeout"))
	for _, c := range held {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadAll(c); err != nil {
			t.Errorf("held connection not closed by the grace timeout: %v", err)
		}
	}
	if _, err := ts.dial(k); err != nil {
		t.Fatalf("login after the grace timeout: %v", err)
	}
}

func TestIdleTimeout(t *testing.T) {
	k := newUserKey(t)
	ts := startServer(t, k.line+"\n", func(c *Config) { c.IdleTimeout = time.Second })
	c := ts.mustDial(t, k)
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("idle connection not closed")
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestHostileTermModes sends pty-reqs whose terminal modes are cut short,
// huge or extreme: a malformed string refuses the PTY and the session goes
// on without one; anything else gets a PTY with what could be applied, and
// the server keeps serving.
func TestHostileTermModes(t *testing.T) {
	k := newUserKey(t)
	ts := startServer(t, k.line+"\n", nil)
	c := ts.mustDial(t, k)

	verase8 := encodeModes(termMode{3, 0x08})
	verase8 = verase8[:len(verase8)-1] // without TTY_OP_END
	every := func(arg uint32) string {
		var ms []termMode
		for op := range 159 {
			ms = append(ms, termMode{byte(op + 1), arg})
		}
		return encodeModes(ms...)
	}
	tests := []struct {
		name  string
		modes string
		ok    bool
		stty  []string // words `stty -a` shows on the PTY; nil: only that it runs
	}{
		{name: "argument cut short", modes: "\x03\x00\x00\x08"},
		{name: "opcode alone", modes: verase8 + "\x35"},
		{name: "undefined opcode then garbage", modes: verase8 + "\xa0\xff\xff\xff", ok: true, stty: []string{"erase=^H"}},
		{name: "50000 modes", modes: strings.Repeat(verase8, 50000), ok: true, stty: []string{"erase=^H"}},
		{name: "character out of range", modes: encodeModes(termMode{1, 0x100}, termMode{3, 0xffffffff}), ok: true,
			stty: []string{"intr=^C", "erase=^?"}},
		{name: "every opcode off", modes: every(0), ok: true, stty: []string{"-isig", "-icanon", "-echo", "intr=<undef>"}},
		{name: "every opcode on", modes: every(0xffffffff), ok: true}, // olcuc: the output is upper case
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := c.NewSession()
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			ok, err := s.SendRequest("pty-req", true, gossh.Marshal(ptyRequest{Term: "xterm", Cols: 80, Rows: 24, Modes: tt.modes}))
			if err != nil || ok != tt.ok {
				t.Fatalf("pty-req: ok=%v err=%v, want ok=%v", ok, err, tt.ok)
			}
			if !tt.ok {
				if out, err := s.Output("echo no-pty; tty"); !strings.HasPrefix(string(out), "no-pty\nnot a tty") {
					t.Errorf("session after a refused pty-req: %q %v", out, err)
				}
				return
			}
			out, err := s.Output("stty -a")
			if err != nil || len(out) == 0 {
				t.Fatalf("stty -a: %q %v", out, err)
			}
			checkStty(t, string(out), tt.stty...)
		})
	}
	if out, _, err := run(t, c, "echo alive", ""); err != nil || out != "alive\n" {
		t.Errorf("after the hostile modes: %q %v", out, err)
	}
	if n := ts.log.Count(0, msgIs("pty refused: bad terminal modes")); n != 2 {
		t.Errorf("%d bad terminal modes refusals logged, want 2", n)
	}
}

// TestUnreadableKeysFile: an authorized_keys file that cannot be read (a
// named pipe that would block the read forever, a directory, a file
// larger than any Secret) lets nobody in and says why, once, in the log
// and Status; the server serves on and takes the file once it is fixed.
func TestUnreadableKeysFile(t *testing.T) {
	k := newUserKey(t)
	tests := []struct {
		name  string
		place func(t *testing.T, path string)
		want  string
	}{
		{"named pipe", func(t *testing.T, path string) { must(t, syscall.Mkfifo(path, 0o600)) }, "not a regular file: a named pipe"},
		{"directory", func(t *testing.T, path string) { must(t, os.Mkdir(path, 0o700)) }, "not a regular file: a directory"},
		{"too large", func(t *testing.T, path string) {
			must(t, os.WriteFile(path, bytes.Repeat([]byte(k.line+"\n"), maxAuthorizedKeysSize/len(k.line)+1), 0o600))
		}, "file too large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "authorized_keys")
			tt.place(t, path)
			ts := startServer(t, "", func(c *Config) { c.AuthorizedKeysFile = path })
			st := ts.Status()
			if !strings.Contains(st.AuthorizedKeysError, tt.want) || !strings.Contains(st.AuthorizedKeysError, path) ||
				st.AuthorizedKeys != 0 || st.AuthorizedKeysEmpty || st.AuthorizedKeysMissing {
				t.Fatalf("status = %+v, want an error with %q", st, tt.want)
			}
			if _, err := ts.dial(k); err == nil {
				t.Fatal("logged in with an unreadable authorized_keys")
			}
			if st := ts.Status(); st.State != StateServing {
				t.Errorf("state = %q, want serving", st.State)
			}
			must(t, os.RemoveAll(path))
			writeAtomic(t, path, k.line+"\n")
			ts.log.WaitN(t, 0, 1, "keys loaded", 10*time.Second, msgIs("authorized keys loaded"))
			if _, err := ts.dial(k); err != nil {
				t.Fatalf("login once the file is fixed: %v", err)
			}
			if st := ts.Status(); st.AuthorizedKeysError != "" || st.AuthorizedKeys != 1 {
				t.Errorf("status after the fix = %+v", st)
			}
			if n := ts.log.Count(0, msgIs("authorized keys unreadable; nobody can log in")); n != 1 {
				t.Errorf("unreadable file logged %d times, want once", n)
			}
		})
	}
}
