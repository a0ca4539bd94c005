package sshd

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/avsidecar/avsidecar/internal/testkit"
	"golang.org/x/sys/unix"
)

// accessWatch tells, through inotify, whether anything read a file.
type accessWatch struct{ fd int }

func watchAccess(t *testing.T, path string) *accessWatch {
	t.Helper()
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if _, err := unix.InotifyAddWatch(fd, path, unix.IN_ACCESS); err != nil {
		t.Fatal(err)
	}
	return &accessWatch{fd}
}

// read reports whether the file was read since the last call: the watch
// has events queued (it watches nothing else). Events are queued by the
// read(2) itself, so a read that returned is always seen.
func (w *accessWatch) read(t *testing.T) bool {
	t.Helper()
	seen := false
	buf := make([]byte, 4096)
	for {
		_, err := unix.Read(w.fd, buf)
		if errors.Is(err, unix.EAGAIN) {
			return seen
		}
		if err != nil {
			t.Fatal(err)
		}
		seen = true
	}
}

// loadedLines counts the log lines of a key set taking effect.
func loadedLines(ts *testServer, from int) int {
	return ts.log.Count(from, func(m map[string]any) bool {
		switch m["message"] {
		case "authorized keys loaded", "authorized keys file missing; nobody can log in",
			"authorized keys file has no usable key; nobody can log in", "authorized keys unreadable; nobody can log in":
			return true
		}
		return false
	})
}

// TestKeysReadOnlyOnChange: the authorized_keys file is read only when it
// may have changed, and parsed only when its content did. Directory
// events and resyncs that change nothing do not read it at all (they cost
// an fstat); a touch (new mtime, same content) reads it to hash it but
// changes nothing; a new key takes effect at once and logs in.
func TestKeysReadOnlyOnChange(t *testing.T) {
	a, b := newUserKey(t), newUserKey(t)
	ts := startServer(t, a.line+"\n", nil)
	acc := watchAccess(t, ts.keys)
	from := ts.log.Mark()

	// Events that change nothing: other files of the directory come and
	// go (as a Secret volume's do), and the resync comes round.
	dir := filepath.Dir(ts.keys)
	for i := range 10 {
		writeAtomic(t, filepath.Join(dir, fmt.Sprintf("other-%d", i)), "x")
		ts.reloadKeys()
	}
	if acc.read(t) {
		t.Error("the unchanged file was read again for events that changed nothing")
	}
	now := time.Now().Add(time.Second)
	must(t, os.Chtimes(ts.keys, now, now))
	ts.reloadKeys()
	if !acc.read(t) {
		t.Error("a touched file (new mtime) was not read to see whether its content changed")
	}
	ts.reloadKeys()
	if acc.read(t) {
		t.Error("the touched file was read again though nothing changed since")
	}
	if n := loadedLines(ts, from); n != 0 {
		t.Errorf("%d key sets took effect with the same content; want none", n)
	}

	// A real change: a new key works, and the set took effect once.
	writeAtomic(t, ts.keys, a.line+"\n"+b.line+"\n")
	ts.log.Wait(t, from, "the new key set", 10*time.Second, testkit.Msg("", "authorized keys loaded", "keys", 2))
	if _, err := ts.dial(b); err != nil {
		t.Fatalf("the new key was refused: %v", err)
	}
	ts.reloadKeys() // whatever events are still queued, nothing more changes
	if n := loadedLines(ts, from); n != 1 {
		t.Errorf("%d key sets took effect for one change; want 1", n)
	}
	if _, err := ts.dial(a); err != nil {
		t.Errorf("the first key stopped working: %v", err)
	}
}

// TestHugeAuthorizedKeys: a file of 50,001 lines, 5,000 of them
// unparsable, loads every good key; its refused lines are counted in
// full but logged only ten at a time; the last line's key logs in; cut
// back to one line, the file lets only that key in.
func TestHugeAuthorizedKeys(t *testing.T) {
	k, other := newUserKey(t), newUserKey(t)
	buf := bytes.NewBuffer(testkit.ManyAuthorizedKeys(50000, 5000))
	buf.WriteString(`restrict,command="echo forced" ` + k.line + "\n")
	ts := startServer(t, buf.String(), nil)

	st := ts.Status()
	if st.AuthorizedKeys != 45001 || st.AuthorizedKeysRefused != 5000 {
		t.Fatalf("keys %d, refused %d; want 45001 and 5000", st.AuthorizedKeys, st.AuthorizedKeysRefused)
	}
	if n := ts.log.Count(0, msgIs("authorized key refused")); n != maxProblems {
		t.Errorf("%d refused lines logged one by one, want %d", n, maxProblems)
	}
	ts.log.Wait(t, 0, "the count of the others", time.Second, testkit.Msg("", "more authorized keys refused; not logged one by one", "more", 5000-maxProblems))
	out, _, err := run(t, ts.mustDial(t, k), "echo asked", "")
	if err != nil || out != "forced\n" {
		t.Errorf("the last line's key: %q, %v; want its forced command", out, err)
	}

	from := ts.log.Mark()
	writeAtomic(t, ts.keys, other.line+"\n")
	ts.log.Wait(t, from, "the one-line file", 10*time.Second, testkit.Msg("", "authorized keys loaded", "keys", 1))
	if _, err := ts.dial(k); err == nil {
		t.Error("a key no longer in the file logged in")
	}
	ts.mustDial(t, other)
}
