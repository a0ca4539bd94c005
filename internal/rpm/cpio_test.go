package rpm

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"testing"
)

func newcEntry(name string, mode uint32, data string) string {
	h := fmt.Sprintf("070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		1, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name)+1, 0)
	s := h + name + "\x00"
	s += string(make([]byte, pad4(int64(len(s)))))
	s += data + string(make([]byte, pad4(int64(len(data)))))
	return s
}

// TestCPIOStripped reads rpm's stripped format (07070X + file index),
// which rpm uses for packages with files of 4 GiB or more.
func TestCPIOStripped(t *testing.T) {
	sizes := []int64{5, 0, 3}
	archive := "07070X00000002\x00\x00" + "abc\x00" +
		"07070X00000000\x00\x00" + "hello\x00\x00\x00" +
		newcEntry(cpioTrailer, 0, "")
	cr := newCPIO(bufio.NewReader(bytes.NewReader([]byte(archive))), func(i int) (int64, bool) {
		if i < 0 || i >= len(sizes) {
			return 0, false
		}
		return sizes[i], true
	})
	var got []string
	for {
		e, err := cr.next()
		if errors.Is(err, errTrailer) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(cr)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%d:%s", e.index, data))
	}
	if want := "[2:abc 0:hello]"; fmt.Sprint(got) != want {
		t.Errorf("got %v, want %s", got, want)
	}
}

func TestCPIOHostile(t *testing.T) {
	sizeOf := func(int) (int64, bool) { return 0, false }
	for name, archive := range map[string]string{
		"bad magic":          "123456" + newcEntry("x", 0o100644, "")[6:],
		"name too long":      fmt.Sprintf("070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x", 1, 0o100644, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1<<20, 0),
		"unterminated name":  newcEntry("x", 0o100644, "")[:110] + "xy\x00\x00",
		"bad hex":            "070701zzzzzzzz" + newcEntry("x", 0o100644, "")[14:],
		"index out of range": "07070X00000009\x00\x00",
		"truncated header":   newcEntry("x", 0o100644, "data")[:50],
		"truncated":          "",
	} {
		cr := newCPIO(bufio.NewReader(bytes.NewReader([]byte(archive))), sizeOf)
		if _, err := cr.next(); err == nil || errors.Is(err, errTrailer) {
			t.Errorf("%s: %v, want an error", name, err)
		}
	}
}
