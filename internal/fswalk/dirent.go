package fswalk

import (
	"bytes"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// direntBufSize is the getdents buffer: large enough that a directory of
// thousands of entries is read in a handful of system calls.
const direntBufSize = 128 << 10

// Offsets in struct linux_dirent64.
const (
	direntReclen = 16
	direntName   = 19
)

// readDirents calls fn for each entry of the open directory fd except "."
// and "..". name is NUL-terminated at name[len(name)] inside buf (so it can
// be passed to fstatat without a copy) and valid only during the call.
func readDirents(fd int, buf []byte, fn func(name []byte) error) error {
	for {
		n, err := unix.Getdents(fd, buf)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n <= 0 {
			return nil
		}
		for off := 0; off < n; {
			reclen := int(*(*uint16)(unsafe.Pointer(&buf[off+direntReclen])))
			rec := buf[off+direntName : off+reclen]
			off += reclen
			end := bytes.IndexByte(rec, 0)
			if end < 0 {
				continue
			}
			name := rec[:end]
			if (len(name) == 1 && name[0] == '.') || (len(name) == 2 && name[0] == '.' && name[1] == '.') {
				continue
			}
			if err := fn(name); err != nil {
				return err
			}
		}
	}
}

// lstatAt is fstatat(dirfd, name, AT_SYMLINK_NOFOLLOW) on a name that is
// NUL-terminated in its backing array, without allocating a C string.
func lstatAt(dirfd int, name []byte, st *unix.Stat_t) error {
	for {
		_, _, e := syscall.Syscall6(unix.SYS_NEWFSTATAT, uintptr(dirfd),
			uintptr(unsafe.Pointer(unsafe.SliceData(name))), uintptr(unsafe.Pointer(st)),
			unix.AT_SYMLINK_NOFOLLOW, 0, 0)
		if e == syscall.EINTR {
			continue
		}
		if e != 0 {
			return e
		}
		return nil
	}
}

// fill sets e from a stat of name in dirfd; linkBuf receives symlink targets.
// It returns false when the entry vanished between getdents and stat.
func fill(dirfd int, name []byte, st *unix.Stat_t, linkBuf []byte, e *Entry) (bool, error) {
	if err := lstatAt(dirfd, name, st); err != nil {
		if err == syscall.ENOENT {
			return false, nil
		}
		return false, err
	}
	e.setStat(st.Mode, st.Size, st.Mtim.Sec, st.Mtim.Nsec)
	e.LinkTarget = ""
	if e.Type == TypeSymlink {
		n, err := unix.Readlinkat(dirfd, string(name), linkBuf)
		if err == nil {
			e.LinkTarget = string(linkBuf[:n])
		}
	}
	return true, nil
}
