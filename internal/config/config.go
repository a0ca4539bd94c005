// Package config turns avsidecar's environment into a validated Config.
//
// Every variable is read once, at start. Load reports every problem it finds
// in one error, so an operator fixes a broken Deployment in one round trip
// instead of one variable per crash loop.
//
// config is a leaf: it imports no other package of avsidecar and reads
// nothing from disk but AVSIDECAR_ROOT's existence. Paths are resolved once,
// here, in both forms the rest of the program needs: every path of the
// configuration is kept as the client sees it inside the root (Config.Prefix,
// Config.StateDir, ...), and as the host path under Root (Config.Host). The
// convention of the other packages: they take host paths, except install and
// browse, whose job is the in-root view (the prefix rpm records, the paths an
// operator types into an Avamar dataset): they take Root and in-root paths.
// The RPM glob is install's (install.FindRPM): Load calls it through
// Sources, so that a missing RPM is named with every other problem.
package config

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kelseyhightower/envconfig"
	"github.com/rs/zerolog"
)

// env is the environment as the operator writes it: every value a string, so
// that a bad one is reported with the others instead of stopping the parse.
type env struct {
	Server             string `envconfig:"AVAMAR_SERVER" desc:"MCS host name or IP, optionally :port (required)"`
	NodeIP             string `envconfig:"NODE_IP" desc:"node address written as --iplist, from the downward API status.hostIP (required)"`
	Domain             string `envconfig:"AVAMAR_DOMAIN" default:"/clients" desc:"Avamar domain"`
	ClientName         string `envconfig:"AVAMAR_CLIENT_NAME" desc:"client identity pinned in var/.avagent (default $POD_NAME, else the host name)"`
	PodName            string `envconfig:"POD_NAME" desc:"pod name, the default client identity"`
	RPM                string `envconfig:"AVAMAR_RPM" default:"/opt/avamar/AvamarClient-*.rpm" desc:"client RPM, path or glob with exactly one match"`
	Prefix             string `envconfig:"AVAMAR_PREFIX" desc:"where the client is installed (relocation target; default: the prefix of a client already installed, /usr/local/avamar or /opt/avamar, else /usr/local/avamar)"`
	ListenPort         string `envconfig:"AVAMAR_LISTEN_PORT" desc:"avagent --listenport (default 28002; not with AVAMAR_LISTEN_PORT_BASE)"`
	ListenPortBase     string `envconfig:"AVAMAR_LISTEN_PORT_BASE" desc:"first port of a block: avagent listens on AVAMAR_LISTEN_PORT_BASE + POD_INDEX, one port per StatefulSet replica"`
	PodIndex           string `envconfig:"POD_INDEX" desc:"the pod's ordinal, from the downward API metadata.labels['apps.kubernetes.io/pod-index']; needed by AVAMAR_LISTEN_PORT_BASE"`
	AgentFlags         string `envconfig:"AVAMAR_AGENT_FLAGS" desc:"extra --flag=value lines for avagent.cmd, comma separated"`
	RegisterMode       string `envconfig:"AVAMAR_REGISTER_MODE" default:"direct" desc:"direct (avagent.bin --init) or initscript (/etc/init.d/avagent register)"`
	Root               string `envconfig:"AVSIDECAR_ROOT" default:"/" desc:"filesystem root everything is installed and written under"`
	StateDir           string `envconfig:"AVSIDECAR_STATE_DIR" desc:"receipts and SSH host keys (default $AVAMAR_PREFIX/var/avsidecar)"`
	HTTPAddr           string `envconfig:"AVSIDECAR_HTTP_ADDR" default:":9180" desc:"probes, metrics, status and browse"`
	SSHAddr            string `envconfig:"AVSIDECAR_SSH_ADDR" default:":22" desc:"embedded SSH server; off disables it"`
	AuthorizedKeys     string `envconfig:"AVSIDECAR_SSH_AUTHORIZED_KEYS" default:"/etc/avsidecar/ssh/authorized_keys" desc:"OpenSSH authorized_keys, reloaded when it changes"`
	SSHUsers           string `envconfig:"AVSIDECAR_SSH_USERS" default:"root" desc:"user names an SSH login may give, comma separated; any other is refused as OpenSSH refuses an unknown user"`
	BrowseRoots        string `envconfig:"AVSIDECAR_BROWSE_ROOTS" desc:"comma-separated directories that may be listed (empty: browse off)"`
	BrowseTokenFile    string `envconfig:"AVSIDECAR_BROWSE_TOKEN_FILE" desc:"bearer token file; without it only loopback clients may browse"`
	RegisterTimeout    string `envconfig:"AVSIDECAR_REGISTER_TIMEOUT" default:"2m" desc:"one registration attempt"`
	RegisterBackoffMax string `envconfig:"AVSIDECAR_REGISTER_BACKOFF_MAX" default:"5m" desc:"cap of the jittered exponential registration backoff"`
	RestartBackoffMax  string `envconfig:"AVSIDECAR_RESTART_BACKOFF_MAX" default:"1m" desc:"cap between avagent restarts"`
	ShutdownTimeout    string `envconfig:"AVSIDECAR_SHUTDOWN_TIMEOUT" default:"20s" desc:"whole graceful stop, then SIGKILL"`
	RestURL            string `envconfig:"AVAMAR_REST_URL" desc:"Avamar REST API base https://HOST[:PORT]; turns the backup freshness check on"`
	RestCredentials    string `envconfig:"AVAMAR_REST_CREDENTIALS_FILE" default:"/etc/avsidecar/rest/credentials" desc:"client_id, client_secret, username, password as KEY=VALUE lines, or a directory with one file of each name (a Secret volume)"`
	RestCAFile         string `envconfig:"AVAMAR_REST_CA_FILE" desc:"PEM CA bundle of the REST server (default: ca.crt of a credentials directory, else system roots)"`
	RestInterval       string `envconfig:"AVAMAR_REST_INTERVAL" default:"5m" desc:"time between two backup freshness checks"`
	RestScope          string `envconfig:"AVAMAR_REST_SCOPE" default:"write" desc:"scope of the REST token request"`
	VarDir             string `envconfig:"AVAMAR_VAR_DIR" desc:"where the client keeps its state and logs (default: found once installed: a var/ symlink, /var/avamar, else $AVAMAR_PREFIX/var)"`
	InboundPorts       string `envconfig:"AVAMAR_INBOUND_PORTS" desc:"further ports the client listens on besides AVAMAR_LISTEN_PORT, comma separated; shown in status and /readyz?verbose"`
	Hooks              string `envconfig:"AVSIDECAR_HOOKS" desc:"pre and post backup hooks, as JSON (see README)"`
	HooksFile          string `envconfig:"AVSIDECAR_HOOKS_FILE" desc:"file holding the hooks' JSON, instead of AVSIDECAR_HOOKS"`
	HooksSocket        string `envconfig:"AVSIDECAR_HOOKS_SOCKET" default:"/run/avsidecar/hooks.sock" desc:"unix socket the run-at-start and run-at-end scripts reach the sidecar on"`
	LogLevel           string `envconfig:"AVSIDECAR_LOG_LEVEL" default:"info" desc:"trace, debug, info, warn or error"`
	LogFormat          string `envconfig:"AVSIDECAR_LOG_FORMAT" default:"json" desc:"json or console"`
}

