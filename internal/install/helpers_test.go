package install

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/rpmpack"
	"github.com/rs/zerolog"
)

const testPrefix = "/usr/local/avamar"

// testMTime is the mtime of every file of the test packages.
var testMTime = uint32(time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC).Unix())

// packOpts describes a package built with rpmpack.
type packOpts struct {
	version     string
	compressor  string
	files       []rpmpack.RPMFile
	pre, post   string
	tweak       func(r *rpmpack.RPM) // custom tags, to make hostile packages
	noPrefixes  bool
	extraPrefix []string
}

func file(name string, mode uint, body string) rpmpack.RPMFile {
	return rpmpack.RPMFile{Name: name, Mode: mode, Body: []byte(body), Owner: "root", Group: "root", MTime: testMTime}
}

func dir(name string, mode uint) rpmpack.RPMFile {
	return rpmpack.RPMFile{Name: name, Mode: 0o40000 | mode, Owner: "root", Group: "root", MTime: testMTime}
}

func symlink(name, target string) rpmpack.RPMFile {
	return rpmpack.RPMFile{Name: name, Mode: 0o120777, Body: []byte(target), Owner: "root", Group: "root", MTime: testMTime}
}

func config(name, body string) rpmpack.RPMFile {
	f := file(name, 0o644, body)
	f.Type = rpmpack.ConfigFile | rpmpack.NoReplaceFile
	return f
}

// baseFiles is a small client: the prefix with bin, etc and var, an
// executable, a %config file, a symlink and an init script outside the
// prefix.
func baseFiles(version string) []rpmpack.RPMFile {
	return []rpmpack.RPMFile{
		dir(testPrefix, 0o755),
		dir(testPrefix+"/bin", 0o755),
		dir(testPrefix+"/etc", 0o755),
		dir(testPrefix+"/var", 0o755),
		file(testPrefix+"/bin/avagent.bin", 0o755, "#!/bin/sh\necho agent "+version+"\n"),
		file(testPrefix+"/bin/secret", 0o600, "only root "+version+"\n"),
		symlink(testPrefix+"/bin/agent", "avagent.bin"),
		config(testPrefix+"/etc/avagent.cfg", "--listenport=28002\n"),
		file("/etc/init.d/avagent", 0o755, "#!/bin/sh\nexec "+testPrefix+"/etc/avagent.d \"$@\"\n"),
	}
}

// pack builds a package in memory.
func pack(t testing.TB, o packOpts) []byte {
	t.Helper()
	if o.version == "" {
		o.version = "1.0"
	}
	if o.compressor == "" {
		o.compressor = "gzip"
	}
	if o.files == nil {
		o.files = baseFiles(o.version)
	}
	md := rpmpack.RPMMetaData{
		Name: "AvamarClient", Version: o.version, Release: "1", Arch: "x86_64", OS: "linux",
		Summary: "test client", Description: "test client", Licence: "MIT", Compressor: o.compressor,
		Prefixes: append([]string{testPrefix}, o.extraPrefix...),
	}
	if o.noPrefixes {
		md.Prefixes = nil
	}
	r, err := rpmpack.NewRPM(md)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range o.files {
		r.AddFile(f)
	}
	if o.pre != "" {
		r.AddPrein(o.pre)
	}
	if o.post != "" {
		r.AddPostin(o.post)
	}
	if o.tweak != nil {
		o.tweak(r)
	}
	var b bytes.Buffer
	if err := r.Write(&b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// writeRPM writes b to a file in a new directory and returns its path.
func writeRPM(t testing.TB, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "AvamarClient.rpm")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// testLogger writes the installer's log to the test log.
func testLogger(t testing.TB) zerolog.Logger {
	return zerolog.New(zerolog.TestWriter{T: t, Frame: 6}).With().Str("component", "install").Logger()
}

func run(t testing.TB, rpmPath, root string, mod ...func(*Config)) (Result, error) {
	t.Helper()
	cfg := Config{RPM: rpmPath, Root: root, Prefix: "/opt/avamar", NoSync: true}
	for _, m := range mod {
		m(&cfg)
	}
	return Install(context.Background(), cfg, testLogger(t))
}

func mustRun(t testing.TB, rpmPath, root string, mod ...func(*Config)) Result {
	t.Helper()
	res, err := run(t, rpmPath, root, mod...)
	if err != nil {
		t.Fatalf("install: %v", err)
	}
	return res
}

// node is what the tree comparison looks at for one path.
type node struct {
	Type    string
	Mode    os.FileMode
	Size    int64
	SHA256  string
	Link    string
	UID     uint32
	GID     uint32
	NLink   uint64
	MTime   int64 // files and symlinks only: rpm sets them
	HasTime bool
}

// snapshot records the tree under root, skipping the paths in skip
// (relative, slash-separated).
func snapshot(t testing.TB, root string, skip ...string) map[string]node {
	t.Helper()
	out := map[string]node{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		rel = filepath.ToSlash(rel)
		for _, s := range skip {
			if rel == s || strings.HasPrefix(rel, s+"/") {
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
		}
		if rel == "." {
			return nil
		}
		st, err := os.Lstat(p)
		if err != nil {
			return err
		}
		sys := st.Sys().(*syscall.Stat_t)
		n := node{Mode: st.Mode(), UID: sys.Uid, GID: sys.Gid}
		switch {
		case st.IsDir():
			n.Type = "dir"
		case st.Mode()&fs.ModeSymlink != 0:
			n.Type = "symlink"
			n.Link, _ = os.Readlink(p)
			n.MTime, n.HasTime = st.ModTime().Unix(), true
		case st.Mode().IsRegular():
			n.Type = "file"
			n.Size = st.Size()
			n.NLink = uint64(sys.Nlink)
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			s := sha256.Sum256(b)
			n.SHA256 = hex.EncodeToString(s[:])
			n.MTime, n.HasTime = st.ModTime().Unix(), true
		default:
			n.Type = fmt.Sprint(st.Mode().Type())
		}
		out[rel] = n
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func diffTrees(t testing.TB, want, got map[string]node) {
	t.Helper()
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("trees differ (-want +got):\n%s", d)
	}
}
