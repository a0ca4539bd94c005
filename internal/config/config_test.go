package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/avsidecar/avsidecar/internal/install"
)

// setEnv gives the test a clean, valid environment with one RPM in a fresh
// root, then applies the overrides ("" unsets).
func setEnv(t *testing.T, overrides map[string]string) string {
	t.Helper()
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "opt/avamar"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "opt/avamar/AvamarClient-linux-sles11-x86_64-7.5.101-101.rpm"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	vars := map[string]string{"AVAMAR_SERVER": "mcs.example.com", "NODE_IP": "10.0.0.7", "AVSIDECAR_ROOT": root, "POD_NAME": "nginx-0"}
	for _, k := range []string{"AVAMAR_DOMAIN", "AVAMAR_CLIENT_NAME", "AVAMAR_RPM", "AVAMAR_PREFIX", "AVAMAR_LISTEN_PORT", "AVAMAR_LISTEN_PORT_BASE", "POD_INDEX", "AVAMAR_AGENT_FLAGS",
		"AVAMAR_REGISTER_MODE", "AVSIDECAR_STATE_DIR", "AVSIDECAR_HTTP_ADDR", "AVSIDECAR_SSH_ADDR", "AVSIDECAR_SSH_AUTHORIZED_KEYS", "AVSIDECAR_SSH_USERS",
		"AVSIDECAR_BROWSE_ROOTS", "AVSIDECAR_BROWSE_TOKEN_FILE", "AVSIDECAR_REGISTER_TIMEOUT", "AVSIDECAR_REGISTER_BACKOFF_MAX",
		"AVSIDECAR_RESTART_BACKOFF_MAX", "AVSIDECAR_SHUTDOWN_TIMEOUT", "AVSIDECAR_LOG_LEVEL", "AVSIDECAR_LOG_FORMAT",
		"AVAMAR_REST_URL", "AVAMAR_REST_CREDENTIALS_FILE", "AVAMAR_REST_CA_FILE", "AVAMAR_REST_INTERVAL", "AVAMAR_REST_SCOPE",
		"AVAMAR_VAR_DIR", "AVAMAR_INBOUND_PORTS", "AVSIDECAR_HOOKS", "AVSIDECAR_HOOKS_FILE", "AVSIDECAR_HOOKS_SOCKET"} {
		vars[k] = ""
	}
	for k, v := range overrides {
		vars[k] = v
	}
	for k, v := range vars {
		if v == "" {
			t.Setenv(k, "")
			os.Unsetenv(k)
			continue
		}
		t.Setenv(k, v)
	}
	return root
}

func noHostname() (string, error) { return "", errors.New("no host name") }

func TestLoadDefaults(t *testing.T) {
	setEnv(t, nil)
	c, err := Load(ScopeRun, Sources{Hostname: noHostname, FindRPM: install.FindRPM})
	if err != nil {
		t.Fatal(err)
	}
	if c.Server != "mcs.example.com" || c.ServerPort != 28001 || c.ListenPort != 28002 || c.Domain != "/clients" {
		t.Errorf("server/ports/domain: %+v", c)
	}
	if c.ClientName != "nginx-0" {
		t.Errorf("client name %q, want POD_NAME", c.ClientName)
	}
	if c.StateDir != "/usr/local/avamar/var/avsidecar" || c.SSHAddr != ":22" || c.ShutdownTimeout != 20*time.Second {
		t.Errorf("defaults: %+v", c)
	}
	if !slices.Equal(c.SSHUsers, []string{"root"}) {
		t.Errorf("SSH users %q, want root only, as the recipe's sshd", c.SSHUsers)
	}
	if c.VarDir != "" || c.InboundPorts != nil || c.Hooks != "" || c.HooksFile != "" || c.HooksSocket != "/run/avsidecar/hooks.sock" {
		t.Errorf("client and hook defaults: %+v", c)
	}
	setEnv(t, map[string]string{"AVAMAR_REST_URL": "https://mcs"})
	if c, err = Load(ScopeRun, Sources{Hostname: noHostname, FindRPM: install.FindRPM}); err != nil || c.RestScope != "write" {
		t.Errorf("REST scope %q (%v), want write by default", c.RestScope, err)
	}
}

