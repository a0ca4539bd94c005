package install

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/google/rpmpack"
	"github.com/rs/zerolog"
)

// BenchmarkReceiptMatches is a start with a matching receipt for a
// package of 700 files: what every pod start pays once installed.
func BenchmarkReceiptMatches(b *testing.B) {
	files := []rpmpack.RPMFile{dir(testPrefix, 0o755)}
	for d := range 7 {
		files = append(files, dir(fmt.Sprintf("%s/d%d", testPrefix, d), 0o755))
		for i := range 100 {
			files = append(files, file(fmt.Sprintf("%s/d%d/f%03d", testPrefix, d, i), 0o644, "content"))
		}
	}
	rpm := writeRPM(b, pack(b, packOpts{files: files}))
	root := b.TempDir()
	cfg := Config{RPM: rpm, Root: root, Prefix: "/opt/avamar"}
	if _, err := Install(context.Background(), cfg, zerolog.Nop()); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		res, err := Install(context.Background(), cfg, zerolog.Nop())
		if err != nil || res.Changed {
			b.Fatalf("%+v, %v", res, err)
		}
	}
}

// BenchmarkInstallRPM installs the package AVSIDECAR_BENCH_RPM names into
// a fresh root each time (in AVSIDECAR_BENCH_DIR, else the temporary
// directory), syncfs on, as `avsidecar install` does: for profiles of
// where an install's time goes (bench/install/run.sh with PROFILE=1).
func BenchmarkInstallRPM(b *testing.B) {
	rpm := os.Getenv("AVSIDECAR_BENCH_RPM")
	if rpm == "" {
		b.Skip("AVSIDECAR_BENCH_RPM names no package")
	}
	for b.Loop() {
		b.StopTimer()
		root, err := os.MkdirTemp(os.Getenv("AVSIDECAR_BENCH_DIR"), "root-")
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		res, err := Install(context.Background(), Config{RPM: rpm, Root: root, Prefix: "/opt/avamar", NoScripts: true}, zerolog.Nop())
		if err != nil || !res.Changed {
			b.Fatalf("%+v, %v", res, err)
		}
		b.StopTimer()
		if err := os.RemoveAll(root); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}
