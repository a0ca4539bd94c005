package rpm

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"runtime"
	"sync"

	"github.com/therootcompany/xz"
)

// Parallel decoding of multi-block xz payloads, on top of the library.
//
// LZMA2 cannot be decoded in parallel within a block, but the blocks of
// an xz stream are independent, and the stream's index at its end gives
// each block's position and sizes. rpmbuild writes several blocks when it
// compresses with threads (%_binary_payload w2T.xzdio, the default of
// several distributions): such payloads are decoded here several blocks
// at once, each block given to the library as a stream of its own (the
// original stream header, the block, an index of one record, a footer),
// so that the library checks it whole: its check, its sizes, the index.
// A single-block stream, or anything this code does not recognise, is
// decoded sequentially, by the library alone.
//
// Memory is bounded by bytes, not by cores: a block in flight holds its
// decoded data until the archive has read it, and its decoder a
// dictionary, and the blocks in flight at once hold at most
// xzParallelBudget between them, on 2 cores or 64. A stream whose blocks
// are too large for two of them to fit is decoded sequentially, which
// holds one dictionary.

// xzParallelBudget is the most the blocks of a parallel decode hold at
// once: decoded data and dictionaries.
const xzParallelBudget = 256 << 20

// xzBlock is one block of an xz stream, from the stream's index.
type xzBlock struct {
	off          int64 // from the start of the stream
	unpadded     int64 // header, compressed data and check, without padding
	uncompressed int64
	dict         int64 // the LZMA2 dictionary its header asks for
}

// xzMaxBlocks bounds the blocks of a stream decoded in parallel (each
// costs a read of its header before the decode starts).
const xzMaxBlocks = 1 << 16

var xzMagic = []byte{0xfd, '7', 'z', 'X', 'Z', 0}

// xzIndex reads the index of the single xz stream r holds (size bytes)
// and each block's header, and returns its blocks and its 12-byte stream
// header. It returns no blocks, and no error, for a stream it does not
// handle: one block, concatenated streams, stream padding, an index or
// block header it cannot read. The library decodes those sequentially,
// and says what is wrong with them.
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
	if indexSize > size-24 || indexSize > 16<<20 {
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
		if err1 != nil || err2 != nil || unpadded < uint64(5+checkSize) || unpadded > uint64(size) || uncompressed > xzParallelBudget {
			return nil, nil
		}
		b := xzBlock{off: off, unpadded: int64(unpadded), uncompressed: int64(uncompressed)}
		if b.dict = xzBlockDict(r, b.off); b.dict < 0 {
			return nil, nil
		}
		blocks = append(blocks, b)
		off += (b.unpadded + 3) &^ 3
	}
	if off != size-12-indexSize {
		return nil, nil // the blocks do not fill the stream: not ours to guess
	}
	return blocks, header
}

