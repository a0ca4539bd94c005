package fswalk

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

func benchTree(b *testing.B, dirs, files int) (*Roots, string) {
	b.Helper()
	root := b.TempDir()
	for d := range dirs {
		p := filepath.Join(root, fmt.Sprintf("d%03d", d))
		if dirs == 1 {
			p = root
		}
		os.MkdirAll(p, 0o755)
		for f := range files {
			os.WriteFile(filepath.Join(p, fmt.Sprintf("file-%06d.dat", f)), nil, 0o644)
		}
	}
	rs, err := OpenRoots([]string{root})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { rs.Close() })
	return rs, root
}

// BenchmarkReadDir10k reads a 10,000-entry directory (warm cache): the
// allocations per op are per listing, not per entry.
func BenchmarkReadDir10k(b *testing.B) {
	rs, root := benchTree(b, 1, 10000)
	b.ReportAllocs()
	for b.Loop() {
		d, err := rs.OpenDir(root)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := ReadDir(d); err != nil {
			b.Fatal(err)
		}
		d.Close()
	}
}

type nopVisitor struct{}

func (nopVisitor) Visit(int, string, *Entry) error { return nil }
func (nopVisitor) DirError(int, string, error)     {}

// BenchmarkWalk20k walks 100 directories of 200 files (warm cache).
func BenchmarkWalk20k(b *testing.B) {
	rs, root := benchTree(b, 100, 200)
	d, err := rs.OpenDir(root)
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	b.ReportAllocs()
	for b.Loop() {
		if err := Walk(context.Background(), d, WalkOptions{}, nopVisitor{}); err != nil {
			b.Fatal(err)
		}
	}
}