// Config is avsidecar's validated configuration. Paths named "in the root"
// are as the client sees them (for example /usr/local/avamar); Host holds the
// same paths on the host, under Root.
type Config struct {
	// Server is the MCS host name or IP, without the port.
	Server string
	// ServerPort is the MCS port: DefaultMCSPort unless AVAMAR_SERVER
	// names another.
	ServerPort int
	// NodeIP is the address the MCS dials back, written as --iplist.
	NodeIP string
	// Domain is the Avamar domain the client registers in.
	Domain string
	// ClientName is the client identity, pinned in var/.avagent.
	ClientName string
	// RPM is the client RPM as configured, a path or glob in the root;
	// Host.RPM is the one file it matched.
	RPM string
	// Prefix is where the client lives, in the root.
	Prefix string
	// ListenPort is avagent's --listenport, where the MCS connects:
	// AVAMAR_LISTEN_PORT, or AVAMAR_LISTEN_PORT_BASE + POD_INDEX.
	ListenPort int
	// AgentFlags are extra --flag=value lines for avagent.cmd.
	AgentFlags []string
	// RegisterMode is "direct" or "initscript".
	RegisterMode string
	// Root is the host directory everything is installed and written under.
	Root string
	// StateDir holds receipts and SSH host keys, in the root.
	StateDir string
	// HTTPAddr is the listen address of probes, metrics, status and browse.
	HTTPAddr string
	// SSHAddr is the embedded SSH server's listen address; empty when off.
	SSHAddr string
	// AuthorizedKeys is the OpenSSH authorized_keys file, in the root.
	AuthorizedKeys string
	// SSHUsers are the user names an SSH login may give (every session
	// runs as avsidecar's own user whatever the name).
	SSHUsers []string
	// BrowseRoots are the directories that may be listed, in the root.
	BrowseRoots []string
	// BrowseTokenFile holds the browse bearer token, in the root; empty
	// means only loopback clients may browse.
	BrowseTokenFile string
	// RegisterTimeout bounds one registration attempt.
	RegisterTimeout time.Duration
	// RegisterBackoffMax caps the wait between registration attempts.
	RegisterBackoffMax time.Duration
	// RestartBackoffMax caps the wait between avagent restarts.
	RestartBackoffMax time.Duration
	// ShutdownTimeout bounds the whole graceful stop.
	ShutdownTimeout time.Duration
	// RestURL is the Avamar REST API base; empty turns the backup
	// freshness check off.
	RestURL string
	// RestCredentials is the REST credentials file, in the root.
	RestCredentials string
	// RestCAFile is the REST server's CA bundle, in the root; empty: system
	// roots.
	RestCAFile string
	// RestInterval is the time between two freshness checks.
	RestInterval time.Duration
	// RestScope is the scope of the REST token request.
	RestScope string
	// VarDir is where the client keeps its state and logs, in the root;
	// empty means it is found once the client is installed.
	VarDir string
	// InboundPorts are further ports the client listens on besides
	// ListenPort, in the order given.
	InboundPorts []int
	// Hooks is the hooks' JSON as given in AVSIDECAR_HOOKS; it is parsed
	// by the hooks part, so that a broken one is a fault, not a failed
	// start.
	Hooks string
	// HooksFile is the file holding the hooks' JSON, in the root; empty
	// when unset.
	HooksFile string
	// HooksSocket is the unix socket of the hook scripts, in the root.
	HooksSocket string
	// LogLevel is the lowest level logged.
	LogLevel zerolog.Level
	// LogFormat is "json" or "console".
	LogFormat string

	// Host holds the host paths of the paths above, resolved under Root.
	Host HostPaths
}

