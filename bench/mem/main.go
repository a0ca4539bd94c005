// Command mem measures the memory of a registered `avsidecar run` the way
// Kubernetes measures a container (issue 21): each subject runs as PID 1 of
// its own PID namespace in a memory cgroup of its own, and the benchmark
// reports, idle, while probed as the kubelet probes, and while probed and
// scraped as Prometheus scrapes,
//
//   - RSS: VmRSS, RssAnon and RssFile (+RssShmem) of /proc/PID/status,
//     summed over the container's processes;
//   - the working set as the kubelet reports it and limits act on it:
//     memory.usage_in_bytes minus total_inactive_file of memory.stat
//     (cAdvisor's setMemoryStats on cgroup v1).
//
// The sidecar runs against the test kit, as `avkit demo` does: the fake
// client RPM (installed at the start), the fake MCS (registered), the REST
// stand-in over TLS (the backup freshness check on), SSH with one
// authorized key, browse on two roots. avagent is moved to a sibling
// cgroup once it runs (charges move with it): it is the workload, not the
// sidecar, and the kit's agent is not the real one. Every program is a
// fresh copy dropped from the page cache, so its container is charged for
// the pages it reads, as a container is for its image's files.
//
// The peers run the same way in the same run: the old recipe's resident
// part (sh running `sshd -D`, as the whitepaper's run.sh ends; sh, sshd and
// their libraries copied into an image directory of their own), a static
// Go net/http server answering the same probes and scrapes, and
// tini-static with one child (moved out like avagent).
//
//	go run ./bench/mem [-runs 3] [-bin LABEL=PATH[,VAR=VALUE...]]... [-tree=false] [-peers=false]
//
// Root and cgroup v1's memory controller (/sys/fs/cgroup/memory) are
// needed; the cgroups are made inside this process's own.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/avsidecar/avsidecar/internal/testkit"
)

// Flags.
var (
	runs         = flag.Int("runs", 3, "rounds; each measures every subject once")
	withTree     = flag.Bool("tree", true, "build and measure this tree's avsidecar (Dockerfile flags)")
	withPeers    = flag.Bool("peers", true, "measure the old recipe, a static Go net/http server and tini-static")
	idleFor      = flag.Duration("idle", 20*time.Second, "idle phase: nothing asks")
	probedFor    = flag.Duration("probed", 30*time.Second, "probed phase: /livez, /readyz and /startupz every -probe-every")
	scrapedFor   = flag.Duration("scraped", 45*time.Second, "probed and scraped phase: /metrics every -scrape-every as well")
	probeEvery   = flag.Duration("probe-every", 2*time.Second, "time between two rounds of probes")
	scrapeEvery  = flag.Duration("scrape-every", 5*time.Second, "time between two scrapes")
	restInterval = flag.Duration("rest-interval", time.Minute, "AVAMAR_REST_INTERVAL of the sidecar")
	compression  = flag.String("compression", "gzip", "payload compression of the kit's RPM (gzip, xz, zstd)")
	tiniPath     = flag.String("tini", "/usr/bin/tini-static", "tini-static, a peer")
	keep         = flag.Bool("keep", false, "keep the working directory (logs, roots)")
)

// binFlags are the -bin LABEL=PATH flags.
type binFlags []subject

func (b *binFlags) String() string { return "" }
func (b *binFlags) Set(v string) error {
	label, rest, ok := strings.Cut(v, "=")
	path, env, _ := strings.Cut(rest, ",")
	if !ok || label == "" || path == "" {
		return fmt.Errorf("want LABEL=PATH[,VAR=VALUE...], got %q", v)
	}
	s := subject{label: label, kind: sidecarKind, bin: path}
	if env != "" {
		s.env = strings.Split(env, ",")
	}
	*b = append(*b, s)
	return nil
}

func main() {
	var bins binFlags
	flag.Var(&bins, "bin", "an avsidecar binary to measure, as LABEL=PATH[,VAR=VALUE...] (repeatable: an older build, or the same with other settings)")
	flag.Parse()
	if err := run(os.Stdout, bins); err != nil {
		fmt.Fprintln(os.Stderr, "bench/mem:", err)
		os.Exit(1)
	}
}

