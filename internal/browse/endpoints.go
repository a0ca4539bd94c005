package browse

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"time"

	"github.com/avsidecar/avsidecar/internal/fswalk"
)

func writeJSON(w http.ResponseWriter, b []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(http.StatusOK)
	w.Write(b)
}

// serveRoots answers GET /v1/roots: {"roots":["/data",...]}, for the page.
func (h *Handler) serveRoots(w http.ResponseWriter, r *http.Request) {
	b, _ := json.Marshal(map[string][]string{"roots": h.paths})
	writeJSON(w, append(b, '\n'))
}

// intParam reads an optional positive integer query parameter.
func intParam(q url.Values, name string, def, max int) (int, error) {
	s := q.Get(name)
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > max {
		return 0, errors.New(name + " must be an integer from 1 to " + strconv.Itoa(max))
	}
	return n, nil
}

// serveFiles answers GET /v1/files: one page of a directory.
func (h *Handler) serveFiles(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	sortKey, err := fswalk.ParseSort(q.Get("sort"))
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	desc, err := fswalk.ParseOrder(q.Get("order"))
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	limit, err := intParam(q, "limit", h.cfg.DefaultLimit, h.cfg.MaxLimit)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	dir, err := h.openDir(q)
	if err != nil {
		writePathError(w, err)
		return
	}
	defer dir.Close()
	key := pageKey{path: shown(h.base, dir.Path), sort: sortKey, desc: desc, cursor: q.Get("cursor"), limit: limit}
	hostDir := dir.Path
	encode := func(l *fswalk.Listing) ([]byte, error) {
		return encodePage(l, key, func(name string) string { return h.targetType(joinShown(hostDir, name)) })
	}
	var b []byte
	if h.cache != nil {
		b, err = h.cache.page(dir, key, encode, h.readShared)
	} else {
		b, err = uncached(dir, encode, h.readShared)
	}
	if err != nil {
		if errors.Is(err, errBusy) {
			h.writeBusy(w, retryRead)
			return
		}
		if errors.Is(err, fswalk.ErrBadCursor) {
			writeError(w, http.StatusBadRequest, "invalid cursor: it belongs to another sort or order, or is damaged")
			return
		}
		h.log.Error().Err(err).Msg("list directory")
		writePathError(w, err)
		return
	}
	writeJSON(w, b)
}

// encodePage encodes one page of /v1/files; targetType gives the
// target_type of a symlink by its name.
func encodePage(l *fswalk.Listing, k pageKey, targetType func(name string) string) ([]byte, error) {
	p, err := l.Page(k.sort, k.desc, k.cursor, k.limit)
	if err != nil {
		return nil, err
	}
	b := make([]byte, 0, 64+len(p.Entries)*128)
	b = append(b, '{')
	b = appendPathFields(b, k.path)
	b = append(b, `,"entries":[`...)
	for i, e := range p.Entries {
		if i > 0 {
			b = append(b, ',')
		}
		target := ""
		if e.Type == fswalk.TypeSymlink {
			target = targetType(e.Name)
		}
		b = appendEntry(b, "", e, target)
	}
	b = append(b, `],"next_cursor":`...)
	b = appendString(b, p.NextCursor)
	b = append(b, `,"total":`...)
	b = strconv.AppendInt(b, int64(p.Total), 10)
	return append(b, "}\n"...), nil
}

// targetType is the target_type of the symlink at host path p ("" when
// it leads nowhere inside its root). A cached page keeps it until the
// directory changes or Config.CacheTTL ends: a change at the target is
// not seen before.
func (h *Handler) targetType(p string) string {
	if t, ok := h.roots.TargetType(p); ok {
		return t.String()
	}
	return ""
}

// requestPath is the host path of the path a request names (see pathParam).
func (h *Handler) requestPath(q url.Values) (string, error) {
	p, err := pathParam(q)
	if err != nil {
		return "", fmt.Errorf("%w: %w", fswalk.ErrInvalidPath, err)
	}
	return h.hostPath(p)
}

// openDir opens the directory a request names.
func (h *Handler) openDir(q url.Values) (*fswalk.Dir, error) {
	host, err := h.requestPath(q)
	if err != nil {
		return nil, err
	}
	return h.roots.OpenDir(host)
}

// serveStat answers GET /v1/stat: the entry itself, with its full path.
func (h *Handler) serveStat(w http.ResponseWriter, r *http.Request) {
	host, err := h.requestPath(r.URL.Query())
	if err != nil {
		writePathError(w, err)
		return
	}
	e, err := h.roots.Stat(host)
	if err != nil {
		writePathError(w, err)
		return
	}
	clean := shown(h.base, host)
	dir := path.Dir(clean)
	if clean == "/" {
		e.Name = ""
	}
	target := ""
	if e.Type == fswalk.TypeSymlink {
		target = h.targetType(host)
	}
	writeJSON(w, append(appendEntry(nil, dir, &e, target), '\n'))
}

