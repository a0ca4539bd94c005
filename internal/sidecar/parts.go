package sidecar

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/avsidecar/avsidecar/internal/avclient"
	"github.com/avsidecar/avsidecar/internal/backupapi"
	"github.com/avsidecar/avsidecar/internal/browse"
	"github.com/avsidecar/avsidecar/internal/config"
	"github.com/avsidecar/avsidecar/internal/doctor"
	"github.com/avsidecar/avsidecar/internal/hooks"
	"github.com/avsidecar/avsidecar/internal/install"
	"github.com/avsidecar/avsidecar/internal/logfollow"
	"github.com/avsidecar/avsidecar/internal/register"
	"github.com/avsidecar/avsidecar/internal/sshd"
	"github.com/avsidecar/avsidecar/internal/supervise"
)

// The parts a sidecar drives, as the sidecar uses them. Tests drive the
// orchestration with hand-written fakes of these.
type (
	registrar interface {
		Register(ctx context.Context) error
		Status() register.Status
	}
	agent interface {
		Run(ctx context.Context) error
		Status() supervise.Status
	}
	follower interface {
		Run(ctx context.Context) error
		Status() logfollow.Status
	}
	sshServer interface {
		// Listen loads or makes the host keys and binds: slow on a first
		// start (an RSA key), and fallible.
		Listen() error
		Run(ctx context.Context) error
		Status() sshd.Status
	}
	browser interface {
		http.Handler
		Run(ctx context.Context) error
		Status() browse.Status
	}
	backupChecker interface {
		Run(ctx context.Context) error
		Status() backupapi.Status
	}
	hookRunner interface {
		// ThawAtStart ends a freeze a killed sidecar left open.
		ThawAtStart(ctx context.Context)
		Run(ctx context.Context) error
		Status() hooks.Status
	}
)

// parts are everything a sidecar runs.
type parts struct {
	// install installs the RPM (install.Install with the configuration).
	install func(ctx context.Context) (install.Result, error)
	// client finds, once the client is installed, where it keeps its state
	// (avclient.Locate), and makes the parts that work there.
	client func() (*clientParts, error)
	// ssh is nil when SSH is off.
	ssh sshServer
	// browse is nil when browse could not be set up (see faults).
	browse browser
	// backups is nil when the REST API is off or could not be set up.
	backups backupChecker
	// hooks is nil when no hooks are configured.
	hooks hookRunner
	// installed is closed once the client is installed (nil: nothing
	// waits for it).
	installed chan struct{}
	// faults records the side parts that failed, by check name.
	faults *faults
	// doctor makes the doctor from the sidecar's state (nil: no doctor).
	doctor func(doctor.State) (*doctor.Doctor, error)
}

// clientParts are the parts that work on the installed client, in the var
// dir it uses: they can only be made once it is installed and located.
type clientParts struct {
	// layout says where the client keeps its state, and how that was found.
	layout avclient.Layout
	// writeFlags writes the client's flag files, reporting which changed.
	writeFlags func() ([]string, error)
	registrar  registrar
	agent      agent
	// follow re-emits avagent.log; a side part, started once made.
	follow follower
}

// Names of the side parts, as checks in /readyz?verbose and keys of the
// faults in /v1/status.
const (
	sideSSH       = "ssh"
	sideBrowse    = "browse"
	sideAgentLog  = "agent-log"
	sideBackupAPI = "backup-api"
	sideHooks     = "hooks"
	sideDoctor    = "doctor"
)

// faults are the errors of side parts that stopped or could not start.
type faults struct {
	mu   sync.Mutex
	errs map[string]string
}

func (f *faults) set(name string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.errs == nil {
		f.errs = map[string]string{}
	}
	f.errs[name] = err.Error()
}

func (f *faults) get(name string) (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	e, ok := f.errs[name]
	return e, ok
}

func (f *faults) all() map[string]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[string]string, len(f.errs))
	for k, v := range f.errs {
		out[k] = v
	}
	return out
}

