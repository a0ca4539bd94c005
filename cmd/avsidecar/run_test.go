package main

import (
	"testing"

	"github.com/avsidecar/avsidecar/internal/sidecar"
)

// TestIdleTuning: the runtime's own variables, when the operator sets
// them, win over the sidecar's idle tuning.
func TestIdleTuning(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		want sidecar.Tuning
	}{
		{nil, sidecar.IdleTuning},
		{map[string]string{"GOGC": "100"}, sidecar.Tuning{MaxProcs: sidecar.IdleTuning.MaxProcs}},
		{map[string]string{"GOMAXPROCS": "8"}, sidecar.Tuning{GCPercent: sidecar.IdleTuning.GCPercent}},
		{map[string]string{"GOGC": "off", "GOMAXPROCS": "1"}, sidecar.Tuning{}},
	} {
		if got := idleTuning(func(k string) string { return tc.env[k] }); got != tc.want {
			t.Errorf("with %v: %+v, want %+v", tc.env, got, tc.want)
		}
	}
}
