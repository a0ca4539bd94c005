package install

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/avsidecar/avsidecar/internal/testkit"
	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

// The corpus: real RPMs this project did not make, installed by rpm and
// by the installer, tree against tree.
//
// Where the packages come from:
//   - the test data of github.com/cavaliergopher/rpm, a module this
//     project builds with, so it is on every machine that builds it:
//     CentOS and EPEL release packages from 2002 to 2015 (rpm 4.0 to 4.11);
//   - the edge packages of testdata/edge, built here with rpmbuild
//     (see edge_test.go);
//   - any directory named by AVSIDECAR_RPM_CORPUS: every file in it that
//     starts with the RPM lead is a case. A wider corpus (the test
//     packages of rpm, rpmlint, createrepo_c, libdnf, dnf, librepo,
//     rpm-rs and go-rpmutils) is run that way; see BENCHMARKS.md and
//     testdata/corpus.md for where it came from.
//
// AVSIDECAR_RPM_CORPUS_REPORT names a file to write the table of outcomes
// to (tab-separated: package, rpm, installer, verdict).

// corpusPrefix is where both installers relocate a relocatable package.
const corpusPrefix = "/opt/avamar"

// corpusStateDir keeps the installer's receipt out of the compared tree.
const corpusStateDir = "/avsidecar-state"

// verdicts of a corpus case.
const (
	verdictSame       = "same tree"
	verdictDiffers    = "different tree"
	verdictRefused    = "refused, rpm installs"
	verdictDocumented = "refused by choice, rpm installs"
	verdictInstalled  = "installed, rpm refuses"
	verdictChosen     = "installed by choice, rpm refuses"
	verdictBoth       = "both refuse"
)

// documentedRefusals are the packages rpm installs and the installer
// refuses on purpose, by a phrase of the message the user sees.
var documentedRefusals = []string{
	// rpm -i puts a source package's sources and spec in a build tree.
	"is a source package (.src.rpm)",
}

// documentedInstalls are the packages rpm refuses and the installer
// installs on purpose, by a phrase of rpm's message.
var documentedInstalls = []string{
	// Signatures are not checked (there is no keyring): one rpm cannot
	// parse (rpm 4.18 knows no ECDSA, say) is no more than one it has no
	// key for. The header and payload digests, which rpm checks too,
	// still protect the bytes installed.
	"invalid OpenPGP signature",
}

// corpusCase is one package of the corpus and how to set up the roots.
type corpusCase struct {
	name  string
	path  string
	setup func(t testing.TB, root string) // prepares both roots, may be nil
}

// outcome is what happened to one package.
type outcome struct {
	name, rpm, ours, verdict, detail string
}

// TestCorpus installs every corpus package with rpm and with the
// installer and compares the trees: type, mode, owner, size, content,
// link target, hard link groups, mtimes of files, links and directories
// (an mtime set at install time by both counts as equal) and extended
// attributes, security.capability included.
func TestCorpus(t *testing.T) {
	testkit.NeedRoot(t)
	testkit.NeedCommand(t, "rpm")
	cases := moduleCorpus(t)
	if dir := os.Getenv("AVSIDECAR_RPM_CORPUS"); dir != "" {
		cases = append(cases, dirCorpus(t, dir)...)
	}
	var outcomes []outcome
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := compareWithRPM(t, c)
			outcomes = append(outcomes, o)
			switch o.verdict {
			case verdictSame, verdictBoth, verdictDocumented, verdictChosen:
				t.Logf("%s: rpm %s; installer %s", o.verdict, o.rpm, o.ours)
			default:
				t.Errorf("%s: rpm %s; installer %s\n%s", o.verdict, o.rpm, o.ours, o.detail)
			}
		})
	}
	reportCorpus(t, outcomes)
}

// moduleCorpus lists the RPMs in the test data of cavaliergopher/rpm.
func moduleCorpus(t testing.TB) []corpusCase {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/cavaliergopher/rpm").Output()
	dir := strings.TrimSpace(string(out))
	testkit.Need(t, err == nil && dir != "", "the source of github.com/cavaliergopher/rpm in the module cache (go mod download)")
	cases := dirCorpus(t, filepath.Join(dir, "testdata"))
	testkit.Need(t, len(cases) >= 10, "the RPMs of github.com/cavaliergopher/rpm's testdata")
	return cases
}

