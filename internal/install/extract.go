package install

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"unsafe"

	"github.com/avsidecar/avsidecar/internal/rpm"
	"golang.org/x/sys/unix"
)

// extract streams the payload once and writes every file, symlink and
// hard link as a temporary file beside its destination. The archive
// checks each entry against the header (digests included) before it
// comes here; an item marked skip is checked and not written.
func (w *writer) extract(ctx context.Context, pl *plan) error {
	ar, err := pl.pkg.Open(w.file)
	if err != nil {
		return err
	}
	defer ar.Close()
	var fl *flusher
	if !w.cfg.NoSync {
		if fl, err = w.startFlusher(); err != nil {
			return err
		}
		defer fl.stop()
	}
	buf := make([]byte, 1<<20)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		e, err := ar.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		it := pl.items[e.Index]
		switch {
		case it.skip || it.IsDir():
		case it.IsSymlink():
			err = w.writeSymlink(it)
		case e.Content:
			err = w.writeFile(ar, it, buf)
			if fl != nil {
				fl.wrote(it.Size)
			}
		}
		if err != nil {
			return err
		}
	}
	return w.linkSets(pl.items)
}

// flushEvery is how much an install writes before it has the file system
// write it back, on another goroutine, while it goes on: so that the
// syncfs before the receipt finds little left to write.
const flushEvery = 32 << 20

// flusher runs syncfs(2) on the root's file system in the background.
type flusher struct {
	dir     *os.File
	pending int64
	running chan struct{} // closed when the syncfs under way returns
}

func (j *job) startFlusher() (*flusher, error) {
	d, err := j.root.Open(".")
	if err != nil {
		return nil, fmt.Errorf("syncfs: %w", err)
	}
	return &flusher{dir: d}, nil
}

// wrote counts n bytes written, and starts a syncfs every flushEvery
// bytes, one at a time. Its error, if any, the final syncfs gets again.
func (fl *flusher) wrote(n int64) {
	fl.pending += n
	if fl.pending < flushEvery {
		return
	}
	if fl.running != nil {
		select {
		case <-fl.running:
		default:
			return // one at a time
		}
	}
	fl.pending = 0
	done := make(chan struct{})
	fl.running = done
	fd := int(fl.dir.Fd())
	go func() {
		_ = unix.Syncfs(fd)
		close(done)
	}()
}

// stop waits for the syncfs under way and lets the directory go.
func (fl *flusher) stop() {
	if fl.running != nil {
		<-fl.running
	}
	fl.dir.Close()
}

// writebackMin is the size from which a file's writeback starts as soon as
// it is written.
const writebackMin = 256 << 10

// writeFile copies one entry's content to the temporary file of it and
// sets owner, mode, capabilities and mtime. The content is checked as it
// is read: a digest mismatch fails the copy.
func (w *writer) writeFile(r io.Reader, it *item, buf []byte) (err error) {
	out, err := w.d.create(it.tmp, !it.inPlace)
	if err != nil {
		return pathError("create", it.dest, err)
	}
	defer func() {
		// A failure, or a panic, leaves nothing of it.
		if !it.done {
			_ = out.Close()
			_ = w.d.remove(it.tmp)
		}
	}()
	_, err = io.CopyBuffer(out, r, buf)
	step("write")
	if err == nil && it.Size >= writebackMin {
		// Start writing it to disk now, while the rest of the payload is
		// decoded, rather than all at once in the syncfs before the
		// receipt. (Small files are left to that syncfs, in one batch.)
		_ = unix.SyncFileRange(int(out.Fd()), 0, 0, unix.SYNC_FILE_RANGE_WRITE)
	}
	if err == nil {
		err = w.setMeta(out, it)
	}
	if err == nil {
		ns := it.MTime * 1e9
		if it.diskMTime != 0 {
			ns = it.diskMTime
		}
		err = futimens(int(out.Fd()), ns)
	}
	if cerr := out.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("write %s: %w", it.dest, cerr)
	}
	if err != nil {
		// The package's own faults, and its decoder's panics, are not
		// this file's write failing.
		if errors.Is(err, rpm.ErrUnusable) || errors.Is(err, rpm.ErrDecoderPanic) {
			return err
		}
		return fmt.Errorf("write %s: %w", it.dest, err)
	}
	it.done = true
	return nil
}

// futimens sets the mtime (and atime) of an open file, in Unix
// nanoseconds: utimensat(2) with no path, as glibc's futimens does (x/sys
// has no call for it), so that the file is not looked up again.
func futimens(fd int, ns int64) error {
	ts := [2]unix.Timespec{unix.NsecToTimespec(ns), unix.NsecToTimespec(ns)}
	_, _, e := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(&ts)), 0, 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// setMeta sets owner, mode and capabilities on an open file, in rpm's
// order: chown clears set-ID bits and capabilities.
func (w *writer) setMeta(f *os.File, it *item) error {
	uid, gid, perm := w.ids.meta(it)
	if w.ids.chown {
		if err := f.Chown(uid, gid); err != nil {
			return err
		}
	}
	if err := unix.Fchmod(int(f.Fd()), perm); err != nil {
		return err
	}
	if it.Caps == "" || !w.ids.chown {
		return nil
	}
	value, err := rpm.CapabilityXattr(it.Caps, w.ids.capBits)
	if err != nil {
		return err
	}
	if err := unix.Fsetxattr(int(f.Fd()), "security.capability", value, 0); err != nil {
		return fmt.Errorf("set capabilities %q: %w", it.Caps, err)
	}
	return nil
}

func (w *writer) writeSymlink(it *item) error {
	if err := w.d.symlink(it.LinkTo, it.tmp, !it.inPlace); err != nil {
		return pathError("create", it.dest, err)
	}
	if w.ids.chown {
		uid, gid, _ := w.ids.meta(it)
		if err := w.d.lchown(it.tmp, uid, gid); err != nil {
			return pathError("chown", it.dest, err)
		}
	}
	if err := w.d.setTimes(it.tmp, it.MTime*1e9); err != nil {
		return pathError("set times of", it.dest, err)
	}
	it.done = true
	return nil
}

// linkSets gives every name of each hard link set the content written
// for one of them, once the whole payload is through.
func (w *writer) linkSets(items []*item) error {
	for i, it := range items {
		if !isHardlinked(it) || it.Links[0] != i {
			continue // each set once, by its first name
		}
		var src *item
		for _, j := range it.Links {
			if items[j].done {
				src = items[j]
				break
			}
		}
		if src == nil {
			continue // the whole set is skipped (a restore of other files)
		}
		for _, j := range it.Links {
			dst := items[j]
			if dst.done || dst.skip {
				continue
			}
			if err := w.d.link(src.tmp, dst.tmp, !dst.inPlace); err != nil {
				return pathError("link", dst.dest, err)
			}
			dst.done = true
		}
	}
	return nil
}
