package fswalk

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// SortKey is what a listing is ordered by; ties are broken by name.
type SortKey uint8

// Sort keys of /v1/files.
const (
	SortName SortKey = iota
	SortSize
	SortMtime
)

// ParseSort reads "name", "size" or "mtime" ("" is name).
func ParseSort(s string) (SortKey, error) {
	switch s {
	case "", "name":
		return SortName, nil
	case "size":
		return SortSize, nil
	case "mtime":
		return SortMtime, nil
	}
	return 0, fmt.Errorf("sort %q: want name, size or mtime", s)
}

// ParseOrder reads "asc" or "desc" ("" is asc) and reports whether it is desc.
func ParseOrder(s string) (bool, error) {
	switch s {
	case "", "asc":
		return false, nil
	case "desc":
		return true, nil
	}
	return false, fmt.Errorf("order %q: want asc or desc", s)
}

// ErrBadCursor is a cursor that is malformed or was made for another order.
var ErrBadCursor = errors.New("invalid cursor")

// Listing is every entry of one directory, read at one moment. It is
// immutable once made, so it can be cached and shared by concurrent pages.
type Listing struct {
	// Entries is sorted by name.
	Entries []Entry

	mu     sync.Mutex
	orders map[SortKey][]int32 // ascending index orders, made on first use
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, direntBufSize); return &b }}

// ReadDir reads every entry of d with lstat information.
func ReadDir(d *Dir) (*Listing, error) {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	fd := d.FD()
	var (
		st      unix.Stat_t
		linkBuf [unix.PathMax]byte
		arena   []byte
		ends    []int
		entries []Entry
	)
	err := readDirents(fd, *bp, func(name []byte) error {
		var e Entry
		ok, err := fill(fd, name, &st, linkBuf[:], &e)
		if err != nil || !ok {
			return nil // vanished or unreadable: not listed
		}
		arena = append(arena, name...)
		ends = append(ends, len(arena))
		entries = append(entries, e)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read directory %s: %w", d.Path, err)
	}
	// One string holds every name; entries slice it without more allocations.
	names := string(arena)
	start := 0
	for i := range entries {
		entries[i].Name = names[start:ends[i]]
		start = ends[i]
	}
	slices.SortFunc(entries, func(a, b Entry) int { return strings.Compare(a.Name, b.Name) })
	return &Listing{Entries: entries}, nil
}

func key(e *Entry, k SortKey) int64 {
	switch k {
	case SortSize:
		return e.Size
	case SortMtime:
		return e.Mtime
	}
	return 0
}

// compare orders entries by (key, name) ascending.
func compare(ak int64, an string, bk int64, bn string) int {
	switch {
	case ak < bk:
		return -1
	case ak > bk:
		return 1
	}
	return strings.Compare(an, bn)
}

func (l *Listing) order(k SortKey) []int32 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if o, ok := l.orders[k]; ok {
		return o
	}
	o := make([]int32, len(l.Entries))
	for i := range o {
		o[i] = int32(i)
	}
	if k != SortName {
		slices.SortStableFunc(o, func(a, b int32) int {
			return compare(key(&l.Entries[a], k), "", key(&l.Entries[b], k), "")
		})
	}
	if l.orders == nil {
		l.orders = map[SortKey][]int32{}
	}
	l.orders[k] = o
	return o
}

// Page is one page of a sorted listing.
type Page struct {
	// Entries are the page's entries in order.
	Entries []*Entry
	// NextCursor continues after the last entry; empty on the last page.
	NextCursor string
	// Total is the number of entries in the directory.
	Total int
}

// Page returns up to limit entries sorted by k (descending when desc),
// starting after cursor (empty for the first page). The cursor encodes the
// last entry's (sort key, name), not an offset, so entries added or removed
// meanwhile neither repeat nor skip the ones that stayed.
func (l *Listing) Page(k SortKey, desc bool, cursor string, limit int) (Page, error) {
	o := l.order(k)
	n := len(o)
	start := 0
	if cursor != "" {
		ck, cn, err := decodeCursor(cursor, k, desc)
		if err != nil {
			return Page{}, err
		}
		// First position (in display order) strictly after the cursor.
		start = searchAfter(n, func(i int) int {
			e := &l.Entries[o[displayIndex(i, n, desc)]]
			c := compare(key(e, k), e.Name, ck, cn)
			if desc {
				c = -c
			}
			return c
		})
	}
	p := Page{Total: n}
	end := min(start+limit, n)
	if start < end {
		p.Entries = make([]*Entry, 0, end-start)
	}
	for i := start; i < end; i++ {
		p.Entries = append(p.Entries, &l.Entries[o[displayIndex(i, n, desc)]])
	}
	if end < n && len(p.Entries) > 0 {
		last := p.Entries[len(p.Entries)-1]
		p.NextCursor = encodeCursor(k, desc, key(last, k), last.Name)
	}
	return p, nil
}

func displayIndex(i, n int, desc bool) int {
	if desc {
		return n - 1 - i
	}
	return i
}

// searchAfter returns the first i in [0,n) with cmp(i) > 0, n if none;
// cmp must be non-decreasing.
func searchAfter(n int, cmp func(int) int) int {
	lo, hi := 0, n
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if cmp(m) > 0 {
			hi = m
		} else {
			lo = m + 1
		}
	}
	return lo
}

const cursorVersion = 1

func encodeCursor(k SortKey, desc bool, kv int64, name string) string {
	b := make([]byte, 0, 16+len(name))
	b = append(b, cursorVersion, byte(k), 0)
	if desc {
		b[2] = 1
	}
	b = binary.AppendVarint(b, kv)
	b = append(b, name...)
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeCursor(s string, k SortKey, desc bool) (int64, string, error) {
	if len(s) > 2*MaxPathLen {
		return 0, "", ErrBadCursor
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) < 4 || b[0] != cursorVersion || SortKey(b[1]) != k || (b[2] == 1) != desc || b[2] > 1 {
		return 0, "", ErrBadCursor
	}
	kv, n := binary.Varint(b[3:])
	if n <= 0 {
		return 0, "", ErrBadCursor
	}
	return kv, string(b[3+n:]), nil
}
