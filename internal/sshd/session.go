package sshd

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/avsidecar/avsidecar/internal/pid1"
	"github.com/creack/pty"
	"github.com/gliderlabs/ssh"
	"github.com/pkg/sftp"
	"github.com/rs/zerolog"
	gossh "golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"
)

const (
	// sftpMaxPacket is the largest read reply, as OpenSSH's sftp-server
	// (SFTP_MAX_READ_LENGTH): larger replies overflow OpenSSH's client
	// message limit, smaller ones make `sftp -B 262144` re-request.
	sftpMaxPacket = 256*1024 - 1024
	// killGrace is how long a hung-up session's processes get before
	// SIGKILL when the client went away.
	killGrace = 5 * time.Second
	// ptyDrain bounds how long output is still read from a PTY after its
	// shell exited, in case a background job keeps the terminal open.
	ptyDrain = time.Second
)

// session is one "session" channel: at most one exec, shell or subsystem.
type session struct {
	srv  *Server
	ch   gossh.Channel
	conn *gossh.ServerConn
	ak   *authorizedKey
	log  zerolog.Logger
	env  []string // accepted client env requests
	pty  *ptyRequest
	// ptyModes are the pty-req's terminal modes this server applies.
	ptyModes []termMode

	mu      sync.Mutex
	started bool
	proc    *pid1.Process // the running command, nil when none
	ptmx    *os.File      // PTY master while a PTY command runs

	hungup   chan struct{} // closed by hangup: stop waiting for output
	hangOnce sync.Once
	ended    chan struct{} // closed when the work ended, before the status is sent
	done     chan struct{} // closed when the status was sent and the channel closed
}

// ptyRequest is a "pty-req" (RFC 4254 6.2). Modes is encoded as RFC 4254
// 8 says (see parseTermModes).
type ptyRequest struct {
	Term                      string
	Cols, Rows, Width, Height uint32
	Modes                     string
}

// handleSession accepts a session channel within the MaxSessions limit
// and serves its requests.
func (s *Server) handleSession(_ *ssh.Server, conn *gossh.ServerConn, nc gossh.NewChannel, ctx ssh.Context) {
	ak, ok := ctx.Value(ctxKeyAuth).(*authorizedKey)
	if !ok {
		nc.Reject(gossh.Prohibited, "not authenticated") //nolint:errcheck // client may be gone
		return
	}
	ss := &session{
		srv: s, conn: conn, ak: ak,
		log: s.log.With().Str("user", conn.User()).Str("remote", conn.RemoteAddr().String()).
			Str("fingerprint", ak.fingerprint).Logger(),
		hungup: make(chan struct{}),
		ended:  make(chan struct{}),
		done:   make(chan struct{}),
	}
	s.mu.Lock()
	if s.closing || len(s.sessions) >= s.cfg.MaxSessions {
		s.mu.Unlock()
		s.sessionsRefused.Add(1)
		ss.log.Warn().Int("max_sessions", s.cfg.MaxSessions).Msg("session refused: too many sessions")
		nc.Reject(gossh.ResourceShortage, "too many sessions") //nolint:errcheck // client may be gone
		return
	}
	s.sessions[ss] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.removeSession(ss)
		ss.log.Debug().Msg("session removed")
	}()

	ch, reqs, err := nc.Accept()
	if err != nil {
		ss.log.Debug().Err(err).Msg("accept session")
		return
	}
	ss.mu.Lock()
	ss.ch = ch
	ss.mu.Unlock()
	select {
	case <-ss.hungup: // shutdown began while accepting
		ch.Close()
	default:
	}
	ss.serve(reqs)
}

// serve answers the channel's requests until the client closes it. When
// that happens while a command still runs, the command is hung up.
func (ss *session) serve(reqs <-chan *gossh.Request) {
	for req := range reqs {
		ok, run := ss.handle(req)
		if req.WantReply {
			req.Reply(ok, nil) //nolint:errcheck // client may be gone
		}
		if run != nil {
			// Output flows only once the client has seen the reply.
			go run()
		}
	}
	ss.mu.Lock()
	started := ss.started
	ss.mu.Unlock()
	if !started {
		ss.ch.Close()
		return
	}
	select {
	case <-ss.ended:
		// The client closed after the work ended (usually on seeing the
		// exit status): nothing to hang up.
		<-ss.done
		return
	default:
	}
	ss.log.Info().Msg("client closed session; hanging up")
	ss.hangup()
	t := time.NewTimer(killGrace)
	defer t.Stop()
	select {
	case <-ss.done:
	case <-t.C:
		ss.kill()
		<-ss.done
	}
}

