package sshd

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/avsidecar/avsidecar/internal/testkit"
	"github.com/rs/zerolog"
	gossh "golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"
)

// copyHostKeys fills a new state dir with the shared host keys and
// returns it with their fingerprints, ed25519 first.
func copyHostKeys(t *testing.T) (string, []string) {
	t.Helper()
	dir := t.TempDir()
	var fps []string
	for _, f := range hostKeyFiles {
		data, err := os.ReadFile(filepath.Join(hostKeyDir(t), f.name))
		if err != nil {
			t.Fatal(err)
		}
		must(t, os.WriteFile(filepath.Join(dir, f.name), data, 0o600))
		fps = append(fps, fingerprintOfFile(t, filepath.Join(dir, f.name)))
	}
	return dir, fps
}

func fingerprintOfFile(t *testing.T, path string) string {
	t.Helper()
	s := signerOfFile(t, path)
	return gossh.FingerprintSHA256(s.PublicKey())
}

func signerOfFile(t *testing.T, path string) gossh.Signer {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s, err := gossh.ParsePrivateKey(data)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return s
}

// sshStrict logs in with OpenSSH checking the host key against
// known_hosts and offering only the host key algorithms given.
func (o *openssh) sshStrict(knownHosts, hostKeyAlgorithms string, args ...string) ([]byte, error) {
	o.t.Helper()
	c := o.cmd("ssh", append([]string{
		"-F", "/dev/null",
		"-o", "StrictHostKeyChecking=yes", "-o", "UserKnownHostsFile=" + knownHosts,
		"-o", "HostKeyAlgorithms=" + hostKeyAlgorithms,
		"-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none",
		"-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10",
		"-i", o.key, "-p", o.port, "root@" + o.host,
	}, args...)...)
	var stderr bytes.Buffer
	c.Stderr = &stderr
	out, err := c.Output()
	if err != nil {
		return out, errors.New(strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

var setAsideName = regexp.MustCompile(`^ssh_host_(ed25519|rsa)_key\.damaged-\d{8}T\d{6}Z$`)

// TestDamagedHostKeySetAside: a host key file that holds no usable key is
// renamed NAME.damaged-TIME (0600, content kept), a new key is made and
// logged at error level, OpenSSH logs in checking the new key, and only
// the damaged key's fingerprint changed.
func TestDamagedHostKeySetAside(t *testing.T) {
	good, _ := copyHostKeys(t)
	goodEd := mustRead(t, filepath.Join(good, "ssh_host_ed25519_key"))
	goodRSA := mustRead(t, filepath.Join(good, "ssh_host_rsa_key"))
	tests := []struct {
		name    string
		slot    int // index in hostKeyFiles
		content []byte
		mode    os.FileMode
	}{
		{"truncated ed25519", 0, goodEd[:len(goodEd)/2], 0o600},
		{"empty rsa", 1, nil, 0o600},
		{"garbage ed25519", 0, bytes.Repeat([]byte("\x00garbage\xff"), 40), 0o644},
		{"rsa key in the ed25519 file", 0, goodRSA, 0o600},
		{"public key in the rsa file", 1, gossh.MarshalAuthorizedKey(signerOfFile(t, filepath.Join(good, "ssh_host_rsa_key")).PublicKey()), 0o600},
		{"too large to be a key", 0, bytes.Repeat([]byte("A"), maxHostKeySize+1), 0o600},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, before := copyHostKeys(t)
			name := hostKeyFiles[tt.slot].name
			must(t, os.WriteFile(filepath.Join(dir, name), tt.content, tt.mode))
			must(t, os.Chmod(filepath.Join(dir, name), tt.mode))
			k := newUserKey(t)
			ts := startServer(t, k.line+"\n", func(c *Config) { c.HostKeyDir = dir })

			after := ts.Status().HostKeyFingerprints
			for i := range before {
				if changed := after[i] != before[i]; changed != (i == tt.slot) {
					t.Errorf("%s: fingerprint changed = %v, want %v", hostKeyFiles[i].name, changed, i == tt.slot)
				}
			}
			st := ts.Status()
			if st.HostKeysReplaced != 1 || len(st.HostKeysSetAside) != 1 {
				t.Fatalf("status = %+v, want one key replaced", st)
			}
			aside := st.HostKeysSetAside[0]
			if filepath.Dir(aside) != dir || !setAsideName.MatchString(filepath.Base(aside)) ||
				!strings.HasPrefix(filepath.Base(aside), name+".") {
				t.Errorf("set aside as %s", aside)
			}
			if got := mustRead(t, aside); !bytes.Equal(got, tt.content) {
				t.Errorf("the damaged file's content was not kept")
			}
			if fi, err := os.Stat(aside); err != nil || fi.Mode().Perm() != 0o600 {
				t.Errorf("set-aside file mode %v %v, want 0600", fi.Mode(), err)
			}
			if got := fingerprintOfFile(t, filepath.Join(dir, name)); got != after[tt.slot] {
				t.Errorf("the new key on disk is not the key served")
			}
			if ts.log.Count(0, func(m map[string]any) bool {
				return m["level"] == "error" && m["message"] == "host key damaged; set aside and replaced by a new key" &&
					m["set_aside"] == aside && m["fingerprint"] == after[tt.slot] && m["path"] == filepath.Join(dir, name)
			}) != 1 {
				t.Errorf("no error log line naming the set-aside file and the new fingerprint")
			}

			// OpenSSH checks the new key of the replaced slot, and the
			// kept key of the other.
			o := newOpenSSH(t, ts, k)
			known := filepath.Join(t.TempDir(), "known_hosts")
			var lines []byte
			for _, f := range hostKeyFiles {
				pub := signerOfFile(t, filepath.Join(dir, f.name)).PublicKey()
				lines = append(lines, "["+o.host+"]:"+o.port+" "...)
				lines = append(lines, gossh.MarshalAuthorizedKey(pub)...)
			}
			must(t, os.WriteFile(known, lines, 0o600))
			for _, algos := range []string{"ssh-ed25519", "rsa-sha2-512,rsa-sha2-256"} {
				if out, err := o.sshStrict(known, algos, "echo in"); err != nil || string(out) != "in\n" {
					t.Errorf("ssh with host key %s: %q %v", algos, out, err)
				}
			}

			// The next start keeps the new key and sets nothing aside.
			hk, err := loadHostKeys(dir, zerolog.Nop())
			if err != nil || len(hk.setAside) != 0 || gossh.FingerprintSHA256(hk.signers[tt.slot].PublicKey()) != after[tt.slot] {
				t.Errorf("restart: set aside %v, err %v; the new key must be kept", hk.setAside, err)
			}
		})
	}
}

// TestSetAsideNameTaken: two damaged keys set aside in the same second
// keep both files.
func TestSetAsideNameTaken(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ssh_host_ed25519_key")
	now := time.Date(2026, 11, 29, 2, 36, 34, 0, time.UTC)
	var names []string
	for i := range 3 {
		must(t, os.WriteFile(path, []byte{byte('a' + i)}, 0o600))
		name, err := setAside(path, now)
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, filepath.Base(name))
	}
	want := []string{"ssh_host_ed25519_key.damaged-20261129T023634Z", "ssh_host_ed25519_key.damaged-20261129T023634Z-2",
		"ssh_host_ed25519_key.damaged-20261129T023634Z-3"}
	if strings.Join(names, " ") != strings.Join(want, " ") {
		t.Errorf("names = %v, want %v", names, want)
	}
	for i, n := range want {
		if got := mustRead(t, filepath.Join(dir, n)); string(got) != string(rune('a'+i)) {
			t.Errorf("%s holds %q", n, got)
		}
	}
}

