// Package install installs the Avamar client RPM the way `rpm -i
// --relocate` would, without an rpm binary and only when needed.
//
// Reading and checking the package is internal/rpm's: its headers and
// file list before anything is written, every digest it carries (header
// SHA-256, payload digest, or the legacy MD5), and each payload entry
// against the header (type, size, digest) as it is read. This package
// writes the root, in phases that hand each other what they made: read
// the state dir, read and verify the package, plan where every file goes,
// apply, record the receipt (or restore what is missing). It reads the
// payload once and writes each file as a temporary file next to its
// destination when something is there, renamed into place only when the
// whole payload has checked out, and in place where nothing was (undone
// on a failure); so a bad package leaves the previous installation
// untouched. Where nothing is
// installed to compare the package with, its payload digest is checked
// while the payload is extracted (its header, scriptlets included, first),
// and the first change that is not undone waits for it.
//
// Crash safety comes from ordering, not from an fsync per file: a pending
// journal naming the new files is written before the first change, and the
// receipt (package SHA-256, prefix, owned files with their digests) is
// written last, after one syncfs(2) of the root's file system (which the
// install has had writing back all along). A start that finds the journal,
// or no matching receipt, installs again; an install is idempotent, so an
// interrupted one is repaired by the next, and so is one that failed after
// its files were in place, once the cause is gone.
//
// A matching receipt whose files are merely missing (a new container on
// the old volume: what the package put outside the prefix, such as
// /etc/init.d/avagent, lived in the image layer) is repaired by a restore:
// the missing files come from the verified payload as a full install would
// write them, present files are not touched, no scriptlet runs and the
// receipt is not written. A file that is present but changed (other than
// an edited %config file), or a missing one the install left as the
// payload cannot reproduce (a scriptlet edited it), makes a full install
// with scriptlets, as it did before: only that restores a file whose
// content nobody can vouch for.
//
// A panic while installing (in the installer, a library it calls, or the
// goroutine that verifies the package) is an install error that matches
// ErrInternal and not ErrUnusable, never the end of the process: it is
// undone or repaired as any other failure at that point, and the receipt
// is not written, so the next start installs again.
//
// Upgrades follow rpm: files the old package owned and the new one does
// not are removed, modified %config files are kept (the new one is written
// as .rpmnew), and nothing the package does not own is touched.
//
// What rpm leaves, the install leaves: %ghost files, directories and links
// are neither created nor removed; owners are resolved in the root's
// /etc/passwd and /etc/group (set when the process runs as root), and an
// unknown name becomes root and takes the setuid (or setgid) bit away;
// file capabilities (%caps) are written as security.capability (as root;
// a warning says they are not, otherwise); file and symlink mtimes are the
// package's, and a directory has the package's mtime unless the install
// writes into it; symlinks of the root are followed inside it, as by rpm
// --root (chrooted): /var/run -> /run leads to the root's /run, never the
// host's; of several prefixes, the client's (/usr/local/avamar, or the one
// that holds bin/avagent.bin) is relocated and the others stay.
//
// Where rpm and the product differ, the product's contract wins: an edited
// %config file is kept for plain %config as for %config(noreplace) (rpm
// would move the edited one aside as .rpmsave); an edited %config file an
// upgrade drops is kept as .rpmsave, as rpm does. Device nodes, FIFOs and
// sockets are refused as unsupported, and source packages as what they
// are. Signatures are not checked (there is no keyring), so one rpm cannot
// parse does not stop an install; the digests do.
//
// Scriptlets (%pre, %post) run with their interpreter (/bin/sh), $1 (1 to
// install, 2 to upgrade) and RPM_INSTALL_PREFIX. With Root "/" they run
// directly; with another Root they run chrooted into it, like rpm --root,
// when the process may chroot and Root has the interpreter, and are
// skipped with a warning otherwise, so that a test or demo root never
// runs a package's script against the host. A failing %pre stops the
// install before any file is written; a failing %post is a warning, and
// the package stays installed, as with rpm.
package install

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"time"

	"github.com/avsidecar/avsidecar/internal/millis"
	"github.com/avsidecar/avsidecar/internal/rpm"
	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
)

