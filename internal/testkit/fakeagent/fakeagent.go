// Package fakeagent is the project's stand-in for the proprietary Avamar
// client agent, avagent.bin. It behaves as SPEC "Facts about the Avamar
// client" says the real one does, and nothing more:
//
//   - flags are read from the command line and from the flag files
//     var/avagent.cfg, var/avagent.cmd and var/.avagent (one --flag=value a
//     line; the command line wins over the files);
//   - --init registers the client with the MCS in the foreground, writes
//     var/avagent.cfg and var/cid.bin (the client's unique id), and the
//     stand-ins of the server's certificate files (ServerKeyFile,
//     ClientCertFile), and exits 0;
//     a failure exits 1 whatever went wrong, with the reason on stderr (no
//     public source documents avagent's exit codes, so the kit gives them
//     no meaning). A registration starts afresh: it does not read the
//     avagent.cfg it replaces. It never retries by itself;
//   - --daemon (the default) starts the agent again, detached, with
//     --daemon=false, prints "Client Agent started" and exits 0, like the
//     init script flow; the daemon records its pid in var/avagent.lck;
//   - --daemon=false runs in the foreground: it writes its pid as the first
//     field of var/avagent.lck, listens on --listenport, answers the MCS
//     callback, writes human-readable lines to --logfile and exits 0 on
//     SIGTERM. When var/avagent.cfg exists (the client is registered) it
//     checks in with that MCS at start, as the real agent does, so a client
//     that moved (same volume, new --iplist) is called back at its new
//     address without registering again. The check-in is best effort: it
//     is retried a few times in the background and the agent serves
//     whether or not the MCS hears it. With --fake-daemonize it forks a
//     daemon in its place anyway and exits 0, as a real agent might;
//   - a "backup" work order from the MCS on the callback port runs the
//     backup as the real client does with a dataset's run-at-start and
//     run-at-end scripts (plug-in options run_at_start and run_at_end):
//     the start script from --sysdir's scripts/, then the backup, then the
//     end script, and answers with each step.
//
// Flags starting with --fake- are test hooks (crash, crash loop, orphans,
// log volume, daemonizing); they reach the agent through var/avagent.cmd,
// which the operator extends with AVAMAR_AGENT_FLAGS.
package fakeagent

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/avsidecar/avsidecar/internal/testkit/mcsproto"
)

// Exit codes of the fake agent. Only success and failure: the reason is on
// stderr and in the log, and the product must not read more into a code
// than the real agent's documentation promises, which is nothing.
const (
	// ExitOK is success: registered, daemon started, or clean stop.
	ExitOK = 0
	// ExitFailure is any failure, and the default code of a
	// --fake-crash-after crash.
	ExitFailure = 1
)

// DefaultPrefix is the installation prefix of the Avamar client RPM.
const DefaultPrefix = "/usr/local/avamar"

// Flag file names inside --vardir, in the order they are read.
const (
	// CfgFile is written by --init and names the server and client id.
	CfgFile = "avagent.cfg"
	// CmdFile holds operator flags (--iplist=..., --listenport=...).
	CmdFile = "avagent.cmd"
	// DotFile pins the client name (--hostname=NAME).
	DotFile = ".avagent"
	// LockFile holds the pid of the running agent as its first field.
	LockFile = "avagent.lck"
	// IDFile holds the client id the MCS gave at registration.
	IDFile = "cid.bin"
	// ServerKeyFile and ClientCertFile stand in for the certificate files
	// the Avamar server installs on each client it registers: the public
	// key of the server's certificate, and the client's own certificate,
	// made at registration (Dell KB 000222278, "Avamar: Session
	// Security"). The real files' names and places are not public; the
	// kit writes these, with a random part, into --vardir at registration
	// only, so a test can tell that they survive a pod's move unchanged.
	ServerKeyFile  = "avkit-server-key.pem"
	ClientCertFile = "avkit-client-cert.pem"
)

// The check-in at start is tried checkInAttempts times, waiting
// checkInBackoff after the first failure and twice as long after each
// other (0.25+0.5+1+2+4s): a slow or restarting MCS still hears it, and a
// dead one costs a few log lines.
const (
	checkInAttempts = 6
	checkInBackoff  = 250 * time.Millisecond
)

