package rpm

import (
	"bufio"
	"bytes"
	"io"

	"github.com/dsnet/compress/bzip2"
	"github.com/klauspost/compress/zstd"
	"github.com/therootcompany/xz"
	"github.com/ulikunitz/xz/lzma"
)

// Magic numbers of the payload compressions, to tell a payload that is not
// what its header says from a corrupt one.
var payloadMagic = map[string][]byte{
	"gzip":  {0x1f, 0x8b},
	"xz":    {0xfd, '7', 'z', 'X', 'Z', 0x00},
	"zstd":  {0x28, 0xb5, 0x2f, 0xfd},
	"bzip2": {'B', 'Z', 'h'},
	"lzma":  {0x5d},
	"none":  []byte("07070"),
}

// decompressor returns the uncompressed payload of a package whose
// compressed payload r yields, compressed as the header's compressor
// says. The caller closes it.
func decompressor(r *bufio.Reader, compressor string) (io.ReadCloser, error) {
	switch compressor {
	case "identity", "uncompressed":
		compressor = "none"
	case "":
		// rpm reads a package that does not name its compression as gzip,
		// through zlib, which passes uncompressed data through: rpmbuild's
		// w.ufdio payloads look like that.
		compressor = "gzip"
		if head, _ := r.Peek(5); bytes.Equal(head, payloadMagic["none"]) {
			compressor = "none"
		}
	}
	magic, ok := payloadMagic[compressor]
	if !ok {
		return nil, unusable("unsupported payload compression %q", compressor)
	}
	head, err := r.Peek(len(magic))
	if err != nil || !bytes.Equal(head, magic) {
		return nil, unusable("payload is not %s data (bad magic)", compressor)
	}
	switch compressor {
	case "gzip":
		return newGunzip(r), nil
	case "xz":
		z, err := newXZ(r)
		if err != nil {
			return nil, unusable("xz payload: %w", err)
		}
		return io.NopCloser(z), nil
	case "lzma":
		z, err := lzma.NewReader(r)
		if err != nil {
			return nil, unusable("lzma payload: %w", err)
		}
		return io.NopCloser(z), nil
	case "zstd":
		z, err := zstd.NewReader(r, zstd.WithDecoderMaxMemory(1<<30), zstd.WithDecoderLowmem(false))
		if err != nil {
			return nil, unusable("zstd payload: %w", err)
		}
		return zstdCloser{z}, nil
	case "bzip2":
		z, err := bzip2.NewReader(r, nil)
		if err != nil {
			return nil, unusable("bzip2 payload: %w", err)
		}
		return z, nil
	}
	return io.NopCloser(r), nil
}

// newXZ decodes a payload's xz stream with the LZMA2 decoder of this
// package (lzma.go), or, when its first block has other filters (a BCJ
// filter, which rpmbuild never writes), with XZ Embedded
// (therootcompany/xz, which decodes about 1.7x faster than ulikunitz/xz
// and 2.5x slower than ours). Both bound the dictionary to 256 MiB.
//
// The blocks' checks (CRC or SHA-256 of their data) are not computed:
// every payload installed is covered by a digest Verify checks (the
// payload digest, or the MD5 of header and payload), and every file by
// its own; computing a SHA-256 check as well took some 3% of the decoder's
// time, which bounds a single-block install. Everything else of the xz
// format is checked as ever.
func newXZ(r *bufio.Reader) (io.Reader, error) {
	if head, _ := r.Peek(12 + 1024); !xzFirstBlockLZMA2(head) {
		return xz.NewReader(r, xzMaxDict)
	}
	z, err := newXZReader(r)
	if err != nil {
		return nil, err
	}
	z.noCheck = true
	return z, nil
}

// xzFirstBlockLZMA2 reports whether the first block of the stream that
// starts head has LZMA2 as its only filter, or whether it cannot tell
// (the decoder will say what is wrong).
func xzFirstBlockLZMA2(head []byte) bool {
	if len(head) < 14 || head[12] == 0 {
		return true
	}
	size := (int(head[12]) + 1) * 4
	if len(head) < 12+size {
		return true
	}
	h := head[12 : 12+size]
	rd := bytes.NewReader(h[2 : size-4])
	for _, present := range []bool{h[1]&0x40 != 0, h[1]&0x80 != 0} {
		if present {
			if _, err := xzVarint(rd); err != nil {
				return true
			}
		}
	}
	id, err := xzVarint(rd)
	return err != nil || h[1]&3 == 0 && id == 0x21
}

