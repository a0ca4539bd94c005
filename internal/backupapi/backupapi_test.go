package backupapi

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/avsidecar/avsidecar/internal/testkit/avrest"
)

const (
	clientID     = "avsidecar-oauth"
	clientSecret = "cl1ent-S3cret-zz9"
	username     = "backupviewer"
	password     = "pa55-W0rd-qq7"
	domain       = "/clients"
	clientName   = "shop-db-0"
)

// logBuf collects the checker's log for inspection and can signal when a
// message appears.
type logBuf struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	watch map[string]chan struct{}
}

func (b *logBuf) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var ev struct {
		Message string `json:"message"`
	}
	if json.Unmarshal(p, &ev) == nil {
		if ch, ok := b.watch[ev.Message]; ok {
			close(ch)
			delete(b.watch, ev.Message)
		}
	}
	return b.buf.Write(p)
}

// on returns a channel closed when msg is next logged.
func (b *logBuf) on(msg string) <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.watch == nil {
		b.watch = map[string]chan struct{}{}
	}
	ch := make(chan struct{})
	b.watch[msg] = ch
	return ch
}

func (b *logBuf) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// fixture is a stand-in server, a credentials file, a CA file and a
// checker wired to them.
type fixture struct {
	srv   *avrest.Server
	creds string
	ca    string
	id    string
	log   *logBuf
}

func newFixture(t *testing.T, ttl time.Duration) *fixture {
	t.Helper()
	return newFixtureWith(t, avrest.Config{TokenTTL: ttl})
}

