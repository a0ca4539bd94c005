// Package sidecar is `avsidecar run`: it builds the parts of the sidecar
// from the configuration, starts them in SPEC's order and stops them in the
// reverse order under one deadline.
//
// The start: the HTTP server first, so the kubelet's probes get answers
// during the slow steps; the side services (SSH, the browse cache, the
// avagent.log follower, the backup freshness check) beside it; then the
// agent's life, one step after the other: install the RPM, write the flag
// files, register, supervise avagent. The client's var dir is located once
// it is installed (the package makes it), so the registrar, the supervisor
// and the avagent.log follower are built then. The stop: readiness fails at
// once, avagent gets its group stopped, then SSH and HTTP close, all within
// AVSIDECAR_SHUTDOWN_TIMEOUT.
//
// A side service is optional: its failure (a damaged SSH host key, a
// browse root that is missing, bad REST settings) is logged, shown in
// /v1/status and in /readyz?verbose, and the rest goes on. Backups are the
// point; nothing else may stop them.
package sidecar

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/avsidecar/avsidecar/internal/buildinfo"
	"github.com/avsidecar/avsidecar/internal/config"
	"github.com/avsidecar/avsidecar/internal/connlimit"
	"github.com/avsidecar/avsidecar/internal/doctor"
	"github.com/avsidecar/avsidecar/internal/exepages"
	"github.com/avsidecar/avsidecar/internal/install"
	"github.com/avsidecar/avsidecar/internal/metrics"
)

// Phases of a sidecar, in the order a healthy start goes through them.
const (
	PhaseStarting    = "starting"
	PhaseInstalling  = "installing"
	PhaseRegistering = "registering"
	PhaseRunning     = "running"
	PhaseStopping    = "stopping"
)

// Phases lists every phase: the label values of avsidecar_phase.
var Phases = []string{PhaseStarting, PhaseInstalling, PhaseRegistering, PhaseRunning, PhaseStopping}

// ErrConfig is matched (errors.Is) by the errors of New that a change of
// configuration fixes: avsidecar exits 2 on them.
var ErrConfig = errors.New("bad configuration")

// Sidecar is one `avsidecar run`.
type Sidecar struct {
	cfg   config.Config
	log   zerolog.Logger
	parts parts

	metrics *metrics.Metrics
	// doctor names what keeps the server from the client (nil: none).
	doctor  *doctor.Doctor
	handler http.Handler
	http    *http.Server
	httpLn  *connlimit.Listener

	// serveCtx ends the side parts, which run in sides.
	serveCtx context.Context
	sides    errgroup.Group
	// stopHooks tells the hooks, first of all, that the sidecar stops: a
	// running phase and an open freeze get the most of the deadline.
	stopHooks context.CancelFunc

	phase      atomic.Value // string
	installed  atomic.Pointer[install.Result]
	client     atomic.Pointer[clientParts] // nil until the client is located
	configured atomic.Bool
	stopping   atomic.Bool

	// tuning is applied once avagent runs (New's; zero in the tests).
	tuning Tuning
}

// New builds every part from cfg and binds the HTTP listener, so that a bad
// address or a missing RPM fails the start at once. Nothing runs yet. The
// runtime is tuned as t says once avagent runs.
func New(cfg config.Config, log zerolog.Logger, t Tuning) (*Sidecar, error) {
	p, err := newParts(cfg, log)
	if err != nil {
		return nil, err
	}
	s, err := build(cfg, log, p, defaultHTTPLimits)
	if err != nil {
		return nil, err
	}
	s.tuning = t
	return s, nil
}

// build makes a sidecar of given parts: New's real ones, or the tests' fakes.
func build(cfg config.Config, log zerolog.Logger, p parts, limits httpLimits) (*Sidecar, error) {
	s := &Sidecar{cfg: cfg, log: log, parts: p}
	s.phase.Store(PhaseStarting)
	var err error
	if p.doctor != nil {
		if s.doctor, err = p.doctor(doctor.State{Agent: s.doctorAgent, Registration: s.doctorRegistration, Symptom: s.symptom}); err != nil {
			return nil, err
		}
	}
	s.metrics, err = metrics.New(metrics.Config{
		Version: buildinfo.Version(), Revision: buildinfo.Revision(), Snapshot: s.metricsSnapshot,
		Labels: MetricLabels,
	}, s.logger("http"))
	if err != nil {
		return nil, err
	}
	s.handler = s.routes()
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return nil, fmt.Errorf("listen for HTTP on %s (AVSIDECAR_HTTP_ADDR): %w", cfg.HTTPAddr, err)
	}
	s.httpLn = connlimit.New(ln, limits.MaxConns, limits.MaxConnsPerClient, limits.ReserveConns)
	s.http = newHTTPServer(s.handler, limits)
	return s, nil
}

