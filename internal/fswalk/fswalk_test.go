package fswalk

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestCheckPath(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		ok       bool
	}{
		{"/", "/", true},
		{"/data", "/data", true},
		{"/data/", "/data", true},
		{"/data/a b/c\\d", "/data/a b/c\\d", true},
		{"/data/...", "/data/...", true},
		{"/data/.hidden", "/data/.hidden", true},
		{"", "", false},
		{"data", "", false},
		{"./data", "", false},
		{"/data//x", "", false},
		{"//data", "", false},
		{"/data/.", "", false},
		{"/data/./x", "", false},
		{"/data/..", "", false},
		{"/data/../x", "", false},
		{"/..", "", false},
		{"/data/x\x00", "", false},
		{"/data/x//", "", false},
		{"/" + strings.Repeat("a", 256), "", false},
		{"/" + strings.Repeat("a/", 2100), "", false},
	} {
		got, err := CheckPath(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("CheckPath(%q) = %q, %v; want %q, ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestResolveNestedRootsAndPrefix(t *testing.T) {
	base := t.TempDir()
	for _, d := range []string{"data/inner/x", "data-evil/y"} {
		if err := os.MkdirAll(filepath.Join(base, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	rs, err := OpenRoots([]string{base + "/data", " " + base + "/data/inner/", "", base + "/data"})
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	if diff := cmp.Diff([]string{base + "/data", base + "/data/inner"}, rs.Paths()); diff != "" {
		t.Errorf("roots (-want +got):\n%s", diff)
	}
	if _, err := rs.OpenDir(base + "/data-evil"); !errors.Is(err, ErrNotFound) {
		t.Errorf("sibling with a root's name as prefix: %v, want not found", err)
	}
	d, err := rs.OpenDir(base + "/data/inner/x")
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	if _, err := OpenRoots([]string{"relative"}); err == nil {
		t.Error("relative root accepted")
	}
	if _, err := OpenRoots([]string{base + "/missing"}); err == nil {
		t.Error("missing root accepted")
	}
}

func mkfiles(t *testing.T, dir string, names map[string]int) {
	t.Helper()
	for n, size := range names {
		if err := os.WriteFile(filepath.Join(dir, n), make([]byte, size), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func list(t *testing.T, rs *Roots, p string) *Listing {
	t.Helper()
	d, err := rs.OpenDir(p)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	l, err := ReadDir(d)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func names(p Page) []string {
	var out []string
	for _, e := range p.Entries {
		out = append(out, e.Name)
	}
	return out
}

func TestPageSortAndCursor(t *testing.T) {
	dir := t.TempDir()
	mkfiles(t, dir, map[string]int{"a": 30, "b": 10, "c": 20, "d": 10, "e": 0})
	rs, err := OpenRoots([]string{dir})
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	l := list(t, rs, dir)
	for _, tc := range []struct {
		sort SortKey
		desc bool
		want []string
	}{
		{SortName, false, []string{"a", "b", "c", "d", "e"}},
		{SortName, true, []string{"e", "d", "c", "b", "a"}},
		{SortSize, false, []string{"e", "b", "d", "c", "a"}},
		{SortSize, true, []string{"a", "c", "d", "b", "e"}},
	} {
		var got []string
		cur := ""
		for range 10 {
			p, err := l.Page(tc.sort, tc.desc, cur, 2)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, names(p)...)
			if cur = p.NextCursor; cur == "" {
				break
			}
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("sort %d desc %v (-want +got):\n%s", tc.sort, tc.desc, diff)
		}
	}
	p, _ := l.Page(SortName, false, "", 2)
	if _, err := l.Page(SortSize, false, p.NextCursor, 2); !errors.Is(err, ErrBadCursor) {
		t.Errorf("cursor of another sort: %v", err)
	}
	if _, err := l.Page(SortName, false, "!!", 2); !errors.Is(err, ErrBadCursor) {
		t.Errorf("garbage cursor: %v", err)
	}
}

// TestCursorSurvivesChanges pages a directory while entries before and
// after the cursor come and go: entries present throughout are seen once.
func TestCursorSurvivesChanges(t *testing.T) {
	dir := t.TempDir()
	mkfiles(t, dir, map[string]int{"f01": 1, "f02": 1, "f03": 1, "f04": 1, "f05": 1, "f06": 1, "f07": 1, "f08": 1})
	rs, err := OpenRoots([]string{dir})
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	p1, _ := list(t, rs, dir).Page(SortName, false, "", 3)
	// Remove a listed entry and the one right after the cursor; add one
	// before the cursor and one after.
	for _, n := range []string{"f02", "f04"} {
		os.Remove(filepath.Join(dir, n))
	}
	mkfiles(t, dir, map[string]int{"f00": 1, "f05b": 1})
	p2, err := list(t, rs, dir).Page(SortName, false, p1.NextCursor, 100)
	if err != nil {
		t.Fatal(err)
	}
	got := append(names(p1), names(p2)...)
	want := []string{"f01", "f02", "f03", "f05", "f05b", "f06", "f07", "f08"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("pages across changes (-want +got):\n%s", diff)
	}
}

type collect struct {
	mu    sync.Mutex
	paths []string
	errs  []string
}

func (c *collect) Visit(_ int, dir string, e *Entry) error {
	c.mu.Lock()
	c.paths = append(c.paths, fmt.Sprintf("%s/%s %s", dir, e.Name, e.Type))
	c.mu.Unlock()
	return nil
}

func (c *collect) DirError(_ int, dir string, err error) {
	c.mu.Lock()
	c.errs = append(c.errs, dir+": "+err.Error())
	c.mu.Unlock()
}

func TestWalkAndDu(t *testing.T) {
	dir := t.TempDir()
	for _, d := range []string{"a/b/c", "a/d", "e"} {
		os.MkdirAll(filepath.Join(dir, d), 0o755)
	}
	mkfiles(t, dir, map[string]int{"a/b/c/f": 5, "a/g": 7, "h": 1})
	os.Symlink("/", filepath.Join(dir, "a/root"))
	os.Symlink("..", filepath.Join(dir, "e/up"))
	rs, err := OpenRoots([]string{dir})
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	d, err := rs.OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for _, tc := range []struct {
		depth int
		want  []string
	}{
		{0, []string{"/a dir", "/a/b dir", "/a/b/c dir", "/a/b/c/f file", "/a/d dir", "/a/g file", "/a/root symlink", "/e dir", "/e/up symlink", "/h file"}},
		{1, []string{"/a dir", "/e dir", "/h file"}},
		{2, []string{"/a dir", "/a/b dir", "/a/d dir", "/a/g file", "/a/root symlink", "/e dir", "/e/up symlink", "/h file"}},
	} {
		c := &collect{}
		if err := Walk(context.Background(), d, WalkOptions{MaxDepth: tc.depth, Workers: 3}, c); err != nil {
			t.Fatal(err)
		}
		for i := range c.paths {
			c.paths[i] = strings.TrimPrefix(c.paths[i], dir)
		}
		slices.Sort(c.paths)
		if diff := cmp.Diff(tc.want, c.paths); diff != "" {
			t.Errorf("depth %d (-want +got):\n%s", tc.depth, diff)
		}
	}
	u, err := Du(context.Background(), d, WalkOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(Usage{Files: 5, Dirs: 5, Bytes: 13 + int64(len("/")) + int64(len(".."))}, u); diff != "" {
		t.Errorf("du (-want +got):\n%s", diff)
	}
}

type failAfter struct{}

func (f *failAfter) Visit(int, string, *Entry) error {
	return errors.New("enough")
}
func (f *failAfter) DirError(int, string, error) {}

func TestWalkStopsOnVisitorError(t *testing.T) {
	dir := t.TempDir()
	for i := range 50 {
		os.MkdirAll(filepath.Join(dir, fmt.Sprint(i), "x"), 0o755)
	}
	rs, _ := OpenRoots([]string{dir})
	defer rs.Close()
	d, _ := rs.OpenDir(dir)
	defer d.Close()
	fds := func() int { e, _ := os.ReadDir("/proc/self/fd"); return len(e) }
	before := fds()
	defer func() {
		if after := fds(); after != before {
			t.Errorf("descriptors: %d before the walks, %d after", before, after)
		}
	}()
	if err := Walk(context.Background(), d, WalkOptions{Workers: 4}, &failAfter{}); err == nil || err.Error() != "enough" {
		t.Errorf("walk error = %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Walk(ctx, d, WalkOptions{Workers: 4}, &collect{}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled walk: %v", err)
	}
}