// Hidden modes used to make orphans: the agent starts itself with
// orphanParentFlag, which starts N copies with orphanChildFlag and exits at
// once, so the copies are reparented to PID 1 or the nearest subreaper.
const (
	orphanParentFlag = "--fake-orphan-parent="
	orphanChildFlag  = "--fake-orphan-child"
)

// options are the parsed flags of one agent invocation.
type options struct {
	init       bool
	daemon     bool
	mcsaddr    string
	mcsport    int
	dpndomain  string
	vardir     string
	bindir     string
	sysdir     string
	logfile    string
	listenport int
	iplist     string
	hostname   string
	cid        string

	crashAfter    time.Duration
	exitCode      int
	crashIfExists string
	orphans       int
	orphanLife    time.Duration
	logLines      int
	daemonize     bool
}

func newFlagSet(o *options) *flag.FlagSet {
	fs := flag.NewFlagSet("avagent", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.BoolVar(&o.init, "init", false, "register with the MCS in the foreground and exit")
	fs.BoolVar(&o.daemon, "daemon", true, "detach and run in the background")
	fs.StringVar(&o.mcsaddr, "mcsaddr", "", "MCS host name or address")
	fs.IntVar(&o.mcsport, "mcsport", mcsproto.DefaultMCSPort, "MCS port")
	fs.StringVar(&o.dpndomain, "dpndomain", "/clients", "Avamar domain")
	fs.StringVar(&o.vardir, "vardir", DefaultPrefix+"/var", "state directory")
	fs.StringVar(&o.bindir, "bindir", DefaultPrefix+"/bin/", "binaries directory")
	fs.StringVar(&o.sysdir, "sysdir", DefaultPrefix+"/etc/", "configuration directory")
	fs.StringVar(&o.logfile, "logfile", "", "log file (default VARDIR/avagent.log)")
	fs.IntVar(&o.listenport, "listenport", mcsproto.DefaultListenPort, "port of the MCS callback")
	fs.StringVar(&o.iplist, "iplist", "", "addresses where the MCS reaches this agent, comma separated")
	fs.StringVar(&o.hostname, "hostname", "", "client name (default: the host name)")
	fs.StringVar(&o.cid, "cid", "", "client id given by the MCS (written by --init)")
	fs.DurationVar(&o.crashAfter, "fake-crash-after", 0, "test hook: exit with --fake-exit-code after this long")
	fs.IntVar(&o.exitCode, "fake-exit-code", ExitFailure, "test hook: exit code of --fake-crash-after")
	fs.StringVar(&o.crashIfExists, "fake-crash-if-exists", "", "test hook: exit 1 at start while this path exists")
	fs.IntVar(&o.orphans, "fake-orphans", 0, "test hook: leave this many orphaned grandchildren at start")
	fs.DurationVar(&o.orphanLife, "fake-orphan-life", 500*time.Millisecond, "test hook: how long each orphan lives")
	fs.IntVar(&o.logLines, "fake-log-lines", 0, "test hook: write this many numbered lines to the log at start")
	fs.BoolVar(&o.daemonize, "fake-daemonize", false, "test hook: with --daemon=false, fork a daemon in this agent's place anyway and exit 0")
	return fs
}

// Main runs the fake agent and returns its exit code. self is the command
// that starts this agent again (the executable, and for avkit the
// "avagent" subcommand); args are the flags after it.
func Main(self, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && strings.HasPrefix(args[0], orphanParentFlag) {
		return orphanParent(self, args, stdout)
	}
	if len(args) > 0 && args[0] == orphanChildFlag {
		return orphanChild(args[1:])
	}

	for _, a := range args {
		if a == "-h" || a == "--help" || a == "-help" {
			usage(stdout)
			return ExitOK
		}
	}
	o, err := parse(args, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "avagent Error: %v\n", err)
		return ExitFailure
	}
	switch {
	case o.init:
		return register(o, stdout, stderr)
	case o.daemon:
		return daemonize(self, args, o, stdout, stderr)
	case o.daemonize:
		return daemonizeAnyway(self, args, o, stderr)
	default:
		return run(self, o, stderr)
	}
}

// usage prints the flags, the test hooks included.
func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: avagent.bin [--init] [--daemon=false] [--flag=value ...]")
	fmt.Fprintln(w, "Flags are also read from VARDIR/avagent.cfg, avagent.cmd and .avagent, one a line.")
	fs := newFlagSet(&options{})
	fs.SetOutput(w)
	fs.PrintDefaults()
}

