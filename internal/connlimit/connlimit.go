// Package connlimit caps the connections an HTTP listener keeps open, in
// all and per client, and keeps a reserve beyond the caps so that a
// flood of connections cannot starve the requests that matter most: the
// kubelet's probes.
//
// A client is an IP address, except that every loopback address (all of
// 127.0.0.0/8, and ::1) is one client, and so is an IPv6 /64: a process in
// the pod can use any loopback address, and a host any address of its
// /64, so counting them apart would let one process take every slot. The
// kubelet's probes come from the node's address, a client of its own;
// `avsidecar probe`, `avsidecar status` and every `kubectl port-forward`
// user share the loopback client with whatever else runs in the pod.
//
// Within the caps a connection is served as usual. Beyond them it may have
// a slot of the reserve, where it is served one request, answered with
// "Connection: close", and closed. What decides is whether it has already
// delivered its request: the listening socket is set to TCP_DEFER_ACCEPT,
// so the kernel hands a connection over only once its first data arrived
// (or about a second later), and Accept looks (MSG_PEEK) for a whole
// header block in it. A kubelet probe sends its request as soon as it
// connects, so it arrives whole:
//
//   - a newcomer whose request is whole takes a free reserve slot, or the
//     slot of the oldest reserve connection that has not delivered its
//     request (not in a handler, no whole header block in its socket);
//   - any other newcomer takes a free reserve slot only, and is closed at
//     once when there is none.
//
// So connections that stay silent or trickle (slowloris) fill the reserve
// only while nobody else needs it, and can never push out a probe, whose
// request is whole from the start; no race with the flood's pace decides
// it. A newcomer with a whole request is closed at once only when every
// reserve connection has delivered its own (they are being answered,
// which is quick): a flood of requests, rather than of connections, is a
// matter of CPU.
//
// Why not a separate port or a plain reserved share: at the moment of
// accepting, only what the client sent tells a probe from a flood, and a
// reserve that is first come, first served is taken by the same flood.
package connlimit

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// Listener is a net.Listener whose Accept keeps the open connections
// within its caps and its reserve, as the package doc says. The
// http.Server must use ConnContext and wrap its handler in Track.
type Listener struct {
	net.Listener
	max, perClient, reserve int

	mu       sync.Mutex
	open     int // within the caps
	byClient map[netip.Prefix]int
	spares   int     // reserve connections open
	waiting  []*conn // reserve connections that have not reached a handler, oldest first
	peek     []byte  // Accept's buffer to look at a waiting request; under mu

	dropped atomic.Uint64
}

// New caps ln at max open connections and perClient from one client (zero
// or less: no cap), with reserve more for connections over the caps. A
// TCP listener is set to TCP_DEFER_ACCEPT (see the package doc); where
// that fails the reserve still works, with newcomers judged by what has
// arrived when they are accepted.
func New(ln net.Listener, max, perClient, reserve int) *Listener {
	deferAccept(ln)
	return &Listener{Listener: ln, max: max, perClient: perClient, reserve: reserve,
		byClient: map[netip.Prefix]int{}, peek: make([]byte, peekSize)}
}

// deferSeconds is TCP_DEFER_ACCEPT's wait for a connection's first data,
// after which the kernel hands it over all the same.
const deferSeconds = 1

// deferAccept sets TCP_DEFER_ACCEPT on a TCP listener.
func deferAccept(ln net.Listener) {
	withFD(ln, func(fd int) { _ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT, deferSeconds) })
}

// withFD runs fn on the file descriptor of a socket (a TCP connection or
// listener), and reports whether there was one.
func withFD(x any, fn func(fd int)) bool {
	sc, ok := x.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	return rc.Control(func(fd uintptr) { fn(int(fd)) }) == nil
}

// peekSize bounds what is looked at of a waiting request: the kubelet's
// probe is about 150 bytes, a Prometheus scrape about 300.
const peekSize = 2048

// Accept returns the next connection that has a slot, within the caps or
// in the reserve; a connection that cannot have one is closed at once.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if lc := l.admit(c); lc != nil {
			return lc, nil
		}
		l.dropped.Add(1)
		c.Close()
	}
}

// admit gives c a slot within the caps, else one of the reserve, closing
// the reserve connection that makes room for it; nil when there is none.
func (l *Listener) admit(c net.Conn) *conn {
	lc := &conn{Conn: c, l: l, key: clientOf(c.RemoteAddr())}
	l.mu.Lock()
	if (l.max <= 0 || l.open < l.max) && (l.perClient <= 0 || l.byClient[lc.key] < l.perClient) {
		l.open++
		l.byClient[lc.key]++
		l.mu.Unlock()
		return lc
	}
	var victim *conn
	if l.spares >= l.reserve {
		if l.reserve > 0 && requestWaiting(c, l.peek) {
			victim = l.oldestSilentLocked()
		}
		if victim == nil {
			l.mu.Unlock()
			return nil
		}
		l.releaseLocked(victim)
	}
	lc.spare = true
	l.spares++
	l.waiting = append(l.waiting, lc)
	l.mu.Unlock()
	if victim != nil {
		l.dropped.Add(1)
		victim.Conn.Close()
	}
	return lc
}

