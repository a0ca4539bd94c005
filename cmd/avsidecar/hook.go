package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os/signal"
	"syscall"
	"time"

	"github.com/avsidecar/avsidecar/internal/hooks"
)

// hookCmd is what the run-at-start and run-at-end scripts run: it asks the
// running sidecar to run a phase's hooks, prints each hook's outcome (the
// script's output goes to Avamar's log of the backup) and exits 0 when the
// phase passed, 1 when it failed or could not be run, so that Avamar fails
// the backup.
func hookCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("hook", flag.ContinueOnError)
	fs.SetOutput(stderr)
	socket := fs.String("socket", "", "the sidecar's hooks socket (default from AVSIDECAR_HOOKS_SOCKET)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: avsidecar hook [--socket PATH] pre|post [ARGS...]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return usageError("%v", err)
	}
	if fs.NArg() == 0 || fs.Arg(0) != hooks.PhasePre && fs.Arg(0) != hooks.PhasePost {
		fs.Usage()
		return usageError("hook needs pre or post")
	}
	phase := fs.Arg(0)
	if *socket == "" {
		cfg, err := localConfig()
		if err != nil {
			return err
		}
		*socket = cfg.Host.HooksSocket
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	run, err := hooks.Call(ctx, *socket, phase, fs.Args()[1:])
	if err != nil {
		return err
	}
	printHooks(stdout, stderr, phase, run)
	if u := run.Undo; u != nil {
		fmt.Fprintf(stderr, "avsidecar hook %s: the post hooks ran at once (%s): %s\n", phase, u.By, u.Result)
		printHooks(stdout, stderr, hooks.PhasePost, *u)
	}
	if l := run.Late; l != nil {
		fmt.Fprintf(stderr, "avsidecar hook %s: late: the freeze had ended at %s (%s ran the post hooks, %s); the end of this backup's copy was not frozen\n",
			phase, l.At.Format(time.RFC3339), l.By, l.Result)
	}
	if run.Cut {
		fmt.Fprintf(stderr, "avsidecar hook %s: cut by the sidecar's stop\n", phase)
	}
	if run.Result != hooks.ResultPassed {
		return &exitError{Code: exitFailure, Err: fmt.Errorf("the %s hooks failed: the backup must not go on", phase)}
	}
	fmt.Fprintf(stdout, "avsidecar hook %s: passed (%d hooks in %s)\n", phase, len(run.Hooks), run.Duration.D())
	return nil
}

// printHooks prints each hook's outcome, and the end of its output.
func printHooks(stdout, stderr io.Writer, phase string, run hooks.PhaseRun) {
	for _, r := range run.Hooks {
		line := fmt.Sprintf("avsidecar hook %s: %s (%s): %s in %s", phase, r.Name, r.Kind, r.Outcome, r.Duration.D())
		if r.Outcome == hooks.OutcomeOK {
			fmt.Fprintln(stdout, line)
		} else {
			fmt.Fprintf(stderr, "%s: %s (on_error %s)\n", line, r.Error, r.OnError)
		}
		for _, o := range r.Output {
			fmt.Fprintf(stdout, "  | %s\n", o)
		}
	}
	for _, name := range run.Skipped {
		fmt.Fprintf(stderr, "avsidecar hook %s: %s: skipped\n", phase, name)
	}
}
