// Command kubectl-avamar is the operator's tool for avsidecar, a kubectl
// plugin (`kubectl avamar ...` once it is on the PATH). It carries what the
// running sidecar never needs, so that avsidecar, PID 1 in every backed-up
// pod, links no Kubernetes library: inject and uninject add the sidecar to
// workload manifests and take it out again, status shows every backed-up
// pod of a namespace or of the cluster.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"

	"github.com/spf13/cobra"

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

func main() {
	os.Exit(execute(os.Args[1:], os.Stdout, os.Stderr))
}

// execute runs the command line and maps its error to an exit code. It is
// the only place that decides how the process ends; an error is printed
// once, each of its lines prefixed with the command's name.
func execute(args []string, stdout, stderr io.Writer) int {
	root := rootCmd(stdout, stderr)
	root.SetArgs(args)
	cmd, err := root.ExecuteC()
	if err == nil {
		return exitOK
	}
	name := "kubectl avamar"
	if cmd != nil && cmd != root {
		name += " " + cmd.Name()
	}
	for _, line := range splitLines(err.Error()) {
		fmt.Fprintf(stderr, "%s: %s\n", name, line)
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.Code
	}
	return exitFailure
}

func splitLines(s string) []string {
	var out []string
	for len(s) > 0 {
		i := 0
		for i < len(s) && s[i] != '\n' {
			i++
		}
		out = append(out, s[:i])
		if i < len(s) {
			i++
		}
		s = s[i:]
	}
	return out
}

// rootCmd is `kubectl avamar`, with kubectl's help layout.
func rootCmd(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "kubectl-avamar",
		Short: "Add the Avamar backup sidecar (avsidecar) to workloads and see every backed-up pod",
		Long: `Work with the Avamar backup sidecar (avsidecar) of your workloads.

inject adds the sidecar to StatefulSet and Deployment manifests, uninject
takes it out, status shows every backed-up pod of a namespace or of the
cluster, read from each sidecar through the API server.`,
		Annotations:   map[string]string{cobra.CommandDisplayNameAnnotation: "kubectl avamar"},
		SilenceErrors: true,
		SilenceUsage:  true,
		// No command: the help, as kubectl prints it.
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageError("unknown command %q (kubectl avamar --help lists them)", args[0])
			}
			return cmd.Help()
		},
		Args: cobra.ArbitraryArgs,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usageError("%v (kubectl avamar %s --help lists the flags)", err, c.Name())
	})
	root.CompletionOptions.DisableDefaultCmd = true
	root.AddCommand(injectCmd(stderr), uninjectCmd(stderr), statusCmd(), versionCmd())
	return root
}

func versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the plugin's version and VCS revision",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			rev := ""
			if r := buildinfo.Revision(); r != "" {
				rev = " revision " + r
			}
			_, err := fmt.Fprintf(cmd.OutOrStdout(), "kubectl-avamar %s%s %s %s/%s\n", buildinfo.Version(), rev, runtime.Version(), runtime.GOOS, runtime.GOARCH)
			return err
		},
	}
}

// noArgs refuses arguments, with exit code 2.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usageError("%s takes no arguments, got %q", cmd.Name(), args)
	}
	return nil
}
