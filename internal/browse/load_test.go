package browse

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// waitFor waits for a hook's event; the bound only turns a hang into a
// message.
func waitFor(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(20 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

// TestIdenticalListingsShareOneRead holds the first read of a directory
// until 20 clients, on their own connections, wait for the same listing:
// the directory is read from disk once and all 20 get the same answer.
func TestIdenticalListingsShareOneRead(t *testing.T) {
	for _, cacheDirs := range []int{0, -1} {
		name := map[int]string{0: "cache on", -1: "cache off"}[cacheDirs]
		t.Run(name, func(t *testing.T) {
			fx := newFixture(t)
			h, srv := newServer(t, Config{Roots: []string{fx.data}, CacheDirs: cacheDirs, MaxReads: 1})
			const n = 20
			all, gate := make(chan struct{}), make(chan struct{})
			var release sync.Once
			open := func() { release.Do(func() { close(gate) }) }
			t.Cleanup(open)
			h.hooks.waiting = func(k int64) {
				if k == n {
					close(all)
				}
			}
			h.hooks.beforeRead = func() { <-gate }
			type result struct {
				code int
				body string
				err  error
			}
			results := make(chan result, n)
			for range n {
				go func() {
					c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
					resp, err := c.Get(srv.URL + "/v1/files?path=" + fx.data + "/sub&limit=1")
					if err != nil {
						results <- result{err: err}
						return
					}
					defer resp.Body.Close()
					b, err := io.ReadAll(resp.Body)
					results <- result{resp.StatusCode, string(b), err}
				}()
			}
			waitFor(t, all, "20 requests waiting for one read")
			open()
			var first string
			for range n {
				r := <-results
				if r.err != nil || r.code != 200 || first != "" && r.body != first {
					t.Fatalf("answer %d %v %s, first %s", r.code, r.err, r.body, first)
				}
				first = r.body
			}
			if st := h.Status().Load; st.Reads != 1 || st.SharedReads != n-1 || st.Refused != 0 {
				t.Errorf("load %+v, want 1 read shared by %d", st, n-1)
			}
		})
	}
}

// TestReadCapAnswers503 takes the only read slot with a held read: a
// listing of another directory is refused with 503 and Retry-After at
// once, one of the same directory joins the held read, and once it is
// done the other directory is served.
func TestReadCapAnswers503(t *testing.T) {
	fx := newFixture(t)
	h, srv := newServer(t, Config{Roots: []string{fx.data}, MaxReads: 1})
	reading, gate := make(chan struct{}, 8), make(chan struct{})
	var release sync.Once
	open := func() { release.Do(func() { close(gate) }) }
	t.Cleanup(open) // before the server's cleanup, which waits for handlers
	h.hooks.beforeRead = func() {
		reading <- struct{}{}
		<-gate
	}
	joined := make(chan struct{})
	h.hooks.waiting = func(k int64) {
		if k == 2 {
			close(joined)
		}
	}
	held := make(chan answer, 2)
	for range 2 {
		go func() { held <- get(t, srv, "/v1/files?path="+fx.data+"/html") }()
	}
	waitFor(t, reading, "the held read")
	waitFor(t, joined, "a second request joining it")

	c := &http.Client{Timeout: 20 * time.Second}
	resp, err := c.Get(srv.URL + "/v1/files?path=" + fx.data + "/sub")
	must(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "1" || !strings.HasPrefix(string(body), `{"error":"busy`) {
		t.Fatalf("beyond the cap: %d Retry-After %q %s", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	open()
	for range 2 {
		if a := <-held; a.code != 200 {
			t.Fatalf("held listing: %d %s", a.code, a.body)
		}
	}
	if a := get(t, srv, "/v1/files?path="+fx.data+"/sub"); a.code != 200 {
		t.Fatalf("after the held read: %d %s", a.code, a.body)
	}
	if st := h.Status(); st.Load.Refused != 1 || st.Load.Reads != 2 || st.Load.SharedReads != 1 || st.Requests["503"] != 1 || st.Load.ReadsInFlight != 0 {
		t.Errorf("status %+v", st)
	}
}

// stalledClient sends a request on a connection with the smallest receive
// buffer, reads the status line and then nothing more.
func stalledClient(t *testing.T, addr, target string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 10 * time.Second, Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 1024) })
		if err != nil {
			return err
		}
		return serr
	}}
	c, err := d.Dial("tcp", addr)
	must(t, err)
	t.Cleanup(func() { c.Close() })
	_, err = io.WriteString(c, "GET "+target+" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
	must(t, err)
	line, err := bufio.NewReaderSize(c, 16).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "HTTP/1.1 200") {
		t.Fatalf("stalled client's answer: %q %v", line, err)
	}
	return c
}

// TestStalledWalkReaderIsDropped: a client that stops reading a walk holds
// its walk slot (a second walk is refused with 503 and Retry-After) only
// until one write has waited Config.WriteTimeout; then the walk stops, the
// slot is free and the next walk is served whole.
func TestStalledWalkReaderIsDropped(t *testing.T) {
	fx := newFixture(t)
	big := fx.data + "/big"
	// About 12 MB of NDJSON, more than the socket buffers between the
	// server and a client that reads nothing, from few files: 3,000 files
	// with names of 250 bytes, 14 directories of 250 bytes deep.
	const depth, files = 14, 3000
	dir := big
	for range depth {
		dir = filepath.Join(dir, strings.Repeat("d", 250))
	}
	must(t, os.MkdirAll(dir, 0o755))
	for i := range files {
		must(t, os.WriteFile(filepath.Join(dir, strings.Repeat("f", 246)+itoa(1000+i)), nil, 0o644))
	}
	h, srv := newServer(t, Config{Roots: []string{fx.data}, MaxWalks: 1, WriteTimeout: 300 * time.Millisecond})
	var mu sync.Mutex
	var ends []bool
	ended := make(chan struct{}, 4)
	h.hooks.walkEnded = func(writeFailed bool) {
		mu.Lock()
		ends = append(ends, writeFailed)
		mu.Unlock()
		ended <- struct{}{}
	}
	stalledClient(t, strings.TrimPrefix(srv.URL, "http://"), "/v1/walk?path="+big)

	resp, err := srv.Client().Get(srv.URL + "/v1/walk?path=" + fx.data + "/html")
	must(t, err)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "5" {
		t.Fatalf("second walk while the first holds the slot: %d Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}

	waitFor(t, ended, "the stalled walk to be dropped")
	mu.Lock()
	if len(ends) != 1 || !ends[0] {
		t.Fatalf("walk ends %v, want one ended by a failed write", ends)
	}
	mu.Unlock()
	if st := h.Status().Load; st.WalksInFlight != 0 || st.Refused != 1 {
		t.Errorf("after the drop: %+v", st)
	}
	a := get(t, srv, "/v1/walk?path="+big)
	if n := strings.Count(a.body, "\n"); a.code != 200 || n != depth+files || len(a.body) < 12e6 {
		t.Errorf("next walk: %d, %d lines, %d bytes, want %d lines", a.code, n, len(a.body), depth+files)
	}
}
