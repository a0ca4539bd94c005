package testkit

import (
	"io"
	"testing"
	"time"
)

func TestLogLinesWaitsAcrossSplitWrites(t *testing.T) {
	l := NewLogLines()
	r, w := io.Pipe()
	go l.Follow(r, nil)
	go func() {
		io.WriteString(w, `{"component":"x","message":"one","n":1}`+"\n"+`{"component":"x","mess`)
		io.WriteString(w, `age":"two","n":2}`+"\nnot json\n")
		w.Close()
	}()
	m := l.Wait(t, 0, "two", 5*time.Second, Msg("x", "two", "n", 2))
	if m["n"] != float64(2) {
		t.Fatalf("got %v", m)
	}
	l.Wait(t, 0, "the raw line", 5*time.Second, func(m map[string]any) bool { return m["raw"] == "not json" })
	if n := l.Count(0, Msg("", "one")); n != 1 {
		t.Fatalf("Count = %d, want 1", n)
	}

	w2 := NewLogLines()
	io.WriteString(w2, "{\"message\":\"a\"}\n{\"message\":")
	if n := w2.Count(0, Msg("", "a")); n != 1 || w2.Mark() != 1 {
		t.Fatalf("partial line counted: Count %d Mark %d", n, w2.Mark())
	}
}
