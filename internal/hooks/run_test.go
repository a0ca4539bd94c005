package hooks

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/avsidecar/avsidecar/internal/testkit"
)

// newHooks parses spec and makes Hooks around it, with their log in logs.
func newHooks(t *testing.T, spec string, logs *testkit.LogLines) *Hooks {
	t.Helper()
	dir := t.TempDir()
	h, err := New(Config{Spec: spec, Socket: filepath.Join(dir, "h.sock"), ScriptsDir: filepath.Join(dir, "scripts"), Command: "/bin/avsidecar", LeaseFile: filepath.Join(dir, "lease.json")},
		zerolog.New(logs))
	if err != nil {
		t.Fatal(err)
	}
	if err := h.ConfigError(); err != nil {
		t.Fatal(err)
	}
	return h
}

// outcomes lists a run's hooks as name=outcome.
func outcomes(run PhaseRun) string {
	var out []string
	for _, r := range run.Hooks {
		out = append(out, r.Name+"="+r.Outcome)
	}
	return strings.Join(out, " ")
}

// jsonString quotes s for a spec.
func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// TestCommandHooks runs real commands: in order, with the phase and name
// in their environment; a failure with on_error fail fails the phase and,
// before the backup, skips the rest and runs the post hooks at once (the
// undo); continue goes on; in a post phase every hook runs whatever
// failed. A post call after that undo is late: it runs nothing, and fails.
func TestCommandHooks(t *testing.T) {
	trace := filepath.Join(t.TempDir(), "trace")
	sh := func(name, body, onError string) string {
		return `{"name": "` + name + `", "command": ["/bin/sh", "-c", ` + jsonString(body) + `], "on_error": "` + onError + `"}`
	}
	rec := `echo "$AVSIDECAR_HOOK_PHASE $AVSIDECAR_HOOK_NAME" >> ` + trace
	spec := `{"pre": [` + sh("a", rec, "fail") + `, ` + sh("b", rec+`; echo "b is sad" >&2; exit 5`, "continue") + `, ` +
		sh("c", rec+`; exit 6`, "fail") + `, ` + sh("d", rec, "fail") + `],
		"post": [` + sh("e", rec+`; exit 7`, "fail") + `, ` + sh("f", rec, "continue") + `]}`
	logs := testkit.NewLogLines()
	h := newHooks(t, spec, logs)

	pre, err := h.RunPhase(context.Background(), PhasePre)
	if err != nil {
		t.Fatal(err)
	}
	if pre.Result != ResultFailed || outcomes(pre) != "a=ok b=failed c=failed" || strings.Join(pre.Skipped, ",") != "d" {
		t.Errorf("pre run %+v", pre)
	}
	if b := pre.Hooks[1]; *b.ExitCode != 5 || b.Error != "exit status 5" || len(b.Output) != 1 || b.Output[0] != "b is sad" {
		t.Errorf("hook b %+v", b)
	}
	if u := pre.Undo; u == nil || u.By != ByPreFailed || u.Result != ResultFailed || outcomes(*u) != "e=failed f=ok" {
		t.Errorf("undo %+v", pre.Undo)
	}
	post, _ := h.RunPhase(context.Background(), PhasePost)
	if post.Result != ResultFailed || len(post.Hooks) != 0 || post.Late == nil || post.Late.By != ByPreFailed {
		t.Errorf("late post run %+v", post)
	}
	if got, _ := os.ReadFile(trace); string(got) != "pre a\npre b\npre c\npost e\npost f\n" {
		t.Errorf("trace %q", got)
	}

	st := h.Status()
	if phases(st) != "pre,post,post" || st.Hooks["pre/ok"] != 1 || st.Hooks["pre/failed"] != 2 || st.Hooks["post/failed"] != 1 ||
		st.Calls["pre/failed"] != 1 || st.Calls["post/failed"] != 1 || st.Thaws[ByPreFailed] != 1 || st.Lease != nil {
		t.Errorf("status %+v", st)
	}
	for _, run := range st.Runs {
		for _, r := range run.Hooks {
			if r.Output != nil {
				t.Errorf("status keeps the output of %s: %q", r.Name, r.Output)
			}
		}
	}
	if strings.Contains(logs.Raw(), "b is sad") {
		t.Errorf("a hook's output reached the log:\n%s", logs.Raw())
	}
	if logs.Count(0, testkit.Msg("", "hook ran")) != 5 || logs.Count(0, testkit.Msg("", "hook phase ran")) != 3 {
		t.Errorf("log:\n%s", logs.Raw())
	}
}

