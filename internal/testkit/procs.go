package testkit

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Proc is a process as /proc shows it.
type Proc struct {
	PID, PPID int
	// State is stat's state letter: R, S, D, Z...
	State string
	// Cmdline is the arguments joined by spaces.
	Cmdline string
}

// Processes lists the processes /proc shows, by pid; one that exits while
// it reads is left out.
func Processes() map[int]Proc {
	out := map[int]Proc{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// The command name may hold spaces and parentheses: the fields
		// after it start after the last ')'.
		s := string(stat)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) < 2 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		cl, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		out[pid] = Proc{PID: pid, PPID: ppid, State: f[0], Cmdline: strings.ReplaceAll(string(cl), "\x00", " ")}
	}
	return out
}
