package browse

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/avsidecar/avsidecar/internal/testkit"
	"golang.org/x/net/websocket"
)

// cdp is a minimal Chrome DevTools Protocol client over one page's socket.
type cdp struct {
	t    *testing.T
	ws   *websocket.Conn
	next int
}

type cdpMsg struct {
	ID     int             `json:"id"`
	Method string          `json:"method"`
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Message string `json:"message"`
	} `json:"error"`
}

// call sends one command and returns its result, skipping events, or, when
// event is set, waits after the result for that event.
func (c *cdp) call(method string, params any, event string) json.RawMessage {
	c.t.Helper()
	c.next++
	id := c.next
	if err := websocket.JSON.Send(c.ws, map[string]any{"id": id, "method": method, "params": params}); err != nil {
		c.t.Fatalf("cdp %s: %v", method, err)
	}
	var result json.RawMessage
	for got := false; !got || (event != ""); {
		var m cdpMsg
		if err := websocket.JSON.Receive(c.ws, &m); err != nil {
			c.t.Fatalf("cdp %s: %v", method, err)
		}
		switch {
		case m.ID == id:
			if m.Error != nil {
				c.t.Fatalf("cdp %s: %s", method, m.Error.Message)
			}
			result, got = m.Result, true
		case got && m.Method == event:
			event = ""
		}
	}
	return result
}

// eval runs an async JS function body in the page and returns its value.
func (c *cdp) eval(body string) any {
	c.t.Helper()
	raw := c.call("Runtime.evaluate", map[string]any{
		"expression":    "(async () => {" + body + "})()",
		"awaitPromise":  true,
		"returnByValue": true,
	}, "")
	var r struct {
		Result struct {
			Value any `json:"value"`
		} `json:"result"`
		ExceptionDetails *struct {
			Text      string `json:"text"`
			Exception struct {
				Description string `json:"description"`
			} `json:"exception"`
		} `json:"exceptionDetails"`
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		c.t.Fatal(err)
	}
	if r.ExceptionDetails != nil {
		c.t.Fatalf("page script: %s %s", r.ExceptionDetails.Text, r.ExceptionDetails.Exception.Description)
	}
	return r.Result.Value
}

// startChromium runs headless Chromium and connects to its first page.
func startChromium(t *testing.T) *cdp {
	bin := testkit.NeedCommand(t, "chromium")
	cmd := exec.Command(bin, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir="+t.TempDir(), "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1", "--remote-allow-origins=http://127.0.0.1",
		"--window-size=1100,720", "about:blank")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stderr, err := cmd.StderrPipe()
	must(t, err)
	must(t, cmd.Start())
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
	})
	found := make(chan string, 1)
	go func() {
		re := regexp.MustCompile(`DevTools listening on ws://([^/]+)/`)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				found <- m[1]
			}
		}
		close(found)
	}()
	var hostport string
	select {
	case hostport = <-found:
	case <-time.After(60 * time.Second):
		t.Fatal("chromium printed no DevTools address")
	}
	if hostport == "" {
		t.Fatal("chromium exited before listening")
	}
	resp, err := http.Get("http://" + hostport + "/json/list")
	must(t, err)
	defer resp.Body.Close()
	var targets []struct {
		Type string `json:"type"`
		WS   string `json:"webSocketDebuggerUrl"`
	}
	must(t, json.NewDecoder(resp.Body).Decode(&targets))
	for _, tg := range targets {
		if tg.Type == "page" {
			cfg, err := websocket.NewConfig(tg.WS, "http://127.0.0.1")
			must(t, err)
			ws, err := websocket.DialConfig(cfg)
			must(t, err)
			ws.MaxPayloadBytes = 64 << 20
			t.Cleanup(func() { ws.Close() })
			return &cdp{t: t, ws: ws}
		}
	}
	t.Fatalf("no page target in %+v", targets)
	return nil
}

// pageHelpers waits on DOM changes, not on time: until resolves when the
// condition holds after any mutation (the 15s bound only turns a hang into
// a message).
const pageHelpers = `
const until = (f, what) => new Promise((res, rej) => {
  if (f()) return res(true);
  const o = new MutationObserver(() => { if (f()) { o.disconnect(); res(true); } });
  o.observe(document.documentElement, { attributes: true, childList: true, subtree: true, characterData: true });
  setTimeout(() => { o.disconnect(); rej(new Error("timed out waiting for " + what)); }, 15000);
});
const ready = (path) => until(() => document.body.dataset.state === "ready" && document.body.dataset.path === path, "listing of " + path);
const names = () => [...document.querySelectorAll("#rows tr")].map((r) => r.dataset.name);
const click = (sel) => { const e = document.querySelector(sel); if (!e) throw new Error("no " + sel); e.click(); };
`