// HostPaths are the configuration's paths on the host, under Config.Root.
// An optional path that is not configured stays empty.
type HostPaths struct {
	// RPM is the client RPM, the one file AVAMAR_RPM matched; empty when
	// Sources.FindRPM was not given.
	RPM string
	// Prefix is where the client lives.
	Prefix string
	// StateDir holds receipts and SSH host keys.
	StateDir string
	// AuthorizedKeys is the SSH authorized_keys file.
	AuthorizedKeys string
	// BrowseTokenFile holds the browse bearer token; empty when unset.
	BrowseTokenFile string
	// RestCredentials is the REST credentials file; empty while the REST
	// API is off.
	RestCredentials string
	// RestCAFile is the REST server's CA bundle; empty when unset.
	RestCAFile string
	// VarDir is the client's configured var dir; empty when unset.
	VarDir string
	// HooksFile is the hooks' file; empty when unset.
	HooksFile string
	// HooksSocket is the hook scripts' unix socket.
	HooksSocket string
}

// DefaultListenPort is avagent's --listenport when neither
// AVAMAR_LISTEN_PORT nor AVAMAR_LISTEN_PORT_BASE is set: the agent's own
// default.
const DefaultListenPort = 28002

// DefaultPrefix is AVAMAR_PREFIX when it is unset and no client is
// installed yet: the Avamar client RPM's own prefix.
const DefaultPrefix = "/usr/local/avamar"

