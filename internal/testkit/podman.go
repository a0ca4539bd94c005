package testkit

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Images shared between runs: the base is what `debootstrap --variant=minbase`
// makes, trimmed like debian:bookworm-slim.
const (
	// PodmanBaseImage is the local Debian base image of the container tests.
	PodmanBaseImage = "localhost/debian:bookworm"
	// podmanLock serialises the base image's creation between processes.
	podmanLock = "/var/tmp/avsidecar-podman-base.lock"
)

// podmanGlobal are the flags every podman call needs on this kind of host:
// crun and cgroup v2 do not work here, runc with cgroupfs does.
var podmanGlobal = []string{"--runtime", "/usr/sbin/runc", "--cgroup-manager=cgroupfs"}

// PodmanLimits keep containers within the host's limits; pass them to
// `podman run` and `podman build`.
var PodmanLimits = []string{"--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"}

// podmanConf is the containers.conf of the test's podman calls. Pods have
// no --ulimit flag, and their infra container fails to start with the
// host's default limits; default_ulimits covers it and every container.
const podmanConf = `[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
`

// Podman runs podman commands for one test and removes what it made.
type Podman struct {
	t testing.TB
	// ID makes this run's names unique, so runs of other engineers and
	// other processes on the host do not collide.
	ID string
	// conf is the path of podmanConf, passed as CONTAINERS_CONF.
	conf string
}

// NewPodman needs root, podman and runc, and returns a Podman for tb.
func NewPodman(tb testing.TB) *Podman {
	tb.Helper()
	NeedRoot(tb)
	NeedCommand(tb, "podman")
	NeedCommand(tb, "runc")
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		tb.Fatal(err)
	}
	conf := filepath.Join(tb.TempDir(), "containers.conf")
	if err := os.WriteFile(conf, []byte(podmanConf), 0o644); err != nil {
		tb.Fatal(err)
	}
	return &Podman{t: tb, ID: hex.EncodeToString(b), conf: conf}
}

// Name is a resource name unique to this run.
func (p *Podman) Name(what string) string { return "avs-" + p.ID + "-" + what }

// Cmd is a podman command with the host's global flags and configuration.
func (p *Podman) Cmd(ctx context.Context, args ...string) *exec.Cmd {
	c := exec.CommandContext(ctx, "podman", append(append([]string{}, podmanGlobal...), args...)...)
	c.Env = append(os.Environ(), "CONTAINERS_CONF="+p.conf)
	return c
}

// Run runs podman and returns its trimmed stdout; a failure fails the test
// with podman's stderr.
func (p *Podman) Run(args ...string) string {
	p.t.Helper()
	out, err := p.Try(args...)
	if err != nil {
		p.t.Fatal(err)
	}
	return out
}

// Try is Run without failing the test.
func (p *Podman) Try(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	c := p.Cmd(ctx, args...)
	var stdout, stderr bytes.Buffer
	c.Stdout, c.Stderr = &stdout, &stderr
	if err := c.Run(); err != nil {
		return stdout.String(), fmt.Errorf("podman %s: %w\n%s%s", strings.Join(args, " "), err, stdout.Bytes(), stderr.Bytes())
	}
	return strings.TrimSpace(stdout.String()), nil
}

// Cleanup runs podman with args at the end of the test; failures are
// logged, not fatal, so one leftover does not hide the test's own result.
func (p *Podman) Cleanup(args ...string) {
	p.t.Cleanup(func() {
		if _, err := p.Try(args...); err != nil {
			p.t.Logf("cleanup: %v", err)
		}
	})
}

// ImageExists reports whether the image ref is in podman's store.
func (p *Podman) ImageExists(ref string) bool {
	_, err := p.Try("image", "exists", ref)
	return err == nil
}

