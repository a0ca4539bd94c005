package browse

import (
	"container/list"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/avsidecar/avsidecar/internal/fswalk"
	"golang.org/x/sys/unix"
)

// watchMask is every inotify event that changes what a listing shows:
// entries created, removed, renamed, written or re-attributed, and the
// directory itself removed or moved.
const watchMask = unix.IN_CREATE | unix.IN_DELETE | unix.IN_MODIFY | unix.IN_ATTRIB |
	unix.IN_MOVED_FROM | unix.IN_MOVED_TO | unix.IN_DELETE_SELF | unix.IN_MOVE_SELF |
	unix.IN_ONLYDIR

// maxPagesPerDir bounds the encoded pages kept for one directory.
const maxPagesPerDir = 64

// dirKey identifies the directory a path resolved to, so a cached listing
// is never served for another directory that took its path.
type dirKey struct{ dev, ino uint64 }

// pageKey is one encoded answer of /v1/files.
type pageKey struct {
	path   string
	sort   fswalk.SortKey
	desc   bool
	cursor string
	limit  int
}

type cachedDir struct {
	id      uint64 // unique for the cache's life: with gen, the read-sharing key
	key     dirKey
	wd      int32
	gen     uint64 // bumped by every event; a load that saw a bump is not kept
	listing *fswalk.Listing
	loaded  time.Time
	pages   map[pageKey][]byte
	cost    int // bytes held by listing and pages, counted in dirCache.bytes
	elem    *list.Element
}

// dirCache keeps recently listed directories and their encoded pages,
// kept exact with inotify. Watches are taken on the opened directory
// (/proc/self/fd/N) before it is read, and the inotify queue is drained,
// without blocking, before every lookup: a change that returned before a
// request started is always seen by that request. On queue overflow
// everything is dropped.
type dirCache struct {
	max    int           // directories
	budget int           // bytes of listings and pages
	ttl    time.Duration // see Config.CacheTTL

	mu     sync.Mutex
	ifd    int
	byKey  map[dirKey]*cachedDir
	byWD   map[int32]*cachedDir
	lru    list.List // front: most recent
	evbuf  []byte
	bytes  int // sum of cachedDir.cost
	closed bool
	lastID uint64

	hits, misses, invalidations, overflows atomic.Uint64
}

func newDirCache(max, budget int, ttl time.Duration) (*dirCache, error) {
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("inotify init: %w", err)
	}
	return &dirCache{
		max:    max,
		budget: budget,
		ttl:    ttl,
		ifd:    fd,
		byKey:  map[dirKey]*cachedDir{},
		byWD:   map[int32]*cachedDir{},
		evbuf:  make([]byte, 64<<10),
	}, nil
}

func (c *dirCache) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closed {
		c.closed = true
		unix.Close(c.ifd)
		c.byKey, c.byWD = map[dirKey]*cachedDir{}, map[int32]*cachedDir{}
		c.lru.Init()
	}
}

// drain applies every queued event. c.mu is held.
func (c *dirCache) drain() {
	for !c.closed {
		n, err := unix.Read(c.ifd, c.evbuf)
		if err == syscall.EINTR {
			continue
		}
		if err != nil || n <= 0 {
			return // EAGAIN: nothing queued
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&c.evbuf[off]))
			off += unix.SizeofInotifyEvent + int(ev.Len)
			if ev.Mask&unix.IN_Q_OVERFLOW != 0 {
				c.overflows.Add(1)
				for _, d := range c.byKey {
					c.invalidate(d)
				}
				continue
			}
			d := c.byWD[ev.Wd]
			if d == nil {
				continue
			}
			if ev.Mask&unix.IN_IGNORED != 0 {
				// The kernel dropped the watch (directory gone): forget it.
				c.remove(d, false)
				continue
			}
			c.invalidate(d)
		}
	}
}

func (c *dirCache) invalidate(d *cachedDir) {
	d.gen++
	if d.listing != nil {
		c.invalidations.Add(1)
	}
	d.listing = nil
	d.pages = nil
	c.bytes -= d.cost
	d.cost = 0
}

func (c *dirCache) remove(d *cachedDir, rmWatch bool) {
	if c.byKey[d.key] == d {
		delete(c.byKey, d.key)
	}
	if c.byWD[d.wd] == d {
		delete(c.byWD, d.wd)
	}
	c.lru.Remove(d.elem)
	d.gen++
	d.listing, d.pages = nil, nil
	c.bytes -= d.cost
	d.cost = 0
	if rmWatch {
		unix.InotifyRmWatch(c.ifd, uint32(d.wd))
	}
}

// readFunc reads dir; requests with the same key at the same time may
// share one read.
type readFunc func(dir *fswalk.Dir, key string) (*fswalk.Listing, error)