// DefaultMCSPort is the MCS port when AVAMAR_SERVER names none: the port
// the Avamar client and its init script assume, so it is passed to them
// only when it differs.
const DefaultMCSPort = 28001

// Register modes, the values of AVAMAR_REGISTER_MODE.
const (
	// ModeDirect registers with avagent.bin --init in the foreground.
	ModeDirect = "direct"
	// ModeInitScript registers with the init script's register verb, as
	// the whitepaper's run.sh did.
	ModeInitScript = "initscript"
)

// hostPath maps a path in the root to the host; "" stays "".
// InstallHint adds to an installer's permission error the settings that
// say where it writes and the user it runs as: what to change.
func (c Config) InstallHint(err error) error {
	if !errors.Is(err, fs.ErrPermission) {
		return err
	}
	return fmt.Errorf("%w (uid %d must be able to write there: AVSIDECAR_ROOT=%s, AVAMAR_PREFIX=%s, AVSIDECAR_STATE_DIR=%s)",
		err, os.Geteuid(), c.Root, c.Prefix, c.StateDir)
}

func (c Config) hostPath(p string) string {
	if p == "" {
		return ""
	}
	return filepath.Join(c.Root, p)
}

// Usage writes every variable with its default and meaning, from env's
// tags. Not envconfig.Usage: its text/template keeps the linker from
// dropping unused methods, which made the binary 2 MB larger, and a running
// sidecar's memory is mostly the pages of its binary.
func Usage(w io.Writer) error {
	var b strings.Builder
	t := reflect.TypeFor[env]()
	for i := range t.NumField() {
		f := t.Field(i).Tag
		fmt.Fprintf(&b, "%s\n    %s", f.Get("envconfig"), f.Get("desc"))
		if d := f.Get("default"); d != "" {
			fmt.Fprintf(&b, " (default %s)", d)
		}
		b.WriteByte('\n')
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// Scope says which command a configuration is for. Each validates only the
// variables it uses; the defaults are the same for all.
type Scope int

const (
	// ScopeRun is `avsidecar run`: every variable.
	ScopeRun Scope = iota
	// ScopeInstall is `avsidecar install`: the root, the RPM, the prefix,
	// the state dir and the log settings.
	ScopeInstall
	// ScopeLocal is the commands that ask a running avsidecar (probe,
	// status, ls, hook): the HTTP address, the root, the browse token file,
	// the hooks socket and the log settings.
	ScopeLocal
)

// Sources are what Load reads besides the environment.
type Sources struct {
	// Hostname is the fallback client identity (os.Hostname); ScopeRun
	// needs it.
	Hostname func() (string, error)
	// Set overrides variables by name, for a command's flags that stand
	// for one (install --rpm is AVAMAR_RPM). Empty values are ignored.
	Set map[string]string
	// FindPrefix returns the prefix of a client already installed inside
	// root, or "" (avclient.FindPrefix); AVAMAR_PREFIX, when unset, is
	// that, else DefaultPrefix. Nil: DefaultPrefix.
	FindPrefix func(root string) string
	// FindRPM resolves AVAMAR_RPM, a path or glob inside root, to the host
	// path of the one file it must match (install.FindRPM). Nil leaves
	// Host.RPM empty.
	FindRPM func(root, pattern string) (string, error)
}

// Load reads the environment and validates what scope uses. The error, if
// any, names every problem found.
func Load(scope Scope, src Sources) (Config, error) {
	var e env
	if err := envconfig.Process("", &e); err != nil {
		return Config{}, fmt.Errorf("read environment: %w", err)
	}
	if err := e.set(src.Set); err != nil {
		return Config{}, err
	}
	if e.Prefix == "" {
		e.Prefix = DefaultPrefix
		if src.FindPrefix != nil && filepath.IsAbs(e.Root) {
			if p := src.FindPrefix(filepath.Clean(e.Root)); p != "" {
				e.Prefix = p
			}
		}
	}
	c, p := e.validate(scope, src.Hostname)
	if src.FindRPM != nil && c.RPM != "" && isDir(c.Root) {
		if rpm, err := src.FindRPM(c.Root, c.RPM); err != nil {
			p.add("AVAMAR_RPM: %v", err)
		} else {
			c.Host.RPM = rpm
		}
	}
	return c, p.err()
}

// set overrides the fields of e whose variable names are keys of vars.
func (e *env) set(vars map[string]string) error {
	v := reflect.ValueOf(e).Elem()
	for name, value := range vars {
		if value == "" {
			continue
		}
		i := slices.IndexFunc(reflect.VisibleFields(v.Type()), func(f reflect.StructField) bool {
			return f.Tag.Get("envconfig") == name
		})
		if i < 0 {
			return fmt.Errorf("config: no variable %s", name)
		}
		v.Field(i).SetString(value)
	}
	return nil
}

// problems collects every validation failure of one Load.
type problems []string

func (p *problems) add(format string, a ...any) { *p = append(*p, fmt.Sprintf(format, a...)) }

func (p problems) err() error {
	if len(p) == 0 {
		return nil
	}
	return errors.New("invalid configuration: " + strings.Join(p, "; "))
}

// validName reports whether a client name is 1 to 255 letters, digits,
// '.', '_' and '-', starting with a letter or digit: it is written into
// flag files and passed on command lines, so nothing that could start a
// new line or flag. (A loop, not a regexp: {0,254} compiles to a program
// of thousands of instructions at every start.)
func validName(s string) bool {
	if len(s) == 0 || len(s) > 255 {
		return false
	}
	for i, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		case i > 0 && (r == '.' || r == '_' || r == '-'):
		default:
			return false
		}
	}
	return true
}