// parse reads the command line, then the flag files in --vardir, and
// parses them together with the command line last so that it wins. A
// registration (--init) does not read the avagent.cfg it is about to
// replace: the old registration's server and port must not leak into it.
func parse(args []string, stderr io.Writer) (*options, error) {
	var first options
	cmdline := known(newFlagSet(&first), args, "command line", stderr)
	if err := newFlagSet(&first).Parse(cmdline); err != nil {
		return nil, fmt.Errorf("parse command line: %w", err)
	}

	files := []string{CfgFile, CmdFile, DotFile}
	if first.init {
		files = files[1:]
	}
	var all []string
	for _, name := range files {
		lines, err := ReadFlagFile(filepath.Join(first.vardir, name))
		if err != nil {
			return nil, err
		}
		var o options
		all = append(all, known(newFlagSet(&o), lines, name, stderr)...)
	}
	all = append(all, cmdline...)

	o := &options{}
	if err := newFlagSet(o).Parse(all); err != nil {
		return nil, fmt.Errorf("parse flags: %w", err)
	}
	o.vardir = first.vardir // a flag file cannot move the directory it was read from
	if o.logfile == "" {
		o.logfile = filepath.Join(o.vardir, "avagent.log")
	}
	if o.hostname == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("host name: %w", err)
		}
		o.hostname = h
	}
	return o, nil
}

// ReadFlagFile returns the flag lines of an Avamar flag file: one
// --flag=value a line, blank lines and # comments skipped. A missing file
// has no flags.
func ReadFlagFile(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read flag file: %w", err)
	}
	var lines []string
	for _, l := range strings.Split(string(b), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		lines = append(lines, l)
	}
	return lines, nil
}

// known keeps the arguments fs defines and warns about the others on
// stderr: the agent is lenient, as flag files collect flags for several
// Avamar versions.
func known(fs *flag.FlagSet, args []string, source string, stderr io.Writer) []string {
	var out []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		f := fs.Lookup(name)
		if !strings.HasPrefix(a, "-") || f == nil {
			fmt.Fprintf(stderr, "avagent Warning: ignoring unknown flag %q from %s\n", a, source)
			continue
		}
		out = append(out, a)
		if b, ok := f.Value.(interface{ IsBoolFlag() bool }); hasValue || (ok && b.IsBoolFlag()) {
			continue
		}
		if i+1 < len(args) {
			i++
			out = append(out, args[i])
		}
	}
	return out
}

// register is --init: one registration attempt, in the foreground.
func register(o *options, stdout, stderr io.Writer) int {
	if o.mcsaddr == "" {
		fmt.Fprintln(stderr, "avagent Error: --init needs --mcsaddr")
		return ExitFailure
	}
	server := net.JoinHostPort(o.mcsaddr, strconv.Itoa(o.mcsport))
	logf(o.logfile, "registering client %s in domain %s with MCS %s", o.hostname, o.dpndomain, server)

	conn, err := net.DialTimeout("tcp", server, 10*time.Second)
	if err != nil {
		fmt.Fprintf(stderr, "avagent Error: cannot connect to MCS %s: %v\n", server, err)
		logf(o.logfile, "registration failed: cannot connect to MCS %s: %v", server, err)
		return ExitFailure
	}
	defer conn.Close()
	req := mcsproto.Register{
		Op:         mcsproto.OpRegister,
		Name:       o.hostname,
		Domain:     o.dpndomain,
		IPList:     o.iplist,
		ListenPort: o.listenport,
	}
	var reply mcsproto.RegisterReply
	err = mcsproto.Write(conn, req)
	if err == nil {
		err = mcsproto.Read(bufio.NewReader(conn), &reply)
	}
	if err != nil {
		fmt.Fprintf(stderr, "avagent Error: MCS %s did not answer the registration: %v\n", server, err)
		logf(o.logfile, "registration failed: MCS %s did not answer: %v", server, err)
		return ExitFailure
	}
	if !reply.OK {
		fmt.Fprintf(stderr, "avagent Error: registration refused by MCS %s: %s\n", server, reply.Reason)
		logf(o.logfile, "registration refused by MCS %s: %s", server, reply.Reason)
		return ExitFailure
	}

	cfg := fmt.Sprintf("--mcsaddr=%s\n--mcsport=%d\n--dpndomain=%s\n--hostname=%s\n--cid=%s\n",
		o.mcsaddr, o.mcsport, o.dpndomain, o.hostname, reply.ClientID)
	// The id first: a registration is avagent.cfg and cid.bin, and
	// avagent.cfg is the one the product takes as the sign it happened.
	if err := writeAtomic(filepath.Join(o.vardir, IDFile), []byte(reply.ClientID+"\n")); err != nil {
		fmt.Fprintf(stderr, "avagent Error: %v\n", err)
		return ExitFailure
	}
	if err := writeAtomic(filepath.Join(o.vardir, CfgFile), []byte(cfg)); err != nil {
		fmt.Fprintf(stderr, "avagent Error: %v\n", err)
		return ExitFailure
	}
	for _, f := range []struct{ name, what string }{{ServerKeyFile, "server public key"}, {ClientCertFile, "client certificate"}} {
		if err := writeAtomic(filepath.Join(o.vardir, f.name), standInPEM(f.what, server, reply.ClientID)); err != nil {
			fmt.Fprintf(stderr, "avagent Error: %v\n", err)
			return ExitFailure
		}
	}
	logf(o.logfile, "client %s registered with MCS %s as %s", o.hostname, server, reply.ClientID)
	fmt.Fprintf(stdout, "avagent Info: Registration of client %s with MCS %s succeeded (client id %s)\n",
		o.hostname, server, reply.ClientID)
	return ExitOK
}

