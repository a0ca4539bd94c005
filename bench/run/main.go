// Command run measures `avsidecar run` (issue 2): its idle memory with the
// agent registered, beside the old recipe's `sh run.sh` + `sshd -D` measured
// the same way in the same run, and the time from exec to the first 200
// from /livez.
//
//	go run ./bench/run [-starts 50]
//
// With -conns N it measures instead what N idle keep-alive HTTP
// connections cost (issue 17): each sends one request and then stays
// silent; it reports how many the sidecar keeps, its RSS before and after,
// and how many still answer after -hold. -sources spreads the connections
// over that many client addresses of 127/8. -avsidecar runs a given binary
// (an older build, to compare) instead of building the tree's.
//
// With -keys N it measures instead an authorized_keys of N lines, -bad of
// them unparsable (issue 23; keys.go): load CPU, RSS, logins, the CPU of
// events that change nothing, a new key, and RSS once cut back. With
// -flood it measures the probes from 127.0.0.1 under connection floods
// (issue 23; flood.go).
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/avsidecar/avsidecar/internal/testkit"
)

func main() {
	starts := flag.Int("starts", 50, "exec-to-livez measurements")
	flag.IntVar(&connBench.n, "conns", 0, "measure N idle keep-alive HTTP connections instead")
	flag.IntVar(&connBench.sources, "sources", 1, "client addresses the connections come from")
	flag.DurationVar(&connBench.hold, "hold", 40*time.Second, "how long the connections stay idle before they are tried again")
	flag.StringVar(&prebuilt, "avsidecar", "", "an avsidecar binary to measure instead of building one")
	flag.IntVar(&keysBench.lines, "keys", 0, "measure an authorized_keys file of N lines instead")
	flag.IntVar(&keysBench.bad, "bad", 5000, "unparsable lines of the -keys file")
	flag.BoolVar(&floodBench, "flood", false, "measure the probes under connection floods instead")
	flag.StringVar(&floodChild, "floodchild", "", "be -flood's flooding process: ADDR,KIND")
	flag.Parse()
	if floodChild != "" {
		if err := runFloodChild(floodChild); err != nil {
			fmt.Fprintln(os.Stderr, "bench/run:", err)
			os.Exit(1)
		}
	}
	if err := run(*starts); err != nil {
		fmt.Fprintln(os.Stderr, "bench/run:", err)
		os.Exit(1)
	}
}