// TestUnreadableHostKeyKept: a host key that cannot be read may still be
// good, so it is never touched: Listen fails naming it, Status says
// failed with the same text, Run returns it, and nothing is set aside or
// made in its place.
func TestUnreadableHostKeyKept(t *testing.T) {
	tests := []struct {
		name    string
		damage  func(t *testing.T, path string)
		want    error
		noPerms bool // read without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH
	}{
		{"directory in its place", func(t *testing.T, path string) {
			must(t, os.Remove(path))
			must(t, os.Mkdir(path, 0o700))
		}, errNotRegular, false},
		{"named pipe in its place", func(t *testing.T, path string) {
			must(t, os.Remove(path))
			must(t, syscall.Mkfifo(path, 0o600))
		}, errNotRegular, false},
		{"permission denied", func(t *testing.T, path string) {
			must(t, os.Chmod(path, 0))
		}, fs.ErrPermission, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, _ := copyHostKeys(t)
			path := filepath.Join(dir, "ssh_host_ed25519_key")
			tt.damage(t, path)
			before := listDir(t, dir)
			srv, err := New(Config{Addr: "127.0.0.1:0", AuthorizedKeysFile: "/nonexistent", HostKeyDir: dir}, zerolog.Nop())
			if err != nil {
				t.Fatal(err)
			}
			if tt.noPerms {
				onThreadWithout(t, false, []int{unix.CAP_DAC_OVERRIDE, unix.CAP_DAC_READ_SEARCH}, func() { err = srv.Listen() })
			} else {
				err = srv.Listen()
			}
			if err == nil || !errors.Is(err, tt.want) || !strings.Contains(err.Error(), path) {
				t.Fatalf("Listen = %v, want %v naming %s", err, tt.want, path)
			}
			if errors.Is(err, errDamaged) {
				t.Errorf("an unreadable key was taken for a damaged one")
			}
			if st := srv.Status(); st.State != StateFailed || st.Error != err.Error() || st.HostKeysReplaced != 0 {
				t.Errorf("status = %+v", st)
			}
			if rerr := srv.Run(context.Background()); rerr == nil || rerr.Error() != err.Error() {
				t.Errorf("Run = %v, want the Listen error", rerr)
			}
			if after := listDir(t, dir); after != before {
				t.Errorf("state dir changed from %s to %s", before, after)
			}
		})
	}
}

