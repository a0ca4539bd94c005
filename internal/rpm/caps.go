package rpm

import (
	"encoding/binary"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// File capabilities: a package gives them in text (%caps, the FILECAPS
// tag), as libcap's cap_from_text reads them; rpm writes them with
// cap_set_fd, as the security.capability extended attribute. This is the
// same grammar and the same encoding, written here so that the installer
// needs no C library; TestCapabilityXattr compares it with setcap(8).

// capNames are the capabilities libcap knows by name, by number.
var capNames = []string{
	"chown", "dac_override", "dac_read_search", "fowner", "fsetid", "kill", "setgid", "setuid", "setpcap",
	"linux_immutable", "net_bind_service", "net_broadcast", "net_admin", "net_raw", "ipc_lock", "ipc_owner",
	"sys_module", "sys_rawio", "sys_chroot", "sys_ptrace", "sys_pacct", "sys_admin", "sys_boot", "sys_nice",
	"sys_resource", "sys_time", "sys_tty_config", "mknod", "lease", "audit_write", "audit_control", "setfcap",
	"mac_override", "mac_admin", "syslog", "wake_alarm", "block_suspend", "audit_read", "perfmon", "bpf",
	"checkpoint_restore",
}

// capSets is a capability set of each kind.
type capSets struct{ effective, permitted, inheritable uint64 }

// CapabilityXattr returns the value of the security.capability attribute
// that rpm writes for the capabilities text of a file (%caps). bits is
// the number of capabilities the running kernel knows (KernelCapBits):
// "all" means those, as with libcap. A text libcap would not read, or
// whose effective set is neither empty nor the whole of the permitted and
// inheritable ones (the kernel cannot store that), is refused.
func CapabilityXattr(text string, bits int) ([]byte, error) {
	sets, err := parseCaps(text, bits)
	if err != nil {
		return nil, unusable("file capabilities %q: %w", text, err)
	}
	// VFS_CAP_REVISION_2: the effective set is one flag, for all of the
	// permitted and inheritable capabilities or for none.
	magic := uint32(0x02000000)
	if sets.effective != 0 {
		if ^sets.effective&(sets.permitted|sets.inheritable) != 0 {
			return nil, unusable("file capabilities %q: the effective set must be empty or hold every permitted and inheritable capability", text)
		}
		magic |= 1 // VFS_CAP_FLAGS_EFFECTIVE
	}
	value := binary.LittleEndian.AppendUint32(nil, magic)
	for _, word := range []int{0, 32} {
		value = binary.LittleEndian.AppendUint32(value, uint32(sets.permitted>>word))
		value = binary.LittleEndian.AppendUint32(value, uint32(sets.inheritable>>word))
	}
	return value, nil
}

// KernelCapBits is the number of capabilities the running kernel knows,
// found as libcap finds it: the bounding set answers for each one.
func KernelCapBits() int {
	n := 0
	for n < 64 {
		if _, err := unix.PrctlRetInt(unix.PR_CAPBSET_READ, uintptr(n), 0, 0, 0); err != nil {
			break
		}
		n++
	}
	if n == 0 {
		n = len(capNames)
	}
	return n
}

// parseCaps reads a capabilities text: clauses separated by white space,
// each a list of capabilities (names, numbers, or "all"; none means all
// for "=") and one or more actions, an operator (=, + or -) and the sets
// it applies to (e, i, p).
func parseCaps(text string, bits int) (capSets, error) {
	var sets capSets
	all := ^uint64(0)
	if bits < 64 {
		all = 1<<bits - 1
	}
	s := text
	for {
		s = strings.TrimLeft(s, " \t\n\v\f\r")
		if s == "" {
			return sets, nil
		}
		var list uint64
		listed := false
		if isCapNameStart(s[0]) {
			for {
				n, rest, err := capName(s, all)
				if err != nil {
					return sets, err
				}
				list |= n
				s = rest
				if s == "" || s[0] != ',' {
					break
				}
				s = s[1:]
				if s == "" || !isCapNameStart(s[0]) {
					return sets, errSyntax
				}
			}
			listed = true
		} else {
			list = all
		}
		var err error
		if s, err = capActions(s, list, listed, &sets); err != nil {
			return sets, err
		}
	}
}

var errSyntax = capError("not in the grammar of capabilities (cap_from_text)")

type capError string

func (e capError) Error() string { return string(e) }

func isCapNameStart(c byte) bool { return isAlnum(c) || c == '_' }

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'
}