// oldestSilentLocked is the oldest reserve connection that has not
// delivered its request (the server has not read a whole header block
// from it, nor is one waiting in its socket), or nil; l.mu is held.
func (l *Listener) oldestSilentLocked() *conn {
	for _, c := range l.waiting {
		if !c.delivered.Load() && !requestWaiting(c.Conn, l.peek) {
			return c
		}
	}
	return nil
}

// releaseLocked gives c's slot back, once; l.mu is held.
func (l *Listener) releaseLocked(c *conn) {
	if c.released {
		return
	}
	c.released = true
	if !c.spare {
		l.open--
		if l.byClient[c.key]--; l.byClient[c.key] <= 0 {
			delete(l.byClient, c.key)
		}
		return
	}
	l.spares--
	l.servedLocked(c)
}

// servedLocked takes c off the reserve connections that may give their
// slot up; l.mu is held.
func (l *Listener) servedLocked(c *conn) {
	if i := slices.Index(l.waiting, c); i >= 0 {
		l.waiting = slices.Delete(l.waiting, i, i+1)
	}
}

// Open is the number of connections open now, the reserve's included.
func (l *Listener) Open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.open + l.spares
}

// Dropped counts the connections closed for the caps: newcomers closed at
// once, and reserve connections closed to make room for a newcomer.
func (l *Listener) Dropped() uint64 { return l.dropped.Load() }

// clientOf is the client a remote address counts as: its IP address,
// except that every loopback address is one client and an IPv6 address
// counts as its /64. An address that is not IP (a unix socket) is the
// zero Prefix, one client.
func clientOf(a net.Addr) netip.Prefix {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return netip.Prefix{}
	}
	ip, ok := netip.AddrFromSlice(ta.IP)
	if !ok {
		return netip.Prefix{}
	}
	ip = ip.Unmap()
	switch {
	case ip.IsLoopback():
		return loopback
	case ip.Is6():
		p, _ := ip.Prefix(64)
		return p
	default:
		return netip.PrefixFrom(ip, 32)
	}
}

// loopback is the one client of every loopback address.
var loopback = netip.MustParsePrefix("127.0.0.0/8")

// requestWaiting reports whether a whole request header block is in c's
// socket, unread, looking (MSG_PEEK, without blocking) at up to len(buf)
// bytes: such a connection is answered without waiting on its client.
func requestWaiting(c net.Conn, buf []byte) bool {
	n := 0
	peek := func(fd int) {
		for { // a signal (the runtime's preemption) is no answer
			var err error
			if n, _, err = unix.Recvfrom(fd, buf, unix.MSG_PEEK|unix.MSG_DONTWAIT); err != unix.EINTR {
				return
			}
		}
	}
	if !withFD(c, peek) || n <= 0 {
		return false
	}
	var blank blankLine
	return blank.in(buf[:n])
}

// blankLine finds the empty line that ends a header block across reads:
// it counts the line ends in a row, a CR not breaking the row, so that
// CRLF CRLF and LF LF (which Go's server also takes) both end it.
type blankLine int

// in reports whether the header block ends in p or before it.
func (b *blankLine) in(p []byte) bool {
	for _, c := range p {
		switch {
		case *b >= 2:
			return true
		case c == '\n':
			*b++
		case c != '\r':
			*b = 0
		}
	}
	return *b >= 2
}

// conn is an admitted connection. It gives its slot back once, on the
// first Close or when it is closed to make room.
type conn struct {
	net.Conn
	l     *Listener
	key   netip.Prefix
	spare bool // holds a reserve slot

	// delivered is set once the server has read a whole header block from
	// a reserve connection: from then on it is being answered, even
	// before its handler starts. blank is Read's state for it.
	delivered atomic.Bool
	blank     blankLine

	released bool // under l.mu
}

// Read implements net.Conn, and notes when a reserve connection has
// delivered its request.
func (c *conn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if c.spare && n > 0 && !c.delivered.Load() && c.blank.in(p[:n]) {
		c.delivered.Store(true)
	}
	return n, err
}

// Close implements net.Conn.
func (c *conn) Close() error {
	err := c.Conn.Close()
	c.l.mu.Lock()
	c.l.releaseLocked(c)
	c.l.mu.Unlock()
	return err
}

// connKey is the context key of the *conn a request arrived on.
type connKey struct{}

// ConnContext is the http.Server's ConnContext: it lets Track find the
// connection of a request.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	if lc, ok := c.(*conn); ok {
		return context.WithValue(ctx, connKey{}, lc)
	}
	return ctx
}

// Track serves requests with h. A request on a reserve connection has
// delivered itself: its connection no longer gives its slot up, and is
// closed after the answer.
func Track(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c, ok := r.Context().Value(connKey{}).(*conn); ok && c.spare {
			c.l.mu.Lock()
			c.l.servedLocked(c)
			c.l.mu.Unlock()
			w.Header().Set("Connection", "close")
		}
		h.ServeHTTP(w, r)
	})
}
