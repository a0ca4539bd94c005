package install

import (
	"fmt"
	"os"
	"path"
	"slices"
	"sort"
	"strings"

	"github.com/avsidecar/avsidecar/internal/rpm"
	"github.com/rs/zerolog"
)

// transaction is one install into one root: what it was asked, the open
// root and package, what the package's files become in the root, what
// was installed before, and what this install has changed so far.
type transaction struct {
	cfg  Config
	log  zerolog.Logger
	root *os.Root
	file *os.File // the package file
	fp   fingerprint

	// The package, once read and verified; while verifying is not nil, a
	// goroutine is verifying it (verifyLater).
	pkg       *rpm.Package
	ver       rpm.Verification
	verifying chan verifyResult

	// The plan: the package's files relocated and checked.
	from, to string   // relocation; from is "" for a package without prefixes
	items    []*item  // header order: items[i] is pkg.Files[i]
	sorted   []*item  // by destination path
	prefixes []string // every package prefix after relocation, for RPM_INSTALL_PREFIXn
	bytes    int64    // sum of the regular file sizes

	// What is installed: the receipt, and the journal of an interrupted
	// install.
	old, pending *receipt

	resolved resolver // directories of the root, their symlinks followed
	d        *dirs    // directories of the root kept open, from prepare on
	flusher  *flusher // the background syncfs of extract, while it runs

	ids     *idMap // owners and groups of the root
	chown   bool   // the process may change owners and capabilities (runs as root)
	capBits int    // capabilities the kernel knows, for "all" in %caps
	// postRan says a %post process ran: it may have changed any file.
	postRan bool
	// created lists the directories this install made, parents first, so
	// that a failure before the first rename can take them away again;
	// madeHere has them too, to look them up.
	created  []string
	madeHere map[string]bool
}

// item is one file of the package and what the install does with it.
type item struct {
	*rpm.File
	dest string // after relocation: absolute and clean, inside the root
	// rel is where dest is in the root, relative, as os.Root takes it,
	// the root's symlinks followed (locate): every file system call uses
	// it.
	rel string
	act action
	tmp string // where the payload's entry is written: a temporary name, or rel itself
	// inPlace says the entry is written at rel, where nothing was.
	inPlace bool
	done    bool // the temporary file holds the checked content
	skip    bool // a restore leaves it alone: its entry is checked, not written
	// diskMTime, when not zero, is the mtime (Unix nanoseconds) a restore
	// gives the file instead of the package's: the one the install left.
	diskMTime int64
}

type action int

const (
	actWrite  action = iota // write and rename into place
	actKeep                 // a modified %config file: leave it as it is
	actRPMNew               // a modified %config file: write the new one as .rpmnew
)

// tmpSuffix names the temporary file of a destination. It is
// deterministic so that the next run finds and replaces the leftovers of
// a killed one, and no longer than rpm's (";%08x"), so that every name rpm
// installs fits in Linux's 255 bytes with it.
const tmpSuffix = ";avs-tmp"

// oldTmpSuffix is what earlier versions used: a killed install of one of
// them may have left such files, which the next install cleans too.
const oldTmpSuffix = ";avsidecar"

// tmpSuffixes are the temporary suffixes an install cleans.
var tmpSuffixes = []string{tmpSuffix, oldTmpSuffix}

// maxName is the longest name rpm installs: its temporary names add 9
// bytes to the 255 a name may have.
const maxName = 255 - 9

