package avrest

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// testClient trusts srv's CA only.
func testClient(t *testing.T, srv *Server) *http.Client {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(srv.CAPEM()) {
		t.Fatal("CAPEM holds no certificate")
	}
	return &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
	}
}

func start(t *testing.T, cfg Config) (*Server, *http.Client) {
	t.Helper()
	if cfg.ClientID == "" {
		cfg.ClientID, cfg.ClientSecret, cfg.Username, cfg.Password = "cid", "csecret", "user", "pw"
	}
	srv, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	return srv, testClient(t, srv)
}

// grant asks for a token with scope=write, as every public client does,
// and returns the status code and decoded answer.
func grant(t *testing.T, srv *Server, c *http.Client, id, secret, user, pw string) (int, map[string]any) {
	t.Helper()
	return grantScope(t, srv, c, id, secret, user, pw, "write")
}

func grantScope(t *testing.T, srv *Server, c *http.Client, id, secret, user, pw, scope string) (int, map[string]any) {
	t.Helper()
	form := url.Values{"grant_type": {"password"}, "username": {user}, "password": {pw}}
	if scope != "" {
		form.Set("scope", scope)
	}
	req, _ := http.NewRequest(http.MethodPost, srv.URL()+"/api/oauth/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(id, secret)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body
}

// call GETs path with a bearer token.
func call(t *testing.T, srv *Server, c *http.Client, tok, path string, out any) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, srv.URL()+path, nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if out != nil {
		json.NewDecoder(resp.Body).Decode(out)
	}
	return resp.StatusCode
}

func TestTokenEndpoint(t *testing.T) {
	srv, c := start(t, Config{})
	for _, tc := range []struct {
		id, secret, user, pw string
		code                 int
		oauthErr             string
	}{
		{"cid", "csecret", "user", "pw", 200, ""},
		{"cid", "wrong", "user", "pw", 401, "invalid_client"},
		{"cid", "csecret", "user", "wrong", 400, "invalid_grant"},
	} {
		code, body := grant(t, srv, c, tc.id, tc.secret, tc.user, tc.pw)
		if code != tc.code || tc.oauthErr != "" && body["error"] != tc.oauthErr {
			t.Errorf("grant(%s/%s, %s/%s) = %d %v; want %d %s", tc.id, tc.secret, tc.user, tc.pw, code, body, tc.code, tc.oauthErr)
		}
		if code == 200 && (body["access_token"] == "" || body["expires_in"] != float64(1800)) {
			t.Errorf("token answer %v", body)
		}
	}
	for _, tc := range []struct {
		scope, code, granted string
	}{
		{"write", "200", "write"},
		{"read write", "200", "read write"},
		{"", "200", "read write"},
		{"admin", "400", ""},
	} {
		code, body := grantScope(t, srv, c, "cid", "csecret", "user", "pw", tc.scope)
		if strconv.Itoa(code) != tc.code || code == 200 && body["scope"] != tc.granted || code == 400 && body["error"] != "invalid_scope" {
			t.Errorf("scope %q: %d %v; want %s granting %q", tc.scope, code, body, tc.code, tc.granted)
		}
		if srv.LastScope() != tc.scope {
			t.Errorf("LastScope %q, want %q", srv.LastScope(), tc.scope)
		}
	}
	srv.SetBadCredentials(true)
	if code, _ := grant(t, srv, c, "cid", "csecret", "user", "pw"); code != 401 {
		t.Errorf("bad-credentials switch: %d, want 401", code)
	}
	if n := srv.Counts(); n.Tokens != 4 || n.TokenRefusals != 4 {
		t.Errorf("counts %+v", n)
	}
}

func TestClientsAndBackups(t *testing.T) {
	srv, c := start(t, Config{})
	_, body := grant(t, srv, c, "cid", "csecret", "user", "pw")
	tok := body["access_token"].(string)
	id := srv.AddClient("/clients", "db-0")
	srv.AddClient("/clients", "db-1")
	srv.AddClient("/other", "db-0")
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, d := range []int{2, 0, 3, 1} {
		srv.AddBackup(id, t0.Add(time.Duration(d)*time.Hour))
	}
	if err := srv.AddBackup("nope", t0); err == nil {
		t.Error("AddBackup to an unknown client worked")
	}

	checkin := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	srv.SetCheckin(id, checkin)
	var clients struct {
		Content       []map[string]any `json:"content"`
		TotalElements int              `json:"totalElements"`
		TotalPages    int              `json:"totalPages"`
	}
	for _, q := range []string{"domain=/clients&filter=name==db-0", "domain=/clients&filter=name=='db-0'",
		"domain=/&recursive=true&filter=name==db-0&filter=domainFqdn!=/other"} {
		if code := call(t, srv, c, tok, "/api/v1/clients?"+q, &clients); code != 200 || len(clients.Content) != 1 ||
			clients.TotalPages != 1 || clients.Content[0]["id"] != id {
			t.Fatalf("clients?%s: %d %+v", q, code, clients)
		}
	}
	rec := clients.Content[0]
	if rec["domainFqdn"] != "/clients" || rec["lastBackupTime"] != "2026-01-01T03:00:00Z" || rec["lastCheckinTime"] != "2026-01-02T03:04:05Z" {
		t.Errorf("client record %v", rec)
	}
	if call(t, srv, c, tok, "/api/v1/clients?domain=/&recursive=true&size=2&page=1", &clients); len(clients.Content) != 1 || clients.TotalPages != 2 {
		t.Errorf("second page of all clients: %+v", clients)
	}
	call(t, srv, c, tok, "/api/v1/clients?domain=/clients&filter=name==db-1", &clients)
	if r := clients.Content[0]; r["lastBackupTime"] != nil || r["lastCheckinTime"] != nil {
		t.Errorf("a client never backed up: %v, want null times", r)
	}
	if _, ok := clients.Content[0]["lastBackupTime"]; !ok {
		t.Error("null times left out instead of null")
	}
	var stats map[string]any
	if code := call(t, srv, c, tok, "/api/v1/clients/"+id+"/backup-statistics", &stats); code != 200 ||
		stats["lastBackupTime"] != "2026-01-01T03:00:00Z" || stats["totalBackups"] != float64(4) {
		t.Errorf("statistics: %d %v", code, stats)
	}

	created := func(q string) string {
		var page struct {
			Content []backupJSON `json:"content"`
		}
		if code := call(t, srv, c, tok, "/api/v1/clients/"+id+"/backups"+q, &page); code != 200 {
			t.Fatalf("backups%s: %d", q, code)
		}
		var out []string
		for _, b := range page.Content {
			out = append(out, b.CreatedTime[11:13])
		}
		return strings.Join(out, ",")
	}
	// No sort is honoured: the order is the order of the backups.
	for q, want := range map[string]string{
		"":                              "02,00,03,01",
		"?sort=createdTime,desc":        "02,00,03,01",
		"?sort=createdTime,desc&size=1": "02",
		"?size=3&page=1":                "01",
	} {
		if got := created(q); got != want {
			t.Errorf("backups%s: %s, want %s", q, got, want)
		}
	}
	if n := srv.Counts(); n.Sorted != 2 || n.Statistics != 1 || n.BackupLists != 4 {
		t.Errorf("counts %+v", n)
	}
	if code := call(t, srv, c, "not-a-token", "/api/v1/clients", nil); code != 401 {
		t.Errorf("bad token: %d, want 401", code)
	}
	srv.SetFailure(503)
	if code := call(t, srv, c, tok, "/api/v1/clients", nil); code != 503 {
		t.Errorf("failure switch: %d, want 503", code)
	}
	srv.SetFailure(0)
	srv.ExpireTokens()
	if code := call(t, srv, c, tok, "/api/v1/clients", nil); code != 401 {
		t.Errorf("expired token: %d, want 401", code)
	}
}