// newFixtureWith starts a stand-in with cfg's switches and the fixture's
// accounts.
func newFixtureWith(t *testing.T, cfg avrest.Config) *fixture {
	t.Helper()
	cfg.ClientID, cfg.ClientSecret, cfg.Username, cfg.Password = clientID, clientSecret, username, password
	srv, err := avrest.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	f := &fixture{
		srv:   srv,
		creds: filepath.Join(dir, "credentials"),
		ca:    filepath.Join(dir, "ca.pem"),
		log:   &logBuf{},
	}
	f.writeCreds(t, password)
	if err := os.WriteFile(f.ca, srv.CAPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	srv.AddClient(domain, clientName+"-other")
	srv.AddClient("/elsewhere", clientName)
	f.id = srv.AddClient(domain, clientName)
	return f
}

func (f *fixture) writeCreds(t *testing.T, pw string) {
	t.Helper()
	content := "# Avamar REST API\r\nclient_id=" + clientID + "\r\nclient_secret=" + clientSecret +
		"\r\n\r\nusername=" + username + "\r\npassword=" + pw + "\r\n"
	if err := os.WriteFile(f.creds, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) config() Config {
	return Config{
		URL: f.srv.URL(), CredentialsFile: f.creds, CAFile: f.ca,
		Domain: domain, Client: clientName,
		RetryMax: 2, RetryWaitMin: time.Millisecond, RetryWaitMax: 5 * time.Millisecond,
	}
}

func (f *fixture) checker(t *testing.T, cfg Config) *Checker {
	t.Helper()
	c, err := New(cfg, zerolog.New(f.log).Level(zerolog.DebugLevel))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// check runs one check and returns the status.
func check(t *testing.T, c *Checker) Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c.Check(ctx)
	return c.Status()
}

func wantState(t *testing.T, st Status, state, msgPart string) {
	t.Helper()
	if st.State != state || !strings.Contains(st.Message, msgPart) {
		t.Fatalf("state %q, message %q; want %q with %q", st.State, st.Message, state, msgPart)
	}
}

// addUnsorted adds 25 daily backups, the newest added 23rd, and returns
// the newest's time.
func addUnsorted(t *testing.T, f *fixture, n int) time.Time {
	t.Helper()
	base := time.Date(2026, 11, 1, 22, 0, 0, 0, time.UTC)
	newest := base.Add(time.Duration(n-1) * 24 * time.Hour)
	for i := range n {
		day := i
		switch i {
		case n - 3:
			day = n - 1
		case n - 1:
			day = n - 3
		}
		if err := f.srv.AddBackup(f.id, base.Add(time.Duration(day)*24*time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	return newest
}

// TestNewestBackup: the time comes from the client record's lastBackupTime,
// with the record's lastCheckinTime; no other call is needed, and the
// token is sent for scope=write.
func TestNewestBackup(t *testing.T) {
	f := newFixture(t, 0)
	newest := addUnsorted(t, f, 25)
	checkin := time.Date(2026, 11, 27, 8, 30, 0, 0, time.UTC)
	f.srv.SetCheckin(f.id, checkin)
	c := f.checker(t, f.config())
	if st := c.Status(); st.State != StateUnknown {
		t.Fatalf("state before any check: %q", st.State)
	}
	st := check(t, c)
	wantState(t, st, StateOK, "")
	if !st.LastBackup.Equal(newest) || st.BackupSource != SourceClient || !st.LastCheckin.Equal(checkin) {
		t.Errorf("last backup %s from %q, checkin %s; want %s from the client record, %s", st.LastBackup, st.BackupSource, st.LastCheckin, newest, checkin)
	}
	if f.srv.LastScope() != "write" {
		t.Errorf("token requested for scope %q, want write", f.srv.LastScope())
	}
	// A second check reuses the token.
	later := newest.Add(time.Hour)
	f.srv.AddBackup(f.id, later)
	st = check(t, c)
	if !st.LastBackup.Equal(later) || st.Checks != 2 || st.Failures != 0 {
		t.Errorf("second check: %+v", st)
	}
	if n := f.srv.Counts(); n.Tokens != 1 || n.Unauthorized != 0 || n.Statistics != 0 || n.BackupLists != 0 || n.Sorted != 0 {
		t.Errorf("server counts %+v, want 1 token, no 401, no other call", n)
	}
}

// TestFallbacks: without times in the client record, the statistics give
// the time; without those either, the newest of every page of the backups
// list, never asking the server to sort.
func TestFallbacks(t *testing.T) {
	for _, tt := range []struct {
		name   string
		cfg    avrest.Config
		source string
	}{
		{"statistics", avrest.Config{NoClientTimes: true}, SourceStatistics},
		{"backups list", avrest.Config{NoClientTimes: true, NoStatistics: true}, SourceBackups},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixtureWith(t, tt.cfg)
			// 250 backups: three pages of 100, the newest on the third.
			newest := addUnsorted(t, f, 250)
			st := check(t, f.checker(t, f.config()))
			wantState(t, st, StateOK, "")
			if !st.LastBackup.Equal(newest) || st.BackupSource != tt.source || !st.LastCheckin.IsZero() {
				t.Errorf("last backup %s from %q, checkin %s; want %s from %s", st.LastBackup, st.BackupSource, st.LastCheckin, newest, tt.source)
			}
			if n := f.srv.Counts(); n.Sorted != 0 {
				t.Errorf("%d calls asked the server to sort", n.Sorted)
			}
		})
	}
}

// TestScope: the token request carries the configured scope, write by
// default; a scope the OAuth client lacks is refused as unauthorized.
func TestScope(t *testing.T) {
	f := newFixtureWith(t, avrest.Config{Scopes: []string{"read"}})
	c := f.checker(t, f.config())
	wantState(t, check(t, c), StateUnauthorized, "400 Bad Request (invalid_scope)")
	if f.srv.LastScope() != "write" {
		t.Errorf("scope %q, want write", f.srv.LastScope())
	}
	cfg := f.config()
	cfg.Scope = "read"
	wantState(t, check(t, f.checker(t, cfg)), StateOK, "")
	if f.srv.LastScope() != "read" {
		t.Errorf("scope %q, want read", f.srv.LastScope())
	}
}

// TestClientPages: a server that does not filter is read page by page
// until the exact name in the exact domain turns up: here on the third
// page of 100, after names that only start like it.
func TestClientPages(t *testing.T) {
	f := newFixtureWith(t, avrest.Config{NoFilter: true})
	const late = clientName + "-late"
	for i := range 230 {
		f.srv.AddClient(domain, late+strconv.Itoa(i))
	}
	id := f.srv.AddClient(domain, late)
	when := time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC)
	f.srv.AddBackup(id, when)
	cfg := f.config()
	cfg.Client = late
	st := check(t, f.checker(t, cfg))
	wantState(t, st, StateOK, "")
	if !st.LastBackup.Equal(when) {
		t.Errorf("last backup %s, want %s", st.LastBackup, when)
	}
	cfg.Client = clientName + "-absent"
	wantState(t, check(t, f.checker(t, cfg)), StateClientNotFound, clientName+"-absent")
}

func TestNoBackupYet(t *testing.T) {
	f := newFixture(t, 0)
	st := check(t, f.checker(t, f.config()))
	wantState(t, st, StateOK, "no backup yet")
	if !st.LastBackup.IsZero() || st.BackupSource != "" {
		t.Errorf("last backup %s from %q, want none", st.LastBackup, st.BackupSource)
	}
	// Every source was asked before concluding.
	if n := f.srv.Counts(); n.Statistics != 1 || n.BackupLists != 1 {
		t.Errorf("counts %+v, want one statistics call and one list", n)
	}
}

func TestClientNotFound(t *testing.T) {
	f := newFixture(t, 0)
	cfg := f.config()
	cfg.Client = "shop-db" // a prefix of existing names is not a match
	st := check(t, f.checker(t, cfg))
	wantState(t, st, StateClientNotFound, `no client "shop-db" in domain "/clients"`)
}

func TestBadCredentials(t *testing.T) {
	f := newFixture(t, 0)
	f.srv.AddBackup(f.id, time.Now())
	f.writeCreds(t, "wrong-password")
	c := f.checker(t, f.config())
	wantState(t, check(t, c), StateUnauthorized, "400 Bad Request (invalid_grant)")

	// The file is read again at the next token request.
	f.writeCreds(t, password)
	wantState(t, check(t, c), StateOK, "")

	// The account is locked: the token expires and the server refuses a new one.
	f.srv.SetBadCredentials(true)
	f.srv.ExpireTokens()
	st := check(t, c)
	wantState(t, st, StateUnauthorized, "401 Unauthorized (invalid_client)")
	if st.LastBackup.IsZero() {
		t.Error("last backup forgotten after a failure")
	}
	if st.Failures != 2 || st.Checks != 3 {
		t.Errorf("checks %d, failures %d; want 3, 2", st.Checks, st.Failures)
	}
}

func TestMissingCredentialsFile(t *testing.T) {
	f := newFixture(t, 0)
	cfg := f.config()
	cfg.CredentialsFile = filepath.Join(t.TempDir(), "absent")
	wantState(t, check(t, f.checker(t, cfg)), StateError, "rest credentials")
}

// TestTokenExpiry expires every token on the server between two checks: the
// 401 gets exactly one new token and the check succeeds.
func TestTokenExpiry(t *testing.T) {
	f := newFixture(t, 0)
	first := time.Date(2026, 11, 20, 1, 0, 0, 0, time.UTC)
	f.srv.AddBackup(f.id, first)
	c := f.checker(t, f.config())
	wantState(t, check(t, c), StateOK, "")

	f.srv.ExpireTokens()
	second := first.Add(24 * time.Hour)
	f.srv.AddBackup(f.id, second)
	st := check(t, c)
	wantState(t, st, StateOK, "")
	if !st.LastBackup.Equal(second) {
		t.Errorf("last backup %s, want %s", st.LastBackup, second)
	}
	if n := f.srv.Counts(); n.Tokens != 2 || n.Unauthorized != 1 {
		t.Errorf("server counts %+v, want 2 tokens and one 401", n)
	}
}

// TestTokenRenewedBeforeItEnds: at 90% of its lifetime the token is
// replaced before use, so the server never has to refuse it.
func TestTokenRenewedBeforeItEnds(t *testing.T) {
	f := newFixture(t, 30*time.Minute)
	c := f.checker(t, f.config())
	var clock time.Time
	c.now = func() time.Time { return clock }
	start := time.Now()
	for _, tc := range []struct {
		at     time.Duration
		tokens int
	}{
		{0, 1},
		{26 * time.Minute, 1},
		{28 * time.Minute, 2},
		{29 * time.Minute, 2},
	} {
		clock = start.Add(tc.at)
		wantState(t, check(t, c), StateOK, "")
		if n := f.srv.Counts(); n.Tokens != tc.tokens || n.Unauthorized != 0 {
			t.Errorf("at +%s: server counts %+v, want %d tokens and no 401", tc.at, n, tc.tokens)
		}
	}
}

// TestTokenRefusedTwice: a fresh token that is refused too ends the check
// as unauthorized instead of looping.
func TestTokenRefusedTwice(t *testing.T) {
	f := newFixture(t, time.Nanosecond) // every token is dead on arrival
	st := check(t, f.checker(t, f.config()))
	wantState(t, st, StateUnauthorized, "401 Unauthorized")
	if n := f.srv.Counts(); n.Tokens != 2 || n.Unauthorized != 2 {
		t.Errorf("server counts %+v, want 2 tokens and two 401s", n)
	}
}

func TestServerDownThenUp(t *testing.T) {
	f := newFixture(t, 0)
	at := time.Date(2026, 11, 22, 3, 0, 0, 0, time.UTC)
	f.srv.AddBackup(f.id, at)
	c := f.checker(t, f.config())
	wantState(t, check(t, c), StateOK, "")

	if err := f.srv.SetDown(true); err != nil {
		t.Fatal(err)
	}
	retried := f.log.on("rest request failed, retrying")
	st := check(t, c)
	wantState(t, st, StateUnreachable, "connection refused")
	select {
	case <-retried:
	default:
		t.Error("no retry was logged")
	}
	if !st.LastBackup.Equal(at) {
		t.Errorf("last backup %s kept while down, want %s", st.LastBackup, at)
	}

	if err := f.srv.SetDown(false); err != nil {
		t.Fatal(err)
	}
	wantState(t, check(t, c), StateOK, "")
}

func TestServerErrors(t *testing.T) {
	f := newFixture(t, 0)
	c := f.checker(t, f.config())
	f.srv.SetFailure(503)
	wantState(t, check(t, c), StateError, "503 Service Unavailable")
	f.srv.SetFailure(403)
	wantState(t, check(t, c), StateUnauthorized, "403 Forbidden")
	f.srv.SetFailure(0)
	wantState(t, check(t, c), StateOK, "")
}

// TestUnknownCA: without the server's CA (system roots, or another CA) the
// handshake is refused at once, without retries, and nothing is sent.
func TestUnknownCA(t *testing.T) {
	f := newFixture(t, 0)
	other, err := avrest.Start(avrest.Config{})
	if err != nil {
		t.Fatal(err)
	}
	other.Close()
	otherCA := filepath.Join(t.TempDir(), "other-ca.pem")
	if err := os.WriteFile(otherCA, other.CAPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	for name, ca := range map[string]string{"system roots": "", "another CA": otherCA} {
		t.Run(name, func(t *testing.T) {
			cfg := f.config()
			cfg.CAFile = ca
			cfg.RetryWaitMin, cfg.RetryWaitMax = time.Hour, time.Hour // a retry would hang the test
			st := check(t, f.checker(t, cfg))
			wantState(t, st, StateError, "server certificate not trusted")
		})
	}
	if n := f.srv.Counts(); n != (avrest.Counts{}) {
		t.Errorf("server counts %+v: something got through", n)
	}
}

// TestRunPollsAndStops runs the poll loop, waits for checks to happen, and
// checks that cancellation ends Run even in the middle of a long backoff.
func TestRunPollsAndStops(t *testing.T) {
	f := newFixture(t, 0)
	f.srv.AddBackup(f.id, time.Now())
	cfg := f.config()
	cfg.Interval = 10 * time.Millisecond
	c := f.checker(t, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	deadline := time.Now().Add(20 * time.Second)
	for c.Status().Checks < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("fewer than 3 checks in 20s: %+v", c.Status())
		}
		time.Sleep(5 * time.Millisecond) // no event to wait on: bounded poll
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}

	// Down, with an hour of backoff: cancel while it waits.
	f.srv.SetDown(true)
	cfg.RetryWaitMin, cfg.RetryWaitMax = time.Hour, time.Hour
	c = f.checker(t, cfg)
	retrying := f.log.on("rest request failed, retrying")
	ctx, cancel = context.WithCancel(context.Background())
	go func() { done <- c.Run(ctx) }()
	<-retrying
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return during a backoff after cancel")
	}
	if st := c.Status(); st.Checks != 0 || st.State != StateUnknown {
		t.Errorf("a cancelled check was recorded: %+v", st)
	}
}

// TestSecretsNeverShow drives the checker through every path and looks for
// the secrets and tokens in its log and status.
func TestSecretsNeverShow(t *testing.T) {
	f := newFixture(t, 0)
	f.srv.AddBackup(f.id, time.Now())
	c := f.checker(t, f.config())
	var tokens []string
	var statuses []string
	record := func() {
		tokens = append(tokens, f.srv.LastToken())
		b, _ := json.Marshal(c.Status())
		statuses = append(statuses, string(b))
	}
	check(t, c)
	record()
	f.srv.ExpireTokens()
	check(t, c)
	record()
	f.writeCreds(t, "Wr0ng-"+password)
	f.srv.ExpireTokens()
	check(t, c)
	record()
	f.srv.SetDown(true)
	check(t, c)
	record()

	text := f.log.String() + strings.Join(statuses, "\n")
	secrets := []string{clientSecret, password, "Wr0ng-" + password}
	for _, tok := range tokens {
		if tok != "" {
			secrets = append(secrets, tok)
		}
	}
	if len(secrets) < 4 {
		t.Fatalf("too few tokens issued: %v", tokens)
	}
	for _, s := range secrets {
		if strings.Contains(text, s) {
			t.Errorf("secret %.4s... found in logs or status", s)
		}
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.pem")
	os.WriteFile(notPEM, []byte("not a certificate"), 0o644)
	good := Config{URL: "https://mcs:443", CredentialsFile: "/c", Domain: "/clients", Client: "x"}
	for name, mod := range map[string]func(*Config){
		"no url":          func(c *Config) { c.URL = "" },
		"plain http":      func(c *Config) { c.URL = "http://mcs" },
		"no host":         func(c *Config) { c.URL = "https:///api" },
		"user in url":     func(c *Config) { c.URL = "https://admin:" + password + "@mcs" },
		"no credentials":  func(c *Config) { c.CredentialsFile = "" },
		"no domain":       func(c *Config) { c.Domain = "" },
		"no client":       func(c *Config) { c.Client = "" },
		"negative":        func(c *Config) { c.Interval = -time.Second },
		"absent CA file":  func(c *Config) { c.CAFile = filepath.Join(dir, "absent") },
		"CA file not PEM": func(c *Config) { c.CAFile = notPEM },
	} {
		cfg := good
		mod(&cfg)
		_, err := New(cfg, zerolog.Nop())
		if err == nil {
			t.Errorf("%s: New accepted %+v", name, cfg)
		} else if strings.Contains(err.Error(), password) {
			t.Errorf("%s: error shows the password: %v", name, err)
		}
	}
	if _, err := New(good, zerolog.Nop()); err != nil {
		t.Errorf("good config refused: %v", err)
	}
}

func TestReadCredentials(t *testing.T) {
	const secret = "v3ry-s3cret"
	for name, tc := range map[string]struct {
		content string
		want    credentials
		errPart string
	}{
		"plain": {content: "client_id=a\nclient_secret=" + secret + "\nusername=u\npassword=p=q\n",
			want: credentials{"a", secret, "u", "p=q"}},
		"comments, blanks, CRLF, spaced keys": {content: "# x\r\n\r\n client_id =a\r\nclient_secret=" + secret + "\r\n  # y\nusername=u\npassword= p \n",
			want: credentials{"a", secret, "u", " p "}},
		"missing":     {content: "client_id=a\nclient_secret=" + secret + "\n", errPart: "missing username, password"},
		"empty value": {content: "client_id=\nclient_secret=" + secret + "\nusername=u\npassword=p\n", errPart: "missing client_id"},
		"no equals":   {content: "client_id=a\n" + secret + "\n", errPart: "line 2: want KEY=VALUE"},
		"unknown key": {content: "token=" + secret + "\n", errPart: `line 1: unknown key "token"`},
		"json":        {content: `{"client_secret":"` + secret + `"}`, errPart: "line 1: want KEY=VALUE"},
		"empty file":  {content: "", errPart: "missing client_id, client_secret, username, password"},
	} {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "credentials")
			if err := os.WriteFile(p, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := readCredentials(p)
			wantCredentials(t, got, err, tc.want, tc.errPart, secret)
		})
	}
}

