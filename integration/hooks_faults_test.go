package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/avsidecar/avsidecar/internal/testkit"
	"github.com/avsidecar/avsidecar/internal/testkit/mcsproto"
)

// faultFreeze is the max_freeze of the fault injection: short, so that
// 20 runs of each case end in minutes.
const faultFreeze = 5 * time.Second

// copyTime stands for Avamar's copy where a case lets the backup go on
// before its fault.
const copyTime = time.Second

// TestHookFaults is the fault injection of the freeze lease (bench/hooks,
// not CI): a real MariaDB frozen by a session hook holding FLUSH TABLES
// WITH READ LOCK, a writer committing transactions one at a time, and the
// real sidecar as PID 1 driven through its scripts, with each fault in
// turn. For every run it measures the writer's longest stall and who ran
// the post hooks; it fails when a stall passes max_freeze + 5 s.
// AVSIDECAR_HOOK_FAULTS=N runs each case N times.
func TestHookFaults(t *testing.T) {
	runs, _ := strconv.Atoi(os.Getenv("AVSIDECAR_HOOK_FAULTS"))
	if runs <= 0 {
		t.Skip("a benchmark: bench/hooks/run.sh runs it (AVSIDECAR_HOOK_FAULTS=runs per case)")
	}
	data := filepath.Join(dbDir(t), "mysql")
	initMariaDB(t, data)
	db := startMariaDB(t, data)
	db.createTable(t)
	w := db.startWriter(t, "", 0)
	w.waitAcked(t, 200)

	dir := dbDir(t)
	ctrl, trace := filepath.Join(dir, "case"), filepath.Join(dir, "trace")
	writeFile(t, ctrl, "")
	spec := `{"max_freeze": "` + faultFreeze.String() + `",
	  "pre": [
	    {"name": "read-lock", "session": {"command": ["mariadb", "--no-defaults", "--unbuffered", "-S", "` + db.sock + `", "-u", "root"],
	      "dialect": "mariadb", "pre": ["FLUSH TABLES WITH READ LOCK"], "post": ["UNLOCK TABLES"]}, "timeout": "30s"},
	    {"name": "step", "command": ["/bin/sh", "-c", "case $(cat ` + ctrl + `) in slow-pre) sleep 3;; fail-pre) sleep 1; exit 1;; esac"], "timeout": "30s"}
	  ],
	  "post": [
	    {"name": "hang", "command": ["/bin/sh", "-c", "[ \"$(cat ` + ctrl + `)\" = hang-post ] && sleep 60; exit 0"], "timeout": "2s", "on_error": "continue"},
	    {"name": "mark", "command": ["/bin/sh", "-c", "echo post >> ` + trace + `"]}
	  ]}`
	hw, sock := hookWorld(t, spec, "20s")
	s := hw.startPID1(t)
	s.eventually(t, "/readyz", 200, 60*time.Second)

	pre := func() func() (int, string) { return hookCall(t, hw.bins.Avsidecar, sock, "pre") }
	post := func() func() (int, string) { return hookCall(t, hw.bins.Avsidecar, sock, "post") }
	thawed := func(from int, by string) map[string]any {
		return s.log.Wait(t, from, "the thaw by "+by, time.Minute, msg("hooks", "freeze lease thawed", "by", by))
	}
	cases := []struct {
		name string
		run  func(from int) map[string]any // returns the thaw's log line
	}{
		{"post never called", func(from int) map[string]any {
			if code, out := pre()(); code != 0 {
				t.Fatalf("pre: %d\n%s", code, out)
			}
			return thawed(from, "expiry")
		}},
		{"hook script killed mid-backup", func(from int) map[string]any {
			writeFile(t, ctrl, "slow-pre")
			cmd := hookCallCmd(t, hw.bins.Avsidecar, sock, "pre")
			s.log.Wait(t, from, "the read lock", time.Minute, msg("hooks", "hook ran", "hook", "read-lock", "phase", "pre"))
			_ = cmd.Process.Kill()
			line := thawed(from, "caller-gone")
			writeFile(t, ctrl, "")
			return line
		}},
		{"avagent killed mid-backup", func(from int) map[string]any {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			port := envValue(hw.env, "AVAMAR_LISTEN_PORT")
			go func() {
				_, _ = testkit.RunBackup(ctx, "127.0.0.1:"+port, mcsproto.Backup{RunAtStart: "avsidecar-pre.sh", RunAtEnd: "avsidecar-post.sh",
					Paths: []string{data}, HoldMS: 60_000})
			}()
			s.log.Wait(t, from, "the pre phase", time.Minute, msg("hooks", "hook phase ran", "phase", "pre"))
			signal(t, agentPID(t, s), syscall.SIGKILL)
			return thawed(from, "expiry")
		}},
		{"sidecar SIGKILLed mid-freeze, started again", func(from int) map[string]any {
			if code, out := pre()(); code != 0 {
				t.Fatalf("pre: %d\n%s", code, out)
			}
			time.Sleep(copyTime) // Avamar copies
			signal(t, s.init(t), syscall.SIGKILL)
			<-s.done
			s = hw.startPID1(t)
			line := s.log.Wait(t, 0, "the thaw at start", time.Minute, msg("hooks", "freeze lease thawed", "by", "start"))
			s.eventually(t, "/readyz", 200, 60*time.Second)
			return line
		}},
		{"pre hook failing halfway", func(from int) map[string]any {
			writeFile(t, ctrl, "fail-pre")
			if code, out := pre()(); code != 1 {
				t.Fatalf("pre: %d\n%s", code, out)
			}
			writeFile(t, ctrl, "")
			return thawed(from, "pre-failed")
		}},
		{"post hook hanging past its timeout", func(from int) map[string]any {
			writeFile(t, ctrl, "hang-post")
			if code, out := pre()(); code != 0 {
				t.Fatalf("pre: %d\n%s", code, out)
			}
			time.Sleep(copyTime) // Avamar copies
			if code, out := post()(); code != 0 || !strings.Contains(out, "hang (command): timeout") {
				t.Fatalf("post: %d\n%s", code, out)
			}
			writeFile(t, ctrl, "")
			return thawed(from, "post")
		}},
	}
	limit := faultFreeze + 5*time.Second
	var table []string
	for _, c := range cases {
		var stalls []time.Duration
		by := map[string]int{}
		for i := range runs {
			s.eventually(t, "/readyz", 200, time.Minute)
			from := s.log.Mark()
			acked, _, _ := w.state()
			w.waitAcked(t, acked+5)
			w.resetStall()
			line := c.run(from)
			by[fmt.Sprint(line["by"])]++
			acked, _, _ = w.state()
			w.waitAcked(t, acked+5) // the writer goes on
			_, stall, err := w.state()
			if err != nil {
				t.Fatal(err)
			}
			stalls = append(stalls, stall)
			if stall > limit {
				t.Errorf("%s, run %d: the writer stalled %s, more than max_freeze + 5 s (%s)", c.name, i, stall, limit)
			}
		}
		slices.Sort(stalls)
		var whom []string
		for k, n := range by {
			whom = append(whom, fmt.Sprintf("%s %d", k, n))
		}
		row := fmt.Sprintf("| %s | %d | %s | %s | %s |", c.name, runs, stalls[len(stalls)/2].Round(10*time.Millisecond),
			stalls[len(stalls)-1].Round(10*time.Millisecond), strings.Join(whom, ", "))
		t.Log(row)
		table = append(table, row)
	}
	s.stopPID1(t)
	t.Logf("max_freeze %s, limit %s\n| case | runs | median stall | longest stall | post hooks run by |\n| --- | --- | --- | --- | --- |\n%s",
		faultFreeze, limit, strings.Join(table, "\n"))
}
