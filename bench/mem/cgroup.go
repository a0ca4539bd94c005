package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// memRoot is where the cgroup v1 memory controller is mounted.
const memRoot = "/sys/fs/cgroup/memory"

// container is a memory cgroup standing for one container, and a sibling
// for its workload (avagent, or tini's child): the workload enters the
// sibling before it runs (see agentWrapper), so that only the process
// under test is measured.
type container struct {
	dir, workload string
}

// newContainer makes the cgroups name and name-workload under parent.
func newContainer(parent, name string) (*container, error) {
	c := &container{dir: filepath.Join(parent, name), workload: filepath.Join(parent, name+"-workload")}
	for _, d := range []string{c.dir, c.workload} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return nil, fmt.Errorf("make memory cgroup: %w", err)
		}
	}
	return c, nil
}

// enterWorkload is a shell line that moves the shell running it from its
// container's cgroup into the workload's: memory charged before the move
// would stay with the container (the kernel no longer moves charges).
const enterWorkload = `cg=$(sed -n 's/^[0-9]*:memory://p' /proc/self/cgroup); case $cg in *-workload) ;; *) echo 0 > "/sys/fs/cgroup/memory$cg-workload/cgroup.procs" ;; esac`

// parentCgroup is the memory cgroup this process runs in: the containers
// are made inside it, so the machine's own accounting is left as it is.
func parentCgroup() (string, error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.SplitN(line, ":", 3)
		if len(f) == 3 && f[1] == "memory" {
			return filepath.Join(memRoot, f[2]), nil
		}
	}
	return "", errors.New("no cgroup v1 memory controller (this benchmark reads memory.usage_in_bytes and memory.stat)")
}

// procs lists the processes in the container.
func (c *container) procs() []int {
	return pids(filepath.Join(c.dir, "cgroup.procs"))
}

// remove deletes both cgroups once their processes are gone.
func (c *container) remove() {
	for _, d := range []string{c.workload, c.dir} {
		_ = syscall.Rmdir(d)
	}
}

func pids(file string) []int {
	b, _ := os.ReadFile(file)
	var out []int
	for _, f := range strings.Fields(string(b)) {
		if n, err := strconv.Atoi(f); err == nil {
			out = append(out, n)
		}
	}
	return out
}

// sample is one look at a container.
type sample struct {
	// Summed over the container's processes, from /proc/PID/status.
	rss, anon, file int64
	n               int
	// The cgroup's view: ws is the working set as the kubelet (cAdvisor's
	// setMemoryStats) computes it on cgroup v1, memory.usage_in_bytes
	// minus total_inactive_file.
	ws, usage  int64
	statRSS    int64 // total_rss: anonymous memory charged
	activeFile int64 // total_active_file
	inactive   int64 // total_inactive_file
	kmem       int64 // memory.kmem.usage_in_bytes: kernel memory charged
	mappedFile int64 // total_mapped_file
	cache      int64 // total_cache
}

func (c *container) sample() sample {
	var s sample
	for _, p := range c.procs() {
		status := fmt.Sprintf("/proc/%d/status", p)
		st, err := statusFields(status, "VmRSS:", "RssAnon:", "RssFile:", "RssShmem:")
		if err != nil {
			continue // it ended while the others were read
		}
		s.rss += st[0]
		s.anon += st[1]
		s.file += st[2] + st[3]
		s.n++
	}
	s.usage = readInt(filepath.Join(c.dir, "memory.usage_in_bytes"))
	s.kmem = readInt(filepath.Join(c.dir, "memory.kmem.usage_in_bytes"))
	stat := readStat(filepath.Join(c.dir, "memory.stat"))
	s.statRSS, s.activeFile, s.inactive = stat["total_rss"], stat["total_active_file"], stat["total_inactive_file"]
	s.mappedFile, s.cache = stat["total_mapped_file"], stat["total_cache"]
	s.ws = max(s.usage-s.inactive, 0)
	return s
}

// statusFields reads "Name: N kB" lines of a /proc status file, in bytes.
func statusFields(path string, names ...string) ([]int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := make([]int64, len(names))
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		for i, name := range names {
			if rest, ok := strings.CutPrefix(sc.Text(), name); ok {
				n, _ := strconv.ParseInt(strings.Fields(rest)[0], 10, 64)
				out[i] = n * 1024
			}
		}
	}
	return out, sc.Err()
}

func readInt(path string) int64 {
	b, _ := os.ReadFile(path)
	n, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	return n
}

func readStat(path string) map[string]int64 {
	b, _ := os.ReadFile(path)
	out := map[string]int64{}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(v, 10, 64)
		out[k] = n
	}
	return out
}

// uncached copies src to dst and drops dst from the page cache, so that
// the container that runs it is the first to read it and is charged for
// the pages it touches, as a container is for its image's files. (This
// process wrote the copy: without the drop its pages would be charged
// here, and the container would get them for free.)
func uncached(src, dst string, mode os.FileMode) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(dst, b, mode); err != nil {
		return err
	}
	return drop(dst)
}

// drop writes a file back and drops it from the page cache.
func drop(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return err
	}
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		return fmt.Errorf("drop %s from the page cache: %w", path, err)
	}
	return nil
}