// wantCredentials checks what readCredentials returned: the error with
// errPart, which must not show secret, or else want.
func wantCredentials(t *testing.T, got credentials, err error, want credentials, errPart, secret string) {
	t.Helper()
	if errPart != "" {
		if err == nil || !strings.Contains(err.Error(), errPart) {
			t.Fatalf("error %v, want one with %q", err, errPart)
		}
		if strings.Contains(err.Error(), secret) {
			t.Fatalf("error shows the secret: %v", err)
		}
		return
	}
	if err != nil || got != want {
		t.Fatalf("got %+v, %v; want %+v", got, err, want)
	}
}

func FuzzReadCredentials(f *testing.F) {
	f.Add("client_id=a\nclient_secret=b\nusername=u\npassword=p\n")
	f.Add("# c\r\n=\n==\nclient_id\n")
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, content string) {
		p := filepath.Join(dir, "credentials")
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		cr, err := readCredentials(p)
		if err == nil && (cr.clientID == "" || cr.clientSecret == "" || cr.username == "" || cr.password == "") {
			t.Fatalf("accepted incomplete credentials from %q", content)
		}
		if err != nil && cr != (credentials{}) {
			t.Fatalf("error %v with partial credentials", err)
		}
	})
}

func TestParseTime(t *testing.T) {
	want := time.Date(2026, 11, 23, 20, 15, 30, 0, time.UTC)
	for raw, ok := range map[string]bool{
		`"2026-11-23T20:15:30Z"`:          true,
		`"2026-11-23T21:15:30+01:00"`:     true,
		`"2026-11-23T20:15:30.000+0000"`:  true,
		`"2026-11-23T22:15:30+0200"`:      true,
		`1795464930000`:                   true,
		`"yesterday"`:                     false,
		`null`:                            false,
		`{"t":1}`:                         false,
		`"2026-11-23 20:15:30"`:           false,
		`"2026-11-23T20:15:30.000+00:00"`: true,
	} {
		got, err := parseTime(json.RawMessage(raw))
		if ok != (err == nil) || ok && !got.Equal(want) {
			t.Errorf("parseTime(%s) = %s, %v; want ok=%v", raw, got, err, ok)
		}
	}
}

// TestConcurrentChecks: a manual refresh while Run checks shares the token
// safely (run with -race).
func TestConcurrentChecks(t *testing.T) {
	f := newFixture(t, 0)
	f.srv.AddBackup(f.id, time.Now())
	c := f.checker(t, f.config())
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() { c.Check(context.Background()) })
	}
	wg.Wait()
	if st := c.Status(); st.State != StateOK || st.Checks != 4 {
		t.Errorf("after 4 concurrent checks: %+v", st)
	}
	if n := f.srv.Counts(); n.Tokens != 1 {
		t.Errorf("%d tokens for 4 serialised checks, want 1", n.Tokens)
	}
}
