package browse

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
)

// fixture is a tree with two roots (data, srv), a directory outside them
// with a marker that must never show up, and every kind of way out.
type fixture struct {
	base, data, srv, outside string
}

const marker = "TOPSECRET-MARKER"

func newFixture(t testing.TB) fixture {
	t.Helper()
	base := t.TempDir()
	fx := fixture{base: base, data: base + "/data", srv: base + "/srv", outside: base + "/outside"}
	for _, d := range []string{"data/html/css", "data/sub/deep/er", "srv/www", "outside/" + marker, "data-evil/" + marker} {
		must(t, os.MkdirAll(filepath.Join(base, d), 0o755))
	}
	for name, body := range map[string]string{"data/html/index.html": "<h1>hi</h1>", "data/html/css/site.css": "body{}", "data/sub/deep/er/f": "x", "outside/secret.txt": marker} {
		must(t, os.WriteFile(filepath.Join(base, name), []byte(body), 0o644))
	}
	for target, link := range map[string]string{
		"/":               "data/link-root",
		fx.srv:            "data/link-sibling-abs",
		"../srv":          "data/link-sibling-rel",
		"..":              "data/link-parent",
		"../..":           "data/html/link-grandparent",
		fx.outside:        "data/link-outside",
		"../outside":      "data/link-outside-rel",
		"loop-b":          "data/loop-a",
		"loop-a":          "data/loop-b",
		"self":            "data/self",
		"html":            "data/link-html",
		"missing":         "data/dangling",
		"/proc/self/root": "data/link-proc",
		"../data-evil":    "data/link-evil",
	} {
		must(t, os.Symlink(target, filepath.Join(base, link)))
	}
	must(t, unix.Mkfifo(fx.data+"/fifo", 0o644))
	if os.Geteuid() == 0 {
		must(t, unix.Mknod(fx.data+"/null", unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: fx.data + "/sock", Net: "unix"})
	must(t, err)
	t.Cleanup(func() { l.Close() })
	return fx
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func newServer(t *testing.T, cfg Config) (*Handler, *httptest.Server) {
	t.Helper()
	h, err := New(cfg, zerolog.New(io.Discard))
	must(t, err)
	srv := httptest.NewServer(h)
	t.Cleanup(func() {
		srv.Close()
		h.Close()
	})
	return h, srv
}

type answer struct {
	code int
	body string
}

func get(t testing.TB, srv *httptest.Server, rawURL string) answer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", srv.URL+rawURL, nil)
	must(t, err)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", rawURL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	must(t, err)
	return answer{resp.StatusCode, string(b)}
}

const (
	errInvalid = `{"error":"invalid path: want an absolute path inside a browse root, without . or .. components"}` + "\n"
	errMissing = `{"error":"not found"}` + "\n"
	errNotDir  = `{"error":"not a directory"}` + "\n"
)

// inBase is the path the API speaks for the host path p when Config.Base
// is base: p itself with no base, else p without the base in front.
func inBase(base, p string) string {
	switch {
	case base == "":
		return p
	case p == base:
		return "/"
	}
	return strings.TrimPrefix(p, base)
}

// TestHostilePaths sends every hostile path to every endpoint: none may
// answer 2xx (except /v1/stat describing a link itself), the answers are
// the fixed texts, and nothing from outside ever appears. It runs with the
// host's root as the base, and again with the fixture as the base, where
// the host paths of the roots are outside paths like any other.
func TestHostilePaths(t *testing.T) {
	fx := newFixture(t)
	for _, base := range []string{"", fx.base} {
		name := "base /"
		if base != "" {
			name = "base fixture"
		}
		t.Run(name, func(t *testing.T) { hostilePaths(t, fx, base) })
	}
}

// linkTargets matches the link_target fields: they are the links' own
// text, which the fixture makes with host paths on purpose.
var linkTargets = regexp.MustCompile(`"link_target":"[^"]*"`)

// showsHost reports whether an answer shows the base (a host path) other
// than in a link's own text.
func showsHost(body, base string) bool {
	return base != "" && strings.Contains(linkTargets.ReplaceAllString(body, ""), base)
}

func hostilePaths(t *testing.T, fx fixture, base string) {
	in := func(p string) string { return inBase(base, p) }
	_, srv := newServer(t, Config{Base: base, Roots: []string{in(fx.data), in(fx.srv)}})
	d, outside, top := in(fx.data), in(fx.outside), in(fx.base)
	type row struct {
		name   string
		query  string // the raw, already URL-encoded path= value
		want   string
		code   int
		statOK bool // /v1/stat describes the last component itself
	}
	rows := []row{
		{"dotdot raw", d + "/../outside", errInvalid, 400, false},
		{"dotdot to outside marker", d + "/../outside/" + marker, errInvalid, 400, false},
		{"dotdot encoded", d + "/%2e%2e/outside", errInvalid, 400, false},
		{"dotdot upper encoded", d + "/%2E%2E/outside", errInvalid, 400, false},
		{"dotdot half encoded", d + "/.%2e/outside", errInvalid, 400, false},
		{"dotdot double encoded", d + "/%252e%252e/outside", errMissing, 404, false},
		{"dotdot overlong utf8", d + "/%c0%ae%c0%ae/outside", errMissing, 404, false},
		{"dotdot fullwidth", d + "/%EF%BC%8E%EF%BC%8E/outside", errMissing, 404, false},
		{"dotdot one-dot leaders", d + "/%E2%80%A4%E2%80%A4/outside", errMissing, 404, false},
		{"root then dotdot", "/root/../x", errInvalid, 400, false},
		{"inside then dotdot back", d + "/html/../html", errInvalid, 400, false},
		{"trailing dotdot", d + "/html/..", errInvalid, 400, false},
		{"trailing dotdot slash", d + "/html/../", errInvalid, 400, false},
		{"only dotdot", "/..", errInvalid, 400, false},
		{"dot component", d + "/./html", errInvalid, 400, false},
		{"trailing dot", d + "/.", errInvalid, 400, false},
		{"NUL raw encoded", d + "/html%00/../../outside", errInvalid, 400, false},
		{"NUL at end", d + "%00", errInvalid, 400, false},
		{"NUL double encoded", d + "%2500", errMissing, 404, false},
		{"backslash dotdot", d + "/..%5c..%5coutside", errMissing, 404, false},
		{"backslash raw", d + `/..\outside`, errMissing, 404, false},
		{"windows style", `C:\Windows`, errInvalid, 400, false},
		{"double slash inside", d + "//html", errInvalid, 400, false},
		{"double slash lead", "/" + d, errInvalid, 400, false},
		{"double slash trailing", d + "/html//", errInvalid, 400, false},
		{"relative", "data/html", errInvalid, 400, false},
		{"relative dot", "./html", errInvalid, 400, false},
		{"relative dotdot", "../outside", errInvalid, 400, false},
		{"empty", "", errInvalid, 400, false},
		{"space only", "%20", errInvalid, 400, false},
		{"unknown root etc", "/etc", errMissing, 404, false},
		{"unknown root slash", "/", errMissing, 404, false},
		{"outside existing", outside, errMissing, 404, false},
		{"outside marker", outside + "/" + marker, errMissing, 404, false},
		{"outside missing", outside + "/nope", errMissing, 404, false},
		{"root name prefix", in(fx.base + "/data-evil"), errMissing, 404, false},
		{"root name prefix marker", in(fx.base + "/data-evil/" + marker), errMissing, 404, false},
		{"parent of roots", top, errMissing, 404, false},
		{"symlink to slash", d + "/link-root", errMissing, 404, true},
		{"through symlink to slash", d + "/link-root/etc", errMissing, 404, false},
		{"through symlink to slash passwd", d + "/link-root/etc/passwd", errMissing, 404, false},
		{"symlink to sibling root abs", d + "/link-sibling-abs", errMissing, 404, true},
		{"through sibling root abs", d + "/link-sibling-abs/www", errMissing, 404, false},
		{"symlink to sibling root rel", d + "/link-sibling-rel", errMissing, 404, true},
		{"through sibling root rel", d + "/link-sibling-rel/www", errMissing, 404, false},
		{"symlink to parent", d + "/link-parent", errMissing, 404, true},
		{"through symlink to parent", d + "/link-parent/outside", errMissing, 404, false},
		{"symlink to grandparent", d + "/html/link-grandparent", errMissing, 404, true},
		{"symlink outside abs", d + "/link-outside", errMissing, 404, true},
		{"through outside abs marker", d + "/link-outside/" + marker, errMissing, 404, false},
		{"through outside abs missing", d + "/link-outside/nope", errMissing, 404, false},
		{"through outside rel marker", d + "/link-outside-rel/" + marker, errMissing, 404, false},
		{"symlink to proc root", d + "/link-proc", errMissing, 404, true},
		{"through proc root", d + "/link-proc/etc", errMissing, 404, false},
		{"symlink to prefix sibling", d + "/link-evil", errMissing, 404, true},
		{"symlink loop", d + "/loop-a", errMissing, 404, true},
		{"through symlink loop", d + "/loop-a/x", errMissing, 404, false},
		{"self loop", d + "/self", errMissing, 404, true},
		{"dangling", d + "/dangling", errMissing, 404, true},
		{"missing inside", d + "/nope", errMissing, 404, false},
		{"through a file", d + "/html/index.html/x", errMissing, 404, false},
		{"fifo", d + "/fifo", errNotDir, 400, true},
		{"socket", d + "/sock", errNotDir, 400, true},
		{"file", d + "/html/index.html", errNotDir, 400, true},
		{"too long", d + "/" + strings.Repeat("a", 4100), errInvalid, 400, false},
		{"long component", d + "/" + strings.Repeat("a", 256), errInvalid, 400, false},
	}
	if os.Geteuid() == 0 {
		rows = append(rows, row{"char device", d + "/null", errNotDir, 400, true})
	}
	if base != "" {
		// The host paths of what lies inside: paths of the base that do not
		// exist, not a way around it.
		rows = append(rows,
			row{"host path of a root", fx.data, errMissing, 404, false},
			row{"host path inside a root", fx.data + "/html", errMissing, 404, false},
			row{"host path of a file", fx.data + "/html/index.html", errMissing, 404, false},
			row{"host path of the other root", fx.srv + "/www", errMissing, 404, false},
			row{"host path of the base", base, errMissing, 404, false},
			row{"host path dotdot", fx.data + "/../outside", errInvalid, 400, false},
		)
	}
	if len(rows) < 50 {
		t.Fatalf("only %d hostile paths", len(rows))
	}
	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			for _, ep := range []string{"/v1/files", "/v1/walk", "/v1/du", "/v1/stat"} {
				a := get(t, srv, ep+"?path="+r.query)
				if strings.Contains(a.body, marker) || strings.Contains(a.body, "secret") || strings.Contains(a.body, "passwd") ||
					showsHost(a.body, base) {
					t.Fatalf("%s leaks: %s", ep, a.body)
				}
				if ep == "/v1/stat" && r.statOK {
					if a.code != 200 {
						t.Errorf("%s: %d %s, want the entry itself", ep, a.code, a.body)
					}
					continue
				}
				want, code := r.want, r.code
				if ep == "/v1/stat" && code == 400 && want == errNotDir {
					want, code = "", 200 // stat describes files too
				}
				if want == "" {
					if a.code != code {
						t.Errorf("%s: %d %s", ep, a.code, a.body)
					}
					continue
				}
				if a.code != code || a.body != want {
					t.Errorf("%s: got %d %s, want %d %s", ep, a.code, a.body, code, want)
				}
			}
		})
	}
	// Walking and summing the whole roots follows no link out.
	for _, u := range []string{"/v1/walk?path=" + d, "/v1/du?path=" + d, "/v1/walk?path=" + in(fx.srv), "/v1/files?path=" + d + "&limit=1000"} {
		if a := get(t, srv, u); a.code != 200 || strings.Contains(a.body, marker) || strings.Contains(a.body, "secret.txt") || strings.Contains(a.body, `"path":"`+in(fx.srv)+`/www`) && strings.Contains(u, d) ||
			showsHost(a.body, base) {
			t.Errorf("%s: %d %s", u, a.code, a.body)
		}
	}
	// A path below a symlink that leads outside is refused the same way
	// whether or not the thing exists there.
	pairs := [][2]string{
		{outside + "/" + marker, outside + "/nothing-here"},
		{d + "/link-outside/" + marker, d + "/link-outside/nothing-here"},
		{d + "/link-root/etc", d + "/link-root/no-such-dir"},
		{d + "/link-parent/outside", d + "/link-parent/nothing"},
	}
	if base != "" {
		pairs = append(pairs, [2]string{fx.data + "/html", d + "/nothing-here"}, [2]string{fx.data + "/html/index.html", d + "/html/nothing-here"})
	}
	for _, p := range pairs {
		for _, ep := range []string{"/v1/files", "/v1/stat", "/v1/walk", "/v1/du"} {
			a, b := get(t, srv, ep+"?path="+p[0]), get(t, srv, ep+"?path="+p[1])
			if a != b {
				t.Errorf("%s tells %s (%v) from %s (%v)", ep, p[0], a, p[1], b)
			}
		}
	}
}

