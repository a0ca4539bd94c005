// Package sshd is avsidecar's embedded SSH server: the replacement for the
// old recipe's `sshd -D`, built on gliderlabs/ssh and secure by default.
//
// Only public-key authentication against an OpenSSH authorized_keys file
// is offered; the file is reloaded when it changes (a Kubernetes Secret
// mount swaps a symlink). A file of tens of thousands of keys costs little:
// it is parsed a line at a time, the set keeps each key's SHA-256 and its
// options only, and an event or resync that changed nothing costs an fstat
// (a new file of the same content, one read to hash it). Sessions run commands and shells through the
// configured shell, with a PTY when asked, and serve the sftp subsystem in
// process. Port, agent and X11 forwarding are refused.
//
// Unauthenticated connections are capped in all and per client address,
// and must log in within a grace period, so a flood cannot exhaust
// memory. Nor can it lock a real login out: at the caps the stalest
// connection of the address holding the most slots makes room for a
// newcomer from an address holding fewer, and a newcomer from the
// flooding address itself (every `kubectl port-forward` user shares
// 127.0.0.1) replaces one of that address's stalest connections with a
// fixed probability per try, whatever the flood's rate. A handshake that
// stalls after connecting or after its version line never displaces a
// login that has answered the key exchange.
//
// The user name a client sends must be one of Config.Users (root alone by
// default, as the old recipe's sshd had); any other is refused as OpenSSH
// refuses an unknown user: every key it offers fails, so the client sees
// "Permission denied (publickey)" and cannot tell an unknown name from an
// unknown key, and the log says "invalid user" with the name. Past that,
// authorized_keys is the only authority, and every session runs as the
// server's own user, as `kubectl exec` into the container would.
//
// SSH is a side feature of a backup sidecar, so it degrades alone: New
// only checks the configuration, and what can fail at start (host keys,
// the bind) fails Listen or Run with an error naming the file or the
// address, which the caller shows as "SSH off" while backups go on. A
// problem with authorized_keys (missing, unreadable, no usable key) lets
// nobody in and shows in Status, and the server serves on.
//
// Host keys are made once in the state dir and kept. A host key file
// that exists but holds no usable key (empty, truncated, garbage, another
// key type) is renamed NAME.damaged-TIME, kept for a human with mode
// 0600, and replaced by a new key, with an error in the log and in
// Status.HostKeysReplaced. An unparseable private key has already lost the
// host identity: refusing to start would change nothing for clients, who
// must accept a new key either way, but would leave operators without SSH
// until someone deletes the file. A key file that cannot be read at all
// (permissions, an I/O error, a directory in its place) may still hold a
// good key, so it is never touched: Listen fails and names it.
package sshd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
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
	// Users are the user names a client may log in as
	// (AVSIDECAR_SSH_USERS); any other name is refused. Default root
	// only. Whichever it gives, a session runs as the server's own user.
	Users []string
	// AuthorizedKeysFile is the host path of the OpenSSH authorized_keys
	// file (AVSIDECAR_SSH_AUTHORIZED_KEYS). A missing or empty file lets
	// nobody in. Its directory is watched, so edits and the Kubernetes
	// Secret `..data` symlink swap take effect for the next login.
	AuthorizedKeysFile string
	// HostKeyDir is the host directory (the state dir) that holds
	// ssh_host_ed25519_key and ssh_host_rsa_key. Missing keys are made
	// once with mode 0600 and reused on every start; damaged ones are set
	// aside and made again (see the package doc).
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
	// MaxHandshakes caps concurrent unauthenticated connections. Default
	// 64 (each costs tens of KiB). When it is reached, the stalest
	// connection of the address holding the most slots makes room for a
	// newcomer from an address holding fewer.
	MaxHandshakes int
	// MaxHandshakesPerSource caps concurrent unauthenticated connections
	// from one client address. Default 16: a backup server may open many
	// sessions at once. A newcomer from an address at its cap replaces
	// that address's stalest connection one time in four and is closed
	// at once otherwise, so a flood from the address a real user shares
	// (127.0.0.1 behind `kubectl port-forward`) lets each of the user's
	// tries in with a one-in-four chance (see the package doc).
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
	if len(c.Users) == 0 {
		c.Users = []string{"root"}
	}
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
	// State is StateStarting, StateServing, StateFailed or StateStopped.
	State string `json:"state"`
	// Error is why the server failed, in StateFailed.
	Error string `json:"error,omitempty"`
	// Addr is the address the server listens on, or the configured one
	// until it does.
	Addr string `json:"addr"`
	// HostKeyFingerprints are the SHA256 fingerprints of the host keys.
	HostKeyFingerprints []string `json:"host_key_fingerprints"`
	// HostKeysReplaced counts host keys found damaged at this start, set
	// aside and replaced by new ones: clients see a new host identity.
	HostKeysReplaced int `json:"host_keys_replaced"`
	// HostKeysSetAside are the damaged files, renamed
	// NAME.damaged-TIME and kept for a human.
	HostKeysSetAside []string `json:"host_keys_set_aside,omitempty"`
	// AuthorizedKeys is how many keys may log in.
	AuthorizedKeys int `json:"authorized_keys"`
	// AuthorizedKeysMissing is true when the file does not exist.
	AuthorizedKeysMissing bool `json:"authorized_keys_missing"`
	// AuthorizedKeysEmpty is true when the file exists but holds no
	// usable key.
	AuthorizedKeysEmpty bool `json:"authorized_keys_empty"`
	// AuthorizedKeysError is why the file could not be read (nobody can
	// log in until it can).
	AuthorizedKeysError string `json:"authorized_keys_error,omitempty"`
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
	// Handshakes is the number of connections open and not
	// authenticated yet.
	Handshakes int `json:"handshakes"`
	// HandshakesDropped counts unauthenticated connections closed
	// because the caps were reached: newcomers dropped at once, and the
	// older connections closed to make room for a newcomer.
	HandshakesDropped uint64 `json:"handshakes_dropped_total"`
	// HandshakesEvicted counts, of HandshakesDropped, the older
	// connections closed to make room (see MaxHandshakes).
	HandshakesEvicted uint64 `json:"handshakes_evicted_total"`
}

