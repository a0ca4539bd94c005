package install

import (
	"fmt"
	"path"
	"slices"
	"sort"
	"strings"

	"github.com/avsidecar/avsidecar/internal/rpm"
	"github.com/rs/zerolog"
)

// plan is what the package's files become in the root: relocated,
// checked, in header and in path order. makePlan makes it from the
// package alone; apply and restore then fill in each item's place in the
// root and what they did with it.
type plan struct {
	pkg      *rpm.Package
	from, to string   // relocation; from is "" for a package without prefixes
	items    []*item  // header order: items[i] is pkg.Files[i]
	sorted   []*item  // by destination path
	prefixes []string // every package prefix after relocation, for RPM_INSTALL_PREFIXn
	bytes    int64    // sum of the regular file sizes
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

// makePlan relocates the package's paths and refuses any that would be
// unsafe: duplicates, paths below a non-directory, paths in the state dir,
// sizes beyond the limit.
func makePlan(p *rpm.Package, cfg Config, log zerolog.Logger) (*plan, error) {
	from, prefixes, err := relocation(p, cfg, log)
	if err != nil {
		return nil, err
	}
	pl := &plan{pkg: p, from: from, to: cfg.Prefix, prefixes: prefixes}
	byDest := make(map[string]*item, len(p.Files))
	pl.items = make([]*item, len(p.Files))
	for i := range p.Files {
		f := &p.Files[i]
		dest := relocate(f.Path, pl.from, pl.to)
		if err := checkDest(dest, f, cfg.StateDir); err != nil {
			return nil, err
		}
		if byDest[dest] != nil {
			return nil, unusable("duplicate entry %s", dest)
		}
		it := &item{File: f, dest: dest, rel: strings.TrimPrefix(dest, "/")}
		it.tmp = it.rel + tmpSuffix
		byDest[dest] = it
		pl.items[i] = it
		// A hard link set's content is written once, with its last name.
		if f.IsReg() && !f.IsGhost() && (len(f.Links) == 0 || f.Links[len(f.Links)-1] == i) {
			if f.Size > cfg.MaxSize || pl.bytes+f.Size > cfg.MaxSize {
				return nil, unusable("package claims more than the %d bytes allowed", cfg.MaxSize)
			}
			pl.bytes += f.Size
		}
	}
	for _, it := range pl.items {
		for d := path.Dir(it.dest); d != "/"; d = path.Dir(d) {
			if a := byDest[d]; a != nil && !a.IsDir() {
				return nil, unusable("%s lies below %s, which is not a directory", it.dest, d)
			}
		}
	}
	pl.sorted = append([]*item(nil), pl.items...)
	sort.Slice(pl.sorted, func(i, j int) bool { return pl.sorted[i].dest < pl.sorted[j].dest })
	return pl, nil
}

// relocation decides which package prefix is relocated to cfg.Prefix:
// cfg.From, or the package's only prefix, or of several the client's; ""
// for a package without prefixes. prefixes lists every package prefix as
// it ends up.
func relocation(p *rpm.Package, cfg Config, log zerolog.Logger) (from string, prefixes []string, err error) {
	switch {
	case cfg.From != "":
		if !slices.Contains(p.Prefixes, cfg.From) {
			return "", nil, unusable("package is not relocatable from %s (prefixes: %v)", cfg.From, p.Prefixes)
		}
		from = cfg.From
	case len(p.Prefixes) == 1:
		from = p.Prefixes[0]
	case len(p.Prefixes) == 0:
		log.Warn().Str("prefix", cfg.Prefix).Msg("package is not relocatable: installing its paths as they are")
	default:
		if from = clientPrefix(p); from == "" {
			return "", nil, unusable("package has several prefixes %v, and none is %s or holds bin/avagent.bin: which one is the client's, to relocate to %s, cannot be told",
				p.Prefixes, clientDefaultPrefix, cfg.Prefix)
		}
		log.Info().Strs("prefixes", p.Prefixes).Str("relocated", from).Msg("package has several prefixes: relocating the client's")
	}
	for _, pre := range p.Prefixes {
		if pre == from {
			pre = cfg.Prefix
		}
		prefixes = append(prefixes, pre)
	}
	return from, prefixes, nil
}

// checkDest refuses a relocated path the install must not write: unsafe
// (checkPath; but the root itself as a directory), with the name of a
// temporary file, or in the installer's state dir.
func checkDest(dest string, f *rpm.File, stateDir string) error {
	if err := checkPath(dest); err != nil && !(dest == "/" && f.IsDir()) {
		return unusable("relocated %w", err)
	}
	for _, suffix := range tmpSuffixes {
		if strings.HasSuffix(dest, suffix) {
			return unusable("%s: reserved name", dest)
		}
	}
	if dest == stateDir || strings.HasPrefix(dest, stateDir+"/") {
		return unusable("%s lies in the installer's state dir %s", dest, stateDir)
	}
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
func (pl *plan) findItem(dest string) *item {
	i := sort.Search(len(pl.sorted), func(i int) bool { return pl.sorted[i].dest >= dest })
	if i < len(pl.sorted) && pl.sorted[i].dest == dest {
		return pl.sorted[i]
	}
	return nil
}

// isHardlinked reports whether it is one name of a hard link set.
func isHardlinked(it *item) bool { return len(it.Links) > 1 }
