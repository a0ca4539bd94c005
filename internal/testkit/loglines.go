package testkit

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"
)

// LogLines collects JSON log lines (zerolog's, one object per line) and
// lets a test wait for one, so tests synchronise on what a component says
// it did instead of on sleeps. Lines that are not JSON are kept under "raw".
type LogLines struct {
	mu      sync.Mutex
	lines   []map[string]any
	raw     []string
	partial []byte
	changed chan struct{}
	ended   bool
}

// NewLogLines returns an empty collector.
func NewLogLines() *LogLines { return &LogLines{changed: make(chan struct{})} }

// Write takes any number of lines, split anywhere; it never fails, so it
// can be a zerolog writer or a process's stdout.
func (l *LogLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, p...)
	for {
		i := strings.IndexByte(string(l.partial), '\n')
		if i < 0 {
			break
		}
		l.addLocked(string(l.partial[:i]))
		l.partial = l.partial[i+1:]
	}
	return len(p), nil
}

// Follow reads r line by line until it ends, calling each(line) first
// when each is not nil, then marks the log ended.
func (l *LogLines) Follow(r io.Reader, each func(line string)) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if each != nil {
			each(sc.Text())
		}
		l.mu.Lock()
		l.addLocked(sc.Text())
		l.mu.Unlock()
	}
	l.End()
}

func (l *LogLines) addLocked(line string) {
	var m map[string]any
	if json.Unmarshal([]byte(line), &m) != nil {
		m = map[string]any{"raw": line}
	}
	l.lines = append(l.lines, m)
	l.raw = append(l.raw, line)
	l.wakeLocked()
}

func (l *LogLines) wakeLocked() {
	close(l.changed)
	l.changed = make(chan struct{})
}

// End marks the log finished: waits for lines not yet seen fail at once.
func (l *LogLines) End() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ended = true
	l.wakeLocked()
}

// Mark is a position in the log: waits from it see only newer lines.
func (l *LogLines) Mark() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.lines)
}

// Count is how many lines since from match.
func (l *LogLines) Count(from int, match func(map[string]any) bool) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, m := range l.lines[from:] {
		if match(m) {
			n++
		}
	}
	return n
}

// Raw is every line so far, as written.
func (l *LogLines) Raw() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.raw, "\n")
}

// Wait returns the first line at or after from that matches, once it is
// logged; it fails the test after timeout or when the log ends first.
func (l *LogLines) Wait(tb testing.TB, from int, what string, timeout time.Duration, match func(map[string]any) bool) map[string]any {
	tb.Helper()
	return l.WaitN(tb, from, 1, what, timeout, match)
}

// WaitN returns the n-th line at or after from that matches, once it is
// logged; it fails the test after timeout or when the log ends first.
func (l *LogLines) WaitN(tb testing.TB, from, n int, what string, timeout time.Duration, match func(map[string]any) bool) map[string]any {
	tb.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	seen := 0
	for {
		l.mu.Lock()
		for ; from < len(l.lines); from++ {
			if match(l.lines[from]) {
				if seen++; seen == n {
					m := l.lines[from]
					l.mu.Unlock()
					return m
				}
			}
		}
		changed, ended := l.changed, l.ended
		l.mu.Unlock()
		if ended {
			tb.Fatalf("log ended before %s", what)
		}
		select {
		case <-changed:
		case <-deadline.C:
			tb.Fatalf("no log line for %s within %s", what, timeout)
		}
	}
}

// Msg matches a zerolog line by component (any when empty) and message, and
// by further field, value pairs compared as text.
func Msg(component, message string, fields ...any) func(map[string]any) bool {
	return func(m map[string]any) bool {
		if (component != "" && m["component"] != component) || m["message"] != message {
			return false
		}
		for i := 0; i+1 < len(fields); i += 2 {
			if fmt.Sprint(m[fields[i].(string)]) != fmt.Sprint(fields[i+1]) {
				return false
			}
		}
		return true
	}
}
