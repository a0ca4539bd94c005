package main

import (
	"errors"
	"flag"
	"io"
)

// parseFlags parses args with fs. The flag package's own report of a bad
// flag is silenced, so that the error is printed once, by execute, with a
// pointer to -h; -h prints the usage to stdout and asks the command to end
// with success (help is true).
func parseFlags(fs *flag.FlagSet, args []string, stdout io.Writer) (help bool, err error) {
	fs.SetOutput(io.Discard)
	err = fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		fs.SetOutput(stdout)
		fs.Usage()
		return true, nil
	}
	if err != nil {
		return false, usageError("%v (avsidecar %s -h lists the flags)", err, fs.Name())
	}
	return false, nil
}