// Config says what to install where. Paths "inside Root" are as the client
// sees them after a chroot into Root.
type Config struct {
	// RPM is the host path of the .rpm file.
	RPM string
	// Root is the host path everything is installed under, like rpm
	// --root: "/" in production, a scratch directory in tests and demos.
	Root string
	// Prefix is the path inside Root the package's relocatable prefix is
	// installed to (rpm --relocate FROM=Prefix), e.g. /usr/local/avamar.
	Prefix string
	// StateDir is the path inside Root of the directory holding the
	// install receipt and journal. Empty means $Prefix/var/avsidecar.
	StateDir string
	// From is the package prefix relocated to Prefix. Empty means the
	// client's: the package's only prefix, or of several (the others stay
	// where they are, as with rpm --relocate) /usr/local/avamar, or else
	// the one that holds bin/avagent.bin.
	From string
	// MaxSize caps the bytes a package may install (the sum of its
	// regular files, as its header declares them). Zero means 16 GiB.
	MaxSize int64
	// NoScripts skips the %pre and %post scriptlets, like rpm --noscripts.
	NoScripts bool
	// NoSync skips the syncfs(2) before the receipt is written. The
	// install stays safe against the process being killed, but not against
	// the machine losing power. For benchmarks and throwaway roots.
	NoSync bool
}

// Result describes the package now installed.
type Result struct {
	// Changed is false when a matching receipt made installing unnecessary.
	Changed bool `json:"changed"`
	// Restored counts the files, directories and links a matching receipt
	// listed that were missing (a new container's image layer lacks what
	// the package put outside the volume) and were restored from the
	// payload, without scriptlets. Changed stays false then.
	Restored int `json:"restored"`
	// Name, Version, Release and Arch identify the package.
	Name    string `json:"name"`
	Version string `json:"version"`
	Release string `json:"release"`
	Arch    string `json:"arch"`
	// SHA256 is the digest of the whole RPM file, the receipt's key.
	SHA256 string `json:"sha256"`
	// Prefix is where the relocatable prefix was installed, inside Root.
	Prefix string `json:"prefix"`
	// Files is the number of files, directories and links the package owns.
	Files int `json:"files"`
	// Signature says whether the package is signed: "none", or which
	// signatures are present (they are not checked: there is no keyring).
	Signature string `json:"signature,omitempty"`
	// Duration is how long Install took.
	Duration millis.Duration `json:"duration_ms"`
}

// ErrUnusable is matched (errors.Is) by every error that means the RPM
// itself cannot be installed: corrupt, truncated, tampered, unsafe or
// unsupported. avsidecar exits 3 on it. It is rpm.ErrUnusable: the
// reader's refusals match it too.
var ErrUnusable = rpm.ErrUnusable

// unusable makes an error that matches ErrUnusable.
var unusable = rpm.Unusable

const defaultMaxSize = 16 << 30

// withDefaults validates the configuration and fills in the defaults.
func (c Config) withDefaults() (Config, error) {
	var problems []string
	if c.RPM == "" {
		problems = append(problems, "no rpm file")
	}
	if c.Root == "" {
		c.Root = "/"
	}
	if !filepath.IsAbs(c.Root) {
		problems = append(problems, fmt.Sprintf("root %q is not absolute", c.Root))
	}
	for _, p := range []*string{&c.Prefix, &c.StateDir, &c.From} {
		if *p != "" {
			*p = path.Clean(*p)
		}
	}
	if c.Prefix == "" || !path.IsAbs(c.Prefix) || c.Prefix == "/" {
		problems = append(problems, fmt.Sprintf("prefix %q is not an absolute path below /", c.Prefix))
	}
	if c.StateDir == "" && c.Prefix != "" {
		c.StateDir = path.Join(c.Prefix, "var", "avsidecar")
	}
	if !path.IsAbs(c.StateDir) || c.StateDir == "/" {
		problems = append(problems, fmt.Sprintf("state dir %q is not an absolute path below /", c.StateDir))
	}
	if c.MaxSize <= 0 {
		c.MaxSize = defaultMaxSize
	}
	if len(problems) > 0 {
		return c, fmt.Errorf("install config: %s", strings.Join(problems, "; "))
	}
	return c, nil
}

// ErrInternal is matched (errors.Is) by the error of an install that
// panicked: in the installer, a library it calls or one of its goroutines.
// That is a defect of the installer, not proof that the package is bad, so
// it does not match ErrUnusable: avsidecar exits 1, and the next start
// installs again. Nothing half-written passes for installed: the receipt
// is not written, what was not yet in place is undone as after any
// failure, and once files are in place the journal has the next start
// install again.
var ErrInternal = errors.New("internal error")

// Install installs cfg.RPM under cfg.Root unless the receipt in the state
// dir says this very file is already installed at this prefix. Then, when
// the installed files are still there, it returns at once with
// Changed=false and writes nothing; when some are merely missing, it
// restores those from the payload (Restored counts them) and touches
// nothing else: no scriptlet runs and the receipt stays as it is.
func Install(ctx context.Context, cfg Config, log zerolog.Logger) (Result, error) {
	start := time.Now()
	cfg, err := cfg.withDefaults()
	if err != nil {
		return Result{}, err
	}
	res, err := installSafely(ctx, cfg, log)
	err = decoderPanicIsInternal(err)
	res.Duration = millis.Since(start)
	switch {
	case err != nil && cfg.Root != "/":
		// Paths in the error are the package's, inside the root.
		return res, fmt.Errorf("install %s into root %s: %w", cfg.RPM, cfg.Root, err)
	case err != nil:
		return res, fmt.Errorf("install %s: %w", cfg.RPM, err)
	}
	return res, nil
}

