package install

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"sort"
	"strings"
	"syscall"

	"github.com/avsidecar/avsidecar/internal/rpm"
	"golang.org/x/sys/unix"
)

// applied is what apply made: the receipt to record, and whether a %post
// ran (it may have changed any file).
type applied struct {
	next    *receipt
	postRan bool
}

// apply installs the planned package: %pre, journal, extraction to
// temporary files, rename into place once the verification (chk) is
// through, directory metadata, %post, removal of what the old package
// owned and this one does not. Until the first rename, a failure or a
// panic undoes everything: the previous installation is as it was, and so
// is its state. After it, the journal left in the state dir has the next
// start install again.
func (j *job) apply(ctx context.Context, pl *plan, st state, chk *check) (*applied, error) {
	w := j.newWriter(pl.items)
	defer w.close()
	owned := ownedBy(st.old, st.pending)
	arg := 1
	if st.old != nil {
		arg = 2 // rpm's $1: instances of the package after the transaction
	}
	if _, err := j.runScriptlet(ctx, pl, "%pre", pl.pkg.Pre, arg); err != nil {
		return nil, err
	}

	// The journal goes first: from here on, a kill leaves a state the next
	// start recognises as unfinished. (The package's SHA-256 it leaves out:
	// it may still be being computed.)
	next := newReceipt(pl, j.cfg.Prefix, j.fp)
	if st.pending != nil {
		j.cleanTemps(st.pending)
	}
	onFailure := func() {
		w.removeTemps(pl.items)
		if st.pending == nil {
			_ = j.removeState(journalName)
		}
		w.removeCreated()
	}
	defer func() { onFailure() }()
	if err := w.mkdirAll(j.statePath("")); err != nil {
		return nil, fmt.Errorf("create state dir %s: %w", j.cfg.StateDir, err)
	}
	if err := j.writeState(journalName, (&journal{receipt: next, previous: owned}).value()); err != nil {
		return nil, err
	}
	if err := w.prepare(pl, owned); err != nil {
		return nil, err
	}
	if err := w.extract(ctx, pl); err != nil {
		// A payload that does not decode is most plainly told by its
		// digest, when that is what failed.
		if _, verr := chk.wait(); verr != nil {
			return nil, verr
		}
		return nil, err
	}
	// Nothing is in place before the whole package has checked out.
	v, err := chk.wait()
	if err != nil {
		return nil, err
	}
	next.SHA256, next.Signature = v.SHA256, v.Signature
	onFailure = func() { w.removeLeftovers(pl.items) }
	if err := w.commit(pl.sorted); err != nil {
		return nil, err
	}
	onFailure = func() {}
	step("committed")
	postRan, err := j.runScriptlet(ctx, pl, "%post", pl.pkg.Post, arg)
	if err != nil {
		// rpm leaves the package installed when %post fails, with a warning.
		j.log.Warn().Err(err).Msg("scriptlet failed")
	}
	j.removeStale(pl, owned)
	return &applied{next: next, postRan: postRan}, nil
}

// newReceipt is the receipt-to-be of a planned package: every path it
// owns as the package ships it, until record looks at the disk. Its
// SHA-256 and signature come once the package is verified.
func newReceipt(pl *plan, prefix string, fp fingerprint) *receipt {
	p := pl.pkg
	r := &receipt{
		Format: receiptV, Name: p.Name, Version: p.Version, Release: p.Release, Arch: p.Arch,
		Prefix: prefix, RPM: fp, DigestAlgo: int(p.DigestAlgo),
	}
	for _, it := range pl.sorted {
		if !it.IsGhost() {
			r.Files = append(r.Files, receiptFile{Path: it.dest, Type: typeName(it.Mode), Mode: it.Mode & 0o7777, Digest: it.Digest, Link: it.LinkTo, Config: it.IsConfig(),
				Size: it.Size, MTime: it.MTime * 1e9}) // as shipped, until recordDisk
		}
	}
	return r
}

