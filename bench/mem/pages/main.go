// Command pages says which pages of a running Go binary are mapped: by
// section, and by package for its code and read-only data. It reads
// /proc/PID/pagemap (root only) and the binary's symbol table, so the
// binary must be the unstripped build of the same code (without -s -w, the
// same flags otherwise: the sections keep their addresses).
//
//	go build -trimpath -tags nethttpomithttp2 -o avsidecar-syms ./cmd/avsidecar
//	go run ./bench/mem -bin syms=avsidecar-syms ... &   # then, while it runs:
//	go run ./bench/mem/pages -pid PID -bin avsidecar-syms [-top 40]
package main

import (
	"bufio"
	"debug/elf"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
)

func main() {
	pid := flag.Int("pid", 0, "the process")
	bin := flag.String("bin", "", "its binary, unstripped")
	top := flag.Int("top", 40, "packages to list")
	flag.Parse()
	if err := run(os.Stdout, *pid, *bin, *top); err != nil {
		fmt.Fprintln(os.Stderr, "pages:", err)
		os.Exit(1)
	}
}

const pageSize = 4096

func run(w io.Writer, pid int, bin string, top int) error {
	f, err := elf.Open(bin)
	if err != nil {
		return err
	}
	defer f.Close()
	resident, err := mappedPages(pid, bin)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "pages of %s mapped by pid %d: %.2f MiB\n", bin, pid, mib(len(resident)))
	for _, s := range f.Sections {
		if s.Addr == 0 || s.Flags&elf.SHF_ALLOC == 0 || s.Type == elf.SHT_NOBITS {
			continue
		}
		n := 0
		for p := s.Addr / pageSize; p < (s.Addr+s.Size+pageSize-1)/pageSize; p++ {
			if resident[p] {
				n++
			}
		}
		fmt.Fprintf(w, "  %-14s %6.2f MiB, mapped %6.2f MiB\n", s.Name, float64(s.Size)/(1<<20), mib(n))
	}

	// Each page of code and read-only data belongs to the package that
	// owns most of its bytes.
	syms, err := f.Symbols()
	if err != nil {
		return fmt.Errorf("%s has no symbol table (built with -s?): %w", bin, err)
	}
	owners := map[uint64]map[string]uint64{}
	for _, s := range syms {
		if s.Size == 0 || elf.ST_TYPE(s.Info) != elf.STT_FUNC && elf.ST_TYPE(s.Info) != elf.STT_OBJECT ||
			int(s.Section) >= len(f.Sections) || f.Sections[s.Section].Type == elf.SHT_NOBITS {
			continue // not in the file: .bss
		}
		pkg := packageOf(s.Name)
		for a := s.Value; a < s.Value+s.Size; {
			page := a / pageSize
			end := min(s.Value+s.Size, (page+1)*pageSize)
			if owners[page] == nil {
				owners[page] = map[string]uint64{}
			}
			owners[page][pkg] += end - a
			a = end
		}
	}
	total, mapped := map[string]int{}, map[string]int{}
	for page, byPkg := range owners {
		var best string
		for pkg, n := range byPkg {
			if n > byPkg[best] || n == byPkg[best] && pkg < best {
				best = pkg
			}
		}
		total[best]++
		if resident[page] {
			mapped[best]++
		}
	}
	pkgs := make([]string, 0, len(total))
	for p := range total {
		pkgs = append(pkgs, p)
	}
	slices.SortFunc(pkgs, func(a, b string) int { return total[b] - total[a] })
	fmt.Fprintf(w, "pages of code and data by package (mapped / in the binary, KiB):\n")
	for _, p := range pkgs[:min(top, len(pkgs))] {
		fmt.Fprintf(w, "  %6d / %6d  %s\n", mapped[p]*4, total[p]*4, p)
	}
	return nil
}

// packageOf names a symbol's package, or the module for a dependency's.
func packageOf(sym string) string {
	if strings.HasPrefix(sym, "go:") || strings.HasPrefix(sym, "type:") {
		name, _, _ := strings.Cut(sym, ".")
		return name
	}
	slash := strings.LastIndex(sym, "/")
	pkg, _, _ := strings.Cut(sym[slash+1:], ".")
	pkg = sym[:slash+1] + pkg
	for _, prefix := range []string{"github.com/", "golang.org/x/", "vendor/golang.org/x/"} {
		rest, ok := strings.CutPrefix(pkg, prefix)
		if !ok || strings.HasPrefix(pkg, "github.com/avsidecar/") {
			continue
		}
		parts := strings.Split(rest, "/")
		n := 1
		if prefix == "github.com/" {
			n = 2
		}
		return prefix + strings.Join(parts[:min(n, len(parts))], "/")
	}
	return pkg
}

// mappedPages returns the pages (address / pageSize) of bin's mappings in
// pid that are present in memory.
func mappedPages(pid int, bin string) (map[uint64]bool, error) {
	st, err := os.Stat(bin)
	if err != nil {
		return nil, err
	}
	maps, err := os.Open(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		return nil, err
	}
	defer maps.Close()
	pagemap, err := os.Open(fmt.Sprintf("/proc/%d/pagemap", pid))
	if err != nil {
		return nil, err
	}
	defer pagemap.Close()
	out := map[uint64]bool{}
	found := false
	sc := bufio.NewScanner(maps)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 {
			continue
		}
		// The process runs a copy (bench/mem copies each binary): match
		// on the size, not the path.
		if m, err := os.Stat(fields[5]); err != nil || m.Size() != st.Size() {
			continue
		}
		found = true
		lo, hi, _ := strings.Cut(fields[0], "-")
		start, _ := strconv.ParseUint(lo, 16, 64)
		end, _ := strconv.ParseUint(hi, 16, 64)
		buf := make([]byte, 8*(end-start)/pageSize)
		if _, err := pagemap.ReadAt(buf, int64(start/pageSize*8)); err != nil {
			return nil, fmt.Errorf("read pagemap: %w", err)
		}
		for i := range (end - start) / pageSize {
			if binary.LittleEndian.Uint64(buf[i*8:])&(1<<63) != 0 {
				out[start/pageSize+i] = true
			}
		}
	}
	if !found {
		return nil, fmt.Errorf("pid %d maps no file the size of %s", pid, bin)
	}
	return out, sc.Err()
}

func mib(pages int) float64 { return float64(pages) * pageSize / (1 << 20) }
