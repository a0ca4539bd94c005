package rpm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/bits"
)

// A gzip payload's decoder (RFC 1952 members around RFC 1951 deflate
// data), for the critical path of a gzip install: klauspost/compress's
// flate decoder was two thirds of such an install's CPU, on one
// goroutine. It follows libdeflate's design: output is decoded straight
// into the block handed to the reader, after a copy of the last 32 KiB
// (the window), so nothing is copied through a ring buffer; a 64-bit bit
// buffer is refilled by one unaligned load; a table entry carries a
// symbol's extra bits too, so that a literal or a length costs one
// lookup; matches are copied 8 bytes at a time. Every member's CRC-32 and
// size are checked, and as many members are decoded as there are, as
// compress/gzip does; what compress/flate and compress/gzip refuse is
// refused.

var errInflate = errors.New("corrupt deflate data")

const (
	inflateWindow = 32 << 10
	maxMatch      = 258
	// fastRoom is the output room a symbol of the fast loop needs: a
	// maximum match and a word copy's overrun.
	fastRoom = maxMatch + 8

	litTableBits  = 11
	distTableBits = 8
	clenTableBits = 7

	// Table entries: bits 0-4 the bits a symbol takes (code and extra
	// bits), bits 8-11 the code's length, so that its extra bits are the
	// taken bits shifted right by it, flags, and bits 16-31 the value (a
	// literal, a length or distance base, a subtable's offset). For a
	// subtable pointer, bits 8-11 are the subtable's index bits.
	entLit   = 1 << 12
	entEOB   = 1 << 13
	entSub   = 1 << 14
	entValue = 1 << 15 // a length, a distance, a code length symbol
)

var (
	lenBase  = [29]uint32{3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258}
	lenExtra = [29]uint32{0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0}
	// Distance codes 30 and 31 are invalid, as compress/flate has them.
	distBase  = [30]uint32{1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577}
	distExtra = [30]uint32{0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13}

	codeLengthOrder = [19]uint8{16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15}

	// Per symbol, its entry but for the bit counts.
	litInfo  [288]uint32
	distInfo [32]uint32
	clenInfo [19]uint32

	fixedLit  litTable
	fixedDist distTable
)

// Table sizes: the main table and, for the codes longer than its index,
// at most one subtable per symbol, each at most 2^(15-bits) entries.
type (
	litTable  [1<<litTableBits + 288<<(15-litTableBits)]uint32
	distTable [1<<distTableBits + 32<<(15-distTableBits)]uint32
	clenTable [1 << clenTableBits]uint32
)

func init() {
	for i := range 256 {
		litInfo[i] = entLit | uint32(i)<<16
	}
	litInfo[256] = entEOB
	for i := range 29 {
		litInfo[257+i] = entValue | lenBase[i]<<16 | lenExtra[i]
	}
	for i := range 30 {
		distInfo[i] = entValue | distBase[i]<<16 | distExtra[i]
	}
	for i := range 19 {
		clenInfo[i] = entValue | uint32(i)<<16
	}
	var lengths [288]uint8
	for i := range lengths {
		switch {
		case i < 144:
			lengths[i] = 8
		case i < 256:
			lengths[i] = 9
		case i < 280:
			lengths[i] = 7
		default:
			lengths[i] = 8
		}
	}
	if !buildTable(fixedLit[:], litTableBits, lengths[:], litInfo[:]) {
		panic("rpm: fixed literal/length code")
	}
	for i := range 32 {
		lengths[i] = 5
	}
	if !buildTable(fixedDist[:], distTableBits, lengths[:32], distInfo[:]) {
		panic("rpm: fixed distance code")
	}
}