// serveDu answers GET /v1/du. Identical requests at the same time share
// one sum.
func (h *Handler) serveDu(w http.ResponseWriter, r *http.Request) {
	dir, err := h.openDir(r.URL.Query())
	if err != nil {
		writePathError(w, err)
		return
	}
	defer dir.Close()
	// The sum may outlast a server-wide WriteTimeout; the answer gets its
	// own deadline when it is ready.
	http.NewResponseController(w).SetWriteDeadline(time.Time{})
	leader := false
	v, err, _ := h.group.Do("du/"+dirID(dir), func() (any, error) {
		leader = true
		if !take(h.walks) {
			return nil, errBusy
		}
		defer func() { <-h.walks }()
		// Not the request's context: others may share the sum, so it runs to
		// its end unless the handler closes.
		return fswalk.Du(h.closing, dir, fswalk.WalkOptions{MaxDepth: h.cfg.MaxWalkDepth, Workers: h.cfg.WalkWorkers})
	})
	switch {
	case errors.Is(err, errBusy):
		h.writeBusy(w, retryWalk)
		return
	case err != nil:
		writeError(w, http.StatusServiceUnavailable, "du interrupted")
		return
	case !leader:
		h.load.sharedDu.Add(1)
	}
	p := shown(h.base, dir.Path)
	b, _ := json.Marshal(Usage{Path: p, PathB64: b64IfInvalid(p), Usage: v.(fswalk.Usage)})
	h.deadline(w)
	writeJSON(w, append(b, '\n'))
}

// chunkSize is how much NDJSON a walk worker gathers before handing it to
// the writer; chunkQueue bounds the chunks in flight, so a slow client
// slows the walk instead of growing memory.
const (
	chunkSize  = 64 << 10
	chunkQueue = 16
)

// walkVisitor encodes entries as NDJSON into per-worker chunks, with the
// paths as the client knows them (see shown).
type walkVisitor struct {
	base string
	out  chan<- []byte
	pool chan []byte
	bufs [][]byte
	done <-chan struct{}
}

func (v *walkVisitor) line(worker int, b []byte) error {
	v.bufs[worker] = b
	if len(b) < chunkSize {
		return nil
	}
	select {
	case v.out <- b:
	case <-v.done:
		return errors.New("client gone")
	}
	select {
	case nb := <-v.pool:
		v.bufs[worker] = nb[:0]
	default:
		v.bufs[worker] = make([]byte, 0, chunkSize+4096)
	}
	return nil
}

func (v *walkVisitor) Visit(worker int, dir string, e *fswalk.Entry) error {
	b := appendEntry(v.bufs[worker], shown(v.base, dir), e, "")
	return v.line(worker, append(b, '\n'))
}

func (v *walkVisitor) DirError(worker int, dir string, err error) {
	b := append(v.bufs[worker], '{')
	b = appendPathFields(b, shown(v.base, dir))
	b = append(b, `,"error":`...)
	b = appendString(b, err.Error())
	v.line(worker, append(b, "}\n"...))
}

// serveWalk answers GET /v1/walk: NDJSON, one entry per line with its full
// path, in no particular order (directories are read in parallel).
// Unreadable directories give a line with "path" and "error"; a walk that
// stops early for a reason other than the client leaving ends with a line
// holding only "error".
func (h *Handler) serveWalk(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	depth, err := intParam(q, "max_depth", h.cfg.MaxWalkDepth, h.cfg.MaxWalkDepth)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	dir, err := h.openDir(q)
	if err != nil {
		writePathError(w, err)
		return
	}
	defer dir.Close()
	if !take(h.walks) {
		h.writeBusy(w, retryWalk)
		return
	}
	failed := false // a write to the client failed
	defer func() {
		<-h.walks
		if h.hooks.walkEnded != nil {
			h.hooks.walkEnded(failed)
		}
	}()
	// A walk of a big tree outlasts any server-wide WriteTimeout: each
	// chunk gets Config.WriteTimeout instead, so a walk goes on while the
	// client reads and stops when it does not.
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}

	out := make(chan []byte, chunkQueue)
	pool := make(chan []byte, chunkQueue+h.cfg.WalkWorkers)
	done := make(chan struct{})
	v := &walkVisitor{base: h.base, out: out, pool: pool, done: done, bufs: make([][]byte, h.cfg.WalkWorkers)}
	for i := range v.bufs {
		v.bufs[i] = make([]byte, 0, chunkSize+4096)
	}
	walkErr := make(chan error, 1)
	go func() {
		err := fswalk.Walk(r.Context(), dir, fswalk.WalkOptions{MaxDepth: depth, Workers: h.cfg.WalkWorkers}, v)
		for _, b := range v.bufs {
			if len(b) > 0 {
				select {
				case out <- b:
				case <-done:
				}
			}
		}
		close(out)
		walkErr <- err
	}()
	for b := range out {
		if !failed {
			h.deadline(w)
			if _, err := w.Write(b); err != nil {
				failed = true
				close(done)
			}
		}
		select {
		case pool <- b[:0]:
		default:
		}
	}
	if err := <-walkErr; err != nil && r.Context().Err() == nil && !failed {
		h.log.Warn().Err(err).Msg("walk stopped")
		b := append([]byte(`{"error":`), appendString(nil, "walk stopped: "+err.Error())...)
		h.deadline(w)
		w.Write(append(b, "}\n"...))
	}
}
