package install

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/avsidecar/avsidecar/internal/rpm"
	"github.com/google/rpmpack"
)

// sortedFiles is the order rpmpack writes a package's files in: by name.
func sortedFiles(files []rpmpack.RPMFile) []rpmpack.RPMFile {
	s := append([]rpmpack.RPMFile(nil), files...)
	sort.Slice(s, func(i, j int) bool { return s[i].Name < s[j].Name })
	return s
}

// withTag builds the base package with one header tag replaced by what
// value makes of the sorted file list. The digests are computed after the
// change: only the installer's own checks can refuse the result.
func withTag(t testing.TB, tag int, value func(files []rpmpack.RPMFile) rpmpack.IndexEntry) []byte {
	files := baseFiles("1.0")
	return pack(t, packOpts{files: files, tweak: func(r *rpmpack.RPM) { r.AddCustomTag(tag, value(sortedFiles(files))) }})
}

// basenamesWith returns the base names of the sorted files with the one
// named old replaced.
func basenamesWith(files []rpmpack.RPMFile, old, repl string) rpmpack.IndexEntry {
	var names []string
	for _, f := range files {
		b := path.Base(f.Name)
		if f.Name == old {
			b = repl
		}
		names = append(names, b)
	}
	return rpmpack.EntryStringSlice(names)
}

func sizesWith(files []rpmpack.RPMFile, name string, size uint32) rpmpack.IndexEntry {
	var sizes []uint32
	for _, f := range files {
		s := uint32(len(f.Body))
		if f.Mode&0o40000 != 0 {
			s = 4096
		}
		if f.Name == name {
			s = size
		}
		sizes = append(sizes, s)
	}
	return rpmpack.EntryUint32(sizes)
}

// flip returns b with the byte at i inverted.
func flip(b []byte, i int) []byte {
	c := bytes.Clone(b)
	c[i] ^= 0xff
	return c
}

type hostileCase struct {
	name string
	rpm  func(t testing.TB, good []byte, p *rpm.Package) []byte
	cfg  func(*Config)
}