func (e env) validate(scope Scope, hostname func() (string, error)) (Config, problems) {
	var p problems
	c := Config{LogFormat: e.LogFormat}
	c.Root = filepath.Clean(e.Root)
	if !filepath.IsAbs(e.Root) {
		p.add("AVSIDECAR_ROOT %q must be an absolute path", e.Root)
	} else if !isDir(c.Root) {
		p.add("AVSIDECAR_ROOT %q is not a directory", e.Root)
	}
	lvl, err := zerolog.ParseLevel(e.LogLevel)
	if err != nil || e.LogLevel == "" {
		p.add("AVSIDECAR_LOG_LEVEL %q must be trace, debug, info, warn or error", e.LogLevel)
	}
	c.LogLevel = lvl
	if c.LogFormat != "json" && c.LogFormat != "console" {
		p.add("AVSIDECAR_LOG_FORMAT %q must be json or console", c.LogFormat)
	}
	switch scope {
	case ScopeRun:
		e.validateInstall(&p, &c)
		e.validateLocal(&p, &c)
		e.validateRun(&p, &c, hostname)
	case ScopeInstall:
		e.validateInstall(&p, &c)
	case ScopeLocal:
		e.validateLocal(&p, &c)
	}
	c.Host = HostPaths{
		Prefix:          c.hostPath(c.Prefix),
		StateDir:        c.hostPath(c.StateDir),
		AuthorizedKeys:  c.hostPath(c.AuthorizedKeys),
		BrowseTokenFile: c.hostPath(c.BrowseTokenFile),
		RestCredentials: c.hostPath(c.RestCredentials),
		RestCAFile:      c.hostPath(c.RestCAFile),
		VarDir:          c.hostPath(c.VarDir),
		HooksFile:       c.hostPath(c.HooksFile),
		HooksSocket:     c.hostPath(c.HooksSocket),
	}
	return c, p
}

