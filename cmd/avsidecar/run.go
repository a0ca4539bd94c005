package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path"
	"runtime"
	"runtime/debug"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"golang.org/x/sync/errgroup"

	"github.com/avsidecar/avsidecar/internal/avclient"
	"github.com/avsidecar/avsidecar/internal/backupapi"
	"github.com/avsidecar/avsidecar/internal/browse"
	"github.com/avsidecar/avsidecar/internal/config"
	"github.com/avsidecar/avsidecar/internal/health"
	"github.com/avsidecar/avsidecar/internal/install"
	"github.com/avsidecar/avsidecar/internal/logfollow"
	"github.com/avsidecar/avsidecar/internal/metrics"
	"github.com/avsidecar/avsidecar/internal/pid1"
	"github.com/avsidecar/avsidecar/internal/register"
	"github.com/avsidecar/avsidecar/internal/sshd"
	"github.com/avsidecar/avsidecar/internal/supervise"
)

func runCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stdout, "usage: avsidecar [run]\n\nConfiguration, from the environment:")
		_ = config.Usage(stdout)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return usageError("%v", err)
	}
	if fs.NArg() > 0 {
		return usageError("run takes no arguments, got %q", fs.Args())
	}
	cfg, err := config.Load(os.Hostname)
	if err != nil {
		return &exitError{Code: exitConfig, Err: err}
	}
	log := newLogger(stdout, cfg.LogLevel, cfg.LogFormat)
	// From here on every child is started through pid1, which alone waits.
	if err := pid1.Reap(log.With().Str("component", "main").Logger()); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	s, err := newSidecar(cfg, log)
	if err != nil {
		return err
	}
	if err := s.run(ctx); err != nil {
		log.Error().Str("component", "main").Err(err).Msg("avsidecar failed")
		return err
	}
	return nil
}

// sidecar is one `avsidecar run`: the parts, and the state the probes read.
type sidecar struct {
	cfg    config.Config
	log    zerolog.Logger
	client avclient.Client

	reg     *register.Registrar
	sup     *supervise.Supervisor
	ssh     atomic.Pointer[sshd.Server] // nil when off, and until its host keys are ready
	browse  *browse.Handler
	backups *backupapi.Checker // nil unless AVAMAR_REST_URL is set
	metrics *metrics.Metrics
	follow  *logfollow.Follower
	http    *http.Server
	httpLn  net.Listener

	phase      atomic.Value // string
	installed  atomic.Pointer[install.Result]
	configured atomic.Bool
	stopping   atomic.Bool
}

// Phases, in the order a healthy start goes through them.
const (
	phaseStarting    = "starting"
	phaseInstalling  = "installing"
	phaseRegistering = "registering"
	phaseRunning     = "running"
	phaseStopping    = "stopping"
)