// The states of a Server, in Status.State.
const (
	// StateStarting is from New until the server accepts connections:
	// Listen loads or makes the host keys (making an RSA key takes a
	// while) and binds.
	StateStarting = "starting"
	// StateServing is while Run accepts connections.
	StateServing = "serving"
	// StateFailed is when the server could not start or serving failed;
	// Status.Error says why. SSH is off; the rest of the sidecar is not
	// affected.
	StateFailed = "failed"
	// StateStopped is after Run returned on cancellation.
	StateStopped = "stopped"
)

// States lists every state a Server reports, for metrics label sets.
func States() []string {
	return []string{StateStarting, StateServing, StateFailed, StateStopped}
}

// Server is the embedded SSH server. Make it with New (cheap, no I/O),
// then call Run, which calls Listen first unless the caller already did.
type Server struct {
	cfg Config
	log zerolog.Logger
	// coin decides whether a newcomer from an address at its cap replaces
	// one of the address's connections (see admit.go); tests fix it.
	coin func() bool
	// clock orders the events of unauthenticated connections.
	clock atomic.Uint64
	// quietGrace is how long a new connection may stay silent and still
	// rank as a client about to speak (see admit.go); tests shorten it.
	quietGrace time.Duration

	listenMu  sync.Mutex // serialises Listen
	listened  bool
	listenErr error
	ran       atomic.Bool

	srv      *ssh.Server // set by Listen
	user     sessionUser // set by Listen
	keys     atomic.Pointer[keySet]
	reloadMu sync.Mutex

	mu        sync.Mutex
	state     string
	stateErr  string
	ln        net.Listener
	hostFPs   []string
	setAside  []string // damaged host key files
	closing   bool
	pending   map[*trackedConn]struct{} // not authenticated yet
	conns     map[*trackedConn]struct{} // every open connection
	perSource map[netip.Addr]int
	sessions  map[*session]struct{}
	drained   chan struct{} // closed when closing and no session is left

	logins, refusals, sessionsRefused, dropped, evicted atomic.Uint64
}

// ctxKeyAuth holds the *authorizedKey that authenticated a connection;
// ctxKeyConn its *trackedConn; ctxKeyInvalid the invalid user name last
// logged for it.
var (
	ctxKeyAuth    = &struct{ name string }{"avsidecar-auth"}
	ctxKeyConn    = &struct{ name string }{"avsidecar-conn"}
	ctxKeyInvalid = &struct{ name string }{"avsidecar-invalid-user"}
)

