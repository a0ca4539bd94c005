// Package avrest is a stand-in for the Avamar server's REST API, for tests
// and the demo. It serves, on a real loopback listener and by default over
// TLS with a CA of its own, the shapes that public clients of the real API
// rely on (the Dell PowerShell module of SkunkworksAutomation/Avamar, Python
// clients, an asset-inventory adapter):
//
//	POST /api/oauth/token               OAuth2 password grant; the OAuth
//	                                    client authenticates with HTTP basic
//	                                    auth, the user with the form fields
//	                                    grant_type=password, username,
//	                                    password, and scope (every public
//	                                    client sends scope=write). 200
//	                                    {"access_token","token_type":"bearer",
//	                                    "expires_in","scope"}; a bad client
//	                                    401 {"error":"invalid_client"}, a bad
//	                                    user 400 {"error":"invalid_grant"}, a
//	                                    scope the OAuth client lacks 400
//	                                    {"error":"invalid_scope"}.
//	GET  /api/v1/clients?domain=D&recursive=&filter=name==N&page=P&size=S
//	                                    a page {"content":[{"id","name",
//	                                    "domainFqdn","lastBackupTime",
//	                                    "lastCheckinTime","enabled","href"}],
//	                                    "number","size","totalElements",
//	                                    "totalPages","first","last"}; 20 a
//	                                    page by default. filter may be
//	                                    repeated: name==N (or name=='N'),
//	                                    domainFqdn==D, domainFqdn!=D.
//	GET  /api/v1/clients/{id}/backup-statistics
//	                                    {"lastBackupTime","totalBackups",
//	                                    "backupCount","failedBackupCount",
//	                                    "nextBackupTime"}
//	GET  /api/v1/clients/{id}/backups?page=P&size=S
//	                                    a page of {"id","name","createdTime",
//	                                    "expirationTime"} in the order the
//	                                    backups were added: no sort
//	                                    parameter is honoured (none is
//	                                    public), and the name of the time
//	                                    field is the kit's own guess.
//
// Times are RFC 3339 text; a client never backed up has null times. API
// calls need "Authorization: Bearer TOKEN" and answer 401
// {"error":"invalid_token"} otherwise. Switches make it go down
// (connections refused), refuse every credential, expire all tokens now,
// fail API calls with a status code, or answer the token endpoint or the
// API calls with a redirect; Config can leave the times out of
// client records or the statistics endpoint out of the API, so that a
// client of it must take the next source.
package avrest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Config describes the server's accounts.
type Config struct {
	// ClientID and ClientSecret identify the OAuth client (HTTP basic auth
	// at the token endpoint).
	ClientID, ClientSecret string
	// Username and Password are the Avamar user of the password grant.
	Username, Password string
	// TokenTTL is the lifetime of issued tokens (expires_in); zero means
	// 30 minutes, Avamar's default.
	TokenTTL time.Duration
	// Plain serves HTTP instead of HTTPS.
	Plain bool
	// Addr is the address to listen on; empty means 127.0.0.1 at a free
	// port. A cluster test listens on the node's address, which pods
	// reach; the certificate names its IP.
	Addr string
	// Scopes are the OAuth client's scopes; a token request naming another
	// is refused. Empty means read and write, as the public clients
	// register theirs.
	Scopes []string
	// NoClientTimes leaves lastBackupTime and lastCheckinTime out of client
	// records.
	NoClientTimes bool
	// NoStatistics answers /backup-statistics with 404.
	NoStatistics bool
	// NoFilter ignores the filter parameters of /api/v1/clients, so that a
	// client of the API must read every page and match names itself.
	NoFilter bool
}

// Backup is one backup of a client.
type Backup struct {
	// ID is the backup's id, assigned by AddBackup when empty.
	ID string
	// Created is when the backup was taken.
	Created time.Time
}

type client struct {
	id, name, domain string
	backups          []Backup
	checkin          time.Time
}

// Counts are the requests the server has answered, by kind.
type Counts struct {
	// Tokens is the number of tokens issued.
	Tokens int
	// TokenRefusals is the number of refused token requests.
	TokenRefusals int
	// Calls is the number of API calls answered with 200.
	Calls int
	// Unauthorized is the number of API calls refused with 401.
	Unauthorized int
	// Statistics and BackupLists count the calls to /backup-statistics and
	// to /backups.
	Statistics, BackupLists int
	// Sorted counts API calls that asked for a sort order.
	Sorted int
	// Redirected counts the requests answered with a redirect (see
	// SetRedirect).
	Redirected int
}

// redirect is an answer SetRedirect set up.
type redirect struct {
	code     int
	location string
}

