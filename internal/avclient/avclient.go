// Package avclient knows the Avamar client's layout on disk and how its
// binaries are called: where avagent.bin lives, which flags put it in the
// foreground, and the flag files it reads at start (SPEC "Facts about the
// Avamar client"). Nothing else in avsidecar spells these paths.
package avclient

import (
	"path/filepath"
	"strconv"
	"strings"

	"github.com/avsidecar/avsidecar/internal/atomicfile"
)

// Client is an installed Avamar client.
type Client struct {
	// Root is the host path of the root the client is installed under
	// (AVSIDECAR_ROOT): "/" in a pod.
	Root string
	// Prefix is the host path of the client's installation prefix.
	Prefix string
}

// Agent is the avagent binary.
func (c Client) Agent() string { return filepath.Join(c.Prefix, "bin/avagent.bin") }

// InitScript is /etc/init.d/avagent, the control script with the register
// verb that the whitepaper's run.sh called.
func (c Client) InitScript() string { return filepath.Join(c.Root, "etc/init.d/avagent") }

// VarDir holds the client's state and logs.
func (c Client) VarDir() string { return filepath.Join(c.Prefix, "var") }

// LogFile is avagent's own log.
func (c Client) LogFile() string { return filepath.Join(c.Prefix, "var/avagent.log") }

// RegisteredFile exists once the client is registered with an MCS.
func (c Client) RegisteredFile() string { return filepath.Join(c.Prefix, "var/avagent.cfg") }

// CmdFile holds avagent's extra flags (--iplist, --listenport, ...).
func (c Client) CmdFile() string { return filepath.Join(c.Prefix, "var/avagent.cmd") }

// IdentityFile holds --hostname, which forces the client name.
func (c Client) IdentityFile() string { return filepath.Join(c.Prefix, "var/.avagent") }

// PIDFile is where the control script's daemon records its pid.
func (c Client) PIDFile() string { return filepath.Join(c.Prefix, "var/avagent.pid") }

// dirArgs are the flags that point avagent at its own directories.
func (c Client) dirArgs() []string {
	return []string{
		"--vardir=" + c.VarDir(),
		"--bindir=" + filepath.Join(c.Prefix, "bin") + "/",
		"--sysdir=" + filepath.Join(c.Prefix, "etc") + "/",
		"--logfile=" + c.LogFile(),
	}
}

// RunArgs are avagent's arguments to run in the foreground.
func (c Client) RunArgs() []string {
	return append([]string{"--daemon=false"}, c.dirArgs()...)
}

// InitArgs are avagent's arguments to register with an MCS in the
// foreground without starting a daemon.
func (c Client) InitArgs(server string, port int, domain string) []string {
	return append([]string{"--init", "--daemon=false", "--mcsaddr=" + server,
		"--mcsport=" + strconv.Itoa(port), "--dpndomain=" + domain}, c.dirArgs()...)
}

// Flags is what avsidecar writes into the client's flag files.
type Flags struct {
	// NodeIP is the address the MCS dials back (--iplist).
	NodeIP string
	// ListenPort is where avagent listens for the MCS (--listenport).
	ListenPort int
	// Extra are further --flag=value lines for avagent.cmd.
	Extra []string
	// ClientName pins the client identity (--hostname in .avagent).
	ClientName string
	// MCSPort, when not zero, is written as --mcsport, so that every
	// invocation (the init script's register verb, which takes no port, and
	// the agent itself) uses the configured MCS port rather than the one an
	// earlier registration left in avagent.cfg (avagent.cmd is read after
	// it, and wins).
	MCSPort int
}

// CmdLines is the content of avagent.cmd.
func (f Flags) CmdLines() []string {
	lines := []string{"--iplist=" + f.NodeIP, "--listenport=" + strconv.Itoa(f.ListenPort)}
	if f.MCSPort != 0 {
		lines = append(lines, "--mcsport="+strconv.Itoa(f.MCSPort))
	}
	return append(lines, f.Extra...)
}

// WriteFlags writes avagent.cmd and .avagent, each atomically, durably and
// only when its content changes. It reports which files it wrote.
func (c Client) WriteFlags(f Flags) ([]string, error) {
	var written []string
	for _, file := range []struct {
		path  string
		lines []string
	}{
		{c.CmdFile(), f.CmdLines()},
		{c.IdentityFile(), []string{"--hostname=" + f.ClientName}},
	} {
		changed, err := atomicfile.WriteIfChanged(file.path, []byte(strings.Join(file.lines, "\n")+"\n"), 0o644)
		if err != nil {
			return written, err
		}
		if changed {
			written = append(written, file.path)
		}
	}
	return written, nil
}
