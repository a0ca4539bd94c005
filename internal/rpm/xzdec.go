package rpm

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"hash/crc64"
	"io"
	"slices"
)

// The xz container around LZMA2 (the .xz file format, 1.2.1): stream
// header, blocks, index, footer, and more streams after stream padding.
// Each block's check (CRC32, CRC64 or SHA-256 of its data), its sizes and
// the index are verified. Blocks whose filters are anything but LZMA2
// alone (a BCJ filter, say: rpmbuild writes none) are refused with
// errXZFilters, for a caller to decode them another way.

var (
	errXZ        = errors.New("corrupt xz data")
	errXZFilters = errors.New("xz block filters other than LZMA2")
	crc64Table   = crc64.MakeTable(crc64.ECMA)
)

// xzMaxDict bounds the dictionary a block may claim: more is refused, as
// rpm's liblzma decoder refuses what its memory limit does not allow.
const xzMaxDict = 1 << 28

// xzReader decodes an xz stream read from r.
type xzReader struct {
	r   *bytesReader
	err error
	// noCheck skips computing the blocks' checks (they are still read):
	// for data whose digest is checked otherwise.
	noCheck bool

	checkType byte
	flags     [2]byte
	check     hash.Hash
	records   []xzRecord // of the stream so far, for its index

	block     *lzma2Decoder
	blockIn   int64 // compressed bytes of the block so far
	blockOut  int64 // uncompressed bytes of the block so far
	wantIn    int64 // block header sizes, -1 when absent
	wantOut   int64
	headerLen int64
	chunk     []byte // one chunk's packed bytes, and lzmaPad more
}

type xzRecord struct{ unpadded, uncompressed int64 }

// bytesReader counts what it reads.
type bytesReader struct {
	r io.Reader
	n int64
}

func (b *bytesReader) full(p []byte) error {
	n, err := io.ReadFull(b.r, p)
	b.n += int64(n)
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return fmt.Errorf("%w: truncated", errXZ)
	}
	return err
}

func newXZReader(r io.Reader) (*xzReader, error) {
	z := &xzReader{r: &bytesReader{r: r}, chunk: make([]byte, 1<<16+lzmaPad)}
	if err := z.streamHeader(); err != nil {
		return nil, err
	}
	return z, nil
}

// streamHeader reads the 12 bytes that open a stream.
func (z *xzReader) streamHeader() error {
	var h [12]byte
	if err := z.r.full(h[:]); err != nil {
		return err
	}
	if !bytes.Equal(h[:6], xzMagic) || crc32.ChecksumIEEE(h[6:8]) != binary.LittleEndian.Uint32(h[8:]) ||
		h[6] != 0 || h[7]&0xf0 != 0 {
		return fmt.Errorf("%w: bad stream header", errXZ)
	}
	z.flags = [2]byte{h[6], h[7]}
	z.checkType = h[7]
	if xzCheckSize(z.checkType) < 0 {
		return fmt.Errorf("%w: unsupported check %d", errXZ, z.checkType)
	}
	z.records = z.records[:0]
	return nil
}

func (z *xzReader) newCheck() hash.Hash {
	switch z.checkType {
	case 1:
		return crc32.NewIEEE()
	case 4:
		return crc64.New(crc64Table)
	case 10:
		return sha256.New()
	}
	return nil // none, or one whose bytes are only skipped
}

// Read decodes into p.
func (z *xzReader) Read(p []byte) (int, error) {
	for z.err == nil {
		if b := z.block; b != nil && b.start < b.pos {
			n := copy(p, b.win[b.start:b.pos])
			b.start += n
			return n, nil
		}
		z.err = z.next()
	}
	return 0, z.err
}