// Server is a running stand-in. Create it with Start; Close it when done.
type Server struct {
	cfg    Config
	addr   string
	tlsCfg *tls.Config
	caPEM  []byte

	mu        sync.Mutex
	srv       *http.Server
	badCreds  bool
	failCode  int
	tokens    map[string]time.Time
	clients   []*client
	counts    Counts
	nextID    int
	lastToken string
	lastScope string

	// tokenRedirect and apiRedirect are SetRedirect's answers (code 0:
	// none).
	tokenRedirect, apiRedirect redirect
}

// Start listens on cfg.Addr (default 127.0.0.1 at a free port) and
// serves.
func Start(cfg Config) (*Server, error) {
	if cfg.TokenTTL == 0 {
		cfg.TokenTTL = 30 * time.Minute
	}
	if len(cfg.Scopes) == 0 {
		cfg.Scopes = []string{"read", "write"}
	}
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	s := &Server{cfg: cfg, tokens: map[string]time.Time{}}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("avrest: listen: %w", err)
	}
	if !cfg.Plain {
		ip := ln.Addr().(*net.TCPAddr).IP
		if s.tlsCfg, s.caPEM, err = selfCA(ip); err != nil {
			ln.Close()
			return nil, fmt.Errorf("avrest: make CA: %w", err)
		}
	}
	s.addr = ln.Addr().String()
	s.serve(ln)
	return s, nil
}

// URL is the base URL, e.g. https://127.0.0.1:40123.
func (s *Server) URL() string {
	if s.cfg.Plain {
		return "http://" + s.addr
	}
	return "https://" + s.addr
}

// CAPEM is the PEM certificate of the CA that signed the server's
// certificate (nil when Plain).
func (s *Server) CAPEM() []byte { return s.caPEM }

// AddClient registers a client in a domain and returns its id.
func (s *Server) AddClient(domain, name string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nextID++
	c := &client{id: fmt.Sprintf("c%04x-%s", s.nextID, randHex(4)), name: name, domain: domain}
	s.clients = append(s.clients, c)
	return c.id
}

// AddBackup adds a backup to the client with id clientID.
func (s *Server) AddBackup(clientID string, created time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.clients {
		if c.id == clientID {
			s.nextID++
			c.backups = append(c.backups, Backup{ID: strconv.Itoa(s.nextID), Created: created})
			return nil
		}
	}
	return fmt.Errorf("avrest: no client %q", clientID)
}

// SetCheckin records when the client with id clientID last checked in.
func (s *Server) SetCheckin(clientID string, at time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.clients {
		if c.id == clientID {
			c.checkin = at
			return nil
		}
	}
	return fmt.Errorf("avrest: no client %q", clientID)
}

// SetDown closes the listener and every connection (down: connections are
// refused) or listens again on the same address (up).
func (s *Server) SetDown(down bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if down {
		if s.srv != nil {
			s.srv.Close()
			s.srv = nil
		}
		return nil
	}
	if s.srv != nil {
		return nil
	}
	ln, err := net.Listen("tcp", s.addr)
	if err != nil {
		return fmt.Errorf("avrest: listen again: %w", err)
	}
	s.serveLocked(ln)
	return nil
}

// SetBadCredentials makes the token endpoint refuse every request (as if
// the account were locked or its password changed).
func (s *Server) SetBadCredentials(bad bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.badCreds = bad
}

// SetFailure makes every API call (not the token endpoint) answer code;
// 0 restores normal answers.
func (s *Server) SetFailure(code int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failCode = code
}

// SetRedirect makes the token endpoint (token true) or every API call
// (token false) answer code with the header Location: location, before
// looking at the request, as a moved or hostile server would; code 0
// restores normal answers.
func (s *Server) SetRedirect(token bool, code int, location string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if token {
		s.tokenRedirect = redirect{code, location}
	} else {
		s.apiRedirect = redirect{code, location}
	}
}

// redirected answers r with the redirect set up for its kind, if any; the
// lock is held.
func (s *Server) redirected(w http.ResponseWriter, r *http.Request, token bool) bool {
	rd := s.apiRedirect
	if token {
		rd = s.tokenRedirect
	}
	if rd.code == 0 {
		return false
	}
	s.counts.Redirected++
	http.Redirect(w, r, rd.location, rd.code)
	return true
}

// ExpireTokens makes every token issued so far invalid.
func (s *Server) ExpireTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.tokens)
}

// Counts returns the request counters.
func (s *Server) Counts() Counts {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts
}

// LastScope is the scope of the last token request, as sent ("" when it
// named none).
func (s *Server) LastScope() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastScope
}

