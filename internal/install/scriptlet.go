package install

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
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
// failed, exit status 1".
func (in *installer) runScriptlet(ctx context.Context, which string, p *pkg, pl *plan, s scriptlet, arg int) error {
	if s.body == "" {
		return nil
	}
	log := in.log.With().Str("scriptlet", which).Logger()
	if in.cfg.NoScripts {
		log.Info().Msg("scriptlet skipped: scripts are off")
		return nil
	}
	prog := s.prog
	if len(prog) == 0 {
		prog = []string{"/bin/sh"}
	}
	if prog[0] == "<lua>" {
		log.Warn().Msg("lua scriptlet skipped: no lua interpreter")
		return nil
	}
	if len(s.body) > maxScriptletLen {
		return fmt.Errorf("%s(%s) scriptlet of %d bytes is too long", which, p.nevra(), len(s.body))
	}
	chroot := filepath.Clean(in.cfg.Root) != "/"
	if chroot {
		if os.Geteuid() != 0 {
			log.Warn().Str("root", in.cfg.Root).Msg("scriptlet skipped: running it under another root needs chroot, which needs root")
			return nil
		}
		if _, err := in.root.Stat(prog[0][1:]); err != nil || !filepath.IsAbs(prog[0]) {
			log.Warn().Str("root", in.cfg.Root).Str("interpreter", prog[0]).Msg("scriptlet skipped: the root has no interpreter")
			return nil
		}
	}

	args := append(append([]string{}, prog[1:]...), "-c", s.body, prog[0], strconv.Itoa(arg))
	cmd := exec.CommandContext(ctx, prog[0], args...)
	cmd.Dir = "/"
	cmd.Env = []string{
		"PATH=/sbin:/bin:/usr/sbin:/usr/bin:/usr/X11R6/bin",
		"HOME=/root",
		"RPM_PACKAGE_NAME=" + p.name,
		"RPM_PACKAGE_VERSION=" + p.version,
		"RPM_PACKAGE_RELEASE=" + p.release,
		"RPM_ARCH=" + p.arch,
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
		cmd.SysProcAttr.Chroot = in.cfg.Root
	}
	// On cancellation the whole process group goes, not just the shell.
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	// An *os.File, not exec's pipe: a daemon the scriptlet starts may hold
	// the pipe open for ever, and Wait must not wait for it.
	pr, pw, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("%s(%s) scriptlet: %w", which, p.nevra(), err)
	}
	defer pr.Close()
	cmd.Stdout, cmd.Stderr = pw, pw // one pipe: lines stay in the order they were written
	err = cmd.Start()
	pw.Close()
	if err != nil {
		return fmt.Errorf("%s(%s) scriptlet: %w", which, p.nevra(), err)
	}
	log.Info().Int("arg", arg).Bool("chroot", chroot).Msg("scriptlet started")
	done := make(chan struct{})
	go func() {
		defer close(done)
		logLines(pr, func(line string) { log.Info().Str("line", line).Msg("scriptlet output") })
	}()
	err = cmd.Wait()
	select {
	case <-done:
	case <-time.After(time.Second):
		// A child of the scriptlet still has the pipe: stop following it.
		pr.Close()
		<-done
	}
	if err == nil {
		log.Info().Msg("scriptlet done")
		return nil
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return fmt.Errorf("%s(%s) scriptlet failed, signal %d", which, p.nevra(), ws.Signal())
		}
		return fmt.Errorf("%s(%s) scriptlet failed, exit status %d", which, p.nevra(), ee.ExitCode())
	}
	return fmt.Errorf("%s(%s) scriptlet: %w", which, p.nevra(), err)
}

// logLines calls fn for each line r yields; a line longer than 64 KiB
// comes in pieces.
func logLines(r io.Reader, fn func(string)) {
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			fn(strings.TrimRight(string(line), "\r\n"))
		}
		if err != nil && err != bufio.ErrBufferFull {
			return
		}
	}
}
