package install

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/rpmpack"
)

// manyFiles is a package big enough that an install takes a while: n
// files of incompressible content over 20 directories. Version v changes
// every third file's content and drops or adds a few.
func manyFiles(v, n int) []rpmpack.RPMFile {
	rng := rand.New(rand.NewPCG(1, uint64(v)))
	files := []rpmpack.RPMFile{dir(testPrefix, 0o755), dir(testPrefix+"/var", 0o755), config(testPrefix+"/etc/client.cfg", fmt.Sprintf("version=%d\n", v))}
	for d := range 20 {
		files = append(files, dir(fmt.Sprintf("%s/lib/d%02d", testPrefix, d), 0o755))
	}
	files = append(files, dir(testPrefix+"/lib", 0o755), dir(testPrefix+"/etc", 0o755))
	for i := range n {
		if (i+v)%17 == 0 {
			continue // in one version, not the other
		}
		body := make([]byte, 8<<10+rng.IntN(24<<10))
		for j := range body {
			body[j] = byte(rng.Uint32())
		}
		if i%3 != 0 {
			// The same in every version.
			r := rand.New(rand.NewPCG(2, uint64(i)))
			for j := range body {
				body[j] = byte(r.Uint32())
			}
		}
		name := fmt.Sprintf("%s/lib/d%02d/f%04d", testPrefix, i%20, i)
		files = append(files, file(name, 0o644, string(body)))
		if i%50 == 0 {
			files = append(files, symlink(name+".link", fmt.Sprintf("f%04d", i)))
		}
	}
	return append(files, file("/etc/init.d/avagent", 0o755, fmt.Sprintf("#!/bin/sh\n# v%d\n", v)))
}

// TestKillDuringInstall kills `avsidecar install` at random moments of an
// upgrade (and sometimes of the run after it) and checks that the next
// run, whichever version it installs, leaves exactly the tree a clean
// install of that version leaves, with its receipt and without leftovers.
func TestKillDuringInstall(t *testing.T) {
	bin := avsidecarBinary(t)
	rounds := 24
	if testing.Short() {
		rounds = 6
	}
	pkgs := map[int][]byte{1: pack(t, packOpts{version: "1", files: manyFiles(1, 400)}), 2: pack(t, packOpts{version: "2", files: manyFiles(2, 400)})}
	skip := []string{"opt/avamar/var/avsidecar", "pkgs"}
	placeRPMs := func(root string) {
		for v, b := range pkgs {
			writeFile(t, filepath.Join(root, fmt.Sprintf("pkgs/v%d.rpm", v)), string(b))
		}
	}
	install := func(root string, v int) *exec.Cmd {
		return exec.Command(bin, "install", "--root", root, "--rpm", fmt.Sprintf("/pkgs/v%d.rpm", v), "--prefix", "/opt/avamar", "--nosync")
	}

	// The reference trees: 1 alone, and 1 then 2. The shortest install
	// bounds the kill moments, so that most kills land during one.
	want := map[int]map[string]node{}
	ref := t.TempDir()
	placeRPMs(ref)
	full := time.Duration(1 << 62)
	timed := func(root string, v int) {
		start := time.Now()
		if out, err := install(root, v).CombinedOutput(); err != nil {
			t.Fatalf("install %d: %v\n%s", v, err, out)
		}
		full = min(full, time.Since(start))
	}
	for _, v := range []int{1, 2} {
		timed(ref, v)
		want[v] = snapshot(t, ref, skip...)
	}
	// A clean install of 1 is what a fresh root holds after 1 alone.
	fresh := t.TempDir()
	placeRPMs(fresh)
	timed(fresh, 1)
	diffTrees(t, want[1], snapshot(t, fresh, skip...))
	t.Logf("shortest install: %v", full)

	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	killed := 0
	for round := range rounds {
		root := t.TempDir()
		placeRPMs(root)
		if out, err := install(root, 1).CombinedOutput(); err != nil {
			t.Fatalf("install 1: %v\n%s", err, out)
		}
		// One or two killed attempts, then one that runs to the end.
		attempts := 1 + rng.IntN(2)
		for a := range attempts {
			v := 1 + rng.IntN(2)
			if a == 0 {
				v = 2 // an upgrade: 1 is installed, so 1 would have nothing to do
			}
			cmd := install(root, v)
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			after := time.Duration(rng.Int64N(int64(full) * 5 / 4))
			timer := time.AfterFunc(after, func() { _ = cmd.Process.Signal(syscall.SIGKILL) })
			err := cmd.Wait()
			timer.Stop()
			if ee, ok := err.(*exec.ExitError); ok && ee.Sys().(syscall.WaitStatus).Signaled() {
				killed++
			} else if err != nil {
				t.Fatalf("round %d: install failed without being killed: %v\n%s", round, err, out.String())
			}
		}
		final := 1 + rng.IntN(2)
		if out, err := install(root, final).CombinedOutput(); err != nil {
			t.Fatalf("round %d: install %d after a kill: %v\n%s", round, final, err, out)
		}
		diffTrees(t, want[final], snapshot(t, root, skip...))
		checkClean(t, root, final, pkgs[final])
		if t.Failed() {
			t.Fatalf("round %d (final version %d) did not recover", round, final)
		}
	}
	t.Logf("%d rounds, %d installs killed mid-way", rounds, killed)
	if killed < rounds/3 {
		t.Errorf("only %d kills landed during an install: the test does not test much", killed)
	}
}

// checkClean checks the receipt names version v, no journal is left and
// no temporary file either.
func checkClean(t *testing.T, root string, v int, rpm []byte) {
	t.Helper()
	state := filepath.Join(root, "opt/avamar/var/avsidecar")
	b, err := os.ReadFile(filepath.Join(state, receiptName))
	if err != nil {
		t.Fatalf("no receipt: %v", err)
	}
	var r receipt
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	if r.Version != fmt.Sprint(v) {
		t.Errorf("receipt is for version %s, want %d", r.Version, v)
	}
	if exists(filepath.Join(state, journalName)) {
		t.Errorf("journal left behind")
	}
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.Contains(d.Name(), tmpSuffix) {
			t.Errorf("temporary file left: %s", p)
		}
		return nil
	})
}