// brief renders an answer without what varies between machines and runs
// (size, mode, mtime), as canonical JSON, one line per NDJSON line, sorted:
// what is left is the paths, names, types and link targets.
func brief(t *testing.T, body string) string {
	t.Helper()
	var lines []string
	for _, line := range strings.Split(strings.TrimSuffix(body, "\n"), "\n") {
		var v any
		if err := json.Unmarshal([]byte(line), &v); err != nil {
			return body
		}
		var strip func(any)
		strip = func(v any) {
			switch v := v.(type) {
			case map[string]any:
				delete(v, "size")
				delete(v, "mode")
				delete(v, "mtime")
				for _, c := range v {
					strip(c)
				}
			case []any:
				for _, c := range v {
					strip(c)
				}
			}
		}
		strip(v)
		b, err := json.Marshal(v)
		must(t, err)
		lines = append(lines, string(b))
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// TestInRootPaths serves roots inside a base that is not "/": requests
// name paths in the base and answers show them so, and the host path of
// anything inside is refused like any other path outside the roots.
func TestInRootPaths(t *testing.T) {
	fx := newFixture(t)
	// data with its host path as the base: the root "/" is the whole base.
	_, two := newServer(t, Config{Base: fx.base, Roots: []string{"/data", " /srv/ ", "/data"}})
	_, whole := newServer(t, Config{Base: fx.data + "/", Roots: []string{"/"}})
	const (
		html = `{"entries":[{"link_target":"","name":"css","type":"dir"},{"link_target":"","name":"index.html","type":"file"},{"link_target":"../..","name":"link-grandparent","type":"symlink"}],"next_cursor":"","path":%q,"total":3}`
		walk = `{"link_target":"","name":"css","path":"%[1]s/css","type":"dir"}
{"link_target":"","name":"index.html","path":"%[1]s/index.html","type":"file"}
{"link_target":"","name":"site.css","path":"%[1]s/css/site.css","type":"file"}
{"link_target":"../..","name":"link-grandparent","path":"%[1]s/link-grandparent","type":"symlink"}`
	)
	for _, tc := range []struct {
		name string
		srv  *httptest.Server
		url  string
		code int
		want string
	}{
		{"roots", two, "/v1/roots", 200, `{"roots":["/data","/srv"]}`},
		{"files", two, "/v1/files?path=/data/html", 200, fmt.Sprintf(html, "/data/html")},
		{"files trailing slash", two, "/v1/files?path=/data/html/", 200, fmt.Sprintf(html, "/data/html")},
		{"files other root", two, "/v1/files?path=/srv", 200, `{"entries":[{"link_target":"","name":"www","type":"dir"}],"next_cursor":"","path":"/srv","total":1}`},
		{"stat root", two, "/v1/stat?path=/data", 200, `{"link_target":"","name":"data","path":"/data","type":"dir"}`},
		{"stat file", two, "/v1/stat?path=/data/html/index.html", 200, `{"link_target":"","name":"index.html","path":"/data/html/index.html","type":"file"}`},
		{"stat link", two, "/v1/stat?path=/data/link-html", 200, `{"link_target":"html","name":"link-html","path":"/data/link-html","target_type":"dir","type":"symlink"}`},
		{"walk", two, "/v1/walk?path=/data/html", 200, fmt.Sprintf(walk, "/data/html")},
		{"walk through a link inside", two, "/v1/walk?path=/data/link-html", 200, fmt.Sprintf(walk, "/data/link-html")},
		{"du", two, "/v1/du?path=/data/html", 200, `{"bytes":22,"dirs":1,"files":3,"path":"/data/html"}`},
		{"not a root", two, "/v1/files?path=/", 404, errMissing},
		{"outside", two, "/v1/files?path=/outside", 404, errMissing},
		{"missing", two, "/v1/files?path=/data/nope", 404, errMissing},
		{"host path of a root", two, "/v1/files?path=" + fx.data, 404, errMissing},
		{"host path inside", two, "/v1/files?path=" + fx.data + "/html", 404, errMissing},
		{"host path stat", two, "/v1/stat?path=" + fx.data + "/html/index.html", 404, errMissing},
		{"host path walk", two, "/v1/walk?path=" + fx.srv, 404, errMissing},
		{"host path du", two, "/v1/du?path=" + fx.data, 404, errMissing},
		{"host path invalid", two, "/v1/files?path=" + fx.data + "/../outside", 400, errInvalid},
		{"whole roots", whole, "/v1/roots", 200, `{"roots":["/"]}`},
		{"whole files", whole, "/v1/files?path=/html", 200, fmt.Sprintf(html, "/html")},
		{"whole stat", whole, "/v1/stat?path=/", 200, `{"link_target":"","name":"","path":"/","type":"dir"}`},
		{"whole stat file", whole, "/v1/stat?path=/html/index.html", 200, `{"link_target":"","name":"index.html","path":"/html/index.html","type":"file"}`},
		{"whole walk", whole, "/v1/walk?path=/html", 200, fmt.Sprintf(walk, "/html")},
		{"whole du", whole, "/v1/du?path=/html", 200, `{"bytes":22,"dirs":1,"files":3,"path":"/html"}`},
		{"whole host path", whole, "/v1/files?path=" + fx.data + "/html", 404, errMissing},
		{"whole link out", whole, "/v1/files?path=/link-parent", 404, errMissing},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := get(t, tc.srv, tc.url)
			want := tc.want
			if tc.code == 200 {
				want = brief(t, want)
				a.body = brief(t, a.body)
			}
			if a.code != tc.code || a.body != want {
				t.Errorf("got %d\n%s\nwant %d\n%s", a.code, a.body, tc.code, want)
			}
		})
	}
	// The page and the status show the roots as configured.
	h, err := New(Config{Base: fx.base, Roots: []string{"/srv", "/data"}}, zerolog.New(io.Discard))
	must(t, err)
	defer h.Close()
	if diff := cmp.Diff([]string{"/data", "/srv"}, h.Status().Roots); diff != "" {
		t.Errorf("status roots (-want +got):\n%s", diff)
	}
	for _, bad := range []Config{{Base: "relative", Roots: []string{"/data"}}, {Base: fx.base, Roots: []string{"data"}}, {Base: fx.base, Roots: []string{"/missing"}}} {
		if h, err := New(bad, zerolog.New(io.Discard)); err == nil {
			h.Close()
			t.Errorf("New(%+v) did not fail", bad)
		}
	}
}

