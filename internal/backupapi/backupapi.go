// Package backupapi asks the Avamar server's REST API, at an interval, when
// this client's newest backup was taken, so that an operator can alert on
// backup freshness (metric avsidecar_last_backup_timestamp_seconds).
//
// One check, in the shapes the public clients of the API use (the Dell
// PowerShell module of SkunkworksAutomation/Avamar, Python clients, an
// asset-inventory adapter): get an OAuth2 token (password grant at
// /api/oauth/token, the OAuth client authenticated by HTTP basic auth, with
// a scope: write, as all of them send); find the client by name in its
// domain, reading every page (page, size; content, totalPages) of
// /api/v1/clients?domain=D&filter=name==N; take the newest backup's time
// from the client record's lastBackupTime, else from
// /api/v1/clients/{id}/backup-statistics, else from the backups list
// /api/v1/clients/{id}/backups, every page of it, the newest found here:
// no public client asks the server to sort. The record's lastCheckinTime,
// when present, says when the server last heard from the agent.
//
// Tokens are reused until shortly before they expire; an API call answered
// 401 gets a new token once. Transport errors, 429 and 5xx answers are
// retried with capped exponential backoff (go-retryablehttp) that stops
// when the context ends. TLS is verified, against the system roots or a CA
// file; plain http is refused because a password travels in the token
// request. For the same reason no redirect is followed, not even to the
// same server: a redirect is a fault (StateRedirected) that names where it
// pointed, and the URL is the operator's to fix.
//
// The check is only on when AVAMAR_REST_URL is set:
//
//	| variable | default | meaning |
//	| --- | --- | --- |
//	| `AVAMAR_REST_URL` | empty (backup check off) | Avamar REST API base, `https://HOST[:PORT]` (the MCS, usually port 443); turns the backup freshness check on |
//	| `AVAMAR_REST_CREDENTIALS_FILE` | `/etc/avsidecar/rest/credentials` | a file of `KEY=VALUE` lines `client_id`, `client_secret` (the OAuth client), `username`, `password` (the Avamar user), `#` comments; or a directory holding one file per key, as a Kubernetes Secret made with `kubectl create secret generic --from-literal=client_id=...` is mounted; re-read at every token request, so a rotated Secret is picked up |
//	| `AVAMAR_REST_CA_FILE` | empty (system roots; with a credentials directory, its `ca.crt` when present) | PEM CA bundle that signed the server's certificate; re-read at every check |
//	| `AVAMAR_REST_INTERVAL` | `5m` | time between two checks |
//	| `AVAMAR_REST_SCOPE` | `write` | the scope of the token request |
//
// The client is looked up by AVAMAR_CLIENT_NAME in AVAMAR_DOMAIN. Secrets
// (client secret, password, tokens) never reach logs, Status or errors.
package backupapi

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-retryablehttp"
	"github.com/rs/zerolog"
)

// States of the check, as in Status.State and the metrics.
const (
	StateUnknown        = "unknown"          // no check has finished yet
	StateOK             = "ok"               // the last check succeeded
	StateUnreachable    = "unreachable"      // the server could not be reached
	StateUnauthorized   = "unauthorized"     // credentials or token refused
	StateClientNotFound = "client-not-found" // no client of that name in the domain
	StateRedirected     = "redirected"       // the server answered with a redirect, which is never followed
	StateError          = "error"            // anything else; see Status.Message
)

// States lists every state: the label values of avsidecar_backup_api_state.
var States = []string{StateUnknown, StateOK, StateUnreachable, StateUnauthorized, StateClientNotFound, StateRedirected, StateError}

// Defaults for the zero values of Config.
const (
	DefaultScope          = "write"
	DefaultInterval       = 5 * time.Minute
	DefaultRequestTimeout = 30 * time.Second
	DefaultRetryMax       = 4
	DefaultRetryWaitMin   = time.Second
	DefaultRetryWaitMax   = 30 * time.Second
)

