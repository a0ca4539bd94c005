package browse

import (
	"errors"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/avsidecar/avsidecar/internal/fswalk"
)

// errBusy is work refused because Config.MaxReads or MaxWalks are taken.
var errBusy = errors.New("busy")

// Retry-After of a refused read and of a refused walk or du, in seconds:
// a listing takes a second or two, a walk much longer.
const (
	retryRead = "1"
	retryWalk = "5"
)

// LoadStatus describes the bounded work of the browser.
type LoadStatus struct {
	// Reads counts directories read from disk for /v1/files.
	Reads uint64 `json:"reads"`
	// SharedReads counts /v1/files requests answered from a read that an
	// identical request made at the same time.
	SharedReads uint64 `json:"shared_reads"`
	// SharedDu counts /v1/du requests answered from an identical sum.
	SharedDu uint64 `json:"shared_du"`
	// Refused counts requests answered 503 because every slot was taken.
	Refused uint64 `json:"refused"`
	// ReadsInFlight and WalksInFlight are the slots taken now.
	ReadsInFlight int `json:"reads_in_flight"`
	WalksInFlight int `json:"walks_in_flight"`
}

type loadCounters struct {
	reads, sharedReads, sharedDu, refused atomic.Uint64
	waiting                               atomic.Int64 // requests in readShared
}

// hooks let tests hold work at a known point; all are nil in production.
type hooks struct {
	// waiting is called with the number of requests that have started or
	// joined a read in readShared and wait for it.
	waiting func(n int64)
	// beforeRead runs in the reading goroutine, slot taken, before the read.
	beforeRead func()
	// walkEnded is called when a walk's handler is done with it, with
	// whether a write to the client failed.
	walkEnded func(writeFailed bool)
}

func (h *Handler) loadStatus() LoadStatus {
	return LoadStatus{
		Reads:         h.load.reads.Load(),
		SharedReads:   h.load.sharedReads.Load(),
		SharedDu:      h.load.sharedDu.Load(),
		Refused:       h.load.refused.Load(),
		ReadsInFlight: len(h.reads),
		WalksInFlight: len(h.walks),
	}
}

// take takes a slot without waiting: a request that would wait would
// hold its memory and connection while it does.
func take(slots chan struct{}) bool {
	select {
	case slots <- struct{}{}:
		return true
	default:
		return false
	}
}

// readShared reads dir, sharing the read with every request for the same
// key that arrives while it runs. The key names the directory and what is
// known of its state (see dirCache.page), so a request never joins a read
// that started before a change it must see.
func (h *Handler) readShared(dir *fswalk.Dir, key string) (*fswalk.Listing, error) {
	leader := false
	ch := h.group.DoChan("read/"+key, func() (any, error) {
		leader = true
		if !take(h.reads) {
			return nil, errBusy
		}
		defer func() { <-h.reads }()
		if h.hooks.beforeRead != nil {
			h.hooks.beforeRead()
		}
		h.load.reads.Add(1)
		return fswalk.ReadDir(dir)
	})
	// The request has joined the read, or started it: a test may now let
	// the read go on.
	n := h.load.waiting.Add(1)
	defer h.load.waiting.Add(-1)
	if h.hooks.waiting != nil {
		h.hooks.waiting(n)
	}
	res := <-ch
	// leader is only written by a function that ran for this request, and
	// before its result was sent on ch.
	if !leader && res.Err == nil {
		h.load.sharedReads.Add(1)
	}
	if res.Err != nil {
		return nil, res.Err
	}
	return res.Val.(*fswalk.Listing), nil
}

// dirID is the part of a sharing key that names an opened directory.
func dirID(dir *fswalk.Dir) string {
	return strconv.FormatUint(dir.Dev, 10) + ":" + strconv.FormatUint(dir.Ino, 10)
}

// writeBusy answers 503 with Retry-After.
func (h *Handler) writeBusy(w http.ResponseWriter, retryAfter string) {
	h.load.refused.Add(1)
	w.Header().Set("Retry-After", retryAfter)
	writeError(w, http.StatusServiceUnavailable, "busy: too many listings at once, retry after "+retryAfter+"s")
}

// deadline gives the next write to the client Config.WriteTimeout. It
// does nothing where the connection has no deadlines (a test recorder).
func (h *Handler) deadline(w http.ResponseWriter) {
	http.NewResponseController(w).SetWriteDeadline(time.Now().Add(h.cfg.WriteTimeout))
}
