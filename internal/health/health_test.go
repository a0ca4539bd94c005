package health

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func get(t *testing.T, srv *httptest.Server, path string) (int, string) {
	t.Helper()
	resp, err := http.Get(srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestProbes(t *testing.T) {
	registered := errors.New("not registered yet\n(last attempt: unreachable)")
	ok := func(context.Context) error { return nil }
	h := New(Config{
		Startup: []Check{{Name: "installed", Fn: ok}},
		Ready: []Check{{Name: "installed", Fn: ok}, {Name: "registered", Fn: func(context.Context) error { return registered }},
			{Name: "ssh", Optional: true, Fn: func(context.Context) error { return errors.New("host key unreadable") }}},
	})
	srv := httptest.NewServer(h)
	defer srv.Close()

	tests := []struct {
		path string
		code int
		body string
	}{
		{"/livez", 200, "ok\n"},
		{"/startupz", 200, "ok\n"},
		{"/startupz?verbose", 200, "[+]installed ok\nstartupz check passed\n"},
		{"/readyz", 503, "[-]registered: not registered yet (last attempt: unreachable)\nreadyz check failed\n"},
		{"/readyz?verbose", 503, "[+]installed ok\n[-]registered: not registered yet (last attempt: unreachable)\n[!]ssh: host key unreadable\nreadyz check failed\n"},
	}
	for _, tt := range tests {
		code, body := get(t, srv, tt.path)
		if code != tt.code || body != tt.body {
			t.Errorf("GET %s = %d %q, want %d %q", tt.path, code, body, tt.code, tt.body)
		}
	}
	registered = nil
	h.cfg.Ready[1].Fn = ok
	// A failing optional check shows in the verbose body only, and does
	// not fail the probe.
	if code, body := get(t, srv, "/readyz"); code != 200 || body != "ok\n" {
		t.Errorf("ready after registration: %d %q", code, body)
	}
	if code, body := get(t, srv, "/readyz?verbose"); code != 200 || body != "[+]installed ok\n[+]registered ok\n[!]ssh: host key unreadable\nreadyz check passed\n" {
		t.Errorf("verbose ready after registration: %d %q", code, body)
	}
	if !Passed(Run(context.Background(), h.cfg.Ready, time.Second)) {
		t.Error("Passed counts an optional check")
	}
}