// dirCorpus lists the RPM files of dir.
func dirCorpus(t testing.TB, dir string) []corpusCase {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var cases []corpusCase
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		if !e.Type().IsRegular() || !isRPM(p) {
			continue
		}
		cases = append(cases, corpusCase{name: e.Name(), path: p})
	}
	return cases
}

func isRPM(p string) bool {
	f, err := os.Open(p)
	if err != nil {
		return false
	}
	defer f.Close()
	var lead [4]byte
	_, err = f.Read(lead[:])
	return err == nil && bytes.Equal(lead[:], []byte{0xed, 0xab, 0xee, 0xdb})
}

// compareWithRPM installs c with rpm and with the installer into two
// fresh roots and says how they compare.
func compareWithRPM(t *testing.T, c corpusCase) outcome {
	o := outcome{name: c.name}
	byRPM, byUs := rootWithUsers(t), rootWithUsers(t)
	for _, r := range []string{byRPM, byUs} {
		if c.setup != nil {
			c.setup(t, r)
		}
		sameTimes(t, r)
	}
	since := time.Now()
	rpmErr := rpmInstallAs(t, c.path, byRPM)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	_, ourErr := Install(ctx, Config{RPM: c.path, Root: byUs, Prefix: corpusPrefix, StateDir: corpusStateDir,
		NoScripts: true, NoSync: true}, testLogger(t))
	o.rpm, o.ours = "installs", "installs"
	if rpmErr != nil {
		o.rpm = "refuses: " + oneLine(rpmErr.Error())
	}
	if ourErr != nil {
		o.ours = "refuses: " + oneLine(ourErr.Error())
	}
	switch {
	case rpmErr != nil && ourErr != nil:
		o.verdict = verdictBoth
	case rpmErr != nil:
		o.verdict = verdictInstalled
		for _, d := range documentedInstalls {
			if strings.Contains(rpmErr.Error(), d) {
				o.verdict = verdictChosen
			}
		}
	case ourErr != nil:
		o.verdict = verdictRefused
		for _, d := range documentedRefusals {
			if strings.Contains(ourErr.Error(), d) {
				o.verdict = verdictDocumented
			}
		}
	default:
		want := tree(t, byRPM, since, "rpmdb")
		got := tree(t, byUs, since, strings.TrimPrefix(corpusStateDir, "/"))
		o.verdict = verdictSame
		if d := cmp.Diff(want, got); d != "" {
			o.verdict, o.detail = verdictDiffers, d
		}
	}
	// The roots can be large (the edge packages' 4 GiB file): free them
	// now rather than at the end of the whole test.
	for _, r := range []string{byRPM, byUs} {
		_ = os.RemoveAll(r)
	}
	return o
}

// sameTimes gives everything a root holds before the install one mtime,
// so that two roots made a second apart compare equal.
func sameTimes(t testing.TB, root string) {
	t.Helper()
	ts := []unix.Timespec{{Sec: 946684800}, {Sec: 946684800}}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func oneLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i] + " ..."
	}
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}

// rpmInstallAs installs pkg with rpm under root the way the installer
// installs it: relocating the prefix the installer relocates, without
// dependencies, scriptlets or triggers, on any architecture.
func rpmInstallAs(t testing.TB, pkg, root string) error {
	t.Helper()
	args := []string{"-i", "--root", root, "--dbpath", "/rpmdb", "--nodeps", "--noscripts", "--notriggers",
		"--ignorearch", "--ignoreos"}
	if from := relocatedPrefix(t, pkg); from != "" {
		args = append(args, "--relocate", from+"="+corpusPrefix)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "rpm", append(args, pkg)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("rpm -i: %v: %s", err, rpmMessages(out))
	}
	return nil
}

// rpmMessages keeps rpm's own error lines, not Debian's warning that
// rpm should not install packages.
func rpmMessages(out []byte) string {
	var keep []string
	for _, l := range strings.Split(string(out), "\n") {
		if l == "" || strings.Contains(l, "use Alien instead") || strings.Contains(l, "you know what you are doing") {
			continue
		}
		keep = append(keep, strings.TrimSpace(l))
	}
	return strings.Join(keep, " | ")
}

