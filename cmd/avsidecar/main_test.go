package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/avsidecar/avsidecar/internal/backupapi"
	"github.com/avsidecar/avsidecar/internal/browse"
	"github.com/avsidecar/avsidecar/internal/doctor"
	"github.com/avsidecar/avsidecar/internal/install"
	"github.com/avsidecar/avsidecar/internal/register"
	"github.com/avsidecar/avsidecar/internal/sidecar"
	"github.com/avsidecar/avsidecar/internal/sshd"
	"github.com/avsidecar/avsidecar/internal/supervise"
)

func runMain(t *testing.T, in string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = execute(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// TestFlagErrorsOnce: a bad flag is reported once, with where to look,
// and exits 2, for every command that has flags.
func TestFlagErrorsOnce(t *testing.T) {
	for _, cmd := range []string{"run", "install", "probe", "ls", "status"} {
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

// TestVersionFlag: --version and -v answer as version does.
func TestVersionFlag(t *testing.T) {
	_, want, _ := runMain(t, "", "version")
	for _, args := range [][]string{{"--version"}, {"-version"}, {"-v"}} {
		code, out, errOut := runMain(t, "", args...)
		if code != 0 || out != want || errOut != "" || !strings.HasPrefix(out, "avsidecar ") {
			t.Errorf("%v: exit %d, %q %q; want %q", args, code, out, errOut, want)
		}
	}
}

// TestHelp: -h lists the commands, --addr, and the exit codes.
func TestHelp(t *testing.T) {
	code, out, _ := runMain(t, "", "-h")
	for _, want := range []string{"--addr HOST:PORT", "Exit codes:", "  0  success", "  1  anything else", "  2  bad configuration", "  3  the RPM is unusable", "AVAMAR_LISTEN_PORT_BASE"} {
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
		Doctor:       &doctor.Report{CheckedAt: now.Add(-10 * time.Second), Trigger: "periodic", Diagnoses: []doctor.Diagnosis{{Check: "mcs", State: "ok"}, {Check: "node-ip", State: "ok"}}},
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
browse:      /data, a bearer token from every client, loopback and kubectl port-forward included
doctor:      2 ok (checked 2026-11-25T11:59:50Z (10s ago), on periodic)
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
		Doctor: &doctor.Report{CheckedAt: now.Add(-time.Minute), Trigger: "registration attempt 3 failed: unreachable", Diagnoses: []doctor.Diagnosis{
			{Check: "mcs", State: "fault", Message: "the MCS at mcs:28001 is unreachable from the pod: connection refused: nothing listens there", Fix: "check that the MCS runs"},
			{Check: "node-port", State: "unknown", Message: "no answer at 192.0.2.2:31000 within 3s"},
			{Check: "listen-port", State: "pending", Message: "avagent has not started yet"},
		}},
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
		"doctor:      1 faults, 1 cannot tell, 1 pending (checked 2026-11-25T11:59:00Z (1m0s ago), on registration attempt 3 failed: unreachable)\n",
		"diagnosis:   mcs: the MCS at mcs:28001 is unreachable from the pod: connection refused: nothing listens there\n  fix:       check that the MCS runs\n",
		"diagnosis:   node-port, cannot tell: no answer at 192.0.2.2:31000 within 3s\n",
	} {
		if !strings.Contains(got, w) {
			t.Errorf("summary lacks %q:\n%s", w, got)
		}
	}
}
