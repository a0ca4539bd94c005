// Package rpm reads RPM packages and writes nothing: the lead, the
// signature and main headers with every digest they carry, and the
// payload, decompressed by maintained libraries (the blocks of a
// multi-block xz stream several at once, within a fixed memory budget)
// and read as a cpio archive in both of rpm's formats, each entry
// checked against the header before anyone uses it.
//
// It is the pure half of the installer, kept apart so that it can be
// fuzzed alone: every byte of a package is hostile until checked, every
// size and count a package controls is bounded before it is used, and
// every refusal matches ErrUnusable.
package rpm

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	rpmhdr "github.com/cavaliergopher/rpm"
)

// ErrUnusable is matched (errors.Is) by every error that says the package
// itself cannot be installed: not an RPM, corrupt, truncated, tampered,
// unsafe or unsupported.
var ErrUnusable = errors.New("rpm unusable")

// ErrDecoderPanic is matched by the error of a payload whose decoder
// panicked. A panic is a bug (of the decoder, or of ours), not evidence
// that the package is bad: such an error does not match ErrUnusable,
// even where it is wrapped as the payload's error.
var ErrDecoderPanic = errors.New("decoder panicked")

type unusableError struct{ err error }

func (e *unusableError) Error() string { return e.err.Error() }
func (e *unusableError) Unwrap() error { return e.err }
func (e *unusableError) Is(target error) bool {
	return target == ErrUnusable && !errors.Is(e.err, ErrDecoderPanic)
}

// Unusable makes an error that matches ErrUnusable, for a refusal of the
// package that is an installer's own (a path that would be unsafe after
// relocation, say).
func Unusable(format string, a ...any) error {
	return &unusableError{fmt.Errorf(format, a...)}
}

var unusable = Unusable

// Package is what an installer needs from an RPM, read from its headers
// and checked for structure and safety (see Read).
type Package struct {
	// Name, Version, Release and Arch identify the package.
	Name, Version, Release, Arch string
	// Compressor names the payload compression as the header does:
	// gzip, xz, lzma, zstd, bzip2, none, or "" (gzip, or none).
	Compressor string
	// Prefixes are the relocatable prefixes, absolute and clean.
	Prefixes []string
	// Files are the package's files in header order, which is the order
	// rpmbuild writes the payload in.
	Files []File
	// DigestAlgo is the algorithm of the file digests.
	DigestAlgo Hash
	// Pre and Post are the %pre and %post scriptlets.
	Pre, Post Scriptlet
	// Signatures lists the kinds of signature present (never checked
	// here: there is no keyring).
	Signatures []string

	// HeaderOffset is where the main header starts, PayloadOffset where
	// the compressed payload starts, Size the file's size.
	HeaderOffset, PayloadOffset, Size int64

	// sig and hdr are the signature and main header regions, raw, from
	// their 16-byte intro to their end: the digests are computed over them.
	sig, hdr []byte
	sigTags  *rpmhdr.Header
	tags     *rpmhdr.Header
	// archiveMax is the most bytes the uncompressed payload can have,
	// from the file list: a larger payload is a decompression bomb.
	archiveMax int64
}

// Scriptlet is %pre or %post: its body and interpreter (with arguments).
type Scriptlet struct {
	Body string
	Prog []string
}

// NEVRA names the package as rpm does in its messages.
func (p *Package) NEVRA() string {
	return p.Name + "-" + p.Version + "-" + p.Release + "." + p.Arch
}

// leadSize is the size of the lead, the first part of every RPM file.
const leadSize = 96

var leadMagic = []byte{0xed, 0xab, 0xee, 0xdb}

// Read reads the lead and both headers of the RPM in r (size bytes) and
// checks their structure: every index entry inside its store, the file
// list consistent, every path absolute and clean, every file of a
// supported type. It reads nothing of the payload and checks no digest:
// Verify does.
func Read(r io.ReaderAt, size int64) (*Package, error) {
	var lead [leadSize]byte
	n, err := r.ReadAt(lead[:], 0)
	if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
		return nil, unusable("read lead: %w", err)
	}
	// A file too short for the lead is no more an RPM than one without
	// its magic: a text file given by mistake is told as such, whatever
	// its length.
	if !bytes.Equal(lead[:4], leadMagic) {
		return nil, unusable("not an rpm file (bad lead magic)")
	}
	if n < leadSize {
		return nil, unusable("not an rpm file (%d bytes, shorter than the %d-byte lead)", n, leadSize)
	}
	if lead[4] != 3 && lead[4] != 4 {
		return nil, unusable("unsupported rpm format version %d", lead[4])
	}
	sig, err := readHeaderRegion(r, leadSize, size, "signature header")
	if err != nil {
		return nil, err
	}
	hdrOff := int64(leadSize) + int64(len(sig))
	hdrOff += (8 - hdrOff%8) % 8 // the signature header is padded to 8 bytes
	hdr, err := readHeaderRegion(r, hdrOff, size, "header")
	if err != nil {
		return nil, err
	}
	p := &Package{sig: sig, hdr: hdr, HeaderOffset: hdrOff, PayloadOffset: hdrOff + int64(len(hdr)), Size: size}

	// The regions are validated: the library decodes them without reading
	// out of bounds.
	buf := make([]byte, 0, int(p.PayloadOffset))
	buf = append(buf, lead[:]...)
	buf = append(buf, sig...)
	buf = append(buf, make([]byte, hdrOff-leadSize-int64(len(sig)))...)
	buf = append(buf, hdr...)
	decoded, err := rpmhdr.Read(bytes.NewReader(buf))
	if err != nil {
		return nil, unusable("decode headers: %w", err)
	}
	p.sigTags, p.tags = &decoded.Signature, &decoded.Header
	if err := p.decode(); err != nil {
		return nil, err
	}
	return p, nil
}

// short turns the EOF of a read that hit the end of the file into a clear
// "truncated" error.
func short(err error) error {
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return fmt.Errorf("file truncated")
	}
	return err
}
