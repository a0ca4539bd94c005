package install

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/avsidecar/avsidecar/internal/rpm"
)

// plantPanic has the install panic at the named step (stepHook) until the
// test ends, and returns a function that reports whether it did.
func plantPanic(t *testing.T, at string) (fired func() bool) {
	var mu sync.Mutex
	done := false
	hook := func(name string) {
		if name != at {
			return
		}
		mu.Lock()
		first := !done
		done = true
		mu.Unlock()
		if first {
			panic("planted panic at " + at)
		}
	}
	stepHook.Store(&hook)
	t.Cleanup(func() { stepHook.Store(nil) })
	return func() bool {
		mu.Lock()
		defer mu.Unlock()
		return done
	}
}

// TestPanicBecomesError: a panic while installing, on the installer's own
// goroutine or on the one that verifies the package, in a file writer,
// once the files are in place or just before the receipt, is an install
// error that names the package and matches ErrInternal, not ErrUnusable
// (so avsidecar exits 1, not 3), never a dead process. The receipt is not
// written; what was not in place yet is undone, the previous installation
// (or the empty root) as it was; and the next start installs, leaving
// what a clean install leaves.
func TestPanicBecomesError(t *testing.T) {
	v1 := writeRPM(t, pack(t, packOpts{version: "1", files: manyFiles(1, 60)}))
	v2 := writeRPM(t, pack(t, packOpts{version: "2", files: manyFiles(2, 60)}))
	const state = "opt/avamar/var/avsidecar"
	clean := t.TempDir()
	mustRun(t, v2, clean)
	want := snapshot(t, clean, state)

	cases := []struct {
		step    string
		upgrade bool // version 1 is installed first
		placed  bool // the files are in place when it panics
	}{
		{step: "read"},
		{step: "verify"}, // a fresh install verifies on its own goroutine
		{step: "write"},
		{step: "committed", placed: true},
		{step: "record", placed: true},
		{step: "read", upgrade: true},
		{step: "write", upgrade: true},
		{step: "committed", upgrade: true, placed: true},
		{step: "record", upgrade: true, placed: true},
	}
	for _, c := range cases {
		name := c.step
		if c.upgrade {
			name = "upgrade/" + name
		}
		t.Run(name, func(t *testing.T) {
			root := t.TempDir()
			if c.upgrade {
				mustRun(t, v1, root)
			}
			before := snapshot(t, root)
			fired := plantPanic(t, c.step)
			_, err := run(t, v2, root)
			if !fired() {
				t.Fatalf("the install never reached step %q: the test tests nothing (err %v)", c.step, err)
			}
			stepHook.Store(nil)
			checkInternalError(t, err, v2, root, c.step)
			receipt := filepath.Join(root, state, receiptName)
			switch {
			case c.upgrade:
				if got := readFile(t, receipt); !strings.Contains(got, `"version":"1"`) {
					t.Errorf("receipt after the panic is not version 1's: %s", got)
				}
			case exists(receipt):
				t.Errorf("receipt written by an install that panicked")
			}
			if c.placed {
				if !exists(filepath.Join(root, state, journalName)) {
					t.Errorf("no journal once the files were in place: the next start would not install again")
				}
			} else {
				diffTrees(t, before, snapshot(t, root)) // undone, state dir included
			}

			res := mustRun(t, v2, root)
			if !res.Changed || res.Version != "2" {
				t.Errorf("next start: %+v, want version 2 installed", res)
			}
			diffTrees(t, want, snapshot(t, root, state))
			if exists(filepath.Join(root, state, journalName)) {
				t.Errorf("journal left after the next start")
			}
			if leftovers := tempFiles(t, root); len(leftovers) > 0 {
				t.Errorf("temporary files left: %v", leftovers)
			}
		})
	}
}

// TestPanicWhileRestoring: a panic in the file writer of a restore (a
// matching receipt, files missing) is an install error as well; the
// missing files stay missing, nothing half-written is left, and the next
// start restores them.
func TestPanicWhileRestoring(t *testing.T) {
	rpm := writeRPM(t, pack(t, packOpts{}))
	root := t.TempDir()
	mustRun(t, rpm, root)
	const state = "opt/avamar/var/avsidecar"
	want := snapshot(t, root, state)
	gone := filepath.Join(root, "opt/avamar/bin/avagent.bin")
	if err := os.Remove(gone); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, root)

	fired := plantPanic(t, "write")
	_, err := run(t, rpm, root)
	if !fired() {
		t.Fatalf("the restore never wrote a file: the test tests nothing (err %v)", err)
	}
	stepHook.Store(nil)
	checkInternalError(t, err, rpm, root, "write")
	diffTrees(t, before, snapshot(t, root))

	if res := mustRun(t, rpm, root); res.Restored != 1 {
		t.Errorf("next start: %+v, want one file restored", res)
	}
	diffTrees(t, want, snapshot(t, root, state))
}

// checkInternalError checks the error of an install of rpm into root
// that panicked at step: it names the package and the panic, and matches
// ErrInternal but not ErrUnusable (avsidecar exits 1 on it, not 3).
func checkInternalError(t *testing.T, err error, rpm, root, step string) {
	t.Helper()
	t.Logf("error: %v", err)
	if !errors.Is(err, ErrInternal) || errors.Is(err, ErrUnusable) {
		t.Errorf("error %v: want ErrInternal and not ErrUnusable", err)
	}
	want := fmt.Sprintf("install %s into root %s: internal error: planted panic at %s", rpm, root, step)
	if err == nil || err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
}

// tempFiles lists the installer's temporary files under root.
func tempFiles(t *testing.T, root string) []string {
	t.Helper()
	var found []string
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		for _, s := range tmpSuffixes {
			if strings.HasSuffix(d.Name(), s) {
				found = append(found, p)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

// TestDecoderPanicIsInternal: a payload decoder's panic, which internal/rpm
// recovers on its own goroutine and returns as an error that matches
// rpm.ErrDecoderPanic (its TestDecoderPanic), is an ErrInternal of the
// install as the installer's own panics are: not ErrUnusable (exit 1, not
// 3), and not wrapped twice.
func TestDecoderPanicIsInternal(t *testing.T) {
	dec := fmt.Errorf("xz payload of x-1-1.x86_64: %w in xz.(*Reader).Read: index out of range", rpm.ErrDecoderPanic)
	err := decoderPanicIsInternal(dec)
	if !errors.Is(err, ErrInternal) || !errors.Is(err, rpm.ErrDecoderPanic) || errors.Is(err, ErrUnusable) {
		t.Errorf("%v: ErrInternal %v, ErrDecoderPanic %v, ErrUnusable %v", err, errors.Is(err, ErrInternal), errors.Is(err, rpm.ErrDecoderPanic), errors.Is(err, ErrUnusable))
	}
	if want := "internal error: xz payload of x-1-1.x86_64: decoder panicked in"; !strings.HasPrefix(err.Error(), want) {
		t.Errorf("error %q, want it to start with %q", err, want)
	}
	if again := decoderPanicIsInternal(err); again != err {
		t.Errorf("wrapped twice: %v", again)
	}
	plain := errors.New("read payload: unexpected EOF")
	if decoderPanicIsInternal(plain) != plain || decoderPanicIsInternal(nil) != nil {
		t.Error("an error that is no decoder panic changed")
	}
}