// TestSymlinkSwapRace flips a symlink between a directory inside and one
// outside while requests go through it: none may ever see the outside.
func TestSymlinkSwapRace(t *testing.T) {
	fx := newFixture(t)
	_, srv := newServer(t, Config{Roots: []string{fx.data}, CacheDirs: -1})
	flip := fx.data + "/flip"
	must(t, os.Symlink("html", flip))
	stop := make(chan struct{})
	flipped := make(chan int)
	go func() {
		n := 0
		defer func() { flipped <- n }()
		targets := []string{"html", fx.outside, "sub", "../outside"}
		for {
			select {
			case <-stop:
				return
			default:
			}
			tmp := fx.data + "/.flip-tmp"
			os.Remove(tmp)
			if os.Symlink(targets[n%len(targets)], tmp) == nil && os.Rename(tmp, flip) == nil {
				n++
			}
		}
	}()
	codes := map[int]int{}
	for i := range 400 {
		for _, u := range []string{"/v1/files?path=" + flip, "/v1/walk?path=" + flip, "/v1/stat?path=" + flip + "/" + marker, "/v1/du?path=" + flip} {
			a := get(t, srv, u)
			codes[a.code]++
			if strings.Contains(a.body, marker) || strings.Contains(a.body, "secret.txt") {
				t.Fatalf("request %d %s saw outside: %s", i, u, a.body)
			}
		}
	}
	close(stop)
	n := <-flipped
	t.Logf("flips %d, answers by code %v", n, codes)
	if n < 10 || codes[200] == 0 || codes[404] == 0 {
		t.Errorf("the race was not exercised: flips %d, codes %v", n, codes)
	}
}

