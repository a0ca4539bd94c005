package sshd

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"regexp"
	"strings"
	"time"

	gossh "golang.org/x/crypto/ssh"
)

// keyOptions are the options of an authorized_keys line that this server
// honours. Options it cannot honour refuse the whole line, so a
// restriction is never silently dropped.
type keyOptions struct {
	// from is the from= pattern list; nil means any source address.
	from []string
	// command is the forced command= (hasCommand tells "" from unset).
	command    string
	hasCommand bool
	// noPTY is set by no-pty, or restrict without pty.
	noPTY bool
	// env holds environment= NAME=value pairs for every session.
	env []string
	// expires is expiry-time=; zero means never.
	expires time.Time
}

// keyLine is an accepted line as the key set keeps it between logins: its
// number and its options, nil for a line without any (most of them). The
// key itself is the map key it is filed under.
type keyLine struct {
	line int
	opts *keyOptions
}

// authorizedKey is the line that authorised a login, with the key's
// fingerprint: what the session and the log need of it.
type authorizedKey struct {
	keyOptions
	fingerprint string
	line        int
}

// keyProblem is a line of the file that was refused, or accepted with a
// warning, with the reason.
type keyProblem struct {
	line        int
	fingerprint string
	reason      string
}

// maxProblems is how many refused lines, and how many warnings, a key set
// keeps to log: a file of thousands of bad lines logs the first ones and
// a count, not a line each.
const maxProblems = 10

// keySet is a parsed authorized_keys file. It is immutable once built and
// swapped whole on reload, so authentication never sees a half-read file.
// It keeps only what a login needs: for each key, by the SHA-256 of its
// wire form (the raw SHA256 fingerprint), its lines and their options; not
// the file, not the parsed keys.
type keySet struct {
	// byKey maps the SHA-256 of a key's wire form to its lines, in file
	// order: OpenSSH tries every line with the key until one authorises.
	byKey   map[[sha256.Size]byte][]keyLine
	count   int
	missing bool
	err     string // why the file could not be read
	// refused counts the refused lines; problems and warnings are the
	// first maxProblems of them and of the warnings.
	refused  int
	problems []keyProblem
	warnings []keyProblem
	// src is the file the set was read from (zero when missing or
	// unreadable), to tell a real change from an event that changed
	// nothing.
	src fileState
}

// empty reports whether nobody can log in with this set.
func (ks *keySet) empty() bool { return ks.count == 0 }

// lookup returns the first line for key that authorises a login from addr
// at now, or the reason none does.
func (ks *keySet) lookup(key gossh.PublicKey, addr netip.Addr, now time.Time) (*authorizedKey, error) {
	lines := ks.byKey[sha256.Sum256(key.Marshal())]
	if len(lines) == 0 {
		return nil, errUnknownKey
	}
	var err error
	for _, kl := range lines {
		if err = kl.opts.allows(addr, now); err == nil {
			ak := &authorizedKey{fingerprint: gossh.FingerprintSHA256(key), line: kl.line}
			if kl.opts != nil {
				ak.keyOptions = *kl.opts
			}
			return ak, nil
		}
	}
	return nil, err
}

var (
	errUnknownKey = errors.New("key not in authorized_keys")
	errFrom       = errors.New("source address not allowed by from=")
	errExpired    = errors.New("key expired by expiry-time=")
)

// allows checks the options that depend on the connection; nil options
// allow everything.
func (o *keyOptions) allows(addr netip.Addr, now time.Time) error {
	if o == nil {
		return nil
	}
	if !o.expires.IsZero() && !now.Before(o.expires) {
		return errExpired
	}
	if o.from != nil && !matchFrom(o.from, addr) {
		return errFrom
	}
	return nil
}

// maxKeyLine bounds one line of the file: an RSA key of 16,384 bits is
// under 3 KiB, so this leaves room for long option lists. A longer line
// is refused, and the lines after it still count.
const maxKeyLine = 64 << 10

