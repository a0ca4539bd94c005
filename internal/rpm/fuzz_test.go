package rpm

import (
	"bufio"
	"bytes"
	"io"
	"testing"

	uxz "github.com/ulikunitz/xz"
)

// FuzzRead reads, verifies and reads through the payload of any input:
// every failure matches ErrUnusable, nothing panics, and a package that
// reads has a file list an installer can trust (CheckPath holds).
func FuzzRead(f *testing.F) {
	for _, c := range []string{"gzip", "gzip:0", "zstd", "xz"} {
		f.Add(pack(f, c, baseFiles, nil))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		p, err := Read(r, int64(len(data)))
		if err != nil {
			mustUnusable(t, err)
			return
		}
		for _, file := range p.Files {
			if err := CheckPath(file.Path); err != nil {
				t.Fatalf("read a package with %v", err)
			}
		}
		if _, err := p.Verify(r); err != nil {
			mustUnusable(t, err)
		}
		// The digests of a fuzzed package rarely hold: the payload must
		// be safe to read without them.
		if _, err := readAll(t, r, p); err != nil {
			mustUnusable(t, err)
		}
	})
}

// FuzzArchive fuzzes the uncompressed cpio archive alone, against the
// header of the base package.
func FuzzArchive(f *testing.F) {
	good := pack(f, "gzip", baseFiles, nil)
	p, err := Read(bytes.NewReader(good), int64(len(good)))
	if err != nil {
		f.Fatal(err)
	}
	archive := gunzipPayload(f, good, p)
	f.Add(archive)
	f.Add(archive[:len(archive)/2])
	f.Add(bytes.Replace(archive, []byte("070701"), []byte("07070X"), 1))
	f.Fuzz(func(t *testing.T, data []byte) {
		ar := p.newArchive(bufio.NewReader(&limitedPayload{r: bytes.NewReader(data), limit: p.archiveMax}), nil)
		seen := map[int]bool{}
		for {
			e, err := ar.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				mustUnusable(t, err)
				return
			}
			if seen[e.Index] {
				t.Fatalf("entry %d twice", e.Index)
			}
			seen[e.Index] = true
			if e.Content {
				if _, err := io.Copy(io.Discard, ar); err != nil {
					mustUnusable(t, err)
					return
				}
			}
		}
		if len(seen) != len(p.Files) {
			t.Fatalf("end of archive after %d of %d files", len(seen), len(p.Files))
		}
	})
}

// FuzzXZIndex feeds the multi-block xz reader: the index parser must
// refuse what it does not understand, and the decoding must fail, not
// panic, on a bad block.
func FuzzXZIndex(f *testing.F) {
	f.Add(xzMultiBlock(f, mixedData(5000), 1000, uxz.SHA256))
	f.Fuzz(func(t *testing.T, data []byte) {
		blocks, header := xzIndex(bytes.NewReader(data), int64(len(data)))
		n := xzSlots(blocks)
		if n < 2 {
			return
		}
		z := xzPackage.newParallelXZ(bytes.NewReader(data), header, blocks, n)
		defer z.Close()
		if _, err := io.Copy(io.Discard, io.LimitReader(z, 1<<20)); err != nil {
			mustUnusable(t, err)
		}
	})
}
