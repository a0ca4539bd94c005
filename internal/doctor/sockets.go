package doctor

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/prometheus/procfs"
)

// tcpListen is the state of a listening socket in /proc/net/tcp.
const tcpListen = 0x0A

// listeners returns the inodes of the sockets that listen on port in this
// network namespace, IPv4 and IPv6.
func listeners(proc string, port int) ([]uint64, error) {
	fs, err := procfs.NewFS(proc)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", proc, err)
	}
	var out []uint64
	//lint:ignore SA1019 the sockets of the pod as a container sees them; procfs parses the file, sock_diag would need netlink code of our own
	for _, read := range []func() (procfs.NetTCP, error){fs.NetTCP, fs.NetTCP6} {
		lines, err := read()
		if err != nil {
			// A kernel without IPv6 has no tcp6.
			continue
		}
		for _, l := range lines {
			if l.St == tcpListen && l.LocalPort == uint64(port) {
				out = append(out, l.Inode)
			}
		}
	}
	return out, nil
}

// owner is a process that holds a socket.
type owner struct {
	pid  int
	comm string
}

// owners returns the processes visible in proc that hold one of the
// sockets, first looking at first (avagent's pid, or 0).
func owners(proc string, inodes []uint64, first int) []owner {
	fs, err := procfs.NewFS(proc)
	if err != nil {
		return nil
	}
	want := make([]string, len(inodes))
	for i, n := range inodes {
		want[i] = "socket:[" + strconv.FormatUint(n, 10) + "]"
	}
	holds := func(p procfs.Proc) bool {
		targets, err := p.FileDescriptorTargets()
		if err != nil {
			return false
		}
		return slices.ContainsFunc(targets, func(t string) bool { return slices.Contains(want, t) })
	}
	found := func(p procfs.Proc) owner {
		comm, _ := p.Comm()
		return owner{pid: p.PID, comm: strings.TrimSpace(comm)}
	}
	if first > 0 {
		if p, err := fs.Proc(first); err == nil && holds(p) {
			return []owner{found(p)}
		}
	}
	procs, err := fs.AllProcs()
	if err != nil {
		return nil
	}
	var out []owner
	for _, p := range procs {
		if holds(p) {
			out = append(out, found(p))
		}
	}
	return out
}