func listPage(t *testing.T, srv *httptest.Server, q string) Page {
	t.Helper()
	a := get(t, srv, "/v1/files?"+q)
	if a.code != 200 {
		t.Fatalf("files %s: %d %s", q, a.code, a.body)
	}
	var p Page
	must(t, json.Unmarshal([]byte(a.body), &p))
	return p
}

func entryNames(p Page) []string {
	var out []string
	for _, e := range p.Entries {
		out = append(out, e.Name)
	}
	return out
}

// TestCacheNeverStale changes a cached directory in every way and lists
// it right after each change returns: no wait, no retry.
func TestCacheNeverStale(t *testing.T) {
	fx := newFixture(t)
	h, srv := newServer(t, Config{Roots: []string{fx.data}, CacheTTL: -1})
	dir := fx.data + "/sub"
	q := "path=" + dir
	list := func() Page { return listPage(t, srv, q) }
	if diff := cmp.Diff([]string{"deep"}, entryNames(list())); diff != "" {
		t.Fatal(diff)
	}
	list()
	if st := h.Status().Cache; st.Hits < 1 || st.Misses != 1 || st.Dirs != 1 {
		t.Fatalf("second listing not from the cache: %+v", st)
	}
	steps := []struct {
		name   string
		change func()
		want   []string
	}{
		{"create", func() { must(t, os.WriteFile(dir+"/new", []byte("1"), 0o644)) }, []string{"deep", "new"}},
		{"rename", func() { must(t, os.Rename(dir+"/new", dir+"/renamed")) }, []string{"deep", "renamed"}},
		{"mkdir", func() { must(t, os.Mkdir(dir+"/d2", 0o755)) }, []string{"d2", "deep", "renamed"}},
		{"remove", func() { must(t, os.Remove(dir+"/d2")) }, []string{"deep", "renamed"}},
		{"move in", func() { must(t, os.Rename(fx.data+"/html/css", dir+"/css")) }, []string{"css", "deep", "renamed"}},
		{"move out", func() { must(t, os.Rename(dir+"/css", fx.data+"/css")) }, []string{"deep", "renamed"}},
	}
	for _, s := range steps {
		s.change()
		if diff := cmp.Diff(s.want, entryNames(list())); diff != "" {
			t.Fatalf("after %s (-want +got):\n%s", s.name, diff)
		}
		list() // cached again
	}
	// Size and mode changes of an entry.
	must(t, os.WriteFile(dir+"/renamed", []byte("12345"), 0o644))
	if p := list(); p.Entries[1].Size != 5 {
		t.Fatalf("size after write: %+v", p.Entries[1])
	}
	must(t, os.Chmod(dir+"/renamed", 0o600))
	if p := list(); p.Entries[1].Mode != "0600" {
		t.Fatalf("mode after chmod: %+v", p.Entries[1])
	}
	// The directory itself replaced by another one at the same path.
	must(t, os.Rename(dir, fx.data+"/sub-old"))
	must(t, os.Mkdir(dir, 0o755))
	must(t, os.WriteFile(dir+"/fresh", nil, 0o644))
	if diff := cmp.Diff([]string{"fresh"}, entryNames(list())); diff != "" {
		t.Fatalf("replaced directory (-want +got):\n%s", diff)
	}
	// Removed: not found, not a stale page.
	must(t, os.RemoveAll(dir))
	if a := get(t, srv, "/v1/files?"+q); a.code != 404 {
		t.Fatalf("removed directory: %d %s", a.code, a.body)
	}
	if st := h.Status().Cache; st.Invalidations < 8 {
		t.Errorf("invalidations %d", st.Invalidations)
	}
}

