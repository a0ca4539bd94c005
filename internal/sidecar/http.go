package sidecar

import (
	"encoding/json"
	"net/http"
	"time"

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

// newHTTPServer is the HTTP server of probes, metrics, status and browse.
func newHTTPServer(h http.Handler) *http.Server {
	return &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
}
