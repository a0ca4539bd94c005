package hooks

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/avsidecar/avsidecar/internal/testkit"
)

// leaseWorld is hooks whose pre and post hooks write into a trace file.
type leaseWorld struct {
	h     *Hooks
	dir   string
	trace string
	lease string
	logs  *testkit.LogLines
}

// newLeaseWorld makes hooks from spec, in which TRACE stands for the trace
// file and LEASE for the lease file.
func newLeaseWorld(t *testing.T, spec string) *leaseWorld {
	t.Helper()
	w := &leaseWorld{dir: t.TempDir(), logs: testkit.NewLogLines()}
	w.trace, w.lease = filepath.Join(w.dir, "trace"), filepath.Join(w.dir, "state/hooks-lease.json")
	spec = strings.NewReplacer("TRACE", w.trace, "LEASE", w.lease).Replace(spec)
	var err error
	w.h, err = New(Config{Spec: spec, Socket: filepath.Join(w.dir, "h.sock"), ScriptsDir: filepath.Join(w.dir, "scripts"),
		Command: "/bin/avsidecar", LeaseFile: w.lease}, zerolog.New(w.logs))
	if err != nil || w.h.ConfigError() != nil {
		t.Fatal(err, w.h.ConfigError())
	}
	return w
}

func (w *leaseWorld) traced() string {
	b, _ := os.ReadFile(w.trace)
	return string(b)
}

// onDisk reads the lease file.
func (w *leaseWorld) onDisk(t *testing.T) leaseFile {
	t.Helper()
	var rec leaseFile
	b, err := os.ReadFile(w.lease)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &rec); err != nil {
		t.Fatalf("lease file %s: %v", b, err)
	}
	return rec
}

// rec is a command hook that appends word to the trace.
func rec(name, word string) string {
	return `{"name": "` + name + `", "command": ["/bin/sh", "-c", "echo ` + word + ` >> TRACE"]}`
}

// TestLeaseOnDiskBeforeFirstPreHook: the first pre hook finds the lease
// already recorded, open; the post call closes it, on disk too, and says
// who ended it.
func TestLeaseOnDiskBeforeFirstPreHook(t *testing.T) {
	w := newLeaseWorld(t, `{"pre": [{"name": "check", "command": ["/bin/sh", "-c", "grep -q '\"state\": \"open\"' LEASE"]}],
		"post": [`+rec("resume", "post")+`]}`)
	pre, err := w.h.RunPhase(context.Background(), PhasePre)
	if err != nil || pre.Result != ResultPassed {
		t.Fatalf("pre %+v, %v: the lease was not on disk before the first hook", pre, err)
	}
	if st := w.h.Status(); st.Lease == nil || time.Duration(st.MaxFreeze) != DefaultMaxFreeze ||
		st.Lease.Deadline.Sub(st.Lease.Opened) != DefaultMaxFreeze {
		t.Fatalf("status while frozen %+v", st)
	}
	post, err := w.h.RunPhase(context.Background(), PhasePost)
	if err != nil || post.Result != ResultPassed || post.By != ByPost || w.traced() != "post\n" {
		t.Fatalf("post %+v, %v, trace %q", post, err, w.traced())
	}
	if rec := w.onDisk(t); rec.State != leaseClosed || rec.Thaw == nil || rec.Thaw.By != ByPost {
		t.Errorf("lease on disk after post: %+v", rec)
	}
	if st := w.h.Status(); st.Lease != nil || st.LastThaw == nil || st.LastThaw.By != ByPost || st.Thaws[ByPost] != 1 {
		t.Errorf("status after post %+v", st)
	}
}

