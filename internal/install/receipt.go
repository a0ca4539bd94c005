package install

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Files of the state dir.
const (
	receiptName = "install.json"         // what is installed; written last
	journalName = "install.pending.json" // what an install in progress is writing
	receiptV    = 1
)

// receipt records an installed package: which file, where, and every
// path it owns with the package's digest (to tell modified %config files
// and to remove what an upgrade drops) and the state left on disk (for the
// cheap "still installed?" check).
type receipt struct {
	Format      int           `json:"format"`
	Name        string        `json:"name"`
	Version     string        `json:"version"`
	Release     string        `json:"release"`
	Arch        string        `json:"arch"`
	SHA256      string        `json:"sha256"`
	Prefix      string        `json:"prefix"`
	Signature   string        `json:"signature,omitempty"`
	RPM         fingerprint   `json:"rpm"`
	DigestAlgo  int           `json:"digest_algo"`
	InstalledAt time.Time     `json:"installed_at"`
	Files       []receiptFile `json:"files"`
}

// receiptFile is one owned path.
type receiptFile struct {
	Path   string `json:"path"` // inside the root, after relocation
	Type   string `json:"type"` // file, dir or symlink
	Mode   uint32 `json:"mode"` // permission bits, with setuid/setgid/sticky
	Digest string `json:"digest,omitempty"`
	Link   string `json:"link,omitempty"`
	Config bool   `json:"config,omitempty"`
	Size   int64  `json:"size"`  // on disk after the install
	MTime  int64  `json:"mtime"` // on disk after the install, Unix nanoseconds
	// Shipped says that a file a scriptlet rewrote (its mtime is not the
	// package's) still has the package's content, so that a restore from
	// the payload, with MTime, makes it as the install left it.
	Shipped bool `json:"shipped,omitempty"`
}

// fingerprint identifies an RPM file without reading it: when it is
// unchanged the file's SHA-256 need not be computed again.
type fingerprint struct {
	Size  int64  `json:"size"`
	MTime int64  `json:"mtime"`
	CTime int64  `json:"ctime"`
	Ino   uint64 `json:"ino"`
	Dev   uint64 `json:"dev"`
}

func fingerprintOf(st fs.FileInfo) fingerprint {
	fp := fingerprint{Size: st.Size(), MTime: st.ModTime().UnixNano()}
	if s, ok := st.Sys().(*syscall.Stat_t); ok {
		fp.CTime = s.Ctim.Nano()
		fp.Ino = s.Ino
		fp.Dev = s.Dev
	}
	return fp
}

func (r *receipt) result(changed bool) Result {
	return Result{
		Changed: changed, Name: r.Name, Version: r.Version, Release: r.Release, Arch: r.Arch,
		SHA256: r.SHA256, Prefix: r.Prefix, Files: len(r.Files), Signature: r.Signature,
	}
}

// statePath is where a file of the state dir is in the root (the root's
// symlinks followed).
func (j *job) statePath(name string) string {
	dir, err := j.dirOf(j.cfg.StateDir)
	if err != nil {
		dir = j.cfg.StateDir[1:] // os.Root says what is wrong with it
	}
	if name == "" {
		return dir
	}
	return relJoin(dir, name)
}

// state is what the state dir says: the receipt of what is installed
// (old) and the journal of an install that did not finish (pending).
type state struct {
	old, pending *receipt
	// current says the receipt is for this prefix and no install was
	// interrupted since.
	current bool
}

// readState reads the receipt and the journal of an interrupted install.
// An unreadable one counts as absent: the install is redone, which is
// always safe.
func (j *job) readState() state {
	read := func(name string) *receipt {
		b, err := j.root.ReadFile(j.statePath(name))
		if err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				j.log.Warn().Err(err).Str("file", name).Msg("unreadable install state, installing again")
			}
			return nil
		}
		var r receipt
		if err := json.Unmarshal(b, &r); err != nil || r.Format != receiptV {
			j.log.Warn().Str("file", name).Msg("unreadable install state, installing again")
			return nil
		}
		return &r
	}
	st := state{old: read(receiptName), pending: read(journalName)}
	st.current = st.old != nil && st.pending == nil && st.old.Prefix == j.cfg.Prefix && !j.stateDebris()
	return st
}

// unchanged reports whether this very file (by its fingerprint) is
// installed here, its files in place as the install left them: then there
// is nothing to do.
func (j *job) unchanged(st state) bool {
	if !st.current || st.old.RPM != j.fp {
		return false
	}
	missing, intact := j.inspect(st.old)
	return intact && len(missing) == 0
}

