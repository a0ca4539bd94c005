package rpm

import (
	"errors"
)

// An LZMA2 decoder, for the xz payloads rpmbuild writes by default.
//
// A single xz block cannot be decoded on several cores, so for rpm's
// default payload the decoder alone bounds the speed of an install; the
// XZ Embedded port it replaces decodes at about half the speed of
// liblzma. This one keeps the range coder in local variables through the
// symbol loop, decodes into a flat window (a match is one copy, never a
// modulo per byte), and has each chunk's compressed bytes whole before it
// decodes them.
//
// Every size and distance comes from a hostile package: the window grows
// with the data decoded (not with the dictionary size a header claims), a
// distance beyond what was decoded since the last dictionary reset, a
// chunk that ends inside a symbol or not where its header says, or a
// chunk the format does not allow there is an error, and no read goes
// past a chunk's bytes and the padding after them.

// Range coder and model constants (LZMA SDK, LzmaDec.c).
const (
	lzmaTop          = 1 << 24
	lzmaProbBits     = 11
	lzmaProbInit     = 1 << (lzmaProbBits - 1)
	lzmaMoveBits     = 5
	lzmaStates       = 12
	lzmaLitStates    = 7
	lzmaPosStatesMax = 1 << 4
	lzmaDistStates   = 4
	lzmaDistSlots    = 64
	lzmaDistModelEnd = 14
	lzmaFullDists    = 1 << (lzmaDistModelEnd / 2)
	lzmaAlignBits    = 4
	lzmaMatchLenMin  = 2
	lzmaLitSize      = 0x300
)

// lzmaChunkMax is the most an LZMA2 chunk decodes to; lzmaPad is how far
// past a chunk's bytes one symbol may read before the decoder notices
// (every bit of a symbol may take a byte; a symbol has fewer than 64).
const (
	lzmaChunkMax = 1 << 21
	lzmaPad      = 64
)

var errLZMA = errors.New("corrupt LZMA2 data")

// lzmaLen are the probabilities of a length decoder.
type lzmaLen struct {
	choice, choice2 uint16
	low, mid        [lzmaPosStatesMax << 3]uint16
	high            [256]uint16
}

// lzmaProbs are the adaptive probabilities of the LZMA model.
type lzmaProbs struct {
	isMatch    [lzmaStates << 4]uint16
	isRep      [lzmaStates]uint16
	isRepG0    [lzmaStates]uint16
	isRepG1    [lzmaStates]uint16
	isRepG2    [lzmaStates]uint16
	isRep0Long [lzmaStates << 4]uint16
	distSlot   [lzmaDistStates][lzmaDistSlots]uint16
	distSpec   [lzmaFullDists - lzmaDistModelEnd]uint16
	distAlign  [1 << lzmaAlignBits]uint16
	matchLen   lzmaLen
	repLen     lzmaLen
	literal    [lzmaLitSize << 4]uint16 // lc+lp <= 4 in LZMA2
}

// lzma2Decoder decodes the LZMA2 data of one xz block into its window.
type lzma2Decoder struct {
	p lzmaProbs

	lc, lp, pb uint
	state      uint32
	rep        [4]uint32 // distances - 1

	// win[:pos] is decoded; win[start:pos] has not been read yet. The
	// window grows with the data, up to two dictionaries and a chunk,
	// then slides, keeping the last dictSize bytes as history.
	win      []byte
	pos      int
	start    int
	dictSize int
	// base is the position of win[0] in the block's data, and resetAt
	// that of the last dictionary reset: LZMA positions count from it.
	base, resetAt int64
	// avail is how much of the history a distance may reach: what was
	// decoded since the last dictionary reset.
	avail int64

	needDictReset bool
	needProps     bool
}

func newLZMA2(dictSize int) *lzma2Decoder {
	return &lzma2Decoder{dictSize: dictSize, needDictReset: true, needProps: true}
}

