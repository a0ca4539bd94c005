package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/avsidecar/avsidecar/internal/avclient"
	"github.com/avsidecar/avsidecar/internal/config"
	"github.com/avsidecar/avsidecar/internal/install"
	"github.com/avsidecar/avsidecar/internal/pid1"
)

// installCmd is `avsidecar install`: the install step of run, alone, for
// image builds and debugging. It reads the same variables as run, and each
// flag stands for one of them.
func installCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("install", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: avsidecar install [--rpm PATH] [--root DIR] [--prefix DIR] [--state-dir DIR] [--noscripts] [--nosync]")
		fs.PrintDefaults()
	}
	set := map[string]*string{
		"AVAMAR_RPM":          fs.String("rpm", "", "client RPM, a path or glob inside the root with exactly one match (default $AVAMAR_RPM)"),
		"AVSIDECAR_ROOT":      fs.String("root", "", "host directory everything is installed under, like rpm --root (default $AVSIDECAR_ROOT)"),
		"AVAMAR_PREFIX":       fs.String("prefix", "", "where the package's prefix is relocated to, inside the root (default $AVAMAR_PREFIX)"),
		"AVSIDECAR_STATE_DIR": fs.String("state-dir", "", "receipt directory inside the root (default $AVSIDECAR_STATE_DIR)"),
	}
	noScripts := fs.Bool("noscripts", false, "do not run %pre and %post, like rpm --noscripts")
	noSync := fs.Bool("nosync", false, "skip the syncfs before the receipt: safe against kills, not against power loss")
	if help, err := parseFlags(fs, args, stdout); help || err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError("install takes no arguments, got %q", fs.Args())
	}
	vars := map[string]string{}
	for name, v := range set {
		vars[name] = *v
	}
	cfg, err := config.Load(config.ScopeInstall, config.Sources{Set: vars, FindRPM: install.FindRPM, FindPrefix: avclient.FindPrefix})
	if err != nil {
		return &exitError{Code: exitConfig, Err: err}
	}

	log := newLogger(stdout, cfg.LogLevel, cfg.LogFormat).With().Str("component", "install").Logger()
	ctx, stop := pid1.StopContext(context.Background(), log)
	defer stop()
	res, err := install.Install(ctx, install.Config{
		RPM:       cfg.Host.RPM,
		Root:      cfg.Root,
		Prefix:    cfg.Prefix,
		StateDir:  cfg.StateDir,
		NoScripts: *noScripts,
		NoSync:    *noSync,
	}, log)
	if err != nil {
		return cfg.InstallHint(err)
	}
	what := "installed"
	switch {
	case res.Restored > 0:
		what = fmt.Sprintf("already installed, %d missing files restored", res.Restored)
	case !res.Changed:
		what = "already installed (receipt matches)"
	}
	fmt.Fprintf(stdout, "%s-%s-%s.%s %s: %d files in %s under %s, %s\n",
		res.Name, res.Version, res.Release, res.Arch, what, res.Files, res.Prefix, cfg.Root, res.Duration.D().Round(100_000))
	return nil
}
