package avclient

import (
	"os"
	"strings"
	"testing"
	"time"
)

func TestWriteFlagsOnlyWhenChanged(t *testing.T) {
	c := Client{Prefix: t.TempDir()}
	f := Flags{NodeIP: "10.0.0.7", ListenPort: 28002, Extra: []string{"--debug"}, ClientName: "nginx-0"}
	written, err := c.WriteFlags(f)
	if err != nil || len(written) != 2 {
		t.Fatalf("first write: %v %v", written, err)
	}
	cmd, _ := os.ReadFile(c.CmdFile())
	if string(cmd) != "--iplist=10.0.0.7\n--listenport=28002\n--debug\n" {
		t.Fatalf("avagent.cmd = %q", cmd)
	}
	id, _ := os.ReadFile(c.IdentityFile())
	if string(id) != "--hostname=nginx-0\n" {
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

func TestCmdLinesMCSPort(t *testing.T) {
	f := Flags{NodeIP: "10.0.0.7", ListenPort: 28002, MCSPort: 28011, Extra: []string{"--debug"}}
	got := strings.Join(f.CmdLines(), "\n")
	if want := "--iplist=10.0.0.7\n--listenport=28002\n--mcsport=28011\n--debug"; got != want {
		t.Fatalf("avagent.cmd = %q, want %q", got, want)
	}
}