// Config says which server to ask, as whom, and about which client.
type Config struct {
	// URL is the REST API base, https://HOST[:PORT] (AVAMAR_REST_URL).
	// Required; plain http is refused.
	URL string
	// CredentialsFile holds KEY=VALUE lines client_id, client_secret,
	// username and password, or is a directory with one file of each of
	// those names (a Kubernetes Secret mounted as a volume)
	// (AVAMAR_REST_CREDENTIALS_FILE). It is read at every token request.
	// Required.
	CredentialsFile string
	// CAFile is a PEM bundle of the CAs trusted for the server's
	// certificate (AVAMAR_REST_CA_FILE). Empty: the file CAFileName of a
	// credentials directory when it has one, else the system roots. It
	// is read at every check.
	CAFile string
	// Domain is the client's Avamar domain (AVAMAR_DOMAIN), e.g. /clients.
	// Required.
	Domain string
	// Client is the client's name (AVAMAR_CLIENT_NAME). Required.
	Client string
	// Scope is the scope of the token request (AVAMAR_REST_SCOPE); empty
	// means DefaultScope.
	Scope string
	// Interval is the time between two checks (AVAMAR_REST_INTERVAL);
	// zero means DefaultInterval.
	Interval time.Duration
	// RequestTimeout bounds one HTTP request; zero means
	// DefaultRequestTimeout.
	RequestTimeout time.Duration
	// RetryMax is how many times one request is retried after a transport
	// error, 429 or 5xx; zero means DefaultRetryMax, negative no retry.
	RetryMax int
	// RetryWaitMin and RetryWaitMax bound the exponential backoff between
	// retries; zero means DefaultRetryWaitMin and DefaultRetryWaitMax.
	RetryWaitMin, RetryWaitMax time.Duration
}

// Status is a snapshot of the check. It holds no secret.
type Status struct {
	// URL is the REST API base.
	URL string `json:"url"`
	// Domain and Client name the client asked about.
	Domain string `json:"domain"`
	Client string `json:"client"`
	// State is one of the State constants.
	State string `json:"state"`
	// Message says why, when State is not ok (or that no backup exists yet).
	Message string `json:"message,omitempty"`
	// LastBackup is the time of the newest backup; zero while unknown. It
	// keeps the last value learnt while the server cannot be asked.
	LastBackup time.Time `json:"last_backup,omitzero"`
	// BackupSource says where LastBackup came from: client (the client
	// record's lastBackupTime), backup-statistics, or backups (the list).
	BackupSource string `json:"backup_source,omitempty"`
	// LastCheckin is when the server last heard from the agent (the client
	// record's lastCheckinTime); zero while unknown.
	LastCheckin time.Time `json:"last_checkin,omitzero"`
	// LastCheck is when the last check finished.
	LastCheck time.Time `json:"last_check,omitzero"`
	// LastSuccess is when a check last succeeded.
	LastSuccess time.Time `json:"last_success,omitzero"`
	// Checks and Failures count finished checks and failed ones.
	Checks   uint64 `json:"checks"`
	Failures uint64 `json:"failures"`
}

// CAFileName is the file of a credentials directory that, when CAFile is
// empty, holds the CA bundle: the key ca.crt of the Secret, the name
// Kubernetes gives a CA beside credentials (a service account's token
// directory, TLS Secrets). Optional: without it, the system roots.
const CAFileName = "ca.crt"

// Checker polls the REST API. Create it with New and start it with Run.
type Checker struct {
	cfg  Config
	log  zerolog.Logger
	base *url.URL
	http *retryablehttp.Client
	// transport is the HTTP client's, trusting caPEM (nil: the system
	// roots); refreshCA replaces both when the CA bundle changes.
	transport *http.Transport
	caPEM     []byte

	// now is the clock; tests move it to reach a token's end.
	now func() time.Time

	// checking serialises checks; it guards the token.
	checking sync.Mutex
	token    string
	tokenEnd time.Time

	mu sync.Mutex
	st Status
}

// stateError carries the state a failure leads to.
type stateError struct {
	state string
	err   error
}

// Error is the wrapped error's message.
func (e *stateError) Error() string { return e.err.Error() }

// Unwrap gives errors.Is and errors.As the wrapped error.
func (e *stateError) Unwrap() error { return e.err }

