// Package browse serves the read-only file browser of SPEC "HTTP". It
// never serves file contents.
//
// Endpoints (GET or HEAD; errors are JSON {"error": "..."} with a 4xx, or a
// 5xx for I/O failures):
//
//	/                  the embedded page (no external assets, works offline)
//	/v1/roots          {"roots": ["/data", ...]}: the browse roots, for the page
//	/v1/files          ?path=&sort=name|size|mtime&order=asc|desc&limit=&cursor=
//	                   {"path","entries":[...],"next_cursor","total"};
//	                   limit defaults to 200, at most 1000; next_cursor is ""
//	                   on the last page and encodes the last (sort key, name),
//	                   so pages stay right while the directory changes
//	/v1/stat           ?path=  the entry itself, with its full "path"
//	/v1/walk           ?path=&max_depth=  NDJSON, one entry per line with its
//	                   full "path", in no particular order; max_depth 1 is the
//	                   directory's own entries, default and maximum 256
//	/v1/du             ?path=  {"path","files","dirs","bytes"}: non-directories,
//	                   directories below path, apparent bytes of non-directories
//
// Entries are {"name","type","size","mode","mtime","link_target"} (the
// Entry type): type is file, dir, symlink or other (FIFOs, sockets,
// devices: described, never opened), mode is octal ("0644"), mtime RFC
// 3339 UTC, link_target "" unless a symlink. Entries describe the name
// itself (lstat); a symlink's entry in /v1/files and /v1/stat adds
// "target_type", the type of what it leads to inside its root, absent when
// it leads nowhere there (dangling, a loop, or out of the root look alike).
//
// Names are bytes and need not be UTF-8. JSON text cannot hold such a
// name, so "name" (and "path", "link_target") shows it with U+FFFD, as
// encoding/json does, and "name_b64" ("path_b64", "link_target_b64"),
// present only then, holds its exact bytes in standard base64: bad\xff and
// bad\xfe are two entries with two name_b64 values. Every endpoint takes
// the path either as path= (percent-decoded once: %FF is the byte 0xFF) or
// as path_b64= (the exact bytes in base64), so every name listed can be
// asked for again.
//
// Paths are paths inside Config.Base (AVSIDECAR_ROOT): requests name them
// and answers show them that way, never as host paths. They must be
// absolute and canonical (no "." or ".." components, no empty
// components, no NUL; one trailing slash is allowed). Symlinks are followed
// only while they stay inside the root they start in, so a link to another
// root is refused like one to "/". Answers: 400 invalid path, 404 not found
// (for missing paths, paths outside every root, and paths that leave their
// root alike, so nothing outside can be probed), 400 not a directory, 403
// permission denied, 503 with Retry-After when busy (see Load below).
//
// Access: with a token file (Config.TokenFile), every client, loopback
// included, must send "Authorization: Bearer <token>" matching the file,
// read at each request; the page asks for the token and keeps it in the
// tab's memory (so the page itself, which holds no data, is served without
// the token), and `avsidecar ls` reads the file itself. Without a token
// file only clients connecting from exactly 127.0.0.1 or ::1 (kubectl
// port-forward) are served, and only when the Host header is localhost or
// an IP literal, so a DNS-rebinding web page cannot use an operator's
// port-forward; everyone else gets 403.
//
// In a service mesh, loopback is not the pod's own: Istio's sidecar
// forwards traffic from outside the pod from 127.0.0.6 (other meshes use
// other loopback addresses), and every container of the pod shares the
// loopback interface. That is why the rest of 127.0.0.0/8 is not trusted,
// and why a mesh, or a pod with containers that must not browse, needs a
// token file: then nobody browses without the token.
//
// Load: memory is bounded by the configuration, not by the clients.
// Requests for the same listing at the same time share one read of the
// directory (and identical /v1/du requests one sum), directory reads run at
// most Config.MaxReads at once and walks and du at most Config.MaxWalks;
// past that the answer is 503 with Retry-After, at once, so waiting
// requests hold nothing. Every write to a client has Config.WriteTimeout,
// renewed for each chunk of a walk: a walk streams as long as the client
// reads, and a client that stops reading is dropped and its walk stopped.
//
// Recently listed directories are cached as encoded answers and kept exact
// with inotify: the queue is drained before every lookup, so a change that
// returned before a request started is always seen by it. What inotify
// cannot see (writes from other NFS clients, changes below a subdirectory
// that alter its mtime) is bounded by Config.CacheTTL.
package browse

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/avsidecar/avsidecar/internal/fswalk"
	"github.com/rs/zerolog"
	"golang.org/x/sync/singleflight"
)

