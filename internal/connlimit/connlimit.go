// Package connlimit caps the connections a listener keeps open, in all and
// per client address. A connection over a cap is closed as soon as it is
// accepted, so the server never holds it; the client sees the connection
// end at once and may retry.
//
// The per-address cap keeps one client (a scanner, a stuck script, a
// flood) from taking every slot: the kubelet's probes and Prometheus come
// from addresses of their own. Every `kubectl port-forward` user shares
// 127.0.0.1, like the local `avsidecar probe` and `ls`.
package connlimit

import (
	"net"
	"sync"
	"sync/atomic"
)

// Listener is a net.Listener whose Accept drops connections over its caps.
type Listener struct {
	net.Listener
	max, perAddr int

	mu      sync.Mutex
	open    int
	byAddr  map[string]int
	dropped atomic.Uint64
}

// New caps ln at max open connections, and perAddr from one client IP
// address. A cap of zero or less is no cap.
func New(ln net.Listener, max, perAddr int) *Listener {
	return &Listener{Listener: ln, max: max, perAddr: perAddr, byAddr: map[string]int{}}
}

// Accept returns the next connection within the caps, closing the others.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		addr := clientIP(c)
		if l.admit(addr) {
			return &conn{Conn: c, l: l, addr: addr}, nil
		}
		l.dropped.Add(1)
		c.Close()
	}
}

func (l *Listener) admit(addr string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if (l.max > 0 && l.open >= l.max) || (l.perAddr > 0 && l.byAddr[addr] >= l.perAddr) {
		return false
	}
	l.open++
	l.byAddr[addr]++
	return true
}

func (l *Listener) release(addr string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.open--
	if l.byAddr[addr]--; l.byAddr[addr] <= 0 {
		delete(l.byAddr, addr)
	}
}

// Open is the number of connections open now.
func (l *Listener) Open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.open
}

// Dropped counts the connections closed at once for a cap.
func (l *Listener) Dropped() uint64 { return l.dropped.Load() }

// clientIP is the connection's remote IP address, or its whole remote
// address when it has none (a unix socket).
func clientIP(c net.Conn) string {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return a.IP.String()
	}
	return c.RemoteAddr().String()
}

// conn gives its slot back once, on the first Close.
type conn struct {
	net.Conn
	l    *Listener
	addr string
	once sync.Once
}

func (c *conn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.release(c.addr) })
	return err
}