// LastToken is the last token issued, so a test can look for it in logs.
func (s *Server) LastToken() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastToken
}

// Close stops the server.
func (s *Server) Close() {
	s.SetDown(true)
}

func (s *Server) serve(ln net.Listener) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.serveLocked(ln)
}

func (s *Server) serveLocked(ln net.Listener) {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/oauth/token", s.token)
	mux.HandleFunc("GET /api/v1/clients", s.api(s.listClients))
	mux.HandleFunc("GET /api/v1/clients/{id}/backups", s.api(s.listBackups))
	mux.HandleFunc("GET /api/v1/clients/{id}/backup-statistics", s.api(s.statistics))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second,
		// Refused handshakes are what some tests are about: no noise.
		ErrorLog: log.New(io.Discard, "", 0)}
	if s.tlsCfg != nil {
		ln = tls.NewListener(ln, s.tlsCfg)
	}
	s.srv = srv
	go srv.Serve(ln)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func (s *Server) token(w http.ResponseWriter, r *http.Request) {
	id, secret, ok := r.BasicAuth()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.redirected(w, r, true) {
		return
	}
	if !ok || id != s.cfg.ClientID || secret != s.cfg.ClientSecret || s.badCreds {
		s.counts.TokenRefusals++
		w.Header().Set("WWW-Authenticate", `Basic realm="oauth2/client"`)
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "invalid_client", "error_description": "Bad client credentials"})
		return
	}
	if r.PostFormValue("grant_type") != "password" {
		s.counts.TokenRefusals++
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "unsupported_grant_type"})
		return
	}
	if r.PostFormValue("username") != s.cfg.Username || r.PostFormValue("password") != s.cfg.Password {
		s.counts.TokenRefusals++
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_grant", "error_description": "Bad credentials"})
		return
	}
	scope := r.PostFormValue("scope")
	s.lastScope = scope
	for _, sc := range strings.Fields(scope) {
		if !slices.Contains(s.cfg.Scopes, sc) {
			s.counts.TokenRefusals++
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_scope", "error_description": "Invalid scope: " + sc})
			return
		}
	}
	if scope == "" {
		scope = strings.Join(s.cfg.Scopes, " ")
	}
	tok := randHex(24)
	s.tokens[tok] = time.Now().Add(s.cfg.TokenTTL)
	s.lastToken = tok
	s.counts.Tokens++
	writeJSON(w, http.StatusOK, map[string]any{
		"access_token": tok,
		"token_type":   "bearer",
		"expires_in":   int(s.cfg.TokenTTL.Seconds()),
		"scope":        scope,
	})
}

// api checks the bearer token and the failure switch, then runs h with the
// lock held.
func (s *Server) api(h func(w http.ResponseWriter, r *http.Request)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.redirected(w, r, false) {
			return
		}
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		exp, known := s.tokens[tok]
		if !ok || !known || time.Now().After(exp) {
			s.counts.Unauthorized++
			w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "invalid_token", "error_description": "Access token expired"})
			return
		}
		if s.failCode != 0 {
			writeJSON(w, s.failCode, map[string]string{"error": http.StatusText(s.failCode)})
			return
		}
		if r.FormValue("sort") != "" {
			s.counts.Sorted++
		}
		s.counts.Calls++
		h(w, r)
	}
}

// page is the paged envelope of list answers.
type page struct {
	Content       any  `json:"content"`
	Number        int  `json:"number"`
	Size          int  `json:"size"`
	TotalElements int  `json:"totalElements"`
	TotalPages    int  `json:"totalPages"`
	First         bool `json:"first"`
	Last          bool `json:"last"`
}

// paginate cuts items to the page asked for in r.
func paginate[T any](r *http.Request, items []T) page {
	size, err := strconv.Atoi(r.FormValue("size"))
	if err != nil || size <= 0 {
		size = 20
	}
	num, _ := strconv.Atoi(r.FormValue("page"))
	num = max(num, 0)
	from := min(num*size, len(items))
	to := min(from+size, len(items))
	pages := (len(items) + size - 1) / size
	return page{
		Content:       items[from:to],
		Number:        num,
		Size:          size,
		TotalElements: len(items),
		TotalPages:    pages,
		First:         num == 0,
		Last:          num >= pages-1,
	}
}

// clientJSON is a client record. The times are pointers so that a client
// never backed up shows null, and NoClientTimes leaves them out.
type clientJSON struct {
	ID              string           `json:"id"`
	Name            string           `json:"name"`
	DomainFqdn      string           `json:"domainFqdn"`
	LastBackupTime  *json.RawMessage `json:"lastBackupTime,omitempty"`
	LastCheckinTime *json.RawMessage `json:"lastCheckinTime,omitempty"`
	Enabled         bool             `json:"enabled"`
	Href            string           `json:"href"`
}

