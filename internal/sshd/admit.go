package sshd

import (
	"cmp"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gliderlabs/ssh"
	"golang.org/x/sys/unix"
)

// Admission of unauthenticated connections.
//
// Each holds a handshake slot until it logs in or closes; MaxHandshakes
// bounds them all and MaxHandshakesPerSource those of one address. A full
// table must not lock real logins out, so a newcomer is refused only when
// its own address is the crowd:
//
//   - When the global cap is reached and other addresses hold more slots
//     than the newcomer's, one of their connections is closed and the
//     newcomer admitted: a flood from some addresses never shuts out
//     another.
//   - When the newcomer's own address is at its cap (or is among the
//     busiest at the global cap), the newcomer replaces one of that
//     address's connections with probability 1/replaceOdds and is dropped
//     otherwise. This is OpenSSH's random early drop (MaxStartups
//     start:rate:full) applied at the cap, the only place where it
//     matters, since below the caps there is room for everyone; and unlike
//     OpenSSH at "full", a full address still takes newcomers. Every
//     `kubectl port-forward` user arrives from 127.0.0.1, the flooder's
//     address too, so each try of a real client gets in with that
//     probability whatever the flood's rate.
//
// The connection that gives its slot up comes from the busiest address
// and got least far: its client answered the server the fewest times (a
// connection younger than quietGrace counts one answer even before it
// speaks: OpenSSH loads its keys after connecting, and a login just let
// in must not rank below every stall that sent its version line). Among
// equals, the server prefers one it is waiting on with nothing unread in
// the socket, since a connection it has not served yet, or whose answer
// it has not read yet, is not stalled by its client; then the one silent
// longest. A real client answers at every step of its handshake, so once
// it has answered twice (its version line, then its key exchange) it
// ranks above every stall that went silent after connecting or after its
// version line, whatever their number and rate; before that, the flood
// must get the address's other slots all retaken to displace it. Only
// stalls that answer as often as the login has can displace it later,
// and past the key exchange that takes computing the session keys, as a
// real client does; maxTurns caps what counts.

// replaceOdds: a newcomer from a crowded address replaces one of its
// connections one time in replaceOdds (OpenSSH's default MaxStartups
// drops 30% at its start and all at full; this keeps a fixed 75% at the
// cap, where the replacement happens).
const replaceOdds = 4

// quietGrace: a real client sends its version line within this long of
// connecting, even over `kubectl port-forward`.
const quietGrace = time.Second

// maxTurns caps the answers that rank a connection: a login answers
// about six times (version, key exchange, new keys, then authentication).
const maxTurns = 6

// trackedConn wraps every admitted connection. Until it authenticates it
// holds a handshake slot, and the login grace timer closes it; after, its
// close is logged as the logout.
type trackedConn struct {
	net.Conn
	s      *Server
	source netip.Addr
	timer  *time.Timer
	// turns counts the client's answers: reads that brought bytes after
	// the server wrote something. wrote is set by every write.
	turns atomic.Uint32
	wrote atomic.Bool
	// reading counts Reads in progress: the server waits for the client.
	reading atomic.Int32
	// heard orders unauthenticated connections by staleness on the
	// server's clock: when it was admitted or bytes last arrived. It
	// stops moving at login.
	heard   atomic.Uint64
	since   time.Time   // admitted
	in      atomic.Bool // logged in
	pending bool        // holds a handshake slot; under s.mu

	mu          sync.Mutex
	fingerprint string // set at login
	user        string
	loginAt     time.Time
	closeOnce   sync.Once
}

// Read implements net.Conn and notes that the client spoke.
func (pc *trackedConn) Read(b []byte) (int, error) {
	pc.reading.Add(1)
	n, err := pc.Conn.Read(b)
	pc.reading.Add(-1)
	if n > 0 && !pc.in.Load() {
		pc.heard.Store(pc.s.clock.Add(1))
		if pc.wrote.Swap(false) && pc.turns.Load() < maxTurns {
			pc.turns.Add(1)
		}
	}
	return n, err
}

// Write implements net.Conn and notes that the client has something to
// answer.
func (pc *trackedConn) Write(b []byte) (int, error) {
	if !pc.in.Load() {
		pc.wrote.Store(true)
	}
	return pc.Conn.Write(b)
}

// releaseLocked gives the handshake slot back; s.mu is held.
func (pc *trackedConn) releaseLocked() {
	if !pc.pending {
		return
	}
	pc.pending = false
	pc.timer.Stop()
	s := pc.s
	delete(s.pending, pc)
	if s.perSource[pc.source]--; s.perSource[pc.source] <= 0 {
		delete(s.perSource, pc.source)
	}
}

// release gives the handshake slot back; called on login and on close.
func (pc *trackedConn) release() {
	pc.s.mu.Lock()
	pc.releaseLocked()
	pc.s.mu.Unlock()
}

// loggedIn records the login and frees the handshake slot.
func (pc *trackedConn) loggedIn(user, fingerprint string) {
	pc.in.Store(true)
	pc.mu.Lock()
	pc.user, pc.fingerprint, pc.loginAt = user, fingerprint, time.Now()
	pc.mu.Unlock()
	pc.release()
}

