package millis

import (
	"encoding/json"
	"testing"
	"time"
)

func TestRoundTrip(t *testing.T) {
	for _, tt := range []struct {
		d    time.Duration
		json string
		back time.Duration
	}{
		{0, "0", 0},
		{1500 * time.Microsecond, "1", time.Millisecond},
		{90 * time.Second, "90000", 90 * time.Second},
		{-2 * time.Millisecond, "-2", -2 * time.Millisecond},
	} {
		b, err := json.Marshal(Duration(tt.d))
		if err != nil || string(b) != tt.json {
			t.Errorf("Marshal(%s) = %s, %v; want %s", tt.d, b, err, tt.json)
		}
		var got Duration
		if err := json.Unmarshal(b, &got); err != nil || got.D() != tt.back {
			t.Errorf("Unmarshal(%s) = %s, %v; want %s", b, got.D(), err, tt.back)
		}
	}
	var d Duration
	if err := json.Unmarshal([]byte(`"1s"`), &d); err == nil {
		t.Error("text accepted as milliseconds")
	}
}
