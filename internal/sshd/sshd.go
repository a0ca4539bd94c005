// Package sshd is avsidecar's embedded SSH server: the replacement for the
// old recipe's `sshd -D`, built on gliderlabs/ssh and secure by default.
//
// Only public-key authentication against an OpenSSH authorized_keys file
// is offered; the file is reloaded when it changes (a Kubernetes Secret
// mount swaps a symlink). Sessions run commands and shells through the
// configured shell, with a PTY when asked, and serve the sftp subsystem in
// process. Port, agent and X11 forwarding are refused. Unauthenticated
// connections are capped and must log in within a grace period, so a
// flood cannot exhaust memory or lock out a real login from elsewhere.
//
// The user name a client sends is logged but not checked: authorized_keys
// is the only authority, and every session runs as the server's own user,
// as `kubectl exec` into the container would.
package sshd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gliderlabs/ssh"
	"github.com/rs/zerolog"
	gossh "golang.org/x/crypto/ssh"
)

// Config is the embedded SSH server's configuration. Zero values take the
// documented defaults.
type Config struct {
	// Addr is the TCP listen address, such as ":22" (AVSIDECAR_SSH_ADDR).
	Addr string
	// AuthorizedKeysFile is the host path of the OpenSSH authorized_keys
	// file (AVSIDECAR_SSH_AUTHORIZED_KEYS). A missing or empty file lets
	// nobody in. Its directory is watched, so edits and the Kubernetes
	// Secret `..data` symlink swap take effect for the next login.
	AuthorizedKeysFile string
	// HostKeyDir is the host directory (the state dir) that holds
	// ssh_host_ed25519_key and ssh_host_rsa_key. Missing keys are made
	// once with mode 0600 and reused on every start.
	HostKeyDir string
	// Shell runs commands (`Shell -c CMD`) and login shells. Default
	// "/bin/sh".
	Shell string
	// Dir is the working directory of sessions and of sftp. Default "/".
	Dir string
	// Env is the base environment of sessions, as KEY=value. Nil means
	// only a standard PATH. HOME, USER, LOGNAME, SHELL, SSH_CONNECTION and
	// SSH_CLIENT are added unless Env sets them; clients may only add
	// LANG, LANGUAGE, LC_*, TZ, COLORTERM and NO_COLOR.
	Env []string
	// MaxSessions caps concurrent sessions over all connections; more
	// are refused with "resource shortage". Default 16.
	MaxSessions int
	// MaxHandshakes caps concurrent unauthenticated connections; more
	// are closed at once. Default 64 (each costs tens of KiB).
	MaxHandshakes int
	// MaxHandshakesPerSource caps concurrent unauthenticated connections
	// from one client address, so one flooding address cannot take every
	// handshake slot. Default 16: a backup server may open many sessions
	// at once.
	MaxHandshakesPerSource int
	// IdleTimeout closes a connection with no traffic in either direction
	// for this long. Default 15m; negative disables it.
	IdleTimeout time.Duration
	// LoginGraceTimeout closes a connection that has not authenticated
	// this long after it was accepted. Default 30s.
	LoginGraceTimeout time.Duration
	// ShutdownTimeout bounds Run's stop: sessions get SIGHUP (sftp is
	// closed), then at this deadline their process groups get SIGKILL
	// and connections are closed. Default 10s.
	ShutdownTimeout time.Duration
	// KeysResync re-reads the authorized_keys file this often in case a
	// file system event was missed (or the directory did not exist yet).
	// Default 1m.
	KeysResync time.Duration
}

func (c *Config) setDefaults() {
	if c.Shell == "" {
		c.Shell = "/bin/sh"
	}
	if c.Dir == "" {
		c.Dir = "/"
	}
	if c.Env == nil {
		c.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	}
	if c.MaxSessions <= 0 {
		c.MaxSessions = 16
	}
	if c.MaxHandshakes <= 0 {
		c.MaxHandshakes = 64
	}
	if c.MaxHandshakesPerSource <= 0 {
		c.MaxHandshakesPerSource = 16
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = 15 * time.Minute
	}
	if c.IdleTimeout < 0 {
		c.IdleTimeout = 0
	}
	if c.LoginGraceTimeout <= 0 {
		c.LoginGraceTimeout = 30 * time.Second
	}
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = 10 * time.Second
	}
	if c.KeysResync <= 0 {
		c.KeysResync = time.Minute
	}
}