// installSafely is install with a panic turned into an error that matches
// ErrInternal: the process (PID 1 in a pod) outlives a bug. By the time it
// recovers, every deferred cleanup of the phases has run, as after an
// error. Its stack goes to the log, for the bug report.
func installSafely(ctx context.Context, cfg Config, log zerolog.Logger) (res Result, err error) {
	defer func() {
		if v := recover(); v != nil {
			res, err = Result{}, panicError(v, log)
		}
	}()
	return install(ctx, cfg, log)
}

// decoderPanicIsInternal makes a payload decoder's panic, recovered by
// internal/rpm on its own goroutine, an ErrInternal as a panic of the
// installer's is: a bug, not a bad package, and not a failed write.
func decoderPanicIsInternal(err error) error {
	if errors.Is(err, rpm.ErrDecoderPanic) && !errors.Is(err, ErrInternal) {
		return fmt.Errorf("%w: %w", ErrInternal, err)
	}
	return err
}

// panicError makes the error of a recovered panic. The panic's value is
// only quoted, never wrapped: an error it carries must not make the
// install look like one that failed on its own terms (ErrUnusable).
func panicError(v any, log zerolog.Logger) error {
	log.Error().Str("panic", fmt.Sprint(v)).Str("stack", string(debug.Stack())).Msg("installer panicked")
	return fmt.Errorf("%w: %v", ErrInternal, v)
}

// stepHook, when a test sets it, is called at the named steps of an
// install (step), on whichever goroutine is there: a seam to make one
// panic. Unset otherwise.
var stepHook atomic.Pointer[func(name string)]

func step(name string) {
	if h := stepHook.Load(); h != nil {
		(*h)(name)
	}
}

// install is the whole install, phase by phase: read the state dir, read
// and verify the package, plan, then apply and record (or restore what is
// missing). Each phase takes what it needs and returns what it made.
func install(ctx context.Context, cfg Config, log zerolog.Logger) (Result, error) {
	j, err := openJob(cfg, log)
	if err != nil {
		return Result{}, err
	}
	defer j.close()

	// The fast path: this very file (same identity, size, times) was
	// installed here and its files are still in place. Nothing is read but
	// the receipt and a stat per owned file; the RPM is read only when a
	// file is missing or changed.
	if st := j.readState(); j.unchanged(st) {
		return nothingToDo(st.old, log), nil
	}
	// Installs into one root take turns. The lock is on the root directory
	// itself, so taking it writes nothing; the receipt is read again once
	// it is held, as another process may just have installed this file.
	unlock, err := lockRoot(ctx, j.root)
	if err != nil {
		return Result{}, err
	}
	defer unlock()
	if err := j.clearStateDebris(); err != nil {
		return Result{}, err
	}
	st := j.readState()
	if j.unchanged(st) {
		return nothingToDo(st.old, log), nil
	}

	pkg, chk, err := j.readPackage(st)
	if err != nil {
		return Result{}, err
	}
	missing, intact := j.missing(st, chk)
	if intact && len(missing) == 0 {
		return nothingToDo(st.old, log), nil
	}
	pl, err := makePlan(pkg, cfg, log)
	if err != nil {
		return Result{}, err
	}
	if intact {
		// Only missing files: restore them, unless the install left one
		// as something the payload cannot reproduce.
		if items := restorable(pl, missing, log); items != nil {
			return j.restore(ctx, pl, items, st.old)
		}
	}
	done, err := j.apply(ctx, pl, st, chk)
	if err != nil {
		return Result{}, err
	}
	rc, err := j.record(pl, done)
	if err != nil {
		return Result{}, err
	}
	return rc.result(true), nil
}

// job is what one install was asked and what it opened: the package
// file it reads and the root it writes. None of it changes while the
// install runs (resolved only remembers lookups); what a phase makes, the
// phase returns.
type job struct {
	cfg  Config
	log  zerolog.Logger
	file *os.File    // the package
	fp   fingerprint // of file, as opened
	root *os.Root
	// resolved remembers directories of the root, their symlinks
	// followed (dirOf).
	resolved resolver
}

