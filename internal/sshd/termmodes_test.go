package sshd

import (
	"encoding/binary"
	"slices"
	"strings"
	"testing"

	gossh "golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"
)

// encodeModes is the encoded terminal modes string (RFC 4254 8) of ops,
// ended by TTY_OP_END.
func encodeModes(ops ...termMode) string {
	var b []byte
	for _, m := range ops {
		b = binary.BigEndian.AppendUint32(append(b, m.op), m.arg)
	}
	return string(append(b, 0))
}

func TestParseTermModes(t *testing.T) {
	const (
		vintr, verase, vdsusp, icrnl, echo = 1, 3, 11, 36, 53
	)
	tests := []struct {
		name    string
		in      string
		want    []termMode
		wantErr bool
	}{
		{name: "empty"},
		{name: "end only", in: "\x00"},
		{name: "modes", in: encodeModes(termMode{echo, 0}, termMode{verase, 8}),
			want: []termMode{{echo, 0}, {verase, 8}}},
		{name: "no TTY_OP_END", in: encodeModes(termMode{vintr, 3})[:5], want: []termMode{{vintr, 3}}},
		{name: "unsupported opcode skipped", in: encodeModes(termMode{vdsusp, 25}, termMode{icrnl, 1}, termMode{159, 7}),
			want: []termMode{{icrnl, 1}}},
		{name: "undefined opcode stops", in: encodeModes(termMode{vintr, 3})[:5] + "\xa0garbage", want: []termMode{{vintr, 3}}},
		{name: "after TTY_OP_END ignored", in: "\x00\x01\x02"},
		{name: "truncated argument", in: "\x03\x00\x00\x08", wantErr: true},
		{name: "opcode without argument", in: encodeModes(termMode{echo, 1})[:5] + "\x35", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseTermModes(tt.in)
			if (err != nil) != tt.wantErr || !slices.Equal(got, tt.want) {
				t.Errorf("parseTermModes(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

// defaultTermios is Linux's tty_std_termios, what a new PTY starts with.
func defaultTermios() unix.Termios {
	t := unix.Termios{
		Iflag: unix.ICRNL | unix.IXON,
		Oflag: unix.OPOST | unix.ONLCR,
		Cflag: unix.B38400 | unix.CS8 | unix.CREAD | unix.HUPCL,
		Lflag: unix.ISIG | unix.ICANON | unix.ECHO | unix.ECHOE | unix.ECHOK | unix.ECHOCTL | unix.ECHOKE | unix.IEXTEN,
	}
	t.Cc[unix.VINTR], t.Cc[unix.VERASE], t.Cc[unix.VKILL] = 0x03, 0x7f, 0x15
	return t
}

func TestApplyTermModes(t *testing.T) {
	got := defaultTermios()
	applyTermModes(&got, []termMode{
		{1, 0x07},      // VINTR ^G
		{3, 0x08},      // VERASE ^H
		{4, 255},       // VKILL disabled
		{2, 0x1c0},     // VQUIT: not a character, ignored
		{36, 0},        // ICRNL off
		{42, 1},        // IUTF8 on
		{53, 0},        // ECHO off
		{72, 0},        // ONLCR off
		{92, 1},        // PARENB on
		{128, 9600},    // TTY_OP_ISPEED
		{129, 115200},  // TTY_OP_OSPEED
		{129, 14400},   // not a Linux rate: ignored
		{128, 0},       // hang up: ignored
		{53, 0xffffff}, // ... and any non-zero argument is on
	})
	want := defaultTermios()
	want.Cc[unix.VINTR], want.Cc[unix.VERASE], want.Cc[unix.VKILL] = 0x07, 0x08, 0
	want.Iflag = unix.IXON | unix.IUTF8
	want.Oflag = unix.OPOST
	want.Cflag = unix.B115200 | unix.B9600<<unix.IBSHIFT | unix.CS8 | unix.CREAD | unix.HUPCL | unix.PARENB
	if got != want {
		t.Errorf("termios = %+v\nwant       %+v", got, want)
	}
}

// termModesMask is every termios bit and control character an opcode can
// change.
func termModesMask() (t unix.Termios) {
	for _, d := range termModeDefs {
		switch d.kind {
		case modeChar:
			t.Cc[d.v] = 0xff
		case modeIflag, modeOflag, modeCflag, modeLflag:
			*flagWord(&t, d.kind) |= d.v
		case modeISpeed:
			t.Cflag |= unix.CIBAUD
		case modeOSpeed:
			t.Cflag |= unix.CBAUD
		}
	}
	return t
}

// FuzzParseTermModes: no modes string panics or is half-read: an accepted
// one encodes back to the same modes, and applying them changes only what
// the opcodes name, the same way twice.
func FuzzParseTermModes(f *testing.F) {
	f.Add(encodeModes(termMode{1, 3}, termMode{3, 0x7f}, termMode{53, 0}, termMode{128, 38400}))
	f.Add("\x03\x00\x00")
	f.Add("\x05\x00\x00\x00\xff\xa0\x01")
	f.Add(encodeModes(termMode{11, 1}, termMode{90, 1}, termMode{91, 0}))
	f.Add("")
	mask := termModesMask()
	f.Fuzz(func(t *testing.T, s string) {
		modes, err := parseTermModes(s)
		if err != nil {
			return
		}
		again, err := parseTermModes(encodeModes(modes...))
		if err != nil || !slices.Equal(again, modes) {
			t.Fatalf("re-encoded %v parsed as %v, %v", modes, again, err)
		}
		before := defaultTermios()
		once := before
		applyTermModes(&once, modes)
		twice := once
		applyTermModes(&twice, modes)
		if twice != once {
			t.Fatalf("applying twice differs: %+v, %+v", once, twice)
		}
		if (once.Iflag^before.Iflag)&^mask.Iflag != 0 || (once.Oflag^before.Oflag)&^mask.Oflag != 0 ||
			(once.Cflag^before.Cflag)&^mask.Cflag != 0 || (once.Lflag^before.Lflag)&^mask.Lflag != 0 ||
			once.Line != before.Line {
			t.Fatalf("flags outside the modes changed: %+v -> %+v", before, once)
		}
		for i := range once.Cc {
			if mask.Cc[i] == 0 && once.Cc[i] != before.Cc[i] {
				t.Fatalf("c_cc[%d] changed", i)
			}
		}
	})
}

// sttyA runs `stty -a` on a PTY requested with modes and returns its
// output.
func sttyA(t *testing.T, c *gossh.Client, modes gossh.TerminalModes) string {
	t.Helper()
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.RequestPty("xterm", 24, 80, modes); err != nil {
		t.Fatal(err)
	}
	out, err := s.Output("stty -a")
	if err != nil {
		t.Fatalf("stty -a: %v\n%s", err, out)
	}
	return string(out)
}

// checkStty fails t for each of want missing from `stty -a`'s output, as
// words where "erase = ^H;" is "erase=^H" and "speed 9600 baud;" is
// "speed=9600".
func checkStty(t *testing.T, out string, want ...string) {
	t.Helper()
	words := map[string]bool{}
	s := strings.NewReplacer(" = ", "=", "speed ", "speed=", ";", " ", "\r", " ").Replace(out)
	for _, w := range strings.Fields(s) {
		words[w] = true
	}
	for _, w := range want {
		if !words[w] {
			t.Errorf("stty -a has no %q:\n%s", w, out)
		}
	}
}

func TestPTYTermModes(t *testing.T) {
	k := newUserKey(t)
	ts := startServer(t, k.line+"\n", nil)
	c := ts.mustDial(t, k)

	t.Run("client modes", func(t *testing.T) {
		out := sttyA(t, c, gossh.TerminalModes{
			gossh.ECHO: 0, gossh.ICRNL: 0, gossh.IUTF8: 1,
			gossh.VERASE: 0x08, gossh.VINTR: 0x07, gossh.VKILL: 255,
			gossh.TTY_OP_ISPEED: 9600, gossh.TTY_OP_OSPEED: 9600,
			gossh.VDSUSP: 0x19, // no such thing on Linux: ignored
		})
		checkStty(t, out, "-echo", "-icrnl", "iutf8", "erase=^H", "intr=^G", "kill=<undef>", "speed=9600", "icanon")
	})
	t.Run("no modes", func(t *testing.T) {
		checkStty(t, sttyA(t, c, nil), "echo", "icrnl", "-iutf8", "erase=^?", "intr=^C", "kill=^U", "speed=38400")
	})
}