// phase is a stretch of time with a given load.
type phase struct {
	name          string
	d             time.Duration
	probe, scrape bool
}

func run(w io.Writer, subjects []subject) error {
	parent, err := parentCgroup()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "avsidecar-bench-mem-")
	if err != nil {
		return err
	}
	if *keep {
		fmt.Fprintln(w, "working directory:", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	avkit := filepath.Join(dir, "avkit")
	if err := testkit.GoBuild(avkit, "./cmd/avkit"); err != nil {
		return err
	}
	if *withTree {
		tree := filepath.Join(dir, "avsidecar-tree")
		if err := shippedBuild(tree, "./cmd/avsidecar"); err != nil {
			return err
		}
		subjects = append(subjects, subject{label: "tree", kind: sidecarKind, bin: tree})
	}
	k, err := newKit(dir, avkit, *compression)
	if err != nil {
		return err
	}
	defer k.close()
	if *withPeers {
		k.goServer = filepath.Join(dir, "go-http")
		if err := shippedBuild(k.goServer, "./bench/mem/gohttp"); err != nil {
			return err
		}
		if k.oldRoot, err = buildOldRecipeImage(dir); err != nil {
			return err
		}
		subjects = append(subjects,
			subject{label: "old recipe: sh + sshd -D", kind: oldRecipe},
			subject{label: "static Go net/http server", kind: goHTTP},
			subject{label: "tini-static", kind: tiniKind, bin: *tiniPath})
	}
	if len(subjects) == 0 {
		return fmt.Errorf("nothing to measure: give -bin, or leave -tree or -peers on")
	}

	phases := []phase{{"idle", *idleFor, false, false}, {"probed", *probedFor, true, false}, {"probed+scraped", *scrapedFor, true, true}}
	load, _ := os.ReadFile("/proc/loadavg")
	fmt.Fprintf(w, "bench/mem %s; load %s; payload %s; probes every %v, scrapes every %v, REST check every %v\n",
		time.Now().Format("2006-01-02 15:04"), strings.Join(strings.Fields(string(load))[:3], " "), *compression, *probeEvery, *scrapeEvery, *restInterval)

	results := map[string][][]result{} // subject -> run -> phase
	ctx := context.Background()
	for r := range *runs {
		// Each round starts with another subject, so none always runs
		// right after the same neighbour.
		order := append(slices.Clone(subjects[r%len(subjects):]), subjects[:r%len(subjects)]...)
		for _, s := range order {
			name := fmt.Sprintf("mem-%d-%d-%s", os.Getpid(), r, slug(s.label))
			wd := filepath.Join(dir, name)
			if err := os.MkdirAll(wd, 0o755); err != nil {
				return err
			}
			in, err := k.start(ctx, s, wd, parent, name)
			if err != nil {
				return err
			}
			var rs []result
			for _, ph := range phases {
				if (ph.probe || ph.scrape) && !s.serves() {
					continue
				}
				rs = append(rs, summarize(ph.name, measure(in, ph)))
			}
			in.stop()
			results[s.label] = append(results[s.label], rs)
			for _, res := range rs {
				fmt.Fprintf(w, "run %d  %-28s %-15s %s\n", r+1, s.label, res.phase, res)
			}
		}
	}
	report(w, subjects, results)
	return nil
}

// shippedBuild builds pkg as the Dockerfile builds the image's binary.
func shippedBuild(out, pkg string) error {
	root, err := testkit.ModuleRoot()
	if err != nil {
		return err
	}
	cmd := exec.Command("go", "build", "-trimpath", "-tags", testkit.BuildTags, "-ldflags=-s -w", "-o", out, pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", pkg, err, b)
	}
	return nil
}

// measure samples the container once a second for the phase, probing and
// scraping as the phase says.
func measure(in *instance, ph phase) []sample {
	scraper := &http.Client{Timeout: 10 * time.Second} // Prometheus keeps its connection
	var samples []sample
	var nextProbe, nextScrape time.Time
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	end := time.Now().Add(ph.d)
	for now := time.Now(); now.Before(end); now = <-tick.C {
		if ph.probe && !now.Before(nextProbe) {
			for _, p := range []string{"/livez", "/readyz", "/startupz"} {
				get(in.addr, p)
			}
			nextProbe = now.Add(*probeEvery)
		}
		if ph.scrape && !now.Before(nextScrape) {
			scrape(scraper, in.addr)
			nextScrape = now.Add(*scrapeEvery)
		}
		samples = append(samples, in.c.sample())
	}
	return samples
}

// scrape asks for /metrics as Prometheus 3 does.
func scrape(c *http.Client, addr string) {
	req, _ := http.NewRequest("GET", "http://"+addr+"/metrics", nil)
	req.Header.Set("Accept", "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,text/plain;version=0.0.4;q=0.2,*/*;q=0.1")
	req.Header.Set("Accept-Encoding", "gzip")
	req.Header.Set("User-Agent", "Prometheus/3.5.0")
	req.Header.Set("X-Prometheus-Scrape-Timeout-Seconds", "10")
	resp, err := c.Do(req)
	if err != nil {
		return
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
}

// result is a phase's samples, summed up.
type result struct {
	phase   string
	rss     sample // the sample of median RSS
	ws      sample // the sample of median working set
	maxRSS  int64
	maxWS   int64
	samples int
}

func summarize(name string, samples []sample) result {
	r := result{phase: name, samples: len(samples)}
	byRSS := slices.SortedFunc(slices.Values(samples), func(a, b sample) int { return int(a.rss - b.rss) })
	byWS := slices.SortedFunc(slices.Values(samples), func(a, b sample) int { return int(a.ws - b.ws) })
	r.rss, r.maxRSS = byRSS[len(byRSS)/2], byRSS[len(byRSS)-1].rss
	r.ws, r.maxWS = byWS[len(byWS)/2], byWS[len(byWS)-1].ws
	return r
}

func (r result) String() string {
	return fmt.Sprintf("RSS %6.2f MiB (anon %5.2f + file %5.2f; max %5.2f)  working set %6.2f MiB (max %5.2f; anon %5.2f, active file %5.2f, inactive file %5.2f, kernel %5.2f)",
		mib(r.rss.rss), mib(r.rss.anon), mib(r.rss.file), mib(r.maxRSS),
		mib(r.ws.ws), mib(r.maxWS), mib(r.ws.statRSS), mib(r.ws.activeFile), mib(r.ws.inactive), mib(r.ws.kmem))
}

// report prints a Markdown table: per subject and phase, each run's
// median RSS and working set, and the median over the runs.
func report(w io.Writer, subjects []subject, results map[string][][]result) {
	fmt.Fprintf(w, "\nMedians of each run (MiB; RSS as anon + file), and the median over the runs:\n\n")
	fmt.Fprintf(w, "| subject | phase | RSS per run | RSS | working set per run | working set | highest sample (RSS / WS) |\n")
	fmt.Fprintf(w, "| --- | --- | --- | --- | --- | --- | --- |\n")
	for _, s := range subjects {
		runs := results[s.label]
		if len(runs) == 0 {
			continue
		}
		for i, ph := range runs[0] {
			var rssCells, wsCells []string
			var rss, ws []int64
			var maxRSS, maxWS int64
			for _, rs := range runs {
				r := rs[i]
				rssCells = append(rssCells, fmt.Sprintf("%.2f (%.2f + %.2f)", mib(r.rss.rss), mib(r.rss.anon), mib(r.rss.file)))
				wsCells = append(wsCells, fmt.Sprintf("%.2f", mib(r.ws.ws)))
				rss, ws = append(rss, r.rss.rss), append(ws, r.ws.ws)
				maxRSS, maxWS = max(maxRSS, r.maxRSS), max(maxWS, r.maxWS)
			}
			fmt.Fprintf(w, "| %s | %s | %s | **%.2f** | %s | **%.2f** | %.2f / %.2f |\n", s.label, ph.phase,
				strings.Join(rssCells, ", "), mib(median(rss)), strings.Join(wsCells, ", "), mib(median(ws)), mib(maxRSS), mib(maxWS))
		}
	}
}

func median(v []int64) int64 {
	s := slices.Sorted(slices.Values(v))
	return s[len(s)/2]
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// slug makes a label fit a cgroup's name.
func slug(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r >= 'A' && r <= 'Z' || r == '-' || r == '.' {
			return r
		}
		return '_'
	}, s)
}
