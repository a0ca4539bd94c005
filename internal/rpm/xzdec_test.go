package rpm

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/avsidecar/avsidecar/internal/testkit"
	"github.com/therootcompany/xz"
)

// xzCLI compresses data with the xz command and the options given.
func xzCLI(t testing.TB, data []byte, opts ...string) []byte {
	t.Helper()
	cmd := exec.Command(testkit.NeedCommand(t, "xz"), append([]string{"-c"}, opts...)...)
	cmd.Stdin = bytes.NewReader(data)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("xz %v: %v", opts, err)
	}
	return out
}

// testInputs are data of every kind a payload has: incompressible,
// repetitive, text-like, long runs, and this test binary itself (code).
func testInputs(t testing.TB) map[string][]byte {
	rng := rand.New(rand.NewPCG(5, 6))
	random := make([]byte, 300<<10)
	for i := range random {
		random[i] = byte(rng.Uint32())
	}
	self, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if len(self) > 1<<20 {
		self = self[:1<<20]
	}
	return map[string][]byte{
		"empty":  nil,
		"byte":   {'x'},
		"random": random,
		"mixed":  mixedData(1 << 20),
		"zeros":  make([]byte, 5<<20),
		"text":   bytes.Repeat([]byte("the quick brown fox jumps over the lazy dog 0123456789\n"), 50000),
		"binary": self,
	}
}

// TestXZDecoder decodes what xz(1) writes with every option that changes
// the LZMA2 stream or its container: presets, extreme, literal and
// position bits, small dictionaries (the window slides), blocks, checks.
func TestXZDecoder(t *testing.T) {
	options := [][]string{
		{"-0"}, {"-6"}, {"-7e"},
		{"--lzma2=preset=6,lc=0,lp=0,pb=0"}, {"--lzma2=preset=6,lc=4,lp=0,pb=4"}, {"--lzma2=preset=1,lc=1,lp=3,pb=2"},
		{"--lzma2=dict=4KiB"}, {"--lzma2=dict=64KiB,mf=hc4"}, {"--lzma2=preset=6,nice=273,depth=0"},
		{"--block-size=100000"}, {"--check=none"}, {"--check=crc32"}, {"--check=crc64"}, {"--check=sha256"},
	}
	for name, data := range testInputs(t) {
		for _, opts := range options {
			comp := xzCLI(t, data, opts...)
			z, err := newXZReader(bytes.NewReader(comp))
			if err != nil {
				t.Fatalf("%s %v: %v", name, opts, err)
			}
			got, err := io.ReadAll(z)
			if err != nil || !bytes.Equal(got, data) {
				t.Errorf("%s %v: %d bytes (%v), want the %d compressed", name, opts, len(got), err, len(data))
			}
		}
	}
}

// TestXZConcatenated: streams one after the other, with stream padding
// between them, decode to what they hold, one after the other.
func TestXZConcatenated(t *testing.T) {
	a, b := []byte("first stream\n"), mixedData(100000)
	comp := append(append(xzCLI(t, a, "--check=crc32"), make([]byte, 8)...), xzCLI(t, b)...)
	z, err := newXZReader(bytes.NewReader(comp))
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(z)
	if err != nil || !bytes.Equal(got, append(a, b...)) {
		t.Errorf("decoded %d bytes (%v), want %d", len(got), err, len(a)+len(b))
	}
}

