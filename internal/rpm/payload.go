package rpm

import (
	"bufio"
	"bytes"
	"compress/bzip2"
	"fmt"
	"io"
	"runtime"
	"strings"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/therootcompany/xz"
	"github.com/ulikunitz/xz/lzma"
)

// Payloads are decoded by maintained libraries only:
//
//   - gzip: klauspost/compress (each member's CRC-32 and size checked);
//   - zstd: klauspost/compress, on the caller's goroutine
//     (WithDecoderConcurrency(1): its own goroutines would be out of reach
//     of the recover below, and measured no faster here);
//   - xz: therootcompany/xz, a port of XZ Embedded, which verifies every
//     block's check (CRC-32, CRC-64 or SHA-256) and bounds the
//     dictionary it allocates. Chosen over ulikunitz/xz by measurement
//     (BENCHMARKS.md, "Install"): 1.29-1.34x faster on real payloads, half
//     the memory, and ulikunitz's xz reader takes its DictCap as a floor,
//     allocating whatever dictionary a stream declares;
//   - lzma (rpm's legacy lzdio, the .lzma format, which XZ Embedded does
//     not read): ulikunitz/xz's lzma package, whose DictCap is a limit;
//   - bzip2: the standard library.

// maxWindow bounds the dictionary (xz, lzma) or window (zstd) a payload
// may ask the decoder to allocate. rpmbuild's largest, xz -9, is 64 MiB.
const maxWindow = 256 << 20

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

// decoders open the decompressing reader of each payload compression.
// (Tests replace one to make it panic.)
var decoders = map[string]func(r *bufio.Reader) (io.Reader, error){
	"gzip": func(r *bufio.Reader) (io.Reader, error) { return gzip.NewReader(r) },
	"xz":   newXZ,
	"lzma": func(r *bufio.Reader) (io.Reader, error) {
		return lzma.ReaderConfig{DictCap: maxWindow}.NewReader(r)
	},
	"zstd": func(r *bufio.Reader) (io.Reader, error) {
		z, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(maxWindow))
		if err != nil {
			return nil, err
		}
		return z.IOReadCloser(), nil
	},
	"bzip2": func(r *bufio.Reader) (io.Reader, error) { return bzip2.NewReader(r), nil },
	"none":  func(r *bufio.Reader) (io.Reader, error) { return r, nil },
}

// newXZ reads an xz stream, every block's check verified.
func newXZ(r *bufio.Reader) (io.Reader, error) {
	return xz.NewReader(r, maxWindow)
}

// payloadCompressor names the payload's compression as decoders do, and
// checks its magic number.
func payloadCompressor(r *bufio.Reader, compressor string) (string, error) {
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
		return "", unusable("unsupported payload compression %q", compressor)
	}
	head, err := r.Peek(len(magic))
	if err != nil || !bytes.Equal(head, magic) {
		return "", unusable("payload is not %s data (bad magic)", compressor)
	}
	return compressor, nil
}

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

// guard runs decode, and turns a panic in it into an error that names
// the package and matches ErrDecoderPanic: a decoder that panics on a
// payload fails the install, it does not end the process (PID 1), which
// would only start again to read the same payload. (The install's own
// recover cannot catch it: the decoder runs on goroutines of its own.)
func (p *Package) guard(decode func() error) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("%s payload of %s: %w%s: %v", p.Compressor, p.NEVRA(), ErrDecoderPanic, panicSite(), v)
		}
	}()
	return decode()
}

// panicSite names the function that panicked, for a report of the bug:
// the first frame below the runtime's panic machinery. Called from the
// deferred function, the panicking frames are still on the stack.
func panicSite() string {
	pcs := make([]uintptr, 32)
	frames := runtime.CallersFrames(pcs[:runtime.Callers(3, pcs)])
	afterPanic := false
	for {
		f, more := frames.Next()
		if afterPanic && !strings.HasPrefix(f.Function, "runtime.") {
			return fmt.Sprintf(" in %s", f.Function)
		}
		if f.Function == "runtime.gopanic" || strings.HasPrefix(f.Function, "runtime.panic") {
			afterPanic = true
		}
		if !more {
			return ""
		}
	}
}

// readahead decompresses in its own goroutine, a few blocks ahead of the
// reader, so that decompression (one core) overlaps hashing and writing
// (the other). It holds readaheadBlocks+1 blocks of readaheadBlock
// bytes, or less for a small payload.
type readahead struct {
	full  chan []byte // filled blocks, in order
	free  chan []byte // blocks to fill again
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

// bufSize is the size of a buffer for n bytes of data: at most
// readaheadBlock, and no more than the data (at least 4 KiB), so that a
// small package costs little memory.
func bufSize(n int64) int {
	return int(max(min(n, readaheadBlock), 4096))
}

// newReadahead decodes the compressed payload r, compressed as
// compressor (one of decoders), in a goroutine of its own.
func (p *Package) newReadahead(r *bufio.Reader, compressor string) *readahead {
	ra := &readahead{
		full:  make(chan []byte, readaheadBlocks),
		free:  make(chan []byte, readaheadBlocks+1),
		errCh: make(chan error, 1),
		stop:  make(chan struct{}),
	}
	for range readaheadBlocks + 1 {
		ra.free <- make([]byte, bufSize(p.archiveMax))
	}
	go func() {
		defer close(ra.full)
		ra.errCh <- p.guard(func() error {
			dec, err := decoders[compressor](r)
			if err != nil {
				return unusable("%s payload: %w", compressor, err)
			}
			if c, ok := dec.(io.Closer); ok {
				defer c.Close()
			}
			return ra.produce(dec)
		})
	}()
	return ra
}

// produce fills blocks from r until its end (io.EOF) or an error.
func (ra *readahead) produce(r io.Reader) error {
	for {
		var buf []byte
		select {
		case buf = <-ra.free:
		case <-ra.stop:
			return io.ErrClosedPipe
		}
		n, err := io.ReadFull(r, buf[:cap(buf)])
		if n > 0 {
			select {
			case ra.full <- buf[:n]:
			case <-ra.stop:
				return io.ErrClosedPipe
			}
		}
		if err == io.ErrUnexpectedEOF {
			err = io.EOF
		}
		if err != nil {
			return err
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
		ra.block, ra.pos = buf, 0
	}
	n := copy(p, ra.block[ra.pos:])
	ra.pos += n
	return n, nil
}

// Close stops the producer and waits for it to end.
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
