// Package register registers the Avamar client with its MCS and keeps a
// receipt, so that a restarted pod does not register again: registering is
// not idempotent on a real server.
//
// A client is registered when it has both var/avagent.cfg and var/cid.bin
// (its unique id), and the receipt matches the server, domain and name.
//
// Every attempt is bounded by a timeout, preceded by a cheap reachability
// check that tells a name that does not resolve from a server that does not
// answer, and followed by a full-jitter exponential backoff. It never gives
// up: a sidecar that stops trying needs a human to notice. A failed attempt
// is classified from the reachability check (made again after the failure)
// and from what the command wrote, never from avagent's exit code: no
// public source documents its codes.
//
// In initscript mode the init script's register verb also starts avagent
// as a daemon; the registrar stops it (with the script's stop verb, then
// for certain by the pid in var/avagent.lck) so that avagent runs in the
// foreground under supervision, with the flags of this start, and nowhere
// else.
package register

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/avsidecar/avsidecar/internal/atomicfile"
	"github.com/avsidecar/avsidecar/internal/avclient"
	"github.com/avsidecar/avsidecar/internal/backoff"
	"github.com/avsidecar/avsidecar/internal/config"
	"github.com/avsidecar/avsidecar/internal/pid1"
)

// Config says where and as whom to register.
type Config struct {
	// Client is the installed Avamar client.
	Client avclient.Client
	// Server is the MCS host name or IP.
	Server string
	// Port is the MCS port. The register verb gets a bare host, as every
	// public script passes it; a port other than config.DefaultMCSPort
	// reaches avagent through avagent.cmd's --mcsport (and, in direct mode,
	// the command line).
	Port int
	// Domain is the Avamar domain.
	Domain string
	// ClientName is the pinned client identity.
	ClientName string
	// Mode is config.ModeDirect (avagent.bin --init) or
	// config.ModeInitScript (the client's init script).
	Mode string
	// ReceiptFile is the host path of the registration receipt.
	ReceiptFile string
	// Timeout bounds one attempt.
	Timeout time.Duration
	// BackoffBase is the first wait's ceiling (default 1s).
	BackoffBase time.Duration
	// BackoffMax caps the wait between attempts.
	BackoffMax time.Duration
	// CheckTimeout bounds the reachability check (default 5s).
	CheckTimeout time.Duration
	// StopTimeout is how long a daemon agent gets between SIGTERM and
	// SIGKILL when the registrar stops it (default 10s).
	StopTimeout time.Duration
}

// Outcomes of one attempt, as they appear in logs, status and metrics.
const (
	// OutcomeSuccess: the command succeeded and left a registration.
	OutcomeSuccess = "success"
	// OutcomeUnresolved: the MCS name does not resolve.
	OutcomeUnresolved = "unresolved"
	// OutcomeUnreachable: the MCS port does not accept TCP (before the
	// command, or again after it failed), or the command said it could not
	// reach or hear the server.
	OutcomeUnreachable = "unreachable"
	// OutcomeRefused: the server was reachable before and after, and the
	// command failed without naming a network or a local problem: the
	// server did not take the registration.
	OutcomeRefused = "refused"
	// OutcomeTimeout: the command did not finish within Timeout.
	OutcomeTimeout = "timeout"
	// OutcomeError: a local failure: the command could not start, named a
	// local problem, or claimed success without leaving a registration.
	OutcomeError = "error"
)

// Outcomes lists every outcome an attempt can have: the label values of
// the registration metrics.
var Outcomes = []string{OutcomeSuccess, OutcomeRefused, OutcomeUnreachable, OutcomeUnresolved, OutcomeTimeout, OutcomeError}

// Receipt records a successful registration.
type Receipt struct {
	Server string    `json:"server"`
	Port   int       `json:"port"`
	Domain string    `json:"domain"`
	Client string    `json:"client"`
	Time   time.Time `json:"time"`
}

// Status is a snapshot of the registration.
type Status struct {
	Registered   bool      `json:"registered"`
	Server       string    `json:"server"`
	Domain       string    `json:"domain"`
	Client       string    `json:"client"`
	Mode         string    `json:"mode"`
	RegisteredAt time.Time `json:"registered_at,omitzero"`
	// Reused is true when a matching receipt made registering unnecessary.
	Reused      bool      `json:"reused"`
	Attempts    int       `json:"attempts"`
	LastAttempt time.Time `json:"last_attempt,omitzero"`
	LastOutcome string    `json:"last_outcome,omitempty"`
	LastError   string    `json:"last_error,omitempty"`
	// Outcomes counts the attempts of this run by outcome.
	Outcomes map[string]int `json:"outcomes"`
}

