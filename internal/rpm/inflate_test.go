package rpm

import (
	"bytes"
	stdflate "compress/flate"
	stdgzip "compress/gzip"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	kflate "github.com/klauspost/compress/flate"
	kgzip "github.com/klauspost/compress/gzip"

	"github.com/avsidecar/avsidecar/internal/testkit"
)

// gunzipAll decodes gzip data with the inflater, in small blocks so that
// the window moves from block to block often.
func gunzipAll(data []byte, block int) ([]byte, error) {
	var out []byte
	next := func(full []byte) ([]byte, error) {
		if len(full) > inflateWindow {
			out = append(out, full[inflateWindow:]...)
		}
		return make([]byte, inflateWindow+block), nil
	}
	err := newInflater(bytes.NewReader(data), next).run()
	return out, err
}

// gunzipRef decodes gzip data with compress/gzip, the reference.
func gunzipRef(data []byte) ([]byte, error) {
	z, err := stdgzip.NewReader(bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	return io.ReadAll(z)
}

// gzipCLI compresses data with the gzip command.
func gzipCLI(t testing.TB, data []byte, opts ...string) []byte {
	t.Helper()
	cmd := exec.Command(testkit.NeedCommand(t, "gzip"), append([]string{"-c"}, opts...)...)
	cmd.Stdin = bytes.NewReader(data)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("gzip %v: %v", opts, err)
	}
	return out
}

// gzipLevel compresses data with klauspost/compress at a level.
func gzipLevel(t testing.TB, data []byte, level int) []byte {
	return gzipWith(t, data, func(w io.Writer) (io.WriteCloser, error) { return kgzip.NewWriterLevel(w, level) })
}

// gzipStd compresses data with compress/gzip at a level.
func gzipStd(t testing.TB, data []byte, level int) []byte {
	return gzipWith(t, data, func(w io.Writer) (io.WriteCloser, error) { return stdgzip.NewWriterLevel(w, level) })
}

func gzipWith(t testing.TB, data []byte, newWriter func(io.Writer) (io.WriteCloser, error)) []byte {
	t.Helper()
	var b bytes.Buffer
	z, err := newWriter(&b)
	if err != nil {
		t.Fatal(err)
	}
	z.Write(data)
	if err := z.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestInflate decodes what gzip(1) writes at every level, what
// klauspost/compress writes at every level and Huffman-only (dynamic
// blocks), what compress/flate writes stored and at its fastest (fixed
// blocks for small data), on data of every kind, in blocks of several
// sizes.
func TestInflate(t *testing.T) {
	for name, data := range testInputs(t) {
		cases := map[string][]byte{
			"stored":  gzipStd(t, data, stdflate.NoCompression),
			"std-1":   gzipStd(t, data, stdflate.BestSpeed),
			"huffman": gzipLevel(t, data, kflate.HuffmanOnly),
		}
		for level := 1; level <= 9; level++ {
			cases[fmt.Sprintf("gzip-%d", level)] = gzipCLI(t, data, fmt.Sprintf("-%d", level))
			cases[fmt.Sprintf("klauspost-%d", level)] = gzipLevel(t, data, level)
		}
		for c, comp := range cases {
			for _, block := range []int{fastRoom + 1, 4096, 1 << 20} {
				got, err := gunzipAll(comp, block)
				if err != nil {
					t.Fatalf("%s %s block %d: %v", name, c, block, err)
				}
				if !bytes.Equal(got, data) {
					t.Fatalf("%s %s block %d: %d bytes out, want %d, differing", name, c, block, len(got), len(data))
				}
			}
		}
	}
}

// TestInflateFixedBlocks decodes a stream of fixed-code blocks only: zlib
// writes those for short data.
func TestInflateFixedBlocks(t *testing.T) {
	data := []byte("abcabcabcabc hello hello hello")
	comp := gzipCLI(t, data, "-9")
	if comp[10]>>1&3 != 1 {
		t.Fatalf("gzip wrote block type %d, want fixed (1)", comp[10]>>1&3)
	}
	got, err := gunzipAll(comp, 4096)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("got %q, %v", got, err)
	}
}

// TestInflateMembers decodes several members, one with every optional
// header field (FEXTRA, FNAME, FCOMMENT, FHCRC), one empty, and refuses
// what follows the last member if it is not a member.
func TestInflateMembers(t *testing.T) {
	inputs := testInputs(t)
	var all, want []byte
	for i, name := range []string{"text", "empty", "binary", "zeros"} {
		var b bytes.Buffer
		z := stdgzip.NewWriter(&b)
		if i == 0 {
			z.Header = stdgzip.Header{Name: "name.txt", Comment: "a comment", Extra: []byte("extra field")}
		}
		z.Write(inputs[name])
		z.Close()
		m := b.Bytes()
		if i == 0 {
			m = withHeaderCRC(m)
		}
		all = append(all, m...)
		want = append(want, inputs[name]...)
	}
	if ref, err := gunzipRef(all); err != nil || !bytes.Equal(ref, want) {
		t.Fatalf("compress/gzip: %v", err)
	}
	got, err := gunzipAll(all, 4096)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("got %d bytes, %v; want %d bytes", len(got), err, len(want))
	}
	for _, tail := range [][]byte{{0}, {0x1f}, {0x1f, 0x8b, 8, 0}, []byte("not gzip at all")} {
		if _, err := gunzipAll(append(slices.Clip(all), tail...), 4096); err == nil {
			t.Errorf("trailing %q accepted", tail)
		}
	}
}

