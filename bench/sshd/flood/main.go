// Command flood holds stalled SSH handshakes open against a server, for
// bench/sshd/flood.sh: from each source address it keeps -conns
// connections that connect and fall silent (-mode silent) or send a
// version line and fall silent (-mode banner), and opens a new one
// whenever the server closes one, until SIGTERM.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	addr := flag.String("addr", "", "server address")
	sources := flag.String("sources", "127.0.0.1", "comma-separated source addresses")
	conns := flag.Int("conns", 32, "connections kept per source")
	mode := flag.String("mode", "banner", "silent or banner")
	ready := flag.Int("ready", 16, `print "ready" once this many connections are held`)
	flag.Parse()
	if *mode != "silent" && *mode != "banner" {
		fmt.Fprintln(os.Stderr, "flood: -mode must be silent or banner")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	var held, attempts, admitted atomic.Int64
	var once sync.Once
	var mu sync.Mutex
	open := map[net.Conn]struct{}{}
	var wg sync.WaitGroup
	for src := range strings.SplitSeq(*sources, ",") {
		for range *conns {
			wg.Go(func() {
				d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
				for ctx.Err() == nil {
					c, err := d.DialContext(ctx, "tcp", *addr)
					if err != nil {
						continue
					}
					attempts.Add(1)
					mu.Lock()
					open[c] = struct{}{}
					mu.Unlock()
					if *mode == "banner" {
						c.Write([]byte("SSH-2.0-flood\r\n")) //nolint:errcheck // a closed connection is seen by the read
					}
					buf := make([]byte, len("SSH-2.0-"))
					if _, err := io.ReadFull(c, buf); err == nil && bytes.Equal(buf, []byte("SSH-2.0-")) {
						admitted.Add(1)
						if held.Add(1) >= int64(*ready) {
							once.Do(func() { fmt.Println("ready") })
						}
						io.Copy(io.Discard, c) //nolint:errcheck // returns when the server closes it
						held.Add(-1)
					}
					mu.Lock()
					delete(open, c)
					mu.Unlock()
					c.Close()
				}
			})
		}
	}
	<-ctx.Done()
	mu.Lock()
	for c := range open {
		c.Close()
	}
	mu.Unlock()
	wg.Wait()
	fmt.Printf("attempts %d admitted %d\n", attempts.Load(), admitted.Load())
}