// hostileCases are packages the installer must refuse with ErrUnusable
// without changing anything. good is a valid package, p its parsed form.
var hostileCases = []hostileCase{
	{name: "random bytes", rpm: func(t testing.TB, good []byte, p *rpm.Package) []byte {
		return bytes.Repeat([]byte("not an rpm at all "), 100)
	}},
	{name: "empty file", rpm: func(testing.TB, []byte, *rpm.Package) []byte { return nil }},
	{name: "wrong lead magic", rpm: func(_ testing.TB, good []byte, _ *rpm.Package) []byte { return flip(good, 0) }},
	{name: "wrong signature header magic", rpm: func(_ testing.TB, good []byte, _ *rpm.Package) []byte { return flip(good, rpmLeadSize) }},
	{name: "wrong header magic", rpm: func(_ testing.TB, good []byte, p *rpm.Package) []byte { return flip(good, int(p.HeaderOffset)) }},
	{name: "truncated in lead", rpm: func(_ testing.TB, good []byte, _ *rpm.Package) []byte { return good[:50] }},
	{name: "truncated in signature header", rpm: func(_ testing.TB, good []byte, _ *rpm.Package) []byte { return good[:rpmLeadSize+40] }},
	{name: "truncated in header", rpm: func(_ testing.TB, good []byte, p *rpm.Package) []byte { return good[:p.HeaderOffset+200] }},
	{name: "truncated at payload start", rpm: func(_ testing.TB, good []byte, p *rpm.Package) []byte { return good[:p.PayloadOffset] }},
	{name: "truncated in payload", rpm: func(_ testing.TB, good []byte, p *rpm.Package) []byte {
		return good[:p.PayloadOffset+(int64(len(good))-p.PayloadOffset)/2]
	}},
	{name: "truncated by one byte", rpm: func(_ testing.TB, good []byte, _ *rpm.Package) []byte { return good[:len(good)-1] }},
	{name: "extended", rpm: func(_ testing.TB, good []byte, _ *rpm.Package) []byte {
		return append(bytes.Clone(good), "trailing junk"...)
	}},
	{name: "header tampered", rpm: func(_ testing.TB, good []byte, p *rpm.Package) []byte {
		i := bytes.Index(good[p.HeaderOffset:], []byte("test client"))
		return flip(good, int(p.HeaderOffset)+i)
	}},
	{name: "payload tampered", rpm: func(_ testing.TB, good []byte, p *rpm.Package) []byte {
		return flip(good, int(p.PayloadOffset)+(len(good)-int(p.PayloadOffset))/2)
	}},
	{name: "signature header index out of range", rpm: func(_ testing.TB, good []byte, _ *rpm.Package) []byte {
		c := bytes.Clone(good)
		copy(c[rpmLeadSize+16+8:], []byte{0x7f, 0xff, 0xff, 0xff}) // offset of the first entry
		return c
	}},
	{name: "traversal in path", rpm: func(t testing.TB, _ []byte, _ *rpm.Package) []byte {
		return pack(t, packOpts{files: append(baseFiles("1.0"), file(testPrefix+"/../../../../../../tmp/evil", 0o644, "evil"))})
	}},
	{name: "dot-dot base name", rpm: func(t testing.TB, _ []byte, _ *rpm.Package) []byte {
		return withTag(t, tagBaseNames, func(f []rpmpack.RPMFile) rpmpack.IndexEntry {
			return basenamesWith(f, testPrefix+"/bin/secret", "..")
		})
	}},
	{name: "slash in base name", rpm: func(t testing.TB, _ []byte, _ *rpm.Package) []byte {
		return withTag(t, tagBaseNames, func(f []rpmpack.RPMFile) rpmpack.IndexEntry {
			return basenamesWith(f, testPrefix+"/bin/secret", "../../../../../../../tmp/evil")
		})
	}},
	{name: "relative directory", rpm: func(t testing.TB, _ []byte, _ *rpm.Package) []byte {
		return withTag(t, tagDirNames, func(f []rpmpack.RPMFile) rpmpack.IndexEntry {
			seen, dirs := map[string]bool{}, []string{}
			for _, x := range f {
				d, _ := path.Split(x.Name)
				if !seen[d] {
					seen[d] = true
					dirs = append(dirs, strings.TrimPrefix(d, "/"))
				}
			}
			return rpmpack.EntryStringSlice(dirs)
		})
	}},
	{name: "duplicate entry", rpm: func(t testing.TB, _ []byte, _ *rpm.Package) []byte {
		return withTag(t, tagBaseNames, func(f []rpmpack.RPMFile) rpmpack.IndexEntry {
			return basenamesWith(f, testPrefix+"/bin/secret", "avagent.bin")
		})
	}},
	{name: "file through a symlink", rpm: func(t testing.TB, _ []byte, _ *rpm.Package) []byte {
		return pack(t, packOpts{files: append(baseFiles("1.0"), symlink(testPrefix+"/lib", "/tmp"), file(testPrefix+"/lib/evil", 0o644, "evil"))})
	}},
	{name: "name too long", rpm: func(t testing.TB, _ []byte, _ *rpm.Package) []byte {
		return pack(t, packOpts{files: append(baseFiles("1.0"), file(testPrefix+"/bin/"+strings.Repeat("n", 250), 0o644, "x"))})
	}},
	{name: "file below a file", rpm: func(t testing.TB, _ []byte, _ *rpm.Package) []byte {
		return pack(t, packOpts{files: append(baseFiles("1.0"), file(testPrefix+"/bin/avagent.bin/evil", 0o644, "evil"))})
	}},
	{name: "file in the state dir", rpm: func(t testing.TB, _ []byte, _ *rpm.Package) []byte {
		return pack(t, packOpts{files: append(baseFiles("1.0"), file(testPrefix+"/var/avsidecar/install.json", 0o644, "{}"))})
	}},
	{name: "huge claimed size", cfg: func(c *Config) { c.MaxSize = 1 << 30 }, rpm: func(t testing.TB, _ []byte, _ *rpm.Package) []byte {
		return withTag(t, tagFileSizes, func(f []rpmpack.RPMFile) rpmpack.IndexEntry {
			return sizesWith(f, testPrefix+"/bin/secret", 0xfffffff0)
		})
	}},
	{name: "size differs from payload", rpm: func(t testing.TB, _ []byte, _ *rpm.Package) []byte {
		return withTag(t, tagFileSizes, func(f []rpmpack.RPMFile) rpmpack.IndexEntry {
			return sizesWith(f, testPrefix+"/bin/secret", 3)
		})
	}},
	{name: "file digest differs from content", rpm: func(t testing.TB, _ []byte, _ *rpm.Package) []byte {
		return withTag(t, tagFileDigests, func(f []rpmpack.RPMFile) rpmpack.IndexEntry {
			var d []string
			for _, x := range f {
				s := ""
				if x.Mode&0o170000 != 0o40000 && x.Mode&0o170000 != 0o120000 {
					s = strings.Repeat("ab", 32)
				}
				d = append(d, s)
			}
			return rpmpack.EntryStringSlice(d)
		})
	}},
	{name: "payload entry not in header", rpm: func(t testing.TB, _ []byte, _ *rpm.Package) []byte {
		return withTag(t, tagBaseNames, func(f []rpmpack.RPMFile) rpmpack.IndexEntry {
			return basenamesWith(f, testPrefix+"/bin/secret", "zzz-renamed")
		})
	}},
	{name: "symlink target differs from payload", rpm: func(t testing.TB, _ []byte, _ *rpm.Package) []byte {
		return withTag(t, tagFileLinkTos, func(f []rpmpack.RPMFile) rpmpack.IndexEntry {
			var l []string
			for _, x := range f {
				s := ""
				if x.Mode&0o170000 == 0o120000 {
					s = "/etc/shadow"
				}
				l = append(l, s)
			}
			return rpmpack.EntryStringSlice(l)
		})
	}},
	{name: "device node", rpm: func(t testing.TB, _ []byte, _ *rpm.Package) []byte {
		return withTag(t, tagFileModes, func(f []rpmpack.RPMFile) rpmpack.IndexEntry {
			var m []uint16
			for _, x := range f {
				mode := uint16(x.Mode)
				if x.Mode&0o170000 == 0 {
					mode |= 0o100000
				}
				if x.Name == testPrefix+"/bin/secret" {
					mode = 0o020600
				}
				m = append(m, mode)
			}
			return rpmpack.EntryUint16(m)
		})
	}},
	{name: "payload digest differs", rpm: func(t testing.TB, _ []byte, _ *rpm.Package) []byte {
		// The files match the header; only the payload digest, checked
		// while they are written, tells.
		return pack(t, packOpts{tweak: func(r *rpmpack.RPM) {
			r.AddCustomTag(tagPayloadDigest, rpmpack.EntryStringSlice([]string{strings.Repeat("ab", 32)}))
		}})
	}},
	{name: "compression differs from header", rpm: func(t testing.TB, _ []byte, _ *rpm.Package) []byte {
		return pack(t, packOpts{tweak: func(r *rpmpack.RPM) { r.AddCustomTag(tagPayloadCompressor, rpmpack.EntryString("xz")) }})
	}},
	{name: "unknown compression", rpm: func(t testing.TB, _ []byte, _ *rpm.Package) []byte {
		return pack(t, packOpts{tweak: func(r *rpmpack.RPM) { r.AddCustomTag(tagPayloadCompressor, rpmpack.EntryString("brotli")) }})
	}},
	{name: "no header digest", rpm: func(t testing.TB, _ []byte, _ *rpm.Package) []byte {
		return pack(t, packOpts{tweak: func(r *rpmpack.RPM) { r.AddCustomSig(sigSHA256, rpmpack.EntryString("")) }})
	}},
}

