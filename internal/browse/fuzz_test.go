package browse

import (
	"encoding/base64"
	"io"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/avsidecar/avsidecar/internal/fswalk"
	"github.com/rs/zerolog"
)

// shownPaths matches the "path" fields of an answer.
var shownPaths = regexp.MustCompile(`"path":"([^"]*)"`)

// FuzzInRootPath sends arbitrary paths, as path= and as path_b64=, to
// every endpoint of a handler whose base is not "/": as they come, below a
// root, and below the host path of a root. Whatever is answered lies in the root the request named
// and is shown as a path in the base; a host path is never served;
// refusals are the fixed texts; nothing from outside appears.
func FuzzInRootPath(f *testing.F) {
	fx := newFixture(f)
	h, err := New(Config{Base: fx.base, Roots: []string{"/data", "/srv"}}, zerolog.New(io.Discard))
	must(f, err)
	f.Cleanup(func() { h.Close() })
	for _, s := range []string{
		"", "/", "/data", "/srv/www", "html", "html/css", "link-html", "link-root/etc", "link-parent/outside",
		"link-outside/" + marker, "link-sibling-abs/www", "link-proc/etc", "link-evil", "loop-a/x", "fifo",
		"../outside", "html/../../outside", "./html", "html//css", "html/", "%2e%2e", "..\\outside", "html\x00",
		"\xc0\xae\xc0\xae/outside", fx.data, fx.outside, fx.base, fx.data[1:], "/outside/" + marker,
	} {
		f.Add(s)
	}
	allowed := map[string]bool{errInvalid: true, errMissing: true, errNotDir: true}
	f.Fuzz(func(t *testing.T, s string) {
		for _, p := range []string{s, "/data/" + s, fx.data + "/" + s} {
			clean, cerr := fswalk.CheckPath(p)
			for _, ep := range []string{"/v1/files", "/v1/stat", "/v1/walk", "/v1/du"} {
				r := httptest.NewRequest("GET", ep+"?path="+url.QueryEscape(p), nil)
				r.RemoteAddr, r.Host = "127.0.0.1:1", "127.0.0.1"
				w := httptest.NewRecorder()
				h.ServeHTTP(w, r)
				body := w.Body.String()
				// The same path by its bytes in base64 gets the same answer
				// (walks come in no order: compared for du, files and stat).
				r = httptest.NewRequest("GET", ep+"?path_b64="+url.QueryEscape(base64.StdEncoding.EncodeToString([]byte(p))), nil)
				r.RemoteAddr, r.Host = "127.0.0.1:1", "127.0.0.1"
				w64 := httptest.NewRecorder()
				h.ServeHTTP(w64, r)
				if w64.Code != w.Code || ep != "/v1/walk" && w64.Body.String() != body {
					t.Fatalf("%s %q: path= %d %s, path_b64= %d %s", ep, p, w.Code, body, w64.Code, w64.Body.String())
				}
				if strings.Contains(body, marker) || strings.Contains(body, "secret") || showsHost(body, fx.base) {
					t.Fatalf("%s %q leaks: %s", ep, p, body)
				}
				if w.Code != 200 {
					if !allowed[body] {
						t.Fatalf("%s %q: %d %s", ep, p, w.Code, body)
					}
					continue
				}
				if cerr != nil || !inRoot(clean, "/data") && !inRoot(clean, "/srv") {
					t.Fatalf("%s %q answered 200 outside the roots: %s", ep, p, body)
				}
				for _, m := range shownPaths.FindAllStringSubmatch(body, -1) {
					if !inRoot(m[1], clean) {
						t.Fatalf("%s %q shows %s: %s", ep, p, m[1], body)
					}
				}
			}
		}
	})
}

// inRoot reports whether p is dir or lies below it.
func inRoot(p, dir string) bool {
	return p == dir || strings.HasPrefix(p, dir+"/")
}