// control handles what an LZMA2 control byte resets, before its chunk.
func (d *lzma2Decoder) control(ctrl byte) error {
	if ctrl >= 0xE0 || ctrl == 0x01 {
		d.needProps = true
		d.needDictReset = false
		d.resetAt = d.base + int64(d.pos)
		d.avail = 0
	} else if d.needDictReset {
		return errLZMA
	}
	switch {
	case ctrl >= 0xC0:
		d.needProps = false // and the state is reset with the new properties
	case ctrl >= 0x80 && d.needProps:
		return errLZMA
	case ctrl >= 0xA0:
		d.resetState()
	case ctrl > 0x02 && ctrl < 0x80:
		return errLZMA
	}
	return nil
}

// resetState starts the model afresh (an LZMA2 state reset).
func (d *lzma2Decoder) resetState() {
	p := &d.p
	for _, s := range [][]uint16{p.isMatch[:], p.isRep[:], p.isRepG0[:], p.isRepG1[:], p.isRepG2[:], p.isRep0Long[:],
		p.distSpec[:], p.distAlign[:], p.literal[:], p.matchLen.low[:], p.matchLen.mid[:], p.matchLen.high[:],
		p.repLen.low[:], p.repLen.mid[:], p.repLen.high[:]} {
		for i := range s {
			s[i] = lzmaProbInit
		}
	}
	for i := range p.distSlot {
		for j := range p.distSlot[i] {
			p.distSlot[i][j] = lzmaProbInit
		}
	}
	p.matchLen.choice, p.matchLen.choice2 = lzmaProbInit, lzmaProbInit
	p.repLen.choice, p.repLen.choice2 = lzmaProbInit, lzmaProbInit
	d.state = 0
	d.rep = [4]uint32{}
}

// setProps reads the lc/lp/pb byte of an LZMA2 chunk, and resets the
// state.
func (d *lzma2Decoder) setProps(b byte) error {
	if b > (4*5+4)*9+8 {
		return errLZMA
	}
	d.pb = uint(b / 45)
	b %= 45
	d.lp = uint(b / 9)
	d.lc = uint(b % 9)
	if d.lc+d.lp > 4 {
		return errLZMA
	}
	d.resetState()
	return nil
}

// room makes space for n more bytes at the end of the window, once the
// unread bytes have been read (start == pos).
func (d *lzma2Decoder) room(n int) {
	if d.pos+n <= len(d.win) {
		return
	}
	if limit := 2*d.dictSize + lzmaChunkMax; len(d.win) < limit {
		w := make([]byte, max(min(max(2*len(d.win), 1<<16), limit), d.pos+n))
		copy(w, d.win[:d.pos])
		d.win = w
		return
	}
	// The window is as large as it gets (pos+n fits once it slides).
	keep := min(d.dictSize, d.pos)
	copy(d.win, d.win[d.pos-keep:d.pos])
	d.base += int64(d.pos - keep)
	d.pos, d.start = keep, keep
}

// uncompressed adds an uncompressed chunk to the window; it is then
// win[pos-len(data):pos].
func (d *lzma2Decoder) uncompressed(data []byte) {
	d.room(len(data))
	copy(d.win[d.pos:], data)
	d.pos += len(data)
	d.avail += int64(len(data))
}

// lzma decodes an LZMA chunk of unpacked bytes, range-coded in in[:packed]
// (in has lzmaPad more bytes, their values unused); it is then
// win[pos-unpacked:pos].
func (d *lzma2Decoder) lzma(in []byte, packed, unpacked int) error {
	d.room(unpacked)
	return d.decode(in, packed, d.pos+unpacked)
}

