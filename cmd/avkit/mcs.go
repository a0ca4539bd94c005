package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os/signal"
	"syscall"

	"github.com/rs/zerolog"

	"github.com/avsidecar/avsidecar/internal/testkit"
)

// mcsCmd runs a fake MCS until SIGINT or SIGTERM, logging each
// registration and callback as a JSON line on stdout.
func mcsCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("avkit mcs", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", ":28001", "listen address")
	var opts testkit.MCSOptions
	fs.StringVar(&opts.Refuse, "refuse", "", "refuse every registration with this reason")
	fs.DurationVar(&opts.Delay, "delay", 0, "wait this long before answering a registration")
	fs.IntVar(&opts.MaxConcurrent, "max-concurrent", 0, "handle at most N registrations at once, refuse the others as busy (0: no limit)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	opts.Log = zerolog.New(stdout).With().Timestamp().Str("component", "mcs").Logger()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	m, err := testkit.StartMCS(*addr, opts)
	if err != nil {
		return fmt.Errorf("mcs: %w", err)
	}
	<-ctx.Done()
	opts.Log.Info().Int("registrations", len(m.Registrations())).Msg("mcs stopping")
	return m.Close()
}
