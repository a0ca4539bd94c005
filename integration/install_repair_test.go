package integration

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestInstallRepairNewContainer: a new container on the old volume lacks
// /etc/init.d/avagent (it lived in the image layer). The second start
// restores it from the RPM without installing again, and status says so.
func TestInstallRepairNewContainer(t *testing.T) {
	w := newWorld(t, false)
	s := w.startPID1(t)
	s.eventually(t, "/readyz", 200, 30*time.Second)
	signal(t, s.init(t), syscall.SIGTERM)
	if code := s.exitCode(t, 15*time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0", code)
	}
	initScript := filepath.Join(w.root, "etc/init.d/avagent")
	want := mustRead(t, initScript)
	wantSt, err := os.Stat(initScript)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(initScript); err != nil {
		t.Fatal(err)
	}

	s2 := w.startPID1(t)
	s2.log.Wait(t, 0, "the restore", 30*time.Second, msg("install", "restored missing file"))
	s2.eventually(t, "/readyz", 200, 30*time.Second)
	inst := s2.status(t)["install"].(map[string]any)
	if inst["changed"] != false || inst["restored"] != float64(1) {
		t.Errorf("second start: install status %v, want changed=false restored=1", inst)
	}
	if got := mustRead(t, initScript); got != want {
		t.Errorf("restored init script differs:\n%s\nwant:\n%s", got, want)
	}
	if st, err := os.Stat(initScript); err != nil || st.Mode() != wantSt.Mode() || !st.ModTime().Equal(wantSt.ModTime()) {
		t.Errorf("restored init script: %v, %v; want mode %v mtime %v", st, err, wantSt.Mode(), wantSt.ModTime())
	}
	signal(t, s2.init(t), syscall.SIGTERM)
	if code := s2.exitCode(t, 15*time.Second); code != 0 {
		t.Fatalf("second run exit code %d", code)
	}
}
