package logfollow

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// writerEnv makes the test binary act as the separate log writer.
const writerEnv = "LOGFOLLOW_TEST_WRITER"

func TestMain(m *testing.M) {
	if p := os.Getenv(writerEnv); p != "" {
		if err := writer(p, os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// numbered is the text of line n as the writer writes it (72 bytes with the
// newline), so a reader can check order and completeness.
// numberedRe matches the numbered lines, and none of the follower's own
// notices.
var numberedRe = regexp.MustCompile(`^[0-9]{10} x+$`)

func numbered(n int) string {
	return fmt.Sprintf("%010d %s", n, strings.Repeat("x", 60))
}

// writer is the child process: it appends to path as avagent would, driven
// by commands on in, and acknowledges each with "done" on out.
//
//	write A B   append lines A..B as fast as it can
//	rotate      rename path to path.1 and continue in a new path
//	truncate    copy path to path.2, then truncate it to 0 (copytruncate)
func writer(path string, in io.Reader, out io.Writer) error {
	open := func() (*os.File, error) {
		return os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	}
	f, err := open()
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(f, 32<<10) // flushes cut lines in the middle
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		switch {
		case len(fields) == 3 && fields[0] == "write":
			a, _ := strconv.Atoi(fields[1])
			b, _ := strconv.Atoi(fields[2])
			for n := a; n <= b; n++ {
				bw.WriteString(numbered(n))
				bw.WriteByte('\n')
			}
			if err := bw.Flush(); err != nil {
				return err
			}
		case len(fields) == 1 && fields[0] == "rotate":
			if err := os.Rename(path, path+".1"); err != nil {
				return err
			}
			f.Close()
			if f, err = open(); err != nil {
				return err
			}
			bw.Reset(f)
		case len(fields) == 1 && fields[0] == "truncate":
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			if err := os.WriteFile(path+".2", data, 0o644); err != nil {
				return err
			}
			if err := f.Truncate(0); err != nil {
				return err
			}
		default:
			return fmt.Errorf("writer: bad command %q", sc.Text())
		}
		fmt.Fprintln(out, "done")
	}
	return f.Close()
}

// record is one emitted log event.
type record struct {
	Level string `json:"level"`
	// Message is a followed line's text, or the follower's own notice.
	Message string `json:"message"`
	Part    int    `json:"part"`
}

// sink is the logger's output: it decodes each event and hands it to the
// test, in order.
type sink struct {
	early []record // returned by next before recs
	recs  chan record
	done  chan struct{}
}

func newSink(t *testing.T) *sink {
	s := &sink{recs: make(chan record, 4096), done: make(chan struct{})}
	t.Cleanup(func() { close(s.done) })
	return s
}

func (s *sink) Write(p []byte) (int, error) {
	var r record
	if err := json.Unmarshal(p, &r); err != nil {
		return 0, err
	}
	select {
	case s.recs <- r:
	case <-s.done:
	}
	return len(p), nil
}

// next returns the next record, failing the test after timeout.
func (s *sink) next(t *testing.T, timeout time.Duration) record {
	t.Helper()
	if len(s.early) > 0 {
		r := s.early[0]
		s.early = s.early[1:]
		return r
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case r := <-s.recs:
		return r
	case <-timer.C:
		t.Fatalf("no log event within %s", timeout)
		return record{}
	}
}

// expectNumbered checks that lines from..to arrive in order, exactly once,
// and counts the rotation and truncation notices seen meanwhile.
func (s *sink) expectNumbered(t *testing.T, from, to int, timeout time.Duration) (notices map[string]int) {
	t.Helper()
	notices = map[string]int{}
	deadline := time.Now().Add(timeout)
	want := from
	for want <= to {
		r := s.next(t, time.Until(deadline))
		if !numberedRe.MatchString(r.Message) {
			notices[r.Message]++
			continue
		}
		if r.Message != numbered(want) {
			t.Fatalf("got line %.20q..., want line %d", r.Message, want)
		}
		want++
	}
	return notices
}

// start runs a follower on path and returns its sink and a stop function
// that cancels it and checks that Run returns nil.
func start(t *testing.T, cfg Config) (*Follower, *sink, func()) {
	t.Helper()
	s := newSink(t)
	log := zerolog.New(s).Level(zerolog.DebugLevel)
	fl, err := New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fl.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(30 * time.Second):
				t.Errorf("Run did not return after cancel")
			}
		})
	}
	t.Cleanup(stop)
	// Files written from now on are new to the follower. What it emitted
	// before saying so is handed to the test afterwards.
	var early []record
	for {
		r := s.next(t, 10*time.Second)
		if r.Message == "log follower started" {
			break
		}
		early = append(early, r)
	}
	s.early = early
	return fl, s, stop
}

