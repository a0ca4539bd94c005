package main

import (
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/avsidecar/avsidecar/internal/testkit"
)

// rpmCmd builds the fake AvamarClient RPM. Without --agent, the running
// avkit binary is shipped as the agent.
func rpmCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("avkit rpm", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("o", "", "output file (a directory gets the conventional file name)")
	var opts testkit.RPMOptions
	fs.StringVar(&opts.Version, "version", testkit.DefaultRPMVersion, "package version")
	fs.StringVar(&opts.Release, "release", testkit.DefaultRPMRelease, "package release")
	fs.StringVar(&opts.Compression, "compression", "gzip", "payload compression: gzip, xz, zstd, lzma or none")
	fs.StringVar(&opts.AgentBinary, "agent", "", "avkit binary shipped as bin/avagent.bin (default: this one)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *out == "" {
		return usageErr{fmt.Errorf("-o FILE is required")}
	}
	if opts.AgentBinary == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("find avkit binary: %w", err)
		}
		opts.AgentBinary = exe
	}
	path := *out
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		p, err := testkit.BuildRPMFile(path, opts)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, p)
		return nil
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("create rpm: %w", err)
	}
	if err := testkit.BuildRPM(f, opts); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write rpm: %w", err)
	}
	fmt.Fprintln(stdout, path)
	return nil
}
