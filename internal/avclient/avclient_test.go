package avclient

import (
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestWriteFlagsOnlyWhenChanged(t *testing.T) {
	c := Client{Prefix: t.TempDir()}
	f := Flags{NodeIP: "10.0.0.7", ListenPort: 28002, MCSPort: 28001, Extra: []string{"--debug"}, ClientName: "nginx-0"}
	written, err := c.WriteFlags(f)
	if err != nil || len(written) != 2 {
		t.Fatalf("first write: %v %v", written, err)
	}
	cmd, _ := os.ReadFile(c.CmdFile())
	if string(cmd) != "--iplist=10.0.0.7\n--listenport=28002\n--debug\n" {
		t.Fatalf("avagent.cmd = %q", cmd)
	}
	id, _ := os.ReadFile(c.IdentityFile())
	if string(id) != "--hostname=nginx-0\n--listenport=28002\n" {
		t.Fatalf(".avagent = %q", id)
	}
	before, _ := os.Stat(c.CmdFile())
	old := before.ModTime().Add(-time.Hour)
	os.Chtimes(c.CmdFile(), old, old)

	written, err = c.WriteFlags(f)
	if err != nil || len(written) != 0 {
		t.Fatalf("second write changed %v (%v)", written, err)
	}
	if after, _ := os.Stat(c.CmdFile()); !after.ModTime().Equal(old) {
		t.Fatal("unchanged avagent.cmd was rewritten")
	}

	f.NodeIP = "10.0.0.8"
	written, err = c.WriteFlags(f)
	if err != nil || len(written) != 1 || written[0] != c.CmdFile() {
		t.Fatalf("node move wrote %v (%v)", written, err)
	}
}

// TestMCSPortOnlyWhenNotDefault: --mcsport is documented nowhere for
// avagent, so neither avagent.cmd nor the registration command carries it
// for the default port; a port the operator chose is passed on.
func TestMCSPortOnlyWhenNotDefault(t *testing.T) {
	for _, tt := range []struct {
		port     int
		cmd      string
		initFlag bool
	}{
		{28001, "--iplist=10.0.0.7\n--listenport=28002\n--debug", false},
		{0, "--iplist=10.0.0.7\n--listenport=28002\n--debug", false},
		{28011, "--iplist=10.0.0.7\n--listenport=28002\n--mcsport=28011\n--debug", true},
	} {
		f := Flags{NodeIP: "10.0.0.7", ListenPort: 28002, MCSPort: tt.port, Extra: []string{"--debug"}}
		if got := strings.Join(f.CmdLines(), "\n"); got != tt.cmd {
			t.Errorf("port %d: avagent.cmd = %q, want %q", tt.port, got, tt.cmd)
		}
		args := Client{Prefix: "/usr/local/avamar"}.InitArgs("mcs.example.com", tt.port, "/clients")
		if got := slices.Contains(args, "--mcsport=28011"); got != tt.initFlag {
			t.Errorf("port %d: init args %q", tt.port, args)
		}
		if !slices.Contains(args, "--mcsaddr=mcs.example.com") || !slices.Contains(args, "--vardir=/usr/local/avamar/var") {
			t.Errorf("port %d: init args %q", tt.port, args)
		}
		for _, a := range args {
			if strings.HasPrefix(a, "--mcsport=") && !tt.initFlag {
				t.Errorf("port %d: init args carry %s", tt.port, a)
			}
		}
	}
}

// TestVarDirMovesEveryStateFile: once the var dir is located elsewhere,
// every state file and the agent's --vardir and --logfile follow it.
func TestVarDirMovesEveryStateFile(t *testing.T) {
	c := Client{Root: "/", Prefix: "/usr/local/avamar", Var: "/var/avamar"}
	for _, p := range []string{c.LogFile(), c.RegisteredFile(), c.IDFile(), c.CmdFile(), c.IdentityFile(), c.LockFile(), c.PIDFile()} {
		if !strings.HasPrefix(p, "/var/avamar/") {
			t.Errorf("%s is not in /var/avamar", p)
		}
	}
	args := c.RunArgs()
	if !slices.Contains(args, "--vardir=/var/avamar") || !slices.Contains(args, "--logfile=/var/avamar/avagent.log") ||
		!slices.Contains(args, "--bindir=/usr/local/avamar/bin/") {
		t.Errorf("run args %q", args)
	}
}
