// Command avsidecar is PID 1 of the Avamar sidecar container: it installs the
// Avamar client RPM, registers the client, supervises avagent, and serves
// probes, SSH and a read-only file browser. main only wires; the work lives
// in internal/ (`avsidecar run` is internal/sidecar).
package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/avsidecar/avsidecar/internal/config"
	"github.com/avsidecar/avsidecar/internal/install"
	"github.com/avsidecar/avsidecar/internal/sidecar"
)

// Exit codes of SPEC "Command line".
const (
	exitOK      = 0
	exitFailure = 1
	exitConfig  = 2
	exitBadRPM  = 3
)

// exitError carries the process exit code with the error that caused it.
type exitError struct {
	Code int
	Err  error
}

func (e *exitError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("exit status %d", e.Code)
	}
	return e.Err.Error()
}
func (e *exitError) Unwrap() error { return e.Err }

// usageError marks a command line or configuration problem (exit 2).
func usageError(format string, a ...any) error {
	return &exitError{Code: exitConfig, Err: fmt.Errorf(format, a...)}
}

// exitCode maps an error of the work to SPEC's exit codes.
func exitCode(err error) int {
	switch {
	case errors.Is(err, install.ErrUnusable):
		return exitBadRPM
	case errors.Is(err, sidecar.ErrConfig):
		return exitConfig
	}
	return exitFailure
}

// command is one subcommand: it parses its own arguments and returns an
// error whose exit code, if any, decides how the process ends.
type command struct {
	name    string
	summary string
	run     func(args []string, stdout, stderr io.Writer) error
}

func commands() []command {
	return []command{
		{"run", "supervisor (default): install, register, supervise avagent, serve HTTP and SSH", runCmd},
		{"install", "install the RPM payload as run would, then exit", installCmd},
		{"probe", "probe live|ready|startup: exit 0 when that check passes", probeCmd},
		{"ls", "ls [-r] [--json] PATH: list a directory through the local browse API", lsCmd},
		{"status", "status [-o json] [--addr HOST:PORT]: a summary of the local avsidecar, or its /v1/status", statusCmd},
		{"hook", "hook pre|post: run the sidecar's backup hooks (the Avamar run-at-start and run-at-end scripts call it)", hookCmd},
		{"version", "print the version and VCS revision (also --version, -v)", versionCmd},
	}
}

func main() {
	os.Exit(execute(os.Args[1:], os.Stdout, os.Stderr))
}

// execute runs the subcommand named by args and maps its error to an exit
// code. It is the only place that decides how the process ends.
func execute(args []string, stdout, stderr io.Writer) int {
	name := "run"
	if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "" || args[0][0] != '-') {
		name, args = args[0], args[1:]
	}
	// avsidecar --version (or -v), as most commands answer it.
	if name == "run" && len(args) == 1 && (args[0] == "--version" || args[0] == "-version" || args[0] == "-v") {
		name, args = "version", nil
	}
	if name == "help" || name == "--help" || name == "-h" {
		usage(stdout)
		return exitOK
	}
	for _, c := range commands() {
		if c.name != name {
			continue
		}
		err := c.run(args, stdout, stderr)
		if err == nil {
			return exitOK
		}
		var ee *exitError
		if errors.As(err, &ee) && ee.Err == nil {
			return ee.Code // already reported
		}
		fmt.Fprintf(stderr, "avsidecar %s: %v\n", name, err)
		if ee != nil {
			return ee.Code
		}
		return exitCode(err)
	}
	fmt.Fprintf(stderr, "avsidecar: unknown command %q\n", name)
	usage(stderr)
	return exitConfig
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: avsidecar [command] [flags]")
	fmt.Fprintln(w)
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "avsidecar COMMAND -h describes the flags of a command. probe, status and ls ask")
	fmt.Fprintln(w, "the avsidecar of this container at AVSIDECAR_HTTP_ADDR, or --addr HOST:PORT.")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Exit codes:")
	fmt.Fprintf(w, "  %d  success; run: a clean stop (SIGTERM or SIGINT)\n", exitOK)
	fmt.Fprintf(w, "  %d  anything else (probe: the check fails)\n", exitFailure)
	fmt.Fprintf(w, "  %d  bad configuration, flags or input, every problem named in one message\n", exitConfig)
	fmt.Fprintf(w, "  %d  the RPM is unusable: corrupt, truncated, digest mismatch, unsafe paths\n", exitBadRPM)
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Configuration of run, from the environment:")
	_ = config.Usage(w)
}
