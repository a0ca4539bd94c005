package main

import (
	"fmt"
	"io"
	"runtime"

	"github.com/avsidecar/avsidecar/internal/buildinfo"
)

// versionCmd prints the version, the VCS revision when the binary carries
// one (the same as /v1/status and avsidecar_build_info), and the Go
// toolchain and platform.
func versionCmd(args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		return usageError("version takes no arguments")
	}
	rev := ""
	if r := buildinfo.Revision(); r != "" {
		rev = " revision " + r
	}
	fmt.Fprintf(stdout, "avsidecar %s%s %s %s/%s\n", buildinfo.Version(), rev, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return nil
}