// startWriter starts the separate writer process and returns a function
// that sends it one command and waits for its acknowledgement.
func startWriter(t *testing.T, path string) (send func(cmd string), wait func()) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), writerEnv+"="+path)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	acks := make(chan struct{}, 16)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			acks <- struct{}{}
		}
		close(acks)
	}()
	pending := 0
	send = func(c string) {
		if _, err := fmt.Fprintln(in, c); err != nil {
			t.Fatalf("writer: %v", err)
		}
		pending++
	}
	wait = func() {
		t.Helper()
		for ; pending > 0; pending-- {
			if _, ok := <-acks; !ok {
				t.Fatal("writer exited early")
			}
		}
	}
	t.Cleanup(func() {
		in.Close()
		if err := cmd.Wait(); err != nil {
			t.Errorf("writer: %v", err)
		}
	})
	return send, wait
}

// TestRotationTruncationBurst follows a file written by a separate process
// through a 100 MB burst with a rotation by rename in its middle, then a
// copytruncate, and checks that every numbered line arrives once, in order.
func TestRotationTruncationBurst(t *testing.T) {
	total := 1_400_000 // 72 bytes a line: 100.8 MB
	if testing.Short() {
		total = 140_000
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "avagent.log")
	fl, s, stop := start(t, Config{Path: path, PollInterval: 50 * time.Millisecond})
	send, wait := startWriter(t, path)

	// The file appears: read from its start.
	send("write 1 1000")
	s.expectNumbered(t, 1, 1000, 30*time.Second)

	// The burst, rotated by rename half way, sent without waiting.
	began := time.Now()
	half := total / 2
	send(fmt.Sprintf("write 1001 %d", half))
	send("rotate")
	send(fmt.Sprintf("write %d %d", half+1, total))
	notices := s.expectNumbered(t, 1001, total, 100*time.Second)
	elapsed := time.Since(began)
	wait()
	if notices["log file rotated"] != 1 {
		t.Errorf("rotation notices = %d, want 1", notices["log file rotated"])
	}
	t.Logf("burst of %d lines (%d MB) followed in %s", total-1000, (total-1000)*72/1_000_000, elapsed)

	// copytruncate, and the writer goes on at offset 0 at once.
	send("truncate")
	send(fmt.Sprintf("write %d %d", total+1, total+1000))
	notices = s.expectNumbered(t, total+1, total+1000, 30*time.Second)
	wait()
	if notices["log file truncated"] != 1 {
		t.Errorf("truncation notices = %d, want 1", notices["log file truncated"])
	}

	stop()
	st := fl.Status()
	lines := uint64(total + 1000)
	want := Status{Path: path, Lines: lines, Bytes: lines * 72, Rotations: 1, Truncations: 1}
	if st != want {
		t.Errorf("Status() = %+v\nwant       %+v", st, want)
	}
}

// appendLines appends lines from..to to path, as a writer other than the
// follower would.
func appendLines(t *testing.T, path string, from, to int) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for n := from; n <= to; n++ {
		b.WriteString(numbered(n) + "\n")
	}
	if _, err := f.WriteString(b.String()); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestStartAtEndOrFromStart(t *testing.T) {
	for _, fromStart := range []bool{false, true} {
		t.Run(fmt.Sprintf("FromStart=%v", fromStart), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "avagent.log")
			appendLines(t, path, 1, 10)
			_, s, _ := start(t, Config{Path: path, FromStart: fromStart})
			appendLines(t, path, 11, 12)
			first := 11
			if fromStart {
				first = 1
			}
			s.expectNumbered(t, first, 12, 10*time.Second)
		})
	}
}