// timeJSON is t as RFC 3339 text, or null when t is zero.
func timeJSON(t time.Time) *json.RawMessage {
	raw := json.RawMessage("null")
	if !t.IsZero() {
		raw, _ = json.Marshal(t.UTC().Format(time.RFC3339))
	}
	return &raw
}

// newest is the time of c's newest backup, zero when it has none.
func (c *client) newest() time.Time {
	var t time.Time
	for _, b := range c.backups {
		if b.Created.After(t) {
			t = b.Created
		}
	}
	return t
}

// matches reports whether c passes every filter of the request.
func (c *client) matches(filters []string) bool {
	for _, f := range filters {
		switch {
		case strings.HasPrefix(f, "name=="):
			if strings.Trim(strings.TrimPrefix(f, "name=="), "'") != c.name {
				return false
			}
		case strings.HasPrefix(f, "domainFqdn=="):
			if strings.Trim(strings.TrimPrefix(f, "domainFqdn=="), "'") != c.domain {
				return false
			}
		case strings.HasPrefix(f, "domainFqdn!="):
			if strings.Trim(strings.TrimPrefix(f, "domainFqdn!="), "'") == c.domain {
				return false
			}
		}
	}
	return true
}

func (s *Server) listClients(w http.ResponseWriter, r *http.Request) {
	domain := r.FormValue("domain")
	recursive := r.FormValue("recursive") == "true"
	out := []clientJSON{}
	for _, c := range s.clients {
		inDomain := domain == "" || c.domain == domain ||
			recursive && (domain == "/" || strings.HasPrefix(c.domain, strings.TrimSuffix(domain, "/")+"/"))
		if !inDomain || !s.cfg.NoFilter && !c.matches(r.Form["filter"]) {
			continue
		}
		rec := clientJSON{ID: c.id, Name: c.name, DomainFqdn: c.domain, Enabled: true, Href: s.URL() + "/api/v1/clients/" + c.id}
		if !s.cfg.NoClientTimes {
			rec.LastBackupTime, rec.LastCheckinTime = timeJSON(c.newest()), timeJSON(c.checkin)
		}
		out = append(out, rec)
	}
	writeJSON(w, http.StatusOK, paginate(r, out))
}

// clientByID finds the client of the path's {id}, or answers 404.
func (s *Server) clientByID(w http.ResponseWriter, r *http.Request) *client {
	id := r.PathValue("id")
	i := slices.IndexFunc(s.clients, func(c *client) bool { return c.id == id })
	if i < 0 {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "client not found"})
		return nil
	}
	return s.clients[i]
}

func (s *Server) statistics(w http.ResponseWriter, r *http.Request) {
	if s.cfg.NoStatistics {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "Not Found"})
		return
	}
	c := s.clientByID(w, r)
	if c == nil {
		return
	}
	s.counts.Statistics++
	writeJSON(w, http.StatusOK, map[string]any{
		"lastBackupTime":    timeJSON(c.newest()),
		"totalBackups":      len(c.backups),
		"backupCount":       len(c.backups),
		"failedBackupCount": 0,
		"nextBackupTime":    nil,
	})
}

type backupJSON struct {
	ID             string `json:"id"`
	Name           string `json:"name"`
	CreatedTime    string `json:"createdTime"`
	ExpirationTime string `json:"expirationTime"`
}

func (s *Server) listBackups(w http.ResponseWriter, r *http.Request) {
	c := s.clientByID(w, r)
	if c == nil {
		return
	}
	s.counts.BackupLists++
	out := make([]backupJSON, len(c.backups))
	for i, b := range c.backups {
		out[i] = backupJSON{
			ID:             b.ID,
			Name:           "MOD-" + strconv.FormatInt(b.Created.UnixMilli(), 10),
			CreatedTime:    b.Created.UTC().Format(time.RFC3339),
			ExpirationTime: b.Created.Add(60 * 24 * time.Hour).UTC().Format(time.RFC3339),
		}
	}
	writeJSON(w, http.StatusOK, paginate(r, out))
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// selfCA makes a CA and a server certificate for 127.0.0.1, localhost and
// ip (the listen address) signed by it.
func selfCA(ip net.IP) (*tls.Config, []byte, error) {
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "avrest test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "mcs"},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), ip},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, nil, err
	}
	cfg := &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		MinVersion:   tls.VersionTLS12,
	}
	return cfg, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), nil
}
