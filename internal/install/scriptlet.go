package install

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/avsidecar/avsidecar/internal/pid1"
	"github.com/avsidecar/avsidecar/internal/rpm"
)

// maxScriptletLen bounds a scriptlet passed with sh -c: one argument may
// not exceed the kernel's MAX_ARG_STRLEN (128 KiB).
const maxScriptletLen = 120 << 10

// runScriptlet runs %pre or %post as rpm does: with its interpreter
// (/bin/sh unless the package names another), $1 set to arg, the
// relocated prefixes in RPM_INSTALL_PREFIX and RPM_INSTALL_PREFIXn, and a
// minimal environment. Its output goes to the log line by line.
//
// Where it runs: with Root "/" directly; with another Root, chrooted into
// it, as rpm --root does, when the process may chroot and the root has the
// interpreter; otherwise it is skipped with a warning, so that a test or
// demo root never runs a package's script against the host's real files.
// A Lua scriptlet (<lua>) cannot run here and is skipped with a warning.
//
// The error reads as rpm's: "%pre(name-version-release.arch) scriptlet
// failed, exit status 1". ran says the scriptlet's process started: it may
// have changed any file.
func (j *job) runScriptlet(ctx context.Context, pl *plan, which string, s rpm.Scriptlet, arg int) (ran bool, err error) {
	p := pl.pkg
	if s.Body == "" {
		return false, nil
	}
	log := j.log.With().Str("scriptlet", which).Logger()
	if j.cfg.NoScripts {
		log.Info().Msg("scriptlet skipped: scripts are off")
		return false, nil
	}
	prog := s.Prog
	if len(prog) == 0 {
		prog = []string{"/bin/sh"}
	}
	if prog[0] == "<lua>" {
		log.Warn().Msg("lua scriptlet skipped: no lua interpreter")
		return false, nil
	}
	if len(s.Body) > maxScriptletLen {
		return false, fmt.Errorf("%s(%s) scriptlet of %d bytes is too long", which, p.NEVRA(), len(s.Body))
	}
	chroot := filepath.Clean(j.cfg.Root) != "/"
	if chroot {
		if os.Geteuid() != 0 {
			log.Warn().Str("root", j.cfg.Root).Msg("scriptlet skipped: running it under another root needs chroot, which needs root")
			return false, nil
		}
		if _, err := j.root.Stat(prog[0][1:]); err != nil || !filepath.IsAbs(prog[0]) {
			log.Warn().Str("root", j.cfg.Root).Str("interpreter", prog[0]).Msg("scriptlet skipped: the root has no interpreter")
			return false, nil
		}
	}

	args := append(append([]string{}, prog[1:]...), "-c", s.Body, prog[0], strconv.Itoa(arg))
	cmd := exec.Command(prog[0], args...)
	cmd.Dir = "/"
	cmd.Env = []string{
		"PATH=/sbin:/bin:/usr/sbin:/usr/bin:/usr/X11R6/bin",
		"HOME=/root",
		"RPM_PACKAGE_NAME=" + p.Name,
		"RPM_PACKAGE_VERSION=" + p.Version,
		"RPM_PACKAGE_RELEASE=" + p.Release,
		"RPM_ARCH=" + p.Arch,
		"RPM_OS=linux",
	}
	for i, pre := range pl.prefixes {
		if i == 0 {
			cmd.Env = append(cmd.Env, "RPM_INSTALL_PREFIX="+pre)
		}
		cmd.Env = append(cmd.Env, "RPM_INSTALL_PREFIX"+strconv.Itoa(i)+"="+pre)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if chroot {
		cmd.SysProcAttr.Chroot = j.cfg.Root
	}
	proc, err := pid1.StartLines(cmd, func(line string) { log.Info().Str("line", line).Msg("scriptlet output") })
	if err != nil {
		return false, fmt.Errorf("%s(%s) scriptlet: %w", which, p.NEVRA(), err)
	}
	log.Info().Int("arg", arg).Bool("chroot", chroot).Msg("scriptlet started")
	// On cancellation the whole process group goes, not just the shell.
	err = proc.WaitContext(ctx)
	if err == nil {
		log.Info().Msg("scriptlet done")
		return true, nil
	}
	var ee *pid1.ExitError
	if errors.As(err, &ee) {
		if ee.Status.Signaled() {
			return true, fmt.Errorf("%s(%s) scriptlet failed, signal %d", which, p.NEVRA(), ee.Status.Signal())
		}
		return true, fmt.Errorf("%s(%s) scriptlet failed, exit status %d", which, p.NEVRA(), ee.ExitCode())
	}
	return true, fmt.Errorf("%s(%s) scriptlet: %w", which, p.NEVRA(), err)
}
