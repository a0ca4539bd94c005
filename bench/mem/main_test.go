package main

import (
	"bytes"
	"os"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/avsidecar/avsidecar/internal/testkit"
)

// TestSmoke runs the benchmark once, briefly, on this tree's sidecar
// alone: it must start a registered sidecar in a memory cgroup of its
// own, sample it in every phase and report a working set and an RSS for
// each. It checks that the benchmark works, not what it measures.
func TestSmoke(t *testing.T) {
	testkit.NeedRoot(t)
	testkit.NeedCommand(t, "unshare")
	testkit.NeedCommand(t, "ssh-keygen")
	_, err := parentCgroup()
	testkit.Need(t, err == nil, "the cgroup v1 memory controller")
	if err == nil {
		_, err = os.Stat(memRoot + "/memory.stat")
		testkit.Need(t, err == nil, "the cgroup v1 memory controller at "+memRoot)
	}

	*runs, *withPeers, *withTree = 1, false, true
	*idleFor, *probedFor, *scrapedFor = 2*time.Second, 2*time.Second, 3*time.Second
	*probeEvery, *scrapeEvery = time.Second, time.Second
	var out bytes.Buffer
	if err := run(&out, nil); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	t.Log(out.String())
	row := regexp.MustCompile(`(?m)^\| tree \| (idle|probed|probed\+scraped) \| [^|]+ \| \*\*([0-9.]+)\*\* \| [^|]+ \| \*\*([0-9.]+)\*\* \|`)
	rows := row.FindAllStringSubmatch(out.String(), -1)
	if len(rows) != 3 {
		t.Fatalf("want a row for each of the 3 phases in the report, found %d", len(rows))
	}
	for _, r := range rows {
		rss, _ := strconv.ParseFloat(r[2], 64)
		ws, _ := strconv.ParseFloat(r[3], 64)
		if rss <= 0 || ws <= 0 {
			t.Errorf("phase %s: RSS %v MiB, working set %v MiB: nothing measured", r[1], rss, ws)
		}
	}
}
