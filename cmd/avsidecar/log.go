package main

import (
	"io"
	"time"

	"github.com/rs/zerolog"
)

// newLogger writes one JSON object per line (or a console rendering for
// people running the demo) with a timestamp on every line.
func newLogger(w io.Writer, level zerolog.Level, format string) zerolog.Logger {
	zerolog.TimeFieldFormat = time.RFC3339Nano
	// Durations as whole milliseconds: "backoff":1500 reads better than
	// 1500.000042, and the unit is documented in the README.
	zerolog.DurationFieldInteger = true
	if format == "console" {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: "15:04:05.000"}
	}
	return zerolog.New(w).Level(level).With().Timestamp().Logger()
}
