package install

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// dirs keeps directories of the root open, so that an operation on a file
// is one system call relative to its directory (openat, renameat...)
// rather than a walk of its whole path per call, which is what os.Root
// does: a component at a time. The directories themselves are opened
// through os.Root, so they are inside the root; the calls name a single
// component in them and never follow a symlink at it, so nothing they do
// leaves the root either.
type dirs struct {
	root *os.Root
	open map[string]*os.File
	used map[string]uint64 // when each was last used, for evict
	use  uint64
	// last is the directory used last, which is nearly always the next.
	last   string
	lastFD int
}

// maxOpenDirs bounds the directories kept open: a package is installed
// in path order, so the last used are nearly always the next needed.
const maxOpenDirs = 128

func newDirs(root *os.Root) *dirs {
	return &dirs{root: root, open: map[string]*os.File{}, used: map[string]uint64{}, lastFD: -1}
}

// fd returns a descriptor of the directory rel ("." for the root), a path
// in the root whose symlinks were followed (resolve.go). A directory is
// opened relative to its parent's descriptor, one component, never
// following a symlink at it; the root's own through os.Root.
func (d *dirs) fd(rel string) (int, error) {
	if rel == d.last && d.lastFD >= 0 {
		return d.lastFD, nil
	}
	if f, ok := d.open[rel]; ok {
		d.use++
		d.used[rel] = d.use
		d.last, d.lastFD = rel, int(f.Fd())
		return d.lastFD, nil
	}
	var f *os.File
	if rel == "." {
		var err error
		if f, err = d.root.Open("."); err != nil {
			return -1, err
		}
	} else {
		pfd, base, err := d.in(rel)
		if err != nil {
			return -1, err
		}
		fd, err := unix.Openat(pfd, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return -1, err
		}
		f = os.NewFile(uintptr(fd), rel)
	}
	if len(d.open) >= maxOpenDirs {
		d.evict()
	}
	d.open[rel] = f
	d.use++
	d.used[rel] = d.use
	d.last, d.lastFD = rel, int(f.Fd())
	return d.lastFD, nil
}

// evict closes the least recently used half of the open directories.
func (d *dirs) evict() {
	uses := make([]uint64, 0, len(d.used))
	for _, u := range d.used {
		uses = append(uses, u)
	}
	slices.Sort(uses)
	limit := uses[len(uses)/2]
	for rel, u := range d.used {
		if u <= limit {
			d.open[rel].Close()
			delete(d.open, rel)
			delete(d.used, rel)
		}
	}
	d.last, d.lastFD = "", -1
}

// in returns a descriptor of the directory of rel and rel's last
// component.
func (d *dirs) in(rel string) (int, string, error) {
	dir, base := path.Split(rel)
	dir = strings.TrimSuffix(dir, "/")
	if dir == "" {
		dir = "."
	}
	fd, err := d.fd(dir)
	return fd, base, err
}

// forget closes rel's descriptor, once rel is removed or replaced.
func (d *dirs) forget(rel string) {
	if f, ok := d.open[rel]; ok {
		f.Close()
		delete(d.open, rel)
		delete(d.used, rel)
	}
	if rel == d.last {
		d.last, d.lastFD = "", -1
	}
}

func (d *dirs) close() {
	for _, f := range d.open {
		f.Close()
	}
	d.open, d.used = map[string]*os.File{}, map[string]uint64{}
	d.last, d.lastFD = "", -1
}

// lstat stats rel, not following a symlink at it.
func (d *dirs) lstat(rel string) (unix.Stat_t, error) {
	var st unix.Stat_t
	fd, base, err := d.in(rel)
	if err == nil {
		err = unix.Fstatat(fd, base, &st, unix.AT_SYMLINK_NOFOLLOW)
	}
	return st, err
}

// create makes a new regular file rel, mode 0600; with replace, it
// replaces a leftover of that name (a killed install's temporary file).
func (d *dirs) create(rel string, replace bool) (*os.File, error) {
	fd, base, err := d.in(rel)
	if err != nil {
		return nil, err
	}
	const flags = unix.O_WRONLY | unix.O_CREAT | unix.O_EXCL | unix.O_NOFOLLOW | unix.O_CLOEXEC
	f, err := unix.Openat(fd, base, flags, 0o600)
	if errors.Is(err, unix.EEXIST) && replace {
		if err = unix.Unlinkat(fd, base, 0); err == nil {
			f, err = unix.Openat(fd, base, flags, 0o600)
		}
	}
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(f), rel), nil
}

