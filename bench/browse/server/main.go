// Command server runs browse.Handler alone on a port, for the benchmarks
// in bench/browse while `avsidecar run` is wired elsewhere.
//
//	go run ./bench/browse/server -addr 127.0.0.1:9181 -roots /tmp/bench
package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"strings"
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
