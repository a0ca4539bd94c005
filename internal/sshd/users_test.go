package sshd

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/avsidecar/avsidecar/internal/testkit"
	gossh "golang.org/x/crypto/ssh"
)

// TestUnknownUserRefused: a login with an authorized key but a user name
// not in Config.Users is refused (the default accepts root alone), the
// log names the refused user once, and the names configured log in.
func TestUnknownUserRefused(t *testing.T) {
	k := newUserKey(t)
	for _, tc := range []struct {
		name     string
		users    []string
		accepted []string
		refused  []string
	}{
		{"default", nil, []string{"root"}, []string{"anyoneelse", "Root", "root ", ""}},
		{"root and backup", []string{"root", "backup"}, []string{"root", "backup"}, []string{"anyoneelse", "backup2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := startServer(t, k.line+"\n", func(c *Config) { c.Users = tc.users })
			for _, user := range tc.accepted {
				cfg := ts.clientConfig(gossh.PublicKeys(k.signer))
				cfg.User = user
				c, err := gossh.Dial("tcp", ts.addr, cfg)
				if err != nil {
					t.Fatalf("user %q: %v", user, err)
				}
				if out, _, err := run(t, c, "echo in", ""); err != nil || out != "in\n" {
					t.Errorf("user %q: %q, %v", user, out, err)
				}
				c.Close()
			}
			for _, user := range tc.refused {
				from := ts.log.Mark()
				cfg := ts.clientConfig(gossh.PublicKeys(k.signer))
				cfg.User = user
				if c, err := gossh.Dial("tcp", ts.addr, cfg); err == nil {
					c.Close()
					t.Fatalf("user %q logged in", user)
				} else if !strings.Contains(err.Error(), "unable to authenticate") {
					t.Errorf("user %q: %v, want an authentication failure", user, err)
				}
				ts.log.Wait(t, from, "the refused user in the log", 10*time.Second, testkit.Msg("", "invalid user", "user", user))
			}
			if st := ts.Status(); st.Logins != uint64(len(tc.accepted)) {
				t.Errorf("status %+v: want %d logins", st, len(tc.accepted))
			}
		})
	}
}

// TestOpenSSHUnknownUser: OpenSSH's ssh client sees the same from the
// embedded server as from OpenSSH's sshd when it gives a user name the
// server does not know (the same message, the same exit status), and the
// same when it gives root.
func TestOpenSSHUnknownUser(t *testing.T) {
	testkit.NeedRoot(t)
	sshdPath := testkit.NeedCommand(t, "sshd")
	k := newUserKey(t)
	ts := startServer(t, k.line+"\n", nil)
	o := newOpenSSH(t, ts, k)
	peerPort := startOpenSSHD(t, sshdPath, k.line+"\n")

	for _, user := range []string{"anyoneelse", "root"} {
		var got [2]string
		for i, port := range []string{o.port, peerPort} {
			c := o.cmd("ssh", append(o.opts(), "-p", port, user+"@"+o.host, "echo in")...)
			out, err := c.CombinedOutput()
			got[i] = fmt.Sprintf("exit %d: %s", exitCode(err), out)
		}
		if got[0] != got[1] {
			t.Errorf("ssh %s@: the embedded server gave %q, OpenSSH's sshd %q", user, got[0], got[1])
		} else {
			t.Logf("ssh %s@: %q from both", user, got[0])
		}
	}
	if !strings.Contains(ts.log.Raw(), `"user":"anyoneelse"`) {
		t.Error("the log does not name the refused user")
	}
}

// startOpenSSHD runs OpenSSH's sshd on a free loopback port with
// authorized as its authorized_keys, public keys only, root allowed, and
// returns the port once it listens.
func startOpenSSHD(t *testing.T, path, authorized string) string {
	t.Helper()
	dir := t.TempDir()
	hostKey := filepath.Join(dir, "host_key")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", hostKey).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v %s", err, out)
	}
	keys := filepath.Join(dir, "authorized_keys")
	conf := filepath.Join(dir, "sshd_config")
	if err := os.WriteFile(keys, []byte(authorized), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(conf, []byte(fmt.Sprintf("ListenAddress 127.0.0.1\nHostKey %s\nAuthorizedKeysFile %s\n"+
		"PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPidFile none\n"+
		"PermitRootLogin prohibit-password\n", hostKey, keys)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(testkit.FreePort(t))
	cmd := exec.Command(path, "-D", "-e", "-f", conf, "-p", port)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	listening := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "Server listening on") {
				close(listening)
				break
			}
		}
		for sc.Scan() {
		}
	}()
	select {
	case <-listening:
	case <-time.After(30 * time.Second):
		t.Fatal("OpenSSH's sshd did not say it listens")
	}
	return port
}