// hangup asks the session to end: SIGHUP to its process group, or a
// closed channel for sftp and sessions that never started.
func (ss *session) hangup() {
	ss.hangOnce.Do(func() { close(ss.hungup) })
	ss.mu.Lock()
	proc, ch := ss.proc, ss.ch
	if proc != nil {
		_ = proc.SignalGroup(syscall.SIGHUP)
	}
	ss.mu.Unlock()
	if proc == nil && ch != nil {
		ch.Close()
	}
}

// kill ends the session now: SIGKILL to its process group and the channel
// closed.
func (ss *session) kill() {
	ss.hangOnce.Do(func() { close(ss.hungup) })
	ss.mu.Lock()
	proc, ch := ss.proc, ss.ch
	if proc != nil {
		_ = proc.SignalGroup(syscall.SIGKILL)
	}
	ss.mu.Unlock()
	if ch != nil {
		ch.Close()
	}
}

// handle answers one channel request. run, when not nil, is started after
// the reply.
func (ss *session) handle(req *gossh.Request) (ok bool, run func()) {
	ss.mu.Lock()
	started := ss.started
	ss.mu.Unlock()
	switch req.Type {
	case "env":
		var kv struct{ Name, Value string }
		if started || gossh.Unmarshal(req.Payload, &kv) != nil {
			return false, nil
		}
		if !clientEnvAllowed(kv.Name, kv.Value) {
			ss.log.Debug().Str("name", kv.Name).Msg("env refused")
			return false, nil
		}
		ss.env = append(ss.env, kv.Name+"="+kv.Value)
		return true, nil
	case "pty-req":
		if started || ss.pty != nil {
			return false, nil
		}
		if ss.ak.noPTY {
			ss.log.Info().Msg("pty refused by key option")
			return false, nil
		}
		var p ptyRequest
		if gossh.Unmarshal(req.Payload, &p) != nil {
			return false, nil
		}
		modes, err := parseTermModes(p.Modes)
		if err != nil {
			// OpenSSH drops the connection; refusing the PTY is enough.
			ss.log.Info().Err(err).Msg("pty refused: bad terminal modes")
			return false, nil
		}
		ss.pty, ss.ptyModes = &p, modes
		return true, nil
	case "window-change":
		var w struct{ Cols, Rows, Width, Height uint32 }
		if ss.pty == nil || gossh.Unmarshal(req.Payload, &w) != nil {
			return false, nil
		}
		ss.mu.Lock()
		defer ss.mu.Unlock()
		ss.pty.Cols, ss.pty.Rows = w.Cols, w.Rows
		if ss.ptmx != nil {
			_ = pty.Setsize(ss.ptmx, winsize(ss.pty))
		}
		return true, nil
	case "signal":
		var sig struct{ Name string }
		if gossh.Unmarshal(req.Payload, &sig) != nil {
			return false, nil
		}
		return ss.signal(sig.Name), nil
	case "exec", "shell", "subsystem":
		var arg struct{ Value string }
		if started || (req.Type != "shell" && gossh.Unmarshal(req.Payload, &arg) != nil) {
			return false, nil
		}
		run = ss.start(req.Type, arg.Value)
		return run != nil, run
	case "auth-agent-req@openssh.com", "x11-req":
		ss.log.Info().Str("type", req.Type).Msg("forwarding refused")
		return false, nil
	default:
		ss.log.Debug().Str("type", req.Type).Msg("channel request refused")
		return false, nil
	}
}

// start starts what the client asked for, or the key's forced command,
// and returns the function that serves it; nil when it cannot start.
func (ss *session) start(kind, arg string) func() {
	cfg := ss.srv.cfg
	env := ss.environ()
	var argv []string
	switch {
	case ss.ak.hasCommand:
		argv = []string{cfg.Shell, "-c", ss.ak.command}
		if arg != "" {
			env = append(env, "SSH_ORIGINAL_COMMAND="+arg)
		}
	case kind == "subsystem" && arg == "sftp":
	case kind == "subsystem":
		ss.log.Info().Str("subsystem", arg).Msg("subsystem refused")
		return nil
	case kind == "shell":
		argv = []string{"-" + filepath.Base(cfg.Shell)} // a login shell
	default:
		argv = []string{cfg.Shell, "-c", arg}
	}
	ev := ss.log.Info().Str("kind", kind).Bool("pty", ss.pty != nil)
	switch kind {
	case "subsystem":
		ev = ev.Str("subsystem", arg)
	case "exec":
		ev = ev.Str("command", arg)
	}
	ev.Bool("forced_command", ss.ak.hasCommand).Msg("command")

	ss.mu.Lock()
	ss.started = true
	ss.mu.Unlock()
	if argv == nil {
		return ss.runSFTP
	}
	cmd := &exec.Cmd{Path: cfg.Shell, Args: argv, Env: env, Dir: cfg.Dir}
	var run func()
	var err error
	if ss.pty != nil {
		run, err = ss.startPTY(cmd)
	} else {
		run, err = ss.startPipes(cmd)
	}
	if err != nil {
		ss.log.Warn().Err(err).Msg("command failed to start")
		ss.mu.Lock()
		ss.started = false
		ss.mu.Unlock()
		return nil
	}
	return run
}

