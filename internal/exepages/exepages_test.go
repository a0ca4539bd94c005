package exepages

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// releaseChildEnv makes the test binary, started again by TestRelease, do
// the release in a process of its own: it cannot be undone.
const releaseChildEnv = "EXEPAGES_TEST_CHILD"

// TestRelease releases the test binary's pages in a child process and
// checks that its RSS of the binary falls, that the released mappings
// take random access, and that the process goes on working: collecting
// garbage (which reads the binary's tables), encoding JSON, running code
// it had not run yet.
func TestRelease(t *testing.T) {
	if os.Getenv(releaseChildEnv) != "" {
		t.Skip("this is the child")
	}
	// A written-back copy: the kernel keeps a dirty page in the page cache
	// (a test binary that was just linked), and maps it again on the next
	// fault nearby, as it would not for an image's file.
	self, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "exepages.test")
	f, err := os.OpenFile(bin, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(self); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	cmd := exec.Command(bin, "-test.run=^TestReleaseChild$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), releaseChildEnv+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestReleaseChild") {
		t.Fatalf("child: %v\n%s", err, out)
	}
	t.Logf("child:\n%s", out)
}

// TestReleaseChild is the process TestRelease starts.
func TestReleaseChild(t *testing.T) {
	if os.Getenv(releaseChildEnv) == "" {
		t.Skip("runs only as TestRelease's child")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	before, cachedBefore := rssFile(t), cached(t, exe)
	res, err := Release()
	if err != nil {
		t.Fatal(err)
	}
	after, cachedAfter := rssFile(t), cached(t, exe)
	t.Logf("released %d mappings (%d KiB resident), skipped %d; RssFile %d -> %d KiB; binary in the page cache %d -> %d KiB",
		res.Mappings, res.Bytes>>10, res.Skipped, before>>10, after>>10, cachedBefore>>10, cachedAfter>>10)
	if res.Mappings == 0 || res.Bytes == 0 {
		t.Fatalf("nothing released: %+v", res)
	}
	if after > before*3/4 {
		t.Errorf("RssFile %d KiB after the release, want at most 3/4 of the %d KiB before", after>>10, before>>10)
	}
	// Less, not none: a large folio of the page cache stays whole while
	// one of its pages is mapped (the code running now).
	if cachedAfter >= cachedBefore {
		t.Errorf("%d KiB of the binary in the page cache after the release, want less than the %d KiB before", cachedAfter>>10, cachedBefore>>10)
	}
	for _, flags := range execFlags(t) {
		if !strings.Contains(" "+flags+" ", " rr ") {
			t.Errorf("a read-only mapping of the executable has VmFlags %q: no random access (rr)", flags)
		}
	}
	// The process works on: the collector walks stacks and types, JSON
	// reflects, fmt formats, all from pages read back on demand.
	runtime.GC()
	b, err := json.Marshal(map[string]any{"a": []int{1, 2}, "b": res})
	if err != nil || !strings.Contains(string(b), `"Mappings"`) {
		t.Fatalf("json after the release: %s, %v", b, err)
	}
	if s := fmt.Sprintf("%x %v", 255, []string{"x"}); s != "ff [x]" {
		t.Fatalf("fmt after the release: %q", s)
	}
	runtime.GC()
	t.Logf("RssFile %d KiB after some work", rssFile(t)>>10)
}

// cached is how much of the file at path is in the page cache, in bytes.
func cached(t *testing.T, path string) int64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	m, err := unix.Mmap(int(f.Fd()), 0, int(fi.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	vec := make([]byte, (len(m)+os.Getpagesize()-1)/os.Getpagesize())
	if _, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0]))); errno != 0 {
		t.Fatal(errno)
	}
	var n int64
	for _, v := range vec {
		n += int64(v & 1)
	}
	return n * int64(os.Getpagesize())
}

// rssFile is RssFile of /proc/self/status, in bytes.
func rssFile(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "RssFile:"); ok {
			kb, err := strconv.ParseInt(strings.Fields(rest)[0], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no RssFile in /proc/self/status")
	return 0
}

// execFlags returns the VmFlags of the executable's read-only mappings.
func execFlags(t *testing.T) []string {
	t.Helper()
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	inExe := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		switch {
		case len(fields) >= 6 && strings.Contains(fields[0], "-"):
			inExe = fields[5] == exe && !strings.Contains(fields[1], "w")
		case inExe && len(fields) > 0 && fields[0] == "VmFlags:":
			out = append(out, strings.Join(fields[1:], " "))
		}
	}
	if len(out) == 0 {
		t.Fatal("no read-only mapping of the executable in /proc/self/smaps")
	}
	return out
}
