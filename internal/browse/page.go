package browse

import (
	_ "embed"
	"net/http"
	"strconv"
)

// pageHTML is the whole browser UI: one file, no external assets, so it
// works offline through kubectl port-forward. It reads /v1/roots,
// /v1/files and /v1/du, and for its header /readyz?verbose and /v1/status
// (served by the same server, without a token; it shows "?" where they are
// missing). The bearer token, when the server wants one, is typed into the
// page and kept in a variable of the tab: never in storage or a cookie.
//
//go:embed index.html
var pageHTML []byte

// pageCSP allows only the page's own inline code and calls to this server.
const pageCSP = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

func (h *Handler) servePage(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", pageCSP)
	w.Header().Set("Referrer-Policy", "no-referrer")
	w.Header().Set("Content-Length", strconv.Itoa(len(pageHTML)))
	w.WriteHeader(http.StatusOK)
	w.Write(pageHTML)
}