// symlink makes rel a new symlink to target; with replace, it replaces a
// leftover.
func (d *dirs) symlink(target, rel string, replace bool) error {
	fd, base, err := d.in(rel)
	if err != nil {
		return err
	}
	err = unix.Symlinkat(target, fd, base)
	if errors.Is(err, unix.EEXIST) && replace {
		if err = unix.Unlinkat(fd, base, 0); err == nil {
			err = unix.Symlinkat(target, fd, base)
		}
	}
	return err
}

// link makes newRel a new hard link to oldRel; with replace, it replaces
// a leftover.
func (d *dirs) link(oldRel, newRel string, replace bool) error {
	ofd, obase, err := d.in(oldRel)
	if err != nil {
		return err
	}
	// Both descriptors may be needed at once: keep the first open.
	of, err := unix.Dup(ofd)
	if err != nil {
		return err
	}
	defer unix.Close(of)
	nfd, nbase, err := d.in(newRel)
	if err != nil {
		return err
	}
	err = unix.Linkat(of, obase, nfd, nbase, 0)
	if errors.Is(err, unix.EEXIST) && replace {
		if err = unix.Unlinkat(nfd, nbase, 0); err == nil {
			err = unix.Linkat(of, obase, nfd, nbase, 0)
		}
	}
	return err
}

// rename renames, within one directory, the last component of from to
// that of to (a symlink at to is replaced, not followed).
func (d *dirs) rename(from, to string) error {
	fd, fbase, err := d.in(from)
	if err != nil {
		return err
	}
	return unix.Renameat(fd, fbase, fd, path.Base(to))
}

// remove removes the file, symlink or empty directory rel; a missing one
// is no error.
func (d *dirs) remove(rel string) error {
	fd, base, err := d.in(rel)
	if err != nil {
		return err
	}
	err = unix.Unlinkat(fd, base, 0)
	if errors.Is(err, unix.EISDIR) || errors.Is(err, unix.EPERM) {
		if err = unix.Unlinkat(fd, base, unix.AT_REMOVEDIR); err == nil {
			d.forget(rel)
		}
	}
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	return err
}

// mkdir makes the directory rel, mode 0755 (its mode is set later).
func (d *dirs) mkdir(rel string) error {
	fd, base, err := d.in(rel)
	if err != nil {
		return err
	}
	return unix.Mkdirat(fd, base, 0o755)
}

// setTimes sets the mtime (and atime) of rel, a symlink itself if rel
// is one, in Unix nanoseconds.
func (d *dirs) setTimes(rel string, ns int64) error {
	fd, base, err := d.in(rel)
	if err != nil {
		return err
	}
	ts := unix.NsecToTimespec(ns)
	return unix.UtimesNanoAt(fd, base, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW)
}

// lchown sets the owner of rel, a symlink itself if rel is one.
func (d *dirs) lchown(rel string, uid, gid int) error {
	fd, base, err := d.in(rel)
	if err != nil {
		return err
	}
	return unix.Fchownat(fd, base, uid, gid, unix.AT_SYMLINK_NOFOLLOW)
}

// emptyDir reports whether rel is a directory with nothing in it.
func (d *dirs) emptyDir(rel string) (bool, error) {
	fd, base, err := d.in(rel)
	if err != nil {
		return false, err
	}
	dfd, err := unix.Openat(fd, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return false, err
	}
	f := os.NewFile(uintptr(dfd), rel)
	defer f.Close()
	names, err := f.Readdirnames(1)
	if len(names) > 0 {
		return false, nil
	}
	if errors.Is(err, io.EOF) {
		return true, nil
	}
	return false, err
}

// pathError names the path of a failed call as os does.
func pathError(op, p string, err error) error {
	return fmt.Errorf("%s %s: %w", op, p, err)
}
