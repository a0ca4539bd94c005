package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
)

// statusCmd prints the local /v1/status, indented.
func statusCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "", "HOST:PORT of avsidecar's HTTP server (default from AVSIDECAR_HTTP_ADDR)")
	if err := fs.Parse(args); err != nil {
		return usageError("%v", err)
	}
	local, err := localAddr(*addr)
	if err != nil {
		return err
	}
	code, body, err := localGet(local, "/v1/status")
	if err != nil {
		return err
	}
	if code != 200 {
		return fmt.Errorf("status answered HTTP %d: %s", code, bytes.TrimSpace(body))
	}
	var out bytes.Buffer
	if err := json.Indent(&out, body, "", "  "); err != nil {
		return fmt.Errorf("status is not JSON: %w", err)
	}
	out.WriteByte('\n')
	_, err = stdout.Write(out.Bytes())
	return err
}