// httpError is an API answer other than 200, 401 and 403.
type httpError struct {
	code int
	err  error
}

// Error is the wrapped error's message.
func (e *httpError) Error() string { return e.err.Error() }

// Unwrap gives errors.Is and errors.As the wrapped error.
func (e *httpError) Unwrap() error { return e.err }

func failure(state string, format string, args ...any) error {
	return &stateError{state: state, err: fmt.Errorf(format, args...)}
}

// New checks cfg, loads the CA file and returns a Checker.
func New(cfg Config, log zerolog.Logger) (*Checker, error) {
	var problems []error
	u, err := url.Parse(cfg.URL)
	switch {
	case cfg.URL == "":
		problems = append(problems, errors.New("rest url is required"))
	case err != nil:
		problems = append(problems, fmt.Errorf("rest url: %w", err))
	case u.Scheme != "https" || u.Host == "":
		problems = append(problems, fmt.Errorf("rest url %q: want https://HOST[:PORT]", redact(u)))
	case u.User != nil:
		problems = append(problems, errors.New("rest url must not hold credentials: use the credentials file"))
	}
	if cfg.CredentialsFile == "" {
		problems = append(problems, errors.New("rest credentials file is required"))
	}
	if cfg.Domain == "" {
		problems = append(problems, errors.New("domain is required"))
	}
	if cfg.Client == "" {
		problems = append(problems, errors.New("client name is required"))
	}
	if cfg.Interval < 0 || cfg.RequestTimeout < 0 || cfg.RetryWaitMin < 0 || cfg.RetryWaitMax < 0 {
		problems = append(problems, errors.New("durations must not be negative"))
	}
	if _, err := loadCA(cfg.CAFile); err != nil {
		problems = append(problems, err)
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("backupapi: %w", errors.Join(problems...))
	}
	if cfg.Scope == "" {
		cfg.Scope = DefaultScope
	}
	setDefault(&cfg.Interval, DefaultInterval)
	setDefault(&cfg.RequestTimeout, DefaultRequestTimeout)
	setDefault(&cfg.RetryWaitMin, DefaultRetryWaitMin)
	setDefault(&cfg.RetryWaitMax, DefaultRetryWaitMax)
	switch {
	case cfg.RetryMax == 0:
		cfg.RetryMax = DefaultRetryMax
	case cfg.RetryMax < 0:
		cfg.RetryMax = 0
	}
	u.Path = strings.TrimSuffix(u.Path, "/")

	c := &Checker{cfg: cfg, log: log, base: u, now: time.Now}
	rc := retryablehttp.NewClient()
	// The transport, with the CA bundle, is made by refreshCA at each check.
	rc.Logger = nil // attempts are logged by the backoff below, without URLs' queries
	rc.RetryMax = cfg.RetryMax
	rc.RetryWaitMin = cfg.RetryWaitMin
	rc.RetryWaitMax = cfg.RetryWaitMax
	rc.Backoff = func(min, max time.Duration, attempt int, resp *http.Response) time.Duration {
		d := retryablehttp.DefaultBackoff(min, max, attempt, resp)
		ev := log.Warn().Int("attempt", attempt+1).Dur("backoff_ms", d)
		if resp != nil {
			ev = ev.Int("status", resp.StatusCode)
		}
		ev.Msg("rest request failed, retrying")
		return d
	}
	// Hand back the last response or error rather than a generic "giving up".
	rc.ErrorHandler = retryablehttp.PassthroughErrorHandler
	c.http = rc
	c.st = Status{URL: redact(u), Domain: cfg.Domain, Client: cfg.Client, State: StateUnknown}
	return c, nil
}

func setDefault(d *time.Duration, def time.Duration) {
	if *d == 0 {
		*d = def
	}
}

// redact drops user info and query from a URL for display.
func redact(u *url.URL) string {
	v := *u
	v.User = nil
	v.RawQuery = ""
	return v.String()
}

// maxCredentialSize bounds what is read of one credentials file or CA
// bundle: anything larger is not one.
const maxCredentialSize = 1 << 20