// TestShortTokenLifetime: tokens die by themselves after TokenTTL.
// TestWithoutTimesOrStatistics: the switches a client of the API needs to
// reach its fallbacks.
func TestWithoutTimesOrStatistics(t *testing.T) {
	srv, c := start(t, Config{NoClientTimes: true, NoStatistics: true})
	_, body := grant(t, srv, c, "cid", "csecret", "user", "pw")
	tok := body["access_token"].(string)
	id := srv.AddClient("/clients", "db-0")
	srv.AddBackup(id, time.Now())
	var clients struct {
		Content []map[string]any `json:"content"`
	}
	call(t, srv, c, tok, "/api/v1/clients?domain=/clients", &clients)
	if _, ok := clients.Content[0]["lastBackupTime"]; ok {
		t.Errorf("record %v has lastBackupTime", clients.Content[0])
	}
	if code := call(t, srv, c, tok, "/api/v1/clients/"+id+"/backup-statistics", nil); code != 404 {
		t.Errorf("statistics: %d, want 404", code)
	}
}

func TestShortTokenLifetime(t *testing.T) {
	srv, c := start(t, Config{TokenTTL: 50 * time.Millisecond})
	// The server issues the token while grant runs: taken before the
	// call, issued is no later than that, so a refusal sooner than 50 ms
	// after it is a token refused too early.
	issued := time.Now()
	_, body := grant(t, srv, c, "cid", "csecret", "user", "pw")
	tok := body["access_token"].(string)
	code := call(t, srv, c, tok, "/api/v1/clients", nil)
	if code != 200 && time.Since(issued) < 50*time.Millisecond {
		t.Fatalf("fresh token refused: %d", code)
	}
	deadline := time.Now().Add(10 * time.Second)
	for code == 200 {
		if time.Now().After(deadline) {
			t.Fatal("token still valid after 10s")
		}
		time.Sleep(10 * time.Millisecond) // time itself is the event: bounded poll
		code = call(t, srv, c, tok, "/api/v1/clients", nil)
	}
	if code != 401 || time.Since(issued) < 50*time.Millisecond {
		t.Fatalf("code %d after %s", code, time.Since(issued))
	}
}

func TestDownAndUp(t *testing.T) {
	srv, c := start(t, Config{})
	if err := srv.SetDown(true); err != nil {
		t.Fatal(err)
	}
	_, err := c.Get(srv.URL() + "/api/v1/clients")
	// A refused connection, or one reset while the kernel still held it in
	// the closed listener's queue: either way nothing answers.
	if !errors.Is(err, syscall.ECONNREFUSED) && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("down: %v, want connection refused", err)
	}
	if err := srv.SetDown(false); err != nil {
		t.Fatal(err)
	}
	if code, _ := grant(t, srv, c, "cid", "csecret", "user", "pw"); code != 200 {
		t.Fatalf("up again: %d", code)
	}
}

func TestUnknownCARefused(t *testing.T) {
	srv, _ := start(t, Config{})
	other, err := Start(Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	_, err = testClient(t, other).Get(srv.URL() + "/api/v1/clients")
	var unknown x509.UnknownAuthorityError
	if !errors.As(err, &unknown) {
		t.Fatalf("another CA: %v, want unknown authority", err)
	}
}

func TestPlain(t *testing.T) {
	srv, err := Start(Config{Plain: true})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if !strings.HasPrefix(srv.URL(), "http://") || srv.CAPEM() != nil {
		t.Fatalf("plain server: %s", srv.URL())
	}
	resp, err := http.Get(srv.URL() + "/api/v1/clients")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("plain call without token: %d", resp.StatusCode)
	}
}