// TestHostile refuses every hostile package with ErrUnusable and leaves
// an existing installation, and everything outside the root, as it was.
func TestHostile(t *testing.T) {
	good := pack(t, packOpts{})
	goodPkg, err := rpm.Read(bytes.NewReader(good), int64(len(good)))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range hostileCases {
		t.Run(c.name, func(t *testing.T) {
			outer := t.TempDir()
			root := filepath.Join(outer, "root")
			mustRun(t, writeRPM(t, good), root)
			before := snapshot(t, outer)

			hostile := writeRPM(t, c.rpm(t, good, goodPkg))
			mods := []func(*Config){}
			if c.cfg != nil {
				mods = append(mods, c.cfg)
			}
			_, err := run(t, hostile, root, mods...)
			if !errors.Is(err, ErrUnusable) {
				t.Fatalf("install: %v, want ErrUnusable", err)
			}
			t.Logf("refused: %v", err)
			diffTrees(t, before, snapshot(t, outer))
			if _, err := os.Lstat("/tmp/evil"); err == nil {
				t.Errorf("/tmp/evil exists: written outside the root")
			}
		})
	}
}

var (
	binaryOnce sync.Once
	binaryPath string
	binaryErr  error
)

// avsidecarBinary builds cmd/avsidecar once per test binary.
func avsidecarBinary(t testing.TB) string {
	t.Helper()
	binaryOnce.Do(func() {
		dir, err := os.MkdirTemp("", "avsidecar-bin-")
		if err != nil {
			binaryErr = err
			return
		}
		binaryPath = filepath.Join(dir, "avsidecar")
		out, err := exec.Command("go", "build", "-o", binaryPath, "../../cmd/avsidecar").CombinedOutput()
		if err != nil {
			binaryErr = errors.New(string(out))
		}
	})
	if binaryErr != nil {
		t.Fatalf("build avsidecar: %v", binaryErr)
	}
	return binaryPath
}

