// Command sshd-harness runs avsidecar's embedded SSH server alone, for the
// benchmarks in run.sh: sftp throughput against OpenSSH's sshd, and the
// resident memory the server adds (compare with -noserver, the same
// binary with the server left out).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/avsidecar/avsidecar/internal/sshd"
	"github.com/rs/zerolog"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	keys := flag.String("keys", "", "authorized_keys file")
	hostKeys := flag.String("hostkeys", "", "host key directory")
	dir := flag.String("dir", "/", "session working directory")
	noServer := flag.Bool("noserver", false, "start nothing: the baseline for RSS")
	verbose := flag.Bool("v", false, "log at info level to stderr")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if *noServer {
		fmt.Println("ready baseline")
		<-ctx.Done()
		return
	}
	level := zerolog.WarnLevel
	if *verbose {
		level = zerolog.InfoLevel
	}
	log := zerolog.New(os.Stderr).Level(level).With().Timestamp().Str("component", "sshd").Logger()
	srv, err := sshd.New(sshd.Config{
		Addr:               *addr,
		AuthorizedKeysFile: *keys,
		HostKeyDir:         *hostKeys,
		Dir:                *dir,
	}, log)
	if err == nil {
		err = srv.Listen()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "sshd-harness:", err)
		os.Exit(1)
	}
	fmt.Println("ready", srv.Addr())
	if err := srv.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "sshd-harness:", err)
		os.Exit(1)
	}
}