func TestCacheEvictsAndUnwatches(t *testing.T) {
	fx := newFixture(t)
	h, srv := newServer(t, Config{Roots: []string{fx.data}, CacheDirs: 2})
	for _, p := range []string{"/html", "/sub", "/sub/deep", "/html", "/sub/deep/er"} {
		listPage(t, srv, "path="+fx.data+p)
	}
	if st := h.Status().Cache; st.Dirs != 2 || st.Misses != 5 || st.Bytes <= 0 {
		t.Errorf("LRU of 2: %+v", st)
	}

	// A byte budget smaller than one big listing: served, never kept.
	h, srv = newServer(t, Config{Roots: []string{fx.data}, CacheBytes: 20000})
	big := fx.data + "/big"
	must(t, os.Mkdir(big, 0o755))
	for i := range 500 {
		must(t, os.WriteFile(filepath.Join(big, "some-long-file-name-"+itoa(i)), nil, 0o644))
	}
	for range 2 {
		if p := listPage(t, srv, "path="+big); p.Total != 500 {
			t.Fatalf("total %d", p.Total)
		}
	}
	listPage(t, srv, "path="+fx.data+"/html")
	listPage(t, srv, "path="+fx.data+"/html")
	if st := h.Status().Cache; st.Dirs != 1 || st.Misses != 3 || st.Hits != 1 || st.Bytes > 20000 {
		t.Errorf("budget of 20000 bytes: %+v", st)
	}
}

func TestPagingLimitsAndErrors(t *testing.T) {
	fx := newFixture(t)
	_, srv := newServer(t, Config{Roots: []string{fx.data}, MaxLimit: 5, MaxWalkDepth: 3})
	for i := range 12 {
		must(t, os.WriteFile(filepath.Join(fx.data, "sub", "f"+string(rune('a'+i))), make([]byte, 12-i), 0o644))
	}
	var got []string
	q := "path=" + fx.data + "/sub&sort=size&order=desc&limit=5"
	p := listPage(t, srv, q)
	for ; ; p = listPage(t, srv, q+"&cursor="+p.NextCursor) {
		got = append(got, entryNames(p)...)
		if p.Total != 13 {
			t.Fatalf("total %d", p.Total)
		}
		if p.NextCursor == "" {
			break
		}
	}
	want := []string{"deep", "fa", "fb", "fc", "fd", "fe", "ff", "fg", "fh", "fi", "fj", "fk", "fl"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("size desc pages (-want +got):\n%s", diff)
	}
	for u, code := range map[string]int{
		"/v1/files?path=" + fx.data + "&limit=6":    400,
		"/v1/files?path=" + fx.data + "&limit=0":    400,
		"/v1/files?path=" + fx.data + "&limit=x":    400,
		"/v1/files?path=" + fx.data + "&sort=owner": 400,
		"/v1/files?path=" + fx.data + "&order=up":   400,
		"/v1/files?path=" + fx.data + "&cursor=zz":  400,
		"/v1/walk?path=" + fx.data + "&max_depth=4": 400,
		"/v1/walk?path=" + fx.data + "&max_depth=0": 400,
		"/v1/walk?path=" + fx.data + "&max_depth=3": 200,
		"/v1/nothing": 404,
		"/v1/files?path=" + fx.data + "&sort=mtime&order=desc": 200,
	} {
		if a := get(t, srv, u); a.code != code || !strings.HasPrefix(a.body, "{") {
			t.Errorf("%s: %d %s, want %d", u, a.code, a.body, code)
		}
	}
	resp, err := srv.Client().Post(srv.URL+"/v1/files?path="+fx.data, "text/plain", nil)
	must(t, err)
	resp.Body.Close()
	if resp.StatusCode != 405 {
		t.Errorf("POST: %d", resp.StatusCode)
	}
}

