package install

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"syscall"
	"time"

	"github.com/avsidecar/avsidecar/internal/rpm"
	"golang.org/x/sys/unix"
)

// extract streams the payload once and writes every file, symlink and
// hard link as a temporary file beside its destination. The archive
// checks each entry against the header (digests included) before it
// comes here; an item marked skip is checked and not written.
func (tx *transaction) extract(ctx context.Context) error {
	ar, err := tx.pkg.Open(tx.file)
	if err != nil {
		return err
	}
	defer ar.Close()
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
		it := tx.items[e.Index]
		switch {
		case it.skip || it.IsDir():
		case it.IsSymlink():
			err = tx.writeSymlink(it)
		case e.Content:
			err = tx.writeFile(ar, it, buf)
		}
		if err != nil {
			return err
		}
	}
	return tx.linkSets()
}

// writeFile copies one entry's content to the temporary file of it and
// sets mode, owner and mtime. The content is checked as it is read: a
// digest mismatch fails the copy.
func (tx *transaction) writeFile(r io.Reader, it *item, buf []byte) error {
	_ = tx.root.Remove(it.tmp)
	out, err := tx.root.OpenFile(it.tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return fmt.Errorf("create %s: %w", it.dest, err)
	}
	_, err = io.CopyBuffer(out, r, buf)
	if err == nil {
		err = tx.setMeta(out, it)
	}
	if cerr := out.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("write %s: %w", it.dest, cerr)
	}
	if err == nil {
		t := time.Unix(it.MTime, 0)
		if it.diskMTime != 0 {
			t = time.Unix(0, it.diskMTime)
		}
		err = tx.root.Chtimes(it.tmp, t, t)
	}
	if err != nil {
		_ = tx.root.Remove(it.tmp)
		if errors.Is(err, rpm.ErrUnusable) {
			return err
		}
		return fmt.Errorf("write %s: %w", it.dest, err)
	}
	it.done = true
	return nil
}

// setMeta sets owner, mode and capabilities on an open file, in rpm's
// order: chown clears set-ID bits and capabilities.
func (tx *transaction) setMeta(f *os.File, it *item) error {
	uid, gid, perm := tx.meta(it)
	if tx.chown {
		if err := f.Chown(uid, gid); err != nil {
			return err
		}
	}
	if err := unix.Fchmod(int(f.Fd()), perm); err != nil {
		return err
	}
	if it.Caps == "" || !tx.chown {
		return nil
	}
	value, err := rpm.CapabilityXattr(it.Caps, tx.capBits)
	if err != nil {
		return err
	}
	if err := unix.Fsetxattr(int(f.Fd()), "security.capability", value, 0); err != nil {
		return fmt.Errorf("set capabilities %q: %w", it.Caps, err)
	}
	return nil
}

func (tx *transaction) writeSymlink(it *item) error {
	_ = tx.root.Remove(it.tmp)
	if err := tx.root.Symlink(it.LinkTo, it.tmp); err != nil {
		return fmt.Errorf("create %s: %w", it.dest, err)
	}
	if tx.chown {
		uid, gid, _ := tx.meta(it)
		if err := tx.root.Lchown(it.tmp, uid, gid); err != nil {
			return fmt.Errorf("chown %s: %w", it.dest, err)
		}
	}
	if err := tx.lutimes(it.tmp, it.MTime); err != nil {
		return fmt.Errorf("set times of %s: %w", it.dest, err)
	}
	it.done = true
	return nil
}

// lutimes sets the times of a symlink itself, which os.Root cannot: the
// parent is opened through the root and the link changed relative to it.
func (tx *transaction) lutimes(rel string, mtime int64) error {
	dir, err := tx.root.Open(path.Dir(rel))
	if err != nil {
		return err
	}
	defer dir.Close()
	ts := []unix.Timespec{{Sec: mtime}, {Sec: mtime}}
	return unix.UtimesNanoAt(int(dir.Fd()), path.Base(rel), ts, unix.AT_SYMLINK_NOFOLLOW)
}

// linkSets gives every name of each hard link set the content written
// for one of them, once the whole payload is through.
func (tx *transaction) linkSets() error {
	for i, it := range tx.items {
		if !isHardlinked(it) || it.Links[0] != i {
			continue // each set once, by its first name
		}
		var src *item
		for _, j := range it.Links {
			if tx.items[j].done {
				src = tx.items[j]
				break
			}
		}
		if src == nil {
			continue // the whole set is skipped (a restore of other files)
		}
		for _, j := range it.Links {
			dst := tx.items[j]
			if dst.done || dst.skip {
				continue
			}
			_ = tx.root.Remove(dst.tmp)
			if err := tx.root.Link(src.tmp, dst.tmp); err != nil {
				return fmt.Errorf("link %s: %w", dst.dest, err)
			}
			dst.done = true
		}
	}
	return nil
}
