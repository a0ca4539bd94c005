package fswalk

import (
	"strconv"
	"syscall"
	"time"
	"unicode/utf8"
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

// AppendJSON appends e as one JSON object. When dir is not empty, a
// "path" field comes first with the entry's full path, dir + "/" + name
// (the walk's lines carry it). mtime is RFC 3339 in UTC with seconds;
// mode is an octal string ("0644").
func (e *Entry) AppendJSON(b []byte, dir string) []byte {
	b = append(b, '{')
	if dir != "" {
		b = append(b, `"path":"`...)
		if dir != "/" {
			b = appendEscaped(b, dir)
		}
		b = append(b, '/')
		b = appendEscaped(b, e.Name)
		b = append(b, `",`...)
	}
	b = append(b, `"name":`...)
	b = AppendString(b, e.Name)
	b = append(b, `,"type":"`...)
	b = append(b, e.Type.String()...)
	b = append(b, `","size":`...)
	b = strconv.AppendInt(b, e.Size, 10)
	b = append(b, `,"mode":"`...)
	b = AppendMode(b, e.Mode)
	b = append(b, `","mtime":"`...)
	b = e.MtimeTime().Truncate(time.Second).AppendFormat(b, time.RFC3339)
	b = append(b, `","link_target":`...)
	b = AppendString(b, e.LinkTarget)
	return append(b, '}')
}

// AppendMode appends mode as at least four octal digits ("0644", "4755").
func AppendMode(b []byte, mode uint32) []byte {
	for d := uint32(01000); d > 1 && mode < d; d >>= 3 {
		b = append(b, '0')
	}
	return strconv.AppendUint(b, uint64(mode), 8)
}

const hexDigits = "0123456789abcdef"

// AppendString appends s as a JSON string the way encoding/json does:
// control characters, quotes, backslashes and <, >, & are escaped, and
// invalid UTF-8 becomes U+FFFD (file names are bytes; JSON is text).
func AppendString(b []byte, s string) []byte {
	b = append(b, '"')
	b = appendEscaped(b, s)
	return append(b, '"')
}

func appendEscaped(b []byte, s string) []byte {
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	return append(b, s[start:]...)
}