// Handler serves probes, metrics, status and browse: what the HTTP server
// serves.
func (s *Sidecar) Handler() http.Handler { return s.handler }

// Addr is the address the HTTP server listens on.
func (s *Sidecar) Addr() net.Addr { return s.httpLn.Addr() }

func (s *Sidecar) logger(component string) zerolog.Logger {
	return s.log.With().Str("component", component).Logger()
}

// Run serves at once, then installs, configures, registers and supervises
// the agent until ctx ends, and stops. It returns nil after a stop that ctx
// asked for, and the error that ended the agent's life otherwise (a bad
// RPM matches install.ErrUnusable).
func (s *Sidecar) Run(ctx context.Context) error {
	mainLog := s.logger("main")
	mainLog.Info().Str("version", buildinfo.Version()).Str("http", s.httpLn.Addr().String()).Str("ssh", s.cfg.SSHAddr).
		Str("client", s.cfg.ClientName).Str("server", s.cfg.Server).Int("pid", os.Getpid()).Msg("avsidecar starting")

	serveCtx, cancelServe := context.WithCancel(context.Background())
	s.serveCtx = serveCtx
	defer cancelServe()
	httpDone := make(chan error, 1)
	go func() {
		err := s.http.Serve(s.httpLn)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		httpDone <- err
	}()
	// A freeze that a killed sidecar left open ends before anything else
	// starts: the application has waited long enough.
	hooksCtx, stopHooks := context.WithCancel(context.Background())
	s.stopHooks = stopHooks
	defer stopHooks()
	if s.parts.hooks != nil {
		s.parts.hooks.ThawAtStart(ctx)
		s.sides.Go(func() error {
			if err := s.parts.hooks.Run(hooksCtx); err != nil && hooksCtx.Err() == nil {
				s.sideFailed(side{sideHooks, "hooks", nil}, err)
			}
			return nil
		})
	}
	sides := s.parts.sides()
	if s.doctor != nil {
		sides = append(sides, side{sideDoctor, "doctor", s.doctor.Run})
	}
	// SSH listens before the agent's life starts, so that a ready sidecar
	// takes logins; the probes answer meanwhile (a first start makes an
	// RSA host key).
	if s.parts.ssh != nil {
		if err := s.parts.ssh.Listen(); err != nil {
			if errors.Is(err, syscall.EACCES) {
				err = fmt.Errorf("%w (set AVSIDECAR_SSH_ADDR to a port above 1023, such as :2222)", err)
			}
			s.sideFailed(side{sideSSH, "sshd", nil}, err)
		} else {
			sides = append(sides, side{sideSSH, "sshd", s.parts.ssh.Run})
		}
	}
	for _, sd := range sides {
		s.startSide(sd)
	}

	workCtx, cancelWork := context.WithCancel(context.Background())
	defer cancelWork()
	workDone := make(chan error, 1)
	go func() { workDone <- s.work(workCtx) }()

	var result error
	select {
	case <-ctx.Done():
		mainLog.Info().Dur("timeout_ms", s.cfg.ShutdownTimeout).Msg("stopping")
	case result = <-workDone:
		workDone = nil
	case err := <-httpDone:
		result, httpDone = fmt.Errorf("serve HTTP: %w", err), nil
	}
	return cmp.Or(s.stop(workDone, httpDone, cancelWork, cancelServe), result)
}

// startSide runs a side part until the side parts stop; its failure is a
// fault.
func (s *Sidecar) startSide(sd side) {
	s.sides.Go(func() error {
		if err := sd.run(s.serveCtx); err != nil && s.serveCtx.Err() == nil {
			s.sideFailed(sd, err)
		}
		return nil
	})
}

// sideFailed records a side part's failure: the sidecar goes on.
func (s *Sidecar) sideFailed(sd side, err error) {
	s.parts.faults.set(sd.name, err)
	log := s.logger(sd.component)
	log.Error().Err(err).Msg("side part failed, the sidecar goes on without it")
}

// stop ends everything in SPEC's order within the shutdown timeout:
// readiness fails, the agent stops, then the side services and HTTP close.
// A nil channel is a part that has already ended.
func (s *Sidecar) stop(workDone, httpDone <-chan error, cancelWork, cancelServe context.CancelFunc) error {
	deadline := time.Now().Add(s.cfg.ShutdownTimeout)
	s.stopping.Store(true)
	s.phase.Store(PhaseStopping)
	s.stopHooks()
	cancelWork()
	var result error
	if workDone != nil {
		select {
		case err := <-workDone:
			result = err
		case <-time.After(time.Until(deadline)):
			return errors.New("shutdown timed out waiting for the agent to stop")
		}
	}
	cancelServe()
	shutCtx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	if err := s.http.Shutdown(shutCtx); err != nil {
		s.http.Close()
	}
	sideDone := make(chan struct{})
	go func() { _ = s.sides.Wait(); close(sideDone) }()
	select {
	case <-sideDone:
	case <-shutCtx.Done():
		return errors.New("shutdown timed out waiting for the servers to close")
	}
	if httpDone != nil {
		if err := <-httpDone; err != nil {
			result = cmp.Or(result, fmt.Errorf("serve HTTP: %w", err))
		}
	}
	if result == nil {
		log := s.logger("main")
		log.Info().Msg("stopped")
	}
	return result
}