// xzBlockDict reads the header of the block at off and returns the
// dictionary size its LZMA2 filter asks for, or -1.
func xzBlockDict(r io.ReaderAt, off int64) int64 {
	var first [1]byte
	if _, err := r.ReadAt(first[:], off); err != nil || first[0] == 0 {
		return -1
	}
	h := make([]byte, (int(first[0])+1)*4)
	if _, err := r.ReadAt(h, off); err != nil {
		return -1
	}
	if crc32.ChecksumIEEE(h[:len(h)-4]) != binary.LittleEndian.Uint32(h[len(h)-4:]) {
		return -1
	}
	flags := h[1]
	rd := bytes.NewReader(h[2 : len(h)-4])
	for _, bit := range []byte{0x40, 0x80} { // the block's sizes, if given
		if flags&bit == 0 {
			continue
		}
		if _, err := binary.ReadUvarint(rd); err != nil {
			return -1
		}
	}
	for range int(flags&3) + 1 {
		id, err1 := binary.ReadUvarint(rd)
		n, err2 := binary.ReadUvarint(rd)
		if err1 != nil || err2 != nil || n > uint64(rd.Len()) {
			return -1
		}
		props := make([]byte, n)
		rd.Read(props)
		if id == 0x21 && n == 1 && props[0] <= 40 {
			if props[0] == 40 {
				return 1<<32 - 1
			}
			return int64(2|props[0]&1) << (props[0]/2 + 11)
		}
	}
	return -1
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

// xzTail is what follows one block in a stream of its own: an index of
// one record, and the footer.
func xzTail(header []byte, b xzBlock) []byte {
	idx := []byte{0}
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
	return append(idx, footer...)
}

// parallelXZ decodes the blocks of a stream several at once and returns
// their data in order. Each of its slots decodes every n-th block into
// one buffer, with one decoder (and so one dictionary), and waits for the
// reader to give the buffer back before it decodes its next block.
type parallelXZ struct {
	p      *Package
	r      io.ReaderAt
	header []byte
	blocks []xzBlock
	slots  []xzSlot
	next   int    // the block to read next
	cur    []byte // what is left of the block being read
	held   []byte // the buffer of the block being read
	slot   int    // the slot it belongs to, or -1
	err    error
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

type xzSlot struct {
	ready chan xzResult // a decoded block
	free  chan []byte   // the slot's buffer, back from the reader
}

type xzResult struct {
	data []byte
	err  error
}

// xzSlots is how many blocks of a stream are decoded or held at once:
// as many as fit the budget, and no more than the cores and one more
// block, decoded ahead, can use. Fewer than two is no gain.
func xzSlots(blocks []xzBlock) int {
	var most int64
	for _, b := range blocks {
		most = max(most, b.uncompressed+b.dict)
	}
	return int(min(xzParallelBudget/max(most, 1), int64(runtime.GOMAXPROCS(0))+1, int64(len(blocks))))
}

// newParallelXZ starts decoding the blocks of the stream r holds on n
// slots.
func (p *Package) newParallelXZ(r io.ReaderAt, header []byte, blocks []xzBlock, n int) *parallelXZ {
	ctx, cancel := context.WithCancel(context.Background())
	z := &parallelXZ{p: p, r: r, header: header, blocks: blocks, slots: make([]xzSlot, n), slot: -1, cancel: cancel}
	var size int64
	for _, b := range blocks {
		size = max(size, b.uncompressed)
	}
	for s := range z.slots {
		z.slots[s] = xzSlot{ready: make(chan xzResult, 1), free: make(chan []byte, 1)}
		z.wg.Add(1)
		go func() {
			defer z.wg.Done()
			z.run(ctx, s, make([]byte, size))
		}()
	}
	return z
}

// run decodes blocks s, s+n, s+2n... into buf, one at a time.
func (z *parallelXZ) run(ctx context.Context, s int, buf []byte) {
	slot := z.slots[s]
	var dec *xz.Reader
	in := bufio.NewReaderSize(nil, 256<<10)
	for i := s; i < len(z.blocks); i += len(z.slots) {
		if i != s {
			select {
			case buf = <-slot.free:
			case <-ctx.Done():
				return
			}
		}
		var data []byte
		err := z.p.guard(func() error {
			var err error
			data, err = z.decode(ctx, &dec, in, buf, z.blocks[i])
			return err
		})
		select {
		case slot.ready <- xzResult{data, err}:
		case <-ctx.Done():
			return
		}
		if err != nil {
			return
		}
	}
}

// decode decodes one block into buf with *dec, made or reset.
func (z *parallelXZ) decode(ctx context.Context, dec **xz.Reader, in *bufio.Reader, buf []byte, b xzBlock) ([]byte, error) {
	in.Reset(io.MultiReader(
		bytes.NewReader(z.header),
		io.NewSectionReader(z.r, b.off, (b.unpadded+3)&^3),
		bytes.NewReader(xzTail(z.header, b)),
	))
	var err error
	if *dec == nil {
		*dec, err = xz.NewReader(in, maxWindow)
	} else {
		err = (*dec).Reset(in)
	}
	if err != nil {
		return nil, unusable("xz payload: %w", err)
	}
	(*dec).Multistream(false)
	out := buf[:b.uncompressed]
	for done := 0; done < len(out); {
		if ctx.Err() != nil {
			return nil, io.ErrClosedPipe
		}
		n, err := io.ReadFull(*dec, out[done:min(done+readaheadBlock, len(out))])
		done += n
		if err != nil {
			return nil, unusable("xz payload: %w", truncated(err))
		}
	}
	// Reading on to the end makes the library check the block, the index
	// and the footer.
	if n, err := (*dec).Read(make([]byte, 1)); n != 0 || err != io.EOF {
		if err == nil || err == io.EOF {
			err = errors.New("block longer than the index says")
		}
		return nil, unusable("xz payload: %w", err)
	}
	return out, nil
}

func (z *parallelXZ) Read(p []byte) (int, error) {
	for len(z.cur) == 0 {
		if z.err != nil {
			return 0, z.err
		}
		if z.slot >= 0 {
			z.slots[z.slot].free <- z.held
			z.slot = -1
		}
		if z.next == len(z.blocks) {
			z.err = io.EOF
			return 0, z.err
		}
		s := z.next % len(z.slots)
		res := <-z.slots[s].ready
		z.next++
		if res.err != nil {
			z.err = res.err
			return 0, z.err
		}
		z.cur, z.held, z.slot = res.data, res.data, s
	}
	n := copy(p, z.cur)
	z.cur = z.cur[n:]
	return n, nil
}

// Close stops the slots and waits for them to end.
func (z *parallelXZ) Close() error {
	z.cancel()
	z.wg.Wait()
	return nil
}