// writer makes the changes of apply and restore in the root: it keeps the
// root's directories open (dirs), gives files their owners (ids), and
// remembers the directories it made, so that a failure before the first
// rename can take them away again.
type writer struct {
	*job
	d   *dirs
	ids *idMap
	// created lists the directories made, parents first; madeHere has
	// them too, to look them up.
	created  []string
	madeHere map[string]bool
}

func (j *job) newWriter(items []*item) *writer {
	return &writer{job: j, d: newDirs(j.root), ids: j.loadIDs(items)}
}

func (w *writer) close() { w.d.close() }

// journal is the pending file: the receipt-to-be plus the files owned
// before, so that a run after a kill still knows everything it may have
// to remove.
type journal struct {
	receipt  *receipt
	previous map[string]receiptFile
}

// A path both own keeps every digest it may have on disk: killed installs
// of different versions can follow each other, and an earlier one may
// have renamed its version of a %config file into place; without its
// digest that file would look edited by the operator and be kept.
func (j *journal) value() *receipt {
	r := *j.receipt
	r.Files = append([]receiptFile(nil), r.Files...)
	seen := make(map[string]bool, len(r.Files))
	for i, f := range r.Files {
		seen[f.Path] = true
		if prev, ok := j.previous[f.Path]; ok {
			r.Files[i].Digest = mergeDigests(f.Digest, prev.Digest)
		}
	}
	for p, f := range j.previous {
		if !seen[p] {
			r.Files = append(r.Files, f)
		}
	}
	return &r
}

// mergeDigests joins comma-separated digest lists without repeats.
func mergeDigests(a, b string) string {
	var out []string
	for _, d := range strings.Split(a+","+b, ",") {
		if d != "" && !slices.Contains(out, d) {
			out = append(out, d)
		}
	}
	return strings.Join(out, ",")
}

// ownedBy merges what the receipt and an interrupted install's journal
// own: after a kill either may describe what is on disk.
func ownedBy(old, pending *receipt) map[string]receiptFile {
	owned := map[string]receiptFile{}
	for _, r := range []*receipt{old, pending} {
		if r == nil {
			continue
		}
		for _, f := range r.Files {
			if prev, ok := owned[f.Path]; ok {
				f.Digest = mergeDigests(prev.Digest, f.Digest) // any of them counts as unmodified
			}
			owned[f.Path] = f
		}
	}
	return owned
}

func typeName(mode uint32) string {
	switch mode & rpm.ModeTypeMask {
	case rpm.ModeDir:
		return "dir"
	case rpm.ModeSymlink:
		return "symlink"
	}
	return "file"
}

// cleanTemps removes the temporary files a killed install left behind.
func (j *job) cleanTemps(pending *receipt) {
	for _, f := range pending.Files {
		if f.Type == "dir" {
			continue
		}
		if rel, err := j.pathOf(f.Path); err == nil {
			for _, suffix := range tmpSuffixes {
				_ = j.root.Remove(rel + suffix)
			}
		}
	}
}

// removeLeftovers removes, after a failed commit, the temporary files not
// yet renamed into place; what was written in place stays, in place.
func (w *writer) removeLeftovers(items []*item) {
	for _, it := range items {
		if !it.IsDir() && it.tmp != "" && !it.inPlace {
			_ = w.d.remove(it.tmp)
		}
	}
}

// removeTemps removes, when an install is undone, the temporary files of
// items and what it wrote in place.
func (w *writer) removeTemps(items []*item) {
	for _, it := range items {
		// What is written in place was absent: only what this install
		// wrote there goes.
		if !it.IsDir() && it.tmp != "" && (!it.inPlace || it.done) {
			_ = w.d.remove(it.tmp)
		}
	}
}

// made records a directory this install made.
func (w *writer) made(rel string) {
	w.created = append(w.created, rel)
	if w.madeHere == nil {
		w.madeHere = map[string]bool{}
	}
	w.madeHere[rel] = true
}