func listDir(t *testing.T, dir string) string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var s []string
	for _, e := range entries {
		s = append(s, e.Name()+":"+e.Type().String())
	}
	return strings.Join(s, " ")
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestListenErrorsNameTheAddress: a port in use, and a port below 1024
// without CAP_NET_BIND_SERVICE, fail Listen with the address and the
// cause, which errors.Is still finds; the server is failed, not stuck.
func TestListenErrorsNameTheAddress(t *testing.T) {
	t.Run("in use", func(t *testing.T) {
		busy, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer busy.Close()
		addr := busy.Addr().String()
		srv, err := New(Config{Addr: addr, AuthorizedKeysFile: "/nonexistent", HostKeyDir: hostKeyDir(t)}, zerolog.Nop())
		if err != nil {
			t.Fatal(err)
		}
		err = srv.Run(context.Background())
		if !errors.Is(err, syscall.EADDRINUSE) || !strings.Contains(err.Error(), "listen ssh "+addr) {
			t.Fatalf("Run = %v, want EADDRINUSE naming %s", err, addr)
		}
		if st := srv.Status(); st.State != StateFailed || st.Error != err.Error() {
			t.Errorf("status = %+v", st)
		}
	})
	t.Run("privileged port", func(t *testing.T) {
		testkit.NeedRoot(t) // to make a network namespace of its own
		srv, err := New(Config{Addr: ":22", AuthorizedKeysFile: "/nonexistent", HostKeyDir: hostKeyDir(t)}, zerolog.Nop())
		if err != nil {
			t.Fatal(err)
		}
		onThreadWithout(t, true, []int{unix.CAP_NET_BIND_SERVICE}, func() { err = srv.Listen() })
		if !errors.Is(err, syscall.EACCES) || !strings.Contains(err.Error(), "listen ssh :22") ||
			!strings.Contains(err.Error(), "need root or CAP_NET_BIND_SERVICE") {
			t.Fatalf("Listen = %v, want EACCES naming :22 and the capability", err)
		}
	})
}

// onThreadWithout runs f on an OS thread of its own that lacks the given
// capabilities and, with newNet, is in a new network namespace, so a test
// running as root meets the errors an unprivileged process meets. The
// thread is never given back: it ends with its goroutine. As another user
// f runs as it is (it lacks the capabilities already) unless newNet.
func onThreadWithout(t *testing.T, newNet bool, caps []int, f func()) {
	t.Helper()
	if os.Geteuid() != 0 && !newNet {
		f()
		return
	}
	// The first listen probes the IP stack once for the process; it must
	// not happen in the namespace made here.
	if l, err := net.Listen("tcp", ":0"); err == nil {
		l.Close()
	}
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with this goroutine
		if newNet {
			if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
				done <- err
				return
			}
		}
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var data [2]unix.CapUserData
		if err := unix.Capget(&hdr, &data[0]); err != nil {
			done <- err
			return
		}
		for _, c := range caps {
			data[c/32].Effective &^= 1 << (c % 32)
			data[c/32].Permitted &^= 1 << (c % 32)
		}
		if err := unix.Capset(&hdr, &data[0]); err != nil {
			done <- err
			return
		}
		f()
		done <- nil
	}()
	if err := <-done; err != nil {
		t.Fatalf("restrict the thread: %v", err)
	}
}
