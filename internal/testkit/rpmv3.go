package testkit

import (
	"bytes"
	"crypto/md5"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/cavaliergopher/cpio"
	"github.com/klauspost/compress/gzip"
)

// V3File is one file of an old-style (v3) package.
type V3File struct {
	// Path is absolute.
	Path string
	// Mode is st_mode, type bits included (0o100644, 0o40755, 0o120777).
	Mode uint32
	// Body is the content of a regular file, or a symlink's target.
	Body string
	// MTime is the modification time, Unix seconds.
	MTime uint32
}

// BuildRPMv3 builds a package the way rpm 3 wrote them (1998-2000), which
// no rpmbuild of today can: a v3 lead; a signature header with only the
// size and MD5 of header and payload; a main header with the old-style
// file list (OLDFILENAMES, whole paths, where every later rpm writes
// directory and base names), no payload format or compressor tag, no
// header digest; and a gzip'd newc archive whose names have no leading
// "./". Files are owned by root.
func BuildRPMv3(name, version, release string, files []V3File) ([]byte, error) {
	files = append([]V3File(nil), files...)
	sort.Slice(files, func(i, j int) bool { return files[i].Path < files[j].Path })

	var payload bytes.Buffer
	z := gzip.NewWriter(&payload)
	w := cpio.NewWriter(z)
	h := &v3Header{}
	h.str(1000, name)
	h.str(1001, version)
	h.str(1002, release)
	h.str(1004, "v3 test package")
	h.str(1021, "linux")
	h.str(1022, "noarch")
	h.str(1044, fmt.Sprintf("%s-%s-%s.src.rpm", name, version, release))
	var paths, digests, links, users []string
	var sizes, mtimes, flags, inodes, devices []uint32
	var modes, rdevs []uint16
	for i, f := range files {
		body := []byte(f.Body)
		size, digest, link := uint32(len(body)), "", ""
		switch f.Mode & 0o170000 {
		case 0o100000:
			sum := md5.Sum(body)
			digest = hex.EncodeToString(sum[:])
		case 0o120000:
			link = f.Body
		case 0o40000:
			size, body = 1024, nil
		default:
			return nil, fmt.Errorf("build v3 rpm: %s: unsupported mode %o", f.Path, f.Mode)
		}
		paths, digests, links, users = append(paths, f.Path), append(digests, digest), append(links, link), append(users, "root")
		sizes, mtimes, flags = append(sizes, size), append(mtimes, f.MTime), append(flags, 0)
		inodes, devices = append(inodes, uint32(i+1)), append(devices, 1)
		modes, rdevs = append(modes, uint16(f.Mode)), append(rdevs, 0)
		hdr := &cpio.Header{Name: strings.TrimPrefix(f.Path, "/"), Mode: cpio.FileMode(f.Mode), Size: int64(len(body)),
			Links: 1, ModTime: time.Unix(int64(f.MTime), 0), Inode: int64(i + 1)}
		if err := w.WriteHeader(hdr); err != nil {
			return nil, fmt.Errorf("build v3 rpm: %w", err)
		}
		if _, err := w.Write(body); err != nil {
			return nil, fmt.Errorf("build v3 rpm: %w", err)
		}
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("build v3 rpm: %w", err)
	}
	if err := z.Close(); err != nil {
		return nil, fmt.Errorf("build v3 rpm: %w", err)
	}
	h.strs(1027, paths)
	h.int32s(1028, sizes)
	h.int16s(1030, modes)
	h.int16s(1033, rdevs)
	h.int32s(1034, mtimes)
	h.strs(1035, digests)
	h.strs(1036, links)
	h.int32s(1037, flags)
	h.strs(1039, users)
	h.strs(1040, users)
	h.int32s(1095, devices)
	h.int32s(1096, inodes)
	main := h.bytes()

	signed := append(append([]byte(nil), main...), payload.Bytes()...)
	sum := md5.Sum(signed)
	sig := &v3Header{}
	sig.int32s(1000, []uint32{uint32(len(signed))})
	sig.bin(1004, sum[:])
	sigBytes := sig.bytes()

	lead := make([]byte, 96)
	copy(lead, []byte{0xed, 0xab, 0xee, 0xdb, 3, 0})
	binary.BigEndian.PutUint16(lead[6:], 0) // binary package
	binary.BigEndian.PutUint16(lead[8:], 1)
	copy(lead[10:76], fmt.Sprintf("%s-%s-%s", name, version, release))
	binary.BigEndian.PutUint16(lead[76:], 1) // Linux
	binary.BigEndian.PutUint16(lead[78:], 5) // header-style signature
	out := append(lead, sigBytes...)
	for len(out)%8 != 0 {
		out = append(out, 0)
	}
	return append(out, signed...), nil
}

// v3Header encodes an RPM header structure: intro, index, store.
type v3Header struct {
	index []byte
	store []byte
	n     int
}

func (h *v3Header) add(tag, typ, count int, align int, data []byte) {
	for len(h.store)%align != 0 {
		h.store = append(h.store, 0)
	}
	h.index = binary.BigEndian.AppendUint32(h.index, uint32(tag))
	h.index = binary.BigEndian.AppendUint32(h.index, uint32(typ))
	h.index = binary.BigEndian.AppendUint32(h.index, uint32(len(h.store)))
	h.index = binary.BigEndian.AppendUint32(h.index, uint32(count))
	h.store = append(h.store, data...)
	h.n++
}

func (h *v3Header) str(tag int, s string) { h.add(tag, 6, 1, 1, append([]byte(s), 0)) }

func (h *v3Header) strs(tag int, s []string) {
	var b []byte
	for _, x := range s {
		b = append(append(b, x...), 0)
	}
	h.add(tag, 8, len(s), 1, b)
}

func (h *v3Header) bin(tag int, b []byte) { h.add(tag, 7, len(b), 1, b) }

func (h *v3Header) int32s(tag int, v []uint32) {
	var b []byte
	for _, x := range v {
		b = binary.BigEndian.AppendUint32(b, x)
	}
	h.add(tag, 4, len(v), 4, b)
}

func (h *v3Header) int16s(tag int, v []uint16) {
	var b []byte
	for _, x := range v {
		b = binary.BigEndian.AppendUint16(b, x)
	}
	h.add(tag, 3, len(v), 2, b)
}

func (h *v3Header) bytes() []byte {
	out := []byte{0x8e, 0xad, 0xe8, 0x01, 0, 0, 0, 0}
	out = binary.BigEndian.AppendUint32(out, uint32(h.n))
	out = binary.BigEndian.AppendUint32(out, uint32(len(h.store)))
	return append(append(out, h.index...), h.store...)
}
