package sidecar

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/avsidecar/avsidecar/internal/hooks"
	"github.com/avsidecar/avsidecar/internal/install"
	"github.com/avsidecar/avsidecar/internal/millis"
	"github.com/avsidecar/avsidecar/internal/supervise"
)

// TestDurationsInMilliseconds: /v1/status names every duration as the
// logs name durations, NAME_ms, in whole milliseconds, and has no _ns
// field; what it decodes into keeps the values.
func TestDurationsInMilliseconds(t *testing.T) {
	st := Status{
		Install: &install.Result{Name: "AvamarClient", Version: "7.5.101", Duration: millis.Duration(1500*time.Millisecond + 42)},
		Agent:   supervise.Status{LastRun: millis.Duration(3 * time.Second), Backoff: millis.Duration(time.Second)},
		Hooks: &hooks.Status{Runs: []hooks.PhaseRun{{Phase: "pre", Duration: millis.Duration(250 * time.Millisecond),
			Hooks: []hooks.Result{{Name: "dump", Duration: millis.Duration(200 * time.Millisecond)}}}}},
	}
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"duration_ms":1500`, `"last_run_ms":3000`, `"backoff_ms":1000`, `"duration_ms":250`, `"duration_ms":200`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("/v1/status lacks %s: %s", want, b)
		}
	}
	if ns := regexp.MustCompile(`"[a-z_]*_ns"`).FindAllString(string(b), -1); ns != nil {
		t.Errorf("/v1/status has fields in nanoseconds %v: %s", ns, b)
	}
	var back Status
	if err := json.Unmarshal(b, &back); err != nil || back.Install == nil || back.Install.Name != "AvamarClient" || back.Install.Duration.D() != 1500*time.Millisecond {
		t.Errorf("decoded: %+v %v", back.Install, err)
	}
	if b, _ := json.Marshal(Status{}); !strings.Contains(string(b), `"install":null`) {
		t.Errorf("not installed: %s", b)
	}
}
