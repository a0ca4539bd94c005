package backupapi

import (
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// thief is a plain-http server on another loopback address that a hostile
// or misconfigured REST server redirects to. It answers like the API
// would (a token, then the client with a fresh backup), so that a checker
// that followed the redirect would report ok; it records every connection
// and every request body it gets.
type thief struct {
	url    string
	conns  atomic.Int64
	mu     sync.Mutex
	bodies []string
}

// countingListener counts the connections it accepts.
type countingListener struct {
	net.Listener
	n *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

func startThief(t *testing.T) *thief {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	th := &thief{url: "http://" + ln.Addr().String()}
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		th.mu.Lock()
		th.bodies = append(th.bodies, r.Method+" "+r.URL.String()+" "+r.Header.Get("Authorization")+" "+string(b))
		th.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if strings.Contains(r.URL.Path, "token") || strings.Contains(r.URL.Path, "steal") {
			io.WriteString(w, `{"access_token":"stolen","expires_in":1800}`)
			return
		}
		io.WriteString(w, `{"content":[{"id":"x","name":"`+clientName+`","domainFqdn":"`+domain+`","lastBackupTime":"2026-12-01T00:00:00Z"}],"totalPages":1}`)
	})}
	go srv.Serve(countingListener{ln, &th.conns})
	t.Cleanup(func() { srv.Close() })
	return th
}

func (th *thief) got() string {
	th.mu.Lock()
	defer th.mu.Unlock()
	return strings.Join(th.bodies, "\n")
}

// TestRedirectNeverFollowed: the REST client follows no redirect. A token
// request answered 307 or 308 to a plain-http host is not sent again
// there (the password would travel in clear), and an API call answered
// 301 or 302 is not followed to another scheme, host or port, nor on the
// same server: either way the check reports a redirect, naming where it
// pointed, and believes nothing. The host redirected to never gets a
// connection, let alone the password.
func TestRedirectNeverFollowed(t *testing.T) {
	for _, tc := range []struct {
		name  string
		token bool
		code  int
		path  string // the Location's path; "" for the same server, other path
	}{
		{"token 307 to http", true, http.StatusTemporaryRedirect, "/steal"},
		{"token 308 to http", true, http.StatusPermanentRedirect, "/api/oauth/token"},
		{"api 302 to http", false, http.StatusFound, "/api/v1/clients"},
		{"api 301 to http", false, http.StatusMovedPermanently, "/api/v1/clients"},
		{"api 302 same server", false, http.StatusFound, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, 0)
			th := startThief(t)
			loc := th.url + tc.path
			if tc.path == "" {
				loc = f.srv.URL() + "/api/v2/clients"
			}
			f.srv.SetRedirect(tc.token, tc.code, loc)
			c := f.checker(t, f.config())
			st := check(t, c)

			if n := th.conns.Load(); n != 0 {
				t.Errorf("the host redirected to got %d connections; requests:\n%s", n, th.got())
			}
			wantState(t, st, StateRedirected, strings.TrimSuffix(loc, "/")+": redirects are not followed")
			if !strings.Contains(st.Message, http.StatusText(tc.code)) {
				t.Errorf("message %q does not name the answer %d", st.Message, tc.code)
			}
			if n := f.srv.Counts().Redirected; n != 1 {
				t.Errorf("the server redirected %d requests, want 1 (no retry of a redirect)", n)
			}
			if !st.LastBackup.IsZero() {
				t.Errorf("a redirected check reported a backup at %v", st.LastBackup)
			}
			logs := f.log.String()
			for _, secret := range []string{password, clientSecret} {
				if strings.Contains(st.Message, secret) || strings.Contains(logs, secret) {
					t.Errorf("secret %q in the message or the log", secret)
				}
			}
			// Once the server stops redirecting, the check recovers.
			f.srv.SetRedirect(tc.token, 0, "")
			wantState(t, check(t, c), StateOK, "")
		})
	}
}
