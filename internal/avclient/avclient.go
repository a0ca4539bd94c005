// Package avclient knows the Avamar client's layout on disk and how its
// binaries are called: where avagent.bin lives, which flags put it in the
// foreground, where it keeps its state, and the flag files it reads at
// start (SPEC "Facts about the Avamar client"). Nothing else in avsidecar
// spells these paths.
package avclient

import (
	"path/filepath"
	"strconv"
	"strings"

	"github.com/avsidecar/avsidecar/internal/atomicfile"
	"github.com/avsidecar/avsidecar/internal/config"
)

// Client is an installed Avamar client.
type Client struct {
	// Root is the host path of the root the client is installed under
	// (AVSIDECAR_ROOT): "/" in a pod.
	Root string
	// Prefix is the host path of the client's installation prefix.
	Prefix string
	// Var is the host path of the directory the client keeps its state and
	// logs in, once known (see Locate); empty means Prefix/var.
	Var string
}

// Agent is the avagent binary.
func (c Client) Agent() string { return filepath.Join(c.Prefix, "bin/avagent.bin") }

// InitScript is /etc/init.d/avagent, the control script with the register
// verb that the whitepaper's run.sh called.
func (c Client) InitScript() string { return filepath.Join(c.Root, "etc/init.d/avagent") }

// ScriptsDir is etc/scripts under the prefix, where the scripts a dataset
// names as run-at-start and run-at-end scripts live.
func (c Client) ScriptsDir() string { return filepath.Join(c.Prefix, "etc/scripts") }

// VarDir holds the client's state and logs: Var when set, else Prefix/var.
func (c Client) VarDir() string {
	if c.Var != "" {
		return c.Var
	}
	return filepath.Join(c.Prefix, "var")
}

// LogFile is avagent's own log.
func (c Client) LogFile() string { return filepath.Join(c.VarDir(), "avagent.log") }

// RegisteredFile is written when the client registers with an MCS; with
// IDFile it is the client's registration.
func (c Client) RegisteredFile() string { return filepath.Join(c.VarDir(), "avagent.cfg") }

// IDFile holds the client's unique id, given at registration.
func (c Client) IDFile() string { return filepath.Join(c.VarDir(), "cid.bin") }

// CmdFile holds avagent's extra flags (--iplist, --listenport, ...).
func (c Client) CmdFile() string { return filepath.Join(c.VarDir(), "avagent.cmd") }

// IdentityFile holds --hostname, which forces the client name, and
// --listenport (see Flags.IdentityLines).
func (c Client) IdentityFile() string { return filepath.Join(c.VarDir(), ".avagent") }

// LockFile is where a running agent records its pid: the first
// whitespace-separated field of var/avagent.lck.
func (c Client) LockFile() string { return filepath.Join(c.VarDir(), "avagent.lck") }

// PIDFile is var/avagent.pid, read when there is no usable lock file.
func (c Client) PIDFile() string { return filepath.Join(c.VarDir(), "avagent.pid") }

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
// foreground without starting a daemon. server is a bare host, as every
// public registration script passes it; --mcsport, which no public source
// documents for avagent, is added only for a port other than
// config.DefaultMCSPort.
func (c Client) InitArgs(server string, port int, domain string) []string {
	args := []string{"--init", "--daemon=false", "--mcsaddr=" + server}
	if port != 0 && port != config.DefaultMCSPort {
		args = append(args, "--mcsport="+strconv.Itoa(port))
	}
	return append(append(args, "--dpndomain="+domain), c.dirArgs()...)
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
	// MCSPort is the MCS port. It is written as --mcsport only when it is
	// not config.DefaultMCSPort: the flag is not documented for avagent, so
	// a client on the default port never sees it. When written, every
	// invocation (the init script's register verb, which is given a bare
	// host, and the agent itself) uses it rather than the one an earlier
	// registration left in avagent.cfg (avagent.cmd is read after it).
	MCSPort int
}

// CmdLines is the content of avagent.cmd.
func (f Flags) CmdLines() []string {
	lines := []string{"--iplist=" + f.NodeIP, "--listenport=" + strconv.Itoa(f.ListenPort)}
	if f.MCSPort != 0 && f.MCSPort != config.DefaultMCSPort {
		lines = append(lines, "--mcsport="+strconv.Itoa(f.MCSPort))
	}
	return append(lines, f.Extra...)
}

// IdentityLines is the content of .avagent: the client name, and the
// listen port again. The port goes into both files because the public
// clients disagree on where it belongs: the whitepaper's run.sh writes its
// flags into avagent.cmd (--iplist), while the only public images that ran
// an agent on a port other than 28002 set it in var/.avagent alone
// (uniqs-devops/azure-bkp: dps-setup.sh writes --hostname and --listenport
// into src/avamar/.avagent, copied to var/; two such containers shared one
// host's network on 28002 and 28003, docs/avamar_config_for_host_network_docker_config.md)
// and start the agent through the init script, which passes no flag. With
// the same value in both, the agent listens where the NodePort leads
// whichever file its version reads.
func (f Flags) IdentityLines() []string {
	return []string{"--hostname=" + f.ClientName, "--listenport=" + strconv.Itoa(f.ListenPort)}
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
		{c.IdentityFile(), f.IdentityLines()},
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
