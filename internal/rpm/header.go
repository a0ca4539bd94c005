package rpm

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"path"
	"strings"

	rpmhdr "github.com/cavaliergopher/rpm"
)

// Tags of the signature header (rpmtag.h, RPMSIGTAG_*).
const (
	sigDSA         = 267
	sigRSA         = 268
	sigSHA1        = 269
	sigLongSize    = 270
	sigSHA256      = 273
	sigOpenPGP     = 278
	sigSize        = 1000
	sigPGP         = 1002
	sigMD5         = 1004
	sigGPG         = 1005
	sigPGP5        = 1006
	sigPayloadSize = 1007 // rpmpack writes the sum of file sizes here, not the archive size: unused
)

// Tags of the main header (rpmtag.h, RPMTAG_*).
const (
	tagName              = 1000
	tagVersion           = 1001
	tagRelease           = 1002
	tagEpoch             = 1003
	tagArch              = 1022
	tagPreIn             = 1023
	tagPostIn            = 1024
	tagOldFilenames      = 1027
	tagFileSizes         = 1028
	tagFileModes         = 1030
	tagFileMTimes        = 1034
	tagFileDigests       = 1035
	tagFileLinkTos       = 1036
	tagFileFlags         = 1037
	tagFileUserName      = 1039
	tagFileGroupName     = 1040
	tagPreInProg         = 1085
	tagPostInProg        = 1086
	tagFileDevices       = 1095
	tagFileInodes        = 1096
	tagPrefixes          = 1098
	tagDirIndexes        = 1116
	tagBaseNames         = 1117
	tagDirNames          = 1118
	tagSourceRPM         = 1044
	tagPayloadFormat     = 1124
	tagPayloadCompressor = 1125
	tagLongFileSizes     = 5008
	tagFileCaps          = 5010
	tagFileDigestAlgo    = 5011
	tagPayloadDigest     = 5092
	tagPayloadDigestAlgo = 5093
)

// Limits on what a package may claim, so that a hostile header cannot make
// the reader allocate or loop without bound. rpm's own limits are of the
// same order (hdrchkTags, hdrchkData).
const (
	maxHeaderTags = 0xffff
	maxHeaderData = 64 << 20
)

var headerMagic = []byte{0x8e, 0xad, 0xe8, 0x01}

// readHeaderRegion reads one header structure (intro, index, store) at off
// and checks that every index entry lies inside its store, so that no
// decoder can be led out of bounds or into a huge allocation.
func readHeaderRegion(f io.ReaderAt, off, size int64, what string) ([]byte, error) {
	var intro [16]byte
	if _, err := f.ReadAt(intro[:], off); err != nil {
		return nil, unusable("read %s: %w", what, short(err))
	}
	if !bytes.Equal(intro[:4], headerMagic) {
		return nil, unusable("%s: bad magic", what)
	}
	n := int64(binary.BigEndian.Uint32(intro[8:12]))
	dataLen := int64(binary.BigEndian.Uint32(intro[12:16]))
	if n < 1 || n > maxHeaderTags {
		return nil, unusable("%s: %d tags is out of range", what, n)
	}
	if dataLen > maxHeaderData {
		return nil, unusable("%s: %d bytes of data is out of range", what, dataLen)
	}
	total := 16 + 16*n + dataLen
	if off+total > size {
		return nil, unusable("read %s: file truncated", what)
	}
	raw := make([]byte, total)
	if _, err := f.ReadAt(raw, off); err != nil {
		return nil, unusable("read %s: %w", what, short(err))
	}
	if err := checkIndex(raw, int(n), int(dataLen)); err != nil {
		return nil, unusable("%s: %w", what, err)
	}
	return raw, nil
}