// removeCreated removes the directories this install made, children
// first; only empty ones go.
func (w *writer) removeCreated() {
	for i := len(w.created) - 1; i >= 0; i-- {
		_ = w.root.Remove(w.created[i])
	}
}

// prepare creates the directories, removes old symlinks that the new
// package has no symlink for (so no write ever goes through a link the
// package once planted), and decides what to do with each %config file.
func (w *writer) prepare(pl *plan, owned map[string]receiptFile) error {
	if err := w.removeOldSymlinks(pl, owned); err != nil {
		return err
	}
	made := map[string]bool{}
	for _, it := range pl.sorted {
		if it.IsGhost() {
			continue
		}
		if err := w.locate(it); err != nil {
			return err
		}
		if parent := path.Dir(it.rel); parent != "." && !made[parent] {
			if err := w.mkdirAll(parent); err != nil {
				return fmt.Errorf("create %s: %w", path.Dir(it.dest), err)
			}
			made[parent] = true
		}
		switch {
		case it.IsDir():
			if err := w.makeDir(it, owned); err != nil {
				return err
			}
			made[it.rel] = true
		case it.IsReg() && it.IsConfig() && !isHardlinked(it):
			act, err := w.configAction(it, owned[it.dest])
			if err != nil {
				return err
			}
			// A kept file's entry is checked, not written: as with rpm,
			// nothing changes in its directory.
			it.act, it.skip = act, act == actKeep
		}
		if err := w.place(it); err != nil {
			return err
		}
	}
	return nil
}

// removeOldSymlinks removes the symlinks the old package owned where the
// new one has none, and forgets every path resolved so far: the old links
// may have led elsewhere.
func (w *writer) removeOldSymlinks(pl *plan, owned map[string]receiptFile) error {
	for p, o := range owned {
		if o.Type != "symlink" {
			continue
		}
		if it := pl.findItem(p); it != nil && it.IsSymlink() {
			continue
		}
		rel, err := w.pathOf(p)
		if err != nil {
			continue
		}
		if st, err := w.root.Lstat(rel); err == nil && st.Mode()&fs.ModeSymlink != 0 {
			if err := w.root.Remove(rel); err != nil {
				return fmt.Errorf("remove old symlink: %w", err)
			}
		}
	}
	w.resolved = nil
	w.d.close()
	return nil
}

// place decides where an item is written. With nothing at its
// destination there is nothing to protect: it is written in place, and a
// failure removes it again. Otherwise it is written beside it, under its
// temporary name, and renamed over it once the whole payload is checked
// (commit). A directory with something in it where the package has a file
// or a link is refused here, before anything changes: the rename would
// fail half-way through the install (an empty one is replaced).
func (w *writer) place(it *item) error {
	rel := it.rel
	switch {
	case it.IsDir() || it.act == actKeep:
		return nil
	case it.act == actRPMNew:
		rel += ".rpmnew"
	}
	if it.act == actWrite && w.madeHere[path.Dir(rel)] {
		// In a directory this install made, only it puts anything.
		it.tmp, it.inPlace = it.rel, true
		return nil
	}
	st, err := w.d.lstat(rel)
	switch {
	case errors.Is(err, unix.ENOENT) && it.act == actWrite:
		it.tmp, it.inPlace = it.rel, true
		return nil
	case err != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR:
		return nil
	}
	if empty, err := w.d.emptyDir(rel); err != nil || !empty {
		return fmt.Errorf("install %s: a directory that is not empty is in the way", "/"+rel)
	}
	return nil
}

// mkdirAll makes rel and its missing parents (mode 0755, as rpm makes the
// directories a package does not list), recording what it made.
func (w *writer) mkdirAll(rel string) error {
	if rel == "." || rel == "" {
		return nil
	}
	st, err := w.d.lstat(rel)
	switch {
	case err == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR:
		return nil
	case err == nil:
		return pathError("create", "/"+rel, unix.ENOTDIR)
	case !errors.Is(err, unix.ENOENT):
		return err
	}
	if err := w.mkdirAll(path.Dir(rel)); err != nil {
		return err
	}
	if err := w.d.mkdir(rel); err != nil && !errors.Is(err, unix.EEXIST) {
		return err
	}
	w.made(rel)
	return nil
}

