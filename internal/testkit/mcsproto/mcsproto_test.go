package mcsproto

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestRoundTrip(t *testing.T) {
	tests := []struct {
		want any
		into func() any // a pointer to a zero value of want's type
		wire string     // a piece of the line that must be sent
	}{
		{
			want: Register{Op: OpRegister, Name: "pod-0", Domain: "/clients", IPList: "10.0.0.7,10.0.0.8", ListenPort: 28002},
			into: func() any { return new(Register) },
			wire: `"op":"register"`,
		},
		{
			want: Hello{Op: OpHello, Name: "pod-0", ClientID: "00000000000000000000000000000000000000a1", IPList: "10.0.0.9", ListenPort: 28002},
			into: func() any { return new(Hello) },
			wire: `"op":"hello","name":"pod-0","client_id":"00000000000000000000000000000000000000a1","iplist":"10.0.0.9","listenport":28002`,
		},
		{
			want: HelloReply{Reason: "unknown client pod-0"},
			into: func() any { return new(HelloReply) },
			wire: `{"ok":false,"reason":"unknown client pod-0"}`,
		},
	}
	for _, tc := range tests {
		var b bytes.Buffer
		if err := Write(&b, tc.want); err != nil {
			t.Fatal(err)
		}
		if !strings.HasSuffix(b.String(), "}\n") || strings.Count(b.String(), "\n") != 1 {
			t.Errorf("not one line: %q", b.String())
		}
		if !strings.Contains(b.String(), tc.wire) {
			t.Errorf("sent %q, want it to hold %s", b.String(), tc.wire)
		}
		got := tc.into()
		if err := Read(bufio.NewReader(&b), got); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(tc.want, reflect.ValueOf(got).Elem().Interface()); diff != "" {
			t.Errorf("(-want +got):\n%s", diff)
		}
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
	f.Add([]byte(`{"op":"hello","name":"x","client_id":"1","iplist":"10.0.0.9","listenport":28002}` + "\n"))
	f.Add([]byte("\n\n"))
	f.Add([]byte(`{"ok":true}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var r Register
		_ = Read(bufio.NewReader(bytes.NewReader(b)), &r)
		var h Hello
		_ = Read(bufio.NewReader(bytes.NewReader(b)), &h)
	})
}
