package rpm

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"

	"github.com/google/rpmpack"
	"github.com/klauspost/compress/gzip"
	uxz "github.com/ulikunitz/xz"
)

// panicking panics, as a decoder with a bug would (an index out of
// range), once it has given after bytes.
type panicking struct {
	r     io.Reader
	after int
}

func (p *panicking) Read(b []byte) (int, error) {
	if p.after <= 0 {
		var table [4]int
		return table[len(b)%8+4], nil
	}
	n, err := p.r.Read(b[:min(len(b), p.after)])
	p.after -= n
	return n, err
}

// panickingAt is a package file whose reads of the byte at panic.
type panickingAt struct {
	r  io.ReaderAt
	at int64
}

func (p panickingAt) ReadAt(b []byte, off int64) (int, error) {
	if off <= p.at && p.at < off+int64(len(b)) {
		var table []int
		return table[off], nil
	}
	return p.r.ReadAt(b, off)
}

// decodingGoroutines counts the goroutines that decode a payload.
func decodingGoroutines() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		if strings.Contains(g, "rpm.(*readahead)") || strings.Contains(g, "rpm.(*parallelXZ)") ||
			strings.Contains(g, "rpm.(*Package).newReadahead") || strings.Contains(g, "rpm.(*Package).newParallelXZ") {
			n++
		}
	}
	return n
}

// noDecodingGoroutines fails unless the decoding goroutines have ended.
// Close has waited for them, but a goroutine that has done its last
// deed may not have left the scheduler yet: give it the processor a
// bounded number of times.
func noDecodingGoroutines(t *testing.T) {
	t.Helper()
	for range 1000 {
		if decodingGoroutines() == 0 {
			return
		}
		runtime.Gosched()
	}
	t.Errorf("%d decoding goroutines left after Close", decodingGoroutines())
}

// checkPanicError reads the package in r to its end, and wants the
// decoder's panic as an error that names the package and the fault, and
// does not blame the package (ErrUnusable): a panic is a bug.
func checkPanicError(t *testing.T, r io.ReaderAt, p *Package) {
	t.Helper()
	_, err := readAll(t, r, p)
	if err == nil {
		t.Fatal("read through a panicking decoder without an error")
	}
	if !errors.Is(err, ErrDecoderPanic) || errors.Is(err, ErrUnusable) {
		t.Errorf("%v: matches ErrDecoderPanic %v, ErrUnusable %v; want only the first",
			err, errors.Is(err, ErrDecoderPanic), errors.Is(err, ErrUnusable))
	}
	for _, want := range []string{"payload of x-1-1.x86_64: decoder panicked", "index out of range"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	noDecodingGoroutines(t)
}

// TestDecoderPanic: a decoder that panics in the middle of a payload
// fails the read with an error naming the package, instead of ending the
// process, and every goroutine that decoded ends: with a sequential
// decoder (through a test-only decoder that panics), and with the
// parallel xz decoding (the package file's reads panic within the
// library's).
func TestDecoderPanic(t *testing.T) {
	files := append([]rpmpack.RPMFile{}, baseFiles...)
	files = append(files, file("/opt/x/data", 0o644, string(mixedData(3<<20))))
	b := pack(t, "gzip", files, nil)
	p, err := Read(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	t.Run("gzip", func(t *testing.T) {
		defer func(d func(*bufio.Reader) (io.Reader, error)) { decoders["gzip"] = d }(decoders["gzip"])
		decoders["gzip"] = func(r *bufio.Reader) (io.Reader, error) {
			z, err := gzip.NewReader(r)
			return &panicking{r: z, after: 1 << 20}, err
		}
		checkPanicError(t, bytes.NewReader(b), p)
	})

	t.Run("xz-parallel", func(t *testing.T) {
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(4))
		// The same package, its cpio archive compressed again as
		// several xz blocks.
		comp := xzMultiBlock(t, gunzipPayload(t, b, p), 256<<10, uxz.SHA256)
		blocks, _ := xzIndex(bytes.NewReader(comp), int64(len(comp)))
		if len(blocks) < 10 || xzSlots(blocks) < 2 {
			t.Fatalf("%d blocks, %d slots", len(blocks), xzSlots(blocks))
		}
		xb := append(bytes.Clone(b[:p.PayloadOffset]), comp...)
		xp := *p
		xp.Compressor, xp.Size = "xz", int64(len(xb))
		if _, err := readAll(t, bytes.NewReader(xb), &xp); err != nil {
			t.Fatalf("the package as it is: %v", err)
		}
		at := p.PayloadOffset + blocks[6].off + blocks[6].unpadded/2
		checkPanicError(t, panickingAt{bytes.NewReader(xb), at}, &xp)
	})
}