// work is the agent's life: install, locate the client's state, write the
// flag files, register, supervise. It returns nil when ctx ends.
func (s *Sidecar) work(ctx context.Context) error {
	s.phase.Store(PhaseInstalling)
	res, err := s.parts.install(ctx)
	if ctx.Err() != nil {
		return nil
	}
	if err != nil {
		return err
	}
	s.installed.Store(&res)
	if s.parts.installed != nil {
		close(s.parts.installed)
	}
	// An install streams the whole payload through decompressors; give
	// those buffers back now rather than keep them for the pod's life.
	runtime.GC() // the first collection moves sync.Pool buffers to the victim cache
	debug.FreeOSMemory()

	log := s.logger("main")
	cp, err := s.parts.client()
	if err != nil {
		return fmt.Errorf("locate the client's var dir: %w", err)
	}
	s.client.Store(cp)
	log.Info().Str("var_dir", cp.layout.VarDir).Str("found_by", cp.layout.FoundBy).Msg("client located")
	// The follower is a side part: it keeps reading while the agent stops.
	s.startSide(side{sideAgentLog, "avagent.log", cp.follow.Run})
	written, err := cp.writeFlags()
	if err != nil {
		return err
	}
	log.Info().Strs("written", written).Msg("flag files up to date")
	s.configured.Store(true)

	s.phase.Store(PhaseRegistering)
	if err := cp.registrar.Register(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	s.phase.Store(PhaseRunning)
	s.settleMemory(s.tuning)
	return cp.agent.Run(ctx)
}

// Tuning is how the Go runtime runs once avagent runs, for the rest of
// the pod's life: the start-up (install, registration, host keys) runs at
// Go's defaults.
type Tuning struct {
	// GCPercent is then the collector's GOGC; zero leaves it as it is (the
	// operator set GOGC).
	GCPercent int
	// MaxProcs then caps GOMAXPROCS; zero leaves it as it is (the operator
	// set GOMAXPROCS).
	MaxProcs int
	// ReleaseText gives back the pages of the binary that only the
	// start-up used (exepages.Release).
	ReleaseText bool
}

// IdleTuning is the Tuning of a sidecar whose operator set neither GOGC nor
// GOMAXPROCS (see settleMemory and BENCHMARKS.md, "Memory").
var IdleTuning = Tuning{GCPercent: 25, MaxProcs: 2, ReleaseText: true}

// settleMemory readies the process for its long idle run: the start-up's
// garbage is collected and given back, and the runtime is tuned for a
// small, idle process.
//
// GCPercent 25 rather than Go's 100: a running sidecar's live heap is
// under 1 MiB; at 100 the heap goal never drops below 4 MiB, so the
// garbage of probes and scrapes grows to 4 MiB between collections and the
// freed pages stay resident, as the runtime keeps memory up to its goal. At
// 25 that is 1 MiB, for a collection of a small heap (well under a
// millisecond) a few times more often.
//
// MaxProcs 2: a pod without a CPU limit gets the node's core count as
// GOMAXPROCS, and every P keeps its own caches of spans and stacks: at 16
// an idle sidecar holds about 1 MiB more than at 2. The start-up keeps
// every core (the install decodes in parallel); what runs afterwards (a
// probe, a scrape, an SSH session, a walk) is served well by two.
//
// ReleaseText: by now the process has mapped nearly all of its binary,
// which the running sidecar uses about half of; a failure only costs
// that memory, and is logged.
func (s *Sidecar) settleMemory(t Tuning) {
	if t.GCPercent > 0 {
		debug.SetGCPercent(t.GCPercent)
	}
	if t.MaxProcs > 0 && runtime.GOMAXPROCS(0) > t.MaxProcs {
		runtime.GOMAXPROCS(t.MaxProcs)
	}
	debug.FreeOSMemory()
	if t.ReleaseText {
		log := s.logger("main")
		res, err := exepages.Release()
		if err != nil {
			log.Warn().Err(err).Msg("could not give back the start-up's pages of the binary")
			return
		}
		log.Debug().Int("mappings", res.Mappings).Int64("resident_kib", res.Bytes>>10).Int("skipped", res.Skipped).
			Msg("gave back the start-up's pages of the binary")
	}
}
