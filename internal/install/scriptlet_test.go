package install

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/avsidecar/avsidecar/internal/testkit"
	"github.com/rs/zerolog"
)

// rootWithShell makes a root holding a working /bin/sh and the commands
// named (from the host's PATH, into /bin), with the libraries ldd names,
// so scriptlets can run chrooted in it.
func rootWithShell(t testing.TB, commands ...string) string {
	t.Helper()
	testkit.NeedRoot(t)
	ldd := testkit.NeedCommand(t, "ldd")
	root := t.TempDir()
	copyTo := func(src, dst string) {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(root, dst), string(b))
		if err := os.Chmod(filepath.Join(root, dst), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	libs := regexp.MustCompile(`(/[^\s]+\.so[^\s]*)`)
	add := func(bin, dst string) {
		real, err := filepath.EvalSymlinks(bin)
		if err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(ldd, real).Output()
		if err != nil {
			t.Fatalf("ldd %s: %v", real, err)
		}
		copyTo(real, dst)
		for _, lib := range libs.FindAllString(string(out), -1) {
			copyTo(lib, lib)
		}
	}
	add("/bin/sh", "/bin/sh")
	for _, c := range commands {
		add(testkit.NeedCommand(t, c), "/bin/"+c)
	}
	return root
}

// logBuffer captures the installer's log, which more than one goroutine
// writes (a scriptlet's output lines are logged as they come).
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *logBuffer) Reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Reset()
}

func (l *logBuffer) logger() zerolog.Logger { return zerolog.New(l) }

func TestScriptlets(t *testing.T) {
	root := rootWithShell(t)
	pre := `echo "pre $1 $RPM_INSTALL_PREFIX"; echo "to stderr" >&2`
	post := `echo "post $1 $RPM_INSTALL_PREFIX $RPM_PACKAGE_NAME" > "$RPM_INSTALL_PREFIX/var/post.log"; echo "/etc/x" > /scriptlet-root`
	var log logBuffer
	cfg := Config{RPM: writeRPM(t, pack(t, packOpts{pre: pre, post: post})), Root: root, Prefix: "/opt/avamar", NoSync: true}
	if _, err := Install(context.Background(), cfg, log.logger()); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"scriptlet":"%pre","line":"pre 1 /opt/avamar"`, `"line":"to stderr"`} {
		if !strings.Contains(log.String(), want) {
			t.Errorf("log lacks %s:\n%s", want, log.String())
		}
	}
	if got := readFile(t, filepath.Join(root, "opt/avamar/var/post.log")); got != "post 1 /opt/avamar AvamarClient\n" {
		t.Errorf("%%post wrote %q", got)
	}
	if !exists(filepath.Join(root, "scriptlet-root")) || exists("/scriptlet-root") {
		t.Errorf("%%post did not run chrooted in the root")
	}

	// An upgrade passes 2.
	cfg.RPM = writeRPM(t, pack(t, packOpts{version: "2.0", pre: pre, post: post}))
	if _, err := Install(context.Background(), cfg, log.logger()); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(root, "opt/avamar/var/post.log")); got != "post 2 /opt/avamar AvamarClient\n" {
		t.Errorf("%%post of an upgrade wrote %q", got)
	}
}

// TestFailingPre: a failing %pre stops the install before any file is
// written, with rpm's message.
func TestFailingPre(t *testing.T) {
	root := rootWithShell(t)
	before := snapshot(t, root)
	_, err := run(t, writeRPM(t, pack(t, packOpts{pre: "exit 7"})), root)
	want := "%pre(AvamarClient-1.0-1.x86_64) scriptlet failed, exit status 7"
	if err == nil || !strings.Contains(err.Error(), want) || errors.Is(err, ErrUnusable) {
		t.Fatalf("install: %v, want %q (and not ErrUnusable)", err, want)
	}
	diffTrees(t, before, snapshot(t, root))
}

// TestFailingPost: as with rpm, a failing %post leaves the package
// installed, with a warning.
func TestFailingPost(t *testing.T) {
	root := rootWithShell(t)
	var log logBuffer
	cfg := Config{RPM: writeRPM(t, pack(t, packOpts{post: "exit 3"})), Root: root, Prefix: "/opt/avamar", NoSync: true}
	res, err := Install(context.Background(), cfg, log.logger())
	if err != nil || !res.Changed {
		t.Fatalf("install: %+v, %v", res, err)
	}
	if !strings.Contains(log.String(), "%post(AvamarClient-1.0-1.x86_64) scriptlet failed, exit status 3") {
		t.Errorf("log lacks the failure:\n%s", log.String())
	}
	if !exists(filepath.Join(root, "opt/avamar/var/avsidecar", receiptName)) {
		t.Errorf("no receipt")
	}
}

// TestScriptletWithoutShell: a root without /bin/sh skips the scriptlets
// with a warning, never running them on the host.
func TestScriptletWithoutShell(t *testing.T) {
	root := t.TempDir()
	var log logBuffer
	cfg := Config{RPM: writeRPM(t, pack(t, packOpts{pre: "exit 1", post: "echo x > /scriptlet-ran"})), Root: root, Prefix: "/opt/avamar", NoSync: true}
	if _, err := Install(context.Background(), cfg, log.logger()); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(log.String(), "scriptlet skipped") || exists("/scriptlet-ran") {
		t.Errorf("scriptlets not skipped:\n%s", log.String())
	}
}

// TestTestkitRPM installs the project's fake Avamar client RPM, whose
// %post edits the init script and logs into var/, chrooted in a root
// with the tools it uses; a second start finds the receipt.
func TestTestkitRPM(t *testing.T) {
	root := rootWithShell(t, "grep", "sed", "mkdir", "cat")
	rpmPath, err := testkit.BuildRPMFile(t.TempDir(), testkit.RPMOptions{AgentBinary: "/bin/true"})
	if err != nil {
		t.Fatal(err)
	}
	var log logBuffer
	cfg := Config{RPM: rpmPath, Root: root, Prefix: "/opt/avamar", NoSync: true}
	res, err := Install(context.Background(), cfg, log.logger())
	if err != nil || !res.Changed || res.Name != testkit.RPMName {
		t.Fatalf("install: %+v, %v\n%s", res, err, log.String())
	}
	if strings.Contains(log.String(), "scriptlet failed") {
		t.Errorf("a scriptlet failed:\n%s", log.String())
	}
	if got := readFile(t, filepath.Join(root, "etc/init.d/avagent")); !strings.Contains(got, "AVAMAR_PREFIX=/opt/avamar\n") {
		t.Errorf("%%post did not set the prefix in the init script:\n%s", got)
	}
	if got := readFile(t, filepath.Join(root, "opt/avamar/var/install.log")); !strings.Contains(got, "prefix=/opt/avamar") {
		t.Errorf("install.log: %q", got)
	}
	if res, err := Install(context.Background(), cfg, log.logger()); err != nil || res.Changed {
		t.Errorf("second start: %+v, %v", res, err)
	}
}