// BaseImage returns the local Debian base image ref (PodmanBaseImage),
// making it once per host with debootstrap when it does not exist (under a
// minute with a reachable mirror).
func (p *Podman) BaseImage(ref string) string {
	p.t.Helper()
	if p.ImageExists(ref) {
		return ref
	}
	lock, err := os.OpenFile(podmanLock, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		p.t.Fatal(err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		p.t.Fatal(err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if p.ImageExists(ref) { // made while we waited
		return ref
	}
	NeedCommand(p.t, "debootstrap")
	dir := p.t.TempDir()
	rootfs := filepath.Join(dir, "rootfs")
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "debootstrap", "--variant=minbase", "bookworm", rootfs, "http://deb.debian.org/debian").CombinedOutput(); err != nil {
		p.t.Fatalf("debootstrap: %v\n%s", err, out)
	}
	// What debian:bookworm-slim leaves out: downloaded packages, package
	// lists (apt-get update fetches them again), documentation, locales.
	for _, glob := range []string{"var/cache/apt/archives/*.deb", "var/lib/apt/lists/*", "usr/share/doc/*", "usr/share/man/*", "usr/share/locale/*", "usr/share/info/*"} {
		matches, _ := filepath.Glob(filepath.Join(rootfs, glob))
		for _, m := range matches {
			if err := os.RemoveAll(m); err != nil {
				p.t.Fatal(err)
			}
		}
	}
	tarCmd := exec.CommandContext(ctx, "tar", "-C", rootfs, "-c", ".")
	imp := p.Cmd(ctx, "import", "-q", "-", ref)
	pipe, err := tarCmd.StdoutPipe()
	if err != nil {
		p.t.Fatal(err)
	}
	imp.Stdin = pipe
	var stderr bytes.Buffer
	imp.Stderr = &stderr
	if err := tarCmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	if err := imp.Run(); err != nil {
		p.t.Fatalf("podman import: %v\n%s", err, stderr.Bytes())
	}
	if err := tarCmd.Wait(); err != nil {
		p.t.Fatalf("tar: %v", err)
	}
	p.t.Logf("made %s with debootstrap in %s", ref, time.Since(start).Round(time.Second))
	return ref
}

// Build runs podman build and removes the image at the end of the test.
// No layer cache: these images change with every binary, and cached
// intermediate layers would pile up on the host run after run.
func (p *Podman) Build(tag, containerfile, context string, args ...string) string {
	p.t.Helper()
	full := append([]string{"build", "-q", "--layers=false", "-f", containerfile, "-t", tag}, PodmanLimits...)
	p.Run(append(append(full, args...), context)...)
	p.Cleanup("rmi", "-f", tag)
	return tag
}

// CachedImage returns repo:TAG built from the Containerfile text cf (FROM
// base), where TAG is a hash of the base's image id and cf: built once,
// kept for the next runs, and always current. Files are extra files of
// the build context, by name.
func (p *Podman) CachedImage(repo, base, cf string, files map[string][]byte) string {
	p.t.Helper()
	baseID := p.Run("image", "inspect", "--format", "{{.Id}}", base)
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s", baseID, cf)
	for name, b := range files {
		fmt.Fprintf(h, "\n%s %x", name, sha256.Sum256(b))
	}
	tag := repo + ":" + hex.EncodeToString(h.Sum(nil)[:6])
	if p.ImageExists(tag) {
		return tag
	}
	dir := p.t.TempDir()
	files["Containerfile"] = []byte(cf)
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o755); err != nil {
			p.t.Fatal(err)
		}
	}
	full := append([]string{"build", "-q", "-f", filepath.Join(dir, "Containerfile"), "-t", tag}, PodmanLimits...)
	p.Run(append(full, dir)...)
	return tag // kept: the next run reuses it
}

// ProductImage builds the product's image as the README documents for
// sites without a Go image: the static binary built on the host
// (CGO_ENABLED=0, BuildTags, stripped) into dist/, then the Dockerfile's
// prebuilt target on base. It returns the image (removed when the test
// ends) and the binary's path.
func (p *Podman) ProductImage(base string) (image, binary string) {
	p.t.Helper()
	root, err := ModuleRoot()
	if err != nil {
		p.t.Fatal(err)
	}
	ctxDir := p.t.TempDir()
	binary = filepath.Join(ctxDir, "dist", "avsidecar")
	build := exec.Command("go", "build", "-trimpath", "-tags", BuildTags, "-ldflags=-s -w", "-o", binary, "./cmd/avsidecar")
	build.Dir, build.Env = root, append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		p.t.Fatalf("go build: %v\n%s", err, out)
	}
	image = p.Build("localhost/avsidecar-test:"+p.ID, filepath.Join(root, "Dockerfile"), ctxDir,
		"--target", "prebuilt", "--build-arg", "BASE_IMAGE="+base)
	return image, binary
}

// SiteImage builds examples/nginx/Dockerfile on product with a kit RPM
// made with opts, as step 2 of the example's README does with a site's
// RPM. It returns the image (removed when the test ends) and the RPM's
// path.
func (p *Podman) SiteImage(product, tag string, opts RPMOptions) (image, rpm string) {
	p.t.Helper()
	root, err := ModuleRoot()
	if err != nil {
		p.t.Fatal(err)
	}
	dir := p.t.TempDir()
	rpm = WriteRPM(p.t, dir, opts)
	image = p.Build(tag, filepath.Join(root, "examples/nginx/Dockerfile"), dir, "--build-arg", "AVSIDECAR_IMAGE="+product)
	return image, rpm
}
