package rpm

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/avsidecar/avsidecar/internal/testkit"
	"github.com/google/rpmpack"
)

// TestRead reads what an installer needs from a package.
func TestRead(t *testing.T) {
	b := pack(t, "gzip", baseFiles, func(r *rpmpack.RPM) {
		r.AddPrein("echo pre")
		r.AddPostin("echo post")
	})
	p, err := Read(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	if p.NEVRA() != "x-1-1.x86_64" || p.Compressor != "gzip" || fmt.Sprint(p.Prefixes) != "[/opt/x]" ||
		p.Pre.Body != "echo pre" || p.Post.Body != "echo post" || p.DigestAlgo != SHA256 {
		t.Errorf("read %+v", p)
	}
	var got []string
	for _, f := range p.Files {
		got = append(got, fmt.Sprintf("%s %o %d %s", f.Path, f.Mode, f.Size, f.LinkTo))
	}
	want := "/etc/x.conf 100644 5 |/opt/x 40755 4096 |/opt/x/bin 40755 4096 |/opt/x/bin/link 120777 4 tool|/opt/x/bin/tool 100755 20 |/opt/x/empty 100644 0 "
	if strings.Join(got, "|") != want {
		t.Errorf("files:\n%s\nwant\n%s", strings.Join(got, "|"), want)
	}
	v, err := p.Verify(bytes.NewReader(b))
	if err != nil || len(v.SHA256) != 64 || v.Signature != "none" {
		t.Errorf("verify: %+v, %v", v, err)
	}
}

// TestNotAnRPM: a file that is not an RPM is told as such, whatever its
// length: a 6-byte text file as a 4 KB one, an empty file, and the start
// of a real package cut inside its lead.
func TestNotAnRPM(t *testing.T) {
	good := pack(t, "gzip", baseFiles, nil)
	for _, c := range []struct {
		name, data, want string
	}{
		{"6-byte text", "hello\n", "not an rpm file (bad lead magic)"},
		{"4 KB text", strings.Repeat("not a package, a text file\n", 4096/27), "not an rpm file (bad lead magic)"},
		{"empty", "", "not an rpm file (bad lead magic)"},
		{"3 bytes of the magic", string(good[:3]), "not an rpm file (bad lead magic)"},
		{"lead cut at 50 bytes", string(good[:50]), "not an rpm file (50 bytes, shorter than the 96-byte lead)"},
	} {
		_, err := Read(strings.NewReader(c.data), int64(len(c.data)))
		mustUnusable(t, err)
		if err.Error() != c.want {
			t.Errorf("%s: %q, want %q", c.name, err, c.want)
		}
	}
}

// TestArchive reads the payload in every compression rpmpack writes:
// entries in header order, each with its content.
func TestArchive(t *testing.T) {
	for _, c := range []string{"gzip", "xz", "zstd", "lzma", "gzip:0"} {
		t.Run(c, func(t *testing.T) {
			b := pack(t, c, baseFiles, nil)
			p, err := Read(bytes.NewReader(b), int64(len(b)))
			if err != nil {
				t.Fatal(err)
			}
			got, err := readAll(t, bytes.NewReader(b), p)
			if err != nil {
				t.Fatal(err)
			}
			want := []string{`/etc/x.conf 100000 "conf\n"`, "/opt/x 40000", "/opt/x/bin 40000", "/opt/x/bin/link 120000",
				`/opt/x/bin/tool 100000 "#!/bin/sh\necho tool\n"`, `/opt/x/empty 100000 ""`}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("entries\n%q\nwant\n%q", got, want)
			}
		})
	}
}

// TestArchiveUnread: an entry whose content is not read is still read and
// checked by the next Next.
func TestArchiveUnread(t *testing.T) {
	files := append([]rpmpack.RPMFile{}, baseFiles...)
	b := pack(t, "gzip", files, func(r *rpmpack.RPM) {
		var digests []string
		for _, f := range sortedNames(files) {
			d := ""
			if f.Mode&0o170000 == 0o100000 || f.Mode&0o170000 == 0 {
				d = strings.Repeat("ab", 32)
			}
			digests = append(digests, d)
		}
		r.AddCustomTag(tagFileDigests, rpmpack.EntryStringSlice(digests))
	})
	p, err := Read(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	ar, err := p.Open(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer ar.Close()
	e, err := ar.Next()
	if err != nil || !e.Content {
		t.Fatalf("first entry %+v, %v", e, err)
	}
	_, err = ar.Next()
	mustUnusable(t, err)
	if !strings.Contains(err.Error(), "/etc/x.conf: digest mismatch") {
		t.Errorf("error %q does not name the file", err)
	}
	if _, again := ar.Next(); again != err {
		t.Errorf("next after a failure: %v, want the same error", again)
	}
}

func sortedNames(files []rpmpack.RPMFile) []rpmpack.RPMFile {
	s := append([]rpmpack.RPMFile(nil), files...)
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			if s[j].Name < s[i].Name {
				s[i], s[j] = s[j], s[i]
			}
		}
	}
	return s
}

