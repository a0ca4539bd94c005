package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/avsidecar/avsidecar/internal/testkit"
)

// keysBench is -keys and -bad: measure a huge authorized_keys file
// (issue 23) instead of idle memory.
var keysBench struct{ lines, bad int }

// bigKeys writes an authorized_keys of keysBench.lines lines, keysBench.bad
// of them unparsable, the client key first, over the sidecar's one-line
// file and measures: the CPU and wall time until it is loaded, RSS and peak
// RSS then, the login time, the CPU each directory event that changes
// nothing costs (a file created beside it, the file touched), the time
// until a new key works, and RSS after the file is cut back to one line.
func bigKeys(pid int, root, httpAddr, sshAddr, clientKey string) error {
	path := filepath.Join(root, "authorized_keys")
	one, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	_, port, _ := net.SplitHostPort(sshAddr)
	login := func(key string) (time.Duration, error) {
		t0 := time.Now()
		out, err := exec.Command("ssh", "-F", "/dev/null", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
			"-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none", "-o", "LogLevel=ERROR",
			"-i", key, "-p", port, "root@127.0.0.1", "true").CombinedOutput()
		if err != nil {
			return 0, fmt.Errorf("ssh: %v %s", err, out)
		}
		return time.Since(t0), nil
	}
	medianLogin := func(key string) (time.Duration, error) {
		var ds []time.Duration
		for range 5 {
			d, err := login(key)
			if err != nil {
				return 0, err
			}
			ds = append(ds, d)
		}
		slices.Sort(ds)
		return ds[len(ds)/2], nil
	}
	oneLine, err := medianLogin(clientKey)
	if err != nil {
		return err
	}
	quiesce(pid)
	rssOne := tree(pid, "avagent.bin").rss

	big := append(bytes.Clone(one), testkit.ManyAuthorizedKeys(keysBench.lines-1, keysBench.bad)...)
	want := keysBench.lines - keysBench.bad
	cpu0, t0 := cpuNs(pid), time.Now()
	if err := replace(path, big); err != nil {
		return err
	}
	if err := waitKeys(httpAddr, want); err != nil {
		return err
	}
	loadWall := time.Since(t0)
	quiesce(pid)
	loadCPU := cpuNs(pid) - cpu0
	rssBig, peak := tree(pid, "avagent.bin").rss, field(fmt.Sprintf("/proc/%d/status", pid), "VmHWM:")
	bigLogin, err := medianLogin(clientKey)
	if err != nil {
		return err
	}

	// Events that change nothing: a file made beside it, five times; the
	// file touched (same content, new mtime) once.
	var events []time.Duration
	for i := range 5 {
		c0 := cpuNs(pid)
		if err := os.WriteFile(filepath.Join(root, fmt.Sprintf("unrelated-%d", i)), nil, 0o644); err != nil {
			return err
		}
		quiesce(pid)
		events = append(events, time.Duration(cpuNs(pid)-c0))
	}
	c0 := cpuNs(pid)
	now := time.Now()
	if err := os.Chtimes(path, now, now); err != nil {
		return err
	}
	quiesce(pid)
	touch := time.Duration(cpuNs(pid) - c0)

	// A new key: appended, the file replaced as a Secret update would.
	newKey := filepath.Join(filepath.Dir(clientKey), "new_key")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", newKey).CombinedOutput(); err != nil {
		return fmt.Errorf("ssh-keygen: %v %s", err, out)
	}
	pub, err := os.ReadFile(newKey + ".pub")
	if err != nil {
		return err
	}
	c0, t0 = cpuNs(pid), time.Now()
	if err := replace(path, append(big, pub...)); err != nil {
		return err
	}
	if err := waitKeys(httpAddr, want+1); err != nil {
		return err
	}
	newWorks := time.Since(t0)
	if _, err := login(newKey); err != nil {
		return fmt.Errorf("the new key: %w", err)
	}
	quiesce(pid)
	changeCPU := time.Duration(cpuNs(pid) - c0)

	// Cut back to the one line.
	if err := replace(path, one); err != nil {
		return err
	}
	if err := waitKeys(httpAddr, 1); err != nil {
		return err
	}
	quiesce(pid)
	var after []int64
	for range 10 {
		time.Sleep(500 * time.Millisecond)
		after = append(after, tree(pid, "avagent.bin").rss)
	}
	slices.Sort(after)

	ms := func(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }
	fmt.Printf("authorized_keys of %d lines (%.1f MiB, %d unparsable)\n", keysBench.lines, mib(int64(len(big))), keysBench.bad)
	fmt.Printf("  RSS with the one-line file           %7.2f MiB\n", mib(rssOne))
	fmt.Printf("  load: CPU %s, until loaded %s\n", ms(time.Duration(loadCPU)), ms(loadWall))
	fmt.Printf("  RSS loaded                           %7.2f MiB (peak VmHWM %.2f MiB)\n", mib(rssBig), mib(peak))
	fmt.Printf("  login, median of 5: one line %s, big file %s\n", ms(oneLine), ms(bigLogin))
	fmt.Printf("  CPU per directory event that changes nothing: %v\n", fmtDurations(events))
	fmt.Printf("  CPU when the file is touched (same content): %s\n", ms(touch))
	fmt.Printf("  a new key appended: loaded after %s, CPU %s; it logs in\n", ms(newWorks), ms(changeCPU))
	fmt.Printf("  RSS after cutting back to one line   %7.2f MiB (median of 10 samples over 5 s)\n", mib(after[len(after)/2]))
	return nil
}

func fmtDurations(ds []time.Duration) string {
	var s []string
	for _, d := range ds {
		s = append(s, fmt.Sprintf("%.1f", float64(d)/float64(time.Millisecond)))
	}
	return strings.Join(s, ", ") + " ms"
}

// replace writes data beside path and renames it over path.
func replace(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// waitKeys polls /v1/status until the SSH server holds n keys.
func waitKeys(httpAddr string, n int) error {
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + httpAddr + "/v1/status")
		if err == nil {
			var st struct {
				SSH struct {
					Keys int `json:"authorized_keys"`
				} `json:"ssh"`
			}
			err = json.NewDecoder(resp.Body).Decode(&st)
			resp.Body.Close()
			if err == nil && st.SSH.Keys == n {
				return nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("the sidecar never held %d authorized keys", n)
}

// cpuNs is the CPU time of pid's threads, from their schedstat (ns).
func cpuNs(pid int) int64 {
	files, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	var sum int64
	for _, f := range files {
		b, _ := os.ReadFile(f)
		if fs := strings.Fields(string(b)); len(fs) > 0 {
			n, _ := strconv.ParseInt(fs[0], 10, 64)
			sum += n
		}
	}
	return sum
}

// quiesce waits until pid has used no CPU worth counting (under 1 ms) for
// half a second, or 60 s have passed.
func quiesce(pid int) {
	last := cpuNs(pid)
	quiet := 0
	for deadline := time.Now().Add(time.Minute); quiet < 5 && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
		n := cpuNs(pid)
		if n-last < int64(time.Millisecond) {
			quiet++
		} else {
			quiet = 0
		}
		last = n
	}
}
