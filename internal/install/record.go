package install

import (
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// record makes what apply did durable and says so: one syncfs(2), so that
// the receipt never exists before the files it describes are on disk;
// then the receipt, with the size and mtime each owned path has now; then
// the journal goes. It returns the receipt written.
func (j *job) record(pl *plan, a *applied) (*receipt, error) {
	if !j.cfg.NoSync {
		if err := j.syncfs(); err != nil {
			return nil, err
		}
	}
	d := newDirs(j.root)
	defer d.close()
	r := a.next
	j.recordDisk(d, pl, a.postRan, r)
	r.InstalledAt = time.Now().UTC()
	step("record")
	if err := j.writeState(receiptName, r); err != nil {
		return nil, err
	}
	if err := j.removeState(journalName); err != nil {
		return nil, err
	}
	p := pl.pkg
	j.log.Info().Str("name", p.Name).Str("version", p.Version+"-"+p.Release).Int("files", len(r.Files)).
		Int64("bytes", pl.bytes).Str("prefix", j.cfg.Prefix).Msg("package installed")
	return r, nil
}

// syncfs flushes the root's file system once, so that the receipt never
// exists before the files it describes are durable.
func (j *job) syncfs() error {
	d, err := j.root.Open(".")
	if err != nil {
		return fmt.Errorf("syncfs: %w", err)
	}
	defer d.Close()
	if err := unix.Syncfs(int(d.Fd())); err != nil {
		return fmt.Errorf("syncfs: %w", err)
	}
	return nil
}

// recordDisk stores, for each owned path, the size and mtime it has now,
// after %post: what the next start's intact check compares. r.Files come
// with the package's size and mtime; a regular file whose mtime a
// scriptlet changed but not its size is read, to tell whether it still
// has the package's content (sed -i that replaced nothing, say) and can
// be restored from the payload when it goes missing.
//
// Without a %post, what the install wrote itself is as the package ships
// it, which the receipt already says: only the rest is looked at.
func (j *job) recordDisk(d *dirs, pl *plan, postRan bool, r *receipt) {
	for i := range r.Files {
		f := &r.Files[i]
		if !postRan {
			if it := pl.findItem(f.Path); it != nil && it.done && it.act == actWrite {
				continue
			}
		}
		rel, err := j.pathOf(f.Path)
		var st unix.Stat_t
		if err == nil {
			st, err = d.lstat(rel)
		}
		if err != nil {
			// A scriptlet removed it: nothing a restore could reproduce.
			f.Size, f.MTime = 0, 0
			continue
		}
		if f.Type == "file" && st.Mode&unix.S_IFMT == unix.S_IFREG && st.Size == f.Size && st.Mtim.Nano() != f.MTime {
			f.Shipped, _ = j.diskMatches(rel, f.Digest)
		}
		f.Size = st.Size
		f.MTime = st.Mtim.Nano()
	}
}