func run(starts int) error {
	dir, err := os.MkdirTemp("", "avsidecar-bench-run-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	avsidecar, avkit := filepath.Join(dir, "avsidecar"), filepath.Join(dir, "avkit")
	builds := map[string]string{avsidecar: "./cmd/avsidecar", avkit: "./cmd/avkit"}
	if prebuilt != "" {
		avsidecar = prebuilt
		delete(builds, avsidecar)
	}
	for bin, pkg := range builds {
		if err := testkit.GoBuild(bin, pkg); err != nil {
			return err
		}
	}
	root := filepath.Join(dir, "root")
	if err := os.MkdirAll(filepath.Join(root, "opt/avamar"), 0o755); err != nil {
		return err
	}
	if _, err := testkit.BuildRPMFile(filepath.Join(root, "opt/avamar"), testkit.RPMOptions{AgentBinary: avkit}); err != nil {
		return err
	}
	// One authorized key, so that the SSH server holds what it would in a pod.
	clientKey := filepath.Join(dir, "client_key")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", clientKey).CombinedOutput(); err != nil {
		return fmt.Errorf("ssh-keygen: %v %s", err, out)
	}
	pub, err := os.ReadFile(clientKey + ".pub")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(root, "authorized_keys"), pub, 0o600); err != nil {
		return err
	}
	mcs, err := testkit.StartMCS("127.0.0.1:0", testkit.MCSOptions{})
	if err != nil {
		return err
	}
	defer mcs.Close()

	httpAddr := "127.0.0.1:" + strconv.Itoa(freePort())
	sshAddr := "127.0.0.1:" + strconv.Itoa(freePort())
	env := append(os.Environ(), "AVSIDECAR_ROOT="+root, "AVAMAR_SERVER="+mcs.Addr(), "NODE_IP=127.0.0.1", "POD_NAME=bench-0",
		"AVAMAR_LISTEN_PORT="+strconv.Itoa(freePort()), "AVSIDECAR_HTTP_ADDR="+httpAddr,
		"AVSIDECAR_SSH_ADDR="+sshAddr, "AVSIDECAR_SSH_AUTHORIZED_KEYS=/authorized_keys",
		"AVSIDECAR_BROWSE_ROOTS=/opt/avamar")

	// Idle memory, agent registered and ready.
	logFile, err := os.Create(filepath.Join(dir, "run.log"))
	if err != nil {
		return err
	}
	defer logFile.Close()
	cmd := exec.Command(avsidecar, "run")
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		return err
	}
	if err := waitHTTP(httpAddr, "/readyz", 60*time.Second); err != nil {
		cmd.Process.Kill()
		b, _ := os.ReadFile(logFile.Name())
		return fmt.Errorf("%w; its log:\n%s", err, b)
	}
	time.Sleep(3 * time.Second) // past the start: this is idle memory
	if connBench.n > 0 || keysBench.lines > 0 || floodBench {
		defer func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }()
		switch {
		case keysBench.lines > 0:
			return bigKeys(cmd.Process.Pid, root, httpAddr, sshAddr, clientKey)
		case floodBench:
			return floods(httpAddr)
		}
		return idleConns(cmd.Process.Pid, httpAddr)
	}
	// What an idle sidecar gets: the kubelet's probes, and a Prometheus
	// scrape where the PodMonitor is deployed. Both come once a second here,
	// 10 to 30 times their usual pace, so that 20 s hold the garbage of
	// several minutes.
	get := func(paths ...string) func() {
		return func() {
			for _, path := range paths {
				if resp, err := http.Get("http://" + httpAddr + path); err == nil {
					resp.Body.Close()
				}
			}
		}
	}
	ours := idle(cmd.Process.Pid, "avagent.bin", get("/livez", "/readyz", "/startupz"))
	scraped := idle(cmd.Process.Pid, "avagent.bin", get("/livez", "/readyz", "/startupz", "/metrics"))
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()

	peer, err := oldRecipe(dir)
	if err != nil {
		return err
	}
	fmt.Printf("idle memory (sum over processes; median of %d samples over %d s, probes once a second)\n", 2*idleSeconds, idleSeconds)
	for _, r := range []struct {
		name string
		u    usage
	}{
		{"avsidecar run (SSH and browse on, avagent left out)", ours},
		{"  the same, scraped as well", scraped},
		{"old recipe (sh run.sh + sshd -D)", peer},
	} {
		fmt.Printf("  %-52s RSS %6.2f MiB (anon %5.2f, file %5.2f; max %5.2f)  PSS %6.2f MiB  (%d processes)\n",
			r.name, mib(r.u.rss), mib(r.u.anon), mib(r.u.file), mib(r.u.maxRSS), mib(r.u.pss), r.u.n)
	}
	fmt.Printf("  ratio avsidecar/old recipe: RSS %.2f  PSS %.2f\n", float64(ours.rss)/float64(peer.rss), float64(ours.pss)/float64(peer.pss))

	// Exec to first 200 from /livez, on an installed and registered root.
	var times []time.Duration
	for range starts {
		addr := "127.0.0.1:" + strconv.Itoa(freePort())
		cmd := exec.Command(avsidecar, "run")
		cmd.Env = append(env, "AVSIDECAR_HTTP_ADDR="+addr)
		t0 := time.Now()
		if err := cmd.Start(); err != nil {
			return err
		}
		if err := waitHTTP(addr, "/livez", 10*time.Second); err != nil {
			cmd.Process.Kill()
			return err
		}
		times = append(times, time.Since(t0))
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}
	slices.Sort(times)
	fmt.Printf("exec to first 200 from /livez over %d starts: median %v  p90 %v  max %v\n",
		len(times), times[len(times)/2].Round(10*time.Microsecond), times[len(times)*9/10].Round(10*time.Microsecond), times[len(times)-1].Round(10*time.Microsecond))
	return nil
}

// oldRecipe runs the whitepaper's last line, `sshd -D`, under a shell as
// run.sh does, and measures both once sshd listens.
func oldRecipe(dir string) (usage, error) {
	key := filepath.Join(dir, "ssh_host_ed25519_key")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key).CombinedOutput(); err != nil {
		return usage{}, fmt.Errorf("ssh-keygen: %v %s", err, out)
	}
	port := freePort()
	conf := filepath.Join(dir, "sshd_config")
	os.WriteFile(conf, []byte(fmt.Sprintf("Port %d\nListenAddress 127.0.0.1\nHostKey %s\nPidFile none\nUsePAM no\n", port, key)), 0o600)
	os.MkdirAll("/run/sshd", 0o755)
	sh := exec.Command("/bin/sh", "-c", "/usr/sbin/sshd -D -f "+conf+"; echo done")
	if err := sh.Start(); err != nil {
		return usage{}, err
	}
	defer func() { syscall.Kill(-sh.Process.Pid, syscall.SIGTERM); sh.Process.Kill(); sh.Wait() }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			return usage{}, fmt.Errorf("sshd did not listen: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(time.Second)
	u := idle(sh.Process.Pid, "", func() {})
	for _, p := range children(sh.Process.Pid) {
		syscall.Kill(p, syscall.SIGTERM)
	}
	return u, nil
}