// Defaults of Config.
const (
	DefaultLimit        = 200
	DefaultMaxLimit     = 1000
	DefaultMaxWalkDepth = 256
	DefaultWalkWorkers  = 8
	DefaultCacheDirs    = 256
	DefaultCacheBytes   = 64 << 20
	DefaultCacheTTL     = 2 * time.Second
	DefaultMaxReads     = 4
	DefaultMaxWalks     = 2
	DefaultWriteTimeout = 30 * time.Second
)

// Config configures the browser. Zero values take the defaults above.
type Config struct {
	// Base is the host directory the browse paths are inside
	// (AVSIDECAR_ROOT, like rpm --root): Roots and every path of a request
	// or an answer are paths in it. With Base "/srv/x" the root "/data" is
	// the host directory /srv/x/data, asked for and shown as "/data"; the
	// host path /srv/x/data is a path outside every root. Empty means "/".
	Base string
	// Roots are the directories that may be listed (AVSIDECAR_BROWSE_ROOTS),
	// as absolute paths inside Base. Empty turns browsing off: every browse
	// endpoint answers 404 {"error":"browse is off"}. A root that cannot be
	// opened as a directory makes New fail.
	Roots []string
	// TokenFile is the host path of the file holding the bearer token
	// (AVSIDECAR_BROWSE_TOKEN_FILE, already under Base). When set, every
	// client, loopback included, must present the token. It is read at each
	// request, so a rotated Secret takes effect at once; surrounding white
	// space is ignored and an empty or unreadable file matches nothing.
	// Empty means only clients from 127.0.0.1 or ::1 are served.
	TokenFile string
	// DefaultLimit is the page size of /v1/files without limit= (200).
	DefaultLimit int
	// MaxLimit is the largest limit= accepted (1000); larger is a 400.
	MaxLimit int
	// MaxWalkDepth is the deepest max_depth= of /v1/walk and the depth used
	// without it (256); larger is a 400. /v1/du uses it too.
	MaxWalkDepth int
	// WalkWorkers is how many directories a walk or du reads at once (8).
	WalkWorkers int
	// CacheDirs is how many listed directories are kept and watched with
	// inotify (256); negative turns the cache off.
	CacheDirs int
	// CacheBytes bounds the memory of cached listings and encoded pages
	// (64 MiB); least recently used directories go first, and a listing
	// larger than the whole budget is served but not kept.
	CacheBytes int
	// CacheTTL bounds how long a cached listing is served (2s): inotify
	// cannot see changes made on another host (NFS) or below a
	// subdirectory (its mtime), so this bounds that staleness. Negative
	// means no bound.
	CacheTTL time.Duration
	// MaxReads bounds the directories read from disk at once for /v1/files
	// (4). Requests for the same directory at the same time share one read
	// and count once, and answers from the cache need none; a request that
	// needs a read beyond the bound gets 503 with Retry-After. A read holds
	// the whole directory, about 100 bytes an entry (20 MB for 200,000
	// entries), so this is what bounds the memory of listings, whatever
	// the number of clients.
	MaxReads int
	// MaxWalks bounds the /v1/walk streams and /v1/du sums running at once
	// (2); beyond it they get 503 with Retry-After. Identical du requests at
	// the same time share one sum. A walk holds about 2 MB (its workers'
	// buffers and the chunks queued for the client), however big the tree.
	MaxWalks int
	// WriteTimeout bounds each write of an answer to the client (30s), and
	// each chunk of a walk: a client that takes longer to accept it, for
	// instance one that stopped reading, is dropped and its walk stops.
	// It replaces the server's WriteTimeout for these answers, so a long
	// walk is not cut while it makes progress.
	WriteTimeout time.Duration
}

func (c *Config) setDefaults() {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&c.DefaultLimit, DefaultLimit)
	def(&c.MaxLimit, DefaultMaxLimit)
	def(&c.MaxWalkDepth, DefaultMaxWalkDepth)
	def(&c.WalkWorkers, DefaultWalkWorkers)
	def(&c.CacheDirs, DefaultCacheDirs)
	def(&c.CacheBytes, DefaultCacheBytes)
	if c.CacheTTL == 0 {
		c.CacheTTL = DefaultCacheTTL
	}
	def(&c.MaxReads, DefaultMaxReads)
	def(&c.MaxWalks, DefaultMaxWalks)
	if c.WriteTimeout == 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	c.DefaultLimit = min(c.DefaultLimit, c.MaxLimit)
}

// Handler serves the browse endpoints. It implements http.Handler; mount
// it on "/" (it answers 404 JSON for paths it does not know).
type Handler struct {
	cfg   Config
	log   zerolog.Logger
	base  string   // Config.Base cleaned, "" for "/": see hostPath and shown
	paths []string // the roots as shown, sorted
	roots *fswalk.Roots
	cache *dirCache
	codes [600]atomic.Uint64 // requests by status code

	reads, walks chan struct{}      // slots of Config.MaxReads, MaxWalks
	group        singleflight.Group // shares identical reads and du sums
	load         loadCounters
	hooks        hooks
	closing      context.Context // ends shared work (du) when the handler closes
	stopShared   context.CancelFunc

	closeOnce sync.Once
	closeErr  error
}