// buildTable fills table with the decoding entries of the canonical
// Huffman code of lengths, with a main table of tableBits index bits and
// subtables after it. It refuses what compress/flate refuses: an
// over-subscribed or incomplete code, but for one code of one bit (zlib
// accepts that). An empty code makes a table of invalid entries. info
// gives each symbol's entry with its extra bits as the bits it takes. Symbols past len(info) are
// invalid (distance codes 30 and 31).
func buildTable(table []uint32, tableBits uint, lengths []uint8, info []uint32) bool {
	var count [16]int
	maxLen := 0
	for _, n := range lengths {
		count[n]++
		maxLen = max(maxLen, int(n))
	}
	// A complete code fills every entry of the subtables it uses; the
	// main table may have holes (an empty code, or one code of one bit).
	clear(table[:1<<tableBits])
	if maxLen == 0 {
		return true
	}
	code := 0
	var next [16]int
	for l := 1; l <= maxLen; l++ {
		code <<= 1
		next[l] = code
		code += count[l]
	}
	if code != 1<<maxLen && !(code == 1 && maxLen == 1) {
		return false
	}
	mainMask := 1<<tableBits - 1
	// The longest code under each main entry, for the subtables' sizes.
	var longest [1 << litTableBits]uint8
	codes := next
	for _, n := range lengths {
		if uint(n) > tableBits {
			rev := int(bits.Reverse16(uint16(codes[n])) >> (16 - n))
			longest[rev&mainMask] = max(longest[rev&mainMask], n)
		}
		codes[n]++
	}
	end := 1 << tableBits
	for p := range 1 << tableBits {
		if l := uint(longest[p]); l > 0 {
			sub := l - tableBits
			table[p] = entSub | uint32(tableBits) | uint32(sub)<<8 | uint32(end)<<16
			end += 1 << sub
			if end > len(table) {
				return false
			}
		}
	}
	for sym, n := range lengths {
		if n == 0 {
			continue
		}
		l := uint(n)
		rev := int(bits.Reverse16(uint16(next[n])) >> (16 - l))
		next[n]++
		e := uint32(0) // invalid
		if sym < len(info) {
			e = info[sym] + uint32(l) + uint32(l)<<8
		}
		if l <= tableBits {
			for i := rev; i < 1<<tableBits; i += 1 << l {
				table[i] = e
			}
			continue
		}
		ptr := table[rev&mainMask]
		sub := uint(ptr >> 8 & 15)
		base := int(ptr >> 16)
		for i := rev >> tableBits; i < 1<<sub; i += 1 << (l - tableBits) {
			table[base+i] = e
		}
	}
	return true
}

// inflater decodes gzip members from r into blocks that next hands out.
type inflater struct {
	r    io.Reader
	rerr error  // r's error, once it has returned one
	in   []byte // in[ip:iend] is read and not yet taken
	ip   int
	iend int

	bits  uint64 // bits taken from in, low first; above nbits, what follows
	nbits uint

	// out[:op] is decoded, out[hist:op] the history a match may reach,
	// out[inflateWindow:op] not yet handed out, out[crcFrom:op] not yet
	// in the member's CRC-32.
	out     []byte
	op      int
	hist    int
	crcFrom int
	// next hands out out[inflateWindow:len(full)] and returns a buffer
	// to decode into next, of inflateWindow bytes and more.
	next func(full []byte) ([]byte, error)

	crc  uint32
	size uint32

	lit  litTable
	dist distTable
	clen clenTable
	lens [288 + 32]uint8
}

func newInflater(r io.Reader, next func([]byte) ([]byte, error)) *inflater {
	return &inflater{r: r, in: make([]byte, 128<<10), next: next}
}

// run decodes every member, hands out all that is decoded and returns
// nil at the end of the last member.
func (f *inflater) run() error {
	out, err := f.next(nil)
	if err != nil {
		return err
	}
	f.out, f.op, f.hist, f.crcFrom = out, inflateWindow, inflateWindow, inflateWindow
	for first := true; ; first = false {
		if err := f.header(first); err != nil {
			if err != io.EOF {
				return err
			}
			if first {
				return f.truncated()
			}
			break
		}
		f.crc, f.size = 0, 0
		f.hist = f.op
		for final := false; !final; {
			if final, err = f.block(); err != nil {
				return err
			}
		}
		// The trailer is byte aligned; give back the whole bytes the bit
		// buffer holds.
		f.ip -= int(f.nbits / 8)
		f.bits, f.nbits = 0, 0
		var t [8]byte
		if err := f.readFull(t[:]); err != nil {
			return err
		}
		f.sum()
		if binary.LittleEndian.Uint32(t[:4]) != f.crc || binary.LittleEndian.Uint32(t[4:]) != f.size {
			return fmt.Errorf("gzip member's CRC-32 or size does not match its data: %w", errInflate)
		}
	}
	_, err = f.next(f.out[:f.op])
	return err
}

// sum adds what is decoded since the last call to the member's CRC-32.
func (f *inflater) sum() {
	f.crc = crc32.Update(f.crc, crc32.IEEETable, f.out[f.crcFrom:f.op])
	f.size += uint32(f.op - f.crcFrom)
	f.crcFrom = f.op
}

