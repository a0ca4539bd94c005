// Command xzlibs compares the two maintained Go xz decoders the installer
// could use, ulikunitz/xz and therootcompany/xz (XZ Embedded), on the xz
// payloads of real packages: decode speed, the memory a process pays for
// a decode, and what each does with corrupt input. It is its own module
// so that the loser never enters avsidecar's go.mod.
//
//	go run . PKG.rpm...                 # speed and memory, per package
//	go run . -corrupt 1000 PKG.rpm      # bit flips and truncations
//
// Each decode of the speed test runs in a child process of its own
// (this program again, with -child), so that its maximum RSS is the
// decode's alone.
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"syscall"
	"time"

	"github.com/cavaliergopher/rpm"
	rcxz "github.com/therootcompany/xz"
	uxz "github.com/ulikunitz/xz"
)

// maxDict bounds the dictionary XZ Embedded allocates, as the installer
// does. ulikunitz/xz has no such bound: its DictCap is the least it
// allocates, the stream's own dictionary size is taken when larger.
const maxDict = 256 << 20

var libs = map[string]func(io.Reader) (io.Reader, error){
	"ulikunitz": func(r io.Reader) (io.Reader, error) {
		return uxz.ReaderConfig{SingleStream: true}.NewReader(r)
	},
	"therootcompany": func(r io.Reader) (io.Reader, error) {
		z, err := rcxz.NewReader(r, maxDict)
		if err != nil {
			return nil, err
		}
		z.Multistream(false)
		return z, nil
	},
}

func main() {
	runs := flag.Int("runs", 3, "decodes per package and library")
	corrupt := flag.Int("corrupt", 0, "flip this many bits, one at a time, instead of timing")
	child := flag.String("child", "", "decode with this library and report (internal)")
	flag.Parse()
	if *child != "" {
		os.Exit(decodeChild(*child, flag.Arg(0)))
	}
	for _, path := range flag.Args() {
		payload, err := xzPayload(path)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		if *corrupt > 0 {
			corruptTest(path, payload, *corrupt)
			continue
		}
		timeTest(path, *runs)
	}
}

// xzPayload returns the compressed payload of an RPM, or the file itself
// when it is not an RPM.
func xzPayload(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if _, err := rpm.Read(f); err != nil {
		return os.ReadFile(path)
	}
	return io.ReadAll(f)
}

func decodeChild(lib, path string) int {
	payload, err := xzPayload(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	start := time.Now()
	z, err := libs[lib](bytes.NewReader(payload))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	n, err := io.CopyBuffer(io.Discard, z, make([]byte, 1<<20))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println(n, time.Since(start).Seconds())
	return 0
}

// timeTest decodes the payload runs times with each library, alternating,
// each in a child process, and prints the median time, the speed and the
// child's maximum RSS less the compressed payload it holds.
func timeTest(path string, runs int) {
	st, _ := os.Stat(path)
	times := map[string][]float64{}
	cpu := map[string][]float64{}
	rss := map[string]int64{}
	var out int64
	names := []string{"therootcompany", "ulikunitz"}
	for range runs {
		for _, lib := range names {
			cmd := exec.Command(os.Args[0], "-child", lib, path)
			cmd.Stderr = os.Stderr
			b, err := cmd.Output()
			if err != nil {
				fmt.Fprintln(os.Stderr, lib, err)
				os.Exit(1)
			}
			var secs float64
			fmt.Sscan(string(b), &out, &secs)
			times[lib] = append(times[lib], secs)
			ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
			cpu[lib] = append(cpu[lib], (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds())
			rss[lib] = max(rss[lib], ru.Maxrss<<10)
		}
	}
	fmt.Printf("%s: %.1f MB compressed, %.1f MB out, %d runs each\n", path, float64(st.Size())/1e6, float64(out)/1e6, runs)
	for _, lib := range names {
		med, c := median(times[lib]), median(cpu[lib])
		fmt.Printf("  %-15s wall median %.3f s (min %.3f), CPU median %.3f s, %.1f MB/s of CPU, max RSS %.0f MiB\n",
			lib, med, slices.Min(times[lib]), c, float64(out)/1e6/c, float64(rss[lib])/(1<<20))
	}
	fmt.Printf("  ulikunitz/therootcompany: wall %.2fx, CPU %.2fx\n",
		median(times["ulikunitz"])/median(times["therootcompany"]), median(cpu["ulikunitz"])/median(cpu["therootcompany"]))
}

func median(s []float64) float64 {
	s = slices.Sorted(slices.Values(s))
	return s[len(s)/2]
}

// corruptTest flips n random bits of the payload, one at a time, and
// truncates it at n/10 random places, and counts what each library does:
// refuse, give the intact output (a bit that changes nothing decoded),
// give other output without an error (the failure that matters), or
// panic.
func corruptTest(path string, payload []byte, n int) {
	want, err := decode("ulikunitz", payload)
	if err != nil {
		fmt.Fprintln(os.Stderr, "intact payload:", err)
		os.Exit(1)
	}
	type counts struct{ refused, intact, wrong, panicked int }
	flips := map[string]*counts{}
	cuts := map[string]*counts{}
	for lib := range libs {
		flips[lib], cuts[lib] = &counts{}, &counts{}
	}
	count := func(c *counts, got []byte, err error) {
		var pe panicError
		switch {
		case errors.As(err, &pe):
			c.panicked++
		case err != nil:
			c.refused++
		case bytes.Equal(got, want):
			c.intact++
		default:
			c.wrong++
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range n {
		bad := bytes.Clone(payload)
		i := rng.IntN(len(bad))
		bad[i] ^= 1 << rng.IntN(8)
		for lib := range libs {
			got, err := decode(lib, bad)
			count(flips[lib], got, err)
		}
	}
	for range n / 10 {
		cut := rng.IntN(len(payload))
		for lib := range libs {
			got, err := decode(lib, payload[:cut])
			count(cuts[lib], got, err)
		}
	}
	fmt.Printf("%s: %d bytes of payload, %d bit flips, %d truncations\n", path, len(payload), n, n/10)
	for _, lib := range []string{"therootcompany", "ulikunitz"} {
		f, c := flips[lib], cuts[lib]
		fmt.Printf("  %-15s flips: %d refused, %d intact, %d other output, %d panics; truncations: %d refused, %d other output, %d panics\n",
			lib, f.refused, f.intact, f.wrong, f.panicked, c.refused, c.wrong+c.intact, c.panicked)
	}
}

type panicError struct{ v any }

func (p panicError) Error() string { return fmt.Sprint("panic: ", p.v) }

func decode(lib string, payload []byte) (out []byte, err error) {
	defer func() {
		if v := recover(); v != nil {
			err = panicError{v}
		}
	}()
	z, err := libs[lib](bytes.NewReader(payload))
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	_, err = io.Copy(&b, z)
	return b.Bytes(), err
}