// standInPEM is the content of a stand-in certificate file: what it
// stands for, the server and client it belongs to, and a random part that
// only a new registration changes.
func standInPEM(what, server, clientID string) []byte {
	nonce := make([]byte, 16)
	_, _ = rand.Read(nonce)
	return fmt.Appendf(nil, "-----BEGIN AVKIT STAND-IN-----\nwhat: %s\nserver: %s\nclient: %s\nnonce: %x\n-----END AVKIT STAND-IN-----\n", what, server, clientID, nonce)
}

// daemonize starts the agent again in the background with --daemon=false
// and returns once the daemon has recorded its pid in avagent.lck, as the
// init script's start does.
func daemonize(self, args []string, o *options, stdout, stderr io.Writer) int {
	cmd, err := startDaemon(self, append(args, "--daemon=false"))
	if err != nil {
		fmt.Fprintf(stderr, "avagent Error: start daemon: %v\n", err)
		return ExitFailure
	}
	pid := cmd.Process.Pid
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	lock := filepath.Join(o.vardir, LockFile)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(30 * time.Second)
	for lockPID(lock) != pid {
		select {
		case err := <-exited:
			fmt.Fprintf(stderr, "avagent Error: daemon %d ended before it started: %v\n", pid, err)
			return ExitFailure
		case <-deadline:
			fmt.Fprintf(stderr, "avagent Error: daemon %d did not start\n", pid)
			return ExitFailure
		case <-tick.C:
		}
	}
	fmt.Fprintln(stdout, "Client Agent started")
	return ExitOK
}

// daemonizeAnyway is --daemon=false with --fake-daemonize: the agent forks
// a daemon in its place and exits 0 at once, before the daemon has written
// its lock file, as an agent that ignores --daemon=false might.
func daemonizeAnyway(self, args []string, o *options, stderr io.Writer) int {
	cmd, err := startDaemon(self, append(args, "--daemon=false", "--fake-daemonize=false"))
	if err != nil {
		fmt.Fprintf(stderr, "avagent Error: start daemon: %v\n", err)
		return ExitFailure
	}
	logf(o.logfile, "daemonized despite --daemon=false: daemon pid %d", cmd.Process.Pid)
	return ExitOK
}