// TestLeaseExpiry: no post call within max_freeze: the sidecar runs the
// post hooks itself, logs an error and counts it; the post call that comes
// after is answered as late, runs nothing, and fails.
func TestLeaseExpiry(t *testing.T) {
	w := newLeaseWorld(t, `{"max_freeze": "1s", "pre": [`+rec("pause", "pre")+`], "post": [`+rec("resume", "post")+`]}`)
	if pre, err := w.h.RunPhase(context.Background(), PhasePre); err != nil || pre.Result != ResultPassed {
		t.Fatalf("pre %+v, %v", pre, err)
	}
	line := w.logs.Wait(t, 0, "the expiry", 10*time.Second, testkit.Msg("", "freeze lease thawed", "by", ByExpiry))
	if line["level"] != "error" || w.traced() != "pre\npost\n" {
		t.Errorf("expiry logged %v, trace %q", line, w.traced())
	}
	st := w.h.Status()
	if st.Lease != nil || st.Thaws[ByExpiry] != 1 || st.LastThaw.By != ByExpiry || phases(st) != "pre,post" || st.Runs[1].By != ByExpiry {
		t.Errorf("status after expiry %+v", st)
	}
	if rec := w.onDisk(t); rec.State != leaseClosed || rec.Thaw.By != ByExpiry {
		t.Errorf("lease on disk %+v", rec)
	}
	late, err := w.h.RunPhase(context.Background(), PhasePost)
	if err != nil || late.Result != ResultFailed || late.Late == nil || late.Late.By != ByExpiry || len(late.Hooks) != 0 {
		t.Errorf("late post %+v, %v", late, err)
	}
	if w.traced() != "pre\npost\n" {
		t.Errorf("the late post ran hooks again: %q", w.traced())
	}
	// The next backup starts afresh.
	if pre, _ := w.h.RunPhase(context.Background(), PhasePre); pre.Result != ResultPassed {
		t.Errorf("next pre %+v", pre)
	}
	if post, _ := w.h.RunPhase(context.Background(), PhasePost); post.Result != ResultPassed || post.By != ByPost || post.Late != nil {
		t.Errorf("next post %+v", post)
	}
}

// TestPreOutlivesLease: a pre hook still running at the deadline is
// killed, the phase fails, and the post hooks run at once.
func TestPreOutlivesLease(t *testing.T) {
	w := newLeaseWorld(t, `{"max_freeze": "1s", "pre": [`+rec("pause", "pre")+`, {"name": "slow", "command": ["sleep", "60"], "timeout": "2m"}],
		"post": [`+rec("resume", "post")+`]}`)
	pre, err := w.h.RunPhase(context.Background(), PhasePre)
	if err != nil || pre.Result != ResultFailed || pre.Undo == nil || pre.Undo.By != ByExpiry || w.traced() != "pre\npost\n" {
		t.Fatalf("pre %+v, %v, trace %q", pre, err, w.traced())
	}
}

// TestOneFreezeAtATime: a pre call while a freeze is open is refused, and
// runs nothing.
func TestOneFreezeAtATime(t *testing.T) {
	w := newLeaseWorld(t, `{"pre": [`+rec("pause", "pre")+`], "post": [`+rec("resume", "post")+`]}`)
	if _, err := w.h.RunPhase(context.Background(), PhasePre); err != nil {
		t.Fatal(err)
	}
	if _, err := w.h.RunPhase(context.Background(), PhasePre); err == nil || !strings.Contains(err.Error(), "a freeze is open since") {
		t.Errorf("second pre: %v", err)
	}
	if w.traced() != "pre\n" {
		t.Errorf("trace %q", w.traced())
	}
}

// TestPreCallerGone: the script is killed while its pre hooks run: they
// finish (a hook is not cut half way), and the post hooks run at once,
// since nobody goes on with that backup.
func TestPreCallerGone(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "release")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	w := newLeaseWorld(t, `{"pre": [{"name": "pause", "command": ["/bin/sh", "-c", "echo pre >> TRACE; read x < `+fifo+`"]}],
		"post": [`+rec("resume", "post")+`]}`)
	ctx, leave := context.WithCancel(context.Background())
	done := make(chan PhaseRun, 1)
	go func() { run, _ := w.h.RunPhase(ctx, PhasePre); done <- run }()
	waitFor(t, "the pre hook", func() bool { return w.traced() == "pre\n" })
	leave()
	f, err := os.OpenFile(fifo, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(f, "go")
	f.Close()
	run := <-done
	if run.Result != ResultPassed || run.Undo == nil || run.Undo.By != ByCallerGone || w.traced() != "pre\npost\n" {
		t.Errorf("pre %+v, undo %+v, trace %q", run, run.Undo, w.traced())
	}
}