func TestDirectoryAppearsLater(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "usr", "local", "avamar", "var")
	path := filepath.Join(dir, "avagent.log")
	_, s, _ := start(t, Config{Path: path, PollInterval: 20 * time.Millisecond})
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	appendLines(t, path, 1, 3)
	s.expectNumbered(t, 1, 3, 10*time.Second)
}

func TestRemoveAndRecreate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "avagent.log")
	fl, s, stop := start(t, Config{Path: path, PollInterval: 10 * time.Millisecond})
	appendLines(t, path, 1, 2)
	s.expectNumbered(t, 1, 2, 10*time.Second)

	// The name goes away but the writer still holds the file: keep reading.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	f.WriteString(numbered(3) + "\n")
	s.expectNumbered(t, 3, 3, 10*time.Second)
	// An unterminated last line is emitted when a new file takes the name.
	f.WriteString(numbered(4))
	appendLines(t, path, 5, 6)
	notices := s.expectNumbered(t, 4, 6, 10*time.Second)
	if notices["log file rotated"] != 1 {
		t.Errorf("notices %v, want one rotation", notices)
	}
	stop()
	if st := fl.Status(); st.Rotations != 1 || st.Lines != 6 {
		t.Errorf("Status() = %+v, want 1 rotation and 6 lines", st)
	}
}

func TestLongLinesAreSplit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "avagent.log")
	fl, s, stop := start(t, Config{Path: path})
	long := strings.Repeat("a", DefaultMaxLineBytes) + strings.Repeat("b", DefaultMaxLineBytes) +
		strings.Repeat("c", 100)
	exact := strings.Repeat("d", DefaultMaxLineBytes)
	if err := os.WriteFile(path, []byte(long+"\n"+exact+"\nshort\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	want := []record{
		{Part: 1, Message: long[:DefaultMaxLineBytes]},
		{Part: 2, Message: long[DefaultMaxLineBytes : 2*DefaultMaxLineBytes]},
		{Part: 3, Message: long[2*DefaultMaxLineBytes:]},
		{Message: exact},
		{Message: "short"},
	}
	for i, w := range want {
		r := s.next(t, 10*time.Second)
		if r.Message == "following log file" {
			r = s.next(t, 10*time.Second)
		}
		if r.Part != w.Part || r.Message != w.Message {
			t.Fatalf("event %d: part %d, %d bytes; want part %d, %d bytes", i, r.Part, len(r.Message), w.Part, len(w.Message))
		}
	}
	stop()
	if st := fl.Status(); st.SplitLines != 1 || st.Lines != 3 {
		t.Errorf("Status() = %+v, want 1 split line of 3", st)
	}
}

// TestConsumeBoundaries feeds lines around MaxLineBytes in chunks of every
// size and checks the pieces.
func TestConsumeBoundaries(t *testing.T) {
	const max = 4
	input := "abc\nabcd\nabcde\nabcdefgh\nabcdefghi\n\nx\r\ntail"
	want := []string{"abc", "abcd", "abcd|1", "e|2", "abcd|1", "efgh|2", "abcd|1", "efgh|2", "i|3", "", "x"}
	for chunk := 1; chunk <= len(input); chunk++ {
		s := newSink(t)
		fl, err := New(Config{Path: "/nonexistent", MaxLineBytes: max}, zerolog.New(s))
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			for i := 0; i < len(input); i += chunk {
				fl.consume([]byte(input[i:min(i+chunk, len(input))]))
			}
			fl.flushPartial()
		}()
		for i, w := range append(want, "tail") {
			r := s.next(t, 5*time.Second)
			got := r.Message
			if r.Part > 0 {
				got += "|" + strconv.Itoa(r.Part)
			}
			if got != w {
				t.Fatalf("chunk %d, event %d: got %q, want %q", chunk, i, got, w)
			}
		}
	}
}