// checkIndex validates every index entry of a header region against its
// data store.
func checkIndex(raw []byte, n, dataLen int) error {
	store := raw[16+16*n:]
	for i := 0; i < n; i++ {
		e := raw[16+16*i : 32+16*i]
		tag := binary.BigEndian.Uint32(e[0:4])
		typ := binary.BigEndian.Uint32(e[4:8])
		off := int64(binary.BigEndian.Uint32(e[8:12]))
		count := int64(binary.BigEndian.Uint32(e[12:16]))
		if count < 1 || off >= int64(dataLen) {
			return fmt.Errorf("tag %d: entry out of range", tag)
		}
		var width int64
		switch rpmhdr.TagType(typ) {
		case rpmhdr.TagTypeNull:
			continue
		case rpmhdr.TagTypeChar, rpmhdr.TagTypeInt8, rpmhdr.TagTypeBinary:
			width = 1
		case rpmhdr.TagTypeInt16:
			width = 2
		case rpmhdr.TagTypeInt32:
			width = 4
		case rpmhdr.TagTypeInt64:
			width = 8
		case rpmhdr.TagTypeString, rpmhdr.TagTypeStringArray, rpmhdr.TagTypeI18NString:
			if err := checkStrings(store, tag, off, count); err != nil {
				return err
			}
			continue
		default:
			return fmt.Errorf("tag %d: unknown type %d", tag, typ)
		}
		if off+count*width > int64(dataLen) {
			return fmt.Errorf("tag %d: values out of range", tag)
		}
	}
	return nil
}

// checkStrings checks that count NUL-terminated strings start at off.
func checkStrings(store []byte, tag uint32, off, count int64) error {
	if count > int64(len(store))-off {
		return fmt.Errorf("tag %d: strings out of range", tag)
	}
	for s := int64(0); s < count; s++ {
		if off >= int64(len(store)) {
			return fmt.Errorf("tag %d: strings out of range", tag)
		}
		j := bytes.IndexByte(store[off:], 0)
		if j < 0 {
			return fmt.Errorf("tag %d: unterminated string", tag)
		}
		off += int64(j) + 1
	}
	return nil
}

// str returns the first string of a tag, or "".
func str(h *rpmhdr.Header, id int) string {
	if s := h.GetTag(id).StringSlice(); len(s) > 0 {
		return s[0]
	}
	return ""
}

// ints returns the integer values of a tag whatever their width.
func ints(h *rpmhdr.Header, id int) []int64 { return h.GetTag(id).Int64Slice() }

func firstInt(h *rpmhdr.Header, ids ...int) int64 {
	for _, id := range ids {
		if v := ints(h, id); len(v) == 1 {
			return v[0]
		}
	}
	return -1
}

// decode fills the package fields from the decoded tags and validates the
// file list.
func (p *Package) decode() error {
	h := p.tags
	p.Name, p.Version, p.Release, p.Arch = str(h, tagName), str(h, tagVersion), str(h, tagRelease), str(h, tagArch)
	if p.Name == "" || p.Version == "" || p.Release == "" {
		return unusable("header: no name, version or release")
	}
	if h.GetTag(tagSourceRPM) == nil {
		// How rpm tells (headerIsSource): a binary package names the
		// source package it was built from.
		return unusable("%s-%s-%s is a source package (.src.rpm): it holds sources to build the package from, not files to install; install the binary package",
			p.Name, p.Version, p.Release)
	}
	if f := str(h, tagPayloadFormat); f != "" && f != "cpio" {
		return unusable("unsupported payload format %q", f)
	}
	p.Compressor = str(h, tagPayloadCompressor)
	p.Prefixes = h.GetTag(tagPrefixes).StringSlice()
	for i, pre := range p.Prefixes {
		c := path.Clean(pre)
		if !path.IsAbs(c) || strings.ContainsRune(c, 0) {
			return unusable("header: prefix %q is not an absolute path", pre)
		}
		p.Prefixes[i] = c
	}
	p.Pre = Scriptlet{Body: str(h, tagPreIn), Prog: h.GetTag(tagPreInProg).StringSlice()}
	p.Post = Scriptlet{Body: str(h, tagPostIn), Prog: h.GetTag(tagPostInProg).StringSlice()}

	for _, t := range []struct {
		id   int
		name string
	}{{sigRSA, "RSA"}, {sigDSA, "DSA"}, {sigPGP, "PGP"}, {sigGPG, "GPG"}, {sigPGP5, "PGP5"}, {sigOpenPGP, "OpenPGP"}} {
		if p.sigTags.GetTag(t.id) != nil {
			p.Signatures = append(p.Signatures, t.name)
		}
	}

	p.DigestAlgo = MD5 // rpm's default when the header does not say
	if v := ints(h, tagFileDigestAlgo); len(v) > 0 {
		// rpm writes one value; rpmpack one per file, all the same.
		p.DigestAlgo = Hash(v[0])
		for _, a := range v {
			if a != v[0] {
				return unusable("header: mixed file digest algorithms")
			}
		}
	}
	if p.DigestAlgo.New() == nil {
		return unusable("header: unsupported file digest algorithm %d", p.DigestAlgo)
	}
	return p.decodeFiles()
}