// startPipes starts cmd in its own process group with pipes for stdin,
// stdout and stderr. Like OpenSSH, the session ends when the command has
// exited and its output is closed (or the session is hung up).
func (ss *session) startPipes(cmd *exec.Cmd) (func(), error) {
	var fds [6]*os.File // inR, inW, outR, outW, errR, errW
	for i := 0; i < 6; i += 2 {
		r, w, err := os.Pipe()
		if err != nil {
			closeAll(fds[:i]...)
			return nil, fmt.Errorf("pipe: %w", err)
		}
		fds[i], fds[i+1] = r, w
	}
	inR, inW, outR, outW, errR, errW := fds[0], fds[1], fds[2], fds[3], fds[4], fds[5]
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, errW
	proc, err := pid1.Start(cmd)
	closeAll(inR, outW, errW)
	if err != nil {
		closeAll(inW, outR, errR)
		return nil, fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	ss.mu.Lock()
	ss.proc = proc
	ss.mu.Unlock()
	return func() {
		start := time.Now()
		go func() {
			_, _ = io.Copy(inW, ss.ch)
			inW.Close()
		}()
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); _, _ = io.Copy(ss.ch, outR) }()
		go func() { defer wg.Done(); _, _ = io.Copy(ss.ch.Stderr(), errR) }()
		werr := proc.Wait()
		ss.mu.Lock()
		ss.proc = nil
		ss.mu.Unlock()
		output := make(chan struct{})
		go func() { wg.Wait(); close(output) }()
		select {
		case <-output:
		case <-ss.hungup:
			closeAll(outR, errR)
			<-output
		}
		closeAll(inW, outR, errR)
		ss.finish(werr, start)
	}, nil
}

