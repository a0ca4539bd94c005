// Package logfollow follows avagent's own log file (var/avagent.log) and
// re-emits every line on the sidecar's logger, so that `kubectl logs -c
// avamar` tells the whole story.
//
// Each line becomes one log event with the constant message "avagent" and
// the line's text in the field "line"; the caller sets component=avagent.log
// on the logger it passes in. The level is taken from avagent's own
// severity word ("... avagent Error <1234>: ..." is logged at error level,
// "Warning" at warn, anything else at info).
//
// The follower watches the file's directory with fsnotify, so the file and
// even the directory may appear later, and re-checks every PollInterval as a
// safety net for file systems that do not deliver events. It survives
// rotation by rename or removal: the old file is kept open and read for as
// long as no new file has the name (a writer that has not reopened still
// appends to it), then read to its end, then the new file from its start.
// It survives truncation in place (copytruncate: reading starts again at
// offset 0). It only opens the file read-only, so the writer is never
// blocked. Bytes a writer appends to the old file after the new one has been
// taken up are not read (as with tail -F).
//
// Memory is bounded: a line longer than MaxLineBytes (64 KiB by default) is
// emitted in pieces of at most MaxLineBytes, each with a "part" field
// (1, 2, ...); such lines are counted in Status().SplitLines.
//
// Known limit, shared with every tail: a copytruncate that is followed by
// more new bytes than had been read before it, all before the follower looks
// again, cannot be told from plain growth; the new bytes up to the old offset
// are then skipped.
package logfollow

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/rs/zerolog"
)

// DefaultMaxLineBytes is the longest line emitted in one piece when
// Config.MaxLineBytes is zero.
const DefaultMaxLineBytes = 64 << 10

// DefaultPollInterval is Config.PollInterval when it is zero.
const DefaultPollInterval = time.Second

// readChunk is the size of one read from the file.
const readChunk = 64 << 10

// stepBudget is how many bytes one step reads before the loop looks at its
// context and events again, so that a long backlog cannot delay shutdown.
const stepBudget = 1 << 20

// finalBudget bounds the last read made after cancellation, which picks up
// avagent's final lines without chasing a writer that does not stop.
const finalBudget = 16 << 20

// Config says which file to follow and how.
type Config struct {
	// Path is the file to follow, normally
	// $AVSIDECAR_ROOT$AVAMAR_PREFIX/var/avagent.log. Neither the file nor
	// its directory need exist yet. Required.
	Path string
	// FromStart makes the follower read a file that already exists when Run
	// starts from its first byte. By default (false) it starts at the end,
	// because var/ lives on the persistent volume and a restarted container
	// would otherwise replay the whole history of the agent. A file that
	// appears later (first creation, rotation) is always read from its start.
	FromStart bool
	// MaxLineBytes is the longest line emitted in one event; longer lines are
	// emitted in pieces of this size. Zero means DefaultMaxLineBytes.
	MaxLineBytes int
	// PollInterval is how often the file is checked even without an fsnotify
	// event, and how often a missing directory is looked for. Zero means
	// DefaultPollInterval.
	PollInterval time.Duration
}

// Status is a snapshot of what the follower has done since it started.
type Status struct {
	// Path is the followed file.
	Path string `json:"path"`
	// Open is true while a file is open and being read.
	Open bool `json:"open"`
	// Offset is how far into the open file the follower has read.
	Offset int64 `json:"offset"`
	// Lines is the number of lines emitted (a split line counts once).
	Lines uint64 `json:"lines"`
	// Bytes is the number of bytes read from the file(s).
	Bytes uint64 `json:"bytes"`
	// Rotations counts the times a new file took the path (rename or
	// removal, then creation).
	Rotations uint64 `json:"rotations"`
	// Truncations counts the times the file shrank under the follower.
	Truncations uint64 `json:"truncations"`
	// SplitLines counts lines longer than MaxLineBytes, emitted in pieces.
	SplitLines uint64 `json:"split_lines"`
}

// Follower follows one log file. Create it with New and start it with Run.
type Follower struct {
	cfg Config
	log zerolog.Logger
	dir string

	// Owned by the Run goroutine.
	f          *os.File
	off        int64
	pend       []byte
	part       int
	buf        []byte
	startAtEnd bool

	mu sync.Mutex
	st Status
}