// TestPageInChromium drives the page in a real browser, with the fixture
// as the base: every path the page shows and copies is a path in it.
func TestPageInChromium(t *testing.T) {
	fx := newFixture(t)
	hostSub := fx.data + "/sub"
	must(t, os.WriteFile(hostSub+"/deep/small.txt", []byte("1"), 0o644))
	must(t, os.WriteFile(hostSub+"/deep/big.bin", make([]byte, 3<<20), 0o644))
	must(t, os.WriteFile(hostSub+"/deep/mid file.log", make([]byte, 40<<10), 0o644))
	data, srvRoot, sub := "/data", "/srv", "/data/sub"
	_, srv := newServer(t, Config{Base: fx.base, Roots: []string{data, srvRoot}})
	c := startChromium(t)
	c.call("Page.enable", map[string]any{}, "")
	c.call("Page.navigate", map[string]any{"url": srv.URL + "/"}, "Page.loadEventFired")

	got := c.eval(pageHelpers + `
await ready(` + js(data) + `);
return { roots: [...document.querySelectorAll("#roots button")].map((b) => b.textContent), rows: names() };`)
	want := fmt.Sprint(map[string]any{"roots": []any{data, srvRoot}, "rows": []any{"dangling", "fifo", "html", "link-evil", "link-grandparent"}})
	if s := fmt.Sprint(got); !strings.HasPrefix(s, "map[roots:["+data+" "+srvRoot+"] rows:[dangling fifo html") {
		t.Fatalf("first page: %s, want like %s", s, want)
	}

	// Two levels down by clicking directory links.
	got = c.eval(pageHelpers + `
click('#rows tr[data-name="sub"] a'); await ready(` + js(sub) + `);
const first = names();
click('#rows tr[data-name="deep"] a'); await ready(` + js(sub+"/deep") + `);
return { first, second: names(), crumbs: document.getElementById("crumbs").textContent, hash: location.hash };`)
	m := got.(map[string]any)
	if fmt.Sprint(m["first"]) != "[deep]" || fmt.Sprint(m["second"]) != "[big.bin er mid file.log small.txt]" ||
		m["crumbs"] != sub+"/deep" || !strings.Contains(m["hash"].(string), "sort=name") {
		t.Fatalf("navigation: %v", m)
	}

	// Sort by size, then descending.
	got = c.eval(pageHelpers + `
click('th[data-sort="size"]'); await until(() => location.hash.includes("sort=size") && document.body.dataset.state === "ready", "size sort");
const asc = names();
click('th[data-sort="size"]'); await until(() => location.hash.includes("order=desc") && document.body.dataset.state === "ready", "size desc");
return { asc, desc: names(), arrow: document.querySelector('th[data-sort="size"] .arrow').textContent };`)
	m = got.(map[string]any)
	if fmt.Sprint(m["asc"]) != "[small.txt er mid file.log big.bin]" || fmt.Sprint(m["desc"]) != "[big.bin mid file.log er small.txt]" || m["arrow"] != "▼" {
		t.Fatalf("sorting: %v", m)
	}

	// Copy a path for the dataset.
	got = c.eval(pageHelpers + `
click('#rows tr[data-name="mid file.log"] button.copy');
await until(() => document.getElementById("copied").value !== "", "copied path");
return { field: document.getElementById("copied").value, attr: document.body.dataset.copied };`)
	m = got.(map[string]any)
	if wantPath := sub + "/deep/mid file.log"; m["field"] != wantPath || m["attr"] != wantPath {
		t.Fatalf("copied %v, want %s", m, wantPath)
	}

	// An error is shown, not a blank page.
	got = c.eval(pageHelpers + `
location.hash = "#path=" + encodeURIComponent(` + js(data+"/link-root") + `);
await until(() => document.body.dataset.state === "error", "error state");
return document.getElementById("error").textContent;`)
	if s, _ := got.(string); s != data+"/link-root: not found" {
		t.Fatalf("error display: %q", got)
	}
	c.eval(pageHelpers + `history.back(); await ready(` + js(sub+"/deep") + `); return true;`)

	screenshot(t, c, "browse-page.png", 1100)
}

// screenshot sizes the page to width (by 800 pixels), saves a PNG in
// $AVSIDECAR_SCREENSHOT_DIR (a temporary directory without it) and
// returns its path.
func screenshot(t *testing.T, c *cdp, name string, width int) string {
	t.Helper()
	c.call("Emulation.setDeviceMetricsOverride", map[string]any{"width": width, "height": 800, "deviceScaleFactor": 1, "mobile": false}, "")
	raw := c.call("Page.captureScreenshot", map[string]any{"format": "png"}, "")
	var shot struct {
		Data string `json:"data"`
	}
	must(t, json.Unmarshal(raw, &shot))
	png, err := base64.StdEncoding.DecodeString(shot.Data)
	must(t, err)
	dir := os.Getenv("AVSIDECAR_SCREENSHOT_DIR")
	if dir == "" {
		dir = t.TempDir()
	}
	out := filepath.Join(dir, name)
	must(t, os.WriteFile(out, png, 0o644))
	if len(png) < 10000 || string(png[1:4]) != "PNG" {
		t.Fatalf("screenshot of %d bytes", len(png))
	}
	t.Logf("screenshot: %s (%d bytes)", out, len(png))
	return out
}

func js(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