// startPTY starts cmd as a session leader with a new PTY as its
// controlling terminal, set to the client's terminal modes.
func (ss *session) startPTY(cmd *exec.Cmd) (func(), error) {
	ptmx, tty, err := pty.Open()
	if err != nil {
		return nil, fmt.Errorf("open pty: %w", err)
	}
	_ = pty.Setsize(ptmx, winsize(ss.pty))
	if err := setTermModes(tty, ss.ptyModes); err != nil {
		// As OpenSSH: the shell still starts, with the kernel's modes.
		ss.log.Warn().Err(err).Msg("terminal modes not applied")
	}
	if ss.pty.Term != "" {
		cmd.Env = append(cmd.Env, "TERM="+ss.pty.Term)
	}
	cmd.Env = append(cmd.Env, "SSH_TTY="+tty.Name())
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
	proc, err := pid1.Start(cmd)
	tty.Close()
	if err != nil {
		ptmx.Close()
		return nil, fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	ss.mu.Lock()
	ss.proc, ss.ptmx = proc, ptmx
	ss.mu.Unlock()
	return func() {
		start := time.Now()
		go func() { _, _ = io.Copy(ptmx, ss.ch) }()
		output := make(chan struct{})
		go func() { _, _ = io.Copy(ss.ch, ptmx); close(output) }()
		werr := proc.Wait()
		ss.mu.Lock()
		ss.proc = nil
		ss.mu.Unlock()
		// The master reads EIO once every holder of the terminal closed
		// it; a background job may keep it open, so the drain is bounded.
		t := time.NewTimer(ptyDrain)
		select {
		case <-output:
		case <-ss.hungup:
		case <-t.C:
		}
		t.Stop()
		ss.mu.Lock()
		ss.ptmx = nil
		ptmx.Close()
		ss.mu.Unlock()
		<-output
		ss.finish(werr, start)
	}, nil
}

// runSFTP serves the sftp subsystem in process over the channel.
func (ss *session) runSFTP() {
	start := time.Now()
	status := 0
	srv, err := sftp.NewServer(ss.ch,
		sftp.WithServerWorkingDirectory(ss.srv.cfg.Dir),
		sftp.WithMaxTxPacket(sftpMaxPacket),
		sftp.WithAllocator(),
	)
	if err == nil {
		err = srv.Serve()
	}
	if err != nil {
		select {
		case <-ss.hungup:
		default:
			ss.log.Warn().Err(err).Msg("sftp ended with an error")
			status = 1
		}
	}
	ss.sendExit(exitStatus(status), start)
}

// finish reports how the command ended and closes the channel.
func (ss *session) finish(werr error, start time.Time) {
	var ee *pid1.ExitError
	switch {
	case werr == nil:
		ss.sendExit(exitStatus(0), start)
	case !errors.As(werr, &ee):
		ss.log.Warn().Err(werr).Msg("wait for command")
		ss.sendExit(exitStatus(255), start)
	case ee.Status.Signaled():
		ss.sendExit(exitSignal{
			Signal:     strings.TrimPrefix(unix.SignalName(ee.Status.Signal()), "SIG"),
			CoreDumped: ee.Status.CoreDump(),
		}, start)
	default:
		ss.sendExit(exitStatus(ee.ExitCode()), start)
	}
}

// exitStatus and exitSignal are the two ways a session reports its end
// (RFC 4254 6.10).
type (
	exitStatus int
	exitSignal struct {
		Signal     string
		CoreDumped bool
		Error      string
		Lang       string
	}
)

// sendExit sends EOF, the exit report, and closes the channel.
func (ss *session) sendExit(how any, start time.Time) {
	close(ss.ended)
	defer close(ss.done)
	ev := ss.log.Info().Int64("duration_ms", time.Since(start).Milliseconds())
	var req string
	var payload []byte
	switch h := how.(type) {
	case exitStatus:
		req, payload = "exit-status", gossh.Marshal(struct{ Status uint32 }{uint32(h)})
		ev = ev.Int("exit_status", int(h))
	case exitSignal:
		req, payload = "exit-signal", gossh.Marshal(h)
		ev = ev.Str("signal", h.Signal)
	}
	_ = ss.ch.CloseWrite()
	_, _ = ss.ch.SendRequest(req, false, payload)
	ss.ch.Close()
	ev.Msg("session closed")
}

// signal delivers a client "signal" request to the command's process
// group.
func (ss *session) signal(name string) bool {
	sig := unix.SignalNum("SIG" + name)
	if sig == 0 {
		return false
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.proc == nil {
		return false
	}
	ss.log.Info().Str("signal", name).Msg("signal")
	return ss.proc.SignalGroup(sig) == nil
}

// environ builds the session environment: the base, the usual login
// variables, the client's accepted variables, then the key's environment=
// options, which the operator wrote and so take precedence.
func (ss *session) environ() []string {
	cfg := ss.srv.cfg
	env := append([]string(nil), cfg.Env...)
	set := func(k, v string) {
		for _, kv := range cfg.Env {
			if strings.HasPrefix(kv, k+"=") {
				return
			}
		}
		env = append(env, k+"="+v)
	}
	u := ss.srv.user
	set("HOME", u.home)
	set("USER", u.name)
	set("LOGNAME", u.name)
	set("SHELL", cfg.Shell)
	rh, rp, _ := net.SplitHostPort(ss.conn.RemoteAddr().String())
	lh, lp, _ := net.SplitHostPort(ss.conn.LocalAddr().String())
	env = append(env, "SSH_CLIENT="+rh+" "+rp+" "+lp, "SSH_CONNECTION="+rh+" "+rp+" "+lh+" "+lp)
	env = append(env, ss.env...)
	return append(env, ss.ak.env...)
}

// clientEnvAllowed is the safe set of variables a client may send: locale
// and display preferences, nothing that changes what runs (PATH,
// LD_PRELOAD, BASH_ENV...).
func clientEnvAllowed(name, value string) bool {
	if !envName.MatchString(name) || strings.ContainsRune(value, 0) || len(value) > 1024 {
		return false
	}
	switch name {
	case "LANG", "LANGUAGE", "TZ", "COLORTERM", "NO_COLOR":
		return true
	}
	return strings.HasPrefix(name, "LC_")
}

// sessionUser is who sessions run as: the server's own user.
type sessionUser struct{ name, home string }

func currentUser() sessionUser {
	u, err := user.Current()
	if err != nil {
		return sessionUser{name: strconv.Itoa(os.Getuid()), home: "/"}
	}
	home := u.HomeDir
	if home == "" {
		home = "/"
	}
	return sessionUser{name: u.Username, home: home}
}

func winsize(p *ptyRequest) *pty.Winsize {
	return &pty.Winsize{Cols: clamp16(p.Cols), Rows: clamp16(p.Rows), X: clamp16(p.Width), Y: clamp16(p.Height)}
}

func clamp16(v uint32) uint16 {
	if v > 0xffff {
		return 0xffff
	}
	return uint16(v)
}

func closeAll(fs ...*os.File) {
	for _, f := range fs {
		if f != nil {
			f.Close()
		}
	}
}