// Status is a snapshot of the server for /v1/status and /metrics.
type Status struct {
	// Addr is the address the server listens on.
	Addr string `json:"addr"`
	// HostKeyFingerprints are the SHA256 fingerprints of the host keys.
	HostKeyFingerprints []string `json:"host_key_fingerprints"`
	// AuthorizedKeys is how many keys may log in.
	AuthorizedKeys int `json:"authorized_keys"`
	// AuthorizedKeysMissing is true when the file does not exist.
	AuthorizedKeysMissing bool `json:"authorized_keys_missing"`
	// AuthorizedKeysEmpty is true when the file exists but holds no
	// usable key.
	AuthorizedKeysEmpty bool `json:"authorized_keys_empty"`
	// AuthorizedKeysRefused counts lines of the file that were refused
	// (unparsable, or with options this server cannot honour).
	AuthorizedKeysRefused int `json:"authorized_keys_refused"`
	// ActiveSessions is the number of open sessions.
	ActiveSessions int `json:"active_sessions"`
	// Logins counts successful authentications since start.
	Logins uint64 `json:"logins_total"`
	// Refusals counts refused authentication attempts since start.
	Refusals uint64 `json:"refusals_total"`
	// SessionsRefused counts sessions refused by MaxSessions.
	SessionsRefused uint64 `json:"sessions_refused_total"`
	// HandshakesDropped counts connections closed at once because the
	// unauthenticated connection caps were reached.
	HandshakesDropped uint64 `json:"handshakes_dropped_total"`
}

// Server is the embedded SSH server. Make it with New, then call Run.
type Server struct {
	cfg      Config
	log      zerolog.Logger
	ln       net.Listener
	srv      *ssh.Server
	hostFPs  []string
	keys     atomic.Pointer[keySet]
	reloadMu sync.Mutex

	mu        sync.Mutex
	closing   bool
	pending   map[*trackedConn]struct{} // not authenticated yet
	conns     map[*trackedConn]struct{} // every open connection
	perSource map[netip.Addr]int
	sessions  map[*session]struct{}
	drained   chan struct{} // closed when closing and no session is left

	user sessionUser

	logins, refusals, sessionsRefused, dropped atomic.Uint64
}

// ctxKeyAuth holds the *authorizedKey that authenticated a connection;
// ctxKeyConn its *trackedConn.
var (
	ctxKeyAuth = &struct{ name string }{"avsidecar-auth"}
	ctxKeyConn = &struct{ name string }{"avsidecar-conn"}
)

