package rpm

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"runtime"
)

// Parallel decoding of multi-block xz payloads.
//
// LZMA2 cannot be decoded in parallel within a block, but the blocks of
// an xz stream are independent, and the stream's index at its end gives
// each block's position and sizes. rpmbuild writes several blocks when it
// compresses with threads (%_binary_payload w2T.xzdio, the default of
// several distributions): such payloads are decoded here one block per
// core, each block wrapped in a stream of its own so that the decoder
// checks it (block check, index, footer) as usual. A single-block stream,
// or anything this code does not recognise, is decoded sequentially.

// xzBlock is one block of an xz stream, from the stream's index.
type xzBlock struct {
	off          int64 // from the start of the stream
	unpadded     int64 // header, compressed data and check, without padding
	uncompressed int64
}

// Limits: a block larger than this is decoded sequentially (its output
// is held in memory while decoding in parallel).
const (
	xzMaxParallelBlock = 64 << 20
	xzMaxBlocks        = 1 << 20
)

var xzMagic = []byte{0xfd, '7', 'z', 'X', 'Z', 0}

// xzIndex reads the index of the single xz stream r holds (size bytes)
// and returns its blocks and its 12-byte stream header. It returns no
// blocks, and no error, for a stream it does not handle: concatenated
// streams, stream padding, an index it cannot read.
func xzIndex(r io.ReaderAt, size int64) ([]xzBlock, []byte) {
	if size < 24 {
		return nil, nil
	}
	header := make([]byte, 12)
	footer := make([]byte, 12)
	if _, err := r.ReadAt(header, 0); err != nil {
		return nil, nil
	}
	if _, err := r.ReadAt(footer, size-12); err != nil {
		return nil, nil
	}
	if !bytes.Equal(header[:6], xzMagic) || !bytes.Equal(footer[10:], []byte("YZ")) || !bytes.Equal(header[6:8], footer[8:10]) {
		return nil, nil
	}
	if crc32.ChecksumIEEE(footer[4:10]) != binary.LittleEndian.Uint32(footer[:4]) {
		return nil, nil
	}
	indexSize := (int64(binary.LittleEndian.Uint32(footer[4:8])) + 1) * 4
	if indexSize > size-24 || indexSize > 64<<20 {
		return nil, nil
	}
	index := make([]byte, indexSize)
	if _, err := r.ReadAt(index, size-12-indexSize); err != nil {
		return nil, nil
	}
	if index[0] != 0 || crc32.ChecksumIEEE(index[:len(index)-4]) != binary.LittleEndian.Uint32(index[len(index)-4:]) {
		return nil, nil
	}
	rd := bytes.NewReader(index[1 : len(index)-4])
	n, err := binary.ReadUvarint(rd)
	if err != nil || n < 2 || n > xzMaxBlocks {
		return nil, nil
	}
	checkSize := xzCheckSize(header[7])
	if checkSize < 0 {
		return nil, nil
	}
	blocks := make([]xzBlock, 0, n)
	off := int64(12)
	for range n {
		unpadded, err1 := binary.ReadUvarint(rd)
		uncompressed, err2 := binary.ReadUvarint(rd)
		if err1 != nil || err2 != nil || unpadded < uint64(5+checkSize) || unpadded > uint64(size) || uncompressed > xzMaxParallelBlock {
			return nil, nil
		}
		b := xzBlock{off: off, unpadded: int64(unpadded), uncompressed: int64(uncompressed)}
		blocks = append(blocks, b)
		off += (b.unpadded + 3) &^ 3
	}
	if off != size-12-indexSize {
		return nil, nil // the blocks do not fill the stream: not ours to guess
	}
	return blocks, header
}

// xzCheckSize is the size of a block check of the stream flags' type.
func xzCheckSize(flags byte) int {
	switch flags & 0x0f {
	case 0:
		return 0
	case 1:
		return 4
	case 4:
		return 8
	case 10:
		return 32
	}
	return -1
}

// xzSingle wraps one block in a stream of its own: the original stream
// header, the block as it is, an index of one record, a footer.
func xzSingle(header, block []byte, b xzBlock) []byte {
	var idx []byte
	idx = append(idx, 0)
	idx = binary.AppendUvarint(idx, 1)
	idx = binary.AppendUvarint(idx, uint64(b.unpadded))
	idx = binary.AppendUvarint(idx, uint64(b.uncompressed))
	for len(idx)%4 != 0 {
		idx = append(idx, 0)
	}
	idx = binary.LittleEndian.AppendUint32(idx, crc32.ChecksumIEEE(idx))
	footer := make([]byte, 12)
	binary.LittleEndian.PutUint32(footer[4:8], uint32(len(idx)/4-1))
	copy(footer[8:10], header[6:8])
	binary.LittleEndian.PutUint32(footer[:4], crc32.ChecksumIEEE(footer[4:10]))
	copy(footer[10:], "YZ")
	out := make([]byte, 0, len(header)+len(block)+len(idx)+len(footer))
	out = append(append(append(append(out, header...), block...), idx...), footer...)
	return out
}

// parallelXZ decodes the blocks of a stream on every core and returns
// their output in order.
type parallelXZ struct {
	results []chan xzResult
	slots   chan struct{} // blocks decoded or being decoded, not yet read
	next    int
	cur     []byte
	err     error
	stop    chan struct{}
}

type xzResult struct {
	data []byte
	err  error
}

// newParallelXZ starts decoding the blocks of the stream r holds.
func newParallelXZ(r io.ReaderAt, header []byte, blocks []xzBlock) *parallelXZ {
	workers := runtime.GOMAXPROCS(0)
	z := &parallelXZ{
		results: make([]chan xzResult, len(blocks)),
		slots:   make(chan struct{}, workers+1),
		stop:    make(chan struct{}),
	}
	for i := range z.results {
		z.results[i] = make(chan xzResult, 1)
	}
	go func() {
		for i, b := range blocks {
			select {
			case z.slots <- struct{}{}:
			case <-z.stop:
				return
			}
			go func() { z.results[i] <- decodeXZBlock(r, header, b) }()
		}
	}()
	return z
}

func decodeXZBlock(r io.ReaderAt, header []byte, b xzBlock) xzResult {
	block := make([]byte, (b.unpadded+3)&^3)
	if _, err := r.ReadAt(block, b.off); err != nil {
		return xzResult{err: err}
	}
	d, err := newXZ(bufio.NewReader(bytes.NewReader(xzSingle(header, block, b))))
	if err != nil {
		return xzResult{err: err}
	}
	out := make([]byte, b.uncompressed)
	if _, err := io.ReadFull(d, out); err != nil {
		return xzResult{err: err}
	}
	// Reading on to the end makes the decoder check the block, the index
	// and the footer.
	if n, err := d.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		return xzResult{err: errors.New("xz block longer than its index says")}
	}
	return xzResult{data: out}
}

func (z *parallelXZ) Read(p []byte) (int, error) {
	for len(z.cur) == 0 {
		if z.err != nil {
			return 0, z.err
		}
		if z.next == len(z.results) {
			z.err = io.EOF
			return 0, z.err
		}
		res := <-z.results[z.next]
		<-z.slots
		z.next++
		if res.err != nil {
			z.err = res.err
			return 0, z.err
		}
		z.cur = res.data
	}
	n := copy(p, z.cur)
	z.cur = z.cur[n:]
	return n, nil
}

// Close stops starting new blocks; those under way finish on their own.
func (z *parallelXZ) Close() error {
	select {
	case <-z.stop:
	default:
		close(z.stop)
	}
	return nil
}