// startDaemon starts the agent with args in a session of its own; it is
// reparented to the nearest subreaper when this process exits.
func startDaemon(self, args []string) (*exec.Cmd, error) {
	argv := append(append([]string{}, self[1:]...), args...)
	cmd := exec.Command(self[0], argv...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return cmd, nil
}

// lockPID is the pid in the first field of a lock file, or 0.
func lockPID(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	pid, _ := strconv.Atoi(f[0])
	return pid
}

// run is the agent in the foreground.
func run(self []string, o *options, stderr io.Writer) int {
	if o.crashIfExists != "" {
		if _, err := os.Stat(o.crashIfExists); err == nil {
			logf(o.logfile, "fake crash at start: %s exists", o.crashIfExists)
			fmt.Fprintf(stderr, "avagent Error: fake crash at start: %s exists\n", o.crashIfExists)
			return 1
		}
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)

	ln, err := net.Listen("tcp", net.JoinHostPort("0.0.0.0", strconv.Itoa(o.listenport)))
	if err != nil {
		logf(o.logfile, "cannot listen on port %d: %v", o.listenport, err)
		fmt.Fprintf(stderr, "avagent Error: listen: %v\n", err)
		return ExitFailure
	}
	defer ln.Close()
	// The lock file: the pid first, then (the kit's own choice) the port.
	lockPath := filepath.Join(o.vardir, LockFile)
	pid := strconv.Itoa(os.Getpid())
	if err := writeAtomic(lockPath, []byte(pid+" "+strconv.Itoa(o.listenport)+"\n")); err != nil {
		fmt.Fprintf(stderr, "avagent Error: %v\n", err)
		return ExitFailure
	}

	logf(o.logfile, "Client Agent started: pid %s, client %s, listening on %s", pid, o.hostname, ln.Addr())
	if o.logLines > 0 {
		writeLogLines(o.logfile, o.logLines)
	}
	if o.orphans > 0 {
		spawnOrphans(self, o)
	}
	go serve(ln, o)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := os.Stat(filepath.Join(o.vardir, CfgFile)); err == nil {
		go checkIn(ctx, o)
	}

	var crash <-chan time.Time
	if o.crashAfter > 0 {
		crash = time.After(o.crashAfter)
	}
	select {
	case s := <-sigs:
		logf(o.logfile, "Client Agent stopping on %v", s)
		removeIfOurs(lockPath, pid)
		return ExitOK
	case <-crash:
		// A crash leaves its lock file behind, stale, as a real one would.
		logf(o.logfile, "fake crash after %v with exit code %d", o.crashAfter, o.exitCode)
		return o.exitCode
	}
}

// errRefused marks a check-in the MCS answered with a refusal: asking
// again would get the same answer.
var errRefused = errors.New("refused")

// checkIn tells the MCS of avagent.cfg that this client runs and where it
// is called back now, retrying with backoff until it is heard, refused,
// out of attempts, or the agent stops. Every attempt is logged.
func checkIn(ctx context.Context, o *options) {
	if o.mcsaddr == "" || o.cid == "" {
		logf(o.logfile, "no check-in: %s lacks --mcsaddr or --cid", CfgFile)
		return
	}
	server := net.JoinHostPort(o.mcsaddr, strconv.Itoa(o.mcsport))
	backoff := checkInBackoff
	for attempt := 1; ; attempt++ {
		err := hello(ctx, o, server)
		switch {
		case err == nil:
			logf(o.logfile, "checked in with MCS %s as client %s at %s:%d (attempt %d)",
				server, o.hostname, o.iplist, o.listenport, attempt)
			return
		case ctx.Err() != nil:
			return
		case errors.Is(err, errRefused):
			logf(o.logfile, "check-in with MCS %s refused (attempt %d): %v", server, attempt, err)
			return
		case attempt == checkInAttempts:
			logf(o.logfile, "check-in with MCS %s abandoned (attempt %d): %v", server, attempt, err)
			return
		}
		logf(o.logfile, "check-in with MCS %s failed (attempt %d, backoff %v): %v", server, attempt, backoff, err)
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return
		}
		backoff *= 2
	}
}

// hello is one check-in: one connection, one Hello, one answer.
func hello(ctx context.Context, o *options, server string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", server)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close()
	deadline, _ := ctx.Deadline()
	_ = conn.SetDeadline(deadline)
	req := mcsproto.Hello{
		Op:         mcsproto.OpHello,
		Name:       o.hostname,
		ClientID:   o.cid,
		IPList:     o.iplist,
		ListenPort: o.listenport,
	}
	var reply mcsproto.HelloReply
	if err := mcsproto.Write(conn, req); err != nil {
		return err
	}
	if err := mcsproto.Read(bufio.NewReader(conn), &reply); err != nil {
		return fmt.Errorf("no answer: %w", err)
	}
	if !reply.OK {
		return fmt.Errorf("%w: %s", errRefused, reply.Reason)
	}
	return nil
}