// parseAuthorizedKeys reads an OpenSSH authorized_keys file line by line,
// holding one line at a time. Bad lines and lines with options this
// server cannot honour are refused one by one and counted; the good lines
// still count. Only a read error fails it.
func parseAuthorizedKeys(r io.Reader) (*keySet, error) {
	ks := &keySet{byKey: map[[sha256.Size]byte][]keyLine{}}
	br := bufio.NewReader(r)
	var buf []byte
	for n := 1; ; n++ {
		line, tooLong, err := readLine(br, buf, maxKeyLine)
		buf = line
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, err
		}
		switch {
		case tooLong:
			ks.refuse(keyProblem{line: n, reason: "line longer than 64 KiB"})
		case len(line) > 0:
			ks.add(n, line)
		}
		if err != nil {
			return ks, nil
		}
	}
}

// readLine returns the next line of br in buf's memory, and whether it was
// longer than max (it is then read to its end and dropped); err is io.EOF
// after the last line.
func readLine(br *bufio.Reader, buf []byte, max int) (line []byte, tooLong bool, err error) {
	line = buf[:0]
	for {
		chunk, err := br.ReadSlice('\n')
		if !tooLong && len(line)+len(chunk) > max {
			tooLong, line = true, line[:0]
		}
		if !tooLong {
			line = append(line, chunk...)
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return line, tooLong, err
		}
	}
}

// add parses line n and files it, or records why it is refused.
func (ks *keySet) add(n int, line []byte) {
	line = bytes.TrimSpace(line)
	if len(line) == 0 || line[0] == '#' {
		return
	}
	key, _, options, _, err := gossh.ParseAuthorizedKey(line)
	if err != nil {
		ks.refuse(keyProblem{line: n, reason: "unparsable line"})
		return
	}
	if _, isCert := key.(*gossh.Certificate); isCert {
		ks.refuse(keyProblem{line: n, fingerprint: gossh.FingerprintSHA256(key), reason: "certificates are not supported"})
		return
	}
	kl := keyLine{line: n}
	if len(options) > 0 {
		kl.opts = &keyOptions{}
		warn, err := kl.opts.apply(options)
		if err != nil {
			ks.refuse(keyProblem{line: n, fingerprint: gossh.FingerprintSHA256(key), reason: err.Error()})
			return
		}
		if warn != "" && len(ks.warnings) < maxProblems {
			ks.warnings = append(ks.warnings, keyProblem{line: n, fingerprint: gossh.FingerprintSHA256(key), reason: warn})
		}
	}
	sum := sha256.Sum256(key.Marshal())
	ks.byKey[sum] = append(ks.byKey[sum], kl)
	ks.count++
}

// refuse counts a refused line and keeps the first few to log.
func (ks *keySet) refuse(p keyProblem) {
	ks.refused++
	if len(ks.problems) < maxProblems {
		ks.problems = append(ks.problems, p)
	}
}

// envName is what environment= and client env requests may name.
var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// apply honours the key options this server supports and refuses the
// line for any other: an option the operator wrote is either enforced or
// the key does not work. It returns a warning for honoured options whose
// meaning differs from OpenSSH's.
func (ak *keyOptions) apply(options []string) (warning string, err error) {
	restrict, pty := false, false
	for _, opt := range options {
		name, value, hasValue := strings.Cut(opt, "=")
		name = strings.ToLower(name)
		if hasValue {
			value, err = dequote(value)
			if err != nil {
				return "", fmt.Errorf("option %s: %w", name, err)
			}
		}
		switch {
		case !hasValue && (name == "no-port-forwarding" || name == "no-agent-forwarding" ||
			name == "no-x11-forwarding" || name == "no-user-rc"):
			// Forwarding and rc files are never offered: honoured as is.
		case !hasValue && name == "restrict":
			restrict = true
		case !hasValue && name == "pty":
			pty = true
		case !hasValue && name == "no-pty":
			ak.noPTY = true
		case hasValue && name == "command":
			if ak.hasCommand {
				return "", errors.New("option command given twice")
			}
			ak.command, ak.hasCommand = value, true
		case hasValue && name == "from":
			if ak.from != nil {
				return "", errors.New("option from given twice")
			}
			pats, hostPattern, err := parseFrom(value)
			if err != nil {
				return "", fmt.Errorf("option from: %w", err)
			}
			ak.from = pats
			if hostPattern {
				warning = "from= host name patterns are matched against the client address only (no DNS)"
			}
		case hasValue && name == "environment":
			k, _, ok := strings.Cut(value, "=")
			if !ok || !envName.MatchString(k) || strings.ContainsRune(value, 0) {
				return "", fmt.Errorf("option environment: bad value %q", value)
			}
			ak.env = append(ak.env, value)
		case hasValue && name == "expiry-time":
			t, err := parseExpiry(value)
			if err != nil {
				return "", fmt.Errorf("option expiry-time: %w", err)
			}
			ak.expires = t
		default:
			return "", fmt.Errorf("unsupported option %s", name)
		}
	}
	if restrict && !pty {
		ak.noPTY = true
	}
	return warning, nil
}

