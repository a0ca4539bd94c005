// Command kubectl-avamar is the operator's tool for avsidecar, a kubectl
// plugin (`kubectl avamar ...` once it is on the PATH). It carries what the
// running sidecar never needs, so that avsidecar, PID 1 in every backed-up
// pod, links no Kubernetes library: inject adds the sidecar to workload
// manifests.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"

	"github.com/avsidecar/avsidecar/internal/buildinfo"
)

// Exit codes: 0 success, 1 anything else, 2 bad flags or input.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// exitError carries the process exit code with the error that caused it.
type exitError struct {
	Code int
	Err  error
}

func (e *exitError) Error() string { return e.Err.Error() }
func (e *exitError) Unwrap() error { return e.Err }

// usageError marks a command line or input problem (exit 2).
func usageError(format string, a ...any) error {
	return &exitError{Code: exitUsage, Err: fmt.Errorf(format, a...)}
}

// stdin is the standard input of the commands that read it; tests set it.
var stdin io.Reader = os.Stdin

type command struct {
	name    string
	summary string
	run     func(args []string, stdout, stderr io.Writer) error
}

func commands() []command {
	return []command{
		{"inject", "add the Avamar sidecar to StatefulSet and Deployment manifests", injectCmd},
		{"version", "print the plugin's version and VCS revision", versionCmd},
	}
}

func main() {
	os.Exit(execute(os.Args[1:], os.Stdout, os.Stderr))
}

// execute runs the subcommand named by args and maps its error to an exit
// code. It is the only place that decides how the process ends.
func execute(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stdout)
		return exitOK
	}
	name, args := args[0], args[1:]
	for _, c := range commands() {
		if c.name != name {
			continue
		}
		err := c.run(args, stdout, stderr)
		if err == nil {
			return exitOK
		}
		fmt.Fprintf(stderr, "kubectl avamar %s: %v\n", name, err)
		var ee *exitError
		if errors.As(err, &ee) {
			return ee.Code
		}
		return exitFailure
	}
	fmt.Fprintf(stderr, "kubectl avamar: unknown command %q\n", name)
	usage(stderr)
	return exitUsage
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "Work with the Avamar sidecar (avsidecar) of your workloads.")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Available Commands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Usage:")
	fmt.Fprintln(w, "  kubectl avamar [command] [flags]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, `Use "kubectl avamar <command> --help" for more information about a given command.`)
}

// parseFlags parses args with fs. The flag package's own report of a bad
// flag is silenced so that execute prints the error once; -h prints the
// usage to stdout and asks the command to end with success.
func parseFlags(fs *flag.FlagSet, args []string, stdout io.Writer) (help bool, err error) {
	fs.SetOutput(io.Discard)
	err = fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		fs.SetOutput(stdout)
		fs.Usage()
		return true, nil
	}
	if err != nil {
		return false, usageError("%v (kubectl avamar %s -h lists the flags)", err, fs.Name())
	}
	return false, nil
}

func versionCmd(args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		return usageError("version takes no arguments")
	}
	rev := ""
	if r := buildinfo.Revision(); r != "" {
		rev = " revision " + r
	}
	fmt.Fprintf(stdout, "kubectl-avamar %s%s %s %s/%s\n", buildinfo.Version(), rev, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return nil
}