// serve answers MCS callbacks. A connection that closes without a message
// is a TCP probe (a readiness check) and is not logged.
func serve(ln net.Listener, o *options) {
	var answered atomic.Int64
	for {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
			var raw json.RawMessage
			if err := mcsproto.Read(bufio.NewReader(conn), &raw); err != nil {
				if !errors.Is(err, io.EOF) {
					logf(o.logfile, "bad callback from %s: %v", conn.RemoteAddr(), err)
				}
				return
			}
			var ping mcsproto.Ping
			_ = json.Unmarshal(raw, &ping)
			if ping.Op == mcsproto.OpBackup {
				var order mcsproto.Backup
				_ = json.Unmarshal(raw, &order)
				// A backup takes as long as it takes: the scripts bound it.
				_ = conn.SetDeadline(time.Time{})
				if err := mcsproto.Write(conn, backup(o, order)); err != nil {
					logf(o.logfile, "backup work order from %s: %v", conn.RemoteAddr(), err)
				}
				return
			}
			if ping.Op != mcsproto.OpPing {
				logf(o.logfile, "unknown callback %q from %s", ping.Op, conn.RemoteAddr())
				return
			}
			err := mcsproto.Write(conn, mcsproto.Pong{OK: true, Name: o.hostname, ClientID: o.cid})
			if err != nil {
				logf(o.logfile, "callback from %s: %v", conn.RemoteAddr(), err)
				return
			}
			// The first callback is logged, then one in a hundred, so that an
			// MCS checking every few seconds does not flood the log.
			if n := answered.Add(1); n == 1 || n%100 == 0 {
				logf(o.logfile, "MCS callback from %s (%s) answered (%d so far)", ping.Server, conn.RemoteAddr(), n)
			}
		}()
	}
}

// Bounds of a backup's reply: what a step's output and the capture of one
// path keep, and how many paths are captured.
const (
	stepOutputLines = 20
	captureBytes    = 4 << 10
	capturePaths    = 8
)

// backup runs a work order as the real client does with a dataset's
// run_at_start and run_at_end plug-in options: the start script (from the
// scripts directory next to --sysdir), then the backup, then the end
// script. A start script that fails aborts the backup: no backup, no end
// script (the kit takes the option to abort on a failed script as set). An
// end script that fails makes the backup fail, after the fact.
func backup(o *options, order mcsproto.Backup) mcsproto.BackupReply {
	reply := mcsproto.BackupReply{OK: true, Steps: []mcsproto.BackupStep{}}
	logf(o.logfile, "backup work order: run_at_start=%q run_at_end=%q, %d paths", order.RunAtStart, order.RunAtEnd, len(order.Paths))
	if order.RunAtStart != "" {
		step := runScript(o, mcsproto.StepRunAtStart, order.RunAtStart)
		reply.Steps = append(reply.Steps, step)
		if step.ExitCode != 0 {
			reply.OK, reply.Reason = false, fmt.Sprintf("run_at_start script %s exited %d: backup aborted", order.RunAtStart, step.ExitCode)
			logf(o.logfile, "%s", reply.Reason)
			return reply
		}
	}
	started := time.Now()
	reply.Captured = map[string]string{}
	for _, p := range order.Paths[:min(len(order.Paths), capturePaths)] {
		b, err := readHead(p, captureBytes)
		if err != nil {
			reply.Captured[p] = "error: " + err.Error()
			continue
		}
		reply.Captured[p] = string(b)
	}
	time.Sleep(time.Duration(order.HoldMS) * time.Millisecond)
	reply.Steps = append(reply.Steps, mcsproto.BackupStep{Step: mcsproto.StepBackup, DurationMS: time.Since(started).Milliseconds()})
	logf(o.logfile, "backup of %d paths done", len(reply.Captured))
	if order.RunAtEnd != "" {
		step := runScript(o, mcsproto.StepRunAtEnd, order.RunAtEnd)
		reply.Steps = append(reply.Steps, step)
		if step.ExitCode != 0 {
			reply.OK, reply.Reason = false, fmt.Sprintf("run_at_end script %s exited %d: backup completed with an exception", order.RunAtEnd, step.ExitCode)
			logf(o.logfile, "%s", reply.Reason)
		}
	}
	return reply
}