// page returns the encoded page for q of dir, from the cache when it is
// there and fresh, otherwise made by encode from a listing that read
// gives, which is cached when no event arrived while it was read. Reads
// are shared under the key (directory entry in the cache, generation):
// a request after a change has a new generation, so it never joins a
// read that started before the change.
func (c *dirCache) page(dir *fswalk.Dir, q pageKey, encode func(*fswalk.Listing) ([]byte, error), read readFunc) ([]byte, error) {
	key := dirKey{dir.Dev, dir.Ino}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return uncached(dir, encode, read)
	}
	c.drain()
	d := c.byKey[key]
	if d != nil && d.listing != nil && c.ttl > 0 && time.Since(d.loaded) >= c.ttl {
		c.invalidate(d)
	}
	if d != nil && d.listing != nil {
		c.lru.MoveToFront(d.elem)
		if b, ok := d.pages[q]; ok {
			c.mu.Unlock()
			c.hits.Add(1)
			return b, nil
		}
		l, gen := d.listing, d.gen
		c.mu.Unlock()
		c.hits.Add(1)
		b, err := encode(l)
		if err != nil {
			return nil, err
		}
		c.keepPage(d, gen, q, b)
		return b, nil
	}
	c.misses.Add(1)
	if d == nil {
		wd, err := unix.InotifyAddWatch(c.ifd, "/proc/self/fd/"+strconv.Itoa(dir.FD()), watchMask)
		if err != nil {
			c.mu.Unlock()
			return uncached(dir, encode, read)
		}
		if old := c.byWD[int32(wd)]; old != nil {
			// Same inode under a new key (cannot happen unless inode numbers
			// are reused while watched): start clean.
			c.remove(old, false)
		}
		c.lastID++
		d = &cachedDir{id: c.lastID, key: key, wd: int32(wd)}
		d.elem = c.lru.PushFront(d)
		c.byKey[key], c.byWD[d.wd] = d, d
		for c.lru.Len() > c.max {
			c.remove(c.lru.Back().Value.(*cachedDir), true)
		}
	}
	gen, id := d.gen, d.id
	c.mu.Unlock()

	l, err := read(dir, "c"+strconv.FormatUint(id, 10)+"/"+strconv.FormatUint(gen, 10))
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.drain()
	if d.gen == gen && c.byKey[key] == d && d.listing == nil {
		// Kept only when no event came in since the watch was in place and
		// no concurrent load got there first.
		d.listing, d.loaded, d.pages = l, time.Now(), nil
		c.charge(d, listingCost(l))
	}
	c.mu.Unlock()
	b, err := encode(l)
	if err != nil {
		return nil, err
	}
	c.keepPage(d, gen, q, b)
	return b, nil
}

func (c *dirCache) keepPage(d *cachedDir, gen uint64, q pageKey, b []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.drain()
	if d.gen != gen || d.listing == nil {
		return
	}
	if d.pages == nil || len(d.pages) >= maxPagesPerDir {
		for _, p := range d.pages {
			c.charge(d, -len(p))
		}
		d.pages = map[pageKey][]byte{}
	}
	d.pages[q] = b
	c.charge(d, len(b))
}

// charge adds n bytes to d and evicts least recently used directories
// while the cache is over its budget; d goes too if it alone is over.
// c.mu is held.
func (c *dirCache) charge(d *cachedDir, n int) {
	d.cost += n
	c.bytes += n
	for c.bytes > c.budget && c.lru.Len() > 0 {
		c.remove(c.lru.Back().Value.(*cachedDir), true)
	}
}

// listingCost estimates the bytes a listing holds.
func listingCost(l *fswalk.Listing) int {
	n := len(l.Entries) * (int(unsafe.Sizeof(fswalk.Entry{})) + 3*4) // entries and sort orders
	for i := range l.Entries {
		n += len(l.Entries[i].Name) + len(l.Entries[i].LinkTarget)
	}
	return n
}

// uncached reads dir without the cache; the read is shared by directory
// alone (without inotify nothing tells a change: a request may get a read
// that started before it, at most one read's time older).
func uncached(dir *fswalk.Dir, encode func(*fswalk.Listing) ([]byte, error), read readFunc) ([]byte, error) {
	l, err := read(dir, "u"+dirID(dir))
	if err != nil {
		return nil, err
	}
	return encode(l)
}

// CacheStatus describes the listing cache.
type CacheStatus struct {
	// Enabled is false when the cache is off or inotify is unavailable.
	Enabled bool `json:"enabled"`
	// Dirs is the number of directories cached (and watched).
	Dirs int `json:"dirs"`
	// Bytes estimates the memory held by cached listings and pages.
	Bytes int `json:"bytes"`
	// Hits counts pages answered from a cached listing.
	Hits uint64 `json:"hits"`
	// Misses counts listings read from disk.
	Misses uint64 `json:"misses"`
	// Invalidations counts cached listings dropped by a change.
	Invalidations uint64 `json:"invalidations"`
	// Overflows counts inotify queue overflows (each drops everything).
	Overflows uint64 `json:"overflows"`
}

func (c *dirCache) status() CacheStatus {
	if c == nil {
		return CacheStatus{}
	}
	c.mu.Lock()
	n, bytes := len(c.byKey), c.bytes
	c.mu.Unlock()
	return CacheStatus{Enabled: true, Dirs: n, Bytes: bytes, Hits: c.hits.Load(), Misses: c.misses.Load(),
		Invalidations: c.invalidations.Load(), Overflows: c.overflows.Load()}
}
