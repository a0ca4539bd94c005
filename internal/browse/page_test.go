package browse

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/avsidecar/avsidecar/internal/health"
	"github.com/rs/zerolog"
)

// pageServer serves the browser as `avsidecar run` mounts it, with the
// real probe handler beside it (readiness failing on registration) and a
// /v1/status of the sidecar's shape with a backup 3 hours old.
func pageServer(t *testing.T, cfg Config) *httptest.Server {
	t.Helper()
	h, err := New(cfg, zerolog.New(io.Discard))
	must(t, err)
	probes := health.New(health.Config{Ready: []health.Check{
		{Name: "installed", Fn: func(context.Context) error { return nil }},
		{Name: "registered", Fn: func(context.Context) error { return errors.New("not registered yet (last attempt: unreachable)") }},
	}})
	backupAt := time.Now().Add(-3 * time.Hour).UTC().Format(time.RFC3339)
	mux := http.NewServeMux()
	mux.Handle("/readyz", probes)
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"phase":"registering","backup":{"state":"ok","last_backup":%q,"checks":1,"failures":0}}`, backupAt)
	})
	mux.Handle("/", h)
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		srv.Close()
		h.Close()
	})
	return srv
}

// TestPageFeaturesInChromium drives the page in a real browser: links
// only for folders (a symlink to a file is text), paths outside the roots
// said so, folder sizes on demand, the readiness and backup header, names
// that are not UTF-8 listed, opened and copied exactly, and the copy
// buttons in view at 1280 and at 400 pixels.
func TestPageFeaturesInChromium(t *testing.T) {
	fx := newFixture(t)
	d := fx.data
	must(t, os.WriteFile(d+"/html/big.bin", make([]byte, 3<<20), 0o644))
	must(t, os.Symlink("html/index.html", d+"/link-file"))
	must(t, os.MkdirAll(d+"/odd/dir\xffsub", 0o755))
	for _, n := range []string{"bad\xff", "bad\xfe", "dir\xffsub/in\xfe"} {
		must(t, os.WriteFile(filepath.Join(d, "odd", n), []byte("x"), 0o644))
	}
	srv := pageServer(t, Config{Base: fx.base, Roots: []string{"/data", "/srv"}})
	c := startChromium(t)
	c.call("Page.enable", map[string]any{}, "")
	c.call("Page.navigate", map[string]any{"url": srv.URL + "/"}, "Page.loadEventFired")

	// Folder links: a directory and a symlink to one; not a symlink to a
	// file, a dangling one, or one that leaves the root.
	got := c.eval(pageHelpers + `
await ready("/data");
const kind = (n) => { const r = document.querySelector('#rows tr[data-name="' + n + '"]'); return r.dataset.folder + (r.querySelector("td.name a") ? "+a" : ""); };
return ["html", "link-html", "link-file", "dangling", "link-root", "link-outside", "fifo"].map((n) => n + "=" + kind(n)).join(" ");`)
	if want := "html=yes+a link-html=yes+a link-file=no link-dangling=no"; got != "html=yes+a link-html=yes+a link-file=no dangling=no link-root=no link-outside=no fifo=no" {
		t.Errorf("folder links: %v (want like %s)", got, want)
	}

	// The header: readiness from /readyz?verbose, last backup from /v1/status.
	got = c.eval(pageHelpers + `
await until(() => document.body.dataset.ready && document.body.dataset.backup, "the header");
return $("ready").textContent + " | " + $("backup").textContent;`)
	if got != "not ready: registered: not registered yet (last attempt: unreachable) | last backup 3 h ago" {
		t.Errorf("header: %v", got)
	}

	// A path outside the roots says so, not "not found".
	got = c.eval(pageHelpers + `
location.hash = "#path=/outside";
await until(() => document.body.dataset.state === "error" && document.body.dataset.path === "/outside", "error state");
return $("error").textContent;`)
	if got != "/outside: outside the browse roots (/data, /srv)" {
		t.Errorf("outside path: %q", got)
	}

	// Folder size on demand.
	got = c.eval(pageHelpers + `
history.back(); await ready("/data");
const cell = document.querySelector('#rows tr[data-name="html"] td.size');
cell.querySelector("button.du").click();
await until(() => cell.dataset.du === "done", "du of html");
return cell.textContent + " | " + cell.title;`)
	// big.bin, index.html, site.css and the link-grandparent symlink ("../..").
	if want := fmt.Sprintf("3.0 MiB | %d bytes in 4 files and 1 folders", 3<<20+len("<h1>hi</h1>")+len("body{}")+len("../..")); got != want {
		t.Errorf("du: %q", got)
	}

	// Names that are not UTF-8: two rows, a folder that opens, an exact copy.
	got = c.eval(pageHelpers + `