// TestSourcePackage: a source package (what rpmbuild -bs makes) holds
// sources to build from; rpm -i would put them in a build tree, not
// install them. It is refused, saying so.
func TestSourcePackage(t *testing.T) {
	testkit.NeedCommand(t, "rpmbuild")
	top := t.TempDir()
	spec := filepath.Join(top, "src.spec")
	body := "Name: src\nVersion: 1\nRelease: 1\nSummary: s\nLicense: MIT\nSource0: src.txt\n%description\ns\n%files\n"
	if err := os.WriteFile(spec, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(top, "SOURCES"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(top, "SOURCES/src.txt"), []byte("source\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("rpmbuild", "--define", "_topdir "+top, "-bs", spec).CombinedOutput(); err != nil {
		t.Fatalf("rpmbuild -bs: %v\n%s", err, out)
	}
	matches, _ := filepath.Glob(filepath.Join(top, "SRPMS", "*.src.rpm"))
	if len(matches) != 1 {
		t.Fatalf("rpmbuild -bs made %v", matches)
	}
	b, err := os.ReadFile(matches[0])
	if err != nil {
		t.Fatal(err)
	}
	_, err = Read(bytes.NewReader(b), int64(len(b)))
	mustUnusable(t, err)
	if !strings.Contains(err.Error(), "src-1-1 is a source package") {
		t.Errorf("refusal %q does not say it is a source package", err)
	}
}

// TestOldFilenames reads a package as rpm 3 wrote them: whole paths in
// OLDFILENAMES, no payload tags, an MD5 over header and payload only, and
// archive names without "./".
func TestOldFilenames(t *testing.T) {
	b, err := testkit.BuildRPMv3("oldpkg", "1.0", "1", []testkit.V3File{
		{Path: "/opt/v3", Mode: 0o40755},
		{Path: "/opt/v3/bin", Mode: 0o40755},
		{Path: "/opt/v3/bin/tool", Mode: 0o100755, Body: "tool\n"},
		{Path: "/opt/v3/link", Mode: 0o120777, Body: "bin/tool"},
		{Path: "/etc/old.conf", Mode: 0o100644, Body: "conf\n"},
	})
	if err != nil {
		t.Fatal(err)
	}
	p, err := Read(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	v, err := p.Verify(bytes.NewReader(b))
	if err != nil || fmt.Sprint(v.Checked) != "[md5]" {
		t.Fatalf("verify: %+v, %v", v, err)
	}
	got, err := readAll(t, bytes.NewReader(b), p)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{`/etc/old.conf 100000 "conf\n"`, "/opt/v3 40000", "/opt/v3/bin 40000", `/opt/v3/bin/tool 100000 "tool\n"`, "/opt/v3/link 120000"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("entries\n%q\nwant\n%q", got, want)
	}
}

// TestArchiveXZCorrupt: the payload's xz block checks are verified, so
// a flipped bit anywhere in an xz payload is an error that marks the
// package unusable: nothing in an xz stream can change unchecked.
func TestArchiveXZCorrupt(t *testing.T) {
	flipPayloadBits(t, "xz", 50000, 9, 200, func(at int, got, want []string, err error) {
		if err == nil {
			t.Errorf("bit flipped at payload byte %d: no error", at)
			return
		}
		mustUnusable(t, err)
	})
}

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

// flipPayloadBits packs a package of size bytes of data, compressed as
// compressor, flips n random bits of its payload, one at a time, and
// hands check what reading each gave and what the intact package gives.
func flipPayloadBits(t *testing.T, compressor string, size int, seed uint64, n int, check func(at int, got, want []string, err error)) {
	files := append([]rpmpack.RPMFile{}, baseFiles...)
	files = append(files, file("/opt/x/data", 0o644, string(mixedData(size))))
	b := pack(t, compressor, files, nil)
	p, err := Read(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	want, err := readAll(t, bytes.NewReader(b), p)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(seed, seed+1))
	for range n {
		bad := bytes.Clone(b)
		i := int(p.PayloadOffset) + rng.IntN(len(b)-int(p.PayloadOffset))
		bad[i] ^= 1 << rng.IntN(8)
		got, err := readAll(t, bytes.NewReader(bad), p)
		check(i-int(p.PayloadOffset), got, want, err)
	}
}
