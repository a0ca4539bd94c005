package sidecar

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/avsidecar/avsidecar/internal/testkit"
)

// TestMain makes the test binary a flooding process when asked
// (AVSIDECAR_TEST_FLOOD=ADDR,KIND): a process of its own, as a hostile
// process in the pod would be, so that its goroutines do not starve the
// test's probes of CPU in the Go scheduler. It prints "flooding" once every
// connection was dialled, and floods until it is killed.
func TestMain(m *testing.M) {
	if spec := os.Getenv("AVSIDECAR_TEST_FLOOD"); spec != "" {
		addr, kind, _ := strings.Cut(spec, ",")
		fl := floods[kind]
		testkit.Flood(addr, fl.sources, fl.per, fl.talk)
		fmt.Println("flooding")
		select {}
	}
	os.Exit(m.Run())
}

// flood is one of the floods of issue 23.
type flood struct {
	sources []string
	per     int
	talk    func(net.Conn, <-chan struct{})
}

var floods = map[string]flood{
	"16 loopback addresses x 64 silent connections": {loopbackAliases(16), 64, nil},
	"800 slowloris connections from 127.0.0.1":      {[]string{"127.0.0.1"}, 800, testkit.Slowloris},
}

// loopbackAliases are 127.0.0.2 and the n-1 addresses after it.
func loopbackAliases(n int) []string {
	var out []string
	for i := range n {
		out = append(out, fmt.Sprintf("127.0.0.%d", 2+i))
	}
	return out
}

// startFlood runs a flood of floods against addr in a child process until
// the test ends, and returns once every connection was dialled.
func startFlood(t *testing.T, addr, kind string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "AVSIDECAR_TEST_FLOOD="+addr+","+kind)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if line != "flooding\n" {
		t.Fatalf("the flooding process said %q (%v)", line, err)
	}
}

// TestProbesAnswerDuringFloods: the kubelet's probes, and `avsidecar
// probe` over loopback, are answered while a process in the pod floods
// the HTTP port, with the production limits: 64 silent connections from
// each of 16 loopback addresses, or 800 slowloris connections from
// 127.0.0.1, each opened again as soon as the server closes it. Every
// probe from 127.0.0.1 gets its 200, on a new connection each, as the
// kubelet sends them; so does every probe from a non-loopback address of
// the host (the node's address, as the kubelet probes), when it has one.
func TestProbesAnswerDuringFloods(t *testing.T) {
	w := newWorld(t)
	w.cfg.HTTPAddr = ":0" // loopback and the host's own addresses
	s, _, _ := w.start(t)
	_, port, _ := net.SplitHostPort(s.Addr().String())
	sources := map[string]string{"127.0.0.1": "127.0.0.1"}
	if node := nodeAddress(); node != "" {
		sources["the node's address "+node] = node
	}
	for _, name := range []string{"16 loopback addresses x 64 silent connections", "800 slowloris connections from 127.0.0.1"} {
		t.Run(name, func(t *testing.T) {
			startFlood(t, "127.0.0.1:"+port, name)
			// The flood holds every slot loopback may have.
			for deadline := time.Now().Add(30 * time.Second); s.httpLn.Open() < defaultHTTPLimits.MaxConnsPerClient; {
				if time.Now().After(deadline) {
					t.Fatalf("the flood holds %d connections after 30 s", s.httpLn.Open())
				}
				time.Sleep(10 * time.Millisecond)
			}
			for name, src := range sources {
				failed := 0
				var last error
				for range 100 {
					if err := probe(src, net.JoinHostPort(src, port), "/livez"); err != nil {
						failed++
						last = err
					}
				}
				if failed > 0 {
					t.Errorf("from %s: %d of 100 probes failed during the flood, the last: %v (dropped %d)", name, failed, last, s.httpLn.Dropped())
				}
			}
		})
	}
}

// probe is one kubelet probe: GET path from the local address src on a
// new connection, which must answer 200. The timeout only bounds a hang.
func probe(src, addr, path string) error {
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
		DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}).DialContext}}
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
	req.Header.Set("User-Agent", "kube-probe/1.31")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return nil
}

// nodeAddress is a non-loopback IPv4 address of this host, or "".
func nodeAddress() string {
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && !ipn.IP.IsLoopback() && ipn.IP.To4() != nil && !ipn.IP.IsLinkLocalUnicast() {
			return ipn.IP.String()
		}
	}
	return ""
}
