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
	// Durations as whole milliseconds: "backoff_ms":1500 reads better than
	// 1500.000042; every duration field's name ends in _ms to say so.
	zerolog.DurationFieldInteger = true
	if format == "console" {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: "15:04:05.000"}
	}
	return zerolog.New(w).Level(level).With().Timestamp().Logger()
}
