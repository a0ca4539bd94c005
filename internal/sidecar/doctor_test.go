package sidecar

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/avsidecar/avsidecar/internal/doctor"
	"github.com/avsidecar/avsidecar/internal/testkit"
)

// TestDoctor runs the real parts and reads the doctor where an operator
// does: a report within 10 s of the start, every check in /v1/status and
// /readyz?verbose, none failing readiness; then a symptom on the backup
// side (avagent killed, with the MCS down meanwhile) makes it look again,
// and it names the MCS.
func TestDoctor(t *testing.T) {
	s, _, m := realSidecar(t, testkit.RPMOptions{}, nil)
	start := time.Now() // Run started a moment ago
	st := eventually(t, s, "the doctor's first report", func(st Status) bool {
		return st.Doctor != nil && !st.Doctor.CheckedAt.IsZero()
	})
	t.Logf("first report %s after the start, on %q", st.Doctor.CheckedAt.Sub(start).Round(time.Millisecond), st.Doctor.Trigger)
	if took := st.Doctor.CheckedAt.Sub(start); took > 10*time.Second {
		t.Errorf("the first report came %s after the start", took)
	}
	st = eventually(t, s, "a report with avagent listening", func(st Status) bool {
		lp, _ := st.Doctor.Get(doctor.CheckListenPort)
		np, _ := st.Doctor.Get(doctor.CheckNodePort)
		reg, _ := st.Doctor.Get(doctor.CheckRegistration)
		return lp.State == doctor.StateOK && np.State == doctor.StateOK && reg.State == doctor.StateOK
	})
	for _, d := range st.Doctor.Diagnoses {
		t.Logf("%s: %s: %s", d.Check, d.State, d.Message)
	}
	for _, c := range []string{doctor.CheckNodeIP, doctor.CheckMCS} {
		if d, _ := st.Doctor.Get(c); d.State != doctor.StateOK {
			t.Errorf("%s: %+v", c, d)
		}
	}

	// What an operator reads: /v1/status and /readyz?verbose.
	get := func(path string) (int, string) {
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		return rec.Code, rec.Body.String()
	}
	_, body := get("/v1/status")
	var js struct {
		Doctor *doctor.Report `json:"doctor"`
	}
	if err := json.Unmarshal([]byte(body), &js); err != nil || js.Doctor == nil || len(js.Doctor.Diagnoses) != len(doctor.Checks) {
		t.Fatalf("/v1/status doctor: %v %.500s", err, body)
	}

	if err := m.SetDown(true); err != nil {
		t.Fatal(err)
	}
	pid := st.Agent.PID
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	st = eventually(t, s, "a report on the symptom", func(st Status) bool {
		return strings.Contains(st.Doctor.Trigger, "avagent exited")
	})
	mcs, _ := st.Doctor.Get(doctor.CheckMCS)
	t.Logf("avagent %d killed with the MCS down: report on %q: mcs %s: %s", pid, st.Doctor.Trigger, mcs.State, mcs.Message)
	if mcs.State != doctor.StateFault || !strings.Contains(mcs.Message, "unreachable from the pod") {
		t.Errorf("mcs: %+v", mcs)
	}
	code, readyz := get("/readyz?verbose")
	t.Logf("/readyz?verbose: %d\n%s", code, readyz)
	if !strings.Contains(readyz, "[!]mcs: the MCS at 127.0.0.1:") || !strings.Contains(readyz, "; fix: check that the MCS runs") {
		t.Errorf("/readyz?verbose does not name the MCS")
	}
	if err := m.SetDown(false); err != nil {
		t.Fatal(err)
	}
	// The doctor's findings never fail readiness: with the MCS back and
	// avagent restarted, /readyz is 200 whatever the doctor says of the
	// client name (it does not resolve on this host).
	eventually(t, s, "avagent back", func(st Status) bool { return st.Agent.Running && st.Agent.PID != pid })
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, readyz = get("/readyz?verbose")
		if code == http.StatusOK || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if code != http.StatusOK {
		t.Errorf("/readyz: %d\n%s", code, readyz)
	}
}
