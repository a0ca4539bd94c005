// Command server runs browse.Handler alone on a port, for the benchmarks
// in bench/browse while `avsidecar run` is wired elsewhere.
//
//	go run ./bench/browse/server -addr 127.0.0.1:9181 -roots /tmp/bench
package main

import (
	"container/list"
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/avsidecar/avsidecar/internal/browse"
	"github.com/rs/zerolog"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:9181", "listen address")
	roots := flag.String("roots", "", "comma-separated browse roots")
	maxLimit := flag.Int("max-limit", 0, "largest page size (0: browse default)")
	workers := flag.Int("workers", 0, "walk workers (0: browse default)")
	cacheDirs := flag.Int("cache-dirs", 0, "cached directories, negative: off (0: browse default)")
	maxReads := flag.Int("max-reads", 0, "directory reads at once (0: browse default)")
	maxWalks := flag.Int("max-walks", 0, "walks and du at once (0: browse default)")
	idle := flag.Duration("idle-timeout", 0, "http.Server IdleTimeout (0: none, as avsidecar run today)")
	readTimeout := flag.Duration("read-timeout", 0, "http.Server ReadTimeout (0: none)")
	maxHeader := flag.Int("max-header-bytes", 0, "http.Server MaxHeaderBytes (0: Go's 1 MB)")
	maxConns := flag.Int("max-conns", 0, "connections kept at most, the oldest idle closed first (0: no cap)")
	flag.Parse()

	log := zerolog.New(os.Stderr).With().Timestamp().Str("component", "browse").Logger().Level(zerolog.InfoLevel)
	h, err := browse.New(browse.Config{
		Roots:       strings.Split(*roots, ","),
		MaxLimit:    *maxLimit,
		WalkWorkers: *workers,
		CacheDirs:   *cacheDirs,
		MaxReads:    *maxReads,
		MaxWalks:    *maxWalks,
	}, log)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	srv := &http.Server{Addr: *addr, Handler: h, ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout: *idle, ReadTimeout: *readTimeout, MaxHeaderBytes: *maxHeader}
	if *maxConns > 0 {
		srv.ConnState = (&connCap{max: *maxConns, idle: map[net.Conn]*list.Element{}}).track
	}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	go h.Run(ctx)
	if err := srv.ListenAndServe(); err != nil && err != http.ErrServerClosed {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// connCap bounds the open connections without ever blocking accept (so a
// kubelet probe is never queued behind idle connections): past max, a new
// connection closes the oldest idle one, and is itself closed when none is
// idle. A prototype for the server of avsidecar run, to measure.
type connCap struct {
	max int

	mu    sync.Mutex
	open  int
	idle  map[net.Conn]*list.Element
	order list.List // idle connections, oldest first
}

func (c *connCap) track(conn net.Conn, state http.ConnState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.idle[conn]; ok {
		c.order.Remove(e)
		delete(c.idle, conn)
	}
	switch state {
	case http.StateNew:
		c.open++
		if c.open > c.max {
			if e := c.order.Front(); e != nil {
				old := c.order.Remove(e).(net.Conn)
				delete(c.idle, old)
				old.Close() // its StateClosed comes later and counts it out
			} else {
				conn.Close()
			}
		}
	case http.StateIdle:
		c.idle[conn] = c.order.PushBack(conn)
	case http.StateClosed, http.StateHijacked:
		c.open--
	}
}
