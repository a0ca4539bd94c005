package sshd

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
)

// maxAuthorizedKeysSize bounds what is read of the authorized_keys file:
// 16 times what a Kubernetes Secret can hold, and over 100,000 ed25519
// keys. A larger file, like anything that is not a regular file, lets
// nobody in and says why, rather than fill PID 1's memory or block it.
const maxAuthorizedKeysSize = 16 << 20

// reloadKeys reads the authorized_keys file and swaps the key set in. It
// logs only when something changed, so the periodic resync stays quiet.
// A file that cannot be read lets nobody in.
func (s *Server) reloadKeys() {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	path := s.cfg.AuthorizedKeysFile
	data, err := readRegular(path, maxAuthorizedKeysSize)
	var ks *keySet
	switch {
	case errors.Is(err, fs.ErrNotExist):
		ks = &keySet{byKey: map[string][]*authorizedKey{}, missing: true}
	case err != nil:
		ks = &keySet{byKey: map[string][]*authorizedKey{}, err: err.Error()}
	default:
		ks = parseAuthorizedKeys(data)
	}
	old := s.keys.Load()
	if old != nil && old.missing == ks.missing && old.err == ks.err && bytes.Equal(old.raw, ks.raw) {
		return
	}
	s.keys.Store(ks)
	if ks.err != "" {
		s.log.Error().Err(err).Str("path", path).Msg("authorized keys unreadable; nobody can log in")
		return
	}
	for _, p := range ks.refused {
		s.log.Warn().Str("path", path).Int("line", p.line).Str("fingerprint", p.fingerprint).Str("reason", p.reason).Msg("authorized key refused")
	}
	for _, p := range ks.warnings {
		s.log.Warn().Str("path", path).Int("line", p.line).Str("fingerprint", p.fingerprint).Str("reason", p.reason).Msg("authorized key option")
	}
	switch {
	case ks.missing:
		s.log.Warn().Str("path", path).Msg("authorized keys file missing; nobody can log in")
	case ks.empty():
		s.log.Warn().Str("path", path).Int("refused", len(ks.refused)).Msg("authorized keys file has no usable key; nobody can log in")
	default:
		s.log.Info().Str("path", path).Int("keys", ks.count).Int("refused", len(ks.refused)).Msg("authorized keys loaded")
	}
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
