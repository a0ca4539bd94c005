package main

import (
	"flag"
	"fmt"
	"io"
	"strings"
)

// probeCmd is for exec probes and people: it exits 0 when the named check
// passes and prints the failing checks otherwise.
func probeCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("probe", flag.ContinueOnError)
	addr := addrFlag(fs)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: avsidecar probe live|ready|startup [--addr HOST:PORT]")
		fs.PrintDefaults()
	}
	var which string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		which, args = args[0], args[1:]
	}
	if help, err := parseFlags(fs, args, stdout); help || err != nil {
		return err
	}
	if which == "" && fs.NArg() == 1 {
		which = fs.Arg(0)
	} else if fs.NArg() > 0 {
		return usageError("unexpected arguments %q", fs.Args())
	}
	paths := map[string]string{"live": "/livez", "ready": "/readyz", "startup": "/startupz"}
	path, ok := paths[which]
	if !ok {
		return usageError("probe needs live, ready or startup, got %q (avsidecar probe -h)", which)
	}
	local, err := localAddr(*addr)
	if err != nil {
		return err
	}
	code, body, err := localGet(local, path+"?verbose")
	if err != nil {
		return err
	}
	if code != 200 {
		fmt.Fprint(stdout, string(body))
		return fmt.Errorf("%s probe failed with HTTP %d", which, code)
	}
	fmt.Fprint(stdout, string(body))
	return nil
}