func TestLoadOverrides(t *testing.T) {
	setEnv(t, map[string]string{"AVAMAR_SERVER": "10.1.2.3:29001", "AVAMAR_CLIENT_NAME": "web", "AVSIDECAR_SSH_ADDR": "off",
		"AVAMAR_AGENT_FLAGS": "--debug, --x=1", "AVSIDECAR_BROWSE_ROOTS": "/data,/usr/share/nginx/html"})
	c, err := Load(ScopeRun, Sources{Hostname: noHostname, FindRPM: install.FindRPM})
	if err != nil {
		t.Fatal(err)
	}
	if c.Server != "10.1.2.3" || c.ServerPort != 29001 || c.ClientName != "web" || c.SSHAddr != "" {
		t.Errorf("%+v", c)
	}
	if strings.Join(c.AgentFlags, "|") != "--debug|--x=1" || strings.Join(c.BrowseRoots, "|") != "/data|/usr/share/nginx/html" {
		t.Errorf("lists: %q %q", c.AgentFlags, c.BrowseRoots)
	}
	setEnv(t, map[string]string{"AVSIDECAR_SSH_USERS": "root, backup-op ,avamar"})
	if c, err = Load(ScopeRun, Sources{Hostname: noHostname, FindRPM: install.FindRPM}); err != nil || !slices.Equal(c.SSHUsers, []string{"root", "backup-op", "avamar"}) {
		t.Errorf("SSH users %q, %v", c.SSHUsers, err)
	}

	hooks := `{"pre":[{"name":"x","command":["true"]}]}`
	root := setEnv(t, map[string]string{"AVAMAR_REST_URL": "https://mcs", "AVAMAR_REST_SCOPE": "read write", "AVAMAR_VAR_DIR": "/var/avamar/",
		"AVAMAR_INBOUND_PORTS": "30001, 30002", "AVSIDECAR_HOOKS": hooks, "AVSIDECAR_HOOKS_FILE": "/etc/hooks.json",
		"AVSIDECAR_HOOKS_SOCKET": "/tmp/h.sock"})
	c, err = Load(ScopeRun, Sources{Hostname: noHostname, FindRPM: install.FindRPM})
	if err != nil {
		t.Fatal(err)
	}
	if c.RestScope != "read write" || c.VarDir != "/var/avamar" || !slices.Equal(c.InboundPorts, []int{30001, 30002}) ||
		c.Hooks != hooks || c.HooksFile != "/etc/hooks.json" || c.HooksSocket != "/tmp/h.sock" {
		t.Errorf("%+v", c)
	}
	if c.Host.VarDir != filepath.Join(root, "var/avamar") || c.Host.HooksFile != filepath.Join(root, "etc/hooks.json") ||
		c.Host.HooksSocket != filepath.Join(root, "tmp/h.sock") {
		t.Errorf("host paths %+v", c.Host)
	}
}

// TestLoadListenPortBase checks the per-replica port scheme: each pod of
// a StatefulSet listens on the base plus its ordinal, past ten replicas
// too (a "3100$(POD_INDEX)" prefix would make pod 10 listen on 310010).
func TestLoadListenPortBase(t *testing.T) {
	for _, tc := range []struct {
		index string
		want  int
	}{{"0", 31000}, {"9", 31009}, {"10", 31010}, {"1767", 32767}} {
		setEnv(t, map[string]string{"AVAMAR_LISTEN_PORT_BASE": "31000", "POD_INDEX": tc.index})
		c, err := Load(ScopeRun, Sources{Hostname: noHostname, FindRPM: install.FindRPM})
		if err != nil || c.ListenPort != tc.want {
			t.Errorf("POD_INDEX %s: port %d, %v; want %d", tc.index, c.ListenPort, err, tc.want)
		}
	}
	// POD_INDEX alone changes nothing: the fixed port stays.
	setEnv(t, map[string]string{"AVAMAR_LISTEN_PORT": "31005", "POD_INDEX": "3"})
	c, err := Load(ScopeRun, Sources{Hostname: noHostname, FindRPM: install.FindRPM})
	if err != nil || c.ListenPort != 31005 {
		t.Errorf("fixed port with POD_INDEX: %d, %v", c.ListenPort, err)
	}
}

