package install

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/avsidecar/avsidecar/internal/rpm"
	"github.com/klauspost/compress/gzip"
	"github.com/rs/zerolog"
)

// fuzzInstall runs the installer's reader, planner and extractor (not
// the digest check, which random input would almost never pass: the
// extractor must be safe on its own) on the package in data, and checks
// that it either fails with ErrUnusable or installs, and never writes
// outside its root.
func fuzzInstall(t *testing.T, data []byte, payloadless func(*rpm.Package)) {
	// tmpfs when there is one: the journal's fsyncs make each run cost
	// milliseconds on a disk, and minimising an input takes thousands.
	outer, err := os.MkdirTemp(fuzzTmp(), "fuzz-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(outer)
	rpmPath := filepath.Join(outer, "in.rpm")
	if err = os.WriteFile(rpmPath, data, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(rpmPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p, err := rpm.Read(f, int64(len(data)))
	if err != nil {
		if !errors.Is(err, ErrUnusable) {
			t.Fatalf("read: %v is not ErrUnusable", err)
		}
		return
	}
	if payloadless != nil {
		payloadless(p)
	}
	rootDir := filepath.Join(outer, "root")
	if err := os.Mkdir(rootDir, 0o755); err != nil {
		t.Fatal(err)
	}
	root, err := os.OpenRoot(rootDir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	cfg, _ := Config{RPM: rpmPath, Root: rootDir, Prefix: "/opt/avamar", MaxSize: 16 << 20, NoScripts: true, NoSync: true}.withDefaults()
	j := &job{cfg: cfg, log: zerolog.Nop(), root: root, file: f}
	pl, err := makePlan(p, cfg, j.log)
	var done *applied
	if err == nil {
		done, err = j.apply(context.Background(), pl, state{}, &check{v: rpm.Verification{SHA256: "fuzz"}})
	}
	if err == nil {
		_, err = j.record(pl, done)
	}
	if err != nil && !errors.Is(err, ErrUnusable) {
		t.Fatalf("install: %v is not ErrUnusable", err)
	}
	entries, err := os.ReadDir(outer)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 {
		t.Fatalf("written outside the root: %v", entries)
	}
}

func fuzzTmp() string {
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		return "/dev/shm"
	}
	return os.TempDir()
}

func FuzzPackage(f *testing.F) {
	for _, c := range []string{"gzip:0", "gzip", "zstd", "xz"} {
		f.Add(pack(f, packOpts{compressor: c}))
	}
	f.Add(pack(f, packOpts{compressor: "gzip:0", files: append(baseFiles("1.0"), symlink(testPrefix+"/lib", "/tmp"), file(testPrefix+"/lib/x", 0o644, "x"))}))
	f.Fuzz(func(t *testing.T, data []byte) {
		fuzzInstall(t, data, nil)
	})
}

// FuzzPayload fuzzes the cpio archive alone: the input is the
// uncompressed payload of the base package, whose headers stay valid.
func FuzzPayload(f *testing.F) {
	good := pack(f, packOpts{})
	p, err := rpm.Read(bytes.NewReader(good), int64(len(good)))
	if err != nil {
		f.Fatal(err)
	}
	head := good[:p.PayloadOffset]
	dec, err := gzip.NewReader(bytes.NewReader(good[p.PayloadOffset:]))
	if err != nil {
		f.Fatal(err)
	}
	archive, err := io.ReadAll(dec)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(archive)
	f.Add(archive[:len(archive)/2])
	f.Add(bytes.Replace(archive, []byte("070701"), []byte("07070X"), 1))
	f.Fuzz(func(t *testing.T, payload []byte) {
		data := append(append([]byte(nil), head...), payload...)
		fuzzInstall(t, data, func(p *rpm.Package) { p.Compressor = "none" })
	})
}
