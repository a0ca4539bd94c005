package rpm

import (
	"encoding/hex"
	"fmt"
	"path"
	"strings"
)

// File flags (rpmfiles.h) that change how a file is installed.
const (
	FlagConfig    = 1 << 0
	FlagNoReplace = 1 << 4
	FlagGhost     = 1 << 6
)

// Unix file type bits of st_mode, as RPM headers and cpio carry them.
const (
	ModeTypeMask = 0o170000
	ModeReg      = 0o100000
	ModeDir      = 0o040000
	ModeSymlink  = 0o120000
)

// File is one file of a package, as its header describes it.
type File struct {
	// Path is absolute and clean, as in the package (before relocation);
	// "/" only for a directory (the root itself).
	Path string
	// Mode is st_mode: type and permission bits.
	Mode uint32
	// Size is the content's size for a regular file, the target's length
	// for a symlink.
	Size  int64
	MTime int64
	// Digest is the content's digest in hex (Package.DigestAlgo); empty
	// for anything but a regular file, and for a package without them.
	Digest string
	// LinkTo is a symlink's target.
	LinkTo string
	// Flags are the file flags (FlagConfig, FlagGhost...).
	Flags int64
	// User and Group name the owner; resolving them is the installer's.
	User, Group string
	// Caps are a regular file's capabilities (%caps) in libcap's text,
	// checked by Read; "" for none. CapabilityXattr turns them into what
	// rpm writes.
	Caps string
	// Links lists, in header order, the indexes of the names of the hard
	// link set the file belongs to; nil when it is alone. The payload
	// carries the set's content with one of them (see Archive).
	Links []int
}

// IsReg reports whether f is a regular file.
func (f *File) IsReg() bool { return f.Mode&ModeTypeMask == ModeReg }

// IsDir reports whether f is a directory.
func (f *File) IsDir() bool { return f.Mode&ModeTypeMask == ModeDir }

// IsSymlink reports whether f is a symbolic link.
func (f *File) IsSymlink() bool { return f.Mode&ModeTypeMask == ModeSymlink }

// IsConfig reports whether f is a %config file.
func (f *File) IsConfig() bool { return f.Flags&FlagConfig != 0 }

// IsGhost reports whether f is %ghost: owned, but neither in the payload
// nor created by an install.
func (f *File) IsGhost() bool { return f.Flags&FlagGhost != 0 }

