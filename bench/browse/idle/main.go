// Command idle opens keep-alive connections to a server, sends one request
// on each and then holds them idle, to measure what idle connections cost
// the server and whether it closes them.
//
//	go run ./bench/browse/idle -addr 127.0.0.1:9185 -conns 8000 -hold 70s
//
// It prints when all are idle (so a script can read the server's RSS
// then) and, after -hold, how many the server has closed.
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:9185", "server address")
	n := flag.Int("conns", 1000, "connections")
	path := flag.String("path", "/v1/roots", "the request sent on each")
	hold := flag.Duration("hold", 10*time.Second, "how long to hold them idle before counting")
	headerBytes := flag.Int("header-bytes", 0, "instead: send a header line of this many bytes and never end the request")
	flag.Parse()

	conns := make([]net.Conn, 0, *n)
	var failed int
	for range *n {
		c, err := net.DialTimeout("tcp", *addr, 5*time.Second)
		if err != nil {
			failed++
			continue
		}
		if *headerBytes > 0 {
			// A request that is all header, never ended: the server holds it
			// until ReadHeaderTimeout or refuses it past MaxHeaderBytes.
			go fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: %s", *path, strings.Repeat("a", *headerBytes))
			conns = append(conns, c)
			continue
		}
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", *path)
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			failed++
			c.Close()
			continue
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		conns = append(conns, c)
	}
	if *headerBytes > 0 {
		// Let the headers arrive before the server's memory is read.
		time.Sleep(*hold / 2)
	}
	fmt.Printf("idle: %d connections, %d failed\n", len(conns), failed)
	os.Stdout.Sync()
	time.Sleep(*hold)

	// A closed connection reads EOF (or a reset) at once; an open one
	// times out.
	var mu sync.Mutex
	var wg sync.WaitGroup
	closed := 0
	for _, c := range conns {
		wg.Go(func() {
			c.SetReadDeadline(time.Now().Add(time.Second))
			_, err := c.Read(make([]byte, 1))
			var ne net.Error
			if !(errors.As(err, &ne) && ne.Timeout()) {
				mu.Lock()
				closed++
				mu.Unlock()
			}
			c.Close()
		})
	}
	wg.Wait()
	fmt.Printf("after %s: %d of %d closed by the server\n", *hold, closed, len(conns))
}
