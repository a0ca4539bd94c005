package rpm

import (
	"bufio"
	"bytes"
	"io"
	"math/rand/v2"
	"os"
	"runtime"
	"strings"
	"testing"

	uxz "github.com/ulikunitz/xz"
)

// xzMultiBlock compresses data into xz blocks of blockSize bytes, with
// the block check given (rpm writes SHA-256).
func xzMultiBlock(t testing.TB, data []byte, blockSize int64, check byte) []byte {
	t.Helper()
	var b bytes.Buffer
	w, err := uxz.WriterConfig{BlockSize: blockSize, CheckSum: check}.NewWriter(&b)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func mixedData(n int) []byte {
	rng := rand.New(rand.NewPCG(3, 4))
	b := make([]byte, n)
	for i := range b {
		if (i/4096)%2 == 0 {
			b[i] = byte(rng.Uint32())
		} else {
			b[i] = "abcdefgh\n"[rng.IntN(9)]
		}
	}
	return b
}

// xzPackage is the package the xz tests' errors name.
var xzPackage = &Package{Name: "x", Version: "1", Release: "1", Arch: "x86_64", Compressor: "xz"}

// decodeParallel decodes a multi-block stream on n slots.
func decodeParallel(t *testing.T, comp []byte, n int) ([]byte, error) {
	t.Helper()
	blocks, header := xzIndex(bytes.NewReader(comp), int64(len(comp)))
	if len(blocks) < 2 {
		t.Fatalf("%d blocks, want several", len(blocks))
	}
	z := xzPackage.newParallelXZ(bytes.NewReader(comp), header, blocks, n)
	defer z.Close()
	return io.ReadAll(z)
}

// TestParallelXZ decodes a multi-block stream on 2 to 12 slots, and
// refuses it with a flipped bit anywhere: every block's check is
// verified, whichever slot decodes it.
func TestParallelXZ(t *testing.T) {
	data := mixedData(1 << 20)
	comp := xzMultiBlock(t, data, 100000, uxz.SHA256)
	for _, n := range []int{2, 3, 12} {
		if got, err := decodeParallel(t, comp, n); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%d slots: decoded %d bytes (%v), want the %d bytes compressed", n, len(got), err, len(data))
		}
	}
	rng := rand.New(rand.NewPCG(5, 6))
	for range 100 {
		bad := bytes.Clone(comp)
		i := rng.IntN(len(bad))
		bad[i] ^= 1 << rng.IntN(8)
		blocks, header := xzIndex(bytes.NewReader(bad), int64(len(bad)))
		if blocks == nil {
			continue // the index or a block header is what changed: decoded sequentially
		}
		z := xzPackage.newParallelXZ(bytes.NewReader(bad), header, blocks, 3)
		_, err := io.ReadAll(z)
		z.Close()
		if err == nil {
			t.Fatalf("bit flipped at %d of %d: no error", i, len(bad))
		}
		mustUnusable(t, err)
	}

	// One block, or something that is not xz: not handled here.
	one := xzMultiBlock(t, data, 10000000, uxz.SHA256)
	if b, _ := xzIndex(bytes.NewReader(one), int64(len(one))); b != nil {
		t.Errorf("single block stream: %d blocks", len(b))
	}
	if b, _ := xzIndex(bytes.NewReader(data), int64(len(data))); b != nil {
		t.Errorf("not xz: %d blocks", len(b))
	}
}

// TestXZChecksVerified flips one bit of the first block's check, of
// every check type, and reads the stream sequentially (the library) and
// in parallel: both refuse it.
func TestXZChecksVerified(t *testing.T) {
	data := mixedData(300000)
	for _, c := range []struct {
		check byte
		size  int64
	}{{uxz.CRC32, 4}, {uxz.CRC64, 8}, {uxz.SHA256, 32}} {
		comp := xzMultiBlock(t, data, 100000, c.check)
		blocks, _ := xzIndex(bytes.NewReader(comp), int64(len(comp)))
		if len(blocks) < 2 {
			t.Fatalf("%d blocks", len(blocks))
		}
		bad := bytes.Clone(comp)
		bad[blocks[0].off+blocks[0].unpadded-c.size] ^= 1
		if _, err := decodeParallel(t, bad, 2); err == nil || !strings.Contains(err.Error(), "xz") {
			t.Errorf("check %d, parallel: %v, want an xz error", c.check, err)
		}
		dec, err := newXZ(bufio.NewReader(bytes.NewReader(bad)))
		if err == nil {
			_, err = io.ReadAll(dec)
		}
		if err == nil {
			t.Errorf("check %d, sequential: no error", c.check)
		}
	}
}