// next decodes the next LZMA2 chunk, or reads what lies between blocks.
func (z *xzReader) next() error {
	if z.block == nil {
		return z.blockHeader()
	}
	var ctrl [1]byte
	if err := z.r.full(ctrl[:]); err != nil {
		return err
	}
	z.blockIn++
	d := z.block
	if ctrl[0] == 0x00 {
		return z.blockEnd()
	}
	if err := d.control(ctrl[0]); err != nil {
		return err
	}
	var n int // bytes the chunk decodes to
	if ctrl[0] < 0x80 {
		var size [2]byte
		if err := z.r.full(size[:]); err != nil {
			return err
		}
		n = int(binary.BigEndian.Uint16(size[:])) + 1
		if err := z.r.full(z.chunk[:n]); err != nil {
			return err
		}
		z.blockIn += 2 + int64(n)
		d.uncompressed(z.chunk[:n])
	} else {
		var h [5]byte
		hn := 4
		if ctrl[0] >= 0xC0 {
			hn = 5
		}
		if err := z.r.full(h[:hn]); err != nil {
			return err
		}
		unpacked := int(ctrl[0]&0x1F)<<16 + int(binary.BigEndian.Uint16(h[0:2])) + 1
		packed := int(binary.BigEndian.Uint16(h[2:4])) + 1
		if hn == 5 {
			if err := d.setProps(h[4]); err != nil {
				return err
			}
		}
		if err := z.r.full(z.chunk[:packed]); err != nil {
			return err
		}
		z.blockIn += int64(hn + packed)
		if err := d.lzma(z.chunk, packed, unpacked); err != nil {
			return err
		}
		n = unpacked
	}
	z.blockOut += int64(n)
	if z.check != nil {
		z.check.Write(d.win[d.pos-n : d.pos])
	}
	if z.wantOut >= 0 && z.blockOut > z.wantOut || z.wantIn >= 0 && z.blockIn > z.wantIn {
		return fmt.Errorf("%w: block larger than its header says", errXZ)
	}
	return nil
}

// blockHeader reads a block header, or, where the index starts, the
// index, the stream footer and what may follow: io.EOF at the end.
func (z *xzReader) blockHeader() error {
	var first [1]byte
	if err := z.r.full(first[:]); err != nil {
		return err
	}
	if first[0] == 0 {
		return z.index()
	}
	size := (int(first[0]) + 1) * 4
	h := make([]byte, size)
	h[0] = first[0]
	if err := z.r.full(h[1:]); err != nil {
		return err
	}
	if crc32.ChecksumIEEE(h[:size-4]) != binary.LittleEndian.Uint32(h[size-4:]) {
		return fmt.Errorf("%w: bad block header", errXZ)
	}
	flags := h[1]
	if flags&0x3c != 0 {
		return fmt.Errorf("%w: bad block flags", errXZ)
	}
	rd := bytes.NewReader(h[2 : size-4])
	z.wantIn, z.wantOut = -1, -1
	var err error
	if flags&0x40 != 0 {
		if z.wantIn, err = xzVarint(rd); err != nil || z.wantIn == 0 {
			return fmt.Errorf("%w: bad block header", errXZ)
		}
	}
	if flags&0x80 != 0 {
		if z.wantOut, err = xzVarint(rd); err != nil {
			return fmt.Errorf("%w: bad block header", errXZ)
		}
	}
	filters := int(flags&3) + 1
	id, err1 := xzVarint(rd)
	propsLen, err2 := xzVarint(rd)
	if err1 != nil || err2 != nil {
		return fmt.Errorf("%w: bad block header", errXZ)
	}
	if filters != 1 || id != 0x21 || propsLen != 1 {
		return errXZFilters
	}
	props, err := rd.ReadByte()
	if err != nil || props > 40 {
		return fmt.Errorf("%w: bad LZMA2 dictionary size", errXZ)
	}
	dict := int64(0xFFFFFFFF)
	if props < 40 {
		dict = int64(2|props&1) << (props/2 + 11)
	}
	if dict > xzMaxDict {
		return fmt.Errorf("%w: dictionary of %d bytes is more than the %d allowed", errXZ, dict, xzMaxDict)
	}
	for rd.Len() > 0 {
		if b, _ := rd.ReadByte(); b != 0 {
			return fmt.Errorf("%w: bad block header padding", errXZ)
		}
	}
	z.block = newLZMA2(int(dict))
	z.headerLen = int64(size)
	z.blockIn, z.blockOut = 0, 0
	z.check = nil
	if !z.noCheck {
		z.check = z.newCheck()
	}
	return nil
}

