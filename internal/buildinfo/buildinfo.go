// Package buildinfo says which avsidecar this is: the release version and
// the VCS revision it was built from, for `avsidecar version`, /v1/status
// and the build_info metric.
package buildinfo

import (
	"cmp"
	"runtime/debug"
	"sync"
)

// version and revision may be set at build time, for builds outside a git
// checkout (the image's builder gets no .git):
//
//	-ldflags "-X github.com/avsidecar/avsidecar/internal/buildinfo.version=1.2.0
//	          -X github.com/avsidecar/avsidecar/internal/buildinfo.revision=0123abcd"
//
// Unset, they come from the build information Go stamps into the binary.
var version, revision string

// info is read once: status and every metrics scrape ask for it.
var info = sync.OnceValues(func() (string, string) {
	v, r := version, revision
	if bi, ok := debug.ReadBuildInfo(); ok {
		stamped, dirty := "", false
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				stamped = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
		if r == "" && stamped != "" {
			r = stamped
			if dirty {
				r += "-dirty"
			}
		}
		if bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			v = cmp.Or(v, bi.Main.Version)
		}
	}
	if v == "" && len(r) >= 12 {
		v = "dev-" + r[:12]
	}
	return cmp.Or(v, "dev"), r
})

// Version is the release version, else the module version, else "dev-"
// and the first 12 digits of the revision, else "dev".
func Version() string { v, _ := info(); return v }

// Revision is the VCS revision the binary was built from ("-dirty" when the
// tree had changes), or "" when unknown.
func Revision() string { _, r := info(); return r }