// newSidecar builds the parts that are quick to build and binds the HTTP
// listener, so that a bad address or browse root fails the start at once.
func newSidecar(cfg config.Config, log zerolog.Logger) (*sidecar, error) {
	s := &sidecar{cfg: cfg, log: log, client: avclient.Client{Prefix: cfg.HostPath(cfg.Prefix)}}
	s.phase.Store(phaseStarting)
	var err error
	s.reg, err = register.New(register.Config{
		Client:      s.client,
		Server:      cfg.Server,
		Port:        cfg.ServerPort,
		Domain:      cfg.Domain,
		ClientName:  cfg.ClientName,
		Mode:        cfg.RegisterMode,
		InitScript:  cfg.HostPath("/etc/init.d/avagent"),
		ReceiptFile: cfg.HostPath(path.Join(cfg.StateDir, "registration.json")),
		Timeout:     cfg.RegisterTimeout,
		BackoffMax:  cfg.RegisterBackoffMax,
		StopTimeout: cfg.ShutdownTimeout / 2,
	}, s.logger("register"))
	if err != nil {
		return nil, err
	}
	s.sup, err = supervise.New(supervise.Config{
		Path:        s.client.Agent(),
		Args:        s.client.RunArgs(),
		LogFile:     s.client.LogFile(),
		BackoffMax:  cfg.RestartBackoffMax,
		StopTimeout: cfg.ShutdownTimeout / 2,
	}, s.logger("agent"))
	if err != nil {
		return nil, err
	}
	s.follow, err = logfollow.New(logfollow.Config{Path: s.client.LogFile()}, s.logger("avagent.log"))
	if err != nil {
		return nil, err
	}
	tokenFile := ""
	if cfg.BrowseTokenFile != "" {
		tokenFile = cfg.HostPath(cfg.BrowseTokenFile)
	}
	s.browse, err = browse.New(browse.Config{Base: cfg.Root, Roots: cfg.BrowseRoots, TokenFile: tokenFile}, s.logger("browse"))
	if err != nil {
		return nil, &exitError{Code: exitConfig, Err: fmt.Errorf("AVSIDECAR_BROWSE_ROOTS: %w", err)}
	}
	s.httpLn, err = net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		s.browse.Close()
		return nil, fmt.Errorf("listen for HTTP on %s: %w", cfg.HTTPAddr, err)
	}

	if cfg.RestURL != "" {
		caFile := ""
		if cfg.RestCAFile != "" {
			caFile = cfg.HostPath(cfg.RestCAFile)
		}
		s.backups, err = backupapi.New(backupapi.Config{
			URL:             cfg.RestURL,
			CredentialsFile: cfg.HostPath(cfg.RestCredentials),
			CAFile:          caFile,
			Domain:          cfg.Domain,
			Client:          cfg.ClientName,
			Interval:        cfg.RestInterval,
		}, s.logger("backupapi"))
		if err != nil {
			s.browse.Close()
			return nil, &exitError{Code: exitConfig, Err: err}
		}
	}
	s.metrics, err = metrics.New(metrics.Config{Version: buildVersion(), Snapshot: s.metricsSnapshot}, s.logger("http"))
	if err != nil {
		s.browse.Close()
		return nil, err
	}
	mux := http.NewServeMux()
	probes := health.New(health.Config{Startup: s.startupChecks(), Ready: s.readyChecks()})
	for _, name := range []string{"livez", "readyz", "startupz"} {
		mux.Handle("/"+name, s.metrics.Instrument(name, probes))
	}
	mux.Handle("/metrics", s.metrics.Instrument("metrics", s.metrics.Handler()))
	mux.Handle("GET /v1/status", s.metrics.Instrument("status", http.HandlerFunc(s.serveStatus)))
	for _, name := range []string{"files", "stat", "walk", "du"} {
		mux.Handle("/v1/"+name, s.metrics.Instrument(name, s.browse))
	}
	mux.Handle("/{$}", s.metrics.Instrument("ui", s.browse))
	mux.Handle("/", s.metrics.Instrument("other", s.browse))
	s.http = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	return s, nil
}

func (s *sidecar) logger(component string) zerolog.Logger {
	return s.log.With().Str("component", component).Logger()
}