func TestWalkStreamsEveryEntry(t *testing.T) {
	fx := newFixture(t)
	_, srv := newServer(t, Config{Roots: []string{fx.data}, WalkWorkers: 3})
	// Enough entries to cross several chunks.
	big := fx.data + "/big"
	must(t, os.Mkdir(big, 0o755))
	want := []string{}
	for i := range 3000 {
		n := filepath.Join(big, strings.Repeat("n", 40)+string(rune('a'+i%26))+itoa(i))
		must(t, os.WriteFile(n, nil, 0o644))
		want = append(want, n)
	}
	a := get(t, srv, "/v1/walk?path="+big)
	var got []string
	for _, line := range strings.Split(strings.TrimSuffix(a.body, "\n"), "\n") {
		var e struct {
			Path string `json:"path"`
			Type string `json:"type"`
		}
		must(t, json.Unmarshal([]byte(line), &e))
		got = append(got, e.Path)
	}
	slices.Sort(got)
	slices.Sort(want)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("walk (-want +got):\n%s", diff)
	}
	a = get(t, srv, "/v1/du?path="+fx.data+"/sub")
	if a.body != `{"path":"`+fx.data+`/sub","files":1,"dirs":2,"bytes":1}`+"\n" {
		t.Errorf("du: %s", a.body)
	}
}

func itoa(i int) string {
	b, _ := json.Marshal(i)
	return string(b)
}

func TestBrowseOff(t *testing.T) {
	h, srv := newServer(t, Config{})
	for _, u := range []string{"/", "/v1/roots", "/v1/files?path=/", "/v1/walk?path=/", "/v1/du?path=/", "/v1/stat?path=/"} {
		if a := get(t, srv, u); a.code != 404 || a.body != `{"error":"browse is off"}`+"\n" {
			t.Errorf("%s: %d %s", u, a.code, a.body)
		}
	}
	if st := h.Status(); st.Enabled || st.Requests["404"] != 6 {
		t.Errorf("status %+v", st)
	}
}

// TestAccess exercises the access rule through the handler with the
// remote address set by hand; TestAccessRealSockets does it over TCP.
func TestAccess(t *testing.T) {
	fx := newFixture(t)
	tokenFile := filepath.Join(t.TempDir(), "token")
	must(t, os.WriteFile(tokenFile, []byte("s3cret\n"), 0o600))
	open, err := New(Config{Roots: []string{fx.data}}, zerolog.New(io.Discard))
	must(t, err)
	defer open.Close()
	tok, err := New(Config{Roots: []string{fx.data}, TokenFile: tokenFile}, zerolog.New(io.Discard))
	must(t, err)
	defer tok.Close()
	do := func(h *Handler, remote, host, auth string) int {
		r := httptest.NewRequest("GET", "/v1/files?path="+fx.data, nil)
		r.RemoteAddr, r.Host = remote, host
		if auth != "" {
			r.Header.Set("Authorization", auth)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w.Code
	}
	for _, tc := range []struct {
		name               string
		h                  *Handler
		remote, host, auth string
		want               int
	}{
		{"loopback v4", open, "127.0.0.1:5000", "127.0.0.1:9180", "", 200},
		{"loopback v6", open, "[::1]:5000", "localhost:9180", "", 200},
		{"loopback other 127/8", open, "127.9.9.9:5000", "[::1]:9180", "", 403},
		{"istio passthrough", open, "127.0.0.6:5000", "127.0.0.1:9180", "", 403},
		{"v4-mapped loopback", open, "[::ffff:127.0.0.1]:5000", "localhost", "", 200},
		{"remote without token file", open, "10.1.2.3:5000", "10.0.0.7:9180", "", 403},
		{"remote bearer but no token file", open, "10.1.2.3:5000", "10.0.0.7:9180", "Bearer s3cret", 403},
		{"rebinding host name on loopback", open, "127.0.0.1:5000", "evil.example:9180", "", 403},
		{"loopback needs the token too", tok, "127.0.0.1:5000", "localhost", "", 401},
		{"loopback wrong token", tok, "[::1]:5000", "localhost", "Bearer nope", 401},
		{"loopback with token", tok, "127.0.0.1:5000", "localhost", "Bearer s3cret", 200},
		{"remote no header", tok, "10.1.2.3:5000", "pod:9180", "", 401},
		{"remote wrong token", tok, "10.1.2.3:5000", "pod:9180", "Bearer nope", 401},
		{"remote token prefix", tok, "10.1.2.3:5000", "pod:9180", "Bearer s3cre", 401},
		{"remote basic", tok, "10.1.2.3:5000", "pod:9180", "Basic czNjcmV0", 401},
		{"remote right token", tok, "10.1.2.3:5000", "pod:9180", "Bearer s3cret", 200},
		{"rebinding with token", tok, "127.0.0.1:5000", "evil.example", "Bearer s3cret", 200},
	} {
		if got := do(tc.h, tc.remote, tc.host, tc.auth); got != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, got, tc.want)
		}
	}
	// Rotation: the file is read at each request.
	must(t, os.WriteFile(tokenFile+".new", []byte("rotated"), 0o600))
	must(t, os.Rename(tokenFile+".new", tokenFile))
	if got := do(tok, "10.1.2.3:5000", "pod", "Bearer s3cret"); got != 401 {
		t.Errorf("old token after rotation: %d", got)
	}
	if got := do(tok, "10.1.2.3:5000", "pod", "Bearer rotated"); got != 200 {
		t.Errorf("new token after rotation: %d", got)
	}
	must(t, os.WriteFile(tokenFile, nil, 0o600))
	if got := do(tok, "10.1.2.3:5000", "pod", "Bearer "); got != 401 {
		t.Errorf("empty token file matched: %d", got)
	}
	st := tok.Status()
	if !st.Token || st.Requests["401"] == 0 || st.Requests["200"] == 0 {
		t.Errorf("status %+v", st)
	}
}