// caFile is the CA bundle to trust: CAFile, else a credentials directory's
// CAFileName, which may be absent (required is false then); "" for the
// system roots.
func (c *Checker) caFile() (path string, required bool) {
	if c.cfg.CAFile != "" {
		return c.cfg.CAFile, true
	}
	if fi, err := os.Stat(c.cfg.CredentialsFile); err == nil && fi.IsDir() {
		return filepath.Join(c.cfg.CredentialsFile, CAFileName), false
	}
	return "", false
}

// refreshCA reads the CA bundle and, when it is not the one the HTTP
// client trusts, gives the client a transport that trusts it: a renewed
// CA in a Secret is picked up at the next check, without a restart.
func (c *Checker) refreshCA() error {
	path, required := c.caFile()
	var data []byte
	if path != "" {
		b, err := readSmall(path)
		switch {
		case err == nil:
			data = b
		case !required && errors.Is(err, fs.ErrNotExist):
		default:
			return fmt.Errorf("rest ca file: %w", err)
		}
	}
	if c.transport != nil && bytes.Equal(data, c.caPEM) && (data == nil) == (c.caPEM == nil) {
		return nil
	}
	var roots *x509.CertPool
	if data != nil {
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(data) {
			return fmt.Errorf("rest ca file %s: no PEM certificate", path)
		}
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	if c.transport != nil {
		c.transport.CloseIdleConnections()
		c.log.Info().Str("ca_file", path).Msg("rest ca bundle changed")
	}
	c.transport, c.caPEM = transport, data
	c.http.HTTPClient = &http.Client{Transport: transport, Timeout: c.cfg.RequestTimeout, CheckRedirect: noRedirect}
	return nil
}

// noRedirect hands a redirect back as the answer: Go's client would send a
// 307 or 308 token request again, password and all, wherever the Location
// points (plain http included), and follow an API call to another host
// and believe its answer. redirected makes the answer a fault.
func noRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// redirected is the fault of a redirect answer (any 3xx), naming where it
// pointed without user info or query; nil for other answers. No public
// client of the API expects one: the fix is the URL in AVAMAR_REST_URL.
func redirected(what string, resp *http.Response) error {
	if resp.StatusCode < 300 || resp.StatusCode > 399 {
		return nil
	}
	to := "nowhere (no Location)"
	if u, err := resp.Location(); err == nil {
		to = redact(u)
	}
	return failure(StateRedirected, "%s: answered %s, a redirect to %s: redirects are not followed (set AVAMAR_REST_URL to the address that answers)",
		what, resp.Status, to)
}

// readSmall reads a file of at most maxCredentialSize bytes.
func readSmall(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxCredentialSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxCredentialSize {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, maxCredentialSize)
	}
	return b, nil
}

func loadCA(file string) (*x509.CertPool, error) {
	if file == "" {
		return nil, nil
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("rest ca file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("rest ca file %s: no PEM certificate", file)
	}
	return pool, nil
}

// Status returns a snapshot of the check.
func (c *Checker) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.st
}

