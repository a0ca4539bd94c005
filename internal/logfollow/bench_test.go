package logfollow

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/rs/zerolog"
)

// BenchmarkConsume measures line splitting and emitting (JSON encoding to
// io.Discard) of 72-byte lines fed in 64 KiB reads.
func BenchmarkConsume(b *testing.B) {
	var data bytes.Buffer
	for n := 0; data.Len() < readChunk*16; n++ {
		data.WriteString(numbered(n) + "\n")
	}
	fl, err := New(Config{Path: "/nonexistent"}, zerolog.New(io.Discard))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(data.Len()))
	b.ReportAllocs()
	for b.Loop() {
		for p := data.Bytes(); len(p) > 0; {
			k := min(len(p), readChunk)
			fl.consume(p[:k])
			p = p[k:]
		}
	}
}

// countWriter signals when it has seen want log events.
type countWriter struct {
	n, want atomic.Int64
	done    chan struct{}
}

func (w *countWriter) Write(p []byte) (int, error) {
	if w.n.Add(int64(bytes.Count(p, []byte{'\n'}))) == w.want.Load() {
		close(w.done)
	}
	return len(p), nil
}

// BenchmarkFollowFile measures following a 16 MiB file from its start:
// reading, splitting and emitting.
func BenchmarkFollowFile(b *testing.B) {
	path := filepath.Join(b.TempDir(), "avagent.log")
	var sb strings.Builder
	lines := 0
	for ; sb.Len() < 16<<20; lines++ {
		sb.WriteString(numbered(lines) + "\n")
	}
	if err := os.WriteFile(path, []byte(sb.String()), 0o644); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(sb.Len()))
	for b.Loop() {
		// One debug line ("log follower started") is not counted: Info level.
		w := &countWriter{done: make(chan struct{})}
		w.want.Store(int64(lines))
		fl, err := New(Config{Path: path, FromStart: true}, zerolog.New(w).Level(zerolog.InfoLevel))
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- fl.Run(ctx) }()
		<-w.done
		cancel()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
	}
}