// run serves at once, then installs, configures, registers and supervises
// the agent until ctx ends; then it stops in SPEC's order: readiness fails,
// the agent stops, SSH and HTTP close, all within the shutdown timeout.
func (s *sidecar) run(ctx context.Context) error {
	mainLog := s.logger("main")
	mainLog.Info().Str("version", buildVersion()).Str("http", s.httpLn.Addr().String()).Str("ssh", s.cfg.SSHAddr).
		Str("client", s.cfg.ClientName).Str("server", s.cfg.Server).Int("pid", os.Getpid()).Msg("avsidecar starting")

	serveCtx, cancelServe := context.WithCancel(context.Background())
	defer cancelServe()
	servers, serversCtx := errgroup.WithContext(serveCtx)
	servers.Go(func() error {
		if err := s.http.Serve(s.httpLn); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serve HTTP: %w", err)
		}
		return nil
	})
	servers.Go(func() error { return s.browse.Run(serversCtx) })
	servers.Go(func() error { return s.follow.Run(serversCtx) })
	if s.backups != nil {
		servers.Go(func() error { return s.backups.Run(serversCtx) })
	}
	// SSH after HTTP: the first start makes the host keys (RSA takes a
	// while), and the probes must answer meanwhile.
	if s.cfg.SSHAddr != "" {
		srv, err := sshd.New(sshd.Config{
			Addr:               s.cfg.SSHAddr,
			AuthorizedKeysFile: s.cfg.HostPath(s.cfg.AuthorizedKeys),
			HostKeyDir:         s.cfg.HostPath(s.cfg.StateDir),
			Dir:                s.cfg.Root,
			ShutdownTimeout:    s.cfg.ShutdownTimeout / 4,
		}, s.logger("sshd"))
		if err != nil {
			cancelServe()
			s.http.Close()
			_ = servers.Wait()
			return fmt.Errorf("start SSH server: %w", err)
		}
		s.ssh.Store(srv)
		servers.Go(func() error { return srv.Run(serversCtx) })
	}

	workCtx, cancelWork := context.WithCancel(context.Background())
	defer cancelWork()
	workDone := make(chan error, 1)
	go func() { workDone <- s.work(workCtx) }()

	var result error
	select {
	case <-ctx.Done():
		mainLog.Info().Dur("timeout", s.cfg.ShutdownTimeout).Msg("stopping")
	case result = <-workDone:
		workDone = nil
	case <-serversCtx.Done():
	}
	deadline := time.Now().Add(s.cfg.ShutdownTimeout)
	s.stopping.Store(true)
	s.phase.Store(phaseStopping)
	cancelWork()
	if workDone != nil {
		select {
		case err := <-workDone:
			result = cmp.Or(result, err)
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
	serversDone := make(chan error, 1)
	go func() { serversDone <- servers.Wait() }()
	select {
	case err := <-serversDone:
		result = cmp.Or(result, err)
	case <-shutCtx.Done():
		return errors.New("shutdown timed out waiting for the servers to close")
	}
	if result == nil {
		mainLog.Info().Msg("stopped")
	}
	return result
}

// work is the agent's life: install, write the flag files, register,
// supervise. It returns nil when ctx ends.
func (s *sidecar) work(ctx context.Context) error {
	s.phase.Store(phaseInstalling)
	res, err := install.Install(ctx, install.Config{
		RPM:      s.cfg.HostPath(s.cfg.RPM),
		Root:     s.cfg.Root,
		Prefix:   s.cfg.Prefix,
		StateDir: s.cfg.StateDir,
	}, s.logger("install"))
	if ctx.Err() != nil {
		return nil
	}
	if errors.Is(err, install.ErrUnusable) {
		return &exitError{Code: exitBadRPM, Err: err}
	}
	if err != nil {
		return err
	}
	s.installed.Store(&res)
	// An install streams the whole payload through decompressors; give
	// those buffers back now rather than keep them for the pod's life.
	runtime.GC() // the first collection moves sync.Pool buffers to the victim cache
	debug.FreeOSMemory()

	written, err := s.client.WriteFlags(avclient.Flags{
		NodeIP: s.cfg.NodeIP, ListenPort: s.cfg.ListenPort, MCSPort: s.cfg.ServerPort,
		Extra: s.cfg.AgentFlags, ClientName: s.cfg.ClientName,
	})
	if err != nil {
		return err
	}
	log := s.logger("main")
	log.Info().Strs("written", written).Msg("flag files up to date")
	s.configured.Store(true)

	s.phase.Store(phaseRegistering)
	if err := s.reg.Run(ctx); err != nil || ctx.Err() != nil {
		return err
	}
	s.phase.Store(phaseRunning)
	settleMemory()
	return s.sup.Run(ctx)
}

// idleGCPercent is the collector's GOGC once the sidecar runs, unless the
// operator set GOGC.
const idleGCPercent = 25

// settleMemory readies the process for its long idle run: the start-up's
// garbage (install, registration, host keys) is collected and given back,
// and the collector runs at idleGCPercent rather than Go's 100. A running
// sidecar's live heap is under 1 MiB; at 100 the heap goal never drops
// below 4 MiB, so the garbage of probes and scrapes grows to 4 MiB between
// collections and the freed pages stay resident, as the runtime keeps
// memory up to its goal. At 25 that is 1 MiB, for a collection of a small
// heap (well under a millisecond) a few times more often.
func settleMemory() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(idleGCPercent)
	}
	debug.FreeOSMemory()
}