// makeDir makes a package directory, or accepts an existing one, and
// gives it the package's mtime, as rpm does: whatever the install then
// writes into it gives it the time of the install, as with rpm.
func (w *writer) makeDir(it *item, owned map[string]receiptFile) error {
	if err := w.ensureDir(it, owned); err != nil {
		return err
	}
	// As with rpm, a directory's time is not worth failing for.
	_ = w.d.setTimes(it.rel, it.MTime*1e9)
	return nil
}

// ensureDir makes a package directory, or accepts an existing one. A
// directory symlink the package does not own (an operator's link to a
// volume, say) is kept, as rpm keeps it.
func (w *writer) ensureDir(it *item, owned map[string]receiptFile) error {
	st, err := w.d.lstat(it.rel)
	switch {
	case errors.Is(err, unix.ENOENT):
		if err := w.d.mkdir(it.rel); err != nil {
			return pathError("create", it.dest, err)
		}
		w.made(it.rel)
		return nil
	case err != nil:
		return pathError("stat", it.dest, err)
	case st.Mode&unix.S_IFMT == unix.S_IFDIR:
		return nil
	case st.Mode&unix.S_IFMT == unix.S_IFLNK:
		// The directory is where the link leads, in the root: its
		// metadata goes there, and so do the files below it.
		if target, err := w.dirOf(it.dest); err == nil {
			if t, err := w.root.Stat(target); err == nil && t.IsDir() {
				it.rel = target
				return nil
			}
		}
	}
	if _, ok := owned[it.dest]; !ok {
		return fmt.Errorf("create %s: a %s the package does not own is in the way", it.dest, fs.FileMode(st.Mode&unix.S_IFMT).Type())
	}
	if err := w.d.remove(it.rel); err != nil {
		return pathError("replace", it.dest, err)
	}
	if err := w.d.mkdir(it.rel); err != nil {
		return pathError("create", it.dest, err)
	}
	return nil
}

// configAction decides, as rpm does, what to do with a %config file that
// may have been edited: a file that is absent, or as the old package (or
// the new one) shipped it, is replaced; an edited one is kept, with the
// new version beside it as .rpmnew unless the package did not change it.
func (w *writer) configAction(it *item, old receiptFile) (action, error) {
	st, err := w.root.Lstat(it.rel)
	if errors.Is(err, fs.ErrNotExist) {
		return actWrite, nil
	}
	if err != nil {
		return actWrite, fmt.Errorf("stat %s: %w", it.dest, err)
	}
	if !st.Mode().IsRegular() {
		return actWrite, nil
	}
	unmodified, err := w.diskMatches(it.rel, mergeDigests(it.Digest, old.Digest))
	if err != nil {
		return actWrite, err
	}
	if unmodified {
		return actWrite, nil
	}
	if old.Digest != "" && slices.Contains(strings.Split(old.Digest, ","), it.Digest) {
		w.log.Info().Str("path", it.dest).Msg("config file modified, keeping it")
		return actKeep, nil
	}
	w.log.Warn().Str("path", it.dest).Str("new", it.dest+".rpmnew").Msg("config file modified, new version saved beside it")
	return actRPMNew, nil
}

// diskMatches reports whether the file at rel has one of the digests in
// the comma-separated list, each computed with the algorithm its length
// names (packages may change algorithms between versions).
func (j *job) diskMatches(rel, digests string) (bool, error) {
	got := map[rpm.Hash]string{}
	for _, want := range strings.Split(digests, ",") {
		algo := rpm.HashOfDigest(want)
		if algo == 0 {
			continue
		}
		d, ok := got[algo]
		if !ok {
			var err error
			if d, err = j.digestOf(rel, algo); err != nil {
				return false, err
			}
			got[algo] = d
		}
		if d == want {
			return true, nil
		}
	}
	return false, nil
}

