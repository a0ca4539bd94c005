package rpm

import (
	"bufio"
	"encoding/hex"
	"errors"
	"hash"
	"io"
	"strings"
)

// Archive reads a package's payload entry by entry and checks each one
// against the header before it is handed out: a name the header lists
// (or, in rpm's stripped format, an index in range), the header's type,
// size and symlink target, no entry twice, no file missing at the end,
// and the content's digest, checked as it is read. Nothing an Archive
// returns has escaped these checks: an entry whose content is not read
// is read and checked by the next call to Next.
type Archive struct {
	p      *Package
	dec    io.Closer // the decompressor
	cr     *cpioReader
	byName map[string]int
	seen   []bool
	// setContent marks the hard link sets (by the index of their first
	// name) whose content has come.
	setContent map[int]bool
	cur        int // the entry being read, -1 before the first
	h          hash.Hash
	checked    bool // the current entry's content is read and checked
	err        error
}

// Entry is one file of the payload.
type Entry struct {
	// Index is the file's index in Package.Files.
	Index int
	*File
	// Content says the entry carries the file's content: true for a
	// regular file, but for the names of a hard link set other than the
	// one that carries the set's content; false for directories and
	// symlinks (whose target, checked, is File.LinkTo).
	Content bool
}

// Open starts reading the payload of p from r, the package file.
// Decompression runs in a goroutine of its own (several blocks at once
// for a multi-block xz stream), ahead of the reader. The caller closes
// the Archive.
func (p *Package) Open(r io.ReaderAt) (*Archive, error) {
	section := io.NewSectionReader(r, p.PayloadOffset, p.Size-p.PayloadOffset)
	var dec io.ReadCloser
	if p.Compressor == "xz" {
		if blocks, header := xzIndex(section, section.Size()); blocks != nil {
			if n := xzSlots(blocks); n >= 2 {
				dec = p.newParallelXZ(section, header, blocks, n)
			}
		}
	}
	if dec == nil {
		in := bufio.NewReaderSize(section, bufSize(section.Size()))
		compressor, err := payloadCompressor(in, p.Compressor)
		if err != nil {
			return nil, err
		}
		dec = p.newReadahead(in, compressor)
	}
	payload := bufio.NewReaderSize(&limitedPayload{r: dec, limit: p.archiveMax}, bufSize(p.archiveMax))
	return p.newArchive(payload, dec), nil
}

// newArchive reads the uncompressed cpio archive in r; dec, if any, is
// closed with it.
func (p *Package) newArchive(r *bufio.Reader, dec io.Closer) *Archive {
	a := &Archive{p: p, dec: dec, seen: make([]bool, len(p.Files)), setContent: map[int]bool{}, cur: -1, checked: true}
	a.byName = make(map[string]int, len(p.Files))
	for i := range p.Files {
		a.byName[p.Files[i].Path] = i
	}
	a.cr = newCPIO(r, func(i int) (int64, bool) {
		if i < 0 || i >= len(p.Files) {
			return 0, false
		}
		f := &p.Files[i]
		if len(f.Links) > 1 && f.Links[len(f.Links)-1] != i {
			return 0, true // only the last name of a hard link set has content (rpmfiArchiveReadHeader)
		}
		return f.Size, true
	})
	return a
}

// Close stops decompressing, and waits for the decoding goroutines to
// end.
func (a *Archive) Close() error {
	if a.dec != nil {
		return a.dec.Close()
	}
	return nil
}

// Next reads the next entry, once what is left of the current one is read
// and checked. It returns io.EOF at the end of the archive, once every
// file the header lists (but %ghost ones) has been seen.
func (a *Archive) Next() (Entry, error) {
	if a.err != nil {
		return Entry{}, a.err
	}
	e, err := a.next()
	if err != nil {
		a.err = err
	}
	return e, err
}

func (a *Archive) next() (Entry, error) {
	if err := a.finishEntry(); err != nil {
		return Entry{}, err
	}
	for {
		ce, err := a.cr.next()
		if errors.Is(err, errTrailer) {
			return Entry{}, a.finish()
		}
		if err != nil {
			return Entry{}, unusable("payload: %w", err)
		}
		i := ce.index
		if i < 0 {
			var ok bool
			if i, ok = a.byName[cpioPath(ce.name)]; !ok {
				return Entry{}, unusable("payload has %q, which the header does not list", ce.name)
			}
		}
		f := &a.p.Files[i]
		if ce.index < 0 && ce.mode&ModeTypeMask != f.Mode&ModeTypeMask {
			return Entry{}, unusable("payload: %s: type %#o, header says %#o", f.Path, ce.mode&ModeTypeMask, f.Mode&ModeTypeMask)
		}
		if a.seen[i] {
			return Entry{}, unusable("payload has %s twice", f.Path)
		}
		a.seen[i] = true
		if f.IsGhost() {
			// rpm before 4.11 sometimes put %ghost files in the payload;
			// rpm skips them, and so does an install.
			continue
		}
		e := Entry{Index: i, File: f}
		a.cur, a.checked = i, true
		switch {
		case f.IsDir():
		case f.IsSymlink():
			if err := a.checkTarget(f, ce.size); err != nil {
				return Entry{}, err
			}
		default:
			if len(f.Links) > 1 && ce.size == 0 && f.Size > 0 {
				break // rpm writes a hard link set's content with one of its names
			}
			if ce.size != f.Size {
				return Entry{}, unusable("payload: %s: %d bytes, header says %d", f.Path, ce.size, f.Size)
			}
			if len(f.Links) > 1 {
				if a.setContent[f.Links[0]] {
					a.checked = false // a second copy: checked, not handed out
					if err := a.finishEntry(); err != nil {
						return Entry{}, err
					}
					a.checked = true
					break
				}
				a.setContent[f.Links[0]] = true
			}
			e.Content = true
			a.h, a.checked = a.p.DigestAlgo.New(), false
		}
		return e, nil
	}
}