// isDir reports whether path is an absolute path to a directory.
func isDir(path string) bool {
	fi, err := os.Stat(path)
	return filepath.IsAbs(path) && err == nil && fi.IsDir()
}

// validateInstall checks what an install needs.
func (e env) validateInstall(p *problems, c *Config) {
	c.RPM = absPath(p, "AVAMAR_RPM", e.RPM)
	c.Prefix = absPath(p, "AVAMAR_PREFIX", e.Prefix)
	if c.Prefix == "/" {
		p.add("AVAMAR_PREFIX %q must be a directory below /", e.Prefix)
	}
	c.StateDir = absPath(p, "AVSIDECAR_STATE_DIR", firstNonEmpty(e.StateDir, path.Join(c.Prefix, "var/avsidecar")))
}

// validateLocal checks what a command that asks the local avsidecar needs.
func (e env) validateLocal(p *problems, c *Config) {
	c.HTTPAddr = e.HTTPAddr
	checkAddr(p, "AVSIDECAR_HTTP_ADDR", e.HTTPAddr)
	if e.BrowseTokenFile != "" {
		c.BrowseTokenFile = absPath(p, "AVSIDECAR_BROWSE_TOKEN_FILE", e.BrowseTokenFile)
	}
	c.HooksSocket = absPath(p, "AVSIDECAR_HOOKS_SOCKET", e.HooksSocket)
}