func TestLoadHostnameFallback(t *testing.T) {
	setEnv(t, map[string]string{"POD_NAME": ""})
	c, err := Load(ScopeRun, Sources{Hostname: func() (string, error) { return "node-host", nil }})
	if err != nil || c.ClientName != "node-host" {
		t.Fatalf("%q %v", c.ClientName, err)
	}
}

// TestLoadHostile checks that each bad variable is named, and that several
// bad variables are all named in the one error.
func TestLoadHostile(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want []string
	}{
		{"missing server", map[string]string{"AVAMAR_SERVER": ""}, []string{"AVAMAR_SERVER is required"}},
		{"missing node ip", map[string]string{"NODE_IP": ""}, []string{"NODE_IP is required"}},
		{"node ip not ip", map[string]string{"NODE_IP": "node-1"}, []string{`NODE_IP "node-1"`}},
		{"server port range", map[string]string{"AVAMAR_SERVER": "mcs:70000"}, []string{"AVAMAR_SERVER port"}},
		{"server flag injection", map[string]string{"AVAMAR_SERVER": "--evil"}, []string{"not a host name"}},
		{"listen port zero", map[string]string{"AVAMAR_LISTEN_PORT": "0"}, []string{"AVAMAR_LISTEN_PORT"}},
		{"listen port text", map[string]string{"AVAMAR_LISTEN_PORT": "http"}, []string{"AVAMAR_LISTEN_PORT"}},
		{"listen port and base", map[string]string{"AVAMAR_LISTEN_PORT": "31000", "AVAMAR_LISTEN_PORT_BASE": "31000", "POD_INDEX": "0"}, []string{"are both set"}},
		{"base without index", map[string]string{"AVAMAR_LISTEN_PORT_BASE": "31000"}, []string{"POD_INDEX is required"}},
		{"index not a number", map[string]string{"AVAMAR_LISTEN_PORT_BASE": "31000", "POD_INDEX": "nginx-0"}, []string{`POD_INDEX "nginx-0"`}},
		{"negative index", map[string]string{"AVAMAR_LISTEN_PORT_BASE": "31000", "POD_INDEX": "-1"}, []string{`POD_INDEX "-1"`}},
		{"base not a port", map[string]string{"AVAMAR_LISTEN_PORT_BASE": "3100$(POD_INDEX)", "POD_INDEX": "0"}, []string{"AVAMAR_LISTEN_PORT_BASE"}},
		{"base plus index past the last port", map[string]string{"AVAMAR_LISTEN_PORT_BASE": "65000", "POD_INDEX": "536"}, []string{"AVAMAR_LISTEN_PORT_BASE 65000 + POD_INDEX 536 is above 65535"}},
		{"huge index", map[string]string{"AVAMAR_LISTEN_PORT_BASE": "31000", "POD_INDEX": "9223372036854775807"}, []string{"is above 65535"}},
		{"bad duration", map[string]string{"AVSIDECAR_REGISTER_TIMEOUT": "2 minutes"}, []string{"AVSIDECAR_REGISTER_TIMEOUT"}},
		{"negative duration", map[string]string{"AVSIDECAR_SHUTDOWN_TIMEOUT": "-1s"}, []string{"must be positive"}},
		{"bad mode", map[string]string{"AVAMAR_REGISTER_MODE": "magic"}, []string{"AVAMAR_REGISTER_MODE"}},
		{"relative domain", map[string]string{"AVAMAR_DOMAIN": "clients"}, []string{"AVAMAR_DOMAIN"}},
		{"name newline", map[string]string{"AVAMAR_CLIENT_NAME": "a\n--hostname=b"}, []string{"client name"}},
		{"agent flag", map[string]string{"AVAMAR_AGENT_FLAGS": "debug"}, []string{"AVAMAR_AGENT_FLAGS"}},
		{"relative rpm", map[string]string{"AVAMAR_RPM": "opt/*.rpm"}, []string{"AVAMAR_RPM"}},
		{"no rpm", map[string]string{"AVAMAR_RPM": "/opt/none/*.rpm"}, []string{"no file matches"}},
		{"root prefix", map[string]string{"AVAMAR_PREFIX": "/"}, []string{"AVAMAR_PREFIX"}},
		{"relative root", map[string]string{"AVSIDECAR_ROOT": "tmp"}, []string{"AVSIDECAR_ROOT"}},
		{"http addr", map[string]string{"AVSIDECAR_HTTP_ADDR": "9180"}, []string{"AVSIDECAR_HTTP_ADDR"}},
		{"ssh addr", map[string]string{"AVSIDECAR_SSH_ADDR": "localhost:99999"}, []string{"AVSIDECAR_SSH_ADDR"}},
		{"ssh users empty", map[string]string{"AVSIDECAR_SSH_USERS": " , "}, []string{"AVSIDECAR_SSH_USERS is empty"}},
		{"ssh user name", map[string]string{"AVSIDECAR_SSH_USERS": "root,-oProxyCommand"}, []string{`AVSIDECAR_SSH_USERS entry "-oProxyCommand"`}},
		{"ssh user spaces", map[string]string{"AVSIDECAR_SSH_USERS": "root,a b"}, []string{`AVSIDECAR_SSH_USERS entry "a b"`}},
		{"log level", map[string]string{"AVSIDECAR_LOG_LEVEL": "loud"}, []string{"AVSIDECAR_LOG_LEVEL"}},
		{"log format", map[string]string{"AVSIDECAR_LOG_FORMAT": "xml"}, []string{"AVSIDECAR_LOG_FORMAT"}},
		{"rest over http", map[string]string{"AVAMAR_REST_URL": "http://mcs"}, []string{"AVAMAR_REST_URL"}},
		{"rest interval", map[string]string{"AVAMAR_REST_URL": "https://mcs", "AVAMAR_REST_INTERVAL": "often"}, []string{"AVAMAR_REST_INTERVAL"}},
		{"relative browse root", map[string]string{"AVSIDECAR_BROWSE_ROOTS": "data"}, []string{"AVSIDECAR_BROWSE_ROOTS"}},
		{"rest scope", map[string]string{"AVAMAR_REST_URL": "https://mcs", "AVAMAR_REST_SCOPE": "write\nx"}, []string{"AVAMAR_REST_SCOPE"}},
		{"rest scope spaces", map[string]string{"AVAMAR_REST_URL": "https://mcs", "AVAMAR_REST_SCOPE": "read  write"}, []string{"AVAMAR_REST_SCOPE"}},
		{"relative var dir", map[string]string{"AVAMAR_VAR_DIR": "var/avamar"}, []string{"AVAMAR_VAR_DIR"}},
		{"inbound port text", map[string]string{"AVAMAR_INBOUND_PORTS": "30001,web"}, []string{"AVAMAR_INBOUND_PORTS entry"}},
		{"inbound port twice", map[string]string{"AVAMAR_INBOUND_PORTS": "30001,30001"}, []string{"lists 30001 twice"}},
		{"inbound port is the listen port", map[string]string{"AVAMAR_INBOUND_PORTS": "28002"}, []string{"is AVAMAR_LISTEN_PORT already"}},
		{"relative hooks file", map[string]string{"AVSIDECAR_HOOKS_FILE": "hooks.json"}, []string{"AVSIDECAR_HOOKS_FILE"}},
		{"relative hooks socket", map[string]string{"AVSIDECAR_HOOKS_SOCKET": "hooks.sock"}, []string{"AVSIDECAR_HOOKS_SOCKET"}},
		{"all at once", map[string]string{"AVAMAR_SERVER": "", "NODE_IP": "", "AVAMAR_LISTEN_PORT": "99999", "AVSIDECAR_REGISTER_BACKOFF_MAX": "soon",
			"AVAMAR_RPM": "/opt/none.rpm"},
			[]string{"AVAMAR_SERVER", "NODE_IP", "AVAMAR_LISTEN_PORT", "AVSIDECAR_REGISTER_BACKOFF_MAX", "AVAMAR_RPM: find rpm: ", "/opt/none.rpm does not exist"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			setEnv(t, tt.env)
			_, err := Load(ScopeRun, Sources{Hostname: noHostname, FindRPM: install.FindRPM})
			if err == nil {
				t.Fatal("Load accepted a bad configuration")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %q", err, w)
				}
			}
		})
	}
}