// dequote removes the double quotes around an option value. Like OpenSSH,
// only \" is an escape.
func dequote(v string) (string, error) {
	if len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' {
		return "", errors.New("value must be in double quotes")
	}
	v = v[1 : len(v)-1]
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		if v[i] == '\\' && i+1 < len(v) && v[i+1] == '"' {
			i++
		} else if v[i] == '"' {
			return "", errors.New("unescaped quote in value")
		}
		b.WriteByte(v[i])
	}
	if strings.ContainsRune(b.String(), 0) {
		return "", errors.New("NUL in value")
	}
	return b.String(), nil
}

// parseExpiry reads OpenSSH's YYYYMMDD[HHMM[SS]][Z] in local time, or UTC
// with a trailing Z.
func parseExpiry(v string) (time.Time, error) {
	loc := time.Local
	if s, ok := strings.CutSuffix(v, "Z"); ok {
		v, loc = s, time.UTC
	}
	layouts := map[int]string{8: "20060102", 12: "200601021504", 14: "20060102150405"}
	layout, ok := layouts[len(v)]
	if !ok {
		return time.Time{}, fmt.Errorf("bad time %q", v)
	}
	t, err := time.ParseInLocation(layout, v, loc)
	if err != nil {
		return time.Time{}, fmt.Errorf("bad time %q: %w", v, err)
	}
	return t, nil
}

// parseFrom validates a from= pattern list. CIDR entries must parse; the
// others are wildcard patterns. hostPattern reports a pattern that can only
// match a host name, which this server never looks up.
func parseFrom(v string) (pats []string, hostPattern bool, err error) {
	for p := range strings.SplitSeq(v, ",") {
		p = strings.TrimSpace(p)
		bare := strings.TrimPrefix(p, "!")
		if bare == "" {
			return nil, false, errors.New("empty pattern")
		}
		if strings.Contains(bare, "/") {
			if _, err := netip.ParsePrefix(bare); err != nil {
				return nil, false, fmt.Errorf("bad address block %q", bare)
			}
		} else if strings.Trim(strings.ToLower(bare), "0123456789abcdef.:*?") != "" {
			hostPattern = true
		}
		pats = append(pats, p)
	}
	return pats, hostPattern, nil
}

// matchFrom applies OpenSSH's pattern-list rule to addr: a matching negated
// pattern refuses, otherwise any matching pattern allows.
func matchFrom(pats []string, addr netip.Addr) bool {
	addr = addr.Unmap()
	ip := addr.String()
	ok := false
	for _, p := range pats {
		neg := strings.HasPrefix(p, "!")
		p = strings.TrimPrefix(p, "!")
		var m bool
		if strings.Contains(p, "/") {
			pfx, err := netip.ParsePrefix(p)
			m = err == nil && addr.IsValid() && pfx.Contains(addr)
		} else {
			m = wildcard(strings.ToLower(p), ip)
		}
		if m && neg {
			return false
		}
		ok = ok || m
	}
	return ok
}

// wildcard matches s against a pattern of literal characters, '*' (any
// run) and '?' (any one character).
func wildcard(pat, s string) bool {
	// Iterative match with one backtrack point: linear enough for the
	// short patterns of an authorized_keys file, and no recursion depth
	// for a hostile one.
	p, i, star, mark := 0, 0, -1, 0
	for i < len(s) {
		switch {
		case p < len(pat) && (pat[p] == '?' || pat[p] == s[i]):
			p++
			i++
		case p < len(pat) && pat[p] == '*':
			star, mark = p, i
			p++
		case star >= 0:
			p = star + 1
			mark++
			i = mark
		default:
			return false
		}
	}
	for p < len(pat) && pat[p] == '*' {
		p++
	}
	return p == len(pat)
}
