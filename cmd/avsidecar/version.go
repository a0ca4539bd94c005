package main

import (
	"fmt"
	"io"
	"runtime"

	"github.com/avsidecar/avsidecar/internal/buildinfo"
)

func versionCmd(args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		return usageError("version takes no arguments")
	}
	fmt.Fprintf(stdout, "avsidecar %s %s %s/%s\n", buildinfo.Version(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return nil
}
