package connlimit

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/netip"
	"testing"
	"time"
)

func TestClientOf(t *testing.T) {
	for _, tc := range []struct{ a, b string }{
		{"127.0.0.1", "127.0.0.2"},
		{"127.0.0.1", "127.255.3.4"},
		{"127.0.0.1", "::1"},
		{"127.0.0.1", "::ffff:127.0.0.9"},
		{"2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:ffff"},
		{"10.0.0.7", "::ffff:10.0.0.7"},
	} {
		if ca, cb := clientOf(tcpAddr(tc.a)), clientOf(tcpAddr(tc.b)); ca != cb {
			t.Errorf("%s (%v) and %s (%v) are different clients, want one", tc.a, ca, tc.b, cb)
		}
	}
	for _, tc := range []struct{ a, b string }{
		{"10.0.0.7", "10.0.0.8"},
		{"2001:db8:1:2::1", "2001:db8:1:3::1"},
		{"127.0.0.1", "10.0.0.1"},
		{"::1", "2001:db8::1"},
	} {
		if ca, cb := clientOf(tcpAddr(tc.a)), clientOf(tcpAddr(tc.b)); ca == cb {
			t.Errorf("%s and %s are one client (%v), want two", tc.a, tc.b, ca)
		}
	}
	if got := clientOf(&net.UnixAddr{Name: "@x", Net: "unix"}); got != (netip.Prefix{}) {
		t.Errorf("a unix address is client %v", got)
	}
}

func tcpAddr(ip string) *net.TCPAddr { return &net.TCPAddr{IP: net.ParseIP(ip), Port: 1234} }

// server serves h on a Listener with the given caps on 127.0.0.1.
func server(t *testing.T, max, perClient, reserve int, h http.Handler) *Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := New(ln, max, perClient, reserve)
	srv := &http.Server{Handler: Track(h), ConnContext: ConnContext, ReadHeaderTimeout: time.Minute}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return l
}

// dial connects from the loopback address src.
func dial(t *testing.T, src string, l *Listener) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(30 * time.Second))
	return c
}

// get sends a whole request on c and reads the answer: its status and
// whether it said Connection: close, or code 0 when the server closed c
// instead.
func get(t *testing.T, c net.Conn, path string) (code int, closing bool) {
	t.Helper()
	if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		return 0, false
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, false
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, resp.Close
}

// slow starts a request it does not finish (slowloris).
func slow(t *testing.T, c net.Conn) {
	t.Helper()
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n"); err != nil {
		t.Fatal(err)
	}
}

// closedByServer reports whether the server closed c (EOF or reset).
func closedByServer(c net.Conn) bool {
	_, err := c.Read(make([]byte, 1))
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		return false
	}
	return err != nil
}