// Registrar registers the client once, retrying until it succeeds.
type Registrar struct {
	cfg Config
	log zerolog.Logger

	mu     sync.Mutex
	status Status
}

// New checks cfg and fills its defaults.
func New(cfg Config, log zerolog.Logger) (*Registrar, error) {
	if cfg.Server == "" || cfg.Port == 0 || cfg.ClientName == "" || cfg.ReceiptFile == "" {
		return nil, errors.New("register: server, port, client name and receipt file are required")
	}
	if cfg.Mode == "" {
		cfg.Mode = config.ModeDirect
	}
	if cfg.Mode != config.ModeDirect && cfg.Mode != config.ModeInitScript {
		return nil, fmt.Errorf("register: unknown mode %q", cfg.Mode)
	}
	if cfg.BackoffBase <= 0 {
		cfg.BackoffBase = time.Second
	}
	if cfg.CheckTimeout <= 0 {
		cfg.CheckTimeout = 5 * time.Second
	}
	if cfg.StopTimeout <= 0 {
		cfg.StopTimeout = 10 * time.Second
	}
	r := &Registrar{cfg: cfg, log: log}
	r.status = Status{Server: cfg.Server, Domain: cfg.Domain, Client: cfg.ClientName, Mode: cfg.Mode, Outcomes: map[string]int{}}
	return r, nil
}

// Status returns a snapshot.
func (r *Registrar) Status() Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.status
	s.Outcomes = make(map[string]int, len(r.status.Outcomes))
	for k, v := range r.status.Outcomes {
		s.Outcomes[k] = v
	}
	return s
}