// checkTarget reads a symlink's target from the payload and compares it
// with the header's.
func (a *Archive) checkTarget(f *File, size int64) error {
	if size != int64(len(f.LinkTo)) {
		return unusable("payload: %s: link target differs from the header", f.Path)
	}
	target := make([]byte, size)
	if _, err := io.ReadFull(a.cr, target); err != nil {
		return unusable("payload: %s: %w", f.Path, truncated(err))
	}
	if string(target) != f.LinkTo {
		return unusable("payload: %s: link target differs from the header", f.Path)
	}
	return nil
}

// finishEntry reads what is left of the current entry's content and
// checks its digest.
func (a *Archive) finishEntry() error {
	if a.checked {
		return nil
	}
	if a.h == nil {
		a.h = a.p.DigestAlgo.New()
	}
	if _, err := io.Copy(a.h, a.cr); err != nil {
		return unusable("payload: %s: %w", a.p.Files[a.cur].Path, truncated(err))
	}
	return a.checkDigest()
}

func (a *Archive) checkDigest() error {
	a.checked = true
	f := &a.p.Files[a.cur]
	got := hex.EncodeToString(a.h.Sum(nil))
	a.h = nil
	if f.Digest == "" || got == f.Digest {
		return nil
	}
	if f.Size == 0 && a.p.DigestAlgo == MD5 && strings.Trim(f.Digest, "0") == "" {
		return nil // old packages gave empty files a digest of zeros, as rpm knows
	}
	return unusable("payload: %s: digest mismatch: header says %s, content is %s", f.Path, f.Digest, got)
}

// finish checks, at the trailer, that every file came.
func (a *Archive) finish() error {
	for i := range a.p.Files {
		f := &a.p.Files[i]
		if f.IsGhost() {
			continue
		}
		if !a.seen[i] {
			return unusable("payload lacks %s (truncated or inconsistent archive)", f.Path)
		}
		if len(f.Links) > 1 && f.Size > 0 && !a.setContent[f.Links[0]] {
			return unusable("payload has no content for %s", f.Path)
		}
	}
	return io.EOF
}

// Read reads the content of the current entry. At its end it returns
// io.EOF when the content has the header's digest, an error matching
// ErrUnusable when not.
func (a *Archive) Read(b []byte) (int, error) {
	if a.checked {
		return 0, io.EOF
	}
	n, err := a.cr.Read(b)
	a.h.Write(b[:n])
	if err == io.EOF {
		return n, a.endOfContent()
	}
	if err != nil {
		a.err = unusable("payload: %s: %w", a.p.Files[a.cur].Path, truncated(err))
		return n, a.err
	}
	return n, nil
}

// WriteTo writes the content of the current entry to w (io.Copy uses it,
// saving a copy per block), and fails when it does not have the header's
// digest.
func (a *Archive) WriteTo(w io.Writer) (int64, error) {
	if a.checked {
		return 0, nil
	}
	n, err := a.cr.WriteTo(hashingWriter{w: w, h: a.h})
	if err != nil {
		var we writeError
		if errors.As(err, &we) {
			return n, we.err // the destination's, not the package's
		}
		a.err = unusable("payload: %s: %w", a.p.Files[a.cur].Path, truncated(err))
		return n, a.err
	}
	if err := a.endOfContent(); err != io.EOF {
		return n, err
	}
	return n, nil
}

func (a *Archive) endOfContent() error {
	if err := a.checkDigest(); err != nil {
		a.err = err
		return err
	}
	return io.EOF
}

// hashingWriter hashes what it writes; an error of the destination comes
// back as a writeError, to tell it from the archive's.
type hashingWriter struct {
	w io.Writer
	h hash.Hash
}

type writeError struct{ err error }

func (e writeError) Error() string { return e.err.Error() }

func (hw hashingWriter) Write(b []byte) (int, error) {
	hw.h.Write(b)
	n, err := hw.w.Write(b)
	if err != nil {
		return n, writeError{err}
	}
	return n, nil
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