// New checks cfg and returns a Follower that emits on log.
func New(cfg Config, log zerolog.Logger) (*Follower, error) {
	if cfg.Path == "" {
		return nil, errors.New("logfollow: path is required")
	}
	if cfg.MaxLineBytes < 0 {
		return nil, fmt.Errorf("logfollow: max line bytes %d is negative", cfg.MaxLineBytes)
	}
	if cfg.PollInterval < 0 {
		return nil, fmt.Errorf("logfollow: poll interval %s is negative", cfg.PollInterval)
	}
	if cfg.MaxLineBytes == 0 {
		cfg.MaxLineBytes = DefaultMaxLineBytes
	}
	if cfg.PollInterval == 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	cfg.Path = filepath.Clean(cfg.Path)
	return &Follower{
		cfg:        cfg,
		log:        log,
		dir:        filepath.Dir(cfg.Path),
		buf:        make([]byte, readChunk),
		startAtEnd: !cfg.FromStart,
		st:         Status{Path: cfg.Path},
	}, nil
}

// Status returns a snapshot of the follower's counters.
func (t *Follower) Status() Status {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.st
}

// Run follows the file until ctx is cancelled, then reads what is left (up
// to 16 MiB), emits a final partial line, and returns nil. Problems with the
// file or with fsnotify are logged and retried, never returned: the agent's
// log is worth having but never worth stopping the sidecar for.
func (t *Follower) Run(ctx context.Context) error {
	// Without inotify (the per-user instance limit is easily reached on a
	// busy node) the follower still works by polling.
	var events <-chan fsnotify.Event
	var errs <-chan error
	w, err := fsnotify.NewWatcher()
	if err != nil {
		t.log.Warn().Err(err).Msg("fsnotify unavailable, polling only")
	} else {
		defer w.Close()
		events, errs = w.Events, w.Errors
	}
	watching := false
	watch := func() {
		if w == nil || watching {
			return
		}
		if err := w.Add(t.dir); err == nil {
			watching = true
		} else if !errors.Is(err, fs.ErrNotExist) {
			t.log.Warn().Err(err).Str("dir", t.dir).Msg("cannot watch log directory, polling")
		}
	}

	tick := time.NewTicker(t.cfg.PollInterval)
	defer tick.Stop()

	watch()
	more := t.step(stepBudget)
	t.startAtEnd = false
	t.log.Debug().Str("path", t.cfg.Path).Bool("watching", watching).Msg("log follower started")
	for {
		wake := more
		if more {
			// A backlog: keep reading, but stay responsive.
			select {
			case <-ctx.Done():
				t.stop()
				return nil
			case ev := <-events:
				watching = t.keepWatch(ev, watching)
			case err := <-errs:
				t.log.Debug().Err(err).Msg("fsnotify error, re-checking")
			default:
			}
		} else {
			select {
			case <-ctx.Done():
				t.stop()
				return nil
			case ev := <-events:
				// var/ also holds avagent's busy cache files: only events
				// on the log's own name are worth a look.
				wake = ev.Name == t.cfg.Path
				watching = t.keepWatch(ev, watching)
			case err := <-errs:
				// Overflow and the like: events may be lost, so look.
				t.log.Debug().Err(err).Msg("fsnotify error, re-checking")
				wake = true
			case <-tick.C:
				watch()
				wake = true
			}
		}
		if wake {
			more = t.step(stepBudget)
		}
	}
}

// keepWatch reports whether the directory watch is still in place after ev.
func (t *Follower) keepWatch(ev fsnotify.Event, watching bool) bool {
	if ev.Name == t.dir && ev.Has(fsnotify.Remove|fsnotify.Rename) {
		return false
	}
	return watching
}

// stop makes the last read after cancellation and closes the file.
func (t *Follower) stop() {
	t.step(finalBudget)
	if t.f == nil {
		return
	}
	t.flushPartial()
	t.f.Close()
	t.f = nil
	t.mu.Lock()
	t.st.Open = false
	t.st.Offset = 0
	t.mu.Unlock()
}

// step reads at most budget bytes and handles rotation and truncation once
// the end of the file is reached. It reports whether there may be more to
// read right away.
func (t *Follower) step(budget int64) bool {
	if t.f == nil && !t.open(t.startAtEnd) {
		return false
	}
	if !t.drain(budget) {
		return true
	}
	cur, err := t.f.Stat()
	if err != nil {
		t.log.Warn().Err(err).Msg("cannot stat open log file")
		return false
	}
	fi, err := os.Stat(t.cfg.Path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		// Renamed or removed, and no new file yet: a writer that has not
		// reopened still appends to the file we hold, so keep reading it.
		return false
	case err != nil:
		t.log.Warn().Err(err).Msg("cannot stat log file")
		return false
	case !os.SameFile(fi, cur):
		// A new file took the name: finish the old one, then move on.
		t.drain(-1)
		t.flushPartial()
		t.f.Close()
		t.f = nil
		t.mu.Lock()
		t.st.Rotations++
		t.st.Open = false
		t.st.Offset = 0
		t.mu.Unlock()
		t.log.Info().Str("path", t.cfg.Path).Msg("log file rotated")
		return true
	case cur.Size() < t.off:
		t.flushPartial()
		t.off = 0
		t.mu.Lock()
		t.st.Truncations++
		t.st.Offset = 0
		t.mu.Unlock()
		t.log.Info().Str("path", t.cfg.Path).Msg("log file truncated")
		return true
	}
	return false
}

