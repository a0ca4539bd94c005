// Command avkit is the test kit's command line: the fake Avamar agent, the
// fake MCS, the fake client RPM builder and the demo.
//
// It is a multi-call binary: started as avagent.bin (the name it has inside
// the fake RPM) it is the fake agent.
//
//	avkit avagent [flags]     the fake avagent.bin (see internal/testkit/fakeagent)
//	avkit mcs [flags]         a fake MCS in the foreground, logging JSON lines
//	avkit rpm -o FILE [flags] build the fake AvamarClient RPM
//	avkit demo [flags]        run avsidecar against the fakes on this machine
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/avsidecar/avsidecar/internal/testkit/fakeagent"
)

// agentName is the name under which avkit is the fake agent.
const agentName = "avagent.bin"

func main() {
	os.Exit(execute(os.Args, os.Stdout, os.Stderr))
}

// execute runs avkit with argv (argv[0] included) and returns the exit
// code; it is the only place that decides how the process ends.
func execute(argv []string, stdout, stderr io.Writer) int {
	exe, err := os.Executable()
	if err != nil {
		exe = argv[0]
	}
	if filepath.Base(argv[0]) == agentName {
		// Start copies under the same name, not as avkit, so that they are
		// the agent too and look like it in ps.
		self := argv[0]
		if !strings.Contains(self, "/") {
			if p, err := exec.LookPath(self); err == nil {
				self = p
			}
		}
		return fakeagent.Main([]string{self}, argv[1:], stdout, stderr)
	}
	if len(argv) < 2 {
		usage(stderr)
		return 2
	}
	name, args := argv[1], argv[2:]
	switch name {
	case "avagent":
		return fakeagent.Main([]string{exe, "avagent"}, args, stdout, stderr)
	case "mcs":
		err = mcsCmd(args, stdout, stderr)
	case "rpm":
		err = rpmCmd(args, stdout, stderr)
	case "demo":
		err = demoCmd(args, stdout, stderr)
	case "help", "-h", "--help":
		usage(stdout)
		return 0
	default:
		fmt.Fprintf(stderr, "avkit: unknown command %q\n", name)
		usage(stderr)
		return 2
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, new(usageErr)):
		fmt.Fprintf(stderr, "avkit %s: %v\n", name, err)
		return 2
	default:
		fmt.Fprintf(stderr, "avkit %s: %v\n", name, err)
		return 1
	}
}

// usageErr is a bad command line (exit 2).
type usageErr struct{ error }

func usage(w io.Writer) {
	fmt.Fprint(w, `usage: avkit COMMAND [flags]

  avagent   the fake Avamar agent (also what avkit is when named avagent.bin)
  mcs       run a fake MCS: avkit mcs [--addr :28001] [--refuse REASON] [--delay D] [--max-concurrent N]
  rpm       build the fake client RPM: avkit rpm -o FILE [--version V] [--compression gzip|xz|zstd|none] [--agent PATH]
  demo      run avsidecar against the fakes on this machine, without root
`)
}

// parseFlags parses args with fs and turns a parse error into a usage error.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageErr{err}
	}
	if fs.NArg() > 0 {
		return usageErr{fmt.Errorf("unexpected arguments %q", fs.Args())}
	}
	return nil
}
