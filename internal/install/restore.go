package install

import (
	"context"
	"fmt"
	"path"

	"github.com/rs/zerolog"
)

// A restore puts back the files a matching receipt lists and the disk
// lacks: in Kubernetes the prefix and the state dir live on a volume, but
// what the package installs outside it (/etc/init.d/avagent) lives in the
// container's image layer and is gone in every new container. Rerunning
// the whole install for that would run %pre and %post again at each
// container start, which is what the old run.sh did wrong.
//
// A restore writes the missing files exactly as a full install does: the
// whole RPM is verified first, every payload entry is checked against the
// header (the ones not restored too), each restored file is written under
// its temporary name with the package's mode, owner and mtime and renamed
// into place once the whole payload has been checked. Files that are
// present are not touched, no scriptlet runs, and the receipt is not
// written: what it records is what is on disk again. No journal is
// needed either: a restore only creates paths that are absent, so a
// killed one leaves files still missing, or temporary files the next
// restore replaces.

// restorable returns the package items of the missing files, parents
// first, or nil when one of them cannot be restored from the payload and a
// full install must repair it instead:
//   - the install left the file other than the package ships it (another
//     size, or another mtime without the package's content, see Shipped): a
//     scriptlet edited it (the test kit's %post sets a relocated prefix in
//     /etc/init.d/avagent) and only running the scriptlet again makes it as
//     it was. A file a scriptlet rewrote with the same content (the same
//     %post at the package's own prefix) is restored, with the mtime the
//     install left, so that the receipt still describes it;
//   - the file is one name of a hard link set: restoring it alone would
//     break the set;
//   - the package does not have it as the receipt says (a receipt older
//     than a format change, say).
func restorable(pl *plan, missing []receiptFile, log zerolog.Logger) []*item {
	items := make([]*item, 0, len(missing))
	for _, f := range missing {
		it := pl.findItem(f.Path)
		why := ""
		switch {
		case it == nil || it.IsGhost() || typeName(it.Mode) != f.Type:
			why = "missing file not in the package as the receipt says"
		case it.IsReg() && (f.Size != it.Size || f.MTime != it.MTime*1e9 && !f.Shipped):
			why = "missing file was changed after extraction (by a scriptlet)"
		case it.IsSymlink() && f.MTime != it.MTime*1e9:
			why = "missing link was changed after extraction (by a scriptlet)"
		case it.IsReg() && isHardlinked(it):
			why = "missing file is a hard link"
		}
		if why != "" {
			log.Info().Str("path", f.Path).Str("reason", why).Msg("missing file not restorable, installing again")
			return nil
		}
		items = append(items, it)
	}
	// Only now: a full install after a refusal must write package mtimes.
	for i, it := range items {
		if f := missing[i]; it.IsReg() && f.MTime != it.MTime*1e9 {
			it.diskMTime = f.MTime // a scriptlet rewrote it with the same content
		}
	}
	return items
}

// restore writes items, the missing files restorable found, from the
// payload, and returns the receipt's result with the count restored. On
// an error, or a panic, nothing is left of what it began.
func (j *job) restore(ctx context.Context, pl *plan, items []*item, old *receipt) (Result, error) {
	w := j.newWriter(pl.items)
	defer w.close()
	restoring := make(map[*item]bool, len(items))
	for _, it := range items {
		restoring[it] = true
	}
	for _, it := range pl.items {
		it.skip = !restoring[it]
	}
	onFailure := func() {
		w.removeTemps(items)
		w.removeCreated()
	}
	defer func() { onFailure() }()
	for _, it := range items {
		if err := j.locate(it); err != nil {
			return Result{}, err
		}
		if parent := path.Dir(it.rel); parent != "." {
			if err := w.mkdirAll(parent); err != nil {
				return Result{}, fmt.Errorf("create %s: %w", path.Dir(it.dest), err)
			}
		}
		if it.IsDir() {
			if err := w.makeDir(it, nil); err != nil {
				return Result{}, err
			}
		} else if err := w.place(it); err != nil {
			return Result{}, err
		}
	}
	if err := w.extract(ctx, pl); err != nil {
		return Result{}, err
	}
	onFailure = func() { w.removeLeftovers(items) }
	if err := w.commit(items); err != nil {
		return Result{}, err
	}
	onFailure = func() {}
	if !j.cfg.NoSync {
		// A restored %config file that power loss left empty would pass
		// for an edited one; every other file would be seen as changed.
		if err := j.syncfs(); err != nil {
			return Result{}, err
		}
	}
	for _, it := range items {
		j.log.Info().Str("path", it.dest).Str("type", typeName(it.Mode)).Msg("restored missing file")
	}
	j.log.Info().Str("name", old.Name).Str("version", old.Version+"-"+old.Release).Str("sha256", old.SHA256).
		Int("restored", len(items)).Msg("receipt matches, missing files restored")
	res := old.result(false)
	res.Restored = len(items)
	return res, nil
}
