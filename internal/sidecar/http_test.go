package sidecar

import (
	"bufio"
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

// TestHTTPConnectionCaps: one client address cannot hold more than its
// share of connections, and the probes from another address are still
// served; the drops are counted in /metrics.
func TestHTTPConnectionCaps(t *testing.T) {
	w := newWorld(t)
	w.limits.MaxConnsPerAddr, w.limits.MaxConns = 4, 6
	s, _, _ := w.start(t)
	addr := s.Addr().String()
	var held []net.Conn
	for range 4 {
		c := dialFrom(t, "127.0.0.2", addr)
		if !roundTrip(t, c, "/livez") {
			t.Fatal("a connection within the cap was not served")
		}
		held = append(held, c)
	}
	extra := dialFrom(t, "127.0.0.2", addr)
	if roundTrip(t, extra, "/livez") {
		t.Fatal("a fifth connection from one address was served past a cap of 4")
	}
	other := dialFrom(t, "127.0.0.3", addr)
	if !roundTrip(t, other, "/livez") {
		t.Fatal("another address was refused while one address held its share")
	}
	// The global cap: 4 + 1 held, one more fits, then none.
	if !roundTrip(t, dialFrom(t, "127.0.0.4", addr), "/livez") {
		t.Fatal("the sixth connection was refused under a cap of 6")
	}
	if roundTrip(t, dialFrom(t, "127.0.0.5", addr), "/livez") {
		t.Fatal("a seventh connection was served past a cap of 6")
	}
	// Closing frees the slots, once the server has seen the closes.
	for _, c := range held {
		c.Close()
	}
	for deadline := time.Now().Add(5 * time.Second); s.httpLn.Open() > 2; {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections still counted open after the client closed 4 of 6", s.httpLn.Open())
		}
		time.Sleep(time.Millisecond)
	}
	c := dialFrom(t, "127.0.0.2", addr)
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
	b, _ := io.ReadAll(c)
	scraped := string(b)
	if !strings.Contains(scraped, "avsidecar_http_connections_dropped_total 2") {
		t.Errorf("scrape after the drops:\n%s", scraped)
	}
}
