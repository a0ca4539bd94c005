package sidecar

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/avsidecar/avsidecar/internal/connlimit"
	"github.com/avsidecar/avsidecar/internal/health"
)

// Handler names, the handler label of the HTTP metrics.
const (
	handlerLivez    = "livez"
	handlerReadyz   = "readyz"
	handlerStartupz = "startupz"
	handlerMetrics  = "metrics"
	handlerStatus   = "status"
	handlerUI       = "ui"
	handlerOther    = "other"
)

// browseEndpoints are the browse API's endpoints under /v1/, each its own
// handler name.
var browseEndpoints = []string{"files", "stat", "walk", "du"}

// handlers lists every handler name.
var handlers = append([]string{handlerLivez, handlerReadyz, handlerStartupz, handlerMetrics, handlerStatus, handlerUI, handlerOther},
	browseEndpoints...)

// routes is the HTTP handler: probes, metrics, status, and browse.
func (s *Sidecar) routes() http.Handler {
	mux := http.NewServeMux()
	m := s.metrics
	probes := health.New(health.Config{Startup: s.startupChecks(), Ready: s.readyChecks()})
	for _, name := range []string{handlerLivez, handlerReadyz, handlerStartupz} {
		mux.Handle("/"+name, m.Instrument(name, probes))
	}
	mux.Handle("/"+handlerMetrics, m.Instrument(handlerMetrics, m.Handler()))
	mux.Handle("GET /v1/status", m.Instrument(handlerStatus, http.HandlerFunc(s.serveStatus)))
	var b http.Handler = http.HandlerFunc(s.browseUnavailable)
	if s.parts.browse != nil {
		b = s.parts.browse
	}
	for _, name := range browseEndpoints {
		mux.Handle("/v1/"+name, m.Instrument(name, b))
	}
	mux.Handle("/{$}", m.Instrument(handlerUI, b))
	mux.Handle("/", m.Instrument(handlerOther, b))
	return mux
}

// browseUnavailable answers the browse endpoints when browse could not be
// set up, saying why.
func (s *Sidecar) browseUnavailable(w http.ResponseWriter, r *http.Request) {
	msg, _ := s.parts.faults.get(sideBrowse)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusServiceUnavailable)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": "browse unavailable: " + msg})
}

// httpLimits bound what clients can make the HTTP server hold: memory must
// be bounded by configuration, not by clients, since an OOM kill of the
// container takes avagent with it.
type httpLimits struct {
	// ReadHeaderTimeout and ReadTimeout bound a request's arrival (every
	// request is a GET without a body).
	ReadHeaderTimeout, ReadTimeout time.Duration
	// IdleTimeout closes a keep-alive connection without a request for
	// this long. The kubelet's probes do not keep connections; Prometheus
	// does between scrapes, and reconnecting after a longer interval costs
	// a handshake on loopback or the pod network, nothing else.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds a request's header: Go's default of 1 MB let
	// 300 connections hold 775 MB (BENCHMARKS.md, Browse); the longest URL
	// the page makes, a 4 KiB path as path_b64, is about 21 KB.
	MaxHeaderBytes int
	// MaxConns caps open connections; MaxConnsPerClient those of one
	// client (all of loopback is one, an IPv6 /64 is one), so one client
	// cannot take every slot.
	MaxConns, MaxConnsPerClient int
	// ReserveConns are the connections beyond the caps that deliver
	// their request at once: each is answered once and closed, and a
	// newcomer takes the slot of the oldest that has not delivered yet
	// (internal/connlimit). They keep the kubelet's probes, and
	// `avsidecar probe` over loopback, answered whatever a flood holds.
	ReserveConns int
}

// defaultHTTPLimits: about 20 KiB per open connection (buffers and a
// goroutine), so at most some 20 MiB at the caps and the reserve. There is no write timeout
// for the whole answer, which a walk of a large tree would exceed: the
// browse handlers bound their own writes.
var defaultHTTPLimits = httpLimits{
	ReadHeaderTimeout: 10 * time.Second,
	ReadTimeout:       30 * time.Second,
	IdleTimeout:       30 * time.Second,
	MaxHeaderBytes:    64 << 10,
	MaxConns:          1024,
	MaxConnsPerClient: 64,
	ReserveConns:      64,
}

// newHTTPServer is the HTTP server of probes, metrics, status and browse,
// for a connlimit.Listener: a reserve connection that reached its handler
// keeps its slot, and is closed after the answer.
func newHTTPServer(h http.Handler, l httpLimits) *http.Server {
	return &http.Server{
		Handler:           connlimit.Track(h),
		ConnContext:       connlimit.ConnContext,
		ReadHeaderTimeout: l.ReadHeaderTimeout,
		ReadTimeout:       l.ReadTimeout,
		IdleTimeout:       l.IdleTimeout,
		MaxHeaderBytes:    l.MaxHeaderBytes,
	}
}
