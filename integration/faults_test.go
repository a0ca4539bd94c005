package integration

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/avsidecar/avsidecar/internal/testkit"
)

// TestSideFaultsDegrade starts the sidecar with every side part broken: a
// browse root that does not exist, a REST CA file that is missing, and an
// SSH port another process holds. Each is a fault, logged and shown, and
// the backup client is installed, registered, running and ready anyway. A
// hooks file that does not exist (a ConfigMap without hooks.json, mounted
// as optional) is no hooks, said in the status, and no fault.
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
		"AVSIDECAR_SSH_ADDR="+held.Addr().String(),
		"AVSIDECAR_HOOKS_FILE=/no/such/hooks.json")
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
	if _, ok := faults["hooks"]; ok {
		t.Errorf("an absent hooks file is a fault: %v", faults)
	}
	if hooks, _ := s.status(t)["hooks"].(map[string]any); hooks["file_absent"] != true {
		t.Errorf("status hooks %v, want file_absent", hooks)
	}
	if code, body := s.get(t, "/v1/files?path=/no/such/root"); code != 503 || !strings.Contains(body, "browse unavailable") {
		t.Errorf("browse while broken: %d %s", code, body)
	}
	if n := w.mcs.Count("pod-0"); n != 1 {
		t.Errorf("MCS has %d registrations, want 1", n)
	}
}

// TestDamagedHostKeys: a truncated ed25519 host key and an empty RSA one
// (a disk filled during a write) are set aside and made again, and SSH
// serves; a key that cannot be read at all (a directory in its place) is
// a fault: SSH off, the backup client ready anyway. Before, both exited 1
// before the install, and the pod crash-looped.
func TestDamagedHostKeys(t *testing.T) {
	for _, tc := range []struct {
		name    string
		damage  func(t *testing.T, stateDir string)
		serving bool
	}{
		{"truncated and empty", func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, "ssh_host_ed25519_key"), "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUA\n")
			writeFile(t, filepath.Join(dir, "ssh_host_rsa_key"), "")
		}, true},
		{"unreadable", func(t *testing.T, dir string) {
			if err := os.MkdirAll(filepath.Join(dir, "ssh_host_ed25519_key"), 0o700); err != nil {
				t.Fatal(err)
			}
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t, false, "AVSIDECAR_SSH_ADDR=127.0.0.1:"+strconv.Itoa(testkit.FreePort(t)))
			tc.damage(t, filepath.Join(w.root, "usr/local/avamar/var/avsidecar"))
			s := w.startPID1(t)
			s.eventually(t, "/readyz", 200, 60*time.Second)
			ssh, _ := s.status(t)["ssh"].(map[string]any)
			if tc.serving {
				if ssh["state"] != "serving" || ssh["host_keys_replaced"] != float64(2) {
					t.Fatalf("ssh status after damaged keys: %v", ssh)
				}
				return
			}
			if ssh["state"] != "failed" {
				t.Fatalf("ssh status with an unreadable key: %v", ssh)
			}
			if _, verbose := s.get(t, "/readyz?verbose"); !strings.Contains(verbose, "[!]ssh: ") {
				t.Errorf("/readyz?verbose does not show the SSH fault:\n%s", verbose)
			}
		})
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
