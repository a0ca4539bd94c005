package sshd

import (
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"io/fs"
	"path/filepath"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
)

// maxAuthorizedKeysSize bounds what is read of the authorized_keys file:
// 16 times what a Kubernetes Secret can hold, and over 100,000 ed25519
// keys. A larger file, like anything that is not a regular file, lets
// nobody in and says why, rather than fill PID 1's memory or block it.
const maxAuthorizedKeysSize = 16 << 20

// fileState tells the content of the authorized_keys file apart cheaply:
// fstat's identity, size and times first (equal: nothing to read), then
// the SHA-256 of the content (equal: nothing to parse). A Kubernetes
// Secret update renames a new file in, so its inode changes; an edit in
// place changes the times.
type fileState struct {
	dev, ino     uint64
	size         int64
	mtime, ctime syscall.Timespec
	sum          [sha256.Size]byte
}

// sameFile reports whether st is the same file, unchanged by its fstat.
func (st fileState) sameFile(o fileState) bool {
	return st.dev == o.dev && st.ino == o.ino && st.size == o.size && st.mtime == o.mtime && st.ctime == o.ctime
}

// stateOf is the fstat part of fi's fileState.
func stateOf(fi fs.FileInfo) fileState {
	st := fileState{size: fi.Size()}
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
		st.dev, st.ino, st.mtime, st.ctime = sys.Dev, sys.Ino, sys.Mtim, sys.Ctim
	}
	return st
}

// reloadKeys reads the authorized_keys file and swaps the key set in, when
// its content changed: an event or a resync that changed nothing costs
// one fstat, a new file of the same content one read to hash it. It logs
// only a real change, so the periodic resync stays quiet, and then gives
// the memory of the old set back to the system at once (a file of 50,000
// keys cut back to one must not leave its pages resident). A file that
// cannot be read lets nobody in.
func (s *Server) reloadKeys() {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	path := s.cfg.AuthorizedKeysFile
	old := s.keys.Load()
	ks, changed := readKeys(path, old)
	if ks != old {
		s.keys.Store(ks)
	}
	if !changed {
		return
	}
	if old != nil {
		debug.FreeOSMemory()
	}
	if ks.err != "" {
		s.log.Error().Str("error", ks.err).Str("path", path).Msg("authorized keys unreadable; nobody can log in")
		return
	}
	for _, p := range ks.problems {
		s.log.Warn().Str("path", path).Int("line", p.line).Str("fingerprint", p.fingerprint).Str("reason", p.reason).Msg("authorized key refused")
	}
	if more := ks.refused - len(ks.problems); more > 0 {
		s.log.Warn().Str("path", path).Int("more", more).Msg("more authorized keys refused; not logged one by one")
	}
	for _, p := range ks.warnings {
		s.log.Warn().Str("path", path).Int("line", p.line).Str("fingerprint", p.fingerprint).Str("reason", p.reason).Msg("authorized key option")
	}
	switch {
	case ks.missing:
		s.log.Warn().Str("path", path).Msg("authorized keys file missing; nobody can log in")
	case ks.empty():
		s.log.Warn().Str("path", path).Int("refused", ks.refused).Msg("authorized keys file has no usable key; nobody can log in")
	default:
		s.log.Info().Str("path", path).Int("keys", ks.count).Int("refused", ks.refused).Msg("authorized keys loaded")
	}
}

// readKeys reads the key set at path unless it is old's: it returns old
// itself when nothing changed, a copy of old with the new fileState when
// only the metadata did (changed false: nothing to log), and a new set
// otherwise.
func readKeys(path string, old *keySet) (ks *keySet, changed bool) {
	failed := func(ks *keySet) (*keySet, bool) {
		if old != nil && old.missing == ks.missing && old.err == ks.err {
			return old, false
		}
		return ks, true
	}
	f, fi, err := openRegular(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return failed(&keySet{missing: true})
	case err != nil:
		return failed(&keySet{err: err.Error()})
	}
	defer f.Close()
	if fi.Size() > maxAuthorizedKeysSize {
		return failed(&keySet{err: tooLarge(path, maxAuthorizedKeysSize).Error()})
	}
	st := stateOf(fi)
	readable := old != nil && !old.missing && old.err == ""
	if readable && old.src.sameFile(st) {
		return old, false
	}
	h := sha256.New()
	if n, err := io.Copy(h, io.LimitReader(f, maxAuthorizedKeysSize+1)); err != nil {
		return failed(&keySet{err: (&fs.PathError{Op: "read", Path: path, Err: err}).Error()})
	} else if n > maxAuthorizedKeysSize {
		return failed(&keySet{err: tooLarge(path, maxAuthorizedKeysSize).Error()})
	}
	h.Sum(st.sum[:0])
	if readable && old.src.sum == st.sum {
		same := *old
		same.src = st
		return &same, false
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return failed(&keySet{err: err.Error()})
	}
	// Parsed as hashed again: what the set holds is what its sum says.
	h.Reset()
	ks, err = parseAuthorizedKeys(io.TeeReader(io.LimitReader(f, maxAuthorizedKeysSize), h))
	if err != nil {
		return failed(&keySet{err: (&fs.PathError{Op: "read", Path: path, Err: err}).Error()})
	}
	h.Sum(st.sum[:0])
	ks.src = st
	return ks, true
}

// watchKeys reloads the keys when anything changes in the file's
// directory: watching the directory, not the file, is what sees the
// Kubernetes Secret update, which renames a new `..data` symlink over the
// old one and never writes the file itself. A periodic resync covers a
// directory that appears later or a missed event.
func (s *Server) watchKeys(ctx context.Context) {
	dir := filepath.Dir(s.cfg.AuthorizedKeysFile)
	w, err := fsnotify.NewWatcher()
	if err != nil {
		s.log.Warn().Err(err).Msg("cannot watch authorized keys; resync only")
	} else {
		defer w.Close()
	}
	watching, warned := false, false
	watch := func() {
		if w == nil || watching {
			return
		}
		if err := w.Add(dir); err != nil {
			if !warned {
				s.log.Warn().Err(err).Str("dir", dir).Dur("resync_ms", s.cfg.KeysResync).Msg("cannot watch authorized keys directory yet")
				warned = true
			}
			return
		}
		watching, warned = true, false
		s.reloadKeys() // catch changes made before the watch started
	}
	watch()
	var events <-chan fsnotify.Event
	var errs <-chan error
	if w != nil {
		events, errs = w.Events, w.Errors
	}
	tick := time.NewTicker(s.cfg.KeysResync)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			if ev.Name == dir && ev.Has(fsnotify.Remove|fsnotify.Rename) {
				watching = false
			}
			s.reloadKeys()
		case err, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			s.log.Warn().Err(err).Msg("authorized keys watch error")
		case <-tick.C:
			watch()
			s.reloadKeys()
		}
	}
}