// validateRun checks the rest of what `run` needs.
func (e env) validateRun(p *problems, c *Config, hostname func() (string, error)) {
	c.Domain, c.RegisterMode = e.Domain, e.RegisterMode
	if e.Server == "" {
		p.add("AVAMAR_SERVER is required (the MCS host name or IP)")
	} else {
		c.Server, c.ServerPort = parseServer(p, e.Server)
	}
	if e.NodeIP == "" {
		p.add("NODE_IP is required (set it from the downward API status.hostIP)")
	} else if net.ParseIP(e.NodeIP) == nil {
		p.add("NODE_IP %q is not an IP address", e.NodeIP)
	} else {
		c.NodeIP = e.NodeIP
	}
	if !strings.HasPrefix(c.Domain, "/") || strings.ContainsAny(c.Domain, "\n\r\x00 ") {
		p.add("AVAMAR_DOMAIN %q must be an absolute Avamar domain such as /clients", c.Domain)
	}

	c.ClientName = firstNonEmpty(e.ClientName, e.PodName)
	if c.ClientName == "" {
		h, err := hostname()
		if err != nil {
			p.add("AVAMAR_CLIENT_NAME is unset, POD_NAME is unset and the host name is unknown: %v", err)
		}
		c.ClientName = h
	}
	if c.ClientName != "" && !validName(c.ClientName) {
		p.add("client name %q may only contain letters, digits, '.', '_' and '-'", c.ClientName)
	}

	c.ListenPort = e.listenPort(p)
	c.AgentFlags = parseAgentFlags(p, e.AgentFlags)
	if c.RegisterMode != ModeDirect && c.RegisterMode != ModeInitScript {
		p.add("AVAMAR_REGISTER_MODE %q must be %s or %s", c.RegisterMode, ModeDirect, ModeInitScript)
	}

	c.AuthorizedKeys = absPath(p, "AVSIDECAR_SSH_AUTHORIZED_KEYS", e.AuthorizedKeys)
	for _, r := range splitList(e.BrowseRoots) {
		c.BrowseRoots = append(c.BrowseRoots, absPath(p, "AVSIDECAR_BROWSE_ROOTS entry", r))
	}
	if e.SSHAddr != "off" {
		c.SSHAddr = e.SSHAddr
		checkAddr(p, "AVSIDECAR_SSH_ADDR", e.SSHAddr)
		c.SSHUsers = parseUsers(p, e.SSHUsers)
	}

	c.RegisterTimeout = parseDuration(p, "AVSIDECAR_REGISTER_TIMEOUT", e.RegisterTimeout)
	c.RegisterBackoffMax = parseDuration(p, "AVSIDECAR_REGISTER_BACKOFF_MAX", e.RegisterBackoffMax)
	c.RestartBackoffMax = parseDuration(p, "AVSIDECAR_RESTART_BACKOFF_MAX", e.RestartBackoffMax)
	c.ShutdownTimeout = parseDuration(p, "AVSIDECAR_SHUTDOWN_TIMEOUT", e.ShutdownTimeout)

	if e.RestURL != "" {
		if u, err := url.Parse(e.RestURL); err != nil || u.Scheme != "https" || u.Host == "" {
			p.add("AVAMAR_REST_URL %q must be https://HOST[:PORT]: the token request carries a password", e.RestURL)
		}
		c.RestURL = e.RestURL
		c.RestCredentials = absPath(p, "AVAMAR_REST_CREDENTIALS_FILE", e.RestCredentials)
		if e.RestCAFile != "" {
			c.RestCAFile = absPath(p, "AVAMAR_REST_CA_FILE", e.RestCAFile)
		}
		c.RestInterval = parseDuration(p, "AVAMAR_REST_INTERVAL", e.RestInterval)
		c.RestScope = e.RestScope
		if !validScope(e.RestScope) {
			p.add("AVAMAR_REST_SCOPE %q must be one or more OAuth scope words separated by spaces, such as write", e.RestScope)
		}
	}

	if e.VarDir != "" {
		c.VarDir = absPath(p, "AVAMAR_VAR_DIR", e.VarDir)
	}
	for _, f := range splitList(e.InboundPorts) {
		port := parsePort(p, "AVAMAR_INBOUND_PORTS entry", f)
		switch {
		case port == 0:
		case port == c.ListenPort:
			p.add("AVAMAR_INBOUND_PORTS entry %d is AVAMAR_LISTEN_PORT already", port)
		case slices.Contains(c.InboundPorts, port):
			p.add("AVAMAR_INBOUND_PORTS lists %d twice", port)
		default:
			c.InboundPorts = append(c.InboundPorts, port)
		}
	}
	// The hooks' JSON is the hooks part's to read: a broken one must not
	// stop backups (it is a fault there). Only the paths are checked here.
	c.Hooks = e.Hooks
	if e.HooksFile != "" {
		c.HooksFile = absPath(p, "AVSIDECAR_HOOKS_FILE", e.HooksFile)
	}
}

// validScope reports whether s is an OAuth 2.0 scope (RFC 6749 3.3):
// words of printable ASCII other than space, '"' and backslash, one space
// apart.
func validScope(s string) bool {
	if s == "" || strings.HasPrefix(s, " ") || strings.HasSuffix(s, " ") || strings.Contains(s, "  ") {
		return false
	}
	for _, r := range s {
		if r != ' ' && (r < 0x21 || r > 0x7e || r == '"' || r == '\\') {
			return false
		}
	}
	return true
}