// TestThawAtStart: a lease left open on disk (a killed sidecar) is found
// at start and ended by the post hooks; a damaged one is taken as open; a
// closed one runs nothing.
func TestThawAtStart(t *testing.T) {
	spec := `{"pre": [` + rec("pause", "pre") + `], "post": [` + rec("resume", "post") + `]}`
	for _, tt := range []struct {
		name, file, trace string
	}{
		{"open", `{"state": "open", "lease": {"id": "1", "opened": "2026-01-02T03:04:05Z"}}`, "post\n"},
		{"damaged", `{"state": "op`, "post\n"},
		{"closed", `{"state": "closed", "lease": {"id": "1"}, "thaw": {"by": "post"}}`, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			w := newLeaseWorld(t, spec)
			if err := os.MkdirAll(filepath.Dir(w.lease), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(w.lease, []byte(tt.file), 0o600); err != nil {
				t.Fatal(err)
			}
			w.h.ThawAtStart(context.Background())
			if w.traced() != tt.trace {
				t.Fatalf("trace %q, want %q", w.traced(), tt.trace)
			}
			if tt.trace == "" {
				return
			}
			if rec := w.onDisk(t); rec.State != leaseClosed || rec.Thaw.By != ByStart {
				t.Errorf("lease on disk %+v", rec)
			}
			// The backup whose freeze this was may still call post: late.
			if late, _ := w.h.RunPhase(context.Background(), PhasePost); late.Late == nil || late.Late.By != ByStart {
				t.Errorf("post after the thaw %+v", late)
			}
		})
	}
}

// TestLeaseNotRecorded: when the lease cannot be written, no pre hook
// runs: a freeze that a restart would not find is not started.
func TestLeaseNotRecorded(t *testing.T) {
	w := newLeaseWorld(t, `{"pre": [`+rec("pause", "pre")+`]}`)
	if err := os.WriteFile(filepath.Dir(w.lease), nil, 0o600); err != nil { // a file where the directory goes
		t.Fatal(err)
	}
	_, err := w.h.RunPhase(context.Background(), PhasePre)
	if err == nil || !strings.Contains(err.Error(), "cannot be guarded") || w.traced() != "" {
		t.Errorf("pre: %v, trace %q", err, w.traced())
	}
}

// TestWorstAnswerFits: the largest answer a phase can give (MaxHooks pre
// hooks and their undo of MaxHooks post hooks, every output and error at
// its bound, in bytes JSON escapes six-fold) is read whole by Call.
func TestWorstAnswerFits(t *testing.T) {
	worst := func() Result {
		var out outputTail
		for range outputLines * 2 {
			out.add(strings.Repeat("\x01", outputBytes))
		}
		code := -1
		return Result{Name: strings.Repeat("\x01", 100), Kind: "session", OnError: OnErrorContinue, Outcome: OutcomeTimeout,
			ExitCode: &code, HTTPStatus: 599, Error: bounded(strings.Repeat("\x01", 10*errorBytes)), Output: out.lines()}
	}
	run := PhaseRun{Phase: PhasePre, Result: ResultFailed, Undo: &PhaseRun{Phase: PhasePost, By: ByCallerGone}}
	for range MaxHooks {
		run.Hooks = append(run.Hooks, worst())
		run.Undo.Hooks = append(run.Undo.Hooks, worst())
		run.Skipped = append(run.Skipped, strings.Repeat("\x01", 100))
	}
	b, err := json.Marshal(run)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("worst answer: %d bytes, limit %d", len(b), MaxAnswer)
	if len(b) > MaxAnswer/2 {
		t.Errorf("the worst answer is %d bytes, more than half of MaxAnswer (%d)", len(b), MaxAnswer)
	}
}

// TestStopThaws: the sidecar stops with a freeze open: Run ends it before
// it returns, and a call after the stop began runs nothing.
func TestStopThaws(t *testing.T) {
	w := newLeaseWorld(t, `{"pre": [`+rec("pause", "pre")+`], "post": [`+rec("resume", "post")+`]}`)
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.h.Run(ctx) }()
	waitFor(t, "the socket", func() bool { return dial(w.h.cfg.Socket) })
	if run, err := Call(context.Background(), w.h.cfg.Socket, PhasePre, nil); err != nil || run.Result != ResultPassed {
		t.Fatalf("pre %+v, %v", run, err)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if st := w.h.Status(); w.traced() != "pre\npost\n" || st.Lease != nil || st.LastThaw == nil || st.LastThaw.By != ByStop {
		t.Errorf("after the stop: trace %q, status %+v", w.traced(), st)
	}
	if rec := w.onDisk(t); rec.State != leaseClosed || rec.Thaw.By != ByStop {
		t.Errorf("lease on disk %+v", rec)
	}
	if _, err := w.h.RunPhase(context.Background(), PhasePre); err == nil || !strings.Contains(err.Error(), "stopping") {
		t.Errorf("a pre after the stop: %v", err)
	}
}