// TestCommandTimeout: a command that outlives its timeout is killed with
// its whole process group, and the outcome says so.
func TestCommandTimeout(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "child")
	body := `sleep 300 & echo $! > ` + pidFile + `; wait`
	spec := `{"pre": [{"name": "slow", "command": ["/bin/sh", "-c", ` + jsonString(body) + `], "timeout": "300ms"}]}`
	h := newHooks(t, spec, testkit.NewLogLines())
	// Not waiting for the sleep is shown by RunPhase returning at all (the
	// test's own timeout is far below 300 s), not by a timed assertion.
	run, _ := h.RunPhase(context.Background(), PhasePre)
	if run.Result != ResultFailed || outcomes(run) != "slow=timeout" || !strings.Contains(run.Hooks[0].Error, "no end within 300ms") {
		t.Fatalf("run %+v", run)
	}
	b, _ := os.ReadFile(pidFile)
	child, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	deadline := time.Now().Add(5 * time.Second)
	for child > 0 && syscall.Kill(child, 0) == nil && !zombie(child) {
		if time.Now().After(deadline) {
			t.Fatalf("the hook's child %d outlived the timeout", child)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func zombie(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(f) > 0 && f[0] == "Z"
}

// TestHTTPHooks calls a real server on loopback: a 2xx answer is ok,
// another a failure, a slow answer a timeout; headers and body are sent;
// neither the URL's query nor a header's value reaches logs or status.
func TestHTTPHooks(t *testing.T) {
	var mu sync.Mutex
	var got []string
	mux := http.NewServeMux()
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, r.Method+" "+r.URL.RawQuery+" "+r.Header.Get("Authorization"))
		mu.Unlock()
	})
	mux.HandleFunc("/broken", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "no", http.StatusInternalServerError) })
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
	// elsewhere is where /moved points: a hook's request, its body and its
	// headers (a token, say) must never reach it.
	var elsewhereGot []string
	elsewhere := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		elsewhereGot = append(elsewhereGot, r.Method+" "+r.URL.Path+" "+r.Header.Get("Authorization"))
		mu.Unlock()
	})}
	eln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	go elsewhere.Serve(eln)
	t.Cleanup(func() { elsewhere.Close() })
	mux.HandleFunc("/moved", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://"+eln.Addr().String()+"/steal", http.StatusTemporaryRedirect)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	base := "http://" + ln.Addr().String()
	closed := "http://127.0.0.1:" + strconv.Itoa(testkit.FreePort(t))
	spec := `{"pre": [
		{"name": "ok", "http": {"url": "` + base + `/ok?token=s3cret-query", "method": "PUT", "headers": {"Authorization": "Bearer s3cret-header"}}},
		{"name": "broken", "http": {"url": "` + base + `/broken?token=s3cret-query"}, "on_error": "continue"},
		{"name": "slow", "http": {"url": "` + base + `/slow"}, "timeout": "200ms", "on_error": "continue"},
		{"name": "closed", "http": {"url": "` + closed + `/x?token=s3cret-query"}, "on_error": "continue"},
		{"name": "moved", "http": {"url": "` + base + `/moved", "body": "pause", "headers": {"Authorization": "Bearer s3cret-header"}}, "on_error": "continue"}
	]}`
	logs := testkit.NewLogLines()
	h := newHooks(t, spec, logs)
	run, _ := h.RunPhase(context.Background(), PhasePre)
	if run.Result != ResultPassed || outcomes(run) != "ok=ok broken=failed slow=timeout closed=error moved=failed" {
		t.Fatalf("run %+v", run)
	}
	if run.Hooks[0].HTTPStatus != 200 || run.Hooks[1].HTTPStatus != 500 || !strings.Contains(run.Hooks[1].Error, "500 Internal Server Error") {
		t.Errorf("statuses %+v", run.Hooks)
	}
	mu.Lock()
	if len(got) != 1 || got[0] != "PUT token=s3cret-query Bearer s3cret-header" {
		t.Errorf("server got %q", got)
	}
	if len(elsewhereGot) != 0 {
		t.Errorf("a redirect was followed to another host, which got %q", elsewhereGot)
	}
	mu.Unlock()
	if r := run.Hooks[4]; r.HTTPStatus != http.StatusTemporaryRedirect || !strings.Contains(r.Error, "307 Temporary Redirect") {
		t.Errorf("a redirect is the hook's answer, a failure: %+v", r)
	}
	st, _ := json.Marshal(h.Status())
	for _, where := range []string{logs.Raw(), string(st), func() string { b, _ := json.Marshal(run); return string(b) }()} {
		if strings.Contains(where, "s3cret") {
			t.Errorf("a secret leaked:\n%s", where)
		}
	}
}

// TestPhasesOneAtATime: calls that come together run one after the other.
func TestPhasesOneAtATime(t *testing.T) {
	lock := filepath.Join(t.TempDir(), "lock")
	body := `set -C; : > ` + lock + ` || exit 9; sleep 0.2; rm ` + lock
	h := newHooks(t, `{"post": [{"command": ["/bin/sh", "-c", `+jsonString(body)+`]}]}`, testkit.NewLogLines())
	var wg sync.WaitGroup
	results := make([]PhaseRun, 3)
	for i := range results {
		wg.Go(func() { results[i], _ = h.RunPhase(context.Background(), PhasePost) })
	}
	wg.Wait()
	for _, r := range results {
		if r.Result != ResultPassed {
			t.Errorf("concurrent run %+v", r)
		}
	}
}