// Register returns nil once the client is registered, whether by an
// attempt or by a matching receipt, and ctx's error when ctx ends first. It
// retries every other failure, and fails only when the receipt cannot be
// written.
//
// First it stops any agent daemon var/avagent.lck names (one an earlier
// start left running, say in initscript mode outside a PID namespace): it
// would hold the listen port with the flags of that start, and the
// supervised agent must be the only one.
func (r *Registrar) Register(ctx context.Context) error {
	r.stopDaemon(ctx, "leftover agent daemon stopped")
	want := Receipt{Server: r.cfg.Server, Port: r.cfg.Port, Domain: r.cfg.Domain, Client: r.cfg.ClientName}
	old, haveOld := r.readReceipt()
	missing := r.missingIdentity()
	if haveOld && old.matches(want) && missing == "" {
		r.mu.Lock()
		r.status.Registered, r.status.Reused, r.status.RegisteredAt = true, true, old.Time
		r.mu.Unlock()
		r.log.Info().Str("server", old.Server).Str("domain", old.Domain).Str("client", old.Client).
			Time("registered_at", old.Time).Msg("already registered, not registering again")
		return nil
	}
	if haveOld && !old.matches(want) {
		r.log.Warn().Str("old_server", old.Server).Int("old_port", old.Port).Str("old_domain", old.Domain).Str("old_client", old.Client).
			Str("server", want.Server).Str("domain", want.Domain).Msg("registration changed, registering again")
	} else if haveOld {
		r.log.Warn().Str("missing", missing).Msg("receipt without client registration, registering again")
	}

	b := backoff.Backoff{Base: r.cfg.BackoffBase, Max: r.cfg.BackoffMax, Jitter: true}
	for attempt := 1; ; attempt++ {
		outcome, err := r.attempt(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		r.record(attempt, outcome, err)
		if outcome == OutcomeSuccess {
			want.Time = time.Now().UTC()
			if err := writeReceipt(r.cfg.ReceiptFile, want); err != nil {
				return err
			}
			r.mu.Lock()
			r.status.Registered, r.status.RegisteredAt = true, want.Time
			r.mu.Unlock()
			r.log.Info().Int("attempt", attempt).Str("server", want.Server).Str("domain", want.Domain).
				Str("client", want.Client).Msg("registered")
			return nil
		}
		wait := b.Next()
		r.log.Warn().Int("attempt", attempt).Str("outcome", outcome).Err(err).Dur("backoff_ms", wait).Msg("registration failed")
		if !backoff.Sleep(ctx, wait) {
			return ctx.Err()
		}
	}
}

func (r *Registrar) record(attempt int, outcome string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.status.Attempts = attempt
	r.status.LastAttempt = time.Now()
	r.status.LastOutcome = outcome
	r.status.Outcomes[outcome]++
	r.status.LastError = ""
	if err != nil {
		r.status.LastError = err.Error()
	}
}

// missingIdentity names the first file of the client's registration that
// is missing (avagent.cfg, then cid.bin), or is empty when both exist.
func (r *Registrar) missingIdentity() string {
	for _, f := range []string{r.cfg.Client.RegisteredFile(), r.cfg.Client.IDFile()} {
		if _, err := os.Stat(f); err != nil {
			return f
		}
	}
	return ""
}

// attempt makes one registration attempt and classifies its outcome.
func (r *Registrar) attempt(ctx context.Context) (string, error) {
	if outcome, err := r.reachable(ctx); err != nil {
		return outcome, err
	}
	before, _ := os.Stat(r.cfg.Client.RegisteredFile())

	actx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	out, err := r.runRegistration(actx)
	if r.cfg.Mode == config.ModeInitScript && (err == nil || r.cfg.Client.DaemonPID() != 0) {
		// The verb starts a daemon when it succeeds, and may have started
		// one when it failed (a timeout can strike after it did): none may
		// stay.
		r.stopInitScriptDaemon(ctx)
	}
	if actx.Err() == context.DeadlineExceeded && ctx.Err() == nil {
		return OutcomeTimeout, fmt.Errorf("no answer within %s", r.cfg.Timeout)
	}
	var exitErr *pid1.ExitError
	if errors.As(err, &exitErr) {
		outcome, gone := r.classify(ctx, out)
		if gone != nil {
			return outcome, fmt.Errorf("%w: %s; then %w", err, tail(out), gone)
		}
		return outcome, fmt.Errorf("%w: %s", err, tail(out))
	}
	if err != nil {
		return OutcomeError, fmt.Errorf("run registration: %w", err)
	}
	after, statErr := os.Stat(r.cfg.Client.RegisteredFile())
	if statErr != nil {
		return OutcomeError, fmt.Errorf("registration claimed success but left no %s", filepath.Base(r.cfg.Client.RegisteredFile()))
	}
	if before != nil && os.SameFile(before, after) && before.ModTime().Equal(after.ModTime()) && before.Size() == after.Size() {
		return OutcomeError, fmt.Errorf("registration claimed success but did not rewrite %s", filepath.Base(r.cfg.Client.RegisteredFile()))
	}
	if _, err := os.Stat(r.cfg.Client.IDFile()); err != nil {
		return OutcomeError, fmt.Errorf("registration claimed success but left no %s", filepath.Base(r.cfg.Client.IDFile()))
	}
	return OutcomeSuccess, nil
}

// Words in a failed registration's output that name a problem on this
// side, and ones that name a network problem. Checked in this order, case
// folded; they are the generic words of system and network errors, not an
// Avamar message catalogue (none is public).
var (
	localWords   = []string{"cannot write", "can't write", "read-only file system", "no space left", "disk quota", "cannot create", "can't create", "no such file or directory"}
	networkWords = []string{"connect", "unreachable", "timed out", "timeout", "no route", "did not answer", "not respond", "no response", "network"}
)

// classify tells why a registration command failed: the server is checked
// again (it may have gone away during the attempt), then the output is
// read for a local or a network problem; a reachable server that did not
// register the client refused it. The exit code is not read: avagent's
// codes are documented nowhere. The error is the second check's, when the
// server has gone.
func (r *Registrar) classify(ctx context.Context, out []byte) (string, error) {
	if outcome, err := r.reachable(ctx); err != nil {
		return outcome, err
	}
	text := strings.ToLower(string(out))
	for _, w := range localWords {
		if strings.Contains(text, w) {
			return OutcomeError, nil
		}
	}
	for _, w := range networkWords {
		if strings.Contains(text, w) {
			return OutcomeUnreachable, nil
		}
	}
	return OutcomeRefused, nil
}

// reachable checks that the MCS name resolves and its port accepts TCP, so
// a failure says which of the two it is.
func (r *Registrar) reachable(ctx context.Context) (string, error) {
	cctx, cancel := context.WithTimeout(ctx, r.cfg.CheckTimeout)
	defer cancel()
	host := r.cfg.Server
	if net.ParseIP(host) == nil {
		addrs, err := net.DefaultResolver.LookupHost(cctx, host)
		if err != nil || len(addrs) == 0 {
			return OutcomeUnresolved, fmt.Errorf("resolve %s: %w", host, err)
		}
	}
	var d net.Dialer
	conn, err := d.DialContext(cctx, "tcp", net.JoinHostPort(host, strconv.Itoa(r.cfg.Port)))
	if err != nil {
		return OutcomeUnreachable, fmt.Errorf("connect to MCS: %w", err)
	}
	conn.Close()
	return "", nil
}

// runRegistration runs the registration command in its own process group
// and returns its combined output.
func (r *Registrar) runRegistration(ctx context.Context) ([]byte, error) {
	var cmd *exec.Cmd
	if r.cfg.Mode == config.ModeInitScript {
		cmd = exec.Command(r.cfg.Client.InitScript(), "register", r.cfg.Server, r.cfg.Domain)
	} else {
		cmd = exec.Command(r.cfg.Client.Agent(), r.cfg.Client.InitArgs(r.cfg.Server, r.cfg.Port, r.cfg.Domain)...)
	}
	return runOutput(ctx, cmd, func(line string) {
		r.log.Debug().Str("line", line).Msg("registration output")
	})
}

// runOutput runs cmd until it exits or ctx ends (then its group is
// killed), and returns what it wrote to stdout and stderr, each line also
// passed to line.
func runOutput(ctx context.Context, cmd *exec.Cmd, line func(string)) ([]byte, error) {
	var out bytes.Buffer
	p, err := pid1.StartLines(cmd, func(l string) {
		if line != nil {
			line(l)
		}
		out.WriteString(l)
		out.WriteByte('\n')
	})
	if err != nil {
		return nil, err
	}
	err = p.WaitContext(ctx)
	return out.Bytes(), err
}

// stopInitScriptDaemon stops the daemon that the init script's register verb
// starts, so that avagent runs in the foreground under supervision instead:
// first with the script's own stop verb, as an operator would, then for
// certain by the lock file, in case the script failed or was not waited for.
func (r *Registrar) stopInitScriptDaemon(ctx context.Context) {
	sctx, cancel := context.WithTimeout(ctx, r.cfg.StopTimeout+r.cfg.CheckTimeout)
	defer cancel()
	pid := r.cfg.Client.DaemonPID()
	out, err := runOutput(sctx, exec.Command(r.cfg.Client.InitScript(), "stop"), nil)
	if err != nil {
		r.log.Warn().Err(err).Str("output", tail(out)).Msg("init script stop failed")
	} else if pid != 0 {
		r.log.Info().Int("pid", pid).Str("output", tail(out)).Msg("init script daemon stopped")
	}
	r.stopDaemon(ctx, "init script daemon killed")
}

// stopDaemon stops the agent the lock file names, if one still runs, and
// logs message with its pid.
func (r *Registrar) stopDaemon(ctx context.Context, message string) {
	pid, err := r.cfg.Client.StopDaemon(ctx, r.cfg.StopTimeout)
	if err != nil {
		r.log.Error().Err(err).Msg("agent daemon not stopped")
		return
	}
	if pid != 0 {
		r.log.Warn().Int("pid", pid).Msg(message)
	}
}

func (r *Registrar) readReceipt() (Receipt, bool) {
	b, err := os.ReadFile(r.cfg.ReceiptFile)
	if err != nil {
		return Receipt{}, false
	}
	var rc Receipt
	if err := json.Unmarshal(b, &rc); err != nil {
		r.log.Warn().Err(err).Str("path", r.cfg.ReceiptFile).Msg("unreadable registration receipt, registering again")
		return Receipt{}, false
	}
	return rc, true
}

func (a Receipt) matches(b Receipt) bool {
	return a.Server == b.Server && a.Port == b.Port && a.Domain == b.Domain && a.Client == b.Client
}

// writeReceipt records a registration durably: losing it to a crash or a
// power cut would mean registering again, which a real server does not
// take as a no-op.
func writeReceipt(path string, rc Receipt) error {
	b, err := json.MarshalIndent(rc, "", "  ")
	if err != nil {
		return fmt.Errorf("write registration receipt: %w", err)
	}
	if err := atomicfile.Write(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write registration receipt: %w", err)
	}
	return nil
}

// tail keeps the end of a command's output for an error message.
func tail(out []byte) string {
	s := strings.TrimSpace(string(out))
	if len(s) > 512 {
		s = "..." + s[len(s)-512:]
	}
	return s
}