// blockEnd checks a block's sizes, padding and check.
func (z *xzReader) blockEnd() error {
	if z.wantIn >= 0 && z.blockIn != z.wantIn || z.wantOut >= 0 && z.blockOut != z.wantOut {
		return fmt.Errorf("%w: block sizes differ from its header", errXZ)
	}
	pad := make([]byte, (4-z.blockIn%4)%4)
	if err := z.r.full(pad); err != nil {
		return err
	}
	if !bytes.Equal(pad, make([]byte, len(pad))) {
		return fmt.Errorf("%w: bad block padding", errXZ)
	}
	check := make([]byte, xzCheckSize(z.checkType))
	if err := z.r.full(check); err != nil {
		return err
	}
	if z.check != nil {
		sum := z.check.Sum(nil)
		if z.checkType != 10 {
			slices.Reverse(sum) // CRC32 and CRC64 are stored little-endian
		}
		if !bytes.Equal(sum, check) {
			return fmt.Errorf("%w: block check mismatch", errXZ)
		}
	}
	z.records = append(z.records, xzRecord{unpadded: z.headerLen + z.blockIn + int64(len(check)), uncompressed: z.blockOut})
	z.block = nil
	return nil
}

// index reads and checks the index (its indicator byte read), the stream
// footer, and the stream padding and streams that may follow.
func (z *xzReader) index() error {
	start := z.r.n - 1
	crc := crc32.NewIEEE()
	crc.Write([]byte{0})
	tee := &bytesReader{r: io.TeeReader(z.r.r, crc)}
	byteReader := &xzByteReader{r: tee}
	n, err := xzVarint(byteReader)
	if err != nil || n != int64(len(z.records)) {
		return fmt.Errorf("%w: index does not list the blocks", errXZ)
	}
	for _, rec := range z.records {
		unpadded, err1 := xzVarint(byteReader)
		uncompressed, err2 := xzVarint(byteReader)
		if err1 != nil || err2 != nil || unpadded != rec.unpadded || uncompressed != rec.uncompressed {
			return fmt.Errorf("%w: index does not list the blocks", errXZ)
		}
	}
	pad := make([]byte, (4-(1+tee.n)%4)%4)
	if err := tee.full(pad); err != nil || !bytes.Equal(pad, make([]byte, len(pad))) {
		return fmt.Errorf("%w: bad index padding", errXZ)
	}
	z.r.n += tee.n
	var sum [4]byte
	if err := z.r.full(sum[:]); err != nil {
		return err
	}
	if crc.Sum32() != binary.LittleEndian.Uint32(sum[:]) {
		return fmt.Errorf("%w: index check mismatch", errXZ)
	}
	indexSize := z.r.n - start
	var f [12]byte
	if err := z.r.full(f[:]); err != nil {
		return err
	}
	if crc32.ChecksumIEEE(f[4:10]) != binary.LittleEndian.Uint32(f[:4]) || !bytes.Equal(f[10:], []byte("YZ")) ||
		(int64(binary.LittleEndian.Uint32(f[4:8]))+1)*4 != indexSize || f[8] != z.flags[0] || f[9] != z.flags[1] {
		return fmt.Errorf("%w: bad stream footer", errXZ)
	}
	// Stream padding (zeros, in fours), then the end or another stream.
	for {
		var b [4]byte
		n, err := io.ReadFull(z.r.r, b[:])
		z.r.n += int64(n)
		switch {
		case n == 0 && err == io.EOF:
			return io.EOF
		case err != nil:
			return fmt.Errorf("%w: truncated", errXZ)
		case b == [4]byte{}:
			continue
		}
		z.r.r = io.MultiReader(bytes.NewReader(b[:]), z.r.r)
		z.r.n -= 4
		return z.streamHeader()
	}
}

// xzByteReader reads single bytes for the varints of the index.
type xzByteReader struct{ r *bytesReader }

func (b *xzByteReader) ReadByte() (byte, error) {
	var c [1]byte
	err := b.r.full(c[:])
	return c[0], err
}

// xzVarint reads a multibyte integer of the xz format: 7 bits a byte, at
// most 9 bytes, no needless zero byte at the end.
func xzVarint(r io.ByteReader) (int64, error) {
	var v uint64
	for i := 0; i < 9; i++ {
		b, err := r.ReadByte()
		if err != nil {
			return 0, err
		}
		v |= uint64(b&0x7f) << (7 * i)
		if b&0x80 == 0 {
			if b == 0 && i > 0 {
				return 0, errXZ
			}
			return int64(v), nil
		}
	}
	return 0, errXZ
}