// relocatedPrefix is the package prefix the installer relocates: the
// client's /usr/local/avamar, or the prefix that holds bin/avagent.bin,
// or a package's only prefix; "" when there is none to relocate.
func relocatedPrefix(t testing.TB, pkg string) string {
	t.Helper()
	out, err := exec.Command("rpm", "-qp", "--nosignature", "--qf", "[%{PREFIXES}\n]", pkg).Output()
	if err != nil {
		return "" // rpm cannot read it: it will refuse it too
	}
	prefixes := strings.Fields(string(out))
	switch {
	case len(prefixes) == 1:
		return path.Clean(prefixes[0])
	case len(prefixes) == 0:
		return ""
	}
	for _, p := range prefixes {
		if path.Clean(p) == "/usr/local/avamar" {
			return path.Clean(p)
		}
	}
	files, _ := exec.Command("rpm", "-qpl", "--nosignature", pkg).Output()
	for _, p := range prefixes {
		if bytes.Contains(files, []byte(path.Join(p, "bin/avagent.bin")+"\n")) {
			return path.Clean(p)
		}
	}
	return ""
}

// treeNode is what the corpus comparison looks at for one path.
type treeNode struct {
	Type  string
	Mode  os.FileMode
	UID   uint32
	GID   uint32
	Size  int64
	SHA   string
	Link  string
	MTime string // Unix seconds, or "install time" for one set during the install
	// Links names the other paths of the file's hard link set.
	Links  string
	Xattrs map[string]string
}

// tree records the tree under root (but the paths in skip) for the
// corpus comparison. Any mtime at or after since was set by the install
// itself, as rpm sets a directory's when it writes into it, and reads
// "install time".
func tree(t testing.TB, root string, since time.Time, skip ...string) map[string]treeNode {
	t.Helper()
	out := map[string]treeNode{}
	inodes := map[[2]uint64][]string{}
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
		if rel == "etc/passwd" || rel == "etc/group" {
			return nil
		}
		st, err := os.Lstat(p)
		if err != nil {
			return err
		}
		sys := st.Sys().(*syscall.Stat_t)
		n := treeNode{Mode: st.Mode(), UID: sys.Uid, GID: sys.Gid, Xattrs: xattrs(t, p)}
		if mt := st.ModTime(); mt.Before(since) {
			n.MTime = fmt.Sprint(mt.Unix())
		} else {
			n.MTime = "install time"
		}
		switch {
		case st.IsDir():
			n.Type = "dir"
		case st.Mode()&fs.ModeSymlink != 0:
			n.Type = "symlink"
			n.Link, _ = os.Readlink(p)
		case st.Mode().IsRegular():
			n.Type = "file"
			n.Size = st.Size()
			n.SHA = fileSHA(t, p)
			if sys.Nlink > 1 {
				k := [2]uint64{sys.Dev, sys.Ino}
				inodes[k] = append(inodes[k], rel)
			}
		default:
			n.Type = fmt.Sprint(st.Mode().Type())
		}
		out[rel] = n
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, set := range inodes {
		sort.Strings(set)
		for _, p := range set {
			n := out[p]
			n.Links = strings.Join(set, " ")
			out[p] = n
		}
	}
	return out
}

func fileSHA(t testing.TB, p string) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// xattrs returns every extended attribute of p (not following a link),
// values in hex.
func xattrs(t testing.TB, p string) map[string]string {
	t.Helper()
	buf := make([]byte, 64<<10)
	n, err := unix.Llistxattr(p, buf)
	if err != nil {
		if errors.Is(err, unix.ENOTSUP) {
			return nil
		}
		t.Fatalf("listxattr %s: %v", p, err)
	}
	var out map[string]string
	for _, name := range strings.Split(string(buf[:n]), "\x00") {
		if name == "" {
			continue
		}
		v := make([]byte, 64<<10)
		m, err := unix.Lgetxattr(p, name, v)
		if err != nil {
			t.Fatalf("getxattr %s %s: %v", p, name, err)
		}
		if out == nil {
			out = map[string]string{}
		}
		out[name] = fmt.Sprintf("%x", v[:m])
	}
	return out
}

// reportCorpus logs the count of each verdict and writes the table to
// AVSIDECAR_RPM_CORPUS_REPORT when it is set.
func reportCorpus(t *testing.T, outcomes []outcome) {
	counts := map[string]int{}
	var b strings.Builder
	b.WriteString("package\trpm\tinstaller\tverdict\n")
	for _, o := range outcomes {
		counts[o.verdict]++
		fmt.Fprintf(&b, "%s\t%s\t%s\t%s\n", o.name, o.rpm, o.ours, o.verdict)
	}
	t.Logf("%d packages: %v", len(outcomes), counts)
	if p := os.Getenv("AVSIDECAR_RPM_CORPUS_REPORT"); p != "" {
		if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
			t.Error(err)
		}
	}
}
