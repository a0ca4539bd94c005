package pid1

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/avsidecar/avsidecar/internal/testkit"
)

// reaperChildEnv makes the test binary, started again by TestReaper, run
// TestReaperChild with the reaper on. Reap is for the whole process and
// cannot be undone, so it gets a process of its own.
const reaperChildEnv = "PID1_TEST_REAPER_CHILD"

// TestReaper runs TestReaperChild in a new process that calls Reap: as a
// child subreaper, and as PID 1 of a new PID namespace.
func TestReaper(t *testing.T) {
	if os.Getenv(reaperChildEnv) != "" {
		t.Skip("this is the reaper child")
	}
	modes := map[string][]string{
		"subreaper": {os.Args[0]},
		"pid1":      {"unshare", "--pid", "--fork", "--mount-proc", os.Args[0]},
	}
	for name, argv := range modes {
		t.Run(name, func(t *testing.T) {
			if name == "pid1" {
				testkit.NeedRoot(t)
				testkit.NeedCommand(t, "unshare")
			}
			cmd := exec.Command(argv[0], append(argv[1:], "-test.run=^TestReaperChild$", "-test.v", "-test.count=1")...)
			cmd.Env = append(os.Environ(), reaperChildEnv+"="+name)
			out, err := cmd.CombinedOutput()
			if err != nil || !bytes.Contains(out, []byte("--- PASS: TestReaperChild")) {
				t.Fatalf("reaper child as %s: %v\n%s", name, err, out)
			}
		})
	}
}

