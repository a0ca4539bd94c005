package main

import (
	"cmp"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/avsidecar/avsidecar/internal/config"
)

// localConfig is the configuration of the commands that ask the local
// avsidecar (probe, status, ls): the variables run reads, with the same
// defaults. A bad value is a usage error.
func localConfig() (config.Config, error) {
	cfg, err := config.Load(config.ScopeLocal, config.Sources{})
	if err != nil {
		return cfg, &exitError{Code: exitConfig, Err: err}
	}
	return cfg, nil
}

// addrFlag is --addr of the commands that ask the local avsidecar.
func addrFlag(fs *flag.FlagSet) *string {
	return fs.String("addr", "", "HOST:PORT of avsidecar's HTTP server; an empty or unspecified host is 127.0.0.1 (default $AVSIDECAR_HTTP_ADDR, else :9180)")
}

// localAddr is where the local avsidecar's HTTP server answers: flagAddr,
// else AVSIDECAR_HTTP_ADDR, with an unspecified host made loopback. A
// malformed address is a usage error.
func localAddr(flagAddr string) (string, error) {
	var cfg config.Config
	if flagAddr == "" {
		var err error
		if cfg, err = localConfig(); err != nil {
			return "", err
		}
	}
	addr := cmp.Or(flagAddr, cfg.HTTPAddr)
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", usageError("HTTP address %q: %v", addr, err)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port), nil
}

// localGet fetches path from the local avsidecar.
func localGet(addr, path string) (int, []byte, error) {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + addr + path)
	if err != nil {
		return 0, nil, fmt.Errorf("ask avsidecar at %s: %w", addr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return 0, nil, fmt.Errorf("read answer of %s: %w", addr, err)
	}
	return resp.StatusCode, body, nil
}
