package sidecar

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/avsidecar/avsidecar/internal/backupapi"
	"github.com/avsidecar/avsidecar/internal/testkit"
	"github.com/avsidecar/avsidecar/internal/testkit/avrest"
)

// TestBackupRedirectIsAFault: a REST server that answers the token
// request with a redirect to a plain-http host is a fault the operator
// sees in /readyz?verbose and in /v1/status (faults and backup.state),
// not a result; readiness does not fail on it, and the password is in
// none of them.
func TestBackupRedirectIsAFault(t *testing.T) {
	const password = "pa55-W0rd-redirect"
	srv, err := avrest.Start(avrest.Config{ClientID: "id", ClientSecret: "secret", Username: "user", Password: password})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	srv.AddClient("/clients", "nginx-0")
	srv.SetRedirect(true, 307, "http://127.0.0.2:9/steal")
	dir := t.TempDir()
	creds, ca := filepath.Join(dir, "credentials"), filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(creds, []byte("client_id=id\nclient_secret=secret\nusername=user\npassword="+password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(ca, srv.CAPEM(), 0o600); err != nil {
		t.Fatal(err)
	}

	w := newWorld(t)
	checker, err := backupapi.New(backupapi.Config{URL: srv.URL(), CredentialsFile: creds, CAFile: ca, Domain: "/clients", Client: "nginx-0"},
		zerolog.New(w.logs).With().Str("component", "backupapi").Logger())
	if err != nil {
		t.Fatal(err)
	}
	w.parts.backups = checker
	s, _, _ := w.start(t)
	w.logs.Wait(t, 0, "the backup check's first finding", 30*time.Second, testkit.Msg("backupapi", "backup check failed"))
	close(w.install)
	close(w.register.release)
	w.ev.wait(t, "agent started")

	want := "token request: answered 307 Temporary Redirect, a redirect to http://127.0.0.2:9/steal: redirects are not followed"
	expect(t, s, "/readyz?verbose", 200, "[!]backup-api: "+want)
	_, body := get(t, s, "/v1/status")
	var st Status
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatal(err)
	}
	if st.Backup == nil || st.Backup.State != backupapi.StateRedirected || !strings.Contains(st.Faults[sideBackupAPI], want) {
		t.Errorf("status: backup %+v, faults %q", st.Backup, st.Faults)
	}
	_, metrics := get(t, s, "/metrics")
	if !strings.Contains(metrics, `avsidecar_backup_api_state{state="redirected"} 1`) {
		t.Errorf("metrics lack the redirected state:\n%s", metrics)
	}
	if strings.Contains(body+metrics+w.logs.Raw(), password) {
		t.Error("the password shows in the status, the metrics or the log")
	}
}