// flush hands out what is decoded and keeps the window.
func (f *inflater) flush() error {
	f.sum()
	out, err := f.next(f.out[:f.op])
	if err != nil {
		return err
	}
	copy(out[:inflateWindow], f.out[f.op-inflateWindow:f.op])
	f.hist = max(0, f.hist-(f.op-inflateWindow))
	f.out, f.op, f.crcFrom = out, inflateWindow, inflateWindow
	return nil
}

// fill reads more input, keeping the 8 bytes before ip, which the bit
// buffer may give back. It reports whether there is more.
func (f *inflater) fill() bool {
	if f.rerr != nil {
		return false
	}
	keep := min(f.ip, 8)
	f.iend = copy(f.in, f.in[f.ip-keep:f.iend])
	f.ip = keep
	for {
		n, err := f.r.Read(f.in[f.iend:])
		f.iend += n
		if err != nil {
			f.rerr = err
			return n > 0
		}
		if n > 0 {
			return true
		}
	}
}

func (f *inflater) truncated() error {
	if f.rerr != nil && f.rerr != io.EOF {
		return f.rerr
	}
	return fmt.Errorf("gzip data truncated: %w", io.ErrUnexpectedEOF)
}

// readFull reads whole bytes (the bit buffer being empty).
func (f *inflater) readFull(p []byte) error {
	for len(p) > 0 {
		if f.ip == f.iend && !f.fill() {
			return f.truncated()
		}
		n := copy(p, f.in[f.ip:f.iend])
		f.ip += n
		p = p[n:]
	}
	return nil
}

// header reads a member's header. At the end of the input before the
// header's first byte, it returns io.EOF.
func (f *inflater) header(first bool) error {
	var h [10]byte
	if f.ip == f.iend && !f.fill() {
		if f.rerr == io.EOF {
			return io.EOF
		}
		return f.truncated()
	}
	if err := f.readFull(h[:]); err != nil {
		return err
	}
	if h[0] != 0x1f || h[1] != 0x8b || h[2] != 8 {
		return fmt.Errorf("bad gzip member header: %w", errInflate)
	}
	flags := h[3]
	crc := crc32.ChecksumIEEE(h[:])
	if flags&4 != 0 { // FEXTRA
		var n [2]byte
		if err := f.readFull(n[:]); err != nil {
			return err
		}
		extra := make([]byte, binary.LittleEndian.Uint16(n[:]))
		if err := f.readFull(extra); err != nil {
			return err
		}
		crc = crc32.Update(crc32.Update(crc, crc32.IEEETable, n[:]), crc32.IEEETable, extra)
	}
	for _, flag := range []byte{8, 16} { // FNAME, FCOMMENT: as compress/gzip, at most 511 bytes and a NUL
		if flags&flag == 0 {
			continue
		}
		for i := 0; ; i++ {
			if i == 512 {
				return fmt.Errorf("gzip member header's name or comment too long: %w", errInflate)
			}
			var b [1]byte
			if err := f.readFull(b[:]); err != nil {
				return err
			}
			crc = crc32.Update(crc, crc32.IEEETable, b[:])
			if b[0] == 0 {
				break
			}
		}
	}
	if flags&2 != 0 { // FHCRC
		var c [2]byte
		if err := f.readFull(c[:]); err != nil {
			return err
		}
		if binary.LittleEndian.Uint16(c[:]) != uint16(crc) {
			return fmt.Errorf("gzip member header's CRC-16 does not match: %w", errInflate)
		}
	}
	return nil
}

// need makes the bit buffer hold n bits or more.
func (f *inflater) need(n uint) error {
	for f.nbits < n {
		if f.ip == f.iend && !f.fill() {
			return f.truncated()
		}
		f.bits |= uint64(f.in[f.ip]) << f.nbits
		f.ip++
		f.nbits += 8
	}
	return nil
}

// refillSlow fills the bit buffer with what input there is, up to 56 bits.
func (f *inflater) refillSlow() {
	for f.nbits <= 48 {
		if f.ip == f.iend && !f.fill() {
			return
		}
		f.bits |= uint64(f.in[f.ip]) << f.nbits
		f.ip++
		f.nbits += 8
	}
}

func (f *inflater) take(n uint) uint32 {
	v := uint32(f.bits & (1<<n - 1))
	f.bits >>= n
	f.nbits -= n
	return v
}

