// Package fswalk gives confined, read-only access to the browse roots: it
// resolves request paths to a root with os.Root (so no path, symlink or race
// can reach outside it), lists directories with getdents-sized reads, pages
// sorted listings with cursors that survive changes, and walks trees in
// parallel while streaming, so memory does not grow with the tree.
//
// Nothing in this package ever opens a non-directory: directories are opened
// with O_DIRECTORY and everything else is only lstat'ed, so FIFOs, sockets
// and devices are described but never read.
package fswalk

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Errors returned by resolution. They carry no detail on purpose: the
// same error is returned for a path that is missing and for one that
// exists outside the roots, so answers tell nothing about what lies outside.
var (
	// ErrInvalidPath is a path that is not absolute and canonical: relative,
	// containing NUL, empty components, "." or "..", or too long.
	ErrInvalidPath = errors.New("invalid path")
	// ErrNotFound is a path that does not exist inside a browse root, lies
	// outside every root, or resolves (through symlinks) outside its root.
	ErrNotFound = errors.New("not found")
	// ErrNotDir is an existing path inside a root that is not a directory.
	ErrNotDir = errors.New("not a directory")
	// ErrPermission is an existing path inside a root that cannot be read.
	ErrPermission = errors.New("permission denied")
)

// MaxPathLen bounds the length of a request path (PATH_MAX on Linux).
const MaxPathLen = 4096

// Roots is the set of browse roots, each opened once as an os.Root.
// It is safe for concurrent use.
type Roots struct {
	roots []root // longest path first, so nested roots resolve to the innermost
}

type root struct {
	path string // clean absolute host path
	r    *os.Root
}

// OpenRoots opens every path as a browse root. Paths must be absolute
// directories; surrounding spaces, empty items and duplicates are dropped
// (so "a, b," from a comma list works). An empty list gives an empty set.
func OpenRoots(paths []string) (*Roots, error) {
	rs := &Roots{}
	seen := map[string]bool{}
	var errs []error
	for _, p := range paths {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		if !filepath.IsAbs(p) {
			errs = append(errs, fmt.Errorf("browse root %q: not an absolute path", p))
			continue
		}
		p = filepath.Clean(p)
		if seen[p] {
			continue
		}
		seen[p] = true
		r, err := os.OpenRoot(p)
		if err != nil {
			errs = append(errs, fmt.Errorf("open browse root: %w", err))
			continue
		}
		rs.roots = append(rs.roots, root{path: p, r: r})
	}
	if err := errors.Join(errs...); err != nil {
		rs.Close()
		return nil, err
	}
	sort.SliceStable(rs.roots, func(i, j int) bool { return len(rs.roots[i].path) > len(rs.roots[j].path) })
	return rs, nil
}

// Close closes every root.
func (rs *Roots) Close() error {
	var errs []error
	for _, r := range rs.roots {
		errs = append(errs, r.r.Close())
	}
	return errors.Join(errs...)
}

// Paths returns the root paths, sorted by name.
func (rs *Roots) Paths() []string {
	out := make([]string, 0, len(rs.roots))
	for _, r := range rs.roots {
		out = append(out, r.path)
	}
	sort.Strings(out)
	return out
}

// Len is the number of roots.
func (rs *Roots) Len() int { return len(rs.roots) }

// CheckPath reports whether p has the only accepted form: absolute, at most
// MaxPathLen bytes, no NUL, no empty, "." or ".." components, and at most
// one trailing slash. It returns p without its trailing slash.
// Percent-decoding is the caller's business and happens exactly once.
func CheckPath(p string) (string, error) {
	if len(p) == 0 || p[0] != '/' || len(p) > MaxPathLen || strings.IndexByte(p, 0) >= 0 {
		return "", ErrInvalidPath
	}
	if len(p) > 1 && p[len(p)-1] == '/' {
		p = p[:len(p)-1]
	}
	if p == "/" {
		return p, nil
	}
	for rest := p[1:]; ; {
		i := strings.IndexByte(rest, '/')
		c := rest
		if i >= 0 {
			c = rest[:i]
		}
		if c == "" || c == "." || c == ".." || len(c) > 255 {
			return "", ErrInvalidPath
		}
		if i < 0 {
			return p, nil
		}
		rest = rest[i+1:]
	}
}

