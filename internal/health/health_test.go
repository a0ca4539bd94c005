package health

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
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
		Startup: []Check{{"installed", ok}},
		Ready:   []Check{{"installed", ok}, {"registered", func(context.Context) error { return registered }}},
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
		{"/readyz?verbose", 503, "[+]installed ok\n[-]registered: not registered yet (last attempt: unreachable)\nreadyz check failed\n"},
	}
	for _, tt := range tests {
		code, body := get(t, srv, tt.path)
		if code != tt.code || body != tt.body {
			t.Errorf("GET %s = %d %q, want %d %q", tt.path, code, body, tt.code, tt.body)
		}
	}
	registered = nil
	h.cfg.Ready[1].Fn = ok
	if code, body := get(t, srv, "/readyz"); code != 200 || body != "ok\n" {
		t.Errorf("ready after registration: %d %q", code, body)
	}
}