// New loads (or makes) the host keys, reads the authorized keys and binds
// cfg.Addr, so a bad address fails here rather than inside Run. The
// listener is released by Run.
func New(cfg Config, log zerolog.Logger) (*Server, error) {
	cfg.setDefaults()
	if cfg.Addr == "" {
		return nil, errors.New("ssh listen address is empty")
	}
	if cfg.AuthorizedKeysFile == "" {
		return nil, errors.New("ssh authorized keys file is empty")
	}
	if cfg.HostKeyDir == "" {
		return nil, errors.New("ssh host key dir is empty")
	}
	if !filepath.IsAbs(cfg.Shell) {
		return nil, fmt.Errorf("ssh shell %q is not an absolute path", cfg.Shell)
	}
	signers, err := loadHostKeys(cfg.HostKeyDir, log)
	if err != nil {
		return nil, fmt.Errorf("host keys: %w", err)
	}
	s := &Server{
		cfg:       cfg,
		log:       log,
		pending:   map[*trackedConn]struct{}{},
		conns:     map[*trackedConn]struct{}{},
		perSource: map[netip.Addr]int{},
		sessions:  map[*session]struct{}{},
		drained:   make(chan struct{}),
		user:      currentUser(),
	}
	for _, sg := range signers {
		s.hostFPs = append(s.hostFPs, gossh.FingerprintSHA256(sg.PublicKey()))
	}
	s.reloadKeys()
	s.srv = &ssh.Server{
		Version:              "avsidecar",
		PublicKeyHandler:     s.checkKey,
		ConnCallback:         s.admit,
		ServerConfigCallback: s.serverConfig,
		IdleTimeout:          cfg.IdleTimeout,
		ChannelHandlers: map[string]ssh.ChannelHandler{
			"session": s.handleSession,
			"default": s.refuseChannel,
		},
		RequestHandlers:   map[string]ssh.RequestHandler{"default": s.refuseRequest},
		SubsystemHandlers: map[string]ssh.SubsystemHandler{},
		ConnectionFailedCallback: func(c net.Conn, err error) {
			s.log.Debug().Err(err).Str("remote", c.RemoteAddr().String()).Msg("handshake failed")
		},
	}
	for _, sg := range signers {
		s.srv.AddHostKey(sg)
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("listen ssh %s: %w", cfg.Addr, err)
	}
	s.ln = ln
	return s, nil
}

// Addr is the address the server listens on (useful with port 0).
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Run serves until ctx is cancelled, then stops within cfg.ShutdownTimeout
// and returns nil. It returns an error only if serving fails.
func (s *Server) Run(ctx context.Context) error {
	s.log.Info().Str("addr", s.ln.Addr().String()).Strs("host_keys", s.hostFPs).Msg("ssh server listening")
	serveErr := make(chan error, 1)
	go func() { serveErr <- s.srv.Serve(s.ln) }()
	wctx, stopWatch := context.WithCancel(ctx)
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		s.watchKeys(wctx)
	}()

	var err error
	select {
	case <-ctx.Done():
	case err = <-serveErr:
		err = fmt.Errorf("serve ssh: %w", err)
	}
	stopWatch()
	s.shutdown()
	if err == nil {
		<-serveErr
	}
	<-watchDone
	s.log.Info().Msg("ssh server stopped")
	return err
}

// shutdown stops accepting, hangs up every session, waits for them until
// the shutdown timeout, then kills what is left and closes every
// connection. It keeps its own registry of connections rather than using
// gliderlabs' Shutdown, whose wait races with a handshake that completes
// meanwhile (a sync.WaitGroup Add during Wait).
func (s *Server) shutdown() {
	deadline := time.Now().Add(s.cfg.ShutdownTimeout)
	s.mu.Lock()
	s.closing = true // admit and handleSession refuse from now on
	sessions := make([]*session, 0, len(s.sessions))
	for ss := range s.sessions {
		sessions = append(sessions, ss)
	}
	pending := make([]*trackedConn, 0, len(s.pending))
	for pc := range s.pending {
		pending = append(pending, pc)
	}
	if len(s.sessions) == 0 {
		close(s.drained)
	}
	s.mu.Unlock()

	if err := s.ln.Close(); err != nil {
		s.log.Debug().Err(err).Msg("close ssh listener")
	}
	for _, pc := range pending {
		pc.Close()
	}
	s.log.Info().Int("sessions", len(sessions)).Dur("timeout_ms", s.cfg.ShutdownTimeout).Msg("closing ssh sessions")
	for _, ss := range sessions {
		ss.hangup()
	}
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	select {
	case <-s.drained:
	case <-timer.C:
		s.mu.Lock()
		left := make([]*session, 0, len(s.sessions))
		for ss := range s.sessions {
			left = append(left, ss)
		}
		s.mu.Unlock()
		s.log.Warn().Int("sessions", len(left)).Msg("ssh sessions still open at shutdown timeout; killing them")
		for _, ss := range left {
			ss.kill()
		}
	}
	s.mu.Lock()
	conns := make([]*trackedConn, 0, len(s.conns))
	for pc := range s.conns {
		conns = append(conns, pc)
	}
	s.mu.Unlock()
	for _, pc := range conns {
		pc.Close()
	}
	// Killed processes and closed connections end their sessions at once;
	// the short wait only keeps Run from returning under their feet.
	select {
	case <-s.drained:
	case <-time.After(time.Second):
		s.log.Warn().Msg("ssh sessions did not finish after kill")
	}
}

