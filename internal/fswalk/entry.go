package fswalk

import (
	"syscall"
	"time"
)

// Type is the kind of a directory entry as the API names it.
type Type uint8

// Entry types. Everything that is not a regular file, a directory or a
// symlink (FIFOs, sockets, devices) is TypeOther.
const (
	TypeFile Type = iota
	TypeDir
	TypeSymlink
	TypeOther
)

// String is the API name of the type.
func (t Type) String() string {
	switch t {
	case TypeFile:
		return "file"
	case TypeDir:
		return "dir"
	case TypeSymlink:
		return "symlink"
	}
	return "other"
}

// Entry describes one directory entry, from lstat: symlinks are described,
// never followed.
type Entry struct {
	// Name is the entry's name in its directory.
	Name string
	// Type is the kind of entry.
	Type Type
	// Mode holds the permission and special bits (07777).
	Mode uint32
	// Size is st_size in bytes.
	Size int64
	// Mtime is the modification time in nanoseconds since the Unix epoch.
	Mtime int64
	// LinkTarget is the symlink's target as stored, empty for other types.
	LinkTarget string
}

func (e *Entry) setStat(mode uint32, size, sec, nsec int64) {
	switch mode & syscall.S_IFMT {
	case syscall.S_IFREG:
		e.Type = TypeFile
	case syscall.S_IFDIR:
		e.Type = TypeDir
	case syscall.S_IFLNK:
		e.Type = TypeSymlink
	default:
		e.Type = TypeOther
	}
	e.Mode = mode & 07777
	e.Size = size
	e.Mtime = sec*1e9 + nsec
}

// MtimeTime is Mtime as a time.Time in UTC.
func (e *Entry) MtimeTime() time.Time { return time.Unix(0, e.Mtime).UTC() }
