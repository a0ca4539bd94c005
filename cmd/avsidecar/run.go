package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/rs/zerolog"

	"github.com/avsidecar/avsidecar/internal/avclient"
	"github.com/avsidecar/avsidecar/internal/config"
	"github.com/avsidecar/avsidecar/internal/install"
	"github.com/avsidecar/avsidecar/internal/pid1"
	"github.com/avsidecar/avsidecar/internal/sidecar"
)

// runCmd is `avsidecar run`: parse, load the configuration, become the
// reaper, build the sidecar and run it until a stop signal.
func runCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: avsidecar [run]\n\nConfiguration, from the environment:")
		_ = config.Usage(fs.Output())
	}
	if help, err := parseFlags(fs, args, stdout); help || err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError("run takes no arguments, got %q", fs.Args())
	}
	cfg, err := config.Load(config.ScopeRun, config.Sources{Hostname: os.Hostname, FindRPM: install.FindRPM, FindPrefix: avclient.FindPrefix})
	if err != nil {
		// The log settings may be what is wrong: the JSON line uses the
		// defaults, so kubectl logs shows the failure as well as stderr.
		log := newLogger(stdout, zerolog.InfoLevel, "json")
		log.Error().Str("component", "main").Err(err).Msg("avsidecar failed")
		return &exitError{Code: exitConfig, Err: err}
	}
	log := newLogger(stdout, cfg.LogLevel, cfg.LogFormat)
	mainLog := log.With().Str("component", "main").Logger()
	// A failed start is in the JSON log for kubectl logs, and on stderr
	// (execute prints the error) for the container's termination message.
	fail := func(err error) error {
		mainLog.Error().Err(err).Msg("avsidecar failed")
		return &exitError{Code: exitCode(err), Err: err}
	}
	// From here on every child is started through pid1, which alone waits.
	if err := pid1.Reap(mainLog); err != nil {
		return fail(err)
	}
	ctx, stop := pid1.StopContext(context.Background(), mainLog)
	defer stop()
	s, err := sidecar.New(cfg, log, idleTuning(os.Getenv))
	if err != nil {
		return fail(err)
	}
	if err := s.Run(ctx); err != nil {
		return fail(err)
	}
	return nil
}

// idleTuning is sidecar.IdleTuning but for what the operator set: GOGC
// and GOMAXPROCS, which the Go runtime reads itself, are left as they are.
func idleTuning(getenv func(string) string) sidecar.Tuning {
	t := sidecar.IdleTuning
	if getenv("GOGC") != "" {
		t.GCPercent = 0
	}
	if getenv("GOMAXPROCS") != "" {
		t.MaxProcs = 0
	}
	return t
}