// block decodes one block and reports whether it was the last.
func (f *inflater) block() (final bool, err error) {
	if err := f.need(3); err != nil {
		return false, err
	}
	h := f.take(3)
	final = h&1 != 0
	switch h >> 1 {
	case 0:
		return final, f.stored()
	case 1:
		return final, f.huffman(&fixedLit, &fixedDist)
	case 2:
		if err := f.dynamic(); err != nil {
			return false, err
		}
		return final, f.huffman(&f.lit, &f.dist)
	}
	return false, fmt.Errorf("reserved block type: %w", errInflate)
}

func (f *inflater) stored() error {
	f.take(f.nbits % 8)
	f.ip -= int(f.nbits / 8)
	f.bits, f.nbits = 0, 0
	var l [4]byte
	if err := f.readFull(l[:]); err != nil {
		return err
	}
	n := int(binary.LittleEndian.Uint16(l[:2]))
	if uint16(n) != ^binary.LittleEndian.Uint16(l[2:]) {
		return fmt.Errorf("stored block's length and its complement differ: %w", errInflate)
	}
	for n > 0 {
		if f.op == len(f.out) {
			if err := f.flush(); err != nil {
				return err
			}
		}
		if f.ip == f.iend && !f.fill() {
			return f.truncated()
		}
		c := copy(f.out[f.op:min(len(f.out), f.op+n)], f.in[f.ip:f.iend])
		f.op += c
		f.ip += c
		n -= c
	}
	return nil
}

// dynamic reads a dynamic block's codes into f.lit and f.dist.
func (f *inflater) dynamic() error {
	if err := f.need(14); err != nil {
		return err
	}
	nlit := int(f.take(5)) + 257
	ndist := int(f.take(5)) + 1
	nclen := int(f.take(4)) + 4
	if nlit > 286 || ndist > 30 {
		return fmt.Errorf("dynamic block with %d literal/length and %d distance codes: %w", nlit, ndist, errInflate)
	}
	var clens [19]uint8
	for i := range nclen {
		if err := f.need(3); err != nil {
			return err
		}
		clens[codeLengthOrder[i]] = uint8(f.take(3))
	}
	if !buildTable(f.clen[:], clenTableBits, clens[:], clenInfo[:]) {
		return fmt.Errorf("bad code length code: %w", errInflate)
	}
	lens := f.lens[:nlit+ndist]
	for i := 0; i < len(lens); {
		f.refillSlow()
		e := f.clen[f.bits&(1<<clenTableBits-1)]
		n := uint(e & 31)
		if e == 0 {
			return fmt.Errorf("invalid code length code: %w", errInflate)
		}
		if n > f.nbits {
			return f.truncated()
		}
		f.take(n)
		sym := e >> 16
		if sym < 16 {
			lens[i] = uint8(sym)
			i++
			continue
		}
		var rep int
		var v uint8
		switch sym {
		case 16:
			if i == 0 {
				return fmt.Errorf("code length repeat with nothing before it: %w", errInflate)
			}
			if err := f.need(2); err != nil {
				return err
			}
			rep, v = 3+int(f.take(2)), lens[i-1]
		case 17:
			if err := f.need(3); err != nil {
				return err
			}
			rep = 3 + int(f.take(3))
		default:
			if err := f.need(7); err != nil {
				return err
			}
			rep = 11 + int(f.take(7))
		}
		if i+rep > len(lens) {
			return fmt.Errorf("code lengths repeated past their end: %w", errInflate)
		}
		for range rep {
			lens[i] = v
			i++
		}
	}
	if !buildTable(f.lit[:], litTableBits, lens[:nlit], litInfo[:]) || !buildTable(f.dist[:], distTableBits, lens[nlit:], distInfo[:30]) {
		return fmt.Errorf("bad literal/length or distance code: %w", errInflate)
	}
	return nil
}

var errDistance = fmt.Errorf("match distance before the data's start: %w", errInflate)