// Status returns a snapshot of the server.
func (s *Server) Status() Status {
	ks := s.keys.Load()
	s.mu.Lock()
	active := len(s.sessions)
	s.mu.Unlock()
	return Status{
		Addr:                  s.ln.Addr().String(),
		HostKeyFingerprints:   append([]string(nil), s.hostFPs...),
		AuthorizedKeys:        ks.count,
		AuthorizedKeysMissing: ks.missing,
		AuthorizedKeysEmpty:   !ks.missing && ks.empty(),
		AuthorizedKeysRefused: len(ks.refused),
		ActiveSessions:        active,
		Logins:                s.logins.Load(),
		Refusals:              s.refusals.Load(),
		SessionsRefused:       s.sessionsRefused.Load(),
		HandshakesDropped:     s.dropped.Load(),
	}
}

// trackedConn wraps every admitted connection. Until it authenticates it
// holds a handshake slot, and the login grace timer closes it; after, its
// close is logged as the logout.
type trackedConn struct {
	net.Conn
	s      *Server
	source netip.Addr
	timer  *time.Timer
	once   sync.Once

	mu          sync.Mutex
	fingerprint string // set at login
	user        string
	loginAt     time.Time
	closeOnce   sync.Once
}

// release gives the handshake slot back; called on login and on close.
func (pc *trackedConn) release() {
	pc.once.Do(func() {
		pc.timer.Stop()
		s := pc.s
		s.mu.Lock()
		delete(s.pending, pc)
		if s.perSource[pc.source]--; s.perSource[pc.source] <= 0 {
			delete(s.perSource, pc.source)
		}
		s.mu.Unlock()
	})
}