// decodeFiles reads the file list: every array as long as the list of
// names, every path safe, every type supported.
func (p *Package) decodeFiles() error {
	h := p.tags
	names := h.GetTag(tagBaseNames).StringSlice()
	dirs := h.GetTag(tagDirNames).StringSlice()
	dirIdx := ints(h, tagDirIndexes)
	if len(names) == 0 {
		old := h.GetTag(tagOldFilenames).StringSlice()
		if len(old) == 0 {
			return nil
		}
		names, dirs, dirIdx = compressFilelist(old)
	}
	n := len(names)
	modes := ints(h, tagFileModes)
	sizes := ints(h, tagLongFileSizes)
	if sizes == nil {
		sizes = ints(h, tagFileSizes)
	}
	mtimes := ints(h, tagFileMTimes)
	digests := h.GetTag(tagFileDigests).StringSlice()
	links := h.GetTag(tagFileLinkTos).StringSlice()
	flags := ints(h, tagFileFlags)
	users := h.GetTag(tagFileUserName).StringSlice()
	groups := h.GetTag(tagFileGroupName).StringSlice()
	inodes := ints(h, tagFileInodes)
	devices := ints(h, tagFileDevices)
	caps := h.GetTag(tagFileCaps).StringSlice()
	for _, l := range []struct {
		name string
		n    int
		opt  bool
	}{
		{"dir indexes", len(dirIdx), false}, {"modes", len(modes), false}, {"sizes", len(sizes), false},
		{"mtimes", len(mtimes), true}, {"digests", len(digests), true}, {"link targets", len(links), true},
		{"flags", len(flags), true}, {"users", len(users), true}, {"groups", len(groups), true},
		{"inodes", len(inodes), true}, {"devices", len(devices), true}, {"capabilities", len(caps), true},
	} {
		if l.n != n && !(l.opt && l.n == 0) {
			return unusable("header: %d file names but %d %s", n, l.n, l.name)
		}
	}
	hashLen := p.DigestAlgo.New().Size() * 2
	p.Files = make([]File, n)
	for i := range n {
		f := &p.Files[i]
		if dirIdx[i] < 0 || dirIdx[i] >= int64(len(dirs)) {
			return unusable("header: file %d: directory index out of range", i)
		}
		dir, base := dirs[dirIdx[i]], names[i]
		f.Mode = uint32(modes[i])
		switch {
		case dir == "/" && base == "" && f.IsDir():
			// The root directory itself, as Fedora's filesystem package
			// owns it: rpm applies its metadata to the root.
			f.Path = "/"
		case !strings.HasSuffix(dir, "/") || base == "" || base == "." || base == ".." || strings.Contains(base, "/"):
			return unusable("header: unsafe file name %q in %q", base, dir)
		default:
			f.Path = dir + base
			if err := CheckPath(f.Path); err != nil {
				return unusable("header: %w", err)
			}
		}
		f.Size = sizes[i]
		if f.Size < 0 {
			return unusable("header: %s: negative size", f.Path)
		}
		if len(mtimes) > 0 {
			f.MTime = mtimes[i]
		}
		if len(flags) > 0 {
			f.Flags = flags[i]
		}
		if len(users) > 0 {
			f.User = users[i]
		}
		if len(groups) > 0 {
			f.Group = groups[i]
		}
		switch {
		case f.IsReg():
			if len(digests) > 0 {
				f.Digest = strings.ToLower(digests[i])
			}
			if f.Digest != "" && (len(f.Digest) != hashLen || !isHex(f.Digest)) {
				return unusable("header: %s: malformed digest", f.Path)
			}
			if len(caps) > 0 && caps[i] != "" {
				// rpm sets capabilities on regular files only.
				if _, err := CapabilityXattr(caps[i], 64); err != nil {
					return unusable("header: %s: %w", f.Path, err)
				}
				f.Caps = caps[i]
			}
		case f.IsSymlink():
			if len(links) == 0 || links[i] == "" || strings.ContainsRune(links[i], 0) {
				return unusable("header: %s: symlink without a target", f.Path)
			}
			f.LinkTo = links[i]
		case f.IsDir():
		default:
			return unusable("header: %s: unsupported file type %#o", f.Path, f.Mode&ModeTypeMask)
		}
		// An entry: header, "./" and the name with its NUL, padding,
		// data, padding.
		p.archiveMax += 110 + int64(len(f.Path)) + 3 + 3 + f.Size + 3
	}
	p.archiveMax += 512 // the trailer
	if len(inodes) > 0 && len(devices) > 0 {
		p.linkSets(inodes, devices)
	}
	return nil
}

// compressFilelist splits the old-style file list of v3 packages (whole
// paths) into the base names, directories and directory indexes of the
// list every later rpm writes, as rpm does when it reads such a package.
// A path without a slash gets an empty directory, which decodeFiles
// refuses.
func compressFilelist(paths []string) (names, dirs []string, dirIdx []int64) {
	index := map[string]int64{}
	for _, p := range paths {
		i := strings.LastIndexByte(p, '/')
		dir, base := p[:i+1], p[i+1:]
		x, ok := index[dir]
		if !ok {
			x = int64(len(dirs))
			index[dir] = x
			dirs = append(dirs, dir)
		}
		names = append(names, base)
		dirIdx = append(dirIdx, x)
	}
	return names, dirs, dirIdx
}

// linkSets groups the regular files that share a device and inode, as rpm
// does (rpmfilesBuildNLink): ghosts and inode 0 are never linked.
func (p *Package) linkSets(inodes, devices []int64) {
	sets := map[[2]int64][]int{}
	for i := range p.Files {
		f := &p.Files[i]
		if !f.IsReg() || f.IsGhost() || inodes[i] <= 0 {
			continue
		}
		k := [2]int64{devices[i], inodes[i]}
		sets[k] = append(sets[k], i)
	}
	for _, set := range sets {
		if len(set) > 1 {
			for _, i := range set {
				p.Files[i].Links = set
			}
		}
	}
}

func isHex(s string) bool {
	_, err := hex.DecodeString(s)
	return err == nil
}

// Linux's PATH_MAX and NAME_MAX.
const (
	maxPathLen = 4095
	maxNameLen = 255
)

// CheckPath accepts only absolute, clean paths below /: no "..", no ".",
// no empty component, no NUL, no name longer than Linux allows.
func CheckPath(p string) error {
	if !strings.HasPrefix(p, "/") || p == "/" || path.Clean(p) != p || strings.ContainsRune(p, 0) {
		return fmt.Errorf("unsafe path %q", p)
	}
	if len(p) > maxPathLen {
		return fmt.Errorf("path of %d bytes is too long", len(p))
	}
	for _, c := range strings.Split(p[1:], "/") {
		if len(c) > maxNameLen {
			return fmt.Errorf("name %.40q... of %d bytes is too long", c, len(c))
		}
	}
	return nil
}