// TestHostileExitCode runs `avsidecar install` on every hostile package:
// each exits 3 with one clear line on stderr.
func TestHostileExitCode(t *testing.T) {
	bin := avsidecarBinary(t)
	good := pack(t, packOpts{})
	goodPkg, err := rpm.Read(bytes.NewReader(good), int64(len(good)))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range hostileCases {
		if c.cfg != nil {
			continue // needs a setting the command line does not have
		}
		t.Run(c.name, func(t *testing.T) {
			root := t.TempDir()
			if err := os.MkdirAll(filepath.Join(root, "opt/avamar"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(root, "opt/avamar/AvamarClient-1.rpm"), c.rpm(t, good, goodPkg), 0o644); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(bin, "install", "--root", root, "--prefix", "/opt/av", "--nosync")
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 3 {
				t.Fatalf("exit: %v, want status 3; stderr:\n%s", err, stderr.String())
			}
			if lines := strings.Count(strings.TrimSpace(stderr.String()), "\n"); lines != 0 || !strings.HasPrefix(stderr.String(), "avsidecar install: ") {
				t.Errorf("stderr is not one clear line:\n%s", stderr.String())
			}
			if _, err := os.Lstat(filepath.Join(root, "opt/av")); err == nil {
				t.Errorf("the refused package left %s", filepath.Join(root, "opt/av"))
			}
		})
	}
}

// TestCommandLine: `avsidecar install` defaults from the environment,
// prints a one-line summary, and exits 2 on bad usage.
func TestCommandLine(t *testing.T) {
	bin := avsidecarBinary(t)
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "opt/avamar/AvamarClient-1.0.rpm"), string(pack(t, packOpts{})))
	env := append(os.Environ(), "AVSIDECAR_ROOT="+root, "AVAMAR_PREFIX=/srv/avamar", "AVSIDECAR_LOG_LEVEL=warn")
	runBin := func(args ...string) (string, int) {
		cmd := exec.Command(bin, append([]string{"install"}, args...)...)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return string(out), ee.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return string(out), 0
	}
	out, code := runBin("--nosync")
	if code != 0 || !strings.HasPrefix(out, "AvamarClient-1.0-1.x86_64 installed: ") || strings.Count(out, "\n") != 1 {
		t.Errorf("install: exit %d:\n%s", code, out)
	}
	if !exists(filepath.Join(root, "srv/avamar/bin/avagent.bin")) {
		t.Errorf("AVAMAR_PREFIX not used")
	}
	out, code = runBin()
	if code != 0 || !strings.Contains(out, "already installed (receipt matches)") {
		t.Errorf("second install: exit %d:\n%s", code, out)
	}
	for _, args := range [][]string{
		{"--prefix", "relative"},
		{"--root", "relative"},
		{"--rpm", "/nothing/*.rpm"},
		{"--no-such-flag"},
		{"extra-argument"},
	} {
		if out, code := runBin(args...); code != 2 {
			t.Errorf("%v: exit %d, want 2:\n%s", args, code, out)
		}
	}
}
