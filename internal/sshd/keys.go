package sshd

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"time"

	gossh "golang.org/x/crypto/ssh"
)

// authorizedKey is one accepted line of the authorized_keys file with the
// options this server honours. Options it cannot honour refuse the whole
// line, so a restriction is never silently dropped.
type authorizedKey struct {
	key         gossh.PublicKey
	fingerprint string
	line        int
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

// keyProblem is a line of the file that was refused, with the reason.
type keyProblem struct {
	line        int
	fingerprint string
	reason      string
}

// keySet is a parsed authorized_keys file. It is immutable once built and
// swapped whole on reload, so authentication never sees a half-read file.
type keySet struct {
	// byKey maps the wire form of a key to its lines, in file order:
	// OpenSSH tries every line with the key until one authorises.
	byKey    map[string][]*authorizedKey
	count    int
	missing  bool
	err      string // why the file could not be read
	refused  []keyProblem
	warnings []keyProblem
	raw      []byte
}

// empty reports whether nobody can log in with this set.
func (ks *keySet) empty() bool { return ks.count == 0 }

// lookup returns the first line for key that authorises a login from addr
// at now, or the reason none does.
func (ks *keySet) lookup(key gossh.PublicKey, addr netip.Addr, now time.Time) (*authorizedKey, error) {
	lines := ks.byKey[string(key.Marshal())]
	if len(lines) == 0 {
		return nil, errUnknownKey
	}
	var err error
	for _, ak := range lines {
		if err = ak.allows(addr, now); err == nil {
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

// allows checks the options that depend on the connection.
func (ak *authorizedKey) allows(addr netip.Addr, now time.Time) error {
	if !ak.expires.IsZero() && !now.Before(ak.expires) {
		return errExpired
	}
	if ak.from != nil && !matchFrom(ak.from, addr) {
		return errFrom
	}
	return nil
}

// parseAuthorizedKeys parses an OpenSSH authorized_keys file. Bad lines and
// lines with options this server cannot honour are refused one by one and
// reported; the good lines still count.
func parseAuthorizedKeys(data []byte) *keySet {
	ks := &keySet{byKey: map[string][]*authorizedKey{}, raw: data}
	for i, line := range bytes.Split(data, []byte("\n")) {
		n := i + 1
		line = bytes.TrimSpace(line)
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		key, _, options, _, err := gossh.ParseAuthorizedKey(line)
		if err != nil {
			ks.refused = append(ks.refused, keyProblem{line: n, reason: "unparsable line"})
			continue
		}
		ak := &authorizedKey{key: key, fingerprint: gossh.FingerprintSHA256(key), line: n}
		if _, isCert := key.(*gossh.Certificate); isCert {
			ks.refused = append(ks.refused, keyProblem{line: n, fingerprint: ak.fingerprint, reason: "certificates are not supported"})
			continue
		}
		warn, err := ak.applyOptions(options)
		if err != nil {
			ks.refused = append(ks.refused, keyProblem{line: n, fingerprint: ak.fingerprint, reason: err.Error()})
			continue
		}
		if warn != "" {
			ks.warnings = append(ks.warnings, keyProblem{line: n, fingerprint: ak.fingerprint, reason: warn})
		}
		k := string(key.Marshal())
		ks.byKey[k] = append(ks.byKey[k], ak)
		ks.count++
	}
	return ks
}

// envName is what environment= and client env requests may name.
var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// applyOptions honours the key options this server supports and refuses
// the line for any other: an option the operator wrote is either enforced
// or the key does not work. It returns a warning for honoured options
// whose meaning differs from OpenSSH's.
func (ak *authorizedKey) applyOptions(options []string) (warning string, err error) {
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
