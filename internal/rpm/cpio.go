package rpm

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// cpio reads the payload archive of an RPM: the SVR4 "newc" format
// (070701, or 070702 with checksums) and rpm's stripped format (07070X),
// which names a file only by its index in the header and which rpm uses
// for packages with files of 4 GiB or more.
//
// It is written here rather than taken from cavaliergopher/cpio because
// the installer needs the stripped format and hard bounds on every field a
// hostile archive controls (name length, entry size).
type cpioReader struct {
	r      *bufio.Reader
	remain int64 // data bytes of the current entry not yet read
	pad    int64 // padding after the data of the current entry
	// sizeOf gives the data size of an entry of the stripped format, which
	// its header does not carry.
	sizeOf func(index int) (int64, bool)
}

// cpioEntry is the header of one archive entry.
type cpioEntry struct {
	name  string // as in the archive (newc); "" for the stripped format
	index int    // header file index (stripped format); -1 for newc
	mode  uint32
	size  int64
	nlink uint32
}

const (
	cpioTrailer    = "TRAILER!!!"
	cpioMaxNameLen = 4096
)

var errTrailer = errors.New("cpio trailer")

func newCPIO(r *bufio.Reader, sizeOf func(int) (int64, bool)) *cpioReader {
	return &cpioReader{r: r, sizeOf: sizeOf}
}

// next skips what is left of the current entry and reads the next header.
// It returns errTrailer at the end of the archive.
func (c *cpioReader) next() (cpioEntry, error) {
	if _, err := c.r.Discard(int(c.remain + c.pad)); err != nil {
		return cpioEntry{}, truncated(err)
	}
	c.remain, c.pad = 0, 0
	var magic [6]byte
	if _, err := io.ReadFull(c.r, magic[:]); err != nil {
		return cpioEntry{}, truncated(err)
	}
	switch string(magic[:]) {
	case "07070X":
		var ix [8]byte
		if _, err := io.ReadFull(c.r, ix[:]); err != nil {
			return cpioEntry{}, truncated(err)
		}
		i, err := strconv.ParseUint(string(ix[:]), 16, 32)
		if err != nil {
			return cpioEntry{}, fmt.Errorf("cpio: bad index %q", ix[:])
		}
		if _, err := c.r.Discard(2); err != nil { // 14 header bytes, padded to 16
			return cpioEntry{}, truncated(err)
		}
		size, ok := c.sizeOf(int(i))
		if !ok {
			return cpioEntry{}, fmt.Errorf("cpio: index %d out of range", i)
		}
		c.remain, c.pad = size, pad4(size)
		return cpioEntry{index: int(i), size: size}, nil
	case "070701", "070702":
	default:
		return cpioEntry{}, fmt.Errorf("cpio: bad magic %q", magic[:])
	}
	var hdr [104]byte
	if _, err := io.ReadFull(c.r, hdr[:]); err != nil {
		return cpioEntry{}, truncated(err)
	}
	var fields [13]uint64
	for i := range fields {
		v, err := strconv.ParseUint(string(hdr[i*8:i*8+8]), 16, 32)
		if err != nil {
			return cpioEntry{}, fmt.Errorf("cpio: bad header field %q", hdr[i*8:i*8+8])
		}
		fields[i] = v
	}
	mode, nlink, size, nameLen := fields[1], fields[4], int64(fields[6]), int64(fields[11])
	if nameLen < 2 || nameLen > cpioMaxNameLen {
		return cpioEntry{}, fmt.Errorf("cpio: name length %d out of range", nameLen)
	}
	name := make([]byte, nameLen)
	if _, err := io.ReadFull(c.r, name); err != nil {
		return cpioEntry{}, truncated(err)
	}
	if name[nameLen-1] != 0 {
		return cpioEntry{}, errors.New("cpio: name not terminated")
	}
	e := cpioEntry{name: string(name[:nameLen-1]), index: -1, mode: uint32(mode), size: size, nlink: uint32(nlink)}
	if _, err := c.r.Discard(int(pad4(110 + nameLen))); err != nil {
		return cpioEntry{}, truncated(err)
	}
	if e.name == cpioTrailer {
		return e, errTrailer
	}
	c.remain, c.pad = size, pad4(size)
	return e, nil
}

// Read reads the data of the current entry.
func (c *cpioReader) Read(p []byte) (int, error) {
	if c.remain <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > c.remain {
		p = p[:c.remain]
	}
	n, err := c.r.Read(p)
	c.remain -= int64(n)
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

// WriteTo lets io.Copy hand the buffered reader's buffer straight to the
// destination, saving a copy per block.
func (c *cpioReader) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for c.remain > 0 {
		want := c.remain
		if b := int64(c.r.Size()); want > b {
			want = b
		}
		buf, err := c.r.Peek(int(want))
		if len(buf) > 0 {
			n, werr := w.Write(buf)
			total += int64(n)
			c.remain -= int64(n)
			if _, derr := c.r.Discard(n); derr != nil && werr == nil {
				werr = derr
			}
			if werr != nil {
				return total, werr
			}
		}
		if err != nil && len(buf) < int(want) {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return total, err
		}
	}
	return total, nil
}

func pad4(n int64) int64 { return (4 - n%4) % 4 }

func truncated(err error) error {
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return errors.New("cpio: archive truncated")
	}
	return err
}