// TestLoadHostPaths checks that every path is resolved once, in the root
// and on the host, and that optional paths left unset stay empty.
func TestLoadHostPaths(t *testing.T) {
	root := setEnv(t, map[string]string{"AVSIDECAR_BROWSE_TOKEN_FILE": "/etc/token"})
	c, err := Load(ScopeRun, Sources{Hostname: noHostname, FindRPM: install.FindRPM})
	if err != nil {
		t.Fatal(err)
	}
	want := HostPaths{
		RPM:             filepath.Join(root, "opt/avamar/AvamarClient-linux-sles11-x86_64-7.5.101-101.rpm"),
		Prefix:          filepath.Join(root, "usr/local/avamar"),
		StateDir:        filepath.Join(root, "usr/local/avamar/var/avsidecar"),
		AuthorizedKeys:  filepath.Join(root, "etc/avsidecar/ssh/authorized_keys"),
		BrowseTokenFile: filepath.Join(root, "etc/token"),
		HooksSocket:     filepath.Join(root, "run/avsidecar/hooks.sock"),
	}
	if c.Host != want {
		t.Errorf("host paths\n got %+v\nwant %+v", c.Host, want)
	}
	if c.RPM != "/opt/avamar/AvamarClient-*.rpm" {
		t.Errorf("RPM %q: config keeps the pattern as configured", c.RPM)
	}
}

