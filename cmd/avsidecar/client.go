package main

import (
	"cmp"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"
)

// localAddr is where the local avsidecar's HTTP server answers: flagAddr,
// else AVSIDECAR_HTTP_ADDR, else :9180, with an unspecified host made
// loopback. A malformed address is a usage error.
func localAddr(flagAddr string) (string, error) {
	addr := cmp.Or(flagAddr, os.Getenv("AVSIDECAR_HTTP_ADDR"), ":9180")
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
