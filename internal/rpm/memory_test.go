package rpm

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"
	"testing"
)

// payloadMemoryBound is what reading the payload of any package may
// cost a process at its peak, whatever the cores: the parallel xz
// budget, the readahead's and the archive's buffers, and the Go runtime
// and test binary around them. (README.md, "Install memory", says what a
// whole install costs.)
const payloadMemoryBound = 320 << 20

// childEnv names the package a child process of TestMain reads.
const childEnv = "AVSIDECAR_TEST_READ_PAYLOAD"

func TestMain(m *testing.M) {
	if path := os.Getenv(childEnv); path != "" {
		if err := readPayload(path); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// readPayload reads the whole payload of the package at path, as an
// install does (every digest checked), and writes nothing.
func readPayload(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	p, err := Read(f, st.Size())
	if err != nil {
		return err
	}
	ar, err := p.Open(f)
	if err != nil {
		return err
	}
	defer ar.Close()
	return drain(ar)
}

// drain reads every entry of ar and its content to the end.
func drain(ar *Archive) error {
	for {
		e, err := ar.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if e.Content {
			if _, err := io.Copy(io.Discard, ar); err != nil {
				return err
			}
		}
	}
}

// TestPayloadMemoryBounded reads a package of about 1.2 GB of files that
// rpmbuild compressed with w7T2.xzdio (xz -7, two threads: 24 blocks of
// 48 MiB, each with a 16 MiB dictionary) in a child process with
// GOMAXPROCS 16 and 2, and wants the child's peak RSS under
// payloadMemoryBound both times: memory is bounded by bytes, not by
// cores. (Decoding every block at once, on 16 cores, took 2.8 GB.)
//
// The files are zeros after a random head: xz compresses them at once
// where random data would take minutes, and what a decode holds is the
// blocks' decoded data and dictionaries, the same whatever the data,
// since the compressed blocks are read from the file as they are
// decoded.
func TestPayloadMemoryBounded(t *testing.T) {
	const MiB = 1 << 20
	path := rpmbuildFiles(t, "w7T2.xzdio",
		"for i in $(seq 24); do head -c 65536 /dev/urandom > f$i; head -c $((48*1024*1024 - 65536)) /dev/zero >> f$i; done")
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := f.Stat()
	p, err := Read(f, st.Size())
	if err != nil {
		t.Fatal(err)
	}
	blocks, _ := xzIndex(io.NewSectionReader(f, p.PayloadOffset, p.Size-p.PayloadOffset), p.Size-p.PayloadOffset)
	f.Close()
	if len(blocks) < 24 || blocks[0].uncompressed != 48*MiB || blocks[0].dict != 16*MiB {
		t.Fatalf("%d blocks (%+v), want 24 of 48 MiB with a 16 MiB dictionary", len(blocks), blocks[:min(len(blocks), 1)])
	}
	for _, procs := range []int{16, 2} {
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), childEnv+"="+path, fmt.Sprintf("GOMAXPROCS=%d", procs))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("GOMAXPROCS=%d: reading the payload: %v\n%s", procs, err, out)
		}
		peak := cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss << 10
		t.Logf("GOMAXPROCS=%d: peak RSS %d MiB", procs, peak/MiB)
		if peak > payloadMemoryBound {
			t.Errorf("GOMAXPROCS=%d: peak RSS %d MiB, over the bound of %d MiB", procs, peak/MiB, payloadMemoryBound/MiB)
		}
	}
}
