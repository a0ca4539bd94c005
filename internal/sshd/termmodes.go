package sshd

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// termMode is one decoded terminal mode of a "pty-req": an opcode this
// server applies and its argument.
//
// The modes are RFC 4254 section 8's "encoded terminal modes": opcode
// bytes, each of 1..159 followed by a uint32 argument, ended by
// TTY_OP_END (0); opcodes 160..255 are undefined and stop the parsing.
// Like OpenSSH's sshd (ttymodes.c), the server applies the modes Linux
// termios has to the new terminal before the shell starts and ignores the
// rest, so the remote terminal behaves like the client's (its erase
// character, echo, line discipline...).
type termMode struct {
	op  byte
	arg uint32
}

// errTermModes is a modes string cut inside an opcode's argument.
var errTermModes = errors.New("terminal modes: truncated argument")

// modeKind says which part of a termios an opcode sets.
type modeKind uint8

const (
	modeChar   modeKind = iota + 1 // a control character, c_cc[v]
	modeIflag                      // the bit v of c_iflag
	modeOflag                      // the bit v of c_oflag
	modeCflag                      // the bit v of c_cflag
	modeLflag                      // the bit v of c_lflag
	modeISpeed                     // the input baud rate
	modeOSpeed                     // the output baud rate
)

// termModeDefs maps RFC 4254 8.1's opcodes to Linux termios. Opcodes
// Linux has no equivalent for (VDSUSP 11, VFLUSH 15, VSWTCH 16,
// VSTATUS 17) are absent and so ignored.
var termModeDefs = map[byte]struct {
	kind modeKind
	v    uint32
}{
	1: {modeChar, unix.VINTR}, 2: {modeChar, unix.VQUIT}, 3: {modeChar, unix.VERASE},
	4: {modeChar, unix.VKILL}, 5: {modeChar, unix.VEOF}, 6: {modeChar, unix.VEOL},
	7: {modeChar, unix.VEOL2}, 8: {modeChar, unix.VSTART}, 9: {modeChar, unix.VSTOP},
	10: {modeChar, unix.VSUSP}, 12: {modeChar, unix.VREPRINT}, 13: {modeChar, unix.VWERASE},
	14: {modeChar, unix.VLNEXT}, 18: {modeChar, unix.VDISCARD},

	30: {modeIflag, unix.IGNPAR}, 31: {modeIflag, unix.PARMRK}, 32: {modeIflag, unix.INPCK},
	33: {modeIflag, unix.ISTRIP}, 34: {modeIflag, unix.INLCR}, 35: {modeIflag, unix.IGNCR},
	36: {modeIflag, unix.ICRNL}, 37: {modeIflag, unix.IUCLC}, 38: {modeIflag, unix.IXON},
	39: {modeIflag, unix.IXANY}, 40: {modeIflag, unix.IXOFF}, 41: {modeIflag, unix.IMAXBEL},
	42: {modeIflag, unix.IUTF8}, // RFC 8160

	50: {modeLflag, unix.ISIG}, 51: {modeLflag, unix.ICANON}, 52: {modeLflag, unix.XCASE},
	53: {modeLflag, unix.ECHO}, 54: {modeLflag, unix.ECHOE}, 55: {modeLflag, unix.ECHOK},
	56: {modeLflag, unix.ECHONL}, 57: {modeLflag, unix.NOFLSH}, 58: {modeLflag, unix.TOSTOP},
	59: {modeLflag, unix.IEXTEN}, 60: {modeLflag, unix.ECHOCTL}, 61: {modeLflag, unix.ECHOKE},
	62: {modeLflag, unix.PENDIN},

	70: {modeOflag, unix.OPOST}, 71: {modeOflag, unix.OLCUC}, 72: {modeOflag, unix.ONLCR},
	73: {modeOflag, unix.OCRNL}, 74: {modeOflag, unix.ONOCR}, 75: {modeOflag, unix.ONLRET},

	90: {modeCflag, unix.CS7}, 91: {modeCflag, unix.CS8}, 92: {modeCflag, unix.PARENB},
	93: {modeCflag, unix.PARODD},

	128: {modeISpeed, 0}, 129: {modeOSpeed, 0}, // TTY_OP_ISPEED, TTY_OP_OSPEED
}

