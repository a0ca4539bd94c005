package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"sync"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = ""

// buildVersion is the release version, else the module version or VCS
// revision the binary was built from. It is read once: status and every
// metrics scrape ask for it.
var buildVersion = sync.OnceValue(func() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			return bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				return "dev-" + s.Value[:12]
			}
		}
	}
	return "dev"
})

func versionCmd(args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		return usageError("version takes no arguments")
	}
	fmt.Fprintf(stdout, "avsidecar %s %s %s/%s\n", buildVersion(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return nil
}
