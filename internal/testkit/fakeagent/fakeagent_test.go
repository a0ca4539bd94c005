package fakeagent

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParsePrecedence(t *testing.T) {
	tests := []struct {
		name     string
		files    map[string]string
		args     []string
		want     [4]string // hostname, iplist, mcsaddr, listenport
		warnings []string
	}{{
		name: "command line only",
		args: []string{"--hostname=cli", "--iplist=10.0.0.1", "--listenport", "30000"},
		want: [4]string{"cli", "10.0.0.1", "", "30000"},
	}, {
		name: "files in order cfg < cmd < .avagent",
		files: map[string]string{
			CfgFile: "--hostname=cfg\n--mcsaddr=mcs.example\n--iplist=10.0.0.9\n",
			CmdFile: "# operator flags\n--iplist=10.0.0.7\n\n--listenport=28003\n--hostname=cmd\n",
			DotFile: "--hostname=pinned\n",
		},
		want: [4]string{"pinned", "10.0.0.7", "mcs.example", "28003"},
	}, {
		name:  "command line wins over files",
		files: map[string]string{CmdFile: "--iplist=10.0.0.7\n", DotFile: "--hostname=pinned\n"},
		args:  []string{"--hostname=cli"},
		want:  [4]string{"cli", "10.0.0.7", "", "28002"},
	}, {
		name:     "unknown flags are ignored with a warning",
		files:    map[string]string{CmdFile: "--iplist=10.0.0.7\n--encrypt=tls\nbare-word\n"},
		args:     []string{"--hostname=h", "--debug"},
		want:     [4]string{"h", "10.0.0.7", "", "28002"},
		warnings: []string{`"--encrypt=tls" from avagent.cmd`, `"bare-word" from avagent.cmd`, `"--debug" from command line`},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, content := range tc.files {
				if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			var stderr bytes.Buffer
			o, err := parse(append([]string{"--vardir=" + dir}, tc.args...), &stderr)
			if err != nil {
				t.Fatal(err)
			}
			got := [4]string{o.hostname, o.iplist, o.mcsaddr, strconv.Itoa(o.listenport)}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("hostname, iplist, mcsaddr, listenport (-want +got):\n%s", diff)
			}
			if o.logfile != filepath.Join(dir, "avagent.log") {
				t.Errorf("logfile %q, want it in vardir", o.logfile)
			}
			for _, w := range tc.warnings {
				if !strings.Contains(stderr.String(), w) {
					t.Errorf("stderr lacks warning %s:\n%s", w, stderr.String())
				}
			}
			if len(tc.warnings) == 0 && stderr.Len() > 0 {
				t.Errorf("unexpected warnings:\n%s", stderr.String())
			}
		})
	}
}

// TestVardirFromFileIgnored: a flag file cannot move the directory it was
// read from.
func TestVardirFromFileIgnored(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, CmdFile), []byte("--vardir=/elsewhere\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	o, err := parse([]string{"--vardir=" + dir}, new(bytes.Buffer))
	if err != nil {
		t.Fatal(err)
	}
	if o.vardir != dir {
		t.Errorf("vardir %q, want %q", o.vardir, dir)
	}
}
