package hooks

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/avsidecar/avsidecar/internal/atomicfile"
)

// Who ran the post hooks that ended a freeze: the values of Thaw.By and of
// the by label of the thaw metric.
const (
	// ByPost is the post call: the backup ended as it should.
	ByPost = "post"
	// ByExpiry is the lease: no post call came within max_freeze.
	ByExpiry = "expiry"
	// ByPreFailed is a failed pre phase: the backup will not happen, so
	// what the pre hooks before the failure did is undone at once.
	ByPreFailed = "pre-failed"
	// ByCallerGone is a pre phase whose script was killed or gave up
	// while it ran: nobody will go on with that backup.
	ByCallerGone = "caller-gone"
	// ByStop is the sidecar's stop (SIGTERM): the backup cannot go on
	// without it.
	ByStop = "stop"
	// ByStart is the next start after a sidecar that was killed, or whose
	// stop was cut, with a freeze open.
	ByStart = "start"
)

// ThawBy lists who may end a freeze: the label values of the thaw metric.
var ThawBy = []string{ByPost, ByExpiry, ByPreFailed, ByCallerGone, ByStop, ByStart}

// Lease is a freeze: opened, and written to disk, before the first pre
// hook runs; ended by the post hooks, whoever runs them.
type Lease struct {
	// ID tells one freeze from the next (the time it opened, in
	// nanoseconds).
	ID string `json:"id"`
	// Opened is when the pre phase started.
	Opened time.Time `json:"opened"`
	// Deadline is when avsidecar runs the post hooks itself.
	Deadline time.Time `json:"deadline"`
	// MaxFreeze is the configuration's max_freeze when it opened.
	MaxFreeze Duration `json:"max_freeze"`
}

// Thaw is how a freeze ended.
type Thaw struct {
	Lease Lease `json:"lease"`
	// By says who ran the post hooks (ByPost, ByExpiry...).
	By string `json:"by"`
	// At is when the post hooks ended.
	At time.Time `json:"at"`
	// Result is the post phase's result.
	Result string `json:"result"`
}

// leaseFile is the lease's record on disk: open, or how the last one
// ended.
type leaseFile struct {
	State string `json:"state"` // "open" or "closed"
	Lease Lease  `json:"lease"`
	Thaw  *Thaw  `json:"thaw,omitempty"`
}

const (
	leaseOpen   = "open"
	leaseClosed = "closed"
)

// writeLease records the lease durably (through atomicfile): open, or
// closed by thaw.
func writeLease(path string, l Lease, thaw *Thaw) error {
	rec := leaseFile{State: leaseOpen, Lease: l}
	if thaw != nil {
		rec.State, rec.Thaw = leaseClosed, thaw
	}
	b, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return fmt.Errorf("freeze lease: %w", err)
	}
	if err := atomicfile.Write(path, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("freeze lease: %w", err)
	}
	return nil
}

// readOpenLease reads the lease file and returns the lease when it is
// open. A file that cannot be read as a lease is taken as an open one
// (thawing is safe; leaving an application frozen is not), with the
// error saying why.
func readOpenLease(path string) (*Lease, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return &Lease{ID: "unreadable"}, fmt.Errorf("read the freeze lease %s: %w", path, err)
	}
	var rec leaseFile
	if err := json.Unmarshal(b, &rec); err != nil || (rec.State != leaseOpen && rec.State != leaseClosed) {
		l := &Lease{ID: "unreadable"}
		if fi, err := os.Stat(path); err == nil {
			l.Opened = fi.ModTime() // when the pre phase wrote it, or later
		}
		return l, fmt.Errorf("the freeze lease %s is damaged (%d bytes): taken as open", path, len(b))
	}
	if rec.State == leaseOpen {
		return &rec.Lease, nil
	}
	return nil, nil
}