// idleSeconds is how long idle samples memory, twice a second, calling
// tick once a second.
const idleSeconds = 20

// idle samples the memory of pid's tree for idleSeconds and returns the
// sample with the median RSS: the Go heap saw-tooths between collections,
// so a single sample could catch either end.
func idle(pid int, skip string, tick func()) usage {
	var samples []usage
	for i := range 2 * idleSeconds {
		if i%2 == 0 {
			tick()
		}
		time.Sleep(500 * time.Millisecond)
		samples = append(samples, tree(pid, skip))
	}
	slices.SortFunc(samples, func(a, b usage) int { return int(a.rss - b.rss) })
	u := samples[len(samples)/2]
	u.maxRSS = samples[len(samples)-1].rss
	return u
}

type usage struct {
	rss, pss   int64 // bytes
	anon, file int64 // RssAnon and RssFile (plus RssShmem in file), bytes
	n          int
	maxRSS     int64 // the highest sample, when idle made the usage
}

// tree sums the memory of pid and its descendants, leaving out processes
// whose command line contains skip (the agent, which is not avsidecar's).
func tree(pid int, skip string) usage {
	var u usage
	var walk func(int)
	walk = func(p int) {
		cl, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p))
		if skip != "" && strings.Contains(string(cl), skip) {
			return
		}
		status := fmt.Sprintf("/proc/%d/status", p)
		u.rss += field(status, "VmRSS:")
		u.anon += field(status, "RssAnon:")
		u.file += field(status, "RssFile:") + field(status, "RssShmem:")
		u.pss += field(fmt.Sprintf("/proc/%d/smaps_rollup", p), "Pss:")
		u.n++
		for _, c := range children(p) {
			walk(c)
		}
	}
	walk(pid)
	return u
}

// children lists pid's children; the kernel keeps them per thread.
func children(pid int) []int {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	var out []int
	for _, t := range tasks {
		b, _ := os.ReadFile(t)
		for _, f := range strings.Fields(string(b)) {
			n, _ := strconv.Atoi(f)
			out = append(out, n)
		}
	}
	return out
}

// field reads a "Name: N kB" line in bytes.
func field(path, name string) int64 {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), name) {
			f := strings.Fields(sc.Text())
			n, _ := strconv.ParseInt(f[1], 10, 64)
			return n * 1024
		}
	}
	return 0
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

func waitHTTP(addr, path string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c := http.Client{Timeout: time.Second}
	for {
		resp, err := c.Get("http://" + addr + path)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("GET %s%s never answered 200", addr, path)
		case <-time.After(200 * time.Microsecond):
		}
	}
}

// freePort is a port for the sidecar to listen on (testkit.PickPort).
func freePort() int {
	port, err := testkit.PickPort()
	if err != nil {
		panic(err)
	}
	return port
}

// prebuilt is -avsidecar.
var prebuilt string

// connBench is -conns, -sources and -hold.
var connBench struct {
	n, sources int
	hold       time.Duration
}

// idleConns opens connBench.n keep-alive connections to addr, one request
// each, keeps them idle for connBench.hold, then tries each again.
func idleConns(pid int, addr string) error {
	before := tree(pid, "avagent.bin")
	var conns []net.Conn
	served := 0
	for i := range connBench.n {
		ip := net.IPv4(127, 1, byte(i%connBench.sources/256), byte(1+i%connBench.sources%256))
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}, Timeout: 5 * time.Second}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			return fmt.Errorf("connection %d: %w", i, err)
		}
		conns = append(conns, c)
		if oneGet(c) {
			served++
		}
	}
	time.Sleep(time.Second)
	after := tree(pid, "avagent.bin")
	fmt.Printf("%d idle keep-alive connections from %d addresses: %d served, RSS %.2f -> %.2f MiB (+%.2f)\n",
		connBench.n, connBench.sources, served, mib(before.rss), mib(after.rss), mib(after.rss-before.rss))
	time.Sleep(connBench.hold)
	alive := 0
	for _, c := range conns {
		if oneGet(c) {
			alive++
		}
		c.Close()
	}
	fmt.Printf("after %v idle: %d of the %d served connections still answer; RSS %.2f MiB\n",
		connBench.hold, alive, served, mib(tree(pid, "avagent.bin").rss))
	return nil
}

// oneGet sends GET /livez on c and reports whether it was answered.
func oneGet(c net.Conn) bool {
	c.SetDeadline(time.Now().Add(5 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := fmt.Fprintf(c, "GET /livez HTTP/1.1\r\nHost: localhost\r\n\r\n"); err != nil {
		return false
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == 200
}