// loggedIn records the login and frees the handshake slot.
func (pc *trackedConn) loggedIn(user, fingerprint string) {
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

// admit takes a handshake slot for a new connection or closes it at once.
// Dropping is cheaper than queueing: a dropped client just retries.
func (s *Server) admit(ctx ssh.Context, c net.Conn) net.Conn {
	source := addrOf(c.RemoteAddr())
	s.mu.Lock()
	if s.closing || len(s.pending) >= s.cfg.MaxHandshakes || s.perSource[source] >= s.cfg.MaxHandshakesPerSource {
		s.mu.Unlock()
		s.dropped.Add(1)
		s.log.Debug().Str("remote", c.RemoteAddr().String()).Msg("connection dropped: too many unauthenticated connections")
		return nil
	}
	pc := &trackedConn{Conn: c, s: s, source: source}
	s.pending[pc] = struct{}{}
	s.conns[pc] = struct{}{}
	s.perSource[source]++
	pc.timer = time.AfterFunc(s.cfg.LoginGraceTimeout, func() {
		s.log.Info().Str("remote", c.RemoteAddr().String()).Msg("login grace timeout")
		pc.Close()
	})
	s.mu.Unlock()
	ctx.SetValue(ctxKeyConn, pc)
	return pc
}

// serverConfig adds what gliderlabs/ssh does not expose: the callback that
// sees the key that actually signed, and the authentication log.
func (s *Server) serverConfig(ctx ssh.Context) *gossh.ServerConfig {
	return &gossh.ServerConfig{
		MaxAuthTries: 6,
		VerifiedPublicKeyCallback: func(conn gossh.ConnMetadata, key gossh.PublicKey, _ *gossh.Permissions, _ string) (*gossh.Permissions, error) {
			// Authoritative check: PublicKeyCallback results are cached per
			// connection and the file may have changed since.
			ak, err := s.keys.Load().lookup(key, addrOf(conn.RemoteAddr()), time.Now())
			if err != nil {
				return nil, err
			}
			ctx.SetValue(ctxKeyAuth, ak)
			return &gossh.Permissions{}, nil
		},
		AuthLogCallback: func(conn gossh.ConnMetadata, method string, err error) {
			s.authLog(ctx, conn, method, err)
		},
	}
}

// checkKey is the first look at an offered key (also for queries).
func (s *Server) checkKey(ctx ssh.Context, key ssh.PublicKey) bool {
	_, err := s.keys.Load().lookup(key, addrOf(ctx.RemoteAddr()), time.Now())
	if err != nil {
		s.log.Info().Str("user", ctx.User()).Str("remote", ctx.RemoteAddr().String()).
			Str("fingerprint", gossh.FingerprintSHA256(key)).Str("reason", err.Error()).Msg("key refused")
	}
	return err == nil
}

// authLog counts and logs every authentication outcome.
func (s *Server) authLog(ctx ssh.Context, conn gossh.ConnMetadata, method string, err error) {
	if method == "none" && err != nil {
		return // every client probes "none" first; not a refusal
	}
	ev := s.log.Info().Str("user", conn.User()).Str("remote", conn.RemoteAddr().String()).Str("method", method)
	if err != nil {
		s.refusals.Add(1)
		if method == "publickey" {
			ev = s.log.Debug().Str("user", conn.User()).Str("remote", conn.RemoteAddr().String()).Str("method", method)
		}
		ev.Str("reason", err.Error()).Msg("authentication refused")
		return
	}
	s.logins.Add(1)
	fp := ""
	if ak, ok := ctx.Value(ctxKeyAuth).(*authorizedKey); ok {
		fp = ak.fingerprint
		ev = ev.Str("fingerprint", fp).Int("key_line", ak.line)
	}
	if pc, ok := ctx.Value(ctxKeyConn).(*trackedConn); ok {
		pc.loggedIn(conn.User(), fp)
	}
	ev.Msg("login")
}

// refuseChannel refuses every channel type but "session": port forwarding
// (direct-tcpip), X11 and agent channels.
func (s *Server) refuseChannel(_ *ssh.Server, conn *gossh.ServerConn, nc gossh.NewChannel, ctx ssh.Context) {
	s.connLog(ctx, conn).Str("type", nc.ChannelType()).Msg("channel refused")
	nc.Reject(gossh.Prohibited, "not allowed") //nolint:errcheck // the client may be gone
}

// refuseRequest refuses global requests: remote forwarding and the like.
func (s *Server) refuseRequest(ctx ssh.Context, _ *ssh.Server, req *gossh.Request) (bool, []byte) {
	if req.Type == "keepalive@openssh.com" {
		return false, nil
	}
	ev := s.log.Info().Str("remote", ctx.RemoteAddr().String()).Str("type", req.Type)
	if ak, ok := ctx.Value(ctxKeyAuth).(*authorizedKey); ok {
		ev = ev.Str("fingerprint", ak.fingerprint)
	}
	ev.Msg("request refused")
	return false, nil
}

// connLog starts an info line with the connection's identity.
func (s *Server) connLog(ctx ssh.Context, conn *gossh.ServerConn) *zerolog.Event {
	ev := s.log.Info().Str("user", conn.User()).Str("remote", conn.RemoteAddr().String())
	if ak, ok := ctx.Value(ctxKeyAuth).(*authorizedKey); ok {
		ev = ev.Str("fingerprint", ak.fingerprint)
	}
	return ev
}

// removeSession unregisters a session and signals shutdown when it was the
// last one.
func (s *Server) removeSession(ss *session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.sessions, ss)
	if s.closing && len(s.sessions) == 0 {
		select {
		case <-s.drained:
		default:
			close(s.drained)
		}
	}
}

// addrOf returns the IP of a TCP address, or the zero Addr.
func addrOf(a net.Addr) netip.Addr {
	if ta, ok := a.(*net.TCPAddr); ok {
		if ip, ok := netip.AddrFromSlice(ta.IP); ok {
			return ip.Unmap()
		}
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}
