package integration

import (
	"net"
	"strings"
	"testing"
	"time"
)

// TestSideFaultsDegrade starts the sidecar with every side part broken: a
// browse root that does not exist, a REST CA file that is missing, and an
// SSH port another process holds. Each is a fault, logged and shown, and
// the backup client is installed, registered, running and ready anyway.
func TestSideFaultsDegrade(t *testing.T) {
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	w := newWorld(t, false,
		"AVSIDECAR_BROWSE_ROOTS=/no/such/root",
		"AVAMAR_REST_URL=https://127.0.0.1:1",
		"AVAMAR_REST_CA_FILE=/no/such/ca.pem",
		"AVSIDECAR_SSH_ADDR="+held.Addr().String())
	s := w.startPID1(t)
	s.eventually(t, "/readyz", 200, 60*time.Second)
	for _, component := range []string{"browse", "backupapi", "sshd"} {
		s.log.Wait(t, 0, component+" fault", 10*time.Second, func(m map[string]any) bool {
			return m["component"] == component && m["level"] == "error"
		})
	}
	_, verbose := s.get(t, "/readyz?verbose")
	for _, want := range []string{"[+]registered ok", "[+]agent ok", "[!]ssh: ", "[!]browse: AVSIDECAR_BROWSE_ROOTS", "[!]backup-api: ", "readyz check passed"} {
		if !strings.Contains(verbose, want) {
			t.Errorf("/readyz?verbose lacks %q:\n%s", want, verbose)
		}
	}
	faults, _ := s.status(t)["faults"].(map[string]any)
	for _, name := range []string{"ssh", "browse", "backup-api"} {
		if msg, _ := faults[name].(string); msg == "" {
			t.Errorf("status has no fault for %s: %v", name, faults)
		}
	}
	if code, body := s.get(t, "/v1/files?path=/no/such/root"); code != 503 || !strings.Contains(body, "browse unavailable") {
		t.Errorf("browse while broken: %d %s", code, body)
	}
	if n := w.mcs.Count("pod-0"); n != 1 {
		t.Errorf("MCS has %d registrations, want 1", n)
	}
}