// TestLoadScopes checks that a subcommand validates only what it uses: an
// install needs no server, a probe no RPM; and that what it uses is
// validated with the same rules and defaults as run's.
func TestLoadScopes(t *testing.T) {
	setEnv(t, map[string]string{"AVAMAR_SERVER": "", "NODE_IP": "", "AVAMAR_PREFIX": "/opt/av"})
	c, err := Load(ScopeInstall, Sources{})
	if err != nil {
		t.Fatalf("install scope: %v", err)
	}
	if c.Prefix != "/opt/av" || c.StateDir != "/opt/av/var/avsidecar" {
		t.Errorf("install scope: %+v", c)
	}
	if _, err := Load(ScopeRun, Sources{Hostname: noHostname, FindRPM: install.FindRPM}); err == nil {
		t.Error("run scope accepted a missing AVAMAR_SERVER")
	}

	setEnv(t, map[string]string{"AVAMAR_SERVER": "", "AVAMAR_RPM": "relative", "AVSIDECAR_HTTP_ADDR": "127.0.0.1:9999"})
	c, err = Load(ScopeLocal, Sources{})
	if err != nil || c.HTTPAddr != "127.0.0.1:9999" {
		t.Fatalf("local scope: %q %v", c.HTTPAddr, err)
	}
	setEnv(t, map[string]string{"AVSIDECAR_HTTP_ADDR": "9180"})
	if _, err := Load(ScopeLocal, Sources{}); err == nil || !strings.Contains(err.Error(), "AVSIDECAR_HTTP_ADDR") {
		t.Errorf("local scope accepted a bad address: %v", err)
	}
}

