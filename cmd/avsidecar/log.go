package main

import (
	"io"
	"os"
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
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: "15:04:05.000", NoColor: !terminal(w)}
	}
	return zerolog.New(w).Level(level).With().Timestamp().Logger()
}

// terminal reports whether w is a terminal that should get colours: not a
// pipe or a file (`avkit demo > log` holds no escape sequences), and not
// with NO_COLOR set (no-color.org).
func terminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok || os.Getenv("NO_COLOR") != "" {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
