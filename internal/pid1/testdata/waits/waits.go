// Package waits holds the ways of waiting for a child that the reaper's
// check (TestNothingElseWaits) must find: each line that waits ends with
// the marker "waits" in a comment, and no other line waits.
package waits

import (
	"os"
	"os/exec"
	"syscall"

	"golang.org/x/sys/unix"
)

// job embeds a Cmd, so its waiting methods are promoted.
type job struct{ *exec.Cmd }

// Calls waits every way the check knows.
func Calls() {
	c := exec.Command("true")
	_ = c.Start()
	_ = c.Run()               // waits
	_, _ = c.Output()         // waits
	_, _ = c.CombinedOutput() // waits
	_ = c.Wait()              // waits
	method := c.Wait          // waits
	_ = method()
	expr := (*exec.Cmd).Run // waits
	_ = expr(c)
	j := job{c}
	_ = j.Wait()            // waits
	_, _ = c.Process.Wait() // waits
	p, _ := os.FindProcess(1)
	_, _ = p.Wait() // waits
	var ws syscall.WaitStatus
	_, _ = syscall.Wait4(-1, &ws, 0, nil)                  // waits
	_, _ = unix.Wait4(-1, (*unix.WaitStatus)(&ws), 0, nil) // waits
	_ = unix.Waitid(unix.P_ALL, 0, nil, unix.WEXITED, nil) // waits
}

// Fine uses what does not wait.
func Fine() {
	c := exec.Command("true")
	_ = c.Start()
	_ = c.String()
	_ = c.Process.Signal(os.Interrupt)
	_ = c.Process.Release()
}