// Close implements net.Conn.
func (pc *trackedConn) Close() error {
	pc.release()
	pc.closeOnce.Do(func() {
		pc.s.mu.Lock()
		delete(pc.s.conns, pc)
		pc.s.mu.Unlock()
		pc.mu.Lock()
		defer pc.mu.Unlock()
		if !pc.loginAt.IsZero() {
			pc.s.log.Info().Str("user", pc.user).Str("remote", pc.RemoteAddr().String()).Str("fingerprint", pc.fingerprint).
				Int64("duration_ms", time.Since(pc.loginAt).Milliseconds()).Msg("logout")
		}
	})
	return pc.Conn.Close()
}

// admit takes a handshake slot for a new connection, making room as the
// comment at the top of this file says, or closes it at once. Dropping
// is cheaper than queueing: a dropped client just retries.
func (s *Server) admit(ctx ssh.Context, c net.Conn) net.Conn {
	source := addrOf(c.RemoteAddr())
	s.mu.Lock()
	var victim *trackedConn
	ok := !s.closing
	if ok {
		victim, ok = s.makeRoom(source)
	}
	if !ok {
		s.mu.Unlock()
		s.dropped.Add(1)
		s.log.Debug().Str("remote", c.RemoteAddr().String()).Msg("connection dropped: too many unauthenticated connections")
		return nil
	}
	pc := &trackedConn{Conn: c, s: s, source: source, pending: true, since: time.Now()}
	pc.heard.Store(s.clock.Add(1))
	s.pending[pc] = struct{}{}
	s.conns[pc] = struct{}{}
	s.perSource[source]++
	pc.timer = time.AfterFunc(s.cfg.LoginGraceTimeout, func() {
		s.log.Info().Str("remote", c.RemoteAddr().String()).Msg("login grace timeout")
		pc.Close()
	})
	s.mu.Unlock()
	if victim != nil {
		s.dropped.Add(1)
		s.evicted.Add(1)
		s.log.Debug().Str("remote", victim.RemoteAddr().String()).Str("for", c.RemoteAddr().String()).
			Uint32("turns", victim.turns.Load()).Int64("age_ms", time.Since(victim.since).Milliseconds()).
			Msg("unauthenticated connection closed to make room")
		victim.Close()
	}
	ctx.SetValue(ctxKeyConn, pc)
	return pc
}

// makeRoom decides whether a newcomer from source gets a handshake slot
// and which unauthenticated connection gives its slot up (nil when one is
// free); the victim's slot is already released. s.mu is held.
func (s *Server) makeRoom(source netip.Addr) (victim *trackedConn, ok bool) {
	n := s.perSource[source]
	if n < s.cfg.MaxHandshakesPerSource && len(s.pending) < s.cfg.MaxHandshakes {
		return nil, true
	}
	if n < s.cfg.MaxHandshakesPerSource {
		victim = s.stalest(func(pc *trackedConn) bool { return s.perSource[pc.source] > n })
	}
	if victim == nil {
		if n == 0 || !s.coin() {
			return nil, false
		}
		victim = s.stalest(func(pc *trackedConn) bool { return pc.source == source })
	}
	victim.releaseLocked()
	return victim, true
}

// stalest returns the unauthenticated connection that keep accepts and
// that should give up its slot first, or nil when keep accepts none: the
// one of the address holding the most slots, that got least far (rank),
// and among those, one the server is waiting on with nothing unread (a
// connection the server has not served yet, or whose answer it has not
// read yet, is not stalled by its client), the one silent longest first.
// s.mu is held; the table is small.
func (s *Server) stalest(keep func(*trackedConn) bool) *trackedConn {
	type cand struct {
		pc      *trackedConn
		held    int
		rank    uint32
		serving bool // the server has yet to read or to serve it
		heard   uint64
	}
	now := time.Now()
	var cands []cand
	for pc := range s.pending {
		if keep(pc) {
			cands = append(cands, cand{pc, s.perSource[pc.source], s.rank(pc, now), pc.reading.Load() == 0, pc.heard.Load()})
		}
	}
	if len(cands) == 0 {
		return nil
	}
	slices.SortFunc(cands, func(a, b cand) int {
		return cmp.Or(cmp.Compare(b.held, a.held), cmp.Compare(a.rank, b.rank),
			compareBool(a.serving, b.serving), cmp.Compare(a.heard, b.heard))
	})
	first := cands[0]
	for _, c := range cands {
		if c.held != first.held || c.rank != first.rank || c.serving {
			break
		}
		if !c.pc.unread() {
			return c.pc
		}
	}
	return first.pc
}

// compareBool orders false before true.
func compareBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	default:
		return -1
	}
}

// rank is how far a connection got: the answers it gave, except that a
// connection younger than s.quietGrace counts one even if it has not
// spoken yet, since a real client may take a moment to send its version
// line (OpenSSH loads its keys after connecting). Otherwise a login just
// admitted would rank below every stall that sent its version line.
func (s *Server) rank(pc *trackedConn, now time.Time) uint32 {
	t := pc.turns.Load()
	if t == 0 && now.Sub(pc.since) < s.quietGrace {
		return 1
	}
	return t
}

// unread reports whether the client sent bytes the server has not read
// yet: it is answering, only the server is slow.
func (pc *trackedConn) unread() bool {
	sc, ok := pc.Conn.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	n := 0
	rc.Control(func(fd uintptr) { n, _ = unix.IoctlGetInt(int(fd), unix.SIOCINQ) }) //nolint:errcheck // a closed conn has nothing unread
	return n > 0
}

// replaceCoin is the default coin: true one time in replaceOdds.
func replaceCoin() bool { return rand.N(replaceOdds) == 0 }