// decode runs the LZMA decoder until the window holds end bytes.
func (d *lzma2Decoder) decode(in []byte, packed, end int) error {
	if packed < 5 || len(in) < packed+lzmaPad || in[0] != 0 {
		return errLZMA
	}
	p := &d.p
	win := d.win[:end]
	pos := d.pos
	state := d.state
	rep0, rep1, rep2, rep3 := d.rep[0], d.rep[1], d.rep[2], d.rep[3]
	lc, lpMask, pbMask := d.lc, uint32(1)<<d.lp-1, uint32(1)<<d.pb-1
	// The LZMA position of win[i] is posOff+i; what a distance may reach
	// at win[pos] is availOff+pos, and never more than the dictionary.
	posOff := uint32(d.base - d.resetAt)
	availOff := d.avail - int64(pos)
	dictSize := int64(d.dictSize)

	rng := uint32(0xFFFFFFFF)
	code := uint32(in[1])<<24 | uint32(in[2])<<16 | uint32(in[3])<<8 | uint32(in[4])
	ip := 5

	// bit decodes one bit with the probability *prob and adapts it.
	bit := func(prob *uint16) uint32 {
		if rng < lzmaTop {
			rng <<= 8
			code = code<<8 | uint32(in[ip])
			ip++
		}
		pr := uint32(*prob)
		bound := (rng >> lzmaProbBits) * pr
		if code < bound {
			rng = bound
			*prob = uint16(pr + (1<<lzmaProbBits-pr)>>lzmaMoveBits)
			return 0
		}
		rng -= bound
		code -= bound
		*prob = uint16(pr - pr>>lzmaMoveBits)
		return 1
	}
	// bitFree is bit without a branch on the bit's value, for the bits
	// that are as good as random (literals, distances): a mispredicted
	// branch costs more than the few instructions it saves.
	bitFree := func(prob *uint16) uint32 {
		if rng < lzmaTop {
			rng <<= 8
			code = code<<8 | uint32(in[ip])
			ip++
		}
		pr := uint32(*prob)
		bound := (rng >> lzmaProbBits) * pr
		var b uint32
		if code >= bound {
			b = 1
		}
		mask := -b
		rng = bound&^mask | (rng-bound)&mask
		code -= bound & mask
		*prob = uint16((pr+(1<<lzmaProbBits-pr)>>lzmaMoveBits)&^mask | (pr-pr>>lzmaMoveBits)&mask)
		return b
	}
	// tree decodes an n-bit symbol of a bit tree, high bit first.
	tree := func(probs []uint16, n uint) uint32 {
		m := uint32(1)
		for range n {
			m = m<<1 | bitFree(&probs[m])
		}
		return m - 1<<n
	}
	// reverse decodes an n-bit symbol of a bit tree, low bit first, with
	// the probabilities probs[off+1:].
	reverse := func(probs []uint16, off int, n uint32) uint32 {
		m, sym := 1, uint32(0)
		for i := range n {
			b := bitFree(&probs[off+m])
			m = m<<1 | int(b)
			sym |= b << i
		}
		return sym
	}
	length := func(l *lzmaLen, posState uint32) uint32 {
		if bit(&l.choice) == 0 {
			return tree(l.low[posState<<3:posState<<3+8], 3) + lzmaMatchLenMin
		}
		if bit(&l.choice2) == 0 {
			return tree(l.mid[posState<<3:posState<<3+8], 3) + lzmaMatchLenMin + 8
		}
		return tree(l.high[:], 8) + lzmaMatchLenMin + 16
	}

	for pos < end {
		if ip > packed {
			return errLZMA
		}
		lzPos := posOff + uint32(pos)
		posState := lzPos & pbMask
		avail := min(availOff+int64(pos), dictSize)
		if bit(&p.isMatch[state<<4|posState]) == 0 {
			// A literal, modelled on the previous byte's high bits and
			// the position's low bits; after a match, on the byte at
			// rep0 as well.
			prev := uint32(0)
			if avail > 0 {
				prev = uint32(win[pos-1])
			}
			lit := p.literal[lzmaLitSize*((lzPos&lpMask)<<lc+prev>>(8-lc)):][:lzmaLitSize]
			sym := uint32(1)
			if state < lzmaLitStates {
				for sym < 0x100 {
					sym = sym<<1 | bitFree(&lit[sym])
				}
			} else {
				if int64(rep0) >= avail {
					return errLZMA
				}
				match := uint32(win[pos-int(rep0)-1])
				offs := uint32(0x100)
				for sym < 0x100 {
					match <<= 1
					mbit := match & offs
					b := bitFree(&lit[offs+mbit+sym])
					sym = sym<<1 | b
					// offs becomes mbit when b is 1, offs without mbit
					// when 0 (mbit is offs or nothing).
					offs = mbit ^ offs&(b-1)
				}
			}
			win[pos] = byte(sym)
			pos++
			switch {
			case state < 4:
				state = 0
			case state < 10:
				state -= 3
			default:
				state -= 6
			}
			continue
		}
		var n uint32
		if bit(&p.isRep[state]) == 0 {
			// A match at a new distance.
			if state < lzmaLitStates {
				state = 7
			} else {
				state = 10
			}
			n = length(&p.matchLen, posState)
			slot := tree(p.distSlot[min(n-lzmaMatchLenMin, lzmaDistStates-1)][:], 6)
			dist := slot
			if slot >= 4 {
				direct := slot>>1 - 1
				dist = 2 | slot&1
				if slot < lzmaDistModelEnd {
					dist <<= direct
					dist += reverse(p.distSpec[:], int(dist)-int(slot)-1, direct)
				} else {
					for range direct - lzmaAlignBits {
						if rng < lzmaTop {
							rng <<= 8
							code = code<<8 | uint32(in[ip])
							ip++
						}
						rng >>= 1
						code -= rng
						t := 0 - code>>31 // all ones when code went below zero
						code += rng & t
						dist = dist<<1 + (t + 1)
					}
					dist = dist<<lzmaAlignBits + reverse(p.distAlign[:], 0, lzmaAlignBits)
				}
			}
			rep3, rep2, rep1, rep0 = rep2, rep1, rep0, dist
		} else {
			if bit(&p.isRepG0[state]) == 0 {
				if bit(&p.isRep0Long[state<<4|posState]) == 0 {
					// A short rep: one byte, at rep0.
					if state < lzmaLitStates {
						state = 9
					} else {
						state = 11
					}
					if int64(rep0) >= avail {
						return errLZMA
					}
					win[pos] = win[pos-int(rep0)-1]
					pos++
					continue
				}
			} else {
				var dist uint32
				if bit(&p.isRepG1[state]) == 0 {
					dist = rep1
				} else {
					if bit(&p.isRepG2[state]) == 0 {
						dist = rep2
					} else {
						dist = rep3
						rep3 = rep2
					}
					rep2 = rep1
				}
				rep1 = rep0
				rep0 = dist
			}
			if state < lzmaLitStates {
				state = 8
			} else {
				state = 11
			}
			n = length(&p.repLen, posState)
		}
		// n bytes from rep0+1 back: the distance must reach into what
		// was decoded and the dictionary, the match end in the chunk.
		if int64(rep0) >= avail || int(n) > end-pos {
			return errLZMA
		}
		src, m := pos-int(rep0)-1, int(n)
		if m > 16 && int(rep0) >= m-1 {
			copy(win[pos:pos+m], win[src:src+m])
		} else {
			// Short or overlapping: a byte at a time (a call to copy
			// costs more for the short matches most are).
			dst := win[pos : pos+m]
			from := win[src : src+m]
			for i := range dst {
				dst[i] = from[i]
			}
		}
		pos += m
	}
	// A chunk ends with its range coder flushed: every byte read, nothing
	// left of the code.
	if rng < lzmaTop {
		code = code<<8 | uint32(in[ip])
		ip++
	}
	if ip != packed || code != 0 {
		return errLZMA
	}
	d.avail = availOff + int64(pos)
	d.pos = pos
	d.state = state
	d.rep = [4]uint32{rep0, rep1, rep2, rep3}
	return nil
}