// openJob opens the package file and the root, made if need be.
func openJob(cfg Config, log zerolog.Logger) (*job, error) {
	f, err := os.Open(cfg.RPM)
	if err != nil {
		return nil, fmt.Errorf("open rpm: %w", err)
	}
	root, fp, err := func() (*os.Root, fingerprint, error) {
		st, err := f.Stat()
		if err != nil {
			return nil, fingerprint{}, fmt.Errorf("stat rpm: %w", err)
		}
		if !st.Mode().IsRegular() {
			return nil, fingerprint{}, unusable("not a regular file")
		}
		if err := os.MkdirAll(cfg.Root, 0o755); err != nil {
			return nil, fingerprint{}, fmt.Errorf("create root: %w", err)
		}
		root, err := os.OpenRoot(cfg.Root)
		if err != nil {
			return nil, fingerprint{}, fmt.Errorf("open root: %w", err)
		}
		return root, fingerprintOf(st), nil
	}()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &job{cfg: cfg, log: log, file: f, fp: fp, root: root}, nil
}

func (j *job) close() {
	j.root.Close()
	j.file.Close()
}

// stateDebris reports whether a kill left the temporary file of a receipt
// or journal behind. Such a root is not current: the install takes the lock
// and clears it (clearStateDebris) before it looks again.
func (j *job) stateDebris() bool {
	for _, name := range []string{receiptName, journalName} {
		for _, suffix := range tmpSuffixes {
			if _, err := j.root.Lstat(j.statePath(name + suffix)); err == nil {
				return true
			}
		}
	}
	return false
}

// clearStateDebris removes what stateDebris finds; only under the root lock,
// where no other install can be writing those files.
func (j *job) clearStateDebris() error {
	for _, name := range []string{receiptName, journalName} {
		for _, suffix := range tmpSuffixes {
			if err := j.root.Remove(j.statePath(name + suffix)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("remove interrupted %s: %w", name, err)
			}
		}
	}
	return nil
}

func nothingToDo(old *receipt, log zerolog.Logger) Result {
	log.Info().Str("name", old.Name).Str("version", old.Version+"-"+old.Release).Str("sha256", old.SHA256).Msg("receipt matches, nothing to install")
	return old.result(false)
}

// FindRPM resolves pattern, a path or glob inside root (AVAMAR_RPM), to the
// host path of exactly one file. It names what it found when there is not
// exactly one.
func FindRPM(root, pattern string) (string, error) {
	if root == "" {
		root = "/"
	}
	if !path.IsAbs(pattern) {
		return "", fmt.Errorf("find rpm: %q is not an absolute path", pattern)
	}
	full := filepath.Join(root, filepath.FromSlash(pattern))
	if !strings.ContainsAny(pattern, `*?[\\`) {
		// A path, not a glob: say what is wrong with that very file.
		st, err := os.Stat(full)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return "", fmt.Errorf("find rpm: %s does not exist", full)
		case err != nil:
			return "", fmt.Errorf("find rpm: %w", err)
		case st.IsDir():
			return "", fmt.Errorf("find rpm: %s is a directory, not an RPM file", full)
		case !st.Mode().IsRegular():
			return "", fmt.Errorf("find rpm: %s is not a regular file", full)
		}
		return full, nil
	}
	matches, err := filepath.Glob(full)
	if err != nil {
		return "", fmt.Errorf("find rpm: bad pattern %q: %w", pattern, err)
	}
	var files []string
	for _, m := range matches {
		if st, err := os.Stat(m); err == nil && st.Mode().IsRegular() {
			files = append(files, m)
		}
	}
	switch len(files) {
	case 0:
		return "", fmt.Errorf("find rpm: no file matches %s under %s (is the volume with the client RPM mounted?)", pattern, root)
	case 1:
		return files[0], nil
	}
	return "", fmt.Errorf("find rpm: %d files match %s under %s, want exactly one: %s", len(files), pattern, root, strings.Join(files, ", "))
}

// lockRoot takes an exclusive flock(2) on the root directory, waiting for
// another install to finish, or for ctx.
func lockRoot(ctx context.Context, root *os.Root) (func(), error) {
	d, err := root.Open(".")
	if err != nil {
		return nil, fmt.Errorf("lock root: %w", err)
	}
	fd := int(d.Fd())
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err == nil {
		return func() { d.Close() }, nil
	}
	done := make(chan error, 1)
	go func() { done <- unix.Flock(fd, unix.LOCK_EX) }()
	select {
	case err := <-done:
		if err != nil {
			d.Close()
			return nil, fmt.Errorf("lock root: %w", err)
		}
		return func() { d.Close() }, nil
	case <-ctx.Done():
		// flock cannot be interrupted: the descriptor (and the lock, if the
		// wait ends with one) is let go when the wait ends.
		go func() { <-done; d.Close() }()
		return nil, ctx.Err()
	}
}