// withHeaderCRC sets FHCRC in member m and inserts its header's CRC-16.
func withHeaderCRC(m []byte) []byte {
	m = slices.Clone(m)
	n := 10
	if m[3]&4 != 0 {
		n += 2 + (int(m[10]) | int(m[11])<<8)
	}
	for _, flag := range []byte{8, 16} {
		if m[3]&flag != 0 {
			n += bytes.IndexByte(m[n:], 0) + 1
		}
	}
	m[3] |= 2
	crc := crc32IEEE(m[:n])
	return slices.Concat(m[:n], []byte{byte(crc), byte(crc >> 8)}, m[n:])
}

// TestInflateCorrupt refuses truncated data at many cut points, every
// flipped bit of a small member (the CRC-32, or the deflate checks,
// catch each) and a bad header CRC-16, where compress/gzip refuses too.
func TestInflateCorrupt(t *testing.T) {
	data := testInputs(t)["binary"][:200<<10]
	comp := gzipCLI(t, data, "-6")
	for cut := 0; cut < len(comp); cut += 1 + cut/7 {
		if _, err := gunzipAll(comp[:cut], 4096); err == nil {
			t.Fatalf("cut at %d of %d accepted", cut, len(comp))
		} else if cut > 0 && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, errInflate) {
			t.Fatalf("cut at %d: %v", cut, err)
		}
	}
	small := gzipCLI(t, []byte("hello, hello, hello world, a small member of text\n"), "-9")
	for i := 0; i < len(small)*8; i++ {
		bad := slices.Clone(small)
		bad[i/8] ^= 1 << (i % 8)
		got, err := gunzipAll(bad, 4096)
		ref, refErr := gunzipRef(bad)
		if refErr != nil && err == nil {
			t.Errorf("bit %d flipped: accepted what compress/gzip refuses (%v)", i, refErr)
		}
		if refErr == nil && (err != nil || !bytes.Equal(got, ref)) {
			t.Errorf("bit %d flipped: compress/gzip accepts, we: %v", i, err)
		}
	}
	hc := withHeaderCRC(gzipStd(t, []byte("x"), 6))
	hc[10] ^= 1 // in the CRC-16
	if _, err := gunzipAll(hc, 4096); !errors.Is(err, errInflate) {
		t.Errorf("bad header CRC-16: %v", err)
	}
}

// FuzzInflate compares the inflater with compress/gzip on any input: no
// panic, the same output or both refuse, never accept what it refuses.
func FuzzInflate(f *testing.F) {
	for _, data := range [][]byte{nil, []byte("x"), bytes.Repeat([]byte("abcd"), 300), mixedData(20000)} {
		f.Add(gzipStd(f, data, stdflate.NoCompression))
		f.Add(gzipStd(f, data, stdflate.BestSpeed))
		f.Add(gzipLevel(f, data, 9))
		f.Add(gzipLevel(f, data, kflate.HuffmanOnly))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		ref, refErr := gunzipRef(in)
		got, err := gunzipAll(in, fastRoom+100)
		switch {
		case refErr != nil && err == nil:
			t.Fatalf("accepted what compress/gzip refuses: %v", refErr)
		case refErr == nil && err != nil:
			t.Fatalf("refused what compress/gzip accepts: %v", err)
		case err == nil && !bytes.Equal(got, ref):
			t.Fatalf("%d bytes out, compress/gzip %d, differing", len(got), len(ref))
		}
	})
}

// benchPayload is /usr/bin data: the first 32 MB of its files.
func benchPayload(b *testing.B) []byte {
	files, _ := filepath.Glob("/usr/bin/*")
	var data []byte
	for _, p := range files {
		if len(data) > 32<<20 {
			break
		}
		if fi, err := os.Lstat(p); err == nil && fi.Mode().IsRegular() {
			d, _ := os.ReadFile(p)
			data = append(data, d...)
		}
	}
	if len(data) < 1<<20 {
		b.Skip("no /usr/bin data")
	}
	return data
}

// BenchmarkInflate decodes /usr/bin data compressed by gzip -6 (rpmbuild's
// w6.gzdio) with the inflater, klauspost/compress and compress/gzip.
func BenchmarkInflate(b *testing.B) {
	data := benchPayload(b)
	comp := gzipCLI(b, data, "-6")
	b.Run("inflater", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		buf := make([]byte, inflateWindow+readaheadBlock)
		for b.Loop() {
			next := func([]byte) ([]byte, error) { return buf, nil }
			if err := newInflater(bytes.NewReader(comp), next).run(); err != nil {
				b.Fatal(err)
			}
		}
	})
	for name, newReader := range map[string]func(io.Reader) (io.Reader, error){
		"klauspost": func(r io.Reader) (io.Reader, error) { return kgzip.NewReader(r) },
		"stdlib":    func(r io.Reader) (io.Reader, error) { return stdgzip.NewReader(r) },
	} {
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			buf := make([]byte, readaheadBlock)
			for b.Loop() {
				z, err := newReader(bytes.NewReader(comp))
				if err != nil {
					b.Fatal(err)
				}
				for {
					if _, err := io.ReadFull(z, buf); err != nil {
						break
					}
				}
			}
		})
	}
}

func crc32IEEE(b []byte) uint32 { return crc32.ChecksumIEEE(b) }

// TestArchiveGzipCorrupt: a flipped bit anywhere in a gzip payload is an
// error that marks the package unusable, or changes nothing that is read
// (a bit of the header's time, say); never other content read through.
// Reading stops on the error with the decoder's goroutine ahead of it.
func TestArchiveGzipCorrupt(t *testing.T) {
	flipPayloadBits(t, "gzip", 3<<20, 11, 100, func(at int, got, want []string, err error) {
		if err != nil {
			mustUnusable(t, err)
		} else if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("bit flipped at payload byte %d: other content read through", at)
		}
	})
}