// TestXZSlots: how many blocks are in flight depends on the blocks'
// sizes and dictionaries, never beyond the budget, whatever GOMAXPROCS.
func TestXZSlots(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	blocks := func(n int, size, dict int64) []xzBlock {
		b := make([]xzBlock, n)
		for i := range b {
			b[i] = xzBlock{uncompressed: size, dict: dict}
		}
		return b
	}
	const MiB = 1 << 20
	for _, c := range []struct {
		procs  int
		blocks []xzBlock
		want   int
	}{
		{16, blocks(24, 48*MiB, 16*MiB), 4}, // w7T: budget bound
		{64, blocks(24, 48*MiB, 16*MiB), 4},
		{2, blocks(24, 48*MiB, 16*MiB), 3}, // core bound
		{16, blocks(100, 3*MiB, 1*MiB), 17},
		{16, blocks(3, 3*MiB, 1*MiB), 3},
		{16, blocks(4, 192*MiB, 64*MiB), 1}, // w9T: sequential
	} {
		runtime.GOMAXPROCS(c.procs)
		if got := xzSlots(c.blocks); got != c.want {
			t.Errorf("GOMAXPROCS %d, %d blocks of %d MiB (dictionary %d MiB): %d slots, want %d",
				c.procs, len(c.blocks), c.blocks[0].uncompressed/MiB, c.blocks[0].dict/MiB, got, c.want)
		}
		if got := int64(xzSlots(c.blocks)) * (c.blocks[0].uncompressed + c.blocks[0].dict); got > xzParallelBudget && c.want > 1 {
			t.Errorf("%d bytes in flight, over the budget", got)
		}
	}
}

// TestRPMBuildThreadedXZ: rpmbuild with threads writes several blocks,
// whose dictionary is read from their headers, and which are decoded in
// parallel (the installer's differential test checks the result against
// rpm).
func TestRPMBuildThreadedXZ(t *testing.T) {
	pkgPath := rpmbuild(t, "w0T.xzdio", 4<<20)
	f, err := os.Open(pkgPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	p, err := Read(f, st.Size())
	if err != nil {
		t.Fatal(err)
	}
	section := io.NewSectionReader(f, p.PayloadOffset, p.Size-p.PayloadOffset)
	blocks, _ := xzIndex(section, section.Size())
	if len(blocks) < 2 {
		t.Errorf("rpmbuild w0T.xzdio payload has %d blocks, want several", len(blocks))
	}
	for _, b := range blocks {
		if b.dict != 256<<10 { // xz -0
			t.Errorf("block at %d: dictionary %d, want xz -0's 256 KiB", b.off, b.dict)
		}
	}
	if got, err := readAll(t, f, p); err != nil || len(got) != 5 {
		t.Errorf("read %v, %v; want the directory and its 4 files", got, err)
	}
}

// BenchmarkPayload reads the whole payload of the package named by
// AVSIDECAR_BENCH_RPM (bench/install/run.sh builds some), every file's
// digest checked and nothing written: as Open reads it, and, for a
// multi-block xz payload, by the library alone, sequentially.
//
//	AVSIDECAR_BENCH_RPM=/tmp/avsidecar-bench-install/bin-xz-mt.rpm \
//		go test ./internal/rpm -run '^$' -bench Payload -benchtime 3x
func BenchmarkPayload(b *testing.B) {
	path := os.Getenv("AVSIDECAR_BENCH_RPM")
	if path == "" {
		b.Skip("AVSIDECAR_BENCH_RPM names no package")
	}
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		b.Fatal(err)
	}
	p, err := Read(f, st.Size())
	if err != nil {
		b.Fatal(err)
	}
	open := map[string]func() (*Archive, error){"open": func() (*Archive, error) { return p.Open(f) }}
	section := io.NewSectionReader(f, p.PayloadOffset, p.Size-p.PayloadOffset)
	if blocks, _ := xzIndex(section, section.Size()); blocks != nil {
		b.Logf("%d xz blocks, %d slots", len(blocks), xzSlots(blocks))
		open["xz-sequential"] = func() (*Archive, error) {
			in := io.NewSectionReader(f, p.PayloadOffset, p.Size-p.PayloadOffset)
			dec := p.newReadahead(bufio.NewReaderSize(in, bufSize(in.Size())), "xz")
			return p.newArchive(bufio.NewReaderSize(&limitedPayload{r: dec, limit: p.archiveMax}, bufSize(p.archiveMax)), dec), nil
		}
	}
	for name, open := range open {
		b.Run(name, func(b *testing.B) {
			b.SetBytes(p.archiveMax)
			for b.Loop() {
				ar, err := open()
				if err == nil {
					err = drain(ar)
					ar.Close()
				}
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
