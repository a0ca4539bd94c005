// Package millis is how a duration leaves avsidecar as JSON (/v1/status,
// the hooks' answers): whole milliseconds, in a field whose name ends in
// _ms, as every duration in the logs is.
package millis

import (
	"encoding/json"
	"strconv"
	"time"
)

// Duration is a time.Duration that is whole milliseconds in JSON.
type Duration time.Duration

// Since is the time elapsed since t.
func Since(t time.Time) Duration { return Duration(time.Since(t)) }

// D is the duration as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// MarshalJSON writes the whole milliseconds.
func (d Duration) MarshalJSON() ([]byte, error) {
	return strconv.AppendInt(nil, time.Duration(d).Milliseconds(), 10), nil
}

// UnmarshalJSON reads whole milliseconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var ms int64
	if err := json.Unmarshal(b, &ms); err != nil {
		return err
	}
	*d = Duration(time.Duration(ms) * time.Millisecond)
	return nil
}
