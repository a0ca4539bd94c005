package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/avsidecar/avsidecar/internal/browse"
	"github.com/avsidecar/avsidecar/internal/testkit"
	"github.com/google/go-cmp/cmp"
	"github.com/rs/zerolog"
)

// lsServer serves a real browse.Handler on 127.0.0.1:0 and points
// AVSIDECAR_HTTP_ADDR at it.
func lsServer(t *testing.T, cfg browse.Config) {
	t.Helper()
	h, err := browse.New(cfg, zerolog.New(io.Discard))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(func() { srv.Close(); h.Close() })
	t.Setenv("AVSIDECAR_HTTP_ADDR", strings.TrimPrefix(srv.URL, "http://"))
}

func lsTree(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	if err := os.MkdirAll(root+"/a/b", 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range 1500 { // more than one page of 1000
		os.WriteFile(filepath.Join(root, "a", "f"+strings.Repeat("0", 4-len(itoa(i)))+itoa(i)), []byte("xy"), 0o640)
	}
	os.WriteFile(root+"/a/b/deep", []byte("12345"), 0o755)
	os.Chmod(root+"/a/b/deep", 0o755|os.ModeSetuid)
	os.Symlink("a/b", root+"/link")
	return root
}

func itoa(i int) string { b, _ := json.Marshal(i); return string(b) }

func TestLsTable(t *testing.T) {
	root := lsTree(t)
	lsServer(t, browse.Config{Roots: []string{root}})
	var out, errOut bytes.Buffer
	if err := lsCmd([]string{root}, &out, &errOut); err != nil {
		t.Fatalf("ls: %v (%s)", err, errOut.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "drwxr-xr-x ") || !strings.HasSuffix(lines[0], " a") ||
		!strings.HasPrefix(lines[1], "lrwxrwxrwx ") || !strings.HasSuffix(lines[1], " link -> a/b") {
		t.Errorf("ls root:\n%s", out.String())
	}
	out.Reset()
	if err := lsCmd([]string{root + "/a", "--json"}, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	lines = strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 1501 {
		t.Fatalf("paged listing: %d lines", len(lines))
	}
	var e browse.Entry
	if err := json.Unmarshal([]byte(lines[1500]), &e); err != nil || e.Path != root+"/a/f1499" || e.Size != 2 || e.Mode != "0640" {
		t.Errorf("last entry %+v %v", e, err)
	}
	out.Reset()
	if err := lsCmd([]string{root + "/a/b/deep"}, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	if got := out.String(); !strings.HasPrefix(got, "-rwsr-xr-x            5 ") || !strings.HasSuffix(got, " "+root+"/a/b/deep\n") {
		t.Errorf("ls of a file: %q", got)
	}
}

func TestLsRecursive(t *testing.T) {
	root := lsTree(t)
	lsServer(t, browse.Config{Roots: []string{root}})
	var out, errOut bytes.Buffer
	if err := lsCmd([]string{"-r", root + "/a"}, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(out.String(), "\n"); n != 1502 || !strings.Contains(out.String(), " "+root+"/a/b/deep\n") {
		t.Errorf("ls -r: %d lines", n)
	}
	out.Reset()
	if err := lsCmd([]string{root, "-r", "--json"}, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(out.String(), "\n"); n != 1504 || !strings.Contains(out.String(), `"path":"`+root+`/link","name":"link","type":"symlink"`) {
		t.Errorf("ls -r --json: %d lines", n)
	}
}

func TestLsErrors(t *testing.T) {
	root := lsTree(t)
	tok := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tok, []byte("tkn\n"), 0o600)
	lsServer(t, browse.Config{Roots: []string{root}, TokenFile: tok})
	t.Setenv("AVSIDECAR_BROWSE_TOKEN_FILE", tok)
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{}, exitConfig, "want exactly one absolute PATH"},
		{[]string{"a", "b"}, exitConfig, "want exactly one absolute PATH"},
		{[]string{"relative"}, exitConfig, "want exactly one absolute PATH"},
		{[]string{"--bogus", root}, exitConfig, "flag provided but not defined"},
		{[]string{"/etc"}, 0, "/etc: not found"},
		{[]string{root + "/../x"}, 0, "invalid path"},
	} {
		var out, errOut bytes.Buffer
		err := lsCmd(tc.args, &out, &errOut)
		var ee *exitError
		code := 0
		if errors.As(err, &ee) {
			code = ee.Code
		}
		if err == nil || code != tc.code || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("ls %q: %v (code %d), want %q code %d", tc.args, err, code, tc.msg, tc.code)
		}
	}
	t.Setenv("AVSIDECAR_HTTP_ADDR", "127.0.0.1:1")
	if err := lsCmd([]string{root}, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("no server: %v", err)
	}
}

// TestLsInRoot: under an AVSIDECAR_ROOT other than "/", ls takes and shows
// paths in the root, a host path is not found, and the token file is
// read in the root too.
func TestLsInRoot(t *testing.T) {
	root := lsTree(t)
	if err := os.WriteFile(root+"/token", []byte("tkn\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	lsServer(t, browse.Config{Base: root, Roots: []string{"/a"}, TokenFile: root + "/token"})
	t.Setenv("AVSIDECAR_ROOT", root)
	t.Setenv("AVSIDECAR_BROWSE_TOKEN_FILE", "/token")
	var out, errOut bytes.Buffer
	if err := lsCmd([]string{"-r", "/a/b"}, &out, &errOut); err != nil {
		t.Fatalf("ls -r /a/b: %v (%s)", err, errOut.String())
	}
	if got := out.String(); !strings.HasSuffix(got, " /a/b/deep\n") || strings.Count(got, "\n") != 1 {
		t.Errorf("ls -r /a/b: %q", got)
	}
	out.Reset()
	if err := lsCmd([]string{"--json", "/a/b/deep"}, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	var e browse.Entry
	if err := json.Unmarshal(out.Bytes(), &e); err != nil || e.Path != "/a/b/deep" {
		t.Errorf("ls /a/b/deep: %s %v", out.String(), err)
	}
	if err := lsCmd([]string{root + "/a"}, io.Discard, io.Discard); err == nil || err.Error() != root+"/a: not found" {
		t.Errorf("ls of the host path: %v", err)
	}
}

// TestLsNonUTF8 lists real files whose names are not UTF-8: two names
// that differ in one invalid byte stay two names, a directory with such a
// name is listed by its exact bytes, and every printed name, pasted into
// a real bash, is the file's exact name.
func TestLsNonUTF8(t *testing.T) {
	bash := testkit.NeedCommand(t, "bash")
	root := t.TempDir()
	for _, n := range []string{"bad\xff", "bad\xfe", "dir\xffsub/in\xfe file"} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(root, n)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, n), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("to\xff", filepath.Join(root, "link")); err != nil {
		t.Fatal(err)
	}
	lsServer(t, browse.Config{Roots: []string{root}})

	var out, errOut bytes.Buffer
	if err := lsCmd([]string{root}, &out, &errOut); err != nil {
		t.Fatalf("ls: %v (%s)", err, errOut.String())
	}
	var got []string
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		f := strings.Fields(line)
		got = append(got, strings.Join(f[4:], " "))
	}
	want := []string{`$'bad\xfe'`, `$'bad\xff'`, `$'dir\xffsub'`, `link -> $'to\xff'`}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("ls (-want +got):\n%s", diff)
	}

	// The directory by its exact bytes, and its whole path printed quoted.
	out.Reset()
	if err := lsCmd([]string{"-r", root + "/dir\xffsub"}, &out, &errOut); err != nil {
		t.Fatalf("ls -r: %v (%s)", err, errOut.String())
	}
	line := strings.TrimSpace(out.String())
	quoted := line[strings.Index(line, "$'"):]
	back, err := exec.Command(bash, "-c", "printf %s "+quoted).Output()
	if err != nil || string(back) != root+"/dir\xffsub/in\xfe file" {
		t.Fatalf("ls -r printed %q, bash reads it as %q (%v)", line, back, err)
	}

	// --json carries the exact bytes, in a listing and in a walk.
	for _, args := range [][]string{{"--json", root + "/dir\xffsub"}, {"--json", "-r", root + "/dir\xffsub"}} {
		out.Reset()
		if err := lsCmd(args, &out, &errOut); err != nil {
			t.Fatal(err)
		}
		var e browse.Entry
		if err := json.Unmarshal(out.Bytes(), &e); err != nil {
			t.Fatalf("%q: %v", args, err)
		}
		name, err1 := e.RawName()
		p, err2 := e.RawPath()
		if err1 != nil || err2 != nil || name != "in\xfe file" || p != root+"/dir\xffsub/in\xfe file" || e.NameB64 == "" {
			t.Errorf("ls %q: %s", args, out.String())
		}
	}
}

// TestShellQuote: what shellQuote prints, and that a real bash reads
// every quoted form back as the exact bytes.
func TestShellQuote(t *testing.T) {
	bash := testkit.NeedCommand(t, "bash")
	for name, want := range map[string]string{
		"plain.txt":        "plain.txt",
		"ü-ß_日本.log":       "ü-ß_日本.log",
		"mid file.log":     "$'mid file.log'",
		"bad\xff":          `$'bad\xff'`,
		"it's":             `$'it\'s'`,
		`back\slash`:       `$'back\\slash'`,
		"new\nline\ttab":   `$'new\nline\ttab'`,
		"$'fake'":          `$'$\'fake\''`,
		"a -> b":           "$'a -> b'",
		"nb\u00a0sp":       "$'nb\u00a0sp'",
		"zw\u200bj":        `$'zw\xe2\x80\x8bj'`,
		"\x7fdel\x01":      `$'\x7fdel\x01'`,
		"real\ufffd":       "$'real\ufffd'",
		"\xc0\xae\xed\xa0": `$'\xc0\xae\xed\xa0'`,
		"":                 "$''",
	} {
		got := shellQuote(name)
		if got != want {
			t.Errorf("shellQuote(%q) = %s, want %s", name, got, want)
		}
		if name == "" {
			continue
		}
		back, err := exec.Command(bash, "-c", "printf %s "+got).Output()
		if err != nil || string(back) != name {
			t.Errorf("bash reads %s as %q (%v), want %q", got, back, err, name)
		}
	}
}

// TestLsRetriesWhenBusy: ls asks again after Retry-After while the server
// answers 503, and gives the server's message after the last try.
func TestLsRetriesWhenBusy(t *testing.T) {
	root := lsTree(t)
	h, err := browse.New(browse.Config{Roots: []string{root}}, zerolog.New(io.Discard))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	var busy atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if busy.Add(-1) >= 0 {
			w.Header().Set("Retry-After", "0")
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, `{"error":"busy: too many listings at once, retry after 0s"}`)
			return
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	t.Setenv("AVSIDECAR_HTTP_ADDR", strings.TrimPrefix(srv.URL, "http://"))
	busy.Store(lsBusyTries - 1)
	var out bytes.Buffer
	if err := lsCmd([]string{root}, &out, io.Discard); err != nil || strings.Count(out.String(), "\n") != 2 {
		t.Fatalf("after %d busy answers: %v %q", lsBusyTries-1, err, out.String())
	}
	busy.Store(lsBusyTries)
	if err := lsCmd([]string{root}, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "busy: too many listings") {
		t.Fatalf("after %d busy answers: %v", lsBusyTries, err)
	}
}