// plan relocates the package's paths and refuses any that would be unsafe:
// duplicates, paths below a non-directory, paths in the state dir, sizes
// beyond the limit.
func (tx *transaction) plan() error {
	p := tx.pkg
	tx.to = tx.cfg.Prefix
	switch {
	case tx.cfg.From != "":
		if !slices.Contains(p.Prefixes, tx.cfg.From) {
			return unusable("package is not relocatable from %s (prefixes: %v)", tx.cfg.From, p.Prefixes)
		}
		tx.from = tx.cfg.From
	case len(p.Prefixes) == 1:
		tx.from = p.Prefixes[0]
	case len(p.Prefixes) == 0:
		tx.log.Warn().Str("prefix", tx.cfg.Prefix).Msg("package is not relocatable: installing its paths as they are")
	default:
		if tx.from = clientPrefix(p); tx.from == "" {
			return unusable("package has several prefixes %v, and none is %s or holds bin/avagent.bin: which one is the client's, to relocate to %s, cannot be told",
				p.Prefixes, clientDefaultPrefix, tx.cfg.Prefix)
		}
		tx.log.Info().Strs("prefixes", p.Prefixes).Str("relocated", tx.from).Msg("package has several prefixes: relocating the client's")
	}
	for _, pre := range p.Prefixes {
		if pre == tx.from {
			tx.prefixes = append(tx.prefixes, tx.to)
		} else {
			tx.prefixes = append(tx.prefixes, pre)
		}
	}

	byDest := make(map[string]*item, len(p.Files))
	tx.items = make([]*item, len(p.Files))
	for i := range p.Files {
		f := &p.Files[i]
		dest := relocate(f.Path, tx.from, tx.to)
		if err := checkPath(dest); err != nil && !(dest == "/" && f.IsDir()) {
			return unusable("relocated %w", err)
		}
		for _, suffix := range tmpSuffixes {
			if strings.HasSuffix(dest, suffix) {
				return unusable("%s: reserved name", dest)
			}
		}
		if dest == tx.cfg.StateDir || strings.HasPrefix(dest, tx.cfg.StateDir+"/") {
			return unusable("%s lies in the installer's state dir %s", dest, tx.cfg.StateDir)
		}
		if byDest[dest] != nil {
			return unusable("duplicate entry %s", dest)
		}
		it := &item{File: f, dest: dest, rel: strings.TrimPrefix(dest, "/")}
		it.tmp = it.rel + tmpSuffix
		byDest[dest] = it
		tx.items[i] = it
		// A hard link set's content is written once, with its last name.
		if f.IsReg() && !f.IsGhost() && (len(f.Links) == 0 || f.Links[len(f.Links)-1] == i) {
			if f.Size > tx.cfg.MaxSize || tx.bytes+f.Size > tx.cfg.MaxSize {
				return unusable("package claims more than the %d bytes allowed", tx.cfg.MaxSize)
			}
			tx.bytes += f.Size
		}
	}
	for _, it := range tx.items {
		for d := path.Dir(it.dest); d != "/"; d = path.Dir(d) {
			if a := byDest[d]; a != nil && !a.IsDir() {
				return unusable("%s lies below %s, which is not a directory", it.dest, d)
			}
		}
	}
	tx.sorted = append([]*item(nil), tx.items...)
	sort.Slice(tx.sorted, func(i, j int) bool { return tx.sorted[i].dest < tx.sorted[j].dest })
	return nil
}

// checkPath accepts the relocated paths an install can write: safe
// (rpm.CheckPath), each name no longer than rpm installs.
func checkPath(p string) error {
	if err := rpm.CheckPath(p); err != nil {
		return err
	}
	for _, c := range strings.Split(p[1:], "/") {
		if len(c) > maxName {
			return fmt.Errorf("name %.40q... of %d bytes is too long (rpm installs names of up to %d bytes)", c, len(c), maxName)
		}
	}
	return nil
}

// clientDefaultPrefix is where the Avamar client installs by default.
const clientDefaultPrefix = "/usr/local/avamar"

// clientPrefix is, of a package's several prefixes, the Avamar client's:
// /usr/local/avamar, or else the one that holds bin/avagent.bin; "" when
// neither tells.
func clientPrefix(p *rpm.Package) string {
	if slices.Contains(p.Prefixes, clientDefaultPrefix) {
		return clientDefaultPrefix
	}
	for _, pre := range p.Prefixes {
		for _, f := range p.Files {
			if f.Path == pre+"/bin/avagent.bin" {
				return pre
			}
		}
	}
	return ""
}

// relocate applies rpm --relocate from=to to p.
func relocate(p, from, to string) string {
	switch {
	case from == "":
		return p
	case from == "/":
		return path.Join(to, p)
	case p == from:
		return to
	case strings.HasPrefix(p, from+"/"):
		return to + p[len(from):]
	}
	return p
}

// findItem returns the item installed at dest, or nil.
func (tx *transaction) findItem(dest string) *item {
	i := sort.Search(len(tx.sorted), func(i int) bool { return tx.sorted[i].dest >= dest })
	if i < len(tx.sorted) && tx.sorted[i].dest == dest {
		return tx.sorted[i]
	}
	return nil
}

// isHardlinked reports whether it is one name of a hard link set.
func isHardlinked(it *item) bool { return len(it.Links) > 1 }