// baudRates maps the rates a client sends to Linux's speed codes. Other
// rates (0 among them: on a terminal it means hang up) are ignored and
// the terminal keeps its speed, where OpenSSH would pick 9600.
var baudRates = map[uint32]uint32{
	50: unix.B50, 75: unix.B75, 110: unix.B110, 134: unix.B134, 150: unix.B150,
	200: unix.B200, 300: unix.B300, 600: unix.B600, 1200: unix.B1200, 1800: unix.B1800,
	2400: unix.B2400, 4800: unix.B4800, 9600: unix.B9600, 19200: unix.B19200,
	38400: unix.B38400, 57600: unix.B57600, 115200: unix.B115200, 230400: unix.B230400,
	460800: unix.B460800, 500000: unix.B500000, 576000: unix.B576000, 921600: unix.B921600,
	1000000: unix.B1000000, 1152000: unix.B1152000, 1500000: unix.B1500000,
	2000000: unix.B2000000, 2500000: unix.B2500000, 3000000: unix.B3000000,
	3500000: unix.B3500000, 4000000: unix.B4000000,
}

// parseTermModes decodes an encoded terminal modes string (RFC 4254 8)
// and keeps the modes this server applies, in order. It stops at
// TTY_OP_END, at an undefined opcode (160..255) or at the end of the
// string; an argument cut short is an error, as it is to OpenSSH.
func parseTermModes(s string) ([]termMode, error) {
	var modes []termMode
	for len(s) > 0 {
		op := s[0]
		if op == 0 || op >= 160 {
			break
		}
		if len(s) < 5 {
			return nil, errTermModes
		}
		arg := uint32(s[1])<<24 | uint32(s[2])<<16 | uint32(s[3])<<8 | uint32(s[4])
		s = s[5:]
		if _, ok := termModeDefs[op]; ok {
			modes = append(modes, termMode{op, arg})
		}
	}
	return modes, nil
}

// applyTermModes sets modes on t. A control character of 255 disables it
// (the client's _POSIX_VDISABLE, as OpenSSH encodes it); larger values are
// not characters and are ignored.
func applyTermModes(t *unix.Termios, modes []termMode) {
	for _, m := range modes {
		d := termModeDefs[m.op]
		switch d.kind {
		case modeChar:
			switch {
			case m.arg == 255:
				t.Cc[d.v] = 0 // Linux's _POSIX_VDISABLE
			case m.arg < 255:
				t.Cc[d.v] = byte(m.arg)
			}
		case modeIflag, modeOflag, modeCflag, modeLflag:
			if w := flagWord(t, d.kind); m.arg != 0 {
				*w |= d.v
			} else {
				*w &^= d.v
			}
		case modeISpeed:
			if b, ok := baudRates[m.arg]; ok {
				t.Cflag = t.Cflag&^unix.CIBAUD | b<<unix.IBSHIFT
			}
		case modeOSpeed:
			if b, ok := baudRates[m.arg]; ok {
				t.Cflag = t.Cflag&^unix.CBAUD | b
			}
		}
	}
}

// flagWord is the flag word of t that a flag opcode of kind k sets.
func flagWord(t *unix.Termios, k modeKind) *uint32 {
	switch k {
	case modeIflag:
		return &t.Iflag
	case modeOflag:
		return &t.Oflag
	case modeCflag:
		return &t.Cflag
	default:
		return &t.Lflag
	}
}

// setTermModes applies modes to the terminal tty, as tcsetattr(TCSANOW).
func setTermModes(tty *os.File, modes []termMode) error {
	if len(modes) == 0 {
		return nil
	}
	rc, err := tty.SyscallConn()
	if err != nil {
		return fmt.Errorf("terminal modes: %w", err)
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		var t *unix.Termios
		if t, serr = unix.IoctlGetTermios(int(fd), unix.TCGETS); serr != nil {
			serr = fmt.Errorf("get terminal modes: %w", serr)
			return
		}
		applyTermModes(t, modes)
		if serr = unix.IoctlSetTermios(int(fd), unix.TCSETS, t); serr != nil {
			serr = fmt.Errorf("set terminal modes: %w", serr)
		}
	})
	if err != nil {
		return fmt.Errorf("terminal modes: %w", err)
	}
	return serr
}
