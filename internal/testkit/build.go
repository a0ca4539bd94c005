package testkit

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// Binaries are the project's commands, built for a test process.
type Binaries struct {
	// Avsidecar is the path of the avsidecar binary.
	Avsidecar string
	// Avkit is the path of the avkit binary (the kit's CLI and fake agent).
	Avkit string
}

var (
	binDirOnce sync.Once
	binDir     string
	binDirErr  error

	avkitOnce     sync.Once
	avkitErr      error
	avsidecarOnce sync.Once
	avsidecarErr  error
)

// BuildBinaries builds ./cmd/avsidecar and ./cmd/avkit with CGO_ENABLED=0,
// once per test process, and returns their paths. The binaries stay for
// the life of the process (a later process removes them).
func BuildBinaries(tb testing.TB) Binaries {
	tb.Helper()
	return Binaries{Avsidecar: BuildAvsidecar(tb), Avkit: BuildAvkit(tb)}
}

// BuildAvkit builds only ./cmd/avkit, for tests that do not need the
// product, and returns its path.
func BuildAvkit(tb testing.TB) string {
	tb.Helper()
	return buildOnce(tb, &avkitOnce, &avkitErr, "avkit")
}

// BuildAvsidecar builds only ./cmd/avsidecar and returns its path.
func BuildAvsidecar(tb testing.TB) string {
	tb.Helper()
	return buildOnce(tb, &avsidecarOnce, &avsidecarErr, "avsidecar")
}

func buildOnce(tb testing.TB, once *sync.Once, errp *error, name string) string {
	tb.Helper()
	dir, err := testBinDir()
	if err != nil {
		tb.Fatal(err)
	}
	out := filepath.Join(dir, name)
	once.Do(func() { *errp = GoBuild(out, "./cmd/"+name) })
	if *errp != nil {
		tb.Fatal(*errp)
	}
	return out
}

// BuildTags are the build tags of the shipped binary (see the Dockerfile),
// so that tests and benchmarks run what a pod runs.
const BuildTags = "nethttpomithttp2"

// GoBuild builds the package pkg of this module (e.g. ./cmd/avkit) into
// out, statically (CGO_ENABLED=0) and with BuildTags.
func GoBuild(out, pkg string) error {
	root, err := ModuleRoot()
	if err != nil {
		return err
	}
	cmd := exec.Command("go", "build", "-tags", BuildTags, "-o", out, pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", pkg, err, b)
	}
	return nil
}

// ModuleRoot returns the directory of this module's go.mod.
func ModuleRoot() (string, error) {
	b, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(b))
	if gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("go env GOMOD: not inside the module")
	}
	return filepath.Dir(gomod), nil
}

// testBinDir is this process's directory for built binaries. Directories
// of processes that have ended are removed on the way.
func testBinDir() (string, error) {
	binDirOnce.Do(func() {
		const pattern = "avsidecar-testbin-"
		old, _ := filepath.Glob(filepath.Join(os.TempDir(), pattern+"*"))
		for _, d := range old {
			pid, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(d), pattern))
			if err != nil {
				continue
			}
			if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); os.IsNotExist(err) {
				_ = os.RemoveAll(d)
			}
		}
		binDir = filepath.Join(os.TempDir(), pattern+strconv.Itoa(os.Getpid()))
		binDirErr = os.MkdirAll(binDir, 0o755)
	})
	return binDir, binDirErr
}

// WriteRPM builds the fake client RPM into dir (building avkit first if
// needed, and using it as the agent unless opts names one) and returns the
// RPM's path.
func WriteRPM(tb testing.TB, dir string, opts RPMOptions) string {
	tb.Helper()
	if opts.AgentBinary == "" {
		opts.AgentBinary = BuildAvkit(tb)
	}
	p, err := BuildRPMFile(dir, opts)
	if err != nil {
		tb.Fatal(err)
	}
	return p
}
