package atomicfile

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/avsidecar/avsidecar/internal/testkit"
)

// steps are the points of a write, in order; the rename is where the new
// content becomes visible.
var steps = []string{"created", "written", "synced", "renamed", "dir-synced"}

// TestMain makes the test binary a writer child when asked: it writes
// $AF_DATA to $AF_PATH, killing itself with SIGKILL at step $AF_KILL_AT.
func TestMain(m *testing.M) {
	if path := os.Getenv("AF_PATH"); path != "" {
		killAt := os.Getenv("AF_KILL_AT")
		step = func(s string) {
			if s == killAt {
				_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
				select {}
			}
		}
		if err := Write(path, []byte(os.Getenv("AF_DATA")), 0o600); err != nil {
			os.Stderr.WriteString(err.Error())
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// writer runs a child that writes data to path and is killed at killAt
// ("" for none).
func writer(path, data, killAt string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "AF_PATH="+path, "AF_DATA="+data, "AF_KILL_AT="+killAt)
	return cmd
}

// TestKillAtEachStep kills a real writer process at every step of a
// replacement: the file must hold the old content or the new, whole, and
// the next write must succeed and clear what the killed one left.
func TestKillAtEachStep(t *testing.T) {
	for i, at := range steps {
		t.Run(at, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "registration.json")
			if err := Write(path, []byte("old receipt"), 0o600); err != nil {
				t.Fatal(err)
			}
			err := writer(path, "new receipt", at).Run()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
				t.Fatalf("writer was not killed at %s: %v", at, err)
			}
			got, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			want := "old receipt"
			if i >= 3 { // renamed
				want = "new receipt"
			}
			if string(got) != want {
				t.Errorf("killed at %s: file holds %q, want %q", at, got, want)
			}
			if err := Write(path, []byte("third"), 0o600); err != nil {
				t.Fatal(err)
			}
			names, _ := os.ReadDir(dir)
			if len(names) != 1 {
				t.Errorf("after a kill at %s and a new write, the directory holds %v", at, names)
			}
			if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
				t.Errorf("mode %v", fi.Mode())
			}
		})
	}
}

// TestDurability traces a real write with strace: the temporary file is
// fsynced before the rename, and the directory after it, and a directory
// Write made is fsynced into its parent.
func TestDurability(t *testing.T) {
	strace := testkit.NeedCommand(t, "strace")
	dir := t.TempDir()
	path := filepath.Join(dir, "new", "avagent.cmd")
	out := filepath.Join(t.TempDir(), "trace")
	cmd := writer(path, "--iplist=10.0.0.7\n", "")
	cmd = exec.Command(strace, append([]string{"-f", "-qq", "-o", out, "-e", "trace=openat,fsync,fdatasync,rename,renameat,renameat2,mkdir,mkdirat", "--"}, cmd.Args...)...)
	cmd.Env = append(os.Environ(), "AF_PATH="+path, "AF_DATA=--iplist=10.0.0.7\n")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("strace: %v\n%s", err, b)
	}
	trace, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	// Keep the calls on our paths, in order, with fds mapped to names.
	fds := map[string]string{}
	var calls []string
	open := regexp.MustCompile(`openat\(AT_FDCWD, "([^"]+)", [^)]*\) = (\d+)`)
	call := regexp.MustCompile(`(fsync|fdatasync)\((\d+)\)\s+= 0`)
	rename := regexp.MustCompile(`rename(?:at2?)?\((?:AT_FDCWD, )?"([^"]+)", (?:AT_FDCWD, )?"([^"]+)"`)
	mkdir := regexp.MustCompile(`mkdirat?\((?:AT_FDCWD, )?"([^"]+)"`)
	rel := func(p string) string {
		r, err := filepath.Rel(dir, p)
		if err != nil || strings.HasPrefix(r, "..") {
			return ""
		}
		if strings.Contains(r, tempMark) {
			return "TEMP"
		}
		return r
	}
	for line := range strings.SplitSeq(string(trace), "\n") {
		switch {
		case open.MatchString(line):
			m := open.FindStringSubmatch(line)
			if p := m[1]; p == dir || rel(p) != "" {
				fds[m[2]] = map[bool]string{true: ".", false: rel(p)}[p == dir]
			}
		case call.MatchString(line):
			m := call.FindStringSubmatch(line)
			if name, ok := fds[m[2]]; ok {
				calls = append(calls, "fsync "+name)
			}
		case rename.MatchString(line):
			if m := rename.FindStringSubmatch(line); rel(m[2]) != "" {
				calls = append(calls, "rename "+rel(m[1])+" "+rel(m[2]))
			}
		case mkdir.MatchString(line):
			if m := mkdir.FindStringSubmatch(line); rel(m[1]) != "" {
				calls = append(calls, "mkdir "+rel(m[1]))
			}
		}
	}
	want := []string{"mkdir new", "fsync .", "fsync TEMP", "rename TEMP new/avagent.cmd", "fsync new"}
	if strings.Join(calls, "|") != strings.Join(want, "|") {
		t.Errorf("system calls on the file and its directories:\n got %q\nwant %q\ntrace:\n%s", calls, want, trace)
	}
}

func TestWriteIfChanged(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a", ".avagent")
	for i, tc := range []struct {
		data  string
		perm  os.FileMode
		wrote bool
	}{
		{"--hostname=nginx-0\n", 0o644, true},
		{"--hostname=nginx-0\n", 0o644, false},
		{"--hostname=nginx-1\n", 0o644, true},
		{"--hostname=nginx-1\n", 0o600, true},
	} {
		wrote, err := WriteIfChanged(path, []byte(tc.data), tc.perm)
		if err != nil || wrote != tc.wrote {
			t.Fatalf("step %d: wrote %v, %v; want %v", i, wrote, err, tc.wrote)
		}
		got, _ := os.ReadFile(path)
		fi, _ := os.Stat(path)
		if string(got) != tc.data || fi.Mode().Perm() != tc.perm {
			t.Fatalf("step %d: %q %v", i, got, fi.Mode())
		}
	}
}

// TestWriteErrors checks that failures name the file and leave no
// temporary file behind.
func TestWriteErrors(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "file"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{filepath.Join(dir, "file", "x"), dir + "/"} {
		err := Write(path, []byte("x"), 0o644)
		if err == nil || !strings.Contains(err.Error(), path) {
			t.Errorf("Write(%q) = %v, want an error naming it", path, err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := Write(filepath.Join(dir, "dir"), []byte("x"), 0o644); err == nil {
		t.Error("a directory was replaced by a file")
	}
	names, _ := os.ReadDir(dir)
	if len(names) != 2 {
		t.Errorf("left behind: %v", names)
	}
}
