package mcsproto

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestRoundTrip(t *testing.T) {
	var b bytes.Buffer
	want := Register{Op: OpRegister, Name: "pod-0", Domain: "/clients", IPList: "10.0.0.7,10.0.0.8", ListenPort: 28002}
	if err := Write(&b, want); err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(b.String(), "}\n") || strings.Count(b.String(), "\n") != 1 {
		t.Errorf("not one line: %q", b.String())
	}
	var got Register
	if err := Read(bufio.NewReader(&b), &got); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestReadEnds(t *testing.T) {
	tests := []struct {
		in   string
		want error // nil: any error but these
	}{
		{"", io.EOF},
		{`{"op":"ping"`, nil},
		{"not json\n", nil},
		{strings.Repeat("x", maxLine+10) + "\n", nil},
	}
	for _, tc := range tests {
		var p Ping
		err := Read(bufio.NewReader(strings.NewReader(tc.in)), &p)
		if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) {
			t.Errorf("Read(%.20q...): %v, want %v", tc.in, err, tc.want)
		}
	}
}

// FuzzRead: whatever a peer sends, Read returns, without panicking.
func FuzzRead(f *testing.F) {
	f.Add([]byte(`{"op":"register","name":"x","listenport":1}` + "\n"))
	f.Add([]byte("\n\n"))
	f.Add([]byte(`{"ok":true}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var r Register
		_ = Read(bufio.NewReader(bytes.NewReader(b)), &r)
	})
}
