package main

import (
	"testing"

	"github.com/avsidecar/avsidecar/internal/sidecar"
)

// TestIdleTuning: the runtime's own variables, when the operator sets
// them, win over the sidecar's idle tuning.
func TestIdleTuning(t *testing.T) {
	with := func(change func(*sidecar.Tuning)) sidecar.Tuning {
		tu := sidecar.IdleTuning
		change(&tu)
		return tu
	}
	for _, tc := range []struct {
		env  map[string]string
		want sidecar.Tuning
	}{
		{nil, sidecar.IdleTuning},
		{map[string]string{"GOGC": "100"}, with(func(tu *sidecar.Tuning) { tu.GCPercent = 0 })},
		{map[string]string{"GOMAXPROCS": "8"}, with(func(tu *sidecar.Tuning) { tu.MaxProcs = 0 })},
		{map[string]string{"GOGC": "off", "GOMAXPROCS": "1"}, with(func(tu *sidecar.Tuning) { tu.GCPercent, tu.MaxProcs = 0, 0 })},
	} {
		if got := idleTuning(func(k string) string { return tc.env[k] }); got != tc.want {
			t.Errorf("with %v: %+v, want %+v", tc.env, got, tc.want)
		}
	}
	if !sidecar.IdleTuning.ReleaseText || sidecar.IdleTuning.GCPercent == 0 || sidecar.IdleTuning.MaxProcs == 0 {
		t.Errorf("IdleTuning %+v leaves something as it is", sidecar.IdleTuning)
	}
}
