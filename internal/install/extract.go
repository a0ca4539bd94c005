package install

import (
	"bufio"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
)

// installer carries one install's configuration and open root.
type installer struct {
	cfg  Config
	log  zerolog.Logger
	root *os.Root
	ids  *idMap // nil when the process may not change owners
	// created lists the directories this install made, parents first, so
	// that a failure before the first rename can take them away again.
	created []string
}

// apply installs the checked package: %pre, journal, extraction to
// temporary files, rename into place, directory metadata, %post, removal
// of what the old package owned and this one does not, receipt.
func (in *installer) apply(ctx context.Context, f *os.File, p *pkg, pl *plan, old, pending *receipt, v verification, fp fingerprint) (*receipt, error) {
	if os.Geteuid() == 0 {
		in.ids = loadIDs(in.root, in.log)
	}
	owned := ownedBy(old, pending)
	arg := 1
	if old != nil {
		arg = 2 // rpm's $1: instances of the package after the transaction
	}

	if err := in.runScriptlet(ctx, "%pre", p, pl, p.pre, arg); err != nil {
		return nil, err
	}

	// The journal goes first: from here on, a kill leaves a state the next
	// start recognises as unfinished.
	next := &receipt{
		Format: receiptV, Name: p.name, Version: p.version, Release: p.release, Arch: p.arch,
		SHA256: v.sha256, Prefix: in.cfg.Prefix, Signature: v.signature, RPM: fp, DigestAlgo: p.digestAlgo,
	}
	for _, it := range pl.sorted {
		if !it.isGhost() {
			next.Files = append(next.Files, receiptFile{Path: it.dest, Type: typeName(it.mode), Mode: it.mode & 0o7777, Digest: it.digest, Link: it.linkTo, Config: it.isConfig(),
				Size: it.size, MTime: it.mtime * 1e9}) // as shipped, until recordDisk
		}
	}
	if pending != nil {
		in.cleanTemps(pending)
	}
	// Until the first rename, a failure undoes everything: the previous
	// installation is as it was, and so is its state.
	undo := func() {
		in.removeTemps(pl)
		if pending == nil {
			_ = in.removeState(journalName)
		}
		for i := len(in.created) - 1; i >= 0; i-- {
			_ = in.root.Remove(in.created[i])
		}
	}
	if err := in.mkdirAll(in.statePath("")); err != nil {
		undo()
		return nil, fmt.Errorf("create state dir: %w", err)
	}
	if err := in.writeState(journalName, (&journal{receipt: next, previous: owned}).value()); err != nil {
		undo()
		return nil, err
	}

	if err := in.prepare(pl, owned); err != nil {
		undo()
		return nil, err
	}
	if err := in.extract(ctx, f, p, pl); err != nil {
		undo()
		return nil, err
	}
	if err := in.commit(pl); err != nil {
		in.removeTemps(pl)
		return nil, err
	}
	if err := in.runScriptlet(ctx, "%post", p, pl, p.post, arg); err != nil {
		// rpm leaves the package installed when %post fails, with a warning.
		in.log.Warn().Err(err).Msg("scriptlet failed")
	}
	in.removeStale(pl, owned)

	if !in.cfg.NoSync {
		if err := in.syncfs(); err != nil {
			return nil, err
		}
	}
	in.recordDisk(next)
	next.InstalledAt = time.Now().UTC()
	if err := in.writeState(receiptName, next); err != nil {
		return nil, err
	}
	if err := in.removeState(journalName); err != nil {
		return nil, err
	}
	in.log.Info().Str("name", p.name).Str("version", p.version+"-"+p.release).Int("files", len(next.Files)).
		Int64("bytes", pl.bytes).Str("prefix", in.cfg.Prefix).Msg("package installed")
	return next, nil
}

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
		if d != "" && !contains(out, d) {
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
	switch mode & modeTypeMask {
	case modeDir:
		return "dir"
	case modeSymlink:
		return "symlink"
	}
	return "file"
}

