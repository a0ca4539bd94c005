package sshd

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/avsidecar/avsidecar/internal/testkit"
	"github.com/creack/pty"
	"golang.org/x/sys/unix"
)

// openssh runs OpenSSH clients against a test server.
type openssh struct {
	t    *testing.T
	ts   *testServer
	key  string
	host string
	port string
}

func newOpenSSH(t *testing.T, ts *testServer, k userKey) *openssh {
	host, port, err := net.SplitHostPort(ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	return &openssh{t: t, ts: ts, key: k.keyFile(t), host: host, port: port}
}

// opts are the options every client gets: no user config, no agent, no
// known_hosts, never a prompt.
func (o *openssh) opts() []string {
	return []string{
		"-F", "/dev/null",
		"-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
		"-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none",
		"-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10",
		"-i", o.key,
	}
}

// cmd builds an OpenSSH command with a deadline so a hang fails the test
// instead of the run.
func (o *openssh) cmd(name string, args ...string) *exec.Cmd {
	o.t.Helper()
	path := testkit.NeedCommand(o.t, name)
	cmd := exec.Command(path, args...)
	cmd.WaitDelay = time.Second
	timer := time.AfterFunc(60*time.Second, func() { cmd.Process.Kill() })
	o.t.Cleanup(func() { timer.Stop() })
	return cmd
}

func (o *openssh) ssh(args ...string) *exec.Cmd {
	return o.cmd("ssh", append(append(o.opts(), "-p", o.port, "root@"+o.host), args...)...)
}

func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

func TestOpenSSHExec(t *testing.T) {
	k := newUserKey(t)
	ts := startServer(t, k.line+"\n", nil)
	o := newOpenSSH(t, ts, k)
	for _, tt := range []struct {
		cmd, stdin, out string
		code            int
	}{
		{cmd: "echo hello", out: "hello\n"},
		{cmd: "exit 42", code: 42},
		{cmd: "read x; echo got=$x; exit 3", stdin: "data\n", out: "got=data\n", code: 3},
		{cmd: "kill -TERM $$", code: 255}, // OpenSSH reports death by signal as 255
	} {
		c := o.ssh(tt.cmd)
		c.Stdin = strings.NewReader(tt.stdin)
		out, err := c.Output()
		if code := exitCode(err); code != tt.code || string(out) != tt.out {
			t.Errorf("ssh %q: code %d out %q (%v), want %d %q", tt.cmd, code, out, err, tt.code, tt.out)
		}
	}
}

func TestOpenSSHPTYShell(t *testing.T) {
	k := newUserKey(t)
	ts := startServer(t, k.line+"\n", nil)
	o := newOpenSSH(t, ts, k)
	c := o.ssh("-tt")
	c.Stdin = strings.NewReader("echo TTY=$(tty)\nexit 5\n")
	out, err := c.Output()
	if code := exitCode(err); code != 5 {
		t.Errorf("ssh -tt exit %d (%v), want 5; output %q", code, err, out)
	}
	if !bytes.Contains(out, []byte("TTY=/dev/pts/")) {
		t.Errorf("no pty in the output: %q", out)
	}
}

// TestOpenSSHTermModes runs `ssh -t` on a local terminal set to an erase
// and a kill character that are not the kernel's defaults: OpenSSH sends
// its terminal's modes, and the remote PTY has them.
func TestOpenSSHTermModes(t *testing.T) {
	k := newUserKey(t)
	ts := startServer(t, k.line+"\n", nil)
	o := newOpenSSH(t, ts, k)

	ptmx, tty, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer ptmx.Close()
	tio, err := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	tio.Cc[unix.VERASE], tio.Cc[unix.VKILL] = 0x08, 0x02
	if err := unix.IoctlSetTermios(int(tty.Fd()), unix.TCSETS, tio); err != nil {
		t.Fatal(err)
	}
	c := o.ssh("-t", "stty -a")
	c.Stdin, c.Stdout, c.Stderr = tty, tty, tty
	c.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	tty.Close()
	output := make(chan []byte, 1)
	go func() {
		out, _ := io.ReadAll(ptmx) // EIO once ssh exited and closed the terminal
		output <- out
	}()
	werr := c.Wait()
	out := <-output
	if werr != nil {
		t.Fatalf("ssh -t: %v\n%s", werr, out)
	}
	checkStty(t, string(out), "erase=^H", "kill=^B")
}

func TestOpenSSHAuthAndForwardingRefused(t *testing.T) {
	k := newUserKey(t)
	ts := startServer(t, k.line+"\n", nil)
	o := newOpenSSH(t, ts, k)

	c := o.ssh("-o", "PreferredAuthentications=password,keyboard-interactive", "true")
	var stderr bytes.Buffer
	c.Stderr = &stderr
	if err := c.Run(); exitCode(err) != 255 || !strings.Contains(stderr.String(), "Permission denied (publickey)") {
		t.Errorf("password login: %v %q, want Permission denied (publickey)", err, stderr.String())
	}

	// -W forwards stdio over a direct-tcpip channel, as -L does per
	// connection.
	target, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	c = o.ssh("-W", target.Addr().String())
	stderr.Reset()
	c.Stderr = &stderr
	if err := c.Run(); exitCode(err) != 255 || !strings.Contains(stderr.String(), "stdio forwarding failed") {
		t.Errorf("stdio forwarding: %v %q, want it refused", err, stderr.String())
	}
	if ts.log.Count(0, func(m map[string]any) bool {
		return m["message"] == "channel refused" && m["type"] == "direct-tcpip"
	}) != 1 {
		t.Errorf("direct-tcpip refusal not logged")
	}

	c = o.ssh("-o", "ExitOnForwardFailure=yes", "-R", "127.0.0.1:0:127.0.0.1:9", "echo", "should-not-run")
	stderr.Reset()
	c.Stderr = &stderr
	out, err := c.Output()
	if exitCode(err) != 255 || bytes.Contains(out, []byte("should-not-run")) {
		t.Errorf("remote forwarding: exit %d out %q stderr %q, want refused", exitCode(err), out, stderr.String())
	}
}

// TestOpenSSHAgentForwardingRefused runs `ssh -A` with a real agent: the
// request is refused and the session sees no agent socket.
func TestOpenSSHAgentForwardingRefused(t *testing.T) {
	k := newUserKey(t)
	ts := startServer(t, k.line+"\n", nil)
	o := newOpenSSH(t, ts, k)

	sock := filepath.Join(t.TempDir(), "agent.sock")
	agent := o.cmd("ssh-agent", "-D", "-a", sock) // -D: foreground, ours to stop
	agentOut, err := agent.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		agent.Process.Kill()
		agent.Wait()
	}()
	// The agent prints its socket once it listens.
	if line, err := bufio.NewReader(agentOut).ReadString('\n'); err != nil || !strings.Contains(line, sock) {
		t.Fatalf("ssh-agent: %q %v", line, err)
	}

	ssh := o.ssh("-A", "echo agent=${SSH_AUTH_SOCK:-none}")
	for i, a := range ssh.Args {
		if a == "IdentityAgent=none" {
			ssh.Args[i] = "IdentityAgent=" + sock
		}
	}
	ssh.Env = append(os.Environ(), "SSH_AUTH_SOCK="+sock)
	out, err := ssh.Output()
	if err != nil || string(out) != "agent=none\n" {
		t.Errorf("ssh -A: %q %v, want agent=none", out, err)
	}
	if ts.log.Count(0, func(m map[string]any) bool {
		return m["message"] == "forwarding refused" && m["type"] == "auth-agent-req@openssh.com"
	}) != 1 {
		t.Errorf("agent forwarding refusal not logged")
	}
}

