package install

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/rpmpack"
)

// TestSeveralPrefixes: of a package's prefixes, the client's is the one
// relocated to the prefix, as `rpm -i --relocate CLIENT=PREFIX` does;
// the others stay where they are. The client's is /usr/local/avamar, or
// else the one that holds bin/avagent.bin. A package where neither tells
// is refused, saying so.
func TestSeveralPrefixes(t *testing.T) {
	for _, c := range []struct {
		name     string
		prefixes []string
		files    []rpmpack.RPMFile
		want     []string // paths in the root
	}{
		{
			name:     "client prefix first",
			prefixes: []string{"/usr/local/avamar", "/etc"},
			files:    []rpmpack.RPMFile{file("/usr/local/avamar/bin/avagent.bin", 0o755, "a"), file("/etc/avamar.conf", 0o644, "c")},
			want:     []string{"opt/avamar/bin/avagent.bin", "etc/avamar.conf"},
		},
		{
			name:     "client prefix last",
			prefixes: []string{"/etc/emc", "/usr/local/avamar"},
			files:    []rpmpack.RPMFile{file("/usr/local/avamar/bin/avtar.bin", 0o755, "a"), file("/etc/emc/avamar.conf", 0o644, "c")},
			want:     []string{"opt/avamar/bin/avtar.bin", "etc/emc/avamar.conf"},
		},
		{
			name:     "the prefix with bin/avagent.bin",
			prefixes: []string{"/etc/emc", "/opt/emc/avamar"},
			files:    []rpmpack.RPMFile{file("/opt/emc/avamar/bin/avagent.bin", 0o755, "a"), file("/etc/emc/avamar.conf", 0o644, "c")},
			want:     []string{"opt/avamar/bin/avagent.bin", "etc/emc/avamar.conf"},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			root := t.TempDir()
			b := pack(t, packOpts{files: c.files, tweak: func(r *rpmpack.RPM) {
				r.AddCustomTag(tagPrefixes, rpmpack.EntryStringSlice(c.prefixes))
			}})
			res := mustRun(t, writeRPM(t, b), root)
			if res.Prefix != "/opt/avamar" {
				t.Errorf("result %+v", res)
			}
			for _, p := range c.want {
				if !exists(filepath.Join(root, p)) {
					t.Errorf("%s not installed", p)
				}
			}
		})
	}

	root := t.TempDir()
	b := pack(t, packOpts{files: []rpmpack.RPMFile{file("/opt/a/x", 0o644, "x"), file("/opt/b/y", 0o644, "y")}, tweak: func(r *rpmpack.RPM) {
		r.AddCustomTag(tagPrefixes, rpmpack.EntryStringSlice([]string{"/opt/a", "/opt/b"}))
	}})
	_, err := run(t, writeRPM(t, b), root)
	if !errors.Is(err, ErrUnusable) || !strings.Contains(err.Error(), "/usr/local/avamar") || !strings.Contains(err.Error(), "bin/avagent.bin") {
		t.Errorf("install: %v, want a refusal that says which prefix is the client's", err)
	}
}
