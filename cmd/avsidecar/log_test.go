package main

import (
	"bytes"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// TestDurationsInMilliseconds: a duration field is a whole number of
// milliseconds, as newLogger sets it.
func TestDurationsInMilliseconds(t *testing.T) {
	var b bytes.Buffer
	log := newLogger(&b, zerolog.InfoLevel, "json")
	log.Info().Dur("backoff_ms", 1500*time.Millisecond+42*time.Microsecond).Msg("x")
	var m map[string]any
	if err := json.Unmarshal(b.Bytes(), &m); err != nil {
		t.Fatal(err)
	}
	if m["backoff_ms"] != 1500.0 {
		t.Errorf("backoff_ms = %v, want 1500", m["backoff_ms"])
	}
}

// TestDurationFieldsSayTheirUnit: every duration field the code logs ends
// in _ms, so that a reader of the JSON (or of a Loki query) knows the unit.
func TestDurationFieldsSayTheirUnit(t *testing.T) {
	dur := regexp.MustCompile(`\bDur\("([^"]+)"`)
	found := 0
	for _, dir := range []string{"../../internal", "../../cmd"} {
		err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
				return err
			}
			src, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel("../..", p)
			for _, m := range dur.FindAllStringSubmatch(string(src), -1) {
				found++
				if !strings.HasSuffix(m[1], "_ms") {
					t.Errorf("%s logs the duration %q: name it %s_ms", rel, m[1], m[1])
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if found == 0 {
		t.Fatal("no duration field found: the search is broken")
	}
}