click('#rows tr[data-name="odd"] a'); await ready("/data/odd");
const rows = names();
click('#rows tr[data-name="dir\\\\xffsub"] a'); await ready("/data/odd/dir\\xffsub");
const inner = names();
click('#rows tr[data-name="in\\\\xfe"] button.copy');
await until(() => document.body.dataset.copied, "copied");
return { rows, inner, copied: document.body.dataset.copied, hash: location.hash, esc: document.querySelectorAll("#crumbs .esc").length };`)
	m := got.(map[string]any)
	if fmt.Sprint(m["rows"]) != `[bad\xfe bad\xff dir\xffsub]` || fmt.Sprint(m["inner"]) != `[in\xfe]` ||
		m["copied"] != `$'/data/odd/dir\xffsub/in\xfe'` || !strings.Contains(m["hash"].(string), "path_b64=") || m["esc"] != float64(1) {
		t.Errorf("non-UTF-8 names: %v", m)
	}
	// Reloading the page at that hash opens the same folder.
	c.call("Page.reload", map[string]any{}, "Page.loadEventFired")
	if got := c.eval(pageHelpers + `await ready("/data/odd/dir\\xffsub"); return names().join();`); got != `in\xfe` {
		t.Errorf("after reload: %v", got)
	}

	// Copy buttons stay in view, wide and narrow.
	c.eval(pageHelpers + `location.hash = "#path=/data/odd"; await ready("/data/odd");
click('#rows tr[data-name="dir\\\\xffsub"] button.copy'); await until(() => document.body.dataset.copied.includes("sub"), "copy"); return true;`)
	for _, width := range []int{1280, 400} {
		path := screenshot(t, c, fmt.Sprintf("browse-page-%d.png", width), width)
		got := c.eval(pageHelpers + `
const out = [];
for (const b of document.querySelectorAll("button.copy")) {
  const r = b.getBoundingClientRect();
  if (r.width === 0 || r.right > window.innerWidth || r.left < 0) out.push(b.dataset.path || b.id);
}
return { hidden: out, width: window.innerWidth, scroll: document.documentElement.scrollWidth };`)
		m := got.(map[string]any)
		if len(m["hidden"].([]any)) != 0 || m["width"] != float64(width) || m["scroll"].(float64) > float64(width) {
			t.Errorf("at %d px (%s): %v", width, path, m)
		}
	}
}

// TestPageTokenInChromium: with a token file the page asks for the token,
// lists with it, and keeps it in no storage and no cookie.
func TestPageTokenInChromium(t *testing.T) {
	fx := newFixture(t)
	tokenFile := filepath.Join(t.TempDir(), "token")
	must(t, os.WriteFile(tokenFile, []byte("s3cret-token\n"), 0o600))
	srv := pageServer(t, Config{Roots: []string{fx.data}, TokenFile: tokenFile})
	c := startChromium(t)
	c.call("Page.enable", map[string]any{}, "")
	c.call("Page.navigate", map[string]any{"url": srv.URL + "/"}, "Page.loadEventFired")
	got := c.eval(pageHelpers + `
await until(() => document.body.dataset.token === "asked" && document.body.dataset.state === "error", "the token form: " + document.body.dataset.state + " " + $("error").textContent);
const asked = { form: !$("tokenform").hidden, msg: $("tokenmsg").textContent };
$("token").value = "wrong";
$("tokenform").requestSubmit();
await until(() => !$("tokenform").hidden && $("tokenmsg").textContent === "that token was refused", "a refused token");
$("token").value = "s3cret-token";
$("tokenform").requestSubmit();
await ready(` + js(fx.data) + `);
return { asked, rows: names().length, field: $("token").value, local: localStorage.length, session: sessionStorage.length, cookie: document.cookie };`)
	m := got.(map[string]any)
	if fmt.Sprint(m["asked"]) != "map[form:true msg:this server wants the bearer token]" || m["rows"].(float64) < 5 ||
		m["field"] != "" || m["local"] != float64(0) || m["session"] != float64(0) || m["cookie"] != "" {
		t.Errorf("token: %v", m)
	}
	screenshot(t, c, "browse-page-token.png", 1280)
}