func TestLevelOf(t *testing.T) {
	for line, want := range map[string]zerolog.Level{
		"2026-11-23 10:11:12 avagent Info <5008>: Logging to /usr/local/avamar/var/avagent.log": zerolog.InfoLevel,
		"2026-11-23 10:11:12 avagent Warning <6688>: cannot reach MCS":                          zerolog.WarnLevel,
		"2026-11-23 10:11:12 avagent Error <7531>: Registration failed":                         zerolog.ErrorLevel,
		"2026-11-23 10:11:12 avagent FATAL <5889>: out of memory":                               zerolog.ErrorLevel,
		strings.Repeat("y", 70) + " avagent Error <1>: too far in to be a severity":             zerolog.InfoLevel,
		"": zerolog.InfoLevel,
	} {
		if got := levelOf([]byte(line)); got != want {
			t.Errorf("levelOf(%.40q) = %s, want %s", line, got, want)
		}
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	for _, cfg := range []Config{{}, {Path: "/x", MaxLineBytes: -1}, {Path: "/x", PollInterval: -time.Second}} {
		if _, err := New(cfg, zerolog.Nop()); err == nil {
			t.Errorf("New(%+v) = nil error", cfg)
		}
	}
}

// TestWriterNeverWaits stops reading the follower's output altogether: the
// writer, a separate process, still finishes at once, because the follower
// only reads the file. Then every line arrives.
func TestWriterNeverWaits(t *testing.T) {
	const total = 100_000
	path := filepath.Join(t.TempDir(), "avagent.log")
	_, s, _ := start(t, Config{Path: path})
	send, wait := startWriter(t, path)
	send(fmt.Sprintf("write 1 %d", total))
	finished := make(chan struct{})
	go func() {
		wait()
		close(finished)
	}()
	select {
	case <-finished:
	case <-time.After(60 * time.Second):
		t.Fatal("the writer was held up by a follower whose output is stuck")
	}
	s.expectNumbered(t, 1, total, 60*time.Second)
}

// FuzzConsume checks that what is emitted, pieces joined and lines ended,
// is exactly what was read, whatever the line lengths and read sizes, and
// that no event is longer than MaxLineBytes.
func FuzzConsume(f *testing.F) {
	f.Add([]byte("abc\x00defgh\x05ij"), uint8(3), uint8(2))
	f.Add([]byte{}, uint8(0), uint8(0))
	f.Fuzz(func(t *testing.T, raw []byte, maxLine, chunk uint8) {
		max, step := int(maxLine%16)+1, int(chunk%32)+1
		// A small alphabet with many newlines, so lines of every length.
		data := make([]byte, len(raw))
		for i, b := range raw {
			data[i] = 'a' + b%26
			if b%5 == 0 {
				data[i] = '\n'
			}
		}
		var out bytes.Buffer
		fl, err := New(Config{Path: "/nonexistent", MaxLineBytes: max}, zerolog.New(&out))
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < len(data); i += step {
			fl.consume(data[i:min(i+step, len(data))])
		}
		fl.flushPartial()

		var recs []record
		dec := json.NewDecoder(&out)
		for dec.More() {
			var r record
			if err := dec.Decode(&r); err != nil {
				t.Fatal(err)
			}
			recs = append(recs, r)
		}
		var got strings.Builder
		for i, r := range recs {
			if len(r.Message) > max {
				t.Fatalf("event of %d bytes, max %d", len(r.Message), max)
			}
			got.WriteString(r.Message)
			last := i == len(recs)-1 || recs[i+1].Part <= 1
			if !last && len(r.Message) != max {
				t.Fatalf("inner piece of %d bytes, want %d", len(r.Message), max)
			}
			if last {
				got.WriteByte('\n')
			}
		}
		want := string(data)
		if want != "" && !strings.HasSuffix(want, "\n") {
			want += "\n"
		}
		if got.String() != want {
			t.Fatalf("emitted %q, read %q", got.String(), want)
		}
	})
}
