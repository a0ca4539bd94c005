package avclient

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLocate(t *testing.T) {
	type setup func(t *testing.T, root, prefix string)
	mkdir := func(dirs ...string) setup {
		return func(t *testing.T, root, prefix string) {
			for _, d := range dirs {
				if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	file := func(path string) setup {
		return func(t *testing.T, root, prefix string) {
			p := filepath.Join(root, path)
			os.MkdirAll(filepath.Dir(p), 0o755)
			if err := os.WriteFile(p, []byte("x\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	link := func(target string) setup {
		return func(t *testing.T, root, prefix string) {
			if err := os.Symlink(target, filepath.Join(prefix, "var")); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, tt := range []struct {
		name       string
		setup      []setup
		configured string // in the root
		want       string // in the root
		how        string
		err        string
	}{
		{name: "nothing but the prefix", setup: []setup{mkdir("usr/local/avamar/var")}, want: "/usr/local/avamar/var", how: VarPrefix},
		{name: "no var at all", want: "/usr/local/avamar/var", how: VarPrefix},
		{name: "absolute link into the root", setup: []setup{mkdir("var/avamar"), link("/var/avamar")}, want: "/var/avamar", how: VarSymlink},
		{name: "relative link", setup: []setup{mkdir("data/avamar"), link("../../../data/avamar")}, want: "/data/avamar", how: VarSymlink},
		{name: "link to a missing dir", setup: []setup{link("/var/avamar")}, err: "no such file"},
		{name: "link out of the root", setup: []setup{link("../../../../../../../../tmp")}, err: "leads out of the root"},
		{name: "absolute link with dot-dots stays in the root", setup: []setup{mkdir("etc"), link("/../../etc")}, want: "/etc", how: VarSymlink},
		{name: "empty /var/avamar, empty prefix var", setup: []setup{mkdir("var/avamar", "usr/local/avamar/var")}, want: "/var/avamar", how: VarStateDir},
		{name: "/var/avamar with state", setup: []setup{mkdir("usr/local/avamar/var"), file("var/avamar/cid.bin"), file("usr/local/avamar/var/avagent.cfg")}, want: "/var/avamar", how: VarStateDir},
		{name: "state only in the prefix", setup: []setup{mkdir("var/avamar"), file("usr/local/avamar/var/avagent.cfg")}, want: "/usr/local/avamar/var", how: VarPrefix},
		{name: "configured", setup: []setup{mkdir("var/avamar", "srv/state")}, configured: "/srv/state", want: "/srv/state", how: VarConfigured},
		{name: "configured but missing", configured: "/srv/state", err: "AVAMAR_VAR_DIR"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			prefix := filepath.Join(root, "usr/local/avamar")
			os.MkdirAll(prefix, 0o755)
			for _, s := range tt.setup {
				s(t, root, prefix)
			}
			configured := ""
			if tt.configured != "" {
				configured = filepath.Join(root, tt.configured)
			}
			c, layout, err := Client{Root: root, Prefix: prefix}.Locate(configured)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("Locate = %+v, %v; want an error with %q", layout, err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := filepath.Join(root, tt.want)
			if c.VarDir() != want || layout.VarDir != want || layout.FoundBy != tt.how || layout.Prefix != prefix {
				t.Fatalf("Locate = %q, %+v; want %q found by %s", c.VarDir(), layout, want, tt.how)
			}
		})
	}
}

// TestFindPrefix: a client installed under /usr/local/avamar or
// /opt/avamar is found; the RPM alone in /opt/avamar (AVAMAR_RPM's default
// place) is no client.
func TestFindPrefix(t *testing.T) {
	root := t.TempDir()
	put := func(p string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(filepath.Join(root, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, p), []byte("x"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if got := FindPrefix(root); got != "" {
		t.Errorf("empty root: %q", got)
	}
	put("opt/avamar/AvamarClient-linux-sles11-x86_64-7.5.101-101.rpm")
	if got := FindPrefix(root); got != "" {
		t.Errorf("only the RPM in /opt/avamar: %q", got)
	}
	put("opt/avamar/bin/avagent.bin")
	if got := FindPrefix(root); got != "/opt/avamar" {
		t.Errorf("a client in /opt/avamar: %q", got)
	}
	put("usr/local/avamar/bin/avagent.bin")
	if got := FindPrefix(root); got != "/usr/local/avamar" {
		t.Errorf("clients in both: %q, want the RPM's own prefix first", got)
	}
}