// TestCacheOverflowDropsEverything queues more events than the kernel keeps
// (fs.inotify.max_queued_events) while nobody lists: the next listing sees
// the overflow, drops every cached listing and reads fresh.
func TestCacheOverflowDropsEverything(t *testing.T) {
	b, err := os.ReadFile("/proc/sys/fs/inotify/max_queued_events")
	must(t, err)
	var max int
	must(t, json.Unmarshal([]byte(strings.TrimSpace(string(b))), &max))
	if max > 100000 {
		t.Skipf("max_queued_events %d is too large to overflow quickly", max)
	}
	fx := newFixture(t)
	h, srv := newServer(t, Config{Roots: []string{fx.data}, CacheTTL: -1})
	dir := fx.data + "/sub"
	must(t, os.WriteFile(dir+"/x", nil, 0o644))
	listPage(t, srv, "path="+dir)
	listPage(t, srv, "path="+fx.data+"/html")
	// Alternate two names so the kernel cannot merge consecutive events.
	for i := range max + 10 {
		must(t, os.Chmod(filepath.Join(dir, []string{"deep", "x"}[i%2]), 0o755))
	}
	must(t, os.WriteFile(dir+"/after", nil, 0o644))
	if diff := cmp.Diff([]string{"after", "deep", "x"}, entryNames(listPage(t, srv, "path="+dir))); diff != "" {
		t.Fatalf("after overflow (-want +got):\n%s", diff)
	}
	st := h.Status().Cache
	if st.Overflows != 1 || st.Misses != 3 {
		t.Errorf("overflow: %+v", st)
	}
	listPage(t, srv, "path="+fx.data+"/html")
	if st := h.Status().Cache; st.Misses != 4 {
		t.Errorf("other directory kept across an overflow: %+v", st)
	}
}

