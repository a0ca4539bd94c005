package metrics

import (
	"bytes"
	"fmt"
	"os"
	"runtime"
	rtmetrics "runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// userHZ is the unit of the clock-tick fields of /proc/<pid>/stat: fixed
// at 100 by the kernel's ABI whatever the kernel's own tick rate.
const userHZ = 100

// goFamilies is the Go runtime's part of a scrape, under the names and
// meanings client_golang's Go collector uses. runtime/metrics reads without
// stopping the world.
func goFamilies() []*family {
	samples := []rtmetrics.Sample{
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/memory/classes/total:bytes"},
	}
	rtmetrics.Read(samples)
	return []*family{
		{name: "go_goroutines", typ: gaugeType, help: "Number of goroutines that currently exist.",
			series: []series{{value: float64(runtime.NumGoroutine())}}},
		{name: "go_memstats_heap_alloc_bytes", typ: gaugeType, help: "Number of heap bytes allocated and currently in use.",
			series: []series{{value: float64(samples[0].Value.Uint64())}}},
		{name: "go_memstats_sys_bytes", typ: gaugeType, help: "Number of bytes obtained from system.",
			series: []series{{value: float64(samples[1].Value.Uint64())}}},
	}
}

// processFamilies is the process's part of a scrape, under the names and
// meanings client_golang's process collector uses, read from /proc at
// every scrape.
func processFamilies() ([]*family, error) {
	st, err := readStat()
	if err != nil {
		return nil, err
	}
	boot, err := bootTimeOnce()
	if err != nil {
		return nil, err
	}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return nil, fmt.Errorf("count open files: %w", err)
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return nil, fmt.Errorf("read open files limit: %w", err)
	}
	one := func(name, typ, help string, v float64) *family {
		return &family{name: name, typ: typ, help: help, series: []series{{value: v}}}
	}
	return []*family{
		one("process_cpu_seconds_total", counterType, "Total user and system CPU time spent in seconds.",
			float64(st.utime+st.stime)/userHZ),
		one("process_open_fds", gaugeType, "Number of open file descriptors.", float64(len(fds))),
		one("process_max_fds", gaugeType, "Maximum number of open file descriptors.", float64(lim.Cur)),
		one("process_virtual_memory_bytes", gaugeType, "Virtual memory size in bytes.", float64(st.vsize)),
		one("process_resident_memory_bytes", gaugeType, "Resident memory size in bytes.",
			float64(st.rss*uint64(os.Getpagesize()))),
		one("process_start_time_seconds", gaugeType, "Start time of the process since unix epoch in seconds.",
			float64(boot)+float64(st.starttime)/userHZ),
	}, nil
}

// procStat is what the scrape uses of /proc/self/stat.
type procStat struct {
	utime, stime, starttime uint64 // clock ticks (userHZ)
	vsize                   uint64 // bytes
	rss                     uint64 // pages
}

// readStat reads /proc/self/stat (proc(5)).
func readStat() (procStat, error) {
	data, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return procStat{}, fmt.Errorf("read process stat: %w", err)
	}
	return parseStat(data)
}

// parseStat parses a /proc/<pid>/stat line. The command name (field 2) is
// in parentheses and may hold spaces and parentheses itself, so the fields
// are counted from after its last ')'.
func parseStat(data []byte) (procStat, error) {
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return procStat{}, fmt.Errorf("parse process stat: no command name")
	}
	f := strings.Fields(string(data[i+1:]))
	// f[0] is field 3 (state): field n is f[n-3].
	if len(f) < 24-2 {
		return procStat{}, fmt.Errorf("parse process stat: %d fields", len(f)+2)
	}
	var st procStat
	for _, x := range []struct {
		field int
		to    *uint64
	}{{14, &st.utime}, {15, &st.stime}, {22, &st.starttime}, {23, &st.vsize}, {24, &st.rss}} {
		n, err := strconv.ParseUint(f[x.field-3], 10, 64)
		if err != nil {
			return procStat{}, fmt.Errorf("parse process stat field %d: %w", x.field, err)
		}
		*x.to = n
	}
	return st, nil
}

// bootTimeOnce is bootTime read once: /proc/stat is kilobytes long and the
// boot time never changes.
var bootTimeOnce = sync.OnceValues(bootTime)

// bootTime reads the boot time (unix seconds) from /proc/stat: a process's
// start time is counted from it.
func bootTime() (uint64, error) {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, fmt.Errorf("read boot time: %w", err)
	}
	for line := range strings.Lines(string(data)) {
		if v, ok := strings.CutPrefix(line, "btime "); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("parse boot time: %w", err)
			}
			return n, nil
		}
	}
	return 0, fmt.Errorf("parse boot time: no btime in /proc/stat")
}
