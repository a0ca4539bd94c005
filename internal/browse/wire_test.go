package browse

import (
	"bytes"
	"encoding/json"
	"net/url"
	"testing"

	"github.com/avsidecar/avsidecar/internal/fswalk"
)

func TestEntryJSON(t *testing.T) {
	e := fswalk.Entry{Name: "a\"b\x01\xff<", Type: fswalk.TypeSymlink, Mode: 04755, Size: 7, Mtime: 1e9, LinkTarget: "../t"}
	got := string(appendEntry(nil, "/d", &e, "dir"))
	want := `{"path":"/d/a\"b\u0001\ufffd\u003c","path_b64":"L2QvYSJiAf88","name":"a\"b\u0001\ufffd\u003c","name_b64":"YSJiAf88",` +
		`"type":"symlink","size":7,"mode":"4755","mtime":"1970-01-01T00:00:01Z","link_target":"../t","target_type":"dir"}`
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	if got := string(appendMode(nil, 0o7)); got != "0007" {
		t.Errorf("mode 7: %s", got)
	}
}

// checkWire encodes one entry with the hand-written encoder and checks
// it against encoding/json on the Entry type, then decodes it back and
// checks the exact bytes come out.
func checkWire(t *testing.T, dir string, fe fswalk.Entry, target string) {
	t.Helper()
	got := appendEntry(nil, dir, &fe, target)
	want, err := json.Marshal(newEntry(dir, &fe, target))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("encoder and type differ:\nencoder %s\njson    %s", got, want)
	}
	var back Entry
	if err := json.Unmarshal(got, &back); err != nil {
		t.Fatalf("decode %s: %v", got, err)
	}
	name, err1 := back.RawName()
	target, err2 := back.RawLinkTarget()
	if err1 != nil || err2 != nil || name != fe.Name || target != fe.LinkTarget {
		t.Fatalf("round trip of %q -> %q: name %q target %q (%v %v)", fe.Name, got, name, target, err1, err2)
	}
	if dir != "" {
		if p, err := back.RawPath(); err != nil || p != joinShown(dir, fe.Name) {
			t.Fatalf("round trip of path %q/%q: %q %v", dir, fe.Name, p, err)
		}
	}
}

// FuzzWireEntry: for any name, target and directory, the encoder writes
// what encoding/json writes for Entry, and the exact bytes come back.
func FuzzWireEntry(f *testing.F) {
	for _, s := range [][3]string{
		{"plain", "", "/data"},
		{"bad\xff", "t\xfe", "/d\xffir"},
		{"bad\xfe", "", "/"},
		{"<&>\u2028\u2029\"\\\n\t\x00", "ok", "/a b"},
		{"\xc0\xae", "\xed\xa0\x80", ""},
		{"日本語", "../ü", "/ö"},
	} {
		f.Add(s[0], s[1], s[2], int64(5), uint32(0o644), int64(1e18))
	}
	f.Fuzz(func(t *testing.T, name, target, dir string, size int64, mode uint32, mtime int64) {
		checkWire(t, dir, fswalk.Entry{Name: name, Type: fswalk.TypeFile, Size: size, Mode: mode & 07777, Mtime: mtime % 1e18}, "")
		checkWire(t, dir, fswalk.Entry{Name: name, Type: fswalk.TypeSymlink, Size: size, Mode: mode & 07777, Mtime: mtime % 1e18, LinkTarget: target}, "file")
	})
}

func TestPathParam(t *testing.T) {
	for _, tc := range []struct {
		query, want string
		ok          bool
	}{
		{"path=/a", "/a", true},
		{"path=/bad%FF", "/bad\xff", true},
		{"path_b64=L2JhZP8=", "/bad\xff", true},
		{"path_b64=L2JhZP8", "/bad\xff", true},
		{"path_b64=L2JhZP-_", "/bad\xff\xbf", true},
		{"path_b64=L2JhZP%2B%2F", "/bad\xff\xbf", true},
		{"path_b64=%21%21", "", false},
		{"path=/a&path_b64=L2E=", "", false},
		{"path_b64=L2E=&path_b64=L2E=", "", false},
		{"", "", true},
	} {
		q, err := url.ParseQuery(tc.query)
		if err != nil {
			t.Fatal(err)
		}
		got, err := pathParam(q)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("%s: %q %v, want %q ok=%v", tc.query, got, err, tc.want, tc.ok)
		}
	}
}
