package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path"
	"path/filepath"
	"syscall"

	"github.com/avsidecar/avsidecar/internal/install"
)

// installCmd is `avsidecar install`: the install step of run, alone, for
// image builds and debugging. Flags default to the environment run reads.
func installCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("install", flag.ContinueOnError)
	fs.SetOutput(stderr)
	rpmFlag := fs.String("rpm", envOr("AVAMAR_RPM", "/opt/avamar/AvamarClient-*.rpm"), "client RPM, a path or glob inside the root with exactly one match (AVAMAR_RPM)")
	root := fs.String("root", envOr("AVSIDECAR_ROOT", "/"), "host directory everything is installed under, like rpm --root (AVSIDECAR_ROOT)")
	prefix := fs.String("prefix", envOr("AVAMAR_PREFIX", "/usr/local/avamar"), "where the package's prefix is relocated to, inside the root (AVAMAR_PREFIX)")
	stateDir := fs.String("state-dir", os.Getenv("AVSIDECAR_STATE_DIR"), "receipt directory inside the root (AVSIDECAR_STATE_DIR; default PREFIX/var/avsidecar)")
	noScripts := fs.Bool("noscripts", false, "do not run %pre and %post, like rpm --noscripts")
	noSync := fs.Bool("nosync", false, "skip the syncfs before the receipt: safe against kills, not against power loss")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return usageError("%v", err)
	}
	if fs.NArg() > 0 {
		return usageError("install takes no arguments, got %q", fs.Args())
	}
	var problems []string
	if !filepath.IsAbs(*root) {
		problems = append(problems, fmt.Sprintf("--root %q is not an absolute path", *root))
	}
	if !path.IsAbs(*prefix) || path.Clean(*prefix) == "/" {
		problems = append(problems, fmt.Sprintf("--prefix %q is not an absolute path below /", *prefix))
	}
	if *stateDir != "" && !path.IsAbs(*stateDir) {
		problems = append(problems, fmt.Sprintf("--state-dir %q is not an absolute path", *stateDir))
	}
	if len(problems) > 0 {
		return usageError("%s", joinProblems(problems))
	}
	rpmPath, err := install.FindRPM(*root, *rpmFlag)
	if err != nil {
		return usageError("%v", err)
	}

	log := earlyLogger(stdout).With().Str("component", "install").Logger()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	res, err := install.Install(ctx, install.Config{
		RPM:       rpmPath,
		Root:      *root,
		Prefix:    *prefix,
		StateDir:  *stateDir,
		NoScripts: *noScripts,
		NoSync:    *noSync,
	}, log)
	if errors.Is(err, install.ErrUnusable) {
		return &exitError{Code: exitBadRPM, Err: err}
	}
	if err != nil {
		return err
	}
	what := "installed"
	switch {
	case res.Restored > 0:
		what = fmt.Sprintf("already installed, %d missing files restored", res.Restored)
	case !res.Changed:
		what = "already installed (receipt matches)"
	}
	fmt.Fprintf(stdout, "%s-%s-%s.%s %s: %d files in %s under %s, %s\n",
		res.Name, res.Version, res.Release, res.Arch, what, res.Files, res.Prefix, *root, res.Duration.Round(100_000))
	return nil
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func joinProblems(p []string) string {
	s := p[0]
	for _, x := range p[1:] {
		s += "; " + x
	}
	return s
}
