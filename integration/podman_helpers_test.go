package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/avsidecar/avsidecar/internal/testkit"
)

// Images shared between runs: the base is what `debootstrap --variant=minbase`
// makes, trimmed like debian:bookworm-slim; other tests may use it too.
const (
	podmanBaseImage  = "localhost/debian:bookworm"
	podmanNginxImage = "localhost/avsidecar-test-nginx"
	// podmanLock serialises the base image's creation between processes.
	podmanLock = "/var/tmp/avsidecar-podman-base.lock"
)

// podmanGlobal are the flags every podman call needs on this kind of host:
// crun and cgroup v2 do not work here, runc with cgroupfs does.
var podmanGlobal = []string{"--runtime", "/usr/sbin/runc", "--cgroup-manager=cgroupfs"}

// podmanLimits keep containers within the host's limits.
var podmanLimits = []string{"--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"}

// podmanConf is the containers.conf of the test's podman calls. Pods have
// no --ulimit flag, and their infra container fails to start with the
// host's default limits; default_ulimits covers it and every container.
const podmanConf = `[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
`

// podman runs podman commands for one test and removes what it made.
type podman struct {
	t *testing.T
	// id makes this run's names unique, so runs of other engineers and
	// other processes on the host do not collide.
	id string
	// conf is the path of podmanConf, passed as CONTAINERS_CONF.
	conf string
}

func newPodman(t *testing.T) *podman {
	t.Helper()
	testkit.NeedRoot(t)
	testkit.NeedCommand(t, "podman")
	testkit.NeedCommand(t, "runc")
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(t.TempDir(), "containers.conf")
	if err := os.WriteFile(conf, []byte(podmanConf), 0o644); err != nil {
		t.Fatal(err)
	}
	return &podman{t: t, id: hex.EncodeToString(b), conf: conf}
}

// name is a resource name unique to this run.
func (p *podman) name(what string) string { return "avs-" + p.id + "-" + what }

func (p *podman) cmd(ctx context.Context, args ...string) *exec.Cmd {
	c := exec.CommandContext(ctx, "podman", append(append([]string{}, podmanGlobal...), args...)...)
	c.Env = append(os.Environ(), "CONTAINERS_CONF="+p.conf)
	return c
}

// run runs podman and returns its trimmed stdout; a failure fails the test
// with podman's stderr.
func (p *podman) run(args ...string) string {
	p.t.Helper()
	out, err := p.try(args...)
	if err != nil {
		p.t.Fatal(err)
	}
	return out
}

// try is run without failing the test.
func (p *podman) try(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	c := p.cmd(ctx, args...)
	var stdout, stderr bytes.Buffer
	c.Stdout, c.Stderr = &stdout, &stderr
	if err := c.Run(); err != nil {
		return stdout.String(), fmt.Errorf("podman %s: %w\n%s%s", strings.Join(args, " "), err, stdout.Bytes(), stderr.Bytes())
	}
	return strings.TrimSpace(stdout.String()), nil
}

// cleanup removes something at the end of the test; failures are logged,
// not fatal, so one leftover does not hide the test's own result.
func (p *podman) cleanup(args ...string) {
	p.t.Cleanup(func() {
		if _, err := p.try(args...); err != nil {
			p.t.Logf("cleanup: %v", err)
		}
	})
}

func (p *podman) imageExists(ref string) bool {
	_, err := p.try("image", "exists", ref)
	return err == nil
}

// baseImage returns the local Debian base image ref (podmanBaseImage),
// making it once per host with debootstrap when it does not exist (under a
// minute with a reachable mirror).
func (p *podman) baseImage(ref string) string {
	p.t.Helper()
	if p.imageExists(ref) {
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
	if p.imageExists(ref) { // made while we waited
		return ref
	}
	testkit.NeedCommand(p.t, "debootstrap")
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
	imp := p.cmd(ctx, "import", "-q", "-", ref)
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

// build runs podman build and removes the image at the end of the test.
// No layer cache: these images change with every binary, and cached
// intermediate layers would pile up on the host run after run.
func (p *podman) build(tag, containerfile, context string, args ...string) string {
	p.t.Helper()
	full := append([]string{"build", "-q", "--layers=false", "-f", containerfile, "-t", tag}, podmanLimits...)
	p.run(append(append(full, args...), context)...)
	p.cleanup("rmi", "-f", tag)
	return tag
}

// nginxContainerfile is an nginx image from the local Debian base, with
// Debian's nginx-light from apt, logging to the container's output.
const nginxContainerfile = `FROM %s
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nginx-light \
 && rm -rf /var/lib/apt/lists/* \
 && ln -sf /dev/stdout /var/log/nginx/access.log \
 && ln -sf /dev/stderr /var/log/nginx/error.log
STOPSIGNAL SIGQUIT
CMD ["nginx", "-g", "daemon off;"]
`

// nginxImage returns the nginx image, built once per base image and
// Containerfile: its tag is their hash, so a cached one is always current.
func (p *podman) nginxImage(base string) string {
	p.t.Helper()
	baseID := p.run("image", "inspect", "--format", "{{.Id}}", base)
	cf := fmt.Sprintf(nginxContainerfile, base)
	sum := sha256.Sum256([]byte(baseID + "\n" + cf))
	tag := podmanNginxImage + ":" + hex.EncodeToString(sum[:6])
	if p.imageExists(tag) {
		return tag
	}
	dir := p.t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "Containerfile"), []byte(cf), 0o644); err != nil {
		p.t.Fatal(err)
	}
	full := append([]string{"build", "-q", "-f", filepath.Join(dir, "Containerfile"), "-t", tag}, podmanLimits...)
	p.run(append(full, dir)...)
	return tag // kept: the next run reuses it
}

// containerState is the part of podman inspect the test reads.
type containerState struct {
	State struct {
		Status   string
		Running  bool
		ExitCode int
		Pid      int
	}
	NetworkSettings struct {
		Networks map[string]struct {
			IPAddress string
		}
	}
}

func (p *podman) inspect(name string) containerState {
	p.t.Helper()
	var s []containerState
	if err := json.Unmarshal([]byte(p.run("container", "inspect", name)), &s); err != nil || len(s) != 1 {
		p.t.Fatalf("inspect %s: %v (%d results)", name, err, len(s))
	}
	return s[0]
}

// follow streams `podman logs -f` of a container into a log the test can
// wait on, until the container stops or the test ends. Every line is also
// logged by the test, prefixed with who.
func (p *podman) follow(container, who string) *logLines {
	p.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c := p.cmd(ctx, "logs", "-f", container)
	r, w := io.Pipe()
	c.Stdout, c.Stderr = w, w
	if err := c.Start(); err != nil {
		p.t.Fatal(err)
	}
	l := testkit.NewLogLines()
	done := make(chan struct{})
	go func() {
		_ = c.Wait()
		w.Close()
	}()
	go func() {
		defer close(done)
		l.Follow(r, func(line string) { p.t.Logf("%s: %s", who, line) })
	}()
	p.t.Cleanup(func() {
		cancel()
		<-done
	})
	return l
}
