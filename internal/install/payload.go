package install

import (
	"bufio"
	"bytes"
	"io"

	"github.com/dsnet/compress/bzip2"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
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
// compressed payload r yields. The caller closes it.
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
		z, err := gzip.NewReader(r)
		if err != nil {
			return nil, unusable("gzip payload: %w", err)
		}
		return z, nil
	case "xz":
		z, err := xz.NewReader(r)
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

type zstdCloser struct{ *zstd.Decoder }

func (z zstdCloser) Close() error { z.Decoder.Close(); return nil }

// limitedPayload fails a payload that decompresses to more than its
// header's file list can account for, so that a decompression bomb stops
// at its first byte too many. (The signature's payload size is not used:
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
