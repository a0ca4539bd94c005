package backoff

import (
	"context"
	"testing"
	"time"
)

func TestCeilingDoublesToCap(t *testing.T) {
	b := Backoff{Base: time.Second, Max: 5 * time.Second}
	var got []time.Duration
	for range 5 {
		got = append(got, b.Next())
	}
	want := []time.Duration{1, 2, 4, 5, 5}
	for i := range want {
		if got[i] != want[i]*time.Second {
			t.Fatalf("waits %v, want %v seconds", got, want)
		}
	}
	b.Reset()
	if d := b.Next(); d != time.Second {
		t.Fatalf("after Reset %v, want 1s", d)
	}
}

func TestJitterStaysBelowCeiling(t *testing.T) {
	b := Backoff{Base: time.Second, Max: time.Minute, Jitter: true}
	seen := map[time.Duration]bool{}
	for range 10 {
		c := b.Ceiling()
		d := b.Next()
		if d < 0 || d >= c {
			t.Fatalf("wait %v outside [0, %v)", d, c)
		}
		seen[d] = true
	}
	if len(seen) < 5 {
		t.Fatalf("jitter drew only %d distinct waits out of 10", len(seen))
	}
}

func TestSleepHonoursContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if Sleep(ctx, time.Hour) {
		t.Fatal("Sleep waited out an hour on a cancelled context")
	}
	if !Sleep(context.Background(), time.Millisecond) {
		t.Fatal("Sleep did not finish a 1ms wait")
	}
}
