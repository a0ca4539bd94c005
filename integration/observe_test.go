package integration

import (
	"crypto/ed25519"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"golang.org/x/crypto/ssh"

	"github.com/avsidecar/avsidecar/internal/testkit"
	"github.com/avsidecar/avsidecar/internal/testkit/avrest"
)

// scrape reads /metrics with the Prometheus text parser and returns each
// sample by its series name and labels ("name{k=v}").
func (s *sidecar) scrape(t *testing.T) map[string]float64 {
	t.Helper()
	code, body := s.get(t, "/metrics")
	if code != 200 {
		t.Fatalf("/metrics = %d", code)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	out := map[string]float64{}
	for name, f := range families {
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			key := name + "{" + strings.Join(labels, ",") + "}"
			switch {
			case m.Gauge != nil:
				out[key] = m.GetGauge().GetValue()
			case m.Counter != nil:
				out[key] = m.GetCounter().GetValue()
			}
		}
	}
	return out
}

// TestOperatorView runs the sidecar with the REST freshness check against
// the kit's REST stand-in (real TLS, its own CA): /metrics and /v1/status
// move with registration and agent restarts, publish the newest backup, and
// never show the REST password or client secret; the file browser and
// avsidecar ls speak the paths inside AVSIDECAR_ROOT.
func TestOperatorView(t *testing.T) {
	const secret, password = "s3cr3t-client-secret", "p4ssw0rd-of-backup-user"
	rest, err := avrest.Start(avrest.Config{ClientID: "avsidecar", ClientSecret: secret, Username: "backup", Password: password})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rest.Close)
	cid := rest.AddClient("/clients", "pod-0")
	backupAt := time.Now().Add(-3 * time.Hour).UTC().Truncate(time.Second)
	if err := rest.AddBackup(cid, backupAt); err != nil {
		t.Fatal(err)
	}

	w := newWorld(t, true,
		"AVAMAR_REST_URL="+rest.URL(),
		"AVAMAR_REST_CREDENTIALS_FILE=/etc/avsidecar/rest/credentials",
		"AVAMAR_REST_CA_FILE=/etc/avsidecar/rest/ca.pem",
		"AVAMAR_REST_INTERVAL=200ms",
		"AVSIDECAR_BROWSE_ROOTS=/srv/data",
		"AVSIDECAR_BROWSE_TOKEN_FILE=/etc/avsidecar/browse/token",
		"AVSIDECAR_SSH_ADDR=127.0.0.1:"+strconv.Itoa(testkit.FreePort(t)))
	// One usable key and one line the SSH server refuses.
	pub, _, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(w.root, "etc/avsidecar/ssh"), 0o755)
	os.WriteFile(filepath.Join(w.root, "etc/avsidecar/ssh/authorized_keys"),
		append([]byte("not a key\n"), ssh.MarshalAuthorizedKey(sshPub)...), 0o644)
	restDir := filepath.Join(w.root, "etc/avsidecar/rest")
	os.MkdirAll(restDir, 0o755)
	os.WriteFile(filepath.Join(restDir, "ca.pem"), rest.CAPEM(), 0o644)
	os.WriteFile(filepath.Join(restDir, "credentials"),
		[]byte("client_id=avsidecar\nclient_secret="+secret+"\nusername=backup\npassword="+password+"\n"), 0o600)
	os.MkdirAll(filepath.Join(w.root, "srv/data/db"), 0o755)
	os.WriteFile(filepath.Join(w.root, "srv/data/db/dump.sql"), []byte("--\n"), 0o644)
	os.MkdirAll(filepath.Join(w.root, "etc/avsidecar/browse"), 0o755)
	os.WriteFile(filepath.Join(w.root, "etc/avsidecar/browse/token"), []byte("browse-token\n"), 0o600)

	s := startSidecar(t, []string{w.bins.Avsidecar, "run"}, w.env, w.http)
	s.log.Wait(t, 0, "an unreachable registration attempt", 60*time.Second,
		msg("register", "registration failed", "outcome", "unreachable"))
	m := s.scrape(t)
	if m[`avsidecar_registration_attempts_total{outcome=unreachable}`] < 1 || m[`avsidecar_registered{}`] != 0 || m[`avsidecar_ready{}`] != 0 {
		t.Fatalf("before registration: %v", pick(m, "registration_attempts", "registered", "ready"))
	}

	w.mcs.SetDown(false)
	s.eventually(t, "/readyz", 200, 30*time.Second)
	m = s.scrape(t)
	if m[`avsidecar_registration_attempts_total{outcome=success}`] != 1 || m[`avsidecar_registered{}`] != 1 ||
		m[`avsidecar_agent_up{}`] != 1 || m[`avsidecar_phase{phase=running}`] != 1 || m[`avsidecar_ready{}`] != 1 {
		t.Fatalf("after registration: %v", pick(m, "registration_attempts", "registered", "agent_up", "phase", "ready"))
	}
	if m[`avsidecar_install_info{package=AvamarClient,release=101,version=7.5.101}`] != 1 {
		t.Fatalf("install info: %v", pick(m, "install_info"))
	}
	if m[`avsidecar_ssh_authorized_keys_refused{}`] != 1 {
		t.Errorf("refused authorized_keys lines: %v", pick(m, "ssh_"))
	}

	// The newest backup appears once the REST check has run.
	deadline := time.Now().Add(30 * time.Second)
	for m[`avsidecar_last_backup_timestamp_seconds{}`] != float64(backupAt.Unix()) {
		if time.Now().After(deadline) {
			t.Fatalf("no last backup time: %v", pick(m, "backup"))
		}
		time.Sleep(50 * time.Millisecond)
		m = s.scrape(t)
	}
	if m[`avsidecar_backup_api_state{state=ok}`] != 1 {
		t.Fatalf("backup state: %v", pick(m, "backup_api_state"))
	}

	// An agent restart moves the counter.
	for _, p := range descendants(s.cmd.Process.Pid) {
		if strings.Contains(p.Cmdline, "avagent.bin --daemon=false") {
			from := s.log.Mark()
			signal(t, p.PID, 9)
			s.log.Wait(t, from, "the agent's restart", 10*time.Second, msg("agent", "agent started"))
		}
	}
	if m = s.scrape(t); m[`avsidecar_agent_restarts_total{}`] != 1 {
		t.Fatalf("restarts: %v", pick(m, "restarts"))
	}

	// Secrets appear nowhere an operator looks.
	_, metrics := s.get(t, "/metrics")
	_, status := s.get(t, "/v1/status")
	logs := s.log.Raw()
	for where, text := range map[string]string{"metrics": metrics, "status": status, "logs": logs} {
		for _, sec := range []string{secret, password, rest.LastToken()} {
			if sec != "" && strings.Contains(text, sec) {
				t.Errorf("%s shows a secret", where)
			}
		}
	}
	if !strings.Contains(status, `"authorized_keys_refused": 1,`) {
		t.Errorf("status disagrees with /metrics on refused authorized_keys lines")
	}
	if !strings.Contains(status, `"last_backup": "`+backupAt.Format(time.RFC3339)) {
		t.Errorf("status lacks the last backup %s", backupAt.Format(time.RFC3339))
	}

	// Browse paths are the paths inside AVSIDECAR_ROOT; the host path of a
	// root is a path outside every root. With a token file, loopback
	// clients need the token too.
	if code, body := s.get(t, "/v1/files?path=/srv/data/db"); code != 401 {
		t.Errorf("/v1/files without the token from loopback: %d %s, want 401", code, body)
	}
	if code, body := s.getAuth(t, "/v1/files?path=/srv/data/db", "browse-token"); code != 200 || !strings.HasPrefix(body, `{"path":"/srv/data/db","entries":[{"name":"dump.sql",`) {
		t.Errorf("/v1/files?path=/srv/data/db: %d %s", code, body)
	}
	if code, body := s.getAuth(t, "/v1/walk?path=/srv/data", "browse-token"); code != 200 || !strings.Contains(body, `{"path":"/srv/data/db/dump.sql",`) || strings.Contains(body, w.root) {
		t.Errorf("/v1/walk?path=/srv/data: %d %s", code, body)
	}
	if code, body := s.getAuth(t, "/v1/files?path="+filepath.Join(w.root, "srv/data"), "browse-token"); code != 404 || body != `{"error":"not found"}`+"\n" {
		t.Errorf("the host path of the root: %d %s, want 404", code, body)
	}
	if roots := s.status(t)["browse"].(map[string]any)["roots"]; fmt.Sprint(roots) != "[/srv/data]" {
		t.Errorf("status shows the browse roots as %v, want [/srv/data]", roots)
	}
	ls := exec.Command(w.bins.Avsidecar, "ls", "-r", "/srv/data")
	ls.Env = w.env
	if out, err := ls.CombinedOutput(); err != nil || !strings.HasSuffix(string(out), " /srv/data/db/dump.sql\n") {
		t.Errorf("avsidecar ls -r /srv/data: %v\n%s", err, out)
	}
}

func pick(m map[string]float64, substr ...string) map[string]float64 {
	out := map[string]float64{}
	for k, v := range m {
		for _, s := range substr {
			if strings.Contains(k, s) {
				out[k] = v
			}
		}
	}
	return out
}
