package rpm

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"strings"
	"testing"
)

func sha(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// stripped is an entry of rpm's stripped cpio format: the magic, the
// file's index in the header, padding, then the data, padded.
func stripped(index int, data string) string {
	s := fmt.Sprintf("07070X%08x\x00\x00", index) + data
	return s + strings.Repeat("\x00", int(pad4(int64(len(data)))))
}

// linkedPackage has a hard link set of three names across directories,
// with a directory and a single file between them.
func linkedPackage() *Package {
	set := []int{0, 2, 4}
	return &Package{DigestAlgo: SHA256, archiveMax: 1 << 20, Files: []File{
		{Path: "/a/one", Mode: 0o100644, Size: 5, Digest: sha("hello"), Links: set},
		{Path: "/b", Mode: 0o40755},
		{Path: "/b/two", Mode: 0o100644, Size: 5, Digest: sha("hello"), Links: set},
		{Path: "/c", Mode: 0o100644, Size: 3, Digest: sha("abc")},
		{Path: "/d/three", Mode: 0o100644, Size: 5, Digest: sha("hello"), Links: set},
	}}
}

// entries reads every entry of a and its content.
func entries(a *Archive) ([]string, error) {
	var got []string
	for {
		e, err := a.Next()
		if err == io.EOF {
			return got, nil
		}
		if err != nil {
			return got, err
		}
		s := fmt.Sprint(e.Index)
		if e.Content {
			b, err := io.ReadAll(a)
			if err != nil {
				return got, err
			}
			s += ":" + string(b)
		}
		got = append(got, s)
	}
}

// TestStrippedHardLinks: in rpm's stripped format (packages with a file
// of 4 GiB or more, and rpm 6), only the last name of a hard link set
// carries the content; the others have none, whatever the header says of
// their size.
func TestStrippedHardLinks(t *testing.T) {
	p := linkedPackage()
	archive := stripped(0, "") + stripped(1, "") + stripped(3, "abc") + stripped(2, "") + stripped(4, "hello") +
		newcEntry(cpioTrailer, 0, "")
	got, err := entries(p.newArchive(bufio.NewReader(strings.NewReader(archive)), nil))
	if err != nil {
		t.Fatal(err)
	}
	if want := "[0 1 3:abc 2 4:hello]"; fmt.Sprint(got) != want {
		t.Errorf("entries %v, want %s", got, want)
	}
}

// TestNewcHardLinks: in the newc format rpm writes a hard link set's
// content with its last name too, and every entry says its own size.
func TestNewcHardLinks(t *testing.T) {
	p := linkedPackage()
	archive := newcEntry("./a/one", 0o100644, "") + newcEntry("./b", 0o40755, "") + newcEntry("./b/two", 0o100644, "") +
		newcEntry("./c", 0o100644, "abc") + newcEntry("./d/three", 0o100644, "hello") + newcEntry(cpioTrailer, 0, "")
	got, err := entries(p.newArchive(bufio.NewReader(strings.NewReader(archive)), nil))
	if err != nil {
		t.Fatal(err)
	}
	if want := "[0 1 2 3:abc 4:hello]"; fmt.Sprint(got) != want {
		t.Errorf("entries %v, want %s", got, want)
	}

	// A set whose content never comes is refused.
	archive = newcEntry("./a/one", 0o100644, "") + newcEntry("./b", 0o40755, "") + newcEntry("./b/two", 0o100644, "") +
		newcEntry("./c", 0o100644, "abc") + newcEntry("./d/three", 0o100644, "") + newcEntry(cpioTrailer, 0, "")
	_, err = entries(p.newArchive(bufio.NewReader(strings.NewReader(archive)), nil))
	mustUnusable(t, err)
}