// TestXZCorrupt: a flipped bit anywhere is an error, never a panic nor
// other data accepted as good: the check or the structure catches it.
func TestXZCorrupt(t *testing.T) {
	data := mixedData(200000)
	comp := xzCLI(t, data, "--check=crc64")
	rng := rand.New(rand.NewPCG(7, 8))
	for range 300 {
		bad := bytes.Clone(comp)
		i := rng.IntN(len(bad))
		bad[i] ^= 1 << rng.IntN(8)
		z, err := newXZReader(bytes.NewReader(bad))
		if err == nil {
			var got []byte
			got, err = io.ReadAll(z)
			if err == nil && !bytes.Equal(got, data) {
				t.Fatalf("bit flipped at %d: other data decoded without an error", i)
			}
		}
		if err == nil {
			t.Errorf("bit flipped at %d (of %d): no error", i, len(comp))
		}
	}
	for _, n := range []int{0, 5, 12, 20, len(comp) / 2, len(comp) - 1} {
		z, err := newXZReader(bytes.NewReader(comp[:n]))
		if err == nil {
			_, err = io.ReadAll(z)
		}
		if err == nil || err == io.EOF {
			t.Errorf("truncated to %d bytes: %v", n, err)
		}
	}
}

// TestXZFilters: a block with a BCJ filter is not this decoder's: it says
// so, and the payload reader decodes it with XZ Embedded instead.
func TestXZFilters(t *testing.T) {
	data := mixedData(100000)
	comp := xzCLI(t, data, "--x86", "--lzma2")
	z, err := newXZReader(bytes.NewReader(comp))
	if err == nil {
		_, err = io.ReadAll(z)
	}
	if !errors.Is(err, errXZFilters) {
		t.Fatalf("BCJ block: %v, want errXZFilters", err)
	}
	dec, err := decompressor(bufioReader(comp), "xz")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := io.ReadAll(dec); err != nil || !bytes.Equal(got, data) {
		t.Errorf("payload reader: %d bytes, %v", len(got), err)
	}
}

// FuzzXZDecoder compares the decoder with XZ Embedded on any input: no
// panic, and what one decodes without an error the other decodes the
// same.
func FuzzXZDecoder(f *testing.F) {
	for _, opts := range [][]string{{"-0"}, {"--lzma2=dict=4KiB,lc=1,lp=1,pb=1"}, {"--check=crc32", "--block-size=3000"}} {
		f.Add(xzCLI(f, mixedData(20000), opts...))
	}
	f.Fuzz(func(t *testing.T, comp []byte) {
		var got []byte
		z, err := newXZReader(bytes.NewReader(comp))
		if err == nil {
			got, err = io.ReadAll(io.LimitReader(z, 1<<22))
		}
		ref, refErr := xz.NewReader(bytes.NewReader(comp), 1<<28)
		var want []byte
		if refErr == nil {
			want, refErr = io.ReadAll(io.LimitReader(ref, 1<<22))
		}
		if err == nil && (refErr != nil || !bytes.Equal(got, want)) {
			t.Fatalf("decoded %d bytes where XZ Embedded says %v (%d bytes)", len(got), refErr, len(want))
		}
		if refErr == nil && err != nil && !errors.Is(err, errXZFilters) {
			t.Fatalf("refused (%v) what XZ Embedded decodes (%d bytes)", err, len(want))
		}
	})
}

// BenchmarkXZDecoder decodes a single-block payload of real binaries
// (/usr/bin, as much as 32 MB of it) with this decoder and with XZ
// Embedded.
func BenchmarkXZDecoder(b *testing.B) {
	var data []byte
	files, _ := filepath.Glob("/usr/bin/*")
	for _, f := range files {
		if st, err := os.Stat(f); err == nil && st.Mode().IsRegular() && len(data) < 32<<20 {
			body, _ := os.ReadFile(f)
			data = append(data, body...)
		}
	}
	comp := xzCLI(b, data, "-6")
	for _, c := range []struct {
		name string
		dec  func() (io.Reader, error)
	}{
		{"ours", func() (io.Reader, error) { return newXZReader(bytes.NewReader(comp)) }},
		{"xz-embedded", func() (io.Reader, error) { return xz.NewReader(bytes.NewReader(comp), 1<<28) }},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				r, err := c.dec()
				if err != nil {
					b.Fatal(err)
				}
				if n, err := io.Copy(io.Discard, r); err != nil || n != int64(len(data)) {
					b.Fatalf("%d bytes, %v", n, err)
				}
			}
		})
	}
}
