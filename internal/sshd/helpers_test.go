package sshd

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/avsidecar/avsidecar/internal/testkit"
	"github.com/rs/zerolog"
	gossh "golang.org/x/crypto/ssh"
)

// sharedHostKeys is made once per test binary: an RSA host key takes
// long enough to make that every test making its own would be slow.
var sharedHostKeys struct {
	once sync.Once
	dir  string
	err  error
}

func TestMain(m *testing.M) {
	// avsidecar run handles SIGHUP (pid1.StopContext), so the programs
	// its sessions start have SIGHUP at its default even when avsidecar
	// itself was started with it ignored. Do the same here: under nohup
	// the sessions' shells would inherit the ignored SIGHUP and never hang
	// up (TestShutdownClosesSessions).
	signal.Notify(make(chan os.Signal, 1), syscall.SIGHUP)
	code := m.Run()
	if sharedHostKeys.dir != "" {
		os.RemoveAll(sharedHostKeys.dir)
	}
	os.Exit(code)
}

func hostKeyDir(t testing.TB) string {
	t.Helper()
	sharedHostKeys.once.Do(func() {
		dir, err := os.MkdirTemp("", "sshd-hostkeys-")
		if err != nil {
			sharedHostKeys.err = err
			return
		}
		sharedHostKeys.dir = dir
		_, sharedHostKeys.err = loadHostKeys(dir, zerolog.Nop())
	})
	if sharedHostKeys.err != nil {
		t.Fatal(sharedHostKeys.err)
	}
	return sharedHostKeys.dir
}

// userKey is a client key pair.
type userKey struct {
	signer gossh.Signer
	// line is the authorized_keys line, without options.
	line string
	// pem is the private key in OpenSSH format, for the ssh command.
	pem []byte
}

func newUserKey(t testing.TB) userKey {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := gossh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	blk, err := gossh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	return userKey{
		signer: s,
		line:   strings.TrimSpace(string(gossh.MarshalAuthorizedKey(s.PublicKey()))),
		pem:    pem.EncodeToMemory(blk),
	}
}

// keyFile writes the private key to a 0600 file for OpenSSH clients.
func (k userKey) keyFile(t testing.TB) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "id_ed25519")
	if err := os.WriteFile(p, k.pem, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// msgIs matches a log line by its message.
func msgIs(msg string) func(map[string]any) bool { return testkit.Msg("", msg) }

// testServer is a running server and what a test needs to reach it.
type testServer struct {
	*Server
	addr string
	log  *testkit.LogLines
	keys string // authorized_keys path
	stop func() // cancels Run and waits for it
}

// startServer runs a server on 127.0.0.1:0 with authorized_keys content.
// hooks change the server between New and Listen.
func startServer(t *testing.T, authorized string, mutate func(*Config), hooks ...func(*Server)) *testServer {
	t.Helper()
	dir := t.TempDir()
	keys := filepath.Join(dir, "authorized_keys")
	if authorized != "" {
		if err := os.WriteFile(keys, []byte(authorized), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg := Config{
		Addr:               "127.0.0.1:0",
		AuthorizedKeysFile: keys,
		HostKeyDir:         hostKeyDir(t),
		Dir:                dir,
		ShutdownTimeout:    5 * time.Second,
	}
	if mutate != nil {
		mutate(&cfg)
	}
	lb := testkit.NewLogLines()
	srv, err := New(cfg, zerolog.New(lb).Level(zerolog.DebugLevel).With().Timestamp().Logger())
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hooks {
		h(srv)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	var once sync.Once
	ts := &testServer{Server: srv, addr: srv.Addr().String(), log: lb, keys: cfg.AuthorizedKeysFile}
	ts.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(cfg.ShutdownTimeout + 5*time.Second):
				t.Errorf("Run did not return within the shutdown timeout")
			}
		})
	}
	t.Cleanup(func() {
		ts.stop()
		if t.Failed() {
			t.Logf("server log:\n%s", lb.Raw())
		}
	})
	return ts
}

// clientConfig authenticates with the given methods and checks the host
// key against the server's fingerprints.
func (ts *testServer) clientConfig(auth ...gossh.AuthMethod) *gossh.ClientConfig {
	fps := ts.Status().HostKeyFingerprints
	return &gossh.ClientConfig{
		User: "root",
		Auth: auth,
		HostKeyCallback: func(_ string, _ net.Addr, key gossh.PublicKey) error {
			for _, fp := range fps {
				if fp == gossh.FingerprintSHA256(key) {
					return nil
				}
			}
			return errUnknownKey
		},
		Timeout: 10 * time.Second,
	}
}

// dial logs in with key k.
func (ts *testServer) dial(k userKey) (*gossh.Client, error) {
	return gossh.Dial("tcp", ts.addr, ts.clientConfig(gossh.PublicKeys(k.signer)))
}

func (ts *testServer) mustDial(t testing.TB, k userKey) *gossh.Client {
	t.Helper()
	c, err := ts.dial(k)
	if err != nil {
		t.Fatalf("login: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// run runs cmd in a new session and returns its stdout, stderr and the
// Wait error.
func run(t testing.TB, c *gossh.Client, cmd, stdin string) (string, string, error) {
	t.Helper()
	s, err := c.NewSession()
	if err != nil {
		t.Fatalf("new session: %v", err)
	}
	defer s.Close()
	var out, errb bytes.Buffer
	s.Stdout, s.Stderr = &out, &errb
	s.Stdin = strings.NewReader(stdin)
	err = s.Run(cmd)
	return out.String(), errb.String(), err
}

// writeAtomic replaces a file the way editors and config tools do.
func writeAtomic(t testing.TB, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}
