package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/avsidecar/avsidecar/internal/backupapi"
	"github.com/avsidecar/avsidecar/internal/browse"
	"github.com/avsidecar/avsidecar/internal/install"
	"github.com/avsidecar/avsidecar/internal/register"
	"github.com/avsidecar/avsidecar/internal/sidecar"
	"github.com/avsidecar/avsidecar/internal/sshd"
	"github.com/avsidecar/avsidecar/internal/supervise"
)

func runMain(t *testing.T, in string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	stdin = strings.NewReader(in)
	t.Cleanup(func() { stdin = os.Stdin })
	var out, errOut bytes.Buffer
	code = execute(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

const bareNginx = "../../examples/kustomize/nginx/statefulset.yaml"

// TestInjectCommand: manifests from stdin or -f, the result on stdout,
// notes on stderr; a bad manifest exits 2 with one message and writes no
// manifest.
func TestInjectCommand(t *testing.T) {
	bare, err := os.ReadFile(bareNginx)
	if err != nil {
		t.Fatal(err)
	}
	code, fromStdin, errOut := runMain(t, string(bare), "inject", "--image", "site:1")
	if code != 0 || !strings.Contains(fromStdin, "name: avamar\n") || errOut != "" {
		t.Fatalf("inject from stdin: exit %d, stderr %q", code, errOut)
	}
	code, fromFile, _ := runMain(t, "", "inject", "-f", bareNginx, "--image", "site:1")
	if code != 0 || fromFile != fromStdin {
		t.Errorf("inject -f: exit %d, output differs from stdin's", code)
	}
	// Twice is once, through the command line.
	if code, again, _ := runMain(t, fromStdin, "inject", "-f", "-", "--image", "site:1"); code != 0 || again != fromStdin {
		t.Errorf("inject of inject's output changed it (exit %d)", code)
	}
	// Two files, one manifest out; browse off.
	dir := t.TempDir()
	svc := filepath.Join(dir, "svc.yaml")
	os.WriteFile(svc, []byte("apiVersion: v1\nkind: Service\nmetadata:\n  name: nginx\nspec:\n  clusterIP: None\n"), 0o644)
	code, out, _ := runMain(t, "", "inject", "-f", bareNginx, "-f", svc, "--image", "site:1", "--browse-roots", "off")
	if code != 0 || !strings.HasSuffix(out, "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: nginx\nspec:\n  clusterIP: None\n") || strings.Contains(out, "AVSIDECAR_BROWSE_ROOTS") {
		t.Errorf("two files, browse off: exit %d:\n%s", code, out)
	}

	bad := strings.Replace(string(bare), "containers:", "contaners:", 1)
	code, out, errOut = runMain(t, bad, "inject", "--image", "site:1")
	want := `avsidecar inject: stdin, document 1 (StatefulSet nginx): unknown field "spec.template.spec.contaners"` + "\n"
	if code != exitConfig || out != "" || errOut != want {
		t.Errorf("bad manifest: exit %d, stdout %q, stderr %q; want exit 2, no output, %q", code, out, errOut, want)
	}
	code, out, errOut = runMain(t, string(bare), "inject")
	if code != exitConfig || out != "" || !strings.Contains(errOut, "--image is required") {
		t.Errorf("no image: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	code, _, errOut = runMain(t, "", "inject", "--image", "x", "-f", filepath.Join(dir, "missing.yaml"))
	if code != exitConfig || !strings.Contains(errOut, "missing.yaml: no such file") {
		t.Errorf("missing file: exit %d, %q", code, errOut)
	}
}

// TestFlagErrorsOnce: a bad flag is reported once, with where to look,
// and exits 2, for every command that has flags.
func TestFlagErrorsOnce(t *testing.T) {
	for _, cmd := range []string{"run", "install", "probe", "ls", "status", "inject"} {
		code, out, errOut := runMain(t, "", cmd, "--bogus")
		want := "avsidecar " + cmd + ": flag provided but not defined: -bogus (avsidecar " + cmd + " -h lists the flags)\n"
		if code != exitConfig || errOut != want || out != "" {
			t.Errorf("%s --bogus: exit %d, stdout %q, stderr %q; want exit 2 and %q", cmd, code, out, errOut, want)
		}
		code, out, errOut = runMain(t, "", cmd, "-h")
		if code != 0 || !strings.Contains(out, "usage: avsidecar") || errOut != "" {
			t.Errorf("%s -h: exit %d, stdout %q, stderr %q", cmd, code, out, errOut)
		}
	}
}

// TestVersionFlag: --version answers as version does.
func TestVersionFlag(t *testing.T) {
	_, want, _ := runMain(t, "", "version")
	for _, args := range [][]string{{"--version"}, {"-version"}} {
		code, out, errOut := runMain(t, "", args...)
		if code != 0 || out != want || errOut != "" || !strings.HasPrefix(out, "avsidecar ") {
			t.Errorf("%v: exit %d, %q %q; want %q", args, code, out, errOut, want)
		}
	}
}

// TestHelp: -h lists the commands, --addr, and the exit codes.
func TestHelp(t *testing.T) {
	code, out, _ := runMain(t, "", "-h")
	for _, want := range []string{"inject", "--addr HOST:PORT", "Exit codes:", "  0  success", "  1  anything else", "  2  bad configuration", "  3  the RPM is unusable", "AVAMAR_LISTEN_PORT_BASE"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("-h lacks %q", want)
		}
	}
}

// TestStatusSummary renders the states an operator meets: a healthy
// sidecar, and one that is not registered, with its agent down, its backup
// check failing and a side part broken.
func TestStatusSummary(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	healthy := sidecar.Status{
		Version: "0.1.0", Revision: "abc123", Phase: "running",
		Install:      &install.Result{Name: "AvamarClient", Version: "7.5.101", Release: "101", Prefix: "/usr/local/avamar"},
		Registration: register.Status{Registered: true, Reused: true, Client: "nginx-0", Domain: "/clients", Server: "mcs"},
		Agent:        supervise.Status{Running: true, PID: 42, StartedAt: now.Add(-3 * time.Hour), Restarts: 1},
		SSH:          &sshd.Status{Addr: ":2222", AuthorizedKeys: 2},
		Browse:       &browse.Status{Enabled: true, Roots: []string{"/data"}, Token: true},
		Backup:       &backupapi.Status{State: "ok", LastBackup: now.Add(-2 * time.Hour)},
	}
	got := summary(healthy, "127.0.0.1:9180", true, "", now)
	want := `avsidecar:   0.1.0 (revision abc123) at 127.0.0.1:9180
phase:       running
ready:       yes
registered:  yes, nginx-0 in /clients on mcs (receipt kept from an earlier start)
installed:   AvamarClient 7.5.101-101 in /usr/local/avamar
agent:       running, pid 42, up 3h0m0s, 1 restarts
last backup: 2026-11-25T10:00:00Z (2h0m0s ago)
ssh:         :2222, 2 authorized keys, 0 sessions open
browse:      /data, a bearer token for clients other than loopback
`
	if got != want {
		t.Errorf("healthy summary:\n%s\nwant:\n%s", got, want)
	}

	sick := sidecar.Status{
		Version: "0.1.0", Phase: "registering",
		Registration: register.Status{Client: "nginx-0", Domain: "/clients", Server: "mcs", Attempts: 3, LastOutcome: "unreachable", LastError: "dial tcp: connection refused"},
		Agent:        supervise.Status{CrashLoop: true, ShortRuns: 5, LastExit: "exit status 1"},
		SSH:          &sshd.Status{Addr: ":2222", AuthorizedKeysMissing: true},
		Backup:       &backupapi.Status{State: "unauthorized", Message: "token request: 401"},
		Faults:       map[string]string{"browse": "root /srv does not exist"},
	}
	readyz := "[+]shutdown ok\n[-]installed: not installed yet (phase registering)\n[-]registered: not registered after 3 attempts\n[!]browse: root /srv does not exist\n"
	got = summary(sick, "127.0.0.1:9180", false, readyz, now)
	for _, w := range []string{
		"ready:       no: installed: not installed yet (phase registering); registered: not registered after 3 attempts\n",
		"registered:  no, nginx-0 in /clients on mcs: 3 attempts, last unreachable: dial tcp: connection refused\n",
		"installed:   not yet\n",
		"agent:       crash looping: 5 short runs, last exit status 1, 0 restarts\n",
		"last backup: unknown, check unauthorized: token request: 401\n",
		"ssh:         :2222, no authorized_keys file: nobody can log in, 0 sessions open\n",
		"browse:      off\n",
		"fault:       browse: root /srv does not exist\n",
	} {
		if !strings.Contains(got, w) {
			t.Errorf("summary lacks %q:\n%s", w, got)
		}
	}
}
