package browse

import (
	"fmt"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/rs/zerolog"
)

// BenchmarkFilesCached serves pages of a cached 10,000-entry directory
// through the handler (no network): the cost of a hit.
func BenchmarkFilesCached(b *testing.B) {
	dir := b.TempDir()
	for i := range 10000 {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("file-%05d.dat", i)), nil, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	h, err := New(Config{Roots: []string{dir}, MaxLimit: 10000, CacheTTL: -1}, zerolog.New(io.Discard))
	if err != nil {
		b.Fatal(err)
	}
	defer h.Close()
	for _, limit := range []int{200, 10000} {
		b.Run(fmt.Sprintf("limit=%d", limit), func(b *testing.B) {
			url := fmt.Sprintf("/v1/files?path=%s&limit=%d", dir, limit)
			b.ReportAllocs()
			for b.Loop() {
				r := httptest.NewRequest("GET", url, nil)
				r.RemoteAddr, r.Host = "127.0.0.1:1", "127.0.0.1:9180"
				w := httptest.NewRecorder()
				w.Body = nil
				h.ServeHTTP(w, r)
				if w.Code != 200 {
					b.Fatal(w.Code)
				}
			}
		})
	}
}