func (j *job) digestOf(rel string, algo rpm.Hash) (string, error) {
	f, err := j.root.OpenFile(rel, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", rel, err)
	}
	defer f.Close()
	h := algo.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("read %s: %w", rel, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// commit renames the temporary files into place and sets the directories'
// owners and modes, deepest first.
func (w *writer) commit(sorted []*item) error {
	for _, it := range sorted {
		if it.IsDir() || it.IsGhost() {
			continue
		}
		switch {
		case it.act == actKeep || it.inPlace:
		case it.act == actRPMNew:
			if err := w.d.rename(it.tmp, it.rel+".rpmnew"); err != nil {
				return pathError("install", it.dest+".rpmnew", err)
			}
		default:
			if err := w.d.rename(it.tmp, it.rel); err != nil {
				// A directory where the new package has a file: only an
				// empty one is replaced.
				if st, serr := w.d.lstat(it.rel); serr == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR {
					if rerr := w.d.remove(it.rel); rerr == nil {
						err = w.d.rename(it.tmp, it.rel)
					}
				}
				if err != nil {
					return pathError("install", it.dest, err)
				}
			}
		}
	}
	// From here on the new files are in place: a failure no longer undoes
	// anything, and the journal makes the next start install again. So
	// one directory that fails does not keep the others from their
	// metadata.
	var errs []error
	for i := len(sorted) - 1; i >= 0; i-- {
		if it := sorted[i]; it.IsDir() && !it.IsGhost() {
			errs = append(errs, w.dirMeta(it))
		}
	}
	return errors.Join(errs...)
}

// dirMeta sets the owner and mode of a package directory (its mtime was
// set by makeDir), on the directory itself, opened through the root.
func (w *writer) dirMeta(it *item) error {
	fd, err := w.d.fd(it.rel)
	if err != nil {
		return pathError("chmod", it.dest, err)
	}
	uid, gid, perm := w.ids.meta(it)
	if w.ids.chown {
		if err := unix.Fchown(fd, uid, gid); err != nil {
			return pathError("chown", it.dest, err)
		}
	}
	if err := unix.Fchmod(fd, perm); err != nil {
		return pathError("chmod", it.dest, err)
	}
	return nil
}

// removeStale removes what the old package owned and the new one does
// not: files and links (an edited %config file is kept as .rpmsave, as
// rpm does), then directories that are empty. Anything whose type changed
// since is not the package's any more and is left alone.
func (j *job) removeStale(pl *plan, owned map[string]receiptFile) {
	var dirs []string
	for p, o := range owned {
		if pl.findItem(p) != nil {
			continue
		}
		rel, err := j.pathOf(p)
		if err != nil {
			continue
		}
		st, err := j.root.Lstat(rel)
		if err != nil {
			continue
		}
		switch {
		case o.Type == "dir" && st.IsDir():
			dirs = append(dirs, rel)
		case o.Type == "symlink" && st.Mode()&fs.ModeSymlink != 0,
			o.Type == "file" && st.Mode().IsRegular():
			j.removeOld(p, rel, o)
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(dirs)))
	for _, d := range dirs {
		_ = j.root.Remove(d) // only an empty directory goes
	}
}

// removeOld removes a file or link the old package owned at p (rel in
// the root); an edited %config file is kept as .rpmsave instead.
func (j *job) removeOld(p, rel string, o receiptFile) {
	if o.Type == "file" && o.Config {
		if match, err := j.diskMatches(rel, o.Digest); err == nil && !match {
			if err := j.root.Rename(rel, rel+".rpmsave"); err == nil {
				j.log.Warn().Str("path", p).Str("saved", p+".rpmsave").Msg("modified config file no longer in the package, saved")
			}
			return
		}
	}
	if err := j.root.Remove(rel); err != nil && !errors.Is(err, fs.ErrNotExist) {
		j.log.Warn().Err(err).Str("path", p).Msg("cannot remove old file")
	}
}
