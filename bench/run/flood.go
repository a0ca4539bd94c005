package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/avsidecar/avsidecar/internal/testkit"
)

// floodBench is -flood: measure the probes from 127.0.0.1 under the floods
// of issue 23 instead of idle memory. floodChild is -floodchild ADDR,KIND:
// be the flooding process (a process of its own, as a hostile process in
// the pod is, so that it does not slow the probes down in this one).
var (
	floodBench bool
	floodChild string
)

// probeEvery is the pace of the probes during a flood: 100 in 25 s.
const probeEvery = 250 * time.Millisecond

// floodKinds are the floods of issue 23: a process holding 64 silent
// connections from each of 16 loopback addresses, and 800 slowloris
// connections from 127.0.0.1 trickling a header line every 5 s; each
// connection is opened again as soon as the server closes it.
var floodKinds = map[string]struct {
	sources []string
	per     int
	talk    func(net.Conn, <-chan struct{})
}{
	"aliases":   {[]string{"127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6", "127.0.0.7", "127.0.0.8", "127.0.0.9", "127.0.0.10", "127.0.0.11", "127.0.0.12", "127.0.0.13", "127.0.0.14", "127.0.0.15", "127.0.0.16", "127.0.0.17"}, 64, nil},
	"slowloris": {[]string{"127.0.0.1"}, 800, testkit.Slowloris},
}

// runFloodChild floods as -floodchild says until it is killed.
func runFloodChild(spec string) error {
	addr, kind, _ := strings.Cut(spec, ",")
	fl, ok := floodKinds[kind]
	if !ok {
		return fmt.Errorf("no flood %q", kind)
	}
	testkit.Flood(addr, fl.sources, fl.per, fl.talk)
	fmt.Println("flooding")
	select {}
}

// floods measures the probes alone, then during each flood.
func floods(httpAddr string) error {
	fmt.Printf("probes: GET /livez from 127.0.0.1 every %v, a new connection each, as the kubelet sends them; ok = 200 within 1 s (the kubelet's default timeout)\n", probeEvery)
	report("no flood", probes(httpAddr, 100), dropped(httpAddr))
	for _, fl := range []struct{ kind, name string }{
		{"aliases", "16 loopback addresses x 64 silent connections"},
		{"slowloris", "800 slowloris connections from 127.0.0.1"},
	} {
		stop, err := flood(httpAddr, fl.kind)
		if err != nil {
			return err
		}
		report(fl.name, probes(httpAddr, 100), dropped(httpAddr))
		stop()
	}
	return nil
}

// flood starts a flooding process and gives it 2 s to take its slots.
func flood(addr, kind string) (stop func(), err error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, "-floodchild", addr+","+kind)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	stop = func() { cmd.Process.Kill(); cmd.Wait() }
	if line, err := bufio.NewReader(out).ReadString('\n'); line != "flooding\n" {
		stop()
		return nil, fmt.Errorf("flooding process: %q %v", line, err)
	}
	time.Sleep(2 * time.Second)
	return stop, nil
}

// result is one probe: its status (0: no answer) and how long it took.
type result struct {
	code int
	took time.Duration
}

// probes sends n probes at probeEvery, each on its own connection, waiting
// up to 2 minutes for an answer (a dropped SYN is retried for that long).
func probes(addr string, n int) []result {
	out := make([]result, n)
	var wg sync.WaitGroup
	tick := time.NewTicker(probeEvery)
	defer tick.Stop()
	client := &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{DisableKeepAlives: true,
		DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}}).DialContext}}
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest("GET", "http://"+addr+"/livez", nil)
			req.Header.Set("User-Agent", "kube-probe/1.31")
			req.Header.Set("Accept", "*/*")
			t0 := time.Now()
			resp, err := client.Do(req)
			out[i].took = time.Since(t0)
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				out[i].code = resp.StatusCode
			}
		}()
		<-tick.C
	}
	wg.Wait()
	return out
}

// dropped reads avsidecar_http_connections_dropped_total, trying until a
// scrape gets through.
func dropped(addr string) string {
	for range 50 {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "avsidecar_http_connections_dropped_total "); ok {
				return v
			}
		}
		return "?"
	}
	return "no scrape got through"
}

func report(name string, rs []result, dropped string) {
	ok, answered := 0, 0
	var took []time.Duration
	for _, r := range rs {
		if r.code == 200 {
			answered++
			if r.took <= time.Second {
				ok++
			}
		}
		took = append(took, r.took)
	}
	slices.Sort(took)
	ms := func(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }
	fmt.Printf("  %-48s ok %3d/%d (200 at all: %d)  /livez p50 %s  p90 %s  max %s  dropped_total %s\n",
		name, ok, len(rs), answered, ms(took[len(took)/2]), ms(took[len(took)*9/10]), ms(took[len(took)-1]), dropped)
}
