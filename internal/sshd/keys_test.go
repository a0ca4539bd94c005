package sshd

import (
	"bytes"
	"crypto/sha256"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	gossh "golang.org/x/crypto/ssh"
)

// aKey is a fixed public key for parser tables.
const aKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKieR1q321O/Luu8EOV/Iph3rHjHSO1T4cvE7ZgnGc+e test@host"

func TestParseAuthorizedKeysOptions(t *testing.T) {
	type got struct {
		Refused    string
		From       []string
		Command    string
		HasCommand bool
		NoPTY      bool
		Env        []string
		Warning    string
	}
	tests := []struct {
		opts string
		want got
	}{
		{"", got{}},
		{`command="echo hi"`, got{Command: "echo hi", HasCommand: true}},
		{`command="echo \"quoted\" \\n"`, got{Command: `echo "quoted" \\n`, HasCommand: true}},
		{`COMMAND="x"`, got{Command: "x", HasCommand: true}},
		{`from="10.0.0.0/8,!10.1.2.3,192.168.*"`, got{From: []string{"10.0.0.0/8", "!10.1.2.3", "192.168.*"}}},
		{`from="*.example.com"`, got{From: []string{"*.example.com"}, Warning: "from= host name patterns are matched against the client address only (no DNS)"}},
		{`no-pty`, got{NoPTY: true}},
		{`restrict`, got{NoPTY: true}},
		{`restrict,pty`, got{}},
		{`no-port-forwarding,no-agent-forwarding,no-X11-forwarding,no-user-rc`, got{}},
		{`environment="LANG=C",environment="X_Y=1 2"`, got{Env: []string{"LANG=C", "X_Y=1 2"}}},
		{`expiry-time="29991231"`, got{}},
		// Refused: never silently ignored.
		{`permitopen="localhost:80"`, got{Refused: "unsupported option permitopen"}},
		{`port-forwarding`, got{Refused: "unsupported option port-forwarding"}},
		{`agent-forwarding`, got{Refused: "unsupported option agent-forwarding"}},
		{`X11-forwarding`, got{Refused: "unsupported option x11-forwarding"}},
		{`cert-authority`, got{Refused: "unsupported option cert-authority"}},
		{`principals="root"`, got{Refused: "unsupported option principals"}},
		{`tunnel="0"`, got{Refused: "unsupported option tunnel"}},
		{`verify-required`, got{Refused: "unsupported option verify-required"}},
		{`no-touch-required`, got{Refused: "unsupported option no-touch-required"}},
		{`user-rc`, got{Refused: "unsupported option user-rc"}},
		{`no-pty="x"`, got{Refused: "unsupported option no-pty"}},
		{`command=echo`, got{Refused: "option command: value must be in double quotes"}},
		{`command="a",command="b"`, got{Refused: "option command given twice"}},
		{`from="10.0.0.0/33"`, got{Refused: `option from: bad address block "10.0.0.0/33"`}},
		{`from=""`, got{Refused: "option from: empty pattern"}},
		{`from="1.2.3.4",from="5.6.7.8"`, got{Refused: "option from given twice"}},
		{`environment="BAD-NAME=1"`, got{Refused: `option environment: bad value "BAD-NAME=1"`}},
		{`environment="NOVALUE"`, got{Refused: `option environment: bad value "NOVALUE"`}},
		{`expiry-time="2026"`, got{Refused: `option expiry-time: bad time "2026"`}},
	}
	for _, tt := range tests {
		t.Run(tt.opts, func(t *testing.T) {
			line := aKey
			if tt.opts != "" {
				line = tt.opts + " " + aKey
			}
			ks := mustParse(t, "# comment\n\n"+line+"\n")
			var g got
			if ks.refused > 0 {
				g.Refused = ks.problems[0].reason
				if ks.problems[0].line != 3 || ks.count != 0 {
					t.Errorf("refused line %d, count %d", ks.problems[0].line, ks.count)
				}
			}
			if lines := ks.byKey[sha256.Sum256(parseKey(t, aKey).Marshal())]; len(lines) > 0 && lines[0].opts != nil {
				o := lines[0].opts
				g.From, g.Command, g.HasCommand, g.NoPTY, g.Env = o.from, o.command, o.hasCommand, o.noPTY, o.env
			}
			if len(ks.warnings) > 0 {
				g.Warning = ks.warnings[0].reason
			}
			if d := cmp.Diff(tt.want, g); d != "" {
				t.Errorf("(-want +got)\n%s", d)
			}
		})
	}
}

func TestParseAuthorizedKeysBadLines(t *testing.T) {
	ks := mustParse(t, strings.Join([]string{
		"ssh-ed25519 not-base64",
		"ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIKieR1q321O/Luu8EOV/Iph3rHjHSO1T4cvE7ZgnGc+e", // type mismatch
		"restrict",
		aKey,
		"\x00\xff garbage",
		"   " + aKey + "   ",
	}, "\r\n"))
	if ks.count != 2 || ks.refused != 4 {
		t.Errorf("count %d refused %d (%+v), want 2 and 4", ks.count, ks.refused, ks.problems)
	}
}