// capName reads one capability of a list: "all", a number, or a name.
func capName(s string, all uint64) (uint64, string, error) {
	if strings.HasPrefix(strings.ToLower(s), "all") && (len(s) == 3 || !isCapNameStart(s[3])) {
		return all, s[3:], nil
	}
	if s[0] >= '0' && s[0] <= '9' {
		n, rest := strtoul(s)
		if n >= 64 {
			return 0, s, capError("capability number " + strconv.FormatUint(n, 10) + " out of range")
		}
		return 1 << n, rest, nil
	}
	end := 0
	for end < len(s) && (isAlnum(s[end]) && (s[end] < '0' || s[end] > '9') || s[end] == '_') {
		end++
	}
	name := strings.ToLower(s[:end])
	for i, known := range capNames {
		if name == "cap_"+known {
			return 1 << i, s[end:], nil
		}
	}
	return 0, s, capError("unknown capability " + strconv.Quote(s[:end]))
}

// strtoul reads a number as C's strtoul(s, &end, 0) does: hexadecimal
// after 0x, octal after 0, decimal otherwise, as many digits as there are;
// a number too large for 64 bits saturates.
func strtoul(s string) (uint64, string) {
	base, i := uint64(10), 0
	switch {
	case len(s) > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X') && digit(s[2], 16) >= 0:
		base, i = 16, 2
	case s[0] == '0':
		base = 8
	}
	var n uint64
	for ; i < len(s) && digit(s[i], base) >= 0; i++ {
		d := uint64(digit(s[i], base))
		if n > (^uint64(0)-d)/base {
			n = ^uint64(0)
			continue
		}
		n = n*base + d
	}
	return n, s[i:]
}

// digit is the value of c as a digit of base, or -1.
func digit(c byte, base uint64) int {
	var d int
	switch {
	case c >= '0' && c <= '9':
		d = int(c - '0')
	case c >= 'a' && c <= 'f':
		d = int(c-'a') + 10
	case c >= 'A' && c <= 'F':
		d = int(c-'A') + 10
	default:
		return -1
	}
	if uint64(d) >= base {
		return -1
	}
	return d
}

// capActions applies the actions of a clause to sets and returns the text
// after the clause.
func capActions(s string, list uint64, listed bool, sets *capSets) (string, error) {
	if s == "" {
		return s, errSyntax
	}
	op := s[0]
	s = s[1:]
	switch {
	case op == '=' && s != "" && (s[0] == '+' || s[0] == '-'):
		if !listed {
			return s, errSyntax
		}
		op = map[byte]byte{'+': 'P', '-': 'M'}[s[0]]
		s = s[1:]
	case op != '+' && op != '-' && op != '=':
		return s, errSyntax
	case op != '=' && !listed:
		return s, errSyntax
	}
	var e, i, p bool
	for {
		if s != "" && !isSpace(s[0]) {
			switch s[0] {
			case 'e':
				e = true
			case 'i':
				i = true
			case 'p':
				p = true
			default:
				return s, errSyntax
			}
			s = s[1:]
		} else if op != '=' {
			return s, errSyntax
		}
		if op == '=' || op == 'P' || op == 'M' {
			sets.effective &^= list
			sets.permitted &^= list
			sets.inheritable &^= list
		}
		set := func(on bool, to *uint64) {
			if !on {
				return
			}
			if op == '-' || op == 'M' {
				*to &^= list
			} else {
				*to |= list
			}
		}
		set(e, &sets.effective)
		set(p, &sets.permitted)
		set(i, &sets.inheritable)
		if s != "" && (s[0] == '+' || s[0] == '-') {
			if !listed {
				return s, errSyntax
			}
			e, i, p = false, false, false
			op = s[0]
			s = s[1:]
			if s == "" || !(s[0] >= 'a' && s[0] <= 'z' || s[0] >= 'A' && s[0] <= 'Z') {
				return s, errSyntax
			}
		}
		if s == "" || isSpace(s[0]) {
			return s, nil
		}
	}
}