// runScript runs a dataset's script by name from the scripts directory
// next to --sysdir (PREFIX/etc/scripts), with its output kept for the
// reply and the log.
func runScript(o *options, step, name string) mcsproto.BackupStep {
	s := mcsproto.BackupStep{Step: step, Script: name, ExitCode: -1}
	started := time.Now()
	defer func() { s.DurationMS = time.Since(started).Milliseconds() }()
	if name != filepath.Base(name) || name == "." || name == ".." {
		s.Output = []string{"script name " + name + " is not a file name"}
		return s
	}
	dir := filepath.Join(o.sysdir, "scripts")
	cmd := exec.Command(filepath.Join(dir, name))
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	lines := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	if len(lines) > stepOutputLines {
		lines = lines[len(lines)-stepOutputLines:]
	}
	if len(out) > 0 {
		s.Output = lines
	}
	var ee *exec.ExitError
	switch {
	case err == nil:
		s.ExitCode = 0
	case errors.As(err, &ee):
		s.ExitCode = ee.ExitCode()
	default:
		s.Output = append(s.Output, err.Error())
	}
	logf(o.logfile, "%s script %s exited %d", step, name, s.ExitCode)
	return s
}

// readHead reads at most n bytes from the start of path.
func readHead(path string, n int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, n))
}

// spawnOrphans starts an intermediate copy of the agent that starts
// o.orphans more copies and exits at once, so those are orphaned. Their
// pids are logged ("orphan pid N"), so a test can find them.
func spawnOrphans(self []string, o *options) {
	argv := append(append([]string{}, self[1:]...),
		orphanParentFlag+strconv.Itoa(o.orphans), "--fake-orphan-life="+o.orphanLife.String())
	cmd := exec.Command(self[0], argv...)
	out, err := cmd.Output()
	if err != nil {
		logf(o.logfile, "cannot spawn orphans: %v", err)
		return
	}
	// One write for all the lines: a reader woken by the first sees them all.
	var lines []string
	for _, l := range strings.Fields(string(out)) {
		lines = append(lines, "orphan pid "+l)
	}
	logLines(o.logfile, lines)
}

// orphanParent is the intermediate process of spawnOrphans: it prints the
// pid of each orphan and exits without waiting for them.
func orphanParent(self, args []string, stdout io.Writer) int {
	n, err := strconv.Atoi(strings.TrimPrefix(args[0], orphanParentFlag))
	if err != nil {
		return ExitFailure
	}
	for range n {
		cmd := exec.Command(self[0], append(append(append([]string{}, self[1:]...), orphanChildFlag), args[1:]...)...)
		if err := cmd.Start(); err != nil {
			return ExitFailure
		}
		fmt.Fprintln(stdout, cmd.Process.Pid)
	}
	return ExitOK
}

// orphanChild lives for --fake-orphan-life and exits, to be reaped by
// whoever adopted it.
func orphanChild(args []string) int {
	life := 500 * time.Millisecond
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--fake-orphan-life="); ok {
			if d, err := time.ParseDuration(v); err == nil {
				life = d
			}
		}
	}
	time.Sleep(life) // the orphan's whole job is to exist for a while
	return ExitOK
}

// logf appends one human-readable line to the agent's log file. Logging
// is best effort, as a full disk must not stop the agent.
func logf(path, format string, a ...any) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return
	}
	defer f.Close()
	fmt.Fprintf(f, "%s avagent Info <%d>: %s\n", time.Now().Format("2006-01-02 15:04:05.000"), os.Getpid(), fmt.Sprintf(format, a...))
}

// logLines appends lines to the agent's log file in one write, so that a
// reader never sees some of them without the others. Best effort, as logf.
func logLines(path string, lines []string) {
	if len(lines) == 0 {
		return
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return
	}
	defer f.Close()
	var b strings.Builder
	now, pid := time.Now().Format("2006-01-02 15:04:05.000"), os.Getpid()
	for _, l := range lines {
		fmt.Fprintf(&b, "%s avagent Info <%d>: %s\n", now, pid, l)
	}
	_, _ = f.WriteString(b.String())
}

// writeLogLines writes n numbered lines at once, so a test can ask for a
// large log without paying an open per line.
func writeLogLines(path string, n int) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return
	}
	defer f.Close()
	w := bufio.NewWriter(f)
	now, pid := time.Now().Format("2006-01-02 15:04:05.000"), os.Getpid()
	for i := 1; i <= n; i++ {
		fmt.Fprintf(w, "%s avagent Info <%d>: fake log line %d of %d\n", now, pid, i, n)
	}
	_ = w.Flush()
}

// writeAtomic replaces path with data, so a reader never sees half a file.
func writeAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// removeIfOurs removes the lock file unless another agent replaced it.
func removeIfOurs(path, pid string) {
	if strconv.Itoa(lockPID(path)) == pid {
		_ = os.Remove(path)
	}
}