func TestLookupOptions(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	local := netip.MustParseAddr("127.0.0.1")
	far := netip.MustParseAddr("10.1.2.3")
	tests := []struct {
		opts string
		addr netip.Addr
		want error
	}{
		{"", local, nil},
		{`from="127.0.0.1"`, local, nil},
		{`from="127.0.0.1"`, far, errFrom},
		{`from="10.0.0.0/8"`, far, nil},
		{`from="10.0.0.0/8,!10.1.2.3"`, far, errFrom},
		{`from="!10.1.2.3,*"`, local, nil},
		{`from="127.0.0.?"`, local, nil},
		{`from="*.example.com"`, local, errFrom},
		{`from="::1"`, netip.MustParseAddr("::1"), nil},
		{`from="127.0.0.1"`, netip.MustParseAddr("::ffff:127.0.0.1"), nil},
		{`expiry-time="20261123"`, local, errExpired},
		{`expiry-time="202611231201Z"`, local, nil},
		{`expiry-time="20261123120000Z"`, local, errExpired},
	}
	for _, tt := range tests {
		ks := mustParse(t, strings.TrimSpace(tt.opts+" "+aKey))
		if ks.count != 1 {
			t.Fatalf("%s: not parsed: %+v", tt.opts, ks.problems)
		}
		if _, err := ks.lookup(parseKey(t, aKey), tt.addr, now); err != tt.want {
			t.Errorf("%s from %v: %v, want %v", tt.opts, tt.addr, err, tt.want)
		}
	}
}

// TestLookupTriesEveryLine: OpenSSH tries each line holding the key, so
// one restricted line does not hide another that allows the client.
func TestLookupTriesEveryLine(t *testing.T) {
	ks := mustParse(t, `from="10.0.0.0/8" `+aKey+"\n"+`command="true" `+aKey+"\n")
	ak, err := ks.lookup(parseKey(t, aKey), netip.MustParseAddr("127.0.0.1"), time.Now())
	if err != nil || !ak.hasCommand || ak.line != 2 {
		t.Fatalf("lookup = %+v, %v; want line 2 with its forced command", ak, err)
	}
}

// mustParse parses an authorized_keys file's content.
func mustParse(t *testing.T, content string) *keySet {
	t.Helper()
	ks, err := parseAuthorizedKeys(strings.NewReader(content))
	if err != nil {
		t.Fatal(err)
	}
	return ks
}

// parseKey is the public key of an authorized_keys line.
func parseKey(t *testing.T, line string) gossh.PublicKey {
	t.Helper()
	k, _, _, _, err := gossh.ParseAuthorizedKey([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestWildcard(t *testing.T) {
	for _, tt := range []struct {
		pat, s string
		want   bool
	}{
		{"*", "", true},
		{"*", "1.2.3.4", true},
		{"1.2.3.4", "1.2.3.4", true},
		{"1.2.3.4", "1.2.3.45", false},
		{"1.2.3.?", "1.2.3.4", true},
		{"1.2.3.?", "1.2.3.45", false},
		{"1.*.4", "1.2.3.4", true},
		{"*.*.*.*", "1.2.3.4", true},
		{"**a", "bbba", true},
		{"a*b*c", "axxbyyc", true},
		{"a*b*c", "axxbyy", false},
		{"", "x", false},
	} {
		if got := wildcard(tt.pat, tt.s); got != tt.want {
			t.Errorf("wildcard(%q, %q) = %v, want %v", tt.pat, tt.s, got, tt.want)
		}
	}
}

func TestClientEnvAllowed(t *testing.T) {
	for _, tt := range []struct {
		name, value string
		want        bool
	}{
		{"LANG", "C.UTF-8", true},
		{"LC_ALL", "C", true},
		{"TZ", "UTC", true},
		{"PATH", "/tmp", false},
		{"LD_PRELOAD", "/tmp/x.so", false},
		{"BASH_ENV", "/tmp/x", false},
		{"HOME", "/tmp", false},
		{"LC_ALL", "a\x00b", false},
		{"LC_X=Y", "1", false},
		{"LANG", strings.Repeat("x", 2000), false},
	} {
		if got := clientEnvAllowed(tt.name, tt.value); got != tt.want {
			t.Errorf("clientEnvAllowed(%q) = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// FuzzParseAuthorizedKeys: no input panics, every accepted line honours
// its options, and a line with an option this server does not know is
// refused rather than accepted without it.
func FuzzParseAuthorizedKeys(f *testing.F) {
	for _, s := range []string{aKey, `from="1.2.3.4" ` + aKey, `command="x",no-pty ` + aKey, `permitopen="x:1" ` + aKey,
		`environment="A=b" ` + aKey, "restrict " + aKey, `from="!*,1.*" ` + aKey, "\"\"\\ " + aKey} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ks, err := parseAuthorizedKeys(bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, lines := range ks.byKey {
			for _, kl := range lines {
				n++
				if kl.opts == nil {
					continue
				}
				for _, kv := range kl.opts.env {
					if k, _, ok := strings.Cut(kv, "="); !ok || !envName.MatchString(k) {
						t.Fatalf("bad env accepted: %q", kv)
					}
				}
				_ = kl.opts.allows(netip.MustParseAddr("127.0.0.1"), time.Now())
			}
		}
		if n != ks.count {
			t.Fatalf("count %d, lines %d", ks.count, n)
		}
	})
}

// FuzzMatchFrom: matching never panics, and a negated pattern that
// matches always refuses.
func FuzzMatchFrom(f *testing.F) {
	f.Add("10.0.0.0/8,!10.1.*", "10.1.2.3")
	f.Add("*", "::1")
	f.Add("a*b?c", "1.2.3.4")
	f.Fuzz(func(t *testing.T, list, ip string) {
		addr, err := netip.ParseAddr(ip)
		if err != nil {
			return
		}
		pats, _, err := parseFrom(list)
		if err != nil {
			return
		}
		got := matchFrom(pats, addr)
		if got && matchFrom(append([]string{"!" + addr.Unmap().String()}, pats...), addr) {
			t.Fatalf("negated exact address did not refuse")
		}
	})
}