// New opens the roots and, unless disabled, the inotify-backed cache.
func New(cfg Config, log zerolog.Logger) (*Handler, error) {
	cfg.setDefaults()
	if cfg.DefaultLimit < 1 || cfg.MaxWalkDepth < 1 || cfg.WalkWorkers < 1 || cfg.MaxReads < 1 || cfg.MaxWalks < 1 || cfg.WriteTimeout < 0 {
		return nil, errors.New("browse: limits must be positive")
	}
	base := "/"
	if cfg.Base != "" {
		base = filepath.Clean(cfg.Base)
	}
	if !filepath.IsAbs(base) {
		return nil, fmt.Errorf("browse: base %q: not an absolute path", cfg.Base)
	}
	if base == "/" {
		base = ""
	}
	hostRoots := make([]string, len(cfg.Roots))
	for i, r := range cfg.Roots {
		hostRoots[i] = r
		// Empty and relative entries go as they are: OpenRoots drops the
		// first and refuses the second.
		if r = strings.TrimSpace(r); base != "" && filepath.IsAbs(r) {
			hostRoots[i] = filepath.Join(base, r)
		}
	}
	roots, err := fswalk.OpenRoots(hostRoots)
	if err != nil {
		return nil, fmt.Errorf("browse: %w", err)
	}
	h := &Handler{cfg: cfg, log: log, base: base, roots: roots,
		reads: make(chan struct{}, cfg.MaxReads), walks: make(chan struct{}, cfg.MaxWalks)}
	h.closing, h.stopShared = context.WithCancel(context.Background())
	for _, p := range roots.Paths() {
		h.paths = append(h.paths, shown(base, p))
	}
	if roots.Len() > 0 && cfg.CacheDirs > 0 {
		h.cache, err = newDirCache(cfg.CacheDirs, cfg.CacheBytes, cfg.CacheTTL)
		if err != nil {
			// Listings still work, read from disk each time.
			log.Warn().Err(err).Msg("listing cache off")
		}
	}
	return h, nil
}

// Run waits for ctx and then releases the roots and the inotify watches.
// The cache needs no goroutine: events are drained before each lookup.
// It returns nil on cancellation.
func (h *Handler) Run(ctx context.Context) error {
	<-ctx.Done()
	if err := h.Close(); err != nil {
		h.log.Warn().Err(err).Msg("close browse roots")
	}
	return nil
}

// Close releases the roots and the cache; later requests fail. Calling it
// again does nothing.
func (h *Handler) Close() error {
	h.closeOnce.Do(func() {
		h.stopShared()
		if h.cache != nil {
			h.cache.close()
		}
		h.closeErr = h.roots.Close()
	})
	return h.closeErr
}

// Status is the browse part of /v1/status and /metrics.
type Status struct {
	// Enabled is true when at least one root is configured.
	Enabled bool `json:"enabled"`
	// Roots are the browse roots, as paths inside Config.Base.
	Roots []string `json:"roots"`
	// Token is true when a token file is configured.
	Token bool `json:"token"`
	// Requests counts answered requests by HTTP status code.
	Requests map[string]uint64 `json:"requests"`
	// Cache describes the listing cache.
	Cache CacheStatus `json:"cache"`
	// Load describes the work in flight and what was shared or refused.
	Load LoadStatus `json:"load"`
}

// Status returns the current state and counters.
func (h *Handler) Status() Status {
	s := Status{
		Enabled:  h.roots.Len() > 0,
		Roots:    h.paths,
		Token:    h.cfg.TokenFile != "",
		Requests: map[string]uint64{},
		Cache:    h.cache.status(),
		Load:     h.loadStatus(),
	}
	for code := range h.codes {
		if n := h.codes[code].Load(); n > 0 {
			s.Requests[strconv.Itoa(code)] = n
		}
	}
	return s
}

// ServeHTTP routes a request after the access check.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
	start := time.Now()
	h.serve(rw, r)
	h.codes[min(max(rw.code, 0), len(h.codes)-1)].Add(1)
	h.log.Debug().Str("method", r.Method).Str("url_path", r.URL.Path).Int("code", rw.code).
		Dur("took_ms", time.Since(start)).Msg("browse request")
}