// New checks cfg and returns a server in StateStarting. It touches no
// file and no socket, so it can run at build time and its only errors are
// configuration errors; Listen does the slow and fallible part.
func New(cfg Config, log zerolog.Logger) (*Server, error) {
	cfg.setDefaults()
	if err := checkAddr(cfg.Addr); err != nil {
		return nil, err
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
	return &Server{
		cfg:        cfg,
		log:        log,
		coin:       replaceCoin,
		quietGrace: quietGrace,
		state:      StateStarting,
		pending:    map[*trackedConn]struct{}{},
		conns:      map[*trackedConn]struct{}{},
		perSource:  map[netip.Addr]int{},
		sessions:   map[*session]struct{}{},
		drained:    make(chan struct{}),
	}, nil
}

// checkAddr accepts HOST:PORT and :PORT with a numeric port. A host that
// is all digits and dots must be an IPv4 address; other hosts are names,
// resolved by Listen.
func checkAddr(addr string) error {
	if addr == "" {
		return errors.New("ssh listen address is empty")
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("ssh listen address %q: %w", addr, err)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("ssh listen address %q: bad port", addr)
	}
	if _, err := netip.ParseAddr(host); err != nil && host != "" && strings.Trim(host, "0123456789.") == "" {
		return fmt.Errorf("ssh listen address %q: bad IP address", addr)
	}
	return nil
}

// Listen loads the host keys (making any that is missing, and setting
// aside any that is damaged), reads the authorized keys and binds
// cfg.Addr. It is idempotent: the first call does the work and every call
// returns its result. An error names the file or the address and leaves
// the server in StateFailed; the caller should treat it as "SSH off".
func (s *Server) Listen() error {
	s.listenMu.Lock()
	defer s.listenMu.Unlock()
	if s.listened {
		return s.listenErr
	}
	s.listened = true
	s.listenErr = s.listen()
	if s.listenErr != nil {
		s.setState(StateFailed, s.listenErr)
	}
	return s.listenErr
}

func (s *Server) listen() error {
	hk, err := loadHostKeys(s.cfg.HostKeyDir, s.log)
	s.mu.Lock()
	s.setAside = hk.setAside
	s.mu.Unlock()
	if err != nil {
		return err
	}
	var fps []string
	for _, sg := range hk.signers {
		fps = append(fps, gossh.FingerprintSHA256(sg.PublicKey()))
	}
	s.user = currentUser()
	s.reloadKeys()
	s.srv = &ssh.Server{
		Version:              "avsidecar",
		PublicKeyHandler:     s.checkKey,
		ConnCallback:         s.admit,
		ServerConfigCallback: s.serverConfig,
		IdleTimeout:          s.cfg.IdleTimeout,
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
	for _, sg := range hk.signers {
		s.srv.AddHostKey(sg)
	}
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		_, port, _ := net.SplitHostPort(s.cfg.Addr)
		if n, _ := strconv.Atoi(port); n > 0 && n < 1024 && errors.Is(err, syscall.EACCES) {
			return fmt.Errorf("listen ssh %s: %w (ports below 1024 need root or CAP_NET_BIND_SERVICE)", s.cfg.Addr, err)
		}
		return fmt.Errorf("listen ssh %s: %w", s.cfg.Addr, err)
	}
	s.mu.Lock()
	s.ln, s.hostFPs = ln, fps
	s.mu.Unlock()
	return nil
}

// setState records a state and, for StateFailed, its cause.
func (s *Server) setState(state string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.state, s.stateErr = state, ""
	if err != nil {
		s.stateErr = err.Error()
	}
}

// Addr is the address the server listens on (useful with port 0), or nil
// before Listen succeeded.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// Run calls Listen unless the caller did, serves until ctx is cancelled,
// then stops within cfg.ShutdownTimeout and returns nil. It returns an
// error only if the server could not start or serving failed: SSH is then
// off, and the error says why. Run may be called once; it releases the
// listener even when ctx is cancelled before it starts.
func (s *Server) Run(ctx context.Context) error {
	if !s.ran.CompareAndSwap(false, true) {
		return errors.New("ssh server already run")
	}
	if ctx.Err() != nil {
		s.closeUnserved()
		return nil
	}
	if err := s.Listen(); err != nil {
		return err
	}
	s.mu.Lock()
	ln, fps := s.ln, s.hostFPs
	s.mu.Unlock()
	s.log.Info().Str("addr", ln.Addr().String()).Strs("host_keys", fps).Msg("ssh server listening")
	s.setState(StateServing, nil)
	serveErr := make(chan error, 1)
	go func() { serveErr <- s.srv.Serve(ln) }()
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
	if err != nil {
		s.setState(StateFailed, err)
	} else {
		s.setState(StateStopped, nil)
	}
	s.log.Info().Msg("ssh server stopped")
	return err
}

// closeUnserved ends a server whose Run was cancelled before it served:
// the listener Listen may have bound is released.
func (s *Server) closeUnserved() {
	s.listenMu.Lock()
	s.listened = true // a later Listen binds nothing
	if s.listenErr == nil {
		s.listenErr = errors.New("ssh server stopped before it started")
	}
	s.listenMu.Unlock()
	s.mu.Lock()
	s.closing = true
	ln := s.ln
	s.mu.Unlock()
	if ln != nil {
		ln.Close()
	}
	s.setState(StateStopped, nil)
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
	ln := s.ln
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

	if err := ln.Close(); err != nil {
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

// Status returns a snapshot of the server. It is safe to call at any
// time from New on.
func (s *Server) Status() Status {
	s.mu.Lock()
	st := Status{
		State:               s.state,
		Error:               s.stateErr,
		Addr:                s.cfg.Addr,
		HostKeyFingerprints: append([]string(nil), s.hostFPs...),
		HostKeysReplaced:    len(s.setAside),
		HostKeysSetAside:    append([]string(nil), s.setAside...),
		ActiveSessions:      len(s.sessions),
		Handshakes:          len(s.pending),
	}
	if s.ln != nil {
		st.Addr = s.ln.Addr().String()
	}
	s.mu.Unlock()
	if ks := s.keys.Load(); ks != nil { // read by Listen
		st.AuthorizedKeys = ks.count
		st.AuthorizedKeysMissing = ks.missing
		st.AuthorizedKeysEmpty = !ks.missing && ks.err == "" && ks.empty()
		st.AuthorizedKeysError = ks.err
		st.AuthorizedKeysRefused = ks.refused
	}
	st.Logins = s.logins.Load()
	st.Refusals = s.refusals.Load()
	st.SessionsRefused = s.sessionsRefused.Load()
	st.HandshakesDropped = s.dropped.Load()
	st.HandshakesEvicted = s.evicted.Load()
	return st
}

// serverConfig adds what gliderlabs/ssh does not expose: the callback that
// sees the key that actually signed, and the authentication log.
func (s *Server) serverConfig(ctx ssh.Context) *gossh.ServerConfig {
	return &gossh.ServerConfig{
		MaxAuthTries: 6,
		VerifiedPublicKeyCallback: func(conn gossh.ConnMetadata, key gossh.PublicKey, _ *gossh.Permissions, _ string) (*gossh.Permissions, error) {
			// Authoritative check: PublicKeyCallback results are cached per
			// connection and the file may have changed since.
			if !slices.Contains(s.cfg.Users, conn.User()) {
				return nil, errInvalidUser
			}
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

// errInvalidUser refuses every key offered for a user name that is not
// in Config.Users.
var errInvalidUser = errors.New("invalid user")

// checkKey is the first look at an offered key (also for queries). A user
// name not in Config.Users fails every key, as OpenSSH fails an unknown
// user's; it is logged once per connection, as OpenSSH logs "Invalid
// user NAME from ADDR".
func (s *Server) checkKey(ctx ssh.Context, key ssh.PublicKey) bool {
	if !slices.Contains(s.cfg.Users, ctx.User()) {
		if ctx.Value(ctxKeyInvalid) != ctx.User() {
			ctx.SetValue(ctxKeyInvalid, ctx.User())
			s.log.Info().Str("user", ctx.User()).Str("remote", ctx.RemoteAddr().String()).Strs("users", s.cfg.Users).Msg("invalid user")
		}
		return false
	}
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
