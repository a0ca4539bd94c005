package fswalk

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Visitor receives a walk's entries. Its methods run concurrently on the
// walk's workers; worker, in [0, WalkOptions.Workers), names the calling
// goroutine, so a visitor can keep per-worker buffers without locks.
type Visitor interface {
	// Visit is called for each entry below the walk's start. dir is the
	// full path of the entry's directory. e (including e.Name) is only
	// valid during the call. An error stops the walk.
	Visit(worker int, dir string, e *Entry) error
	// DirError reports a directory that could not be read; the walk goes on.
	DirError(worker int, dir string, err error)
}

// WalkOptions tunes a walk.
type WalkOptions struct {
	// MaxDepth limits the depth: 1 visits only the start's entries.
	// Zero or negative means no limit.
	MaxDepth int
	// Workers is the number of directories read at once (default 8): a cold
	// walk waits on the disk, so more than the CPU count helps.
	Workers int
}

// dirRef is an open directory shared by the jobs of its subdirectories;
// it is closed when the last of them has opened its own directory.
type dirRef struct {
	fd   int
	refs atomic.Int32
}

func (d *dirRef) release() {
	if d.refs.Add(-1) == 0 {
		unix.Close(d.fd)
	}
}

// job is a directory still to read: name inside parent, opened with
// openat(O_NOFOLLOW|O_DIRECTORY) so a walk never leaves the tree it started
// in, even if directories are swapped for symlinks meanwhile.
type job struct {
	parent *dirRef
	name   string
	path   string
	depth  int
}

type walker struct {
	v        Visitor
	maxDepth int

	mu      sync.Mutex
	cond    sync.Cond
	stack   []job // LIFO: depth first keeps the pending set small
	active  int
	stopped bool
	err     error
}

// Walk visits every entry below d, reading directories in parallel and
// without following symlinks. Memory depends on the workers and the
// pending directories, not on the size of the tree. The order is
// unspecified. Walk does not close d.
func Walk(ctx context.Context, d *Dir, opt WalkOptions, v Visitor) error {
	workers := opt.Workers
	if workers <= 0 {
		workers = 8
	}
	// The start gets its own descriptor: jobs close what they are given.
	fd, err := unix.Openat(d.FD(), ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return mapErr(err)
	}
	w := &walker{v: v, maxDepth: opt.MaxDepth}
	w.cond.L = &w.mu
	start := &dirRef{fd: fd}
	start.refs.Store(1)
	w.stack = append(w.stack, job{parent: start, name: ".", path: d.Path, depth: 0})

	stop := context.AfterFunc(ctx, func() { w.fail(ctx.Err()) })
	defer stop()
	var wg sync.WaitGroup
	for i := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.work(i)
		}()
	}
	wg.Wait()
	return w.err
}

func (w *walker) fail(err error) {
	w.mu.Lock()
	if w.err == nil {
		w.err = err
	}
	w.stopped = true
	w.mu.Unlock()
	w.cond.Broadcast()
}

// next pops a job, waiting while others may still produce some. It
// returns false when the walk is over.
func (w *walker) next() (job, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for len(w.stack) == 0 && w.active > 0 && !w.stopped {
		w.cond.Wait()
	}
	if w.stopped || len(w.stack) == 0 {
		// Drop what is left so every descriptor is released.
		for _, j := range w.stack {
			j.parent.release()
		}
		w.stack = nil
		return job{}, false
	}
	j := w.stack[len(w.stack)-1]
	w.stack = w.stack[:len(w.stack)-1]
	w.active++
	return j, true
}

func (w *walker) done(pushed []job) {
	w.mu.Lock()
	w.active--
	if w.stopped {
		for _, j := range pushed {
			j.parent.release()
		}
		pushed = nil
	}
	w.stack = append(w.stack, pushed...)
	over := w.active == 0 && len(w.stack) == 0
	w.mu.Unlock()
	if over || len(pushed) > 0 {
		w.cond.Broadcast()
	}
}

func (w *walker) work(worker int) {
	buf := make([]byte, direntBufSize)
	linkBuf := make([]byte, unix.PathMax)
	var (
		st     unix.Stat_t
		e      Entry
		pushed []job
	)
	for {
		j, ok := w.next()
		if !ok {
			return
		}
		pushed = pushed[:0]
		fd, err := unix.Openat(j.parent.fd, j.name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
		j.parent.release()
		if err != nil {
			if err != syscall.ENOENT {
				w.v.DirError(worker, j.path, mapErr(err))
			}
			w.done(nil)
			continue
		}
		self := &dirRef{fd: fd}
		self.refs.Store(1)
		descend := w.maxDepth <= 0 || j.depth+1 < w.maxDepth
		err = readDirents(fd, buf, func(name []byte) error {
			ok, err := fill(fd, name, &st, linkBuf, &e)
			if err != nil || !ok {
				return nil
			}
			e.Name = unsafe.String(unsafe.SliceData(name), len(name))
			if err := w.v.Visit(worker, j.path, &e); err != nil {
				return &visitError{err}
			}
			if e.Type == TypeDir && descend {
				self.refs.Add(1)
				pushed = append(pushed, job{parent: self, name: string(name), path: joinPath(j.path, name), depth: j.depth + 1})
			}
			return nil
		})
		self.release()
		var ve *visitError
		if errors.As(err, &ve) {
			for _, p := range pushed {
				p.parent.release()
			}
			w.done(nil)
			w.fail(ve.err)
			return
		}
		if err != nil {
			w.v.DirError(worker, j.path, mapErr(err))
		}
		w.done(pushed)
		runtime.KeepAlive(buf)
	}
}

type visitError struct{ err error }

func (e *visitError) Error() string { return e.err.Error() }

func joinPath(dir string, name []byte) string {
	if dir == "/" {
		return "/" + string(name)
	}
	b := make([]byte, 0, len(dir)+1+len(name))
	b = append(b, dir...)
	b = append(b, '/')
	b = append(b, name...)
	return unsafe.String(unsafe.SliceData(b), len(b))
}

// Usage is a du summary.
type Usage struct {
	// Files counts every entry that is not a directory.
	Files int64 `json:"files"`
	// Dirs counts the directories below the start (not the start itself).
	Dirs int64 `json:"dirs"`
	// Bytes sums st_size of the non-directories (apparent size; a hard
	// link is counted at each of its names).
	Bytes int64 `json:"bytes"`
}

type duVisitor struct {
	per []Usage
}

func (v *duVisitor) Visit(worker int, _ string, e *Entry) error {
	u := &v.per[worker]
	if e.Type == TypeDir {
		u.Dirs++
	} else {
		u.Files++
		u.Bytes += e.Size
	}
	return nil
}

func (v *duVisitor) DirError(int, string, error) {}

// Du sums the tree below d. Unreadable directories are skipped.
func Du(ctx context.Context, d *Dir, opt WalkOptions) (Usage, error) {
	if opt.Workers <= 0 {
		opt.Workers = 8
	}
	v := &duVisitor{per: make([]Usage, opt.Workers)}
	err := Walk(ctx, d, opt, v)
	var u Usage
	for _, p := range v.per {
		u.Files += p.Files
		u.Dirs += p.Dirs
		u.Bytes += p.Bytes
	}
	return u, err
}