// newParts builds the real parts from cfg. Only what makes the agent's
// life impossible fails it; a side part that cannot be built is recorded
// as a fault and left out.
func newParts(cfg config.Config, log zerolog.Logger) (parts, error) {
	logger := func(component string) zerolog.Logger { return log.With().Str("component", component).Logger() }
	p := parts{faults: &faults{}}

	if cfg.Host.RPM == "" {
		return parts{}, fmt.Errorf("%w: AVAMAR_RPM %s not resolved (config.Sources.FindRPM)", ErrConfig, cfg.RPM)
	}
	installLog := logger("install")
	p.install = func(ctx context.Context) (install.Result, error) {
		res, err := install.Install(ctx, install.Config{RPM: cfg.Host.RPM, Root: cfg.Root, Prefix: cfg.Prefix, StateDir: cfg.StateDir}, installLog)
		return res, cfg.InstallHint(err)
	}

	unlocated := avclient.Client{Root: cfg.Root, Prefix: cfg.Host.Prefix}
	flags := avclient.Flags{
		NodeIP: cfg.NodeIP, ListenPort: cfg.ListenPort, MCSPort: cfg.ServerPort,
		Extra: cfg.AgentFlags, ClientName: cfg.ClientName,
	}
	p.client = func() (*clientParts, error) {
		c, layout, err := unlocated.Locate(cfg.Host.VarDir)
		if err != nil {
			return nil, err
		}
		cp := &clientParts{layout: layout, writeFlags: func() ([]string, error) { return c.WriteFlags(flags) }}
		if cp.registrar, err = register.New(register.Config{
			Client:      c,
			Server:      cfg.Server,
			Port:        cfg.ServerPort,
			Domain:      cfg.Domain,
			ClientName:  cfg.ClientName,
			Mode:        cfg.RegisterMode,
			ReceiptFile: filepath.Join(cfg.Host.StateDir, "registration.json"),
			Timeout:     cfg.RegisterTimeout,
			BackoffMax:  cfg.RegisterBackoffMax,
			StopTimeout: cfg.ShutdownTimeout / 2,
		}, logger("register")); err != nil {
			return nil, err
		}
		if cp.agent, err = supervise.New(supervise.Config{
			Path:        c.Agent(),
			Args:        c.RunArgs(),
			LogFile:     c.LogFile(),
			BackoffMax:  cfg.RestartBackoffMax,
			StopTimeout: cfg.ShutdownTimeout / 2,
			Adopt: func(ctx context.Context, started time.Time, pid int) supervise.Daemon {
				// A daemon writes its lock file soon after it starts.
				if d := c.FindDaemon(ctx, started, pid, daemonWait); d != nil {
					return d
				}
				return nil
			},
		}, logger("agent")); err != nil {
			return nil, err
		}
		if cp.follow, err = logfollow.New(logfollow.Config{Path: c.LogFile()}, logger("avagent.log")); err != nil {
			return nil, err
		}
		return cp, nil
	}

	// The side parts: a failure is a fault, not a failed start.
	if h, err := browse.New(browse.Config{Base: cfg.Root, Roots: cfg.BrowseRoots, TokenFile: cfg.Host.BrowseTokenFile}, logger("browse")); err != nil {
		p.faults.set(sideBrowse, fmt.Errorf("AVSIDECAR_BROWSE_ROOTS: %w", err))
		blog := logger("browse")
		blog.Error().Err(err).Msg("browse off: it could not be set up")
	} else {
		p.browse = h
	}
	if cfg.RestURL != "" {
		c, err := backupapi.New(backupapi.Config{
			URL:             cfg.RestURL,
			CredentialsFile: cfg.Host.RestCredentials,
			CAFile:          cfg.Host.RestCAFile,
			Domain:          cfg.Domain,
			Client:          cfg.ClientName,
			Interval:        cfg.RestInterval,
			Scope:           cfg.RestScope,
		}, logger("backupapi"))
		if err != nil {
			p.faults.set(sideBackupAPI, err)
			blog := logger("backupapi")
			blog.Error().Err(err).Msg("backup check off: it could not be set up")
		} else {
			p.backups = c
		}
	}
	if cfg.Hooks != "" || cfg.HooksFile != "" {
		hlog := logger("hooks")
		exe, err := hookCommand()
		if err != nil {
			exe = "avsidecar"
		}
		p.installed = make(chan struct{})
		h, err := hooks.New(hooks.Config{
			Spec:       cfg.Hooks,
			File:       cfg.Host.HooksFile,
			Socket:     cfg.Host.HooksSocket,
			ScriptsDir: unlocated.ScriptsDir(),
			Command:    exe,
			Installed:  p.installed,
			LeaseFile:  filepath.Join(cfg.Host.StateDir, "hooks-lease.json"),
			// The hooks learn of the stop first (see Sidecar.stop) and must
			// be done before its deadline: what is left then is for the
			// HTTP server's close.
			StopTimeout: cfg.ShutdownTimeout - min(2*time.Second, cfg.ShutdownTimeout/4),
		}, hlog)
		switch {
		case err != nil:
			p.faults.set(sideHooks, err)
			hlog.Error().Err(err).Msg("hooks off: they could not be set up")
		default:
			// A broken configuration is a fault, and the hooks still run:
			// the scripts answer with the error, so a backup that relies on
			// them fails instead of running without them.
			// A hooks file that does not exist is no hooks configured
			// (the ConfigMap's key is optional): said once, no fault.
			switch err := h.ConfigError(); {
			case err != nil && h.Status().FileAbsent:
				hlog.Info().Str("file", cfg.HooksFile).Msg("no hooks: the hooks file does not exist; a backup that calls the hook scripts fails")
			case err != nil:
				p.faults.set(sideHooks, err)
				hlog.Error().Err(err).Msg("hook configuration broken: every hook call fails until it is fixed")
			}
			p.hooks = h
		}
	}
	p.doctor = func(st doctor.State) (*doctor.Doctor, error) {
		return doctor.New(doctor.Config{
			ClientName: cfg.ClientName, NodeIP: cfg.NodeIP,
			Server: cfg.Server, ServerPort: cfg.ServerPort, ListenPort: cfg.ListenPort,
			Proc: "/proc", State: st,
		}, logger("doctor"))
	}
	if cfg.SSHAddr != "" {
		srv, err := sshd.New(sshd.Config{
			Addr:               cfg.SSHAddr,
			Users:              cfg.SSHUsers,
			AuthorizedKeysFile: cfg.Host.AuthorizedKeys,
			HostKeyDir:         cfg.Host.StateDir,
			Dir:                cfg.Root,
			ShutdownTimeout:    cfg.ShutdownTimeout / 4,
		}, logger("sshd"))
		if err != nil {
			return parts{}, fmt.Errorf("%w: AVSIDECAR_SSH_ADDR: %w", ErrConfig, err)
		}
		p.ssh = srv
	}
	return p, nil
}

// hookCommand is the avsidecar binary the hook scripts run: this one. (A
// test of the real parts runs in a test binary, and names a built one.)
var hookCommand = os.Executable

// daemonWait is how long the supervisor waits, after the agent exited 0 by
// itself, for the lock file of a daemon it left in its place.
const daemonWait = 10 * time.Second

// side is one side part as the sidecar runs it.
type side struct {
	name, component string
	run             func(ctx context.Context) error
}

// sides are the side parts that run beside the agent from the start: not
// SSH, which listens first, nor the log follower, made once the client is
// located, nor the hooks, which learn of a stop first (see Run and work).
func (p parts) sides() []side {
	var out []side
	if p.browse != nil {
		out = append(out, side{sideBrowse, "browse", p.browse.Run})
	}
	if p.backups != nil {
		out = append(out, side{sideBackupAPI, "backupapi", p.backups.Run})
	}
	return out
}