// TestCacheConcurrent lists while files appear, from several clients at
// once; when the writer is done, the very next listing has everything.
func TestCacheConcurrent(t *testing.T) {
	fx := newFixture(t)
	h, srv := newServer(t, Config{Roots: []string{fx.data}, CacheTTL: -1, CacheDirs: 2})
	dirs := []string{fx.data + "/sub", fx.data + "/html", fx.data + "/sub/deep"}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 100 {
			os.WriteFile(filepath.Join(dirs[i%3], "n"+itoa(i)), nil, 0o644)
		}
	}()
	errs := make(chan error, 4)
	for g := range 4 {
		go func() {
			for i := range 100 {
				u := srv.URL + "/v1/files?path=" + dirs[(g+i)%3] + "&limit=" + itoa(1+i%3)
				resp, err := srv.Client().Get(u)
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				if err == nil && resp.StatusCode != 200 {
					err = fmt.Errorf("%s: %d", u, resp.StatusCode)
				}
				if err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	<-done
	total := 0
	for _, d := range dirs {
		total += listPage(t, srv, "path="+d+"&limit=1000").Total
	}
	if total != 100+5 { // plus deep; css, index.html, link-grandparent; er
		t.Errorf("after the writer: %d entries", total)
	}
	if st := h.Status().Cache; st.Dirs > 2 || st.Bytes < 0 {
		t.Errorf("cache %+v", st)
	}
}

// TestWalkOutlastsWriteTimeout: a server-wide WriteTimeout shorter than
// the walk does not cut the stream.
func TestWalkOutlastsWriteTimeout(t *testing.T) {
	fx := newFixture(t)
	h, err := New(Config{Roots: []string{fx.data}, WalkWorkers: 1}, zerolog.New(io.Discard))
	must(t, err)
	defer h.Close()
	srv := httptest.NewUnstartedServer(h)
	srv.Config.WriteTimeout = time.Nanosecond
	srv.Start()
	defer srv.Close()
	a := get(t, srv, "/v1/walk?path="+fx.data)
	if a.code != 200 || !strings.Contains(a.body, `/sub/deep/er/f","name":"f"`) {
		t.Errorf("walk under WriteTimeout: %d %q", a.code, a.body)
	}
}

func TestRunClosesOnCancel(t *testing.T) {
	fx := newFixture(t)
	h, srv := newServer(t, Config{Roots: []string{fx.data}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	listPage(t, srv, "path="+fx.data)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if a := get(t, srv, "/v1/files?path="+fx.data); a.code == 200 {
		t.Errorf("served after Run ended: %s", a.body)
	}
	if err := h.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// TestNonUTF8Names: names that are not UTF-8 keep their exact bytes
// through every endpoint, two of them never merge, and a directory with
// such a name opens again by path_b64= and by percent-encoded path=.
func TestNonUTF8Names(t *testing.T) {
	fx := newFixture(t)
	_, srv := newServer(t, Config{Base: fx.base, Roots: []string{"/data"}})
	d := fx.data + "/odd"
	must(t, os.MkdirAll(d+"/dir\xffsub", 0o755))
	for _, n := range []string{"bad\xff", "bad\xfe", "dir\xffsub/in\xfe"} {
		must(t, os.WriteFile(filepath.Join(d, n), []byte("abc"), 0o644))
	}
	must(t, os.Symlink("t\xfe", d+"/link"))

	var p Page
	must(t, json.Unmarshal([]byte(get(t, srv, "/v1/files?path=/data/odd").body), &p))
	var names []string
	for _, e := range p.Entries {
		n, err := e.RawName()
		must(t, err)
		names = append(names, n)
		if tgt, _ := e.RawLinkTarget(); e.Name == "link" && tgt != "t\xfe" {
			t.Errorf("link target %q", tgt)
		}
	}
	if diff := cmp.Diff([]string{"bad\xfe", "bad\xff", "dir\xffsub", "link"}, names); diff != "" {
		t.Fatalf("names (-want +got):\n%s", diff)
	}

	sub := "/data/odd/dir\xffsub"
	b64 := base64.StdEncoding.EncodeToString([]byte(sub))
	for _, q := range []string{"path=" + url.QueryEscape(sub), "path_b64=" + url.QueryEscape(b64), "path_b64=" + base64.RawURLEncoding.EncodeToString([]byte(sub))} {
		a := get(t, srv, "/v1/files?"+q)
		must(t, json.Unmarshal([]byte(a.body), &p))
		if pp, _ := p.RawPath(); a.code != 200 || pp != sub || p.PathB64 != b64 || len(p.Entries) != 1 || p.Entries[0].NameB64 == "" {
			t.Errorf("files %s: %d %s", q, a.code, a.body)
		}
		var e Entry
		a = get(t, srv, "/v1/walk?"+q)
		must(t, json.Unmarshal([]byte(a.body), &e))
		if ep, _ := e.RawPath(); a.code != 200 || ep != sub+"/in\xfe" {
			t.Errorf("walk %s: %d %s", q, a.code, a.body)
		}
		a = get(t, srv, "/v1/stat?"+q)
		must(t, json.Unmarshal([]byte(a.body), &e))
		if ep, _ := e.RawPath(); a.code != 200 || ep != sub || e.Type != "dir" {
			t.Errorf("stat %s: %d %s", q, a.code, a.body)
		}
		var u Usage
		a = get(t, srv, "/v1/du?"+q)
		must(t, json.Unmarshal([]byte(a.body), &u))
		if a.code != 200 || u.PathB64 != b64 || u.Files != 1 || u.Bytes != 3 {
			t.Errorf("du %s: %d %s", q, a.code, a.body)
		}
	}
	for _, q := range []string{"path_b64=!!", "path=/data&path_b64=L2RhdGE=", "path_b64=" + base64.StdEncoding.EncodeToString([]byte("/data/../outside"))} {
		if a := get(t, srv, "/v1/files?"+q); a.code != 400 || a.body != errInvalid {
			t.Errorf("%s: %d %s", q, a.code, a.body)
		}
	}
}

// TestAccessRealSockets connects from real loopback addresses: a client
// bound to 127.0.0.6 (where Istio forwards outside traffic from) is refused
// without a token file; with a token file, 127.0.0.1 itself needs the
// token and is served with it.
func TestAccessRealSockets(t *testing.T) {
	fx := newFixture(t)
	tokenFile := filepath.Join(t.TempDir(), "token")
	must(t, os.WriteFile(tokenFile, []byte("s3cret\n"), 0o600))
	_, open := newServer(t, Config{Roots: []string{fx.data}})
	_, tok := newServer(t, Config{Roots: []string{fx.data}, TokenFile: tokenFile})
	from := func(ip string) *http.Client {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 10 * time.Second}
		return &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DialContext: d.DialContext}}
	}
	do := func(c *http.Client, srv *httptest.Server, auth string) (int, string) {
		req, err := http.NewRequest("GET", srv.URL+"/v1/files?path="+fx.data, nil)
		must(t, err)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := c.Do(req)
		must(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		must(t, err)
		return resp.StatusCode, string(b)
	}
	for _, tc := range []struct {
		name, from string
		srv        *httptest.Server
		auth       string
		want       int
	}{
		{"127.0.0.1 without token file", "127.0.0.1", open, "", 200},
		{"127.0.0.6 without token file", "127.0.0.6", open, "", 403},
		{"127.0.0.6 with a bearer but no token file", "127.0.0.6", open, "Bearer s3cret", 403},
		{"127.0.0.1 without the token", "127.0.0.1", tok, "", 401},
		{"127.0.0.1 with the token", "127.0.0.1", tok, "Bearer s3cret", 200},
		{"127.0.0.6 with the token", "127.0.0.6", tok, "Bearer s3cret", 200},
	} {
		if code, body := do(from(tc.from), tc.srv, tc.auth); code != tc.want {
			t.Errorf("%s: %d %s, want %d", tc.name, code, body, tc.want)
		}
	}
	// With a token file the page, which holds no data, is served without
	// the token (the token is typed into it); nothing else is.
	for path, want := range map[string]int{"/": 200, "/v1/roots": 401} {
		resp, err := from("127.0.0.6").Get(tok.URL + path)
		must(t, err)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("%s from 127.0.0.6 without the token: %d, want %d", path, resp.StatusCode, want)
		}
	}
	if resp, err := from("127.0.0.6").Get(open.URL + "/"); err != nil || resp.StatusCode != 403 {
		t.Errorf("the page from 127.0.0.6 without a token file: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
}

// TestTargetType: a symlink's target_type tells what it leads to inside
// its root, and nothing for every way out, which all look alike.
func TestTargetType(t *testing.T) {
	fx := newFixture(t)
	must(t, os.Symlink("html/index.html", fx.data+"/link-file"))
	must(t, os.Symlink("fifo", fx.data+"/link-fifo"))
	_, srv := newServer(t, Config{Base: fx.base, Roots: []string{"/data", "/srv"}})
	got := map[string]string{}
	for _, e := range listPage(t, srv, "path=/data&limit=100").Entries {
		if e.Type == "symlink" {
			got[e.Name] = e.TargetType
		}
	}
	want := map[string]string{
		"link-html": "dir", "link-file": "file", "link-fifo": "other",
		"dangling": "", "link-root": "", "link-parent": "", "link-outside": "", "link-outside-rel": "",
		"link-sibling-abs": "", "link-sibling-rel": "", "link-evil": "", "link-proc": "", "loop-a": "", "loop-b": "", "self": "",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("target types (-want +got):\n%s", diff)
	}
	var e Entry
	must(t, json.Unmarshal([]byte(get(t, srv, "/v1/stat?path=/data/link-file").body), &e))
	if e.TargetType != "file" {
		t.Errorf("stat of link-file: %+v", e)
	}
}
