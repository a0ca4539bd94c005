package rpm

import (
	"bytes"
	"io"
	"math/rand/v2"
	"os"
	"testing"

	uxz "github.com/ulikunitz/xz"
)

// xzMultiBlock compresses data into xz blocks of blockSize bytes.
func xzMultiBlock(t testing.TB, data []byte, blockSize int64) []byte {
	t.Helper()
	var b bytes.Buffer
	w, err := uxz.WriterConfig{BlockSize: blockSize}.NewWriter(&b)
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

func TestParallelXZ(t *testing.T) {
	data := mixedData(1 << 20)
	comp := xzMultiBlock(t, data, 100000)
	blocks, header := xzIndex(bytes.NewReader(comp), int64(len(comp)))
	if len(blocks) < 10 {
		t.Fatalf("%d blocks, want 11", len(blocks))
	}
	got, err := io.ReadAll(newParallelXZ(bytes.NewReader(comp), header, blocks))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("decoded %d bytes (%v), want the %d bytes compressed", len(got), err, len(data))
	}

	// A corrupt block fails, whichever core decodes it.
	bad := bytes.Clone(comp)
	bad[blocks[5].off+blocks[5].unpadded/2] ^= 0x55
	if _, err := io.ReadAll(newParallelXZ(bytes.NewReader(bad), header, blocks)); err == nil {
		t.Errorf("corrupt block decoded without an error")
	}

	// One block, or something that is not xz: not handled here.
	one := xzMultiBlock(t, data, 10000000)
	if b, _ := xzIndex(bytes.NewReader(one), int64(len(one))); b != nil {
		t.Errorf("single block stream: %d blocks", len(b))
	}
	if b, _ := xzIndex(bytes.NewReader(data), int64(len(data))); b != nil {
		t.Errorf("not xz: %d blocks", len(b))
	}
}

// TestRPMBuildThreadedXZ: rpmbuild with threads writes several blocks,
// which are decoded in parallel (the installer's differential test
// checks the result against rpm).
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
	if blocks, _ := xzIndex(section, section.Size()); len(blocks) < 2 {
		t.Errorf("rpmbuild w0T.xzdio payload has %d blocks, want several", len(blocks))
	}
	if got, err := readAll(t, f, p); err != nil || len(got) != 5 {
		t.Errorf("read %v, %v; want the directory and its 4 files", got, err)
	}
}