// Run checks at once, then every Interval, until ctx is cancelled; it
// returns nil then.
func (c *Checker) Run(ctx context.Context) error {
	tick := time.NewTicker(c.cfg.Interval)
	defer tick.Stop()
	for {
		c.Check(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// Check runs one check now and records its outcome in Status. Run calls it;
// it is exported for a manual refresh. Concurrent calls run one at a time.
func (c *Checker) Check(ctx context.Context) {
	c.checking.Lock()
	defer c.checking.Unlock()
	newest, found, err := c.check(ctx)
	if ctx.Err() != nil {
		return // shutting down: not a finding about the server
	}
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.st.Checks++
	c.st.LastCheck = now
	if err != nil {
		state := StateError
		var se *stateError
		if errors.As(err, &se) {
			state = se.state
		}
		if c.st.State != state || c.st.Message != err.Error() {
			c.log.Warn().Str("state", state).Err(err).Msg("backup check failed")
		}
		c.st.Failures++
		c.st.State, c.st.Message = state, err.Error()
		return
	}
	if c.st.State != StateOK {
		c.log.Info().Time("last_backup", newest.time).Str("source", newest.source).Bool("found", found).Msg("backup check ok")
	}
	c.st.State, c.st.Message = StateOK, ""
	c.st.LastSuccess = now
	c.st.LastCheckin = newest.checkin
	if found {
		c.st.LastBackup, c.st.BackupSource = newest.time, newest.source
	} else {
		c.st.LastBackup, c.st.BackupSource = time.Time{}, ""
		c.st.Message = "the client has no backup yet"
	}
}

// Sources of the newest backup's time, as in Status.BackupSource.
const (
	SourceClient     = "client"
	SourceStatistics = "backup-statistics"
	SourceBackups    = "backups"
)

// pageSize is the size of the pages asked for; maxPages bounds how many
// pages of one list a check reads.
const (
	pageSize = 100
	maxPages = 100
)

// finding is what one check learnt.
type finding struct {
	time    time.Time // the newest backup
	source  string    // where time came from
	checkin time.Time // the client record's lastCheckinTime
}

// clientRecord is what the check reads of a client record.
type clientRecord struct {
	ID              string          `json:"id"`
	Name            string          `json:"name"`
	DomainFqdn      string          `json:"domainFqdn"`
	LastBackupTime  json.RawMessage `json:"lastBackupTime"`
	LastCheckinTime json.RawMessage `json:"lastCheckinTime"`
}

// check finds the client and its newest backup.
func (c *Checker) check(ctx context.Context) (finding, bool, error) {
	if err := c.refreshCA(); err != nil {
		return finding{}, false, err
	}
	rec, err := c.findClient(ctx)
	if err != nil {
		return finding{}, false, err
	}
	var f finding
	if t, ok, err := optionalTime(rec.LastCheckinTime); err != nil {
		return finding{}, false, fmt.Errorf("client record lastCheckinTime: %w", err)
	} else if ok {
		f.checkin = t
	}
	if t, ok, err := optionalTime(rec.LastBackupTime); err != nil {
		return finding{}, false, fmt.Errorf("client record lastBackupTime: %w", err)
	} else if ok {
		f.time, f.source = t, SourceClient
		return f, true, nil
	}
	if t, ok, err := c.statistics(ctx, rec.ID); err != nil {
		return finding{}, false, err
	} else if ok {
		f.time, f.source = t, SourceStatistics
		return f, true, nil
	}
	t, ok, err := c.newestInList(ctx, rec.ID)
	if err != nil || !ok {
		return f, false, err
	}
	f.time, f.source = t, SourceBackups
	return f, true, nil
}

// findClient reads the pages of the domain's clients of that name and
// returns the one whose name (and domainFqdn, when the record has one) is
// exactly the configured one: the filter is the server's business, the
// match is ours.
func (c *Checker) findClient(ctx context.Context) (clientRecord, error) {
	q := url.Values{"domain": {c.cfg.Domain}, "filter": {"name==" + c.cfg.Client}, "size": {strconv.Itoa(pageSize)}}
	for p := 0; p < maxPages; p++ {
		var page struct {
			Content    []clientRecord `json:"content"`
			TotalPages int            `json:"totalPages"`
		}
		q.Set("page", strconv.Itoa(p))
		if err := c.get(ctx, "/api/v1/clients", q, &page); err != nil {
			return clientRecord{}, err
		}
		for _, rec := range page.Content {
			if rec.Name == c.cfg.Client && (rec.DomainFqdn == "" || rec.DomainFqdn == c.cfg.Domain) && rec.ID != "" {
				return rec, nil
			}
		}
		if p+1 >= page.TotalPages || len(page.Content) == 0 {
			break
		}
	}
	return clientRecord{}, failure(StateClientNotFound, "no client %q in domain %q", c.cfg.Client, c.cfg.Domain)
}

// statistics reads lastBackupTime from the client's backup statistics. A
// server without that endpoint (404) is no error: the list comes next.
func (c *Checker) statistics(ctx context.Context, id string) (time.Time, bool, error) {
	var stats struct {
		LastBackupTime json.RawMessage `json:"lastBackupTime"`
	}
	err := c.get(ctx, "/api/v1/clients/"+url.PathEscape(id)+"/backup-statistics", nil, &stats)
	var he *httpError
	if errors.As(err, &he) && (he.code == http.StatusNotFound || he.code == http.StatusMethodNotAllowed) {
		return time.Time{}, false, nil
	}
	if err != nil {
		return time.Time{}, false, err
	}
	t, ok, err := optionalTime(stats.LastBackupTime)
	if err != nil {
		return time.Time{}, false, fmt.Errorf("backup statistics lastBackupTime: %w", err)
	}
	return t, ok, nil
}

// backupTimeFields are the fields of a backup in the list read as its time,
// the first present winning. No public source shows the list's fields: the
// list is the last resort, for servers whose records and statistics carry
// no time.
var backupTimeFields = []string{"createdTime", "created", "createdDate", "backupTime", "startTime"}

// newestInList reads every page of the client's backups and returns the
// newest time found: no public client asks the server to sort.
func (c *Checker) newestInList(ctx context.Context, id string) (time.Time, bool, error) {
	q := url.Values{"size": {strconv.Itoa(pageSize)}}
	var newest time.Time
	found := false
	for p := 0; p < maxPages; p++ {
		var page struct {
			Content    []map[string]json.RawMessage `json:"content"`
			TotalPages int                          `json:"totalPages"`
		}
		q.Set("page", strconv.Itoa(p))
		if err := c.get(ctx, "/api/v1/clients/"+url.PathEscape(id)+"/backups", q, &page); err != nil {
			return time.Time{}, false, err
		}
		for _, b := range page.Content {
			t, ok, err := backupTime(b)
			if err != nil {
				return time.Time{}, false, fmt.Errorf("backup list: %w", err)
			}
			if ok && (!found || t.After(newest)) {
				newest, found = t, true
			}
		}
		if p+1 >= page.TotalPages || len(page.Content) == 0 {
			break
		}
	}
	return newest, found, nil
}

// backupTime is the time of one backup of the list.
func backupTime(b map[string]json.RawMessage) (time.Time, bool, error) {
	for _, name := range backupTimeFields {
		if raw, ok := b[name]; ok {
			t, ok, err := optionalTime(raw)
			if err != nil {
				return time.Time{}, false, fmt.Errorf("%s: %w", name, err)
			}
			if ok {
				return t, true, nil
			}
		}
	}
	return time.Time{}, false, nil
}

// get calls the API with a token, getting a new token once if the call is
// refused with 401, and decodes the JSON answer into out.
func (c *Checker) get(ctx context.Context, path string, q url.Values, out any) error {
	for fresh := false; ; fresh = true {
		tok, err := c.getToken(ctx, fresh)
		if err != nil {
			return err
		}
		u := *c.base
		u.Path += path
		u.RawQuery = q.Encode()
		req, err := retryablehttp.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
		if err != nil {
			return fmt.Errorf("get %s: %w", path, err)
		}
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Accept", "application/json")
		resp, err := c.do(req)
		if err != nil {
			return transportError("get "+path, err)
		}
		body, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
		resp.Body.Close()
		if err != nil {
			return transportError("get "+path, err)
		}
		if err := redirected("get "+path, resp); err != nil {
			return err
		}
		switch {
		case resp.StatusCode == http.StatusUnauthorized && !fresh:
			c.log.Debug().Str("path", path).Msg("token refused, getting a new one")
			c.token = ""
			continue
		case resp.StatusCode == http.StatusUnauthorized, resp.StatusCode == http.StatusForbidden:
			return failure(StateUnauthorized, "get %s: %s%s", path, resp.Status, oauthError(body))
		case resp.StatusCode != http.StatusOK:
			return &httpError{code: resp.StatusCode, err: fmt.Errorf("get %s: %s", path, resp.Status)}
		}
		if err := json.Unmarshal(body, out); err != nil {
			return fmt.Errorf("get %s: decode answer: %w", path, err)
		}
		return nil
	}
}

// getToken returns the current token, or a new one when fresh, when there
// is none, or when it is about to expire.
func (c *Checker) getToken(ctx context.Context, fresh bool) (string, error) {
	if !fresh && c.token != "" && c.now().Before(c.tokenEnd) {
		return c.token, nil
	}
	c.token = ""
	cr, err := readCredentials(c.cfg.CredentialsFile)
	if err != nil {
		return "", err
	}
	form := url.Values{"grant_type": {"password"}, "username": {cr.username}, "password": {cr.password}, "scope": {c.cfg.Scope}}
	u := *c.base
	u.Path += "/api/oauth/token"
	req, err := retryablehttp.NewRequestWithContext(ctx, http.MethodPost, u.String(), []byte(form.Encode()))
	if err != nil {
		return "", fmt.Errorf("token request: %w", err)
	}
	req.SetBasicAuth(cr.clientID, cr.clientSecret)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	started := c.now()
	resp, err := c.do(req)
	if err != nil {
		return "", transportError("token request", err)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if err != nil {
		return "", transportError("token request", err)
	}
	if err := redirected("token request", resp); err != nil {
		return "", err
	}
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusBadRequest, http.StatusUnauthorized, http.StatusForbidden:
		return "", failure(StateUnauthorized, "token request refused: %s%s", resp.Status, oauthError(body))
	default:
		return "", fmt.Errorf("token request: %s", resp.Status)
	}
	var tr struct {
		AccessToken string `json:"access_token"`
		ExpiresIn   int64  `json:"expires_in"`
	}
	if err := json.Unmarshal(body, &tr); err != nil || tr.AccessToken == "" {
		return "", errors.New("token request: answer holds no access_token")
	}
	// Renew a little early: at 90% of the lifetime, the clock having
	// started before the request.
	life := time.Duration(tr.ExpiresIn) * time.Second
	if life <= 0 {
		life = time.Minute
	}
	c.token, c.tokenEnd = tr.AccessToken, started.Add(life*9/10)
	return c.token, nil
}

// do sends req with retries and returns either an answer or an error.
func (c *Checker) do(req *retryablehttp.Request) (*http.Response, error) {
	resp, err := c.http.Do(req)
	if err != nil && resp != nil {
		resp.Body.Close()
	}
	if err == nil && resp == nil {
		err = errors.New("no answer")
	}
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// oauthError is ": CODE" from an OAuth2 error answer, or "". Only the
// error code is kept: descriptions are free text.
func oauthError(body []byte) string {
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(body, &e) != nil || e.Error == "" || len(e.Error) > 64 {
		return ""
	}
	for _, r := range e.Error {
		if !(r == '_' || r == '-' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return ""
		}
	}
	return " (" + e.Error + ")"
}

// transportError classifies a failed exchange: certificate problems are
// errors (retrying will not help, and "unreachable" would mislead), the
// rest means the server could not be reached.
func transportError(what string, err error) error {
	var unknownCA x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var invalid x509.CertificateInvalidError
	var verify *tls.CertificateVerificationError
	if errors.As(err, &unknownCA) || errors.As(err, &hostname) || errors.As(err, &invalid) || errors.As(err, &verify) {
		return fmt.Errorf("%s: server certificate not trusted: %w", what, err)
	}
	return &stateError{state: StateUnreachable, err: fmt.Errorf("%s: %w", what, err)}
}

// credentials are the contents of the credentials file.
type credentials struct {
	clientID, clientSecret, username, password string
}

// credentialKeys are the keys of the credentials: the keys of the
// KEY=VALUE lines, or the file names of a credentials directory.
var credentialKeys = []string{"client_id", "client_secret", "username", "password"}

// fields maps each key to its place in cr.
func (cr *credentials) fields() map[string]*string {
	return map[string]*string{
		"client_id": &cr.clientID, "client_secret": &cr.clientSecret,
		"username": &cr.username, "password": &cr.password,
	}
}

// missing lists the keys that have no value.
func (cr *credentials) missing() []string {
	f := cr.fields()
	var out []string
	for _, k := range credentialKeys {
		if *f[k] == "" {
			out = append(out, k)
		}
	}
	return out
}

// readCredentials reads the credentials from a file of KEY=VALUE lines or
// from a directory of one file per key. Errors name the file, the line
// number and the key, never a value.
func readCredentials(path string) (credentials, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return credentials{}, fmt.Errorf("rest credentials: %w", err)
	}
	if fi.IsDir() {
		return readCredentialsDir(path)
	}
	return readCredentialsFile(path)
}

// readCredentialsFile reads KEY=VALUE lines; a VALUE is taken as it is up
// to the end of its line (a final CR dropped).
func readCredentialsFile(file string) (credentials, error) {
	data, err := readSmall(file)
	if err != nil {
		return credentials{}, fmt.Errorf("rest credentials: %w", err)
	}
	var cr credentials
	fields := cr.fields()
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSuffix(sc.Text(), "\r")
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		k = strings.TrimSpace(k)
		p, known := fields[k]
		switch {
		case !ok:
			return credentials{}, fmt.Errorf("rest credentials %s line %d: want KEY=VALUE", file, n)
		case !known:
			return credentials{}, fmt.Errorf("rest credentials %s line %d: unknown key %q", file, n, k)
		}
		*p = v
	}
	if err := sc.Err(); err != nil {
		return credentials{}, fmt.Errorf("rest credentials %s: %w", file, err)
	}
	if missing := cr.missing(); len(missing) > 0 {
		return credentials{}, fmt.Errorf("rest credentials %s: missing %s", file, strings.Join(missing, ", "))
	}
	return cr, nil
}

// readCredentialsDir reads one file per key, as a Kubernetes Secret
// mounted as a directory holds them. A value is the file's content, one
// final newline (LF or CRLF) dropped: `kubectl create secret
// --from-literal` writes none, --from-file of a file made by echo one. A
// value of several lines is refused: no credential has one. Other files
// (ca.crt, the kubelet's ..data links) are not read here.
func readCredentialsDir(dir string) (credentials, error) {
	var cr credentials
	fields := cr.fields()
	for _, k := range credentialKeys {
		p := filepath.Join(dir, k)
		b, err := readSmall(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return credentials{}, fmt.Errorf("rest credentials: %w", err)
		}
		v := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
		if strings.ContainsAny(v, "\r\n") {
			return credentials{}, fmt.Errorf("rest credentials %s: more than one line", p)
		}
		*fields[k] = v
	}
	missing := cr.missing()
	if len(missing) == 0 {
		return cr, nil
	}
	// Name what the directory holds instead (names, never contents): a
	// Secret made with client-id instead of client_id shows at once.
	var others []string
	if entries, err := os.ReadDir(dir); err == nil {
		for _, e := range entries {
			if n := e.Name(); !strings.HasPrefix(n, ".") && n != CAFileName && !slices.Contains(credentialKeys, n) {
				others = append(others, n)
			}
		}
	}
	msg := fmt.Sprintf("rest credentials %s: missing or empty file %s", dir, strings.Join(missing, ", "))
	if len(others) > 0 {
		msg += fmt.Sprintf(" (the directory holds %s; the files are %s)", strings.Join(others, ", "), strings.Join(credentialKeys, ", "))
	}
	return credentials{}, errors.New(msg)
}

// optionalTime reads a time that may be absent or null (a client never
// backed up): ok is false then.
func optionalTime(raw json.RawMessage) (time.Time, bool, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return time.Time{}, false, nil
	}
	t, err := parseTime(raw)
	return t, err == nil, err
}

// parseTime reads a time given as RFC 3339 text, as Java's
// "2006-01-02T15:04:05.000+0000", or as Unix milliseconds.
func parseTime(raw json.RawMessage) (time.Time, error) {
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		ms, err := strconv.ParseInt(string(raw), 10, 64)
		if err != nil {
			return time.Time{}, fmt.Errorf("%.40s: not a time", raw)
		}
		return time.UnixMilli(ms).UTC(), nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.000-0700", "2006-01-02T15:04:05-0700"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("%.40q: not a time", s)
}
