// Command mktree makes a benchmark tree: -files empty files, -per-dir in
// each directory, directories nested with -fanout children each.
//
//	go run ./bench/browse/mktree -dir /tmp/bb/walk200k -files 200000
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sync"
)

func main() {
	dir := flag.String("dir", "", "directory to create (must not exist)")
	files := flag.Int("files", 10000, "number of files")
	perDir := flag.Int("per-dir", 100, "files per directory")
	fanout := flag.Int("fanout", 10, "subdirectories per directory")
	flag.Parse()
	if *dir == "" || *perDir < 1 || *fanout < 1 {
		fmt.Fprintln(os.Stderr, "usage: mktree -dir DIR [-files N] [-per-dir N] [-fanout N]")
		os.Exit(2)
	}
	ndirs := (*files + *perDir - 1) / *perDir
	paths := make([]string, ndirs)
	for i := range paths {
		if i == 0 {
			paths[i] = *dir
		} else {
			paths[i] = filepath.Join(paths[(i-1) / *fanout], fmt.Sprintf("d%05d", i))
		}
		if err := os.MkdirAll(paths[i], 0o755); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	var wg sync.WaitGroup
	work := make(chan int)
	for range 8 {
		wg.Go(func() {
			for i := range work {
				for j := 0; j < *perDir && i**perDir+j < *files; j++ {
					f, err := os.Create(filepath.Join(paths[i], fmt.Sprintf("file-%07d.dat", i**perDir+j)))
					if err != nil {
						fmt.Fprintln(os.Stderr, err)
						os.Exit(1)
					}
					f.Close()
				}
			}
		})
	}
	for i := range paths {
		work <- i
	}
	close(work)
	wg.Wait()
	fmt.Printf("%s: %d files in %d directories (%d entries)\n", *dir, *files, ndirs, *files+ndirs-1)
}