// sha256File is the digest of a file.
func sha256File(t *testing.T, path string) [32]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return [32]byte(h.Sum(nil))
}

func randomFile(t *testing.T, path string, size int64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := io.CopyN(f, rand.Reader, size); err != nil {
		t.Fatal(err)
	}
}

func TestOpenSSHSFTPLargeFile(t *testing.T) {
	k := newUserKey(t)
	ts := startServer(t, k.line+"\n", nil)
	o := newOpenSSH(t, ts, k)
	local := t.TempDir()
	remote := filepath.Dir(ts.keys)
	src := filepath.Join(local, "big.bin")
	randomFile(t, src, 64<<20)

	batch := "put " + src + " " + filepath.Join(remote, "up.bin") + "\n" +
		"get " + filepath.Join(remote, "up.bin") + " " + filepath.Join(local, "down.bin") + "\n"
	// 261120 is the largest buffer OpenSSH's sftp can send in one write
	// (its messages are capped at 256 KiB); reads are capped at the same
	// size by the server, as OpenSSH's sftp-server does.
	args := append(o.opts(), "-P", o.port, "-B", "261120", "-R", "64", "-b", "-", "root@"+o.host)
	c := o.cmd("sftp", args...)
	c.Stdin = strings.NewReader(batch)
	if out, err := c.CombinedOutput(); err != nil {
		t.Fatalf("sftp: %v\n%s", err, out)
	}
	want := sha256File(t, src)
	for _, p := range []string{filepath.Join(remote, "up.bin"), filepath.Join(local, "down.bin")} {
		if got := sha256File(t, p); got != want {
			t.Errorf("%s: checksum differs from the source", p)
		}
	}
}

// TestOpenSSHSCP copies both ways with modern scp (over sftp) and legacy
// scp -O, which runs `scp -t`/`scp -f` on the server through the shell and
// so needs scp on the session PATH.
func TestOpenSSHSCP(t *testing.T) {
	testkit.NeedCommand(t, "scp")
	k := newUserKey(t)
	ts := startServer(t, k.line+"\n", nil)
	o := newOpenSSH(t, ts, k)
	local := t.TempDir()
	remote := filepath.Dir(ts.keys)
	src := filepath.Join(local, "src.bin")
	randomFile(t, src, 3<<20+7)
	want := sha256File(t, src)

	for _, mode := range []struct{ name, flag string }{{"sftp", "-s"}, {"legacy", "-O"}} {
		t.Run(mode.name, func(t *testing.T) {
			up := filepath.Join(remote, "up-"+mode.name+".bin")
			down := filepath.Join(local, "down-"+mode.name+".bin")
			args := append(o.opts(), mode.flag, "-P", o.port)
			if out, err := o.cmd("scp", append(args, src, "root@"+o.host+":"+up)...).CombinedOutput(); err != nil {
				t.Fatalf("scp up: %v\n%s", err, out)
			}
			if out, err := o.cmd("scp", append(args, "root@"+o.host+":"+up, down)...).CombinedOutput(); err != nil {
				t.Fatalf("scp down: %v\n%s", err, out)
			}
			for _, p := range []string{up, down} {
				if got := sha256File(t, p); got != want {
					t.Errorf("%s: checksum differs from the source", p)
				}
			}
		})
	}
	// Legacy mode really went through `scp -t` and `scp -f` on the server.
	for _, c := range []string{"scp -t", "scp -f"} {
		if ts.log.Count(0, func(m map[string]any) bool {
			s, _ := m["command"].(string)
			return m["message"] == "command" && strings.HasPrefix(s, c)
		}) == 0 {
			t.Errorf("no %q command logged", c)
		}
	}
}