func (h *Handler) serve(w http.ResponseWriter, r *http.Request) {
	// Every answer is written within Config.WriteTimeout; a walk renews it
	// for each chunk and du when its sum is ready.
	h.deadline(w)
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-store")
	var route func(http.ResponseWriter, *http.Request)
	switch r.URL.Path {
	case "/":
		route = h.servePage
	case "/v1/roots":
		route = h.serveRoots
	case "/v1/files":
		route = h.serveFiles
	case "/v1/stat":
		route = h.serveStat
	case "/v1/walk":
		route = h.serveWalk
	case "/v1/du":
		route = h.serveDu
	default:
		writeError(w, http.StatusNotFound, "no such endpoint")
		return
	}
	if h.roots.Len() == 0 {
		writeError(w, http.StatusNotFound, "browse is off")
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeError(w, http.StatusMethodNotAllowed, "method not allowed")
		return
	}
	// With a token file the page itself is served to everyone: it holds no
	// data, and it is where the token is typed in.
	if code, msg := h.allow(r); code != 0 && !(r.URL.Path == "/" && h.cfg.TokenFile != "") {
		if code == http.StatusUnauthorized {
			w.Header().Set("WWW-Authenticate", `Bearer realm="avsidecar browse"`)
		}
		writeError(w, code, msg)
		return
	}
	route(w, r)
}

// allow applies the access rule of the package doc. It returns 0 when the
// request may go on.
func (h *Handler) allow(r *http.Request) (int, string) {
	if h.cfg.TokenFile == "" {
		if isLocal(r.RemoteAddr) && safeHost(r.Host) {
			return 0, ""
		}
		return http.StatusForbidden, "without a token file, browse is for clients on 127.0.0.1 or ::1 only (use kubectl port-forward)"
	}
	auth := r.Header.Get("Authorization")
	if len(auth) < 7 || !strings.EqualFold(auth[:7], "bearer ") {
		return http.StatusUnauthorized, "bearer token required"
	}
	want, err := os.ReadFile(h.cfg.TokenFile)
	if err != nil {
		h.log.Warn().Err(err).Msg("cannot read browse token file")
	}
	tok := strings.TrimSpace(string(want))
	// Hashing first makes the comparison constant-time in the length too.
	gotSum, wantSum := sha256.Sum256([]byte(strings.TrimSpace(auth[7:]))), sha256.Sum256([]byte(tok))
	if err != nil || tok == "" || subtle.ConstantTimeCompare(gotSum[:], wantSum[:]) != 1 {
		return http.StatusUnauthorized, "bearer token required"
	}
	return 0, ""
}

// isLocal reports whether the client connected from exactly 127.0.0.1 or
// ::1 (an IPv4-mapped 127.0.0.1 too), not from the rest of 127.0.0.0/8,
// where mesh proxies forward outside traffic from.
func isLocal(remote string) bool {
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		return false
	}
	a := ap.Addr().Unmap()
	return a == netip.AddrFrom4([4]byte{127, 0, 0, 1}) || a == netip.IPv6Loopback()
}

func safeHost(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	return host == "" || strings.EqualFold(host, "localhost") || net.ParseIP(host) != nil
}

type statusWriter struct {
	http.ResponseWriter
	code        int
	wroteHeader bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wroteHeader {
		w.code, w.wroteHeader = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func writeError(w http.ResponseWriter, code int, msg string) {
	b := append([]byte(`{"error":`), appendString(nil, msg)...)
	b = append(b, "}\n"...)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(code)
	w.Write(b)
}

// hostPath turns a request path into the host path fswalk resolves. The
// path is checked as sent, before the base goes in front of it, so the
// base cannot make a bad path good, and the sum of a canonical path and
// the base stays below the base.
func (h *Handler) hostPath(p string) (string, error) {
	p, err := fswalk.CheckPath(p)
	if err != nil || h.base == "" {
		return p, err
	}
	if p == "/" {
		return h.base, nil
	}
	return h.base + p, nil
}

// shown turns a host path that hostPath made, or one below it, back into
// the path the client knows: answers never show the base.
func shown(base, host string) string {
	if len(host) == len(base) {
		return "/"
	}
	return host[len(base):]
}

// writePathError maps an fswalk error to the answer. The texts are fixed:
// they must not differ between missing and outside.
func writePathError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, fswalk.ErrInvalidPath):
		writeError(w, http.StatusBadRequest, "invalid path: want an absolute path inside a browse root, without . or .. components")
	case errors.Is(err, fswalk.ErrNotDir):
		writeError(w, http.StatusBadRequest, "not a directory")
	case errors.Is(err, fswalk.ErrPermission):
		writeError(w, http.StatusForbidden, "permission denied")
	case errors.Is(err, fswalk.ErrNotFound):
		writeError(w, http.StatusNotFound, "not found")
	default:
		writeError(w, http.StatusInternalServerError, "cannot read directory")
	}
}