// TestReaperChild is the process TestReaper starts: everything a sidecar
// does with children, at once, with the reaper on.
func TestReaperChild(t *testing.T) {
	mode := os.Getenv(reaperChildEnv)
	if mode == "" {
		t.Skip("runs only as TestReaper's child")
	}
	if mode == "pid1" && os.Getpid() != 1 {
		t.Fatalf("pid %d, want 1", os.Getpid())
	}
	logs := testkit.NewLogLines()
	log := zerolog.New(logs).Level(zerolog.DebugLevel)
	if err := Reap(log); err != nil {
		t.Fatal(err)
	}
	if err := Reap(log); err == nil {
		t.Error("second Reap succeeded")
	}

	// Children that exit at once, many at a time, while orphans come and go:
	// every status reaches its own Process.
	const orphans = 20
	var wg sync.WaitGroup
	errs := make(chan error, 400)
	for g := range 8 {
		wg.Go(func() {
			for i := range 25 {
				n := g*25 + i
				code := n % 4
				script := fmt.Sprintf("exit %d", code)
				if n < orphans {
					script = "sleep 0.01 & " + script // the sleep is orphaned
				}
				p, err := Start(exec.Command("/bin/sh", "-c", script))
				if err != nil {
					errs <- err
					continue
				}
				if got := exitCode(p.Wait()); got != code {
					errs <- fmt.Errorf("%q: exit %d, want %d", script, got, code)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	// A signal is reported as one, and lines arrive in order.
	p, err := Start(exec.Command("/bin/sleep", "60"))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.SignalGroup(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var ee *ExitError
	if err := p.Wait(); !errors.As(err, &ee) || !ee.Status.Signaled() || ee.ExitCode() != -1 || err.Error() != "signal: killed" {
		t.Errorf("killed sleep: %v", err)
	}
	var lines []string
	p, err = StartLines(exec.Command("/bin/sh", "-c", "echo one; echo two >&2; echo three; exit 5"), func(l string) { lines = append(lines, l) })
	if err != nil {
		t.Fatal(err)
	}
	if got := exitCode(p.Wait()); got != 5 || strings.Join(lines, ",") != "one,two,three" {
		t.Errorf("StartLines: exit %d, lines %q", got, lines)
	}

	// Every orphan was reaped: wait for the log to say so, then look for
	// zombies among this process's children.
	logs.WaitN(t, 0, orphans, "every orphan reaped", 20*time.Second, testkit.Msg("", "reaped orphan"))
	if z := zombies(); len(z) > 0 {
		t.Errorf("zombie children: %v", z)
	}
}

// zombies lists this process's children that are zombies.
func zombies() []int {
	var z []int
	for _, p := range testkit.Processes() {
		if p.State == "Z" && p.PPID == os.Getpid() {
			z = append(z, p.PID)
		}
	}
	return z
}

func exitCode(err error) int {
	var ee *ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -2
	}
	return 0
}

// The tests below run without the reaper, through os/exec's own wait.

func TestStartWithoutReaper(t *testing.T) {
	for _, code := range []int{0, 1, 3, 255} {
		p, err := Start(exec.Command("/bin/sh", "-c", "exit "+strconv.Itoa(code)))
		if err != nil {
			t.Fatal(err)
		}
		if got := exitCode(p.Wait()); got != code {
			t.Errorf("exit %d: got %d", code, got)
		}
	}
	p, err := Start(exec.Command("/bin/sh", "-c", "kill -TERM $$"))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Wait(); err == nil || err.Error() != "signal: terminated" {
		t.Errorf("sh killed by TERM: %v", err)
	}
	if _, err := Start(exec.Command("/nonexistent/avagent")); err == nil {
		t.Error("a missing program started")
	}
}

func TestStartRefusesWhatWouldRaceTheReaper(t *testing.T) {
	withBuffer := exec.Command("/bin/true")
	withBuffer.Stdout = &bytes.Buffer{}
	withContext := exec.CommandContext(context.Background(), "/bin/true")
	withDelay := exec.Command("/bin/true")
	withDelay.WaitDelay = time.Second
	for name, cmd := range map[string]*exec.Cmd{"buffer": withBuffer, "context": withContext, "waitdelay": withDelay} {
		if p, err := Start(cmd); err == nil {
			_ = p.Wait()
			t.Errorf("%s: started", name)
		} else if cmd.Process != nil {
			t.Errorf("%s: refused after starting", name)
		}
	}
}

func TestOwnProcessGroup(t *testing.T) {
	// The child reports its process group; it must be its own pid.
	var lines []string
	p, err := StartLines(exec.Command("/bin/sh", "-c", "ps -o pgid= -p $$ || cut -d' ' -f5 /proc/$$/stat"), func(l string) { lines = append(lines, strings.TrimSpace(l)) })
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Wait(); err != nil {
		t.Fatal(err)
	}
	if len(lines) == 0 || lines[0] != strconv.Itoa(p.Pid) {
		t.Errorf("child's process group %q, want %d", lines, p.Pid)
	}
}

func TestWaitContextKillsTheGroup(t *testing.T) {
	// sh starts a grandchild in its group and waits: both must go.
	first := make(chan string, 1)
	p, err := StartLines(exec.Command("/bin/sh", "-c", "sleep 60 & echo $!; wait"), func(l string) {
		select {
		case first <- l:
		default:
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	grandchild, err := strconv.Atoi(<-first)
	if err != nil {
		t.Fatal(err)
	}
	pidfd, err := unix.PidfdOpen(grandchild, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pidfd)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err = p.WaitContext(ctx)
	var ee *ExitError
	if !errors.As(err, &ee) || ee.Status.Signal() != syscall.SIGKILL {
		t.Fatalf("WaitContext: %v", err)
	}
	// A pidfd becomes readable when its process exits.
	fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
	if n, err := unix.Poll(fds, 10_000); n != 1 || err != nil {
		t.Fatalf("grandchild %d still runs after its group was killed: %d, %v", grandchild, n, err)
	}
}

func TestStartLinesOutputGrace(t *testing.T) {
	// A daemon left holding the pipe must not keep the process from being
	// done for longer than OutputGrace.
	var lines []string
	p, err := StartLines(exec.Command("/bin/sh", "-c", "echo started; sleep 30 & exit 0"), func(l string) { lines = append(lines, l) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.SignalGroup(syscall.SIGKILL) })
	if err := p.Wait(); err != nil {
		t.Fatal(err)
	}
	if len(lines) != 1 || lines[0] != "started" {
		t.Errorf("lines %q", lines)
	}
}

func TestReadLines(t *testing.T) {
	long := strings.Repeat("x", 100<<10)
	var got []string
	ReadLines(strings.NewReader("one\r\n"+long+"\nlast"), func(l string) { got = append(got, l) })
	if len(got) != 4 || got[0] != "one" || got[1]+got[2] != long || got[3] != "last" {
		t.Errorf("got %d lines: %.20q", len(got), got)
	}
}