// open opens the path, at its end or at its start. It reports whether a file
// is now open.
func (t *Follower) open(atEnd bool) bool {
	f, err := os.Open(t.cfg.Path)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			t.log.Warn().Err(err).Msg("cannot open log file")
		}
		return false
	}
	var off int64
	if atEnd {
		fi, err := f.Stat()
		if err != nil {
			t.log.Warn().Err(err).Msg("cannot stat log file")
			f.Close()
			return false
		}
		off = fi.Size()
	}
	t.f, t.off = f, off
	t.mu.Lock()
	t.st.Open = true
	t.st.Offset = off
	t.mu.Unlock()
	t.log.Debug().Str("path", t.cfg.Path).Int64("offset", off).Msg("following log file")
	return true
}

// drain reads the open file from the current offset, at most budget bytes
// (budget < 0: no limit). It reports whether it reached the end.
func (t *Follower) drain(budget int64) bool {
	var read int64
	for budget < 0 || read < budget {
		n, err := t.f.ReadAt(t.buf, t.off)
		if n > 0 {
			t.consume(t.buf[:n])
			t.off += int64(n)
			read += int64(n)
			t.mu.Lock()
			t.st.Bytes += uint64(n)
			t.st.Offset = t.off
			t.mu.Unlock()
		}
		if err == io.EOF || (err == nil && n == 0) {
			return true
		}
		if err != nil {
			t.log.Warn().Err(err).Msg("cannot read log file")
			return true
		}
	}
	return false
}

// consume splits data into lines, carrying a partial line over to the next
// call, and cuts lines at MaxLineBytes.
func (t *Follower) consume(data []byte) {
	max := t.cfg.MaxLineBytes
	for len(data) > 0 {
		if len(t.pend) == max && data[0] != '\n' {
			// The line goes on past the limit: emit what we have.
			t.part++
			if t.part == 1 {
				t.mu.Lock()
				t.st.SplitLines++
				t.mu.Unlock()
			}
			t.emit(t.pend, t.part)
			t.pend = t.pend[:0]
		}
		nl := bytes.IndexByte(data, '\n')
		end := len(data)
		if nl >= 0 {
			end = nl
		}
		take := min(end, max-len(t.pend))
		t.pend = append(t.pend, data[:take]...)
		data = data[take:]
		if nl >= 0 && take == end {
			data = data[1:]
			t.endLine()
		}
	}
}

// endLine emits the pending bytes as the end of a line.
func (t *Follower) endLine() {
	part := 0
	if t.part > 0 {
		part = t.part + 1
	}
	t.emit(t.pend, part)
	t.pend = t.pend[:0]
	t.part = 0
	t.mu.Lock()
	t.st.Lines++
	t.mu.Unlock()
}

// flushPartial emits an unterminated last line, if any.
func (t *Follower) flushPartial() {
	if len(t.pend) > 0 || t.part > 0 {
		t.endLine()
	}
}

// emit writes one line (or piece of a line: part > 0) on the logger, its
// text as the event's message: log stores (Loki, Elasticsearch) show the
// message column, and avagent's line is the message.
func (t *Follower) emit(line []byte, part int) {
	line = bytes.TrimSuffix(line, []byte{'\r'})
	ev := t.log.WithLevel(levelOf(line))
	if ev == nil {
		return
	}
	if part > 0 {
		ev = ev.Int("part", part)
	}
	// Bytes, not Msg(string(line)): no copy of every line.
	ev.Bytes(zerolog.MessageFieldName, line).Send()
}

// levelOf maps avagent's severity word ("2026-01-02 10:11:12 avagent Error
// <7531>: ...") to a zerolog level.
func levelOf(line []byte) zerolog.Level {
	head := line[:min(len(line), 64)]
	switch {
	case bytes.Contains(head, []byte(" Error <")), bytes.Contains(head, []byte(" ERROR <")),
		bytes.Contains(head, []byte(" FATAL <")), bytes.Contains(head, []byte(" Fatal <")):
		return zerolog.ErrorLevel
	case bytes.Contains(head, []byte(" Warning <")), bytes.Contains(head, []byte(" WARNING <")):
		return zerolog.WarnLevel
	}
	return zerolog.InfoLevel
}
