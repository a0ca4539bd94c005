// Package exepages gives back the pages of the running executable that only
// its start-up used.
//
// A process keeps mapped every page of its binary it ever touched, and
// more: the kernel maps a fault's neighbours too (fault-around, 64 KiB),
// and reads ahead into the page cache. By the time avsidecar has
// installed, registered and started avagent it has touched nearly every
// 64 KiB of its code and read-only data, so its RSS counts the whole
// binary (9.2 of 9.4 MiB) although the running sidecar uses about half.
// Release unmaps the binary's read-only mappings, asks the kernel not to
// read ahead in them, and drops the binary's pages that nothing maps from
// the page cache: from then on a page is mapped when, and only when, the
// process touches it. Those pages were clean copies of the file: nothing
// is lost, and a page needed again is read again (a page fault, once).
//
// The working set the kubelet reports does not change (the kernel had
// left those pages on the inactive list); what changes is what the
// process maps, which is what RSS, ps and the OOM killer's score count.
package exepages

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Result says what Release did.
type Result struct {
	// Mappings is how many read-only mappings of the binary were released.
	Mappings int
	// Bytes is how much of them was resident before.
	Bytes int64
	// Skipped counts mappings left alone because a page of theirs was
	// written (a relocated or patched page exists only in memory).
	Skipped int
}

// Release releases the pages of the executable's read-only mappings (its
// code and read-only data) and drops its unmapped pages from the page
// cache. Its writable mappings are never touched.
func Release() (Result, error) {
	exe, err := os.Open("/proc/self/exe")
	if err != nil {
		return Result{}, fmt.Errorf("open the executable: %w", err)
	}
	defer exe.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(exe.Fd()), &st); err != nil {
		return Result{}, fmt.Errorf("stat the executable: %w", err)
	}
	maps, err := readOnlyMappings(st.Dev, st.Ino)
	if err != nil {
		return Result{}, err
	}
	var res Result
	var release []mapping
	for _, m := range maps {
		if m.anonymous > 0 {
			res.Skipped++
			continue
		}
		release = append(release, m)
		res.Mappings++
		res.Bytes += m.rss
	}
	if len(release) == 0 {
		return res, errors.New("no read-only mapping of the executable to release")
	}
	// Random access first: a dropped page must come back alone, not with
	// the neighbours a read-ahead would bring.
	if err := advise(release, unix.MADV_RANDOM); err != nil {
		return res, err
	}
	if err := advise(release, unix.MADV_DONTNEED); err != nil {
		return res, err
	}
	if err := unix.Fadvise(int(exe.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		return res, fmt.Errorf("drop the executable's pages from the page cache: %w", err)
	}
	return res, nil
}

// advise gives the kernel advice on each mapping.
func advise(maps []mapping, advice int) error {
	for _, m := range maps {
		if _, _, errno := unix.Syscall(unix.SYS_MADVISE, m.start, m.end-m.start, uintptr(advice)); errno != 0 {
			return fmt.Errorf("madvise %x-%x: %w", m.start, m.end, errno)
		}
	}
	return nil
}

// mapping is one mapping of /proc/self/smaps.
type mapping struct {
	start, end uintptr
	rss        int64 // bytes resident
	anonymous  int64 // bytes that exist only in memory (written pages)
}

// readOnlyMappings lists the mappings of the file dev:ino without write
// permission, from /proc/self/smaps.
func readOnlyMappings(dev, ino uint64) ([]mapping, error) {
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		return nil, fmt.Errorf("read the mappings: %w", err)
	}
	defer f.Close()
	want := fmt.Sprintf("%02x:%02x", unix.Major(dev), unix.Minor(dev))
	var out []mapping
	var cur *mapping
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 5 && strings.Contains(fields[0], "-") && !strings.HasSuffix(fields[0], ":") {
			// A mapping's first line: range, perms, offset, dev, inode, path.
			cur = nil
			lo, hi, _ := strings.Cut(fields[0], "-")
			start, err1 := strconv.ParseUint(lo, 16, 64)
			end, err2 := strconv.ParseUint(hi, 16, 64)
			inode, err3 := strconv.ParseUint(fields[4], 10, 64)
			if err1 != nil || err2 != nil || err3 != nil {
				return nil, fmt.Errorf("unexpected line in /proc/self/smaps: %q", sc.Text())
			}
			if fields[3] == want && inode == ino && !strings.Contains(fields[1], "w") {
				out = append(out, mapping{start: uintptr(start), end: uintptr(end)})
				cur = &out[len(out)-1]
			}
			continue
		}
		if cur == nil || len(fields) < 2 {
			continue
		}
		kb, err := strconv.ParseInt(fields[1], 10, 64)
		if err != nil {
			continue
		}
		switch fields[0] {
		case "Rss:":
			cur.rss = kb << 10
		case "Anonymous:":
			cur.anonymous = kb << 10
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read the mappings: %w", err)
	}
	return out, nil
}