type zstdCloser struct{ *zstd.Decoder }

func (z zstdCloser) Close() error { z.Decoder.Close(); return nil }

// limitedPayload fails a payload that decompresses to more than its
// header's file list can account for, so that a decompression bomb stops
// at its first byte too many, and marks every decompression error as
// the package's. (The signature's payload size is not used:
// rpmpack writes the sum of the file sizes there, not the archive's.)
type limitedPayload struct {
	r     io.Reader
	limit int64
	n     int64
}

func (l *limitedPayload) Read(p []byte) (int, error) {
	n, err := l.r.Read(p)
	l.n += int64(n)
	if l.n > l.limit {
		return n, unusable("payload larger than the %d bytes its file list accounts for", l.limit)
	}
	if err != nil && err != io.EOF {
		err = unusable("decompress payload: %w", err)
	}
	return n, err
}

// readahead decompresses in its own goroutine, a few blocks ahead of the
// reader, so that decompression (one core) overlaps hashing and writing
// (the other).
type readahead struct {
	full  chan []byte // filled blocks, in order
	free  chan []byte // blocks to fill again
	skip  int         // where the data of a block starts
	block []byte      // the block being read from
	pos   int         // how much of it has been read
	err   error       // the producer's final error, once full is closed
	errCh chan error
	stop  chan struct{}
	done  bool // Close has been called
}

const (
	readaheadBlock  = 1 << 20
	readaheadBlocks = 4
)

// newReadahead reads r ahead; a readahead is returned as it is.
func newReadahead(r io.Reader) *readahead {
	if ra, ok := r.(*readahead); ok {
		return ra
	}
	ra := newBlocks(0)
	go ra.produce(r)
	return ra
}

// newBlocks makes a readahead whose blocks have skip bytes before their
// data.
func newBlocks(skip int) *readahead {
	ra := &readahead{
		full:  make(chan []byte, readaheadBlocks),
		free:  make(chan []byte, readaheadBlocks+1),
		skip:  skip,
		errCh: make(chan error, 1),
		stop:  make(chan struct{}),
	}
	for range readaheadBlocks + 1 {
		ra.free <- make([]byte, skip+readaheadBlock)
	}
	return ra
}

// newGunzip decodes a gzip payload with this package's decoder
// (inflate.go), straight into the readahead's blocks: each block starts
// with the window, the 32 KiB before its data.
func newGunzip(r io.Reader) *readahead {
	ra := newBlocks(inflateWindow)
	go func() {
		defer close(ra.full)
		err := newInflater(r, ra.next).run()
		if err == nil {
			err = io.EOF
		}
		ra.errCh <- err
	}()
	return ra
}

// next hands out full, unless it holds no data, and returns a block to
// fill, for a producer that fills whole blocks.
func (ra *readahead) next(full []byte) ([]byte, error) {
	if len(full) > ra.skip {
		select {
		case ra.full <- full:
		case <-ra.stop:
			return nil, io.ErrClosedPipe
		}
	}
	select {
	case buf := <-ra.free:
		return buf, nil
	case <-ra.stop:
		return nil, io.ErrClosedPipe
	}
}

func (ra *readahead) produce(r io.Reader) {
	defer close(ra.full)
	for {
		var buf []byte
		select {
		case buf = <-ra.free:
		case <-ra.stop:
			ra.errCh <- io.ErrClosedPipe
			return
		}
		n, err := io.ReadFull(r, buf[:cap(buf)])
		if n > 0 {
			select {
			case ra.full <- buf[:n]:
			case <-ra.stop:
				ra.errCh <- io.ErrClosedPipe
				return
			}
		}
		if err == io.ErrUnexpectedEOF {
			err = io.EOF
		}
		if err != nil {
			ra.errCh <- err
			return
		}
	}
}

func (ra *readahead) Read(p []byte) (int, error) {
	for ra.pos == len(ra.block) {
		if ra.block != nil {
			ra.free <- ra.block[:cap(ra.block)]
			ra.block = nil
		}
		buf, ok := <-ra.full
		if !ok {
			if ra.err == nil {
				ra.err = <-ra.errCh
			}
			return 0, ra.err
		}
		ra.block, ra.pos = buf, ra.skip
	}
	n := copy(p, ra.block[ra.pos:])
	ra.pos += n
	return n, nil
}

// Close stops the producer and waits for it.
func (ra *readahead) Close() error {
	if ra.done {
		return nil
	}
	ra.done = true
	close(ra.stop)
	for range ra.full {
	}
	return nil
}
