package fswalk

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// fuzzFixture is a root with every kind of way out next to a directory
// whose contents must never be seen.
func fuzzFixture(tb testing.TB) (base, root string) {
	tb.Helper()
	base = tb.TempDir()
	root = filepath.Join(base, "root")
	for _, d := range []string{"root/a/b", "outside/TOPSECRET", "root-evil/TOPSECRET"} {
		if err := os.MkdirAll(filepath.Join(base, d), 0o755); err != nil {
			tb.Fatal(err)
		}
	}
	for target, link := range map[string]string{
		"../outside":                   "root/rel-out",
		filepath.Join(base, "outside"): "root/abs-out",
		"/":                            "root/slash",
		"..":                           "root/up",
		"../../..":                     "root/a/b/upup",
		"loop":                         "root/loop",
		"b":                            "root/a/inside",
		"../root-evil":                 "root/evil",
	} {
		if err := os.Symlink(target, filepath.Join(base, link)); err != nil {
			tb.Fatal(err)
		}
	}
	return base, root
}

func checkResolve(t *testing.T, rs *Roots, root, p string) {
	d, err := rs.OpenDir(p)
	if err == nil {
		real, rerr := os.Readlink("/proc/self/fd/" + strconv.Itoa(d.FD()))
		d.Close()
		if rerr != nil {
			t.Fatal(rerr)
		}
		if real != root && !strings.HasPrefix(real, root+"/") {
			t.Fatalf("OpenDir(%q) opened %s, outside %s", p, real, root)
		}
	} else if !errors.Is(err, ErrInvalidPath) && !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrNotDir) && !errors.Is(err, ErrPermission) {
		t.Fatalf("OpenDir(%q): unexpected error %v", p, err)
	}
	e, err := rs.Stat(p)
	if err == nil && e.Name == "TOPSECRET" {
		t.Fatalf("Stat(%q) described something outside", p)
	}
}

// FuzzResolve feeds arbitrary paths, alone and below the root: whatever
// opens must be inside the root, and errors are only the package's own.
func FuzzResolve(f *testing.F) {
	base, root := fuzzFixture(f)
	rs, err := OpenRoots([]string{root})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { rs.Close() })
	for _, s := range []string{
		"", "a", "a/b", "rel-out", "rel-out/TOPSECRET", "abs-out/TOPSECRET", "slash/etc",
		"up/outside", "a/b/upup", "loop", "a/inside", "evil/TOPSECRET", "../outside",
		"a/../../outside", "a/./b", "a//b", "a/b/", "%2e%2e", "..\\outside", "a\x00b",
		"\xc0\xae\xc0\xae/outside", root[1:], base + "/outside", base + "/root-evil",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		checkResolve(t, rs, root, s)
		checkResolve(t, rs, root, root+"/"+s)
	})
}
