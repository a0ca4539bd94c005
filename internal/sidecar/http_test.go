package sidecar

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// dialFrom connects to addr from the local address ip (any of 127/8 is
// loopback on Linux, so each is a client address of its own).
func dialFrom(t *testing.T, ip, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// roundTrip sends one keep-alive GET on c and reads its answer; false when
// the server closed the connection instead.
func roundTrip(t *testing.T, c net.Conn, path string) bool {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: localhost\r\n\r\n"); err != nil {
		return false
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return false
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode == 200
}

// closedByServer waits until the server closes c, and says whether it did
// within timeout.
func closedByServer(c net.Conn, timeout time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(timeout))
	_, err := c.Read(make([]byte, 1))
	return err == io.EOF || (err != nil && !isTimeout(err))
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// TestHTTPIdleConnectionsClose: a keep-alive connection left idle is
// closed by the server after IdleTimeout, not kept for ever.
func TestHTTPIdleConnectionsClose(t *testing.T) {
	w := newWorld(t)
	w.limits.IdleTimeout = 200 * time.Millisecond
	s, _, _ := w.start(t)
	c := dialFrom(t, "127.0.0.1", s.Addr().String())
	if !roundTrip(t, c, "/livez") {
		t.Fatal("no answer on a fresh connection")
	}
	if !closedByServer(c, 5*time.Second) {
		t.Fatal("an idle keep-alive connection was still open 5s after a 200ms idle timeout")
	}
}

// TestHTTPConnectionCaps: every loopback address counts as one client,
// which keeps at most its share of keep-alive connections; past it a
// request is answered from the reserve and its connection closed, and a
// connection that trickles is closed at once when the reserve is taken;
// the drops are counted in /metrics.
func TestHTTPConnectionCaps(t *testing.T) {
	w := newWorld(t)
	w.limits.MaxConnsPerClient, w.limits.MaxConns, w.limits.ReserveConns = 4, 6, 1
	s, _, _ := w.start(t)
	addr := s.Addr().String()
	for i := range 4 {
		c := dialFrom(t, fmt.Sprintf("127.0.0.%d", 2+i), addr)
		if !roundTrip(t, c, "/livez") {
			t.Fatal("a connection within the cap was not served")
		}
	}
	extra := dialFrom(t, "127.0.0.6", addr)
	if !roundTrip(t, extra, "/livez") {
		t.Fatal("a request past the cap was not answered from the reserve")
	}
	if !closedByServer(extra, 5*time.Second) {
		t.Fatal("a reserve connection stayed open after its answer")
	}
	// A trickler takes the free reserve slot; the next one is closed.
	slow := dialFrom(t, "127.0.0.7", addr)
	io.WriteString(slow, "GET /livez HTTP/1.1\r\n")
	for deadline := time.Now().Add(5 * time.Second); s.httpLn.Open() < 5; {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections open, want the trickler's fifth", s.httpLn.Open())
		}
		time.Sleep(time.Millisecond)
	}
	slower := dialFrom(t, "127.0.0.8", addr)
	io.WriteString(slower, "GET /livez HTTP/1.1\r\n")
	if !closedByServer(slower, 5*time.Second) {
		t.Fatal("a second trickler was kept with the reserve taken")
	}
	// A whole request, here a scrape, takes the trickler's slot.
	c := dialFrom(t, "127.0.0.9", addr)
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
	b, _ := io.ReadAll(c)
	scraped := string(b)
	if !strings.Contains(scraped, "avsidecar_http_connections_dropped_total 2") {
		t.Errorf("scrape after the drops:\n%s", scraped)
	}
	if !closedByServer(slow, 5*time.Second) {
		t.Error("the trickler kept its reserve slot")
	}
}