// waitOpen waits until the listener counts n connections open.
func waitOpen(t *testing.T, l *Listener, n int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); l.Open() != n; {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections open, want %d", l.Open(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestReserve walks the reserve's policy: within the caps connections
// stay; over them a connection that trickles takes a free reserve slot
// but is closed at once when there is none; a whole request takes the
// slot of the oldest reserve connection that has not delivered its
// request, is answered with Connection: close and closed; and when every
// reserve connection is being answered, a newcomer is closed at once.
func TestReserve(t *testing.T) {
	release := make(chan struct{})
	l := server(t, 0, 2, 2, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/block" {
			<-release
		}
	}))
	// Within the per-client cap of 2: keep-alive connections, from two
	// loopback addresses that count as one client.
	a, b := dial(t, "127.0.0.1", l), dial(t, "127.0.0.2", l)
	for _, c := range []net.Conn{a, b} {
		if code, closing := get(t, c, "/"); code != 200 || closing {
			t.Fatalf("within the caps: %d, Connection: close %v", code, closing)
		}
	}
	// Over it: two trickling connections fill the reserve, a third is
	// closed at once.
	s1, s2 := dial(t, "127.0.0.3", l), dial(t, "127.0.0.4", l)
	slow(t, s1)
	waitOpen(t, l, 3)
	slow(t, s2)
	waitOpen(t, l, 4)
	s3 := dial(t, "127.0.0.5", l)
	slow(t, s3)
	if !closedByServer(s3) {
		t.Fatal("a trickling connection over the caps was kept with the reserve full")
	}
	// A whole request takes the oldest trickler's slot, is answered and
	// closed.
	p := dial(t, "127.0.0.6", l)
	if code, closing := get(t, p, "/livez"); code != 200 || !closing {
		t.Fatalf("a whole request over the caps: %d, Connection: close %v; want 200 and close", code, closing)
	}
	if !closedByServer(s1) {
		t.Error("the oldest trickler kept its reserve slot")
	}
	if !closedByServer(p) {
		t.Error("a reserve connection stayed open after its answer")
	}
	// Two requests held in their handlers take the reserve (the second
	// trickler gives its slot up); a third whole request finds every
	// reserve connection delivered and is closed at once.
	h1, h2 := dial(t, "127.0.0.7", l), dial(t, "127.0.0.8", l)
	io.WriteString(h1, "GET /block HTTP/1.1\r\nHost: x\r\n\r\n")
	io.WriteString(h2, "GET /block HTTP/1.1\r\nHost: x\r\n\r\n")
	if !closedByServer(s2) {
		t.Error("the second trickler kept its reserve slot")
	}
	waitOpen(t, l, 4)
	if code, _ := get(t, dial(t, "127.0.0.9", l), "/livez"); code != 0 {
		t.Errorf("a whole request was answered %d with every reserve slot being answered; want closed", code)
	}
	close(release)
	for _, c := range []net.Conn{h1, h2} {
		if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil || resp.StatusCode != 200 {
			t.Errorf("a held request: %v %v", resp, err)
		}
	}
	if got := l.Dropped(); got != 4 {
		t.Errorf("dropped %d, want 4 (two newcomers closed at once, two tricklers closed to make room)", got)
	}
}

// TestGlobalCap: past the cap of all connections, with no reserve, a
// newcomer is closed at once, and a slot given back is taken again.
func TestGlobalCap(t *testing.T) {
	l := server(t, 2, 0, 0, http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	a, b := dial(t, "127.0.0.1", l), dial(t, "127.0.0.1", l)
	for _, c := range []net.Conn{a, b} {
		if code, _ := get(t, c, "/"); code != 200 {
			t.Fatalf("within the cap: %d", code)
		}
	}
	if code, _ := get(t, dial(t, "127.0.0.1", l), "/"); code != 0 {
		t.Fatalf("a third connection under a cap of 2 was answered %d", code)
	}
	a.Close()
	waitOpen(t, l, 1)
	if code, _ := get(t, dial(t, "127.0.0.1", l), "/"); code != 200 {
		t.Fatalf("a freed slot was not taken again: %d", code)
	}
	if l.Dropped() != 1 {
		t.Errorf("dropped %d, want 1", l.Dropped())
	}
}

// TestBlankLine: the end of a header block is found whichever way the
// request is cut into reads, and only there.
func TestBlankLine(t *testing.T) {
	for _, tc := range []struct {
		reads []string
		want  bool
	}{
		{[]string{"GET / HTTP/1.1\r\nHost: x\r\n\r\n"}, true},
		{[]string{"GET / HTTP/1.1\r\nHost: x\r\n", "\r\n"}, true},
		{[]string{"GET / HTTP/1.1\r\nHost: x\r", "\n\r", "\n"}, true},
		{[]string{"GET / HTTP/1.1\nHost: x\n\n"}, true},
		{[]string{"GET / HTTP/1.1\r\nHost: x\r\n"}, false},
		{[]string{"GET / HTTP/1.1\r\n", "Host: x\r\n", "X-Slow: 1\r\n"}, false},
		{[]string{"\r\r\r\r"}, false},
		{[]string{""}, false},
	} {
		var b blankLine
		got := false
		for _, r := range tc.reads {
			got = b.in([]byte(r))
		}
		if got != tc.want {
			t.Errorf("%q: %v, want %v", tc.reads, got, tc.want)
		}
	}
}