// cleanTemps removes the temporary files a killed install left behind.
func (in *installer) cleanTemps(pending *receipt) {
	for _, f := range pending.Files {
		if f.Type != "dir" {
			_ = in.root.Remove(f.Path[1:] + tmpSuffix)
		}
	}
}

func (in *installer) removeTemps(pl *plan) {
	for _, it := range pl.items {
		if !it.isDir() {
			_ = in.root.Remove(it.tmp)
		}
	}
}

// prepare creates the directories, removes old symlinks that the new
// package has no symlink for (so no write ever goes through a link the
// package once planted), and decides what to do with each %config file.
func (in *installer) prepare(pl *plan, owned map[string]receiptFile) error {
	for p, o := range owned {
		if o.Type != "symlink" {
			continue
		}
		if it := findItem(pl, p); it != nil && it.isSymlink() {
			continue
		}
		if st, err := in.root.Lstat(p[1:]); err == nil && st.Mode()&fs.ModeSymlink != 0 {
			if err := in.root.Remove(p[1:]); err != nil {
				return fmt.Errorf("remove old symlink: %w", err)
			}
		}
	}
	made := map[string]bool{}
	for _, it := range pl.sorted {
		if it.isGhost() {
			continue
		}
		if parent := path.Dir(it.rel); parent != "." && !made[parent] {
			if err := in.mkdirAll(parent); err != nil {
				return fmt.Errorf("create %s: %w", path.Dir(it.dest), err)
			}
			made[parent] = true
		}
		switch {
		case it.isDir():
			if err := in.makeDir(it, owned); err != nil {
				return err
			}
			made[it.rel] = true
		case it.isReg() && it.isConfig() && !in.isHardlinked(pl, it):
			act, err := in.configAction(it, owned[it.dest])
			if err != nil {
				return err
			}
			it.act = act
		}
	}
	return nil
}

func findItem(pl *plan, dest string) *item {
	i := sort.Search(len(pl.sorted), func(i int) bool { return pl.sorted[i].dest >= dest })
	if i < len(pl.sorted) && pl.sorted[i].dest == dest {
		return pl.sorted[i]
	}
	return nil
}

func (in *installer) isHardlinked(pl *plan, it *item) bool {
	for _, o := range pl.items {
		if o != it && o.hlKey == it.hlKey && o.isReg() {
			return true
		}
	}
	return false
}

// mkdirAll makes rel and its missing parents (mode 0755, as rpm makes the
// directories a package does not list), recording what it made.
func (in *installer) mkdirAll(rel string) error {
	for i := 0; i <= len(rel); i++ {
		if i < len(rel) && rel[i] != '/' {
			continue
		}
		d := rel[:i]
		if _, err := in.root.Stat(d); err == nil {
			continue
		}
		if err := in.root.Mkdir(d, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
		in.created = append(in.created, d)
	}
	return nil
}

// makeDir makes a package directory, or accepts an existing one. A
// directory symlink the package does not own (an operator's link to a
// volume, say) is kept, as rpm keeps it.
func (in *installer) makeDir(it *item, owned map[string]receiptFile) error {
	st, err := in.root.Lstat(it.rel)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := in.root.Mkdir(it.rel, 0o755); err != nil {
			return fmt.Errorf("create %s: %w", it.dest, err)
		}
		in.created = append(in.created, it.rel)
		return nil
	case err != nil:
		return fmt.Errorf("stat %s: %w", it.dest, err)
	case st.IsDir():
		return nil
	case st.Mode()&fs.ModeSymlink != 0:
		if t, err := in.root.Stat(it.rel); err == nil && t.IsDir() {
			return nil
		}
	}
	if _, ok := owned[it.dest]; !ok {
		return fmt.Errorf("create %s: a %s the package does not own is in the way", it.dest, st.Mode().Type())
	}
	if err := in.root.Remove(it.rel); err != nil {
		return fmt.Errorf("replace %s: %w", it.dest, err)
	}
	if err := in.root.Mkdir(it.rel, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", it.dest, err)
	}
	return nil
}

