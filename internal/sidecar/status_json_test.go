package sidecar

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/avsidecar/avsidecar/internal/install"
)

// TestInstallDurationInMilliseconds: /v1/status names the install's
// duration as the logs name durations, duration_ms, in whole milliseconds,
// and has no duration_ns; what it decodes into keeps the package.
func TestInstallDurationInMilliseconds(t *testing.T) {
	st := Status{Install: installStatus(&install.Result{Name: "AvamarClient", Version: "7.5.101", Duration: 1500*time.Millisecond + 42})}
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"duration_ms":1500`) || strings.Contains(string(b), "duration_ns") {
		t.Errorf("/v1/status install: %s", b)
	}
	var back Status
	if err := json.Unmarshal(b, &back); err != nil || back.Install == nil || back.Install.Name != "AvamarClient" || back.Install.DurationMS != 1500 {
		t.Errorf("decoded: %+v %v", back.Install, err)
	}
	if b, _ := json.Marshal(Status{Install: installStatus(nil)}); !strings.Contains(string(b), `"install":null`) {
		t.Errorf("not installed: %s", b)
	}
}