// resolve finds the innermost root holding p (already checked) and the path
// relative to it ("." for the root itself).
func (rs *Roots) resolve(p string) (*root, string, error) {
	for i := range rs.roots {
		r := &rs.roots[i]
		switch {
		case p == r.path:
			return r, ".", nil
		case r.path == "/":
			return r, p[1:], nil
		case strings.HasPrefix(p, r.path) && p[len(r.path)] == '/':
			return r, p[len(r.path)+1:], nil
		}
	}
	return nil, "", ErrNotFound
}

// mapErr turns an error of os.Root into one of the package's errors.
// Anything that is not a plain permission problem becomes ErrNotFound:
// escapes, loops and missing components must all look the same.
func mapErr(err error) error {
	if errors.Is(err, fs.ErrPermission) {
		return ErrPermission
	}
	return ErrNotFound
}

// Dir is a directory opened inside a root. Close it after use.
type Dir struct {
	// Path is the host path the directory was opened by.
	Path string
	// Dev and Ino identify the directory that was actually opened.
	Dev, Ino uint64
	f        *os.File
}

// FD is the directory's file descriptor, valid until Close.
func (d *Dir) FD() int { return int(d.f.Fd()) }

// Close closes the directory.
func (d *Dir) Close() error { return d.f.Close() }

// OpenDir checks p, resolves it inside its root (following symlinks only
// while they stay inside that root) and opens it as a directory.
func (rs *Roots) OpenDir(p string) (*Dir, error) {
	p, err := CheckPath(p)
	if err != nil {
		return nil, err
	}
	r, rel, err := rs.resolve(p)
	if err != nil {
		return nil, err
	}
	f, err := r.r.OpenFile(rel, os.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NONBLOCK, 0)
	if err != nil {
		if errors.Is(err, syscall.ENOTDIR) {
			// The last component may exist as a non-directory; say so only
			// when it does, and only for something inside the root.
			if fi, serr := r.r.Stat(rel); serr == nil && !fi.IsDir() {
				return nil, ErrNotDir
			}
		}
		return nil, mapErr(err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		return nil, fmt.Errorf("stat directory: %w", err)
	}
	return &Dir{Path: p, Dev: st.Dev, Ino: st.Ino, f: f}, nil
}

// Stat describes p itself (a symlink is described, not followed). Symlinks
// in earlier components are followed while they stay inside the root.
func (rs *Roots) Stat(p string) (Entry, error) {
	p, err := CheckPath(p)
	if err != nil {
		return Entry{}, err
	}
	r, rel, err := rs.resolve(p)
	if err != nil {
		return Entry{}, err
	}
	fi, err := r.r.Lstat(rel)
	if err != nil {
		return Entry{}, mapErr(err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return Entry{}, ErrNotFound
	}
	e := Entry{Name: filepath.Base(p)}
	e.setStat(uint32(st.Mode), st.Size, st.Mtim.Sec, st.Mtim.Nsec)
	if e.Type == TypeSymlink {
		if t, err := r.r.Readlink(rel); err == nil {
			e.LinkTarget = t
		}
	}
	return e, nil
}

// TargetType is the type of what the symlink p leads to, following links
// only while they stay inside p's root. ok is false when it leads nowhere
// inside the root: dangling, a loop, or out of the root look alike on
// purpose, so nothing is told about what lies outside.
func (rs *Roots) TargetType(p string) (t Type, ok bool) {
	p, err := CheckPath(p)
	if err != nil {
		return 0, false
	}
	r, rel, err := rs.resolve(p)
	if err != nil {
		return 0, false
	}
	fi, err := r.r.Stat(rel)
	if err != nil {
		return 0, false
	}
	switch {
	case fi.Mode().IsRegular():
		return TypeFile, true
	case fi.IsDir():
		return TypeDir, true
	}
	return TypeOther, true
}
