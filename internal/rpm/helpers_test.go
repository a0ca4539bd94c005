package rpm

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/avsidecar/avsidecar/internal/testkit"
	"github.com/google/rpmpack"
	"github.com/klauspost/compress/gzip"
)

var testMTime = uint32(time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC).Unix())

func file(name string, mode uint, body string) rpmpack.RPMFile {
	return rpmpack.RPMFile{Name: name, Mode: mode, Body: []byte(body), Owner: "root", Group: "root", MTime: testMTime}
}

func dir(name string) rpmpack.RPMFile {
	return rpmpack.RPMFile{Name: name, Mode: 0o40755, Owner: "root", Group: "root", MTime: testMTime}
}

func symlink(name, target string) rpmpack.RPMFile {
	return rpmpack.RPMFile{Name: name, Mode: 0o120777, Body: []byte(target), Owner: "root", Group: "root", MTime: testMTime}
}

// baseFiles is a small package: directories, files, a symlink.
var baseFiles = []rpmpack.RPMFile{
	dir("/opt/x"),
	dir("/opt/x/bin"),
	file("/opt/x/bin/tool", 0o755, "#!/bin/sh\necho tool\n"),
	file("/opt/x/empty", 0o644, ""),
	symlink("/opt/x/bin/link", "tool"),
	file("/etc/x.conf", 0o644, "conf\n"),
}

// pack builds a package with rpmpack; tweak may add custom tags.
func pack(t testing.TB, compressor string, files []rpmpack.RPMFile, tweak func(*rpmpack.RPM)) []byte {
	t.Helper()
	r, err := rpmpack.NewRPM(rpmpack.RPMMetaData{
		Name: "x", Version: "1", Release: "1", Arch: "x86_64", OS: "linux", Summary: "x", Description: "x",
		Licence: "MIT", Compressor: compressor, Prefixes: []string{"/opt/x"},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		r.AddFile(f)
	}
	if tweak != nil {
		tweak(r)
	}
	var b bytes.Buffer
	if err := r.Write(&b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// readAll reads the whole payload of p, every entry's content included,
// and returns what it found, one line per entry.
func readAll(t testing.TB, r io.ReaderAt, p *Package) ([]string, error) {
	t.Helper()
	ar, err := p.Open(r)
	if err != nil {
		return nil, err
	}
	defer ar.Close()
	var got []string
	for {
		e, err := ar.Next()
		if err == io.EOF {
			return got, nil
		}
		if err != nil {
			return got, err
		}
		line := fmt.Sprintf("%s %o", e.Path, e.Mode&ModeTypeMask)
		if e.Content {
			b, err := io.ReadAll(ar)
			if err != nil {
				return got, err
			}
			line += fmt.Sprintf(" %q", b)
		}
		got = append(got, line)
	}
}

// mustUnusable fails unless err matches ErrUnusable.
func mustUnusable(t testing.TB, err error) {
	t.Helper()
	if !errors.Is(err, ErrUnusable) {
		t.Fatalf("%v, want an error matching ErrUnusable", err)
	}
}

// rpmbuild builds, with the payload compression given, a package of
// incompressible files of size bytes in all and returns its path.
func rpmbuild(t testing.TB, payload string, size int) string {
	t.Helper()
	return rpmbuildFiles(t, payload, fmt.Sprintf("for i in 1 2 3 4; do head -c %d /dev/urandom > f$i; done", size/4))
}

// rpmbuildFiles builds, with the payload compression given, a package of
// the files the shell script makes in its working directory, and returns
// its path.
func rpmbuildFiles(t testing.TB, payload, script string) string {
	t.Helper()
	testkit.NeedCommand(t, "rpmbuild")
	top := t.TempDir()
	spec := fmt.Sprintf(`Name: payload
Version: 1
Release: 1
Summary: payload test
License: MIT
BuildArch: noarch
%%define _binary_payload %s
%%define __os_install_post %%{nil}
%%define debug_package %%{nil}
%%description
Files made by a script.
%%install
mkdir -p %%{buildroot}/opt/payload
cd %%{buildroot}/opt/payload
%s
%%files
/opt/payload
`, payload, script)
	specPath := filepath.Join(top, "payload.spec")
	if err := os.WriteFile(specPath, []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("rpmbuild", "--define", "_topdir "+top, "-bb", specPath).CombinedOutput(); err != nil {
		t.Fatalf("rpmbuild: %v\n%s", err, out)
	}
	matches, _ := filepath.Glob(filepath.Join(top, "RPMS", "*", "*.rpm"))
	if len(matches) != 1 {
		t.Fatalf("rpmbuild made %v", matches)
	}
	return matches[0]
}

// gunzipPayload returns the cpio archive of b, a package with a gzip
// payload.
func gunzipPayload(t testing.TB, b []byte, p *Package) []byte {
	t.Helper()
	z, err := gzip.NewReader(bytes.NewReader(b[p.PayloadOffset:]))
	if err != nil {
		t.Fatal(err)
	}
	archive, err := io.ReadAll(z)
	if err != nil {
		t.Fatal(err)
	}
	return archive
}