// configAction decides, as rpm does, what to do with a %config file that
// may have been edited: a file that is absent, or as the old package (or
// the new one) shipped it, is replaced; an edited one is kept, with the
// new version beside it as .rpmnew unless the package did not change it.
func (in *installer) configAction(it *item, old receiptFile) (action, error) {
	st, err := in.root.Lstat(it.rel)
	if errors.Is(err, fs.ErrNotExist) {
		return actWrite, nil
	}
	if err != nil {
		return actWrite, fmt.Errorf("stat %s: %w", it.dest, err)
	}
	if !st.Mode().IsRegular() {
		return actWrite, nil
	}
	unmodified, err := in.diskMatches(it.rel, mergeDigests(it.digest, old.Digest))
	if err != nil {
		return actWrite, err
	}
	if unmodified {
		return actWrite, nil
	}
	if old.Digest != "" && contains(strings.Split(old.Digest, ","), it.digest) {
		in.log.Info().Str("path", it.dest).Msg("config file modified, keeping it")
		return actKeep, nil
	}
	in.log.Warn().Str("path", it.dest).Str("new", it.dest+".rpmnew").Msg("config file modified, new version saved beside it")
	return actRPMNew, nil
}

// diskMatches reports whether the file at rel has one of the digests in
// the comma-separated list, each computed with the algorithm its length
// names (packages may change algorithms between versions).
func (in *installer) diskMatches(rel, digests string) (bool, error) {
	got := map[int]string{}
	for _, want := range strings.Split(digests, ",") {
		algo := algoOfDigest(want)
		if algo == 0 {
			continue
		}
		d, ok := got[algo]
		if !ok {
			var err error
			if d, err = in.digestOf(rel, algo); err != nil {
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

// algoOfDigest names the algorithm of a hex digest by its length.
func algoOfDigest(d string) int {
	switch len(d) {
	case 32:
		return hashMD5
	case 40:
		return hashSHA1
	case 56:
		return hashSHA224
	case 64:
		return hashSHA256
	case 96:
		return hashSHA384
	case 128:
		return hashSHA512
	}
	return 0
}

func (in *installer) digestOf(rel string, algo int) (string, error) {
	f, err := in.root.OpenFile(rel, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", rel, err)
	}
	defer f.Close()
	h := newHash(algo)
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("read %s: %w", rel, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// extract streams the payload once and writes every file, symlink and
// hard link as a temporary file beside its destination, checking each
// against the header.
func (in *installer) extract(ctx context.Context, f *os.File, p *pkg, pl *plan) error {
	section := io.NewSectionReader(f, p.payloadOff, p.fileSize-p.payloadOff)
	var dec io.ReadCloser
	if p.compressor == "xz" {
		if blocks, header := xzIndex(section, section.Size()); blocks != nil {
			in.log.Debug().Int("blocks", len(blocks)).Msg("decoding xz blocks in parallel")
			dec = newParallelXZ(section, header, blocks)
		}
	}
	if dec == nil {
		var err error
		if dec, err = decompressor(bufio.NewReaderSize(section, 1<<20), p.compressor); err != nil {
			return err
		}
	}
	defer dec.Close()
	ra := newReadahead(dec)
	defer ra.Close()
	payload := bufio.NewReaderSize(&limitedPayload{r: ra, limit: p.archiveMax}, 1<<20)
	byName := make(map[string]*item, len(pl.items))
	for _, it := range pl.items {
		byName[it.path] = it
	}
	cr := newCPIO(payload, func(i int) (int64, bool) {
		if i < 0 || i >= len(pl.items) {
			return 0, false
		}
		return pl.items[i].size, true
	})
	links := map[uint64][]*item{} // hard link sets
	for _, it := range pl.items {
		if it.isReg() && it.hlKey != 0 {
			links[it.hlKey] = append(links[it.hlKey], it)
		}
	}
	buf := make([]byte, 1<<20)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		e, err := cr.next()
		if errors.Is(err, errTrailer) {
			break
		}
		if err != nil {
			return unusable("payload: %w", err)
		}
		var it *item
		if e.index >= 0 {
			it = pl.items[e.index]
		} else {
			it = byName[cpioPath(e.name)]
			if it == nil {
				return unusable("payload has %q, which the header does not list", e.name)
			}
			if e.mode&modeTypeMask != it.mode&modeTypeMask {
				return unusable("payload: %s: type %#o, header says %#o", it.path, e.mode&modeTypeMask, it.mode&modeTypeMask)
			}
		}
		if it.seen {
			return unusable("payload has %s twice", it.path)
		}
		if it.isGhost() {
			return unusable("payload has %s, which the header marks %%ghost", it.path)
		}
		it.seen = true
		switch {
		case it.isDir():
		case it.isSymlink():
			if e.size != int64(len(it.linkTo)) {
				return unusable("payload: %s: link target differs from the header", it.path)
			}
			target := make([]byte, e.size)
			if _, err := io.ReadFull(cr, target); err != nil {
				return unusable("payload: %s: %w", it.path, truncated(err))
			}
			if string(target) != it.linkTo {
				return unusable("payload: %s: link target differs from the header", it.path)
			}
			if it.skip {
				continue
			}
			if err := in.writeSymlink(it); err != nil {
				return err
			}
		default:
			set := links[it.hlKey]
			if len(set) > 1 && e.size == 0 && it.size > 0 {
				continue // rpm writes a hard link set's content with one of its names
			}
			if e.size != it.size {
				return unusable("payload: %s: %d bytes, header says %d", it.path, e.size, it.size)
			}
			if it.skip || len(set) > 1 && setDone(set) {
				if err := checkContent(cr, it, p.digestAlgo, buf); err != nil {
					return err
				}
				continue
			}
			if err := in.writeFile(cr, it, p.digestAlgo, buf); err != nil {
				return err
			}
		}
	}
	for _, it := range pl.items {
		if !it.seen && !it.isGhost() {
			return unusable("payload lacks %s (truncated or inconsistent archive)", it.path)
		}
	}
	for _, set := range links {
		if allSkipped(set) {
			continue
		}
		if err := in.linkSet(set, p.digestAlgo); err != nil {
			return err
		}
	}
	return nil
}

func allSkipped(set []*item) bool {
	for _, o := range set {
		if !o.skip {
			return false
		}
	}
	return true
}

func setDone(set []*item) bool {
	for _, o := range set {
		if o.done {
			return true
		}
	}
	return false
}

// cpioPath turns an archive name ("./usr/x", "/usr/x" or "usr/x") into the
// header's absolute path.
func cpioPath(name string) string {
	name = strings.TrimPrefix(name, ".")
	if !strings.HasPrefix(name, "/") {
		name = "/" + name
	}
	return name
}

// writeFile copies one entry's content to the temporary file of it,
// hashing as it writes, and sets mode, owner and mtime.
func (in *installer) writeFile(r io.Reader, it *item, algo int, buf []byte) error {
	_ = in.root.Remove(it.tmp)
	out, err := in.root.OpenFile(it.tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return fmt.Errorf("create %s: %w", it.dest, err)
	}
	h := newHash(algo)
	n, err := io.CopyBuffer(io.MultiWriter(out, h), r, buf)
	if err == nil && n != it.size {
		err = unusable("payload: %s: truncated", it.path)
	}
	if err == nil {
		if got := hex.EncodeToString(h.Sum(nil)); it.digest != "" && got != it.digest {
			err = unusable("payload: %s: digest mismatch: header says %s, content is %s", it.path, it.digest, got)
		}
	}
	if err == nil {
		err = in.setMeta(out, it)
	}
	if cerr := out.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("write %s: %w", it.dest, cerr)
	}
	if err == nil {
		t := time.Unix(it.mtime, 0)
		if it.diskMTime != 0 {
			t = time.Unix(0, it.diskMTime)
		}
		err = in.root.Chtimes(it.tmp, t, t)
	}
	if err != nil {
		_ = in.root.Remove(it.tmp)
		var ue *unusableError
		if errors.As(err, &ue) {
			return err
		}
		return fmt.Errorf("write %s: %w", it.dest, err)
	}
	it.done = true
	return nil
}

// checkContent reads an entry that is not written (a second copy of a
// hard link set's content) and still checks it.
func checkContent(r io.Reader, it *item, algo int, buf []byte) error {
	h := newHash(algo)
	if _, err := io.CopyBuffer(h, r, buf); err != nil {
		return unusable("payload: %s: %w", it.path, truncated(err))
	}
	if got := hex.EncodeToString(h.Sum(nil)); it.digest != "" && got != it.digest {
		return unusable("payload: %s: digest mismatch", it.path)
	}
	return nil
}

// setMeta sets owner then mode (chown clears setuid bits) on an open file.
func (in *installer) setMeta(f *os.File, it *item) error {
	if in.ids != nil {
		uid, gid := in.ids.lookup(it.user, it.group)
		if err := f.Chown(uid, gid); err != nil {
			return err
		}
	}
	return unix.Fchmod(int(f.Fd()), it.mode&0o7777)
}

func (in *installer) writeSymlink(it *item) error {
	_ = in.root.Remove(it.tmp)
	if err := in.root.Symlink(it.linkTo, it.tmp); err != nil {
		return fmt.Errorf("create %s: %w", it.dest, err)
	}
	if in.ids != nil {
		uid, gid := in.ids.lookup(it.user, it.group)
		if err := in.root.Lchown(it.tmp, uid, gid); err != nil {
			return fmt.Errorf("chown %s: %w", it.dest, err)
		}
	}
	if err := in.lutimes(it.tmp, it.mtime); err != nil {
		return fmt.Errorf("set times of %s: %w", it.dest, err)
	}
	it.done = true
	return nil
}

// lutimes sets the times of a symlink itself, which os.Root cannot: the
// parent is opened through the root and the link changed relative to it.
func (in *installer) lutimes(rel string, mtime int64) error {
	dir, err := in.root.Open(path.Dir(rel))
	if err != nil {
		return err
	}
	defer dir.Close()
	ts := []unix.Timespec{{Sec: mtime}, {Sec: mtime}}
	return unix.UtimesNanoAt(int(dir.Fd()), path.Base(rel), ts, unix.AT_SYMLINK_NOFOLLOW)
}

// linkSet gives every name of a hard link set the content written for one
// of them.
func (in *installer) linkSet(set []*item, algo int) error {
	var src *item
	for _, it := range set {
		if it.done {
			src = it
			break
		}
	}
	if src == nil {
		if set[0].size != 0 {
			return unusable("payload has no content for %s", set[0].path)
		}
		if err := in.writeFile(strings.NewReader(""), set[0], algo, nil); err != nil {
			return err
		}
		src = set[0]
	}
	for _, it := range set {
		if it.done {
			continue
		}
		_ = in.root.Remove(it.tmp)
		if err := in.root.Link(src.tmp, it.tmp); err != nil {
			return fmt.Errorf("link %s: %w", it.dest, err)
		}
		it.done = true
	}
	return nil
}

// commit renames the temporary files into place and sets the directories'
// metadata, deepest first so parents keep their times.
func (in *installer) commit(pl *plan) error {
	for _, it := range pl.sorted {
		if it.isDir() || it.isGhost() {
			continue
		}
		switch it.act {
		case actKeep:
			_ = in.root.Remove(it.tmp)
		case actRPMNew:
			if err := in.root.Rename(it.tmp, it.rel+".rpmnew"); err != nil {
				return fmt.Errorf("install %s.rpmnew: %w", it.dest, err)
			}
		default:
			if err := in.root.Rename(it.tmp, it.rel); err != nil {
				// A directory where the new package has a file: only an
				// empty one is replaced.
				if st, serr := in.root.Lstat(it.rel); serr == nil && st.IsDir() {
					if rerr := in.root.Remove(it.rel); rerr == nil {
						err = in.root.Rename(it.tmp, it.rel)
					}
				}
				if err != nil {
					return fmt.Errorf("install %s: %w", it.dest, err)
				}
			}
		}
	}
	for i := len(pl.sorted) - 1; i >= 0; i-- {
		it := pl.sorted[i]
		if !it.isDir() {
			continue
		}
		if in.ids != nil {
			uid, gid := in.ids.lookup(it.user, it.group)
			if err := in.root.Lchown(it.rel, uid, gid); err != nil {
				return fmt.Errorf("chown %s: %w", it.dest, err)
			}
		}
		if err := in.root.Chmod(it.rel, fileMode(it.mode)); err != nil {
			return fmt.Errorf("chmod %s: %w", it.dest, err)
		}
		t := time.Unix(it.mtime, 0)
		if err := in.root.Chtimes(it.rel, t, t); err != nil {
			return fmt.Errorf("set times of %s: %w", it.dest, err)
		}
	}
	return nil
}

// fileMode converts Unix permission bits to os.FileMode.
func fileMode(mode uint32) os.FileMode {
	m := os.FileMode(mode & 0o777)
	if mode&unix.S_ISUID != 0 {
		m |= os.ModeSetuid
	}
	if mode&unix.S_ISGID != 0 {
		m |= os.ModeSetgid
	}
	if mode&unix.S_ISVTX != 0 {
		m |= os.ModeSticky
	}
	return m
}

// removeStale removes what the old package owned and the new one does
// not: files and links (an edited %config file is kept as .rpmsave, as
// rpm does), then directories that are empty. Anything whose type changed
// since is not the package's any more and is left alone.
func (in *installer) removeStale(pl *plan, owned map[string]receiptFile) {
	var dirs []string
	for p, o := range owned {
		if findItem(pl, p) != nil {
			continue
		}
		rel := p[1:]
		st, err := in.root.Lstat(rel)
		if err != nil {
			continue
		}
		switch {
		case o.Type == "dir" && st.IsDir():
			dirs = append(dirs, rel)
			continue
		case o.Type == "symlink" && st.Mode()&fs.ModeSymlink != 0:
		case o.Type == "file" && st.Mode().IsRegular():
			if o.Config {
				if match, err := in.diskMatches(rel, o.Digest); err == nil && !match {
					if err := in.root.Rename(rel, rel+".rpmsave"); err == nil {
						in.log.Warn().Str("path", p).Str("saved", p+".rpmsave").Msg("modified config file no longer in the package, saved")
					}
					continue
				}
			}
		default:
			continue
		}
		if err := in.root.Remove(rel); err != nil && !errors.Is(err, fs.ErrNotExist) {
			in.log.Warn().Err(err).Str("path", p).Msg("cannot remove old file")
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(dirs)))
	for _, d := range dirs {
		_ = in.root.Remove(d) // only an empty directory goes
	}
}

// syncfs flushes the root's file system once, so that the receipt never
// exists before the files it describes are durable.
func (in *installer) syncfs() error {
	d, err := in.root.Open(".")
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
func (in *installer) recordDisk(r *receipt) {
	for i := range r.Files {
		f := &r.Files[i]
		st, err := in.root.Lstat(f.Path[1:])
		if err != nil {
			// A scriptlet removed it: nothing a restore could reproduce.
			f.Size, f.MTime = 0, 0
			continue
		}
		if f.Type == "file" && st.Mode().IsRegular() && st.Size() == f.Size && st.ModTime().UnixNano() != f.MTime {
			f.Shipped, _ = in.diskMatches(f.Path[1:], f.Digest)
		}
		f.Size = st.Size()
		f.MTime = st.ModTime().UnixNano()
	}
}