// inspect compares every file the receipt lists with the disk. In
// Kubernetes the container's file system is new at each container start
// while the prefix and the state dir may live on a volume: a receipt alone
// does not prove the files are there, and files outside the prefix
// (/etc/init.d/avagent) are gone in every new container.
//
// intact is false when a file is there but not as the install left it
// (another type, or a non-%config file of another size or mtime): only a
// full install repairs that. Otherwise missing lists the absent files,
// parents before children, which a restore from the payload can put
// back. Modified %config files count as intact; rpm would keep them too.
func (j *job) inspect(r *receipt) (missing []receiptFile, intact bool) {
	// fstatat relative to each parent directory, opened once (through the
	// root, its symlinks followed): a start with a matching receipt is a
	// stat per owned file and little else.
	const absent = -1
	dirs := map[string]int{}
	var open []*os.File
	defer func() {
		for _, d := range open {
			d.Close()
		}
	}()
	for _, f := range r.Files {
		if f.Path == "/" {
			continue // the root, which a package may own: it is there
		}
		parent, base := path.Split(f.Path)
		fd, ok := dirs[parent]
		if !ok {
			rp, err := j.dirOf(parent)
			var d *os.File
			if err == nil {
				d, err = j.root.Open(rp)
			}
			switch {
			case errors.Is(err, fs.ErrNotExist):
				fd = absent
			case err != nil:
				j.log.Info().Err(err).Str("path", parent).Msg("installed directory unusable, installing again")
				return nil, false
			default:
				open = append(open, d)
				fd = int(d.Fd())
			}
			dirs[parent] = fd
		}
		var st unix.Stat_t
		if fd == absent {
			missing = append(missing, f)
			continue
		}
		if err := unix.Fstatat(fd, base, &st, unix.AT_SYMLINK_NOFOLLOW); errors.Is(err, unix.ENOENT) {
			missing = append(missing, f)
			continue
		} else if err != nil {
			j.log.Info().Err(err).Str("path", f.Path).Msg("installed file unusable, installing again")
			return nil, false
		}
		if !j.asLeft(f, fd, base, &st) {
			j.log.Info().Str("path", f.Path).Msg("installed file changed, installing again")
			return nil, false
		}
	}
	return missing, true
}

// asLeft reports whether f, base in the directory fd with the status st,
// is as the install left it: the same type, a symlink's target, a
// regular file's size and mtime (any for a %config file).
func (j *job) asLeft(f receiptFile, fd int, base string, st *unix.Stat_t) bool {
	switch f.Type {
	case "dir":
		if st.Mode&unix.S_IFMT == unix.S_IFLNK {
			// An operator's link to a directory (var/ on a volume,
			// say) stands for the directory, as at install.
			rd, err := j.dirOf(f.Path)
			if err == nil {
				info, serr := j.root.Stat(rd)
				return serr == nil && info.IsDir()
			}
		}
		return st.Mode&unix.S_IFMT == unix.S_IFDIR
	case "symlink":
		if st.Mode&unix.S_IFMT != unix.S_IFLNK {
			return false
		}
		buf := make([]byte, len(f.Link)+1)
		n, err := unix.Readlinkat(fd, base, buf)
		return err == nil && string(buf[:n]) == f.Link
	case "file":
		return st.Mode&unix.S_IFMT == unix.S_IFREG && (f.Config || st.Size == f.Size && st.Mtim.Nano() == f.MTime)
	}
	return true
}

// writeState writes a receipt or the journal atomically: a temporary file,
// fsync, rename, fsync of the directory.
func (j *job) writeState(name string, r *receipt) error {
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encode %s: %w", name, err)
	}
	dir := j.statePath("")
	if err := j.root.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create state dir %s: %w", j.cfg.StateDir, err)
	}
	tmp := j.statePath(name + tmpSuffix)
	_ = j.root.Remove(tmp)
	f, err := j.root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = j.root.Rename(tmp, j.statePath(name))
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	return j.syncDir(dir)
}

func (j *job) syncDir(rel string) error {
	d, err := j.root.Open(rel)
	if err != nil {
		return fmt.Errorf("sync %s: %w", rel, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", rel, err)
	}
	return nil
}

func (j *job) removeState(name string) error {
	if err := j.root.Remove(j.statePath(name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", name, err)
	}
	return j.syncDir(j.statePath(""))
}