// huffman decodes a Huffman-coded block: a fast loop while there are 8
// input bytes and room for a whole match, a careful one otherwise.
func (f *inflater) huffman(lt *litTable, dt *distTable) error {
	const litMask, distMask = 1<<litTableBits - 1, 1<<distTableBits - 1
	for {
		// The fast loop, on locals.
		in, out := f.in[:f.iend], f.out
		ip, op, hist := f.ip, f.op, f.hist
		bitbuf, nbits := f.bits, f.nbits
		for ip+8 <= len(in) && op+fastRoom <= len(out) {
			bitbuf |= binary.LittleEndian.Uint64(in[ip:]) << (nbits & 63)
			ip += int(63-nbits) >> 3
			nbits |= 56
			e := lt[bitbuf&litMask]
			if e&entSub != 0 {
				e = lt[e>>16+uint32(bitbuf>>litTableBits)&(1<<(e>>8&15)-1)]
			}
			if e&entLit != 0 {
				n := e & 31
				bitbuf >>= n
				nbits -= uint(n)
				out[op] = byte(e >> 16)
				op++
				// A second literal while the bits last.
				e = lt[bitbuf&litMask]
				if e&entLit != 0 && e&31 <= uint32(nbits) {
					n := e & 31
					bitbuf >>= n
					nbits -= uint(n)
					out[op] = byte(e >> 16)
					op++
				}
				continue
			}
			if e&entValue == 0 {
				if e&entEOB != 0 {
					bitbuf >>= e & 31
					nbits -= uint(e & 31)
					f.ip, f.op, f.bits, f.nbits = ip, op, bitbuf, nbits
					return nil
				}
				return fmt.Errorf("invalid literal/length code: %w", errInflate)
			}
			n := e & 31
			length := int(e>>16) + int(uint32(bitbuf&(1<<n-1))>>(e>>8&15))
			bitbuf >>= n
			nbits -= uint(n)
			d := dt[bitbuf&distMask]
			if d&entSub != 0 {
				d = dt[d>>16+uint32(bitbuf>>distTableBits)&(1<<(d>>8&15)-1)]
			}
			if d&entValue == 0 {
				return fmt.Errorf("invalid distance code: %w", errInflate)
			}
			n = d & 31
			dist := int(d>>16) + int(uint32(bitbuf&(1<<n-1))>>(d>>8&15))
			bitbuf >>= n
			nbits -= uint(n)
			src := op - dist
			if src < hist {
				return errDistance
			}
			end := op + length
			switch {
			case dist >= 8:
				for ; op < end; op, src = op+8, src+8 {
					binary.LittleEndian.PutUint64(out[op:], binary.LittleEndian.Uint64(out[src:]))
				}
			case dist == 1:
				v := uint64(out[src]) * 0x0101010101010101
				for ; op < end; op += 8 {
					binary.LittleEndian.PutUint64(out[op:], v)
				}
			default:
				for ; op < end; op, src = op+1, src+1 {
					out[op] = out[src]
				}
			}
			op = end
		}
		f.ip, f.op, f.bits, f.nbits = ip, op, bitbuf, nbits

		// One symbol the careful way.
		if f.op+maxMatch > len(f.out) {
			if err := f.flush(); err != nil {
				return err
			}
			continue
		}
		if f.iend-f.ip < 8 {
			f.fill()
		}
		if f.iend-f.ip >= 8 && f.op+fastRoom <= len(f.out) {
			continue
		}
		done, err := f.symbolSlow(lt, dt)
		if done || err != nil {
			return err
		}
	}
}

// symbolSlow decodes one symbol near the end of the input.
func (f *inflater) symbolSlow(lt *litTable, dt *distTable) (eob bool, err error) {
	f.refillSlow()
	e := lt[f.bits&(1<<litTableBits-1)]
	if e&entSub != 0 {
		e = lt[e>>16+uint32(f.bits>>litTableBits)&(1<<(e>>8&15)-1)]
	}
	n := uint(e & 31)
	if e == 0 {
		return false, fmt.Errorf("invalid literal/length code: %w", errInflate)
	}
	if n > f.nbits {
		return false, f.truncated()
	}
	v := uint32(f.bits&(1<<n-1)) >> (e >> 8 & 15)
	f.take(n)
	switch {
	case e&entLit != 0:
		f.out[f.op] = byte(e >> 16)
		f.op++
		return false, nil
	case e&entEOB != 0:
		return true, nil
	}
	length := int(e>>16 + v)
	f.refillSlow()
	d := dt[f.bits&(1<<distTableBits-1)]
	if d&entSub != 0 {
		d = dt[d>>16+uint32(f.bits>>distTableBits)&(1<<(d>>8&15)-1)]
	}
	n = uint(d & 31)
	if d == 0 {
		return false, fmt.Errorf("invalid distance code: %w", errInflate)
	}
	if n > f.nbits {
		return false, f.truncated()
	}
	dist := int(d>>16 + uint32(f.bits&(1<<n-1))>>(d>>8&15))
	f.take(n)
	if f.op-dist < f.hist {
		return false, errDistance
	}
	for i := range length {
		f.out[f.op+i] = f.out[f.op-dist+i]
	}
	f.op += length
	return false, nil
}