// listenPort is avagent's port: fixed (AVAMAR_LISTEN_PORT), or one per
// replica (AVAMAR_LISTEN_PORT_BASE + POD_INDEX), so that a StatefulSet of
// any size gets one NodePort per pod from a single template.
func (e env) listenPort(p *problems) int {
	switch {
	case e.ListenPortBase == "" && e.ListenPort == "":
		return DefaultListenPort
	case e.ListenPortBase == "":
		return parsePort(p, "AVAMAR_LISTEN_PORT", e.ListenPort)
	case e.ListenPort != "":
		p.add("AVAMAR_LISTEN_PORT %q and AVAMAR_LISTEN_PORT_BASE %q are both set: set one (the base gives each pod base + POD_INDEX)", e.ListenPort, e.ListenPortBase)
		return 0
	}
	base := parsePort(p, "AVAMAR_LISTEN_PORT_BASE", e.ListenPortBase)
	if e.PodIndex == "" {
		p.add("POD_INDEX is required with AVAMAR_LISTEN_PORT_BASE (set it from the downward API metadata.labels['apps.kubernetes.io/pod-index'], Kubernetes 1.28 or later)")
		return 0
	}
	index, err := strconv.Atoi(e.PodIndex)
	if err != nil || index < 0 {
		p.add("POD_INDEX %q must be a pod ordinal: 0, 1, 2...", e.PodIndex)
		return 0
	}
	if base == 0 {
		return 0
	}
	if index > 65535-base {
		p.add("AVAMAR_LISTEN_PORT_BASE %d + POD_INDEX %d is above 65535, the last port: lower the base", base, index)
		return 0
	}
	return base + index
}

func parseServer(p *problems, s string) (string, int) {
	host, port := s, strconv.Itoa(DefaultMCSPort)
	if h, pt, err := net.SplitHostPort(s); err == nil {
		host, port = h, pt
	} else if strings.Count(s, ":") == 1 {
		p.add("AVAMAR_SERVER %q: %v", s, err)
		return "", 0
	}
	if host == "" || strings.ContainsAny(host, " \t\n\r\x00/,=") || strings.HasPrefix(host, "-") {
		p.add("AVAMAR_SERVER %q is not a host name or IP", s)
		return "", 0
	}
	return host, parsePort(p, "AVAMAR_SERVER port", port)
}

func parsePort(p *problems, name, s string) int {
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 65535 {
		p.add("%s %q must be a port number from 1 to 65535", name, s)
		return 0
	}
	return n
}

func parseDuration(p *problems, name, s string) time.Duration {
	d, err := time.ParseDuration(s)
	if err != nil {
		p.add("%s %q is not a duration such as 30s or 2m", name, s)
		return 0
	}
	if d <= 0 {
		p.add("%s %q must be positive", name, s)
	}
	return d
}

func parseAgentFlags(p *problems, s string) []string {
	var flags []string
	for _, f := range splitList(s) {
		if !strings.HasPrefix(f, "--") || len(f) < 3 || strings.ContainsAny(f, "\n\r\x00") {
			p.add("AVAMAR_AGENT_FLAGS entry %q must look like --flag=value", f)
			continue
		}
		flags = append(flags, f)
	}
	return flags
}

func absPath(p *problems, name, s string) string {
	if !path.IsAbs(s) || strings.ContainsRune(s, 0) {
		p.add("%s %q must be an absolute path", name, s)
		return ""
	}
	return path.Clean(s)
}

func checkAddr(p *problems, name, s string) {
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		p.add("%s %q must be HOST:PORT or :PORT", name, s)
		return
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		p.add("%s %q has a bad port", name, s)
	}
}

// parseUsers reads AVSIDECAR_SSH_USERS: at least one user name, of the
// characters useradd takes (letters, digits, '.', '_', '-'), starting with
// a letter or digit.
func parseUsers(p *problems, s string) []string {
	users := splitList(s)
	if len(users) == 0 {
		p.add("AVSIDECAR_SSH_USERS is empty: name the users an SSH login may give, such as root (or set AVSIDECAR_SSH_ADDR=off)")
	}
	for _, u := range users {
		if !validName(u) || len(u) > 32 {
			p.add("AVSIDECAR_SSH_USERS entry %q must be a user name: at most 32 letters, digits, '.', '_' or '-', starting with a letter or digit", u)
		}
	}
	return users
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}