// TestLoadSet checks that a flag standing for a variable overrides it and
// is validated like it.
func TestLoadSet(t *testing.T) {
	setEnv(t, map[string]string{"AVAMAR_PREFIX": "/env/prefix"})
	c, err := Load(ScopeInstall, Sources{Set: map[string]string{"AVAMAR_PREFIX": "/flag/prefix", "AVAMAR_RPM": ""}})
	if err != nil || c.Prefix != "/flag/prefix" || c.RPM != "/opt/avamar/AvamarClient-*.rpm" {
		t.Fatalf("%+v %v", c, err)
	}
	_, err = Load(ScopeInstall, Sources{Set: map[string]string{"AVAMAR_PREFIX": "relative"}})
	if err == nil || !strings.Contains(err.Error(), "AVAMAR_PREFIX") {
		t.Errorf("a bad flag value passed: %v", err)
	}
	if _, err := Load(ScopeInstall, Sources{Set: map[string]string{"NO_SUCH_VARIABLE": "x"}}); err == nil {
		t.Error("an unknown variable was accepted")
	}
}

func TestLoadTwoRPMs(t *testing.T) {
	root := setEnv(t, nil)
	if err := os.WriteFile(filepath.Join(root, "opt/avamar/AvamarClient-linux-sles11-x86_64-7.6.0-1.rpm"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Load(ScopeRun, Sources{Hostname: noHostname, FindRPM: install.FindRPM})
	if err == nil || !strings.Contains(err.Error(), "2 files match") {
		t.Fatalf("want two-match error, got %v", err)
	}
}

func TestInstallHint(t *testing.T) {
	root := setEnv(t, nil)
	cfg, err := Load(ScopeInstall, Sources{FindRPM: install.FindRPM})
	if err != nil {
		t.Fatal(err)
	}
	denied := fmt.Errorf("install x: create state dir /usr/local/avamar/var/avsidecar: %w", syscall.EACCES)
	got := cfg.InstallHint(denied).Error()
	for _, want := range []string{"permission denied", "AVSIDECAR_ROOT=" + root, "AVAMAR_PREFIX=/usr/local/avamar", "AVSIDECAR_STATE_DIR=/usr/local/avamar/var/avsidecar", fmt.Sprintf("uid %d", os.Geteuid())} {
		if !strings.Contains(got, want) {
			t.Errorf("%q does not say %q", got, want)
		}
	}
	if other := errors.New("corrupt"); cfg.InstallHint(other) != other {
		t.Errorf("a hint on an error that is not about permissions: %v", cfg.InstallHint(other))
	}
}

// TestPrefixFound: AVAMAR_PREFIX unset is the prefix of a client already
// installed in the root (FindPrefix), else DefaultPrefix; set, it wins.
// The state dir's default follows it.
func TestPrefixFound(t *testing.T) {
	var asked string
	find := func(root string) string { asked = root; return "/opt/avamar" }
	root := setEnv(t, nil)
	c, err := Load(ScopeRun, Sources{Hostname: noHostname, FindRPM: install.FindRPM, FindPrefix: find})
	if err != nil {
		t.Fatal(err)
	}
	if asked != root || c.Prefix != "/opt/avamar" || c.StateDir != "/opt/avamar/var/avsidecar" || c.Host.Prefix != filepath.Join(root, "opt/avamar") {
		t.Errorf("found /opt/avamar in %s (asked %s): prefix %s, state dir %s, host prefix %s", root, asked, c.Prefix, c.StateDir, c.Host.Prefix)
	}
	c, err = Load(ScopeRun, Sources{Hostname: noHostname, FindRPM: install.FindRPM, FindPrefix: func(string) string { return "" }})
	if err != nil || c.Prefix != DefaultPrefix || c.StateDir != DefaultPrefix+"/var/avsidecar" {
		t.Errorf("nothing installed: prefix %s, state dir %s (%v)", c.Prefix, c.StateDir, err)
	}
	setEnv(t, map[string]string{"AVAMAR_PREFIX": "/srv/avamar"})
	c, err = Load(ScopeRun, Sources{Hostname: noHostname, FindRPM: install.FindRPM, FindPrefix: find})
	if err != nil || c.Prefix != "/srv/avamar" {
		t.Errorf("AVAMAR_PREFIX set: prefix %s (%v)", c.Prefix, err)
	}
}
