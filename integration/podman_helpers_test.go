package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"testing"

	"github.com/avsidecar/avsidecar/internal/testkit"
)

// podmanNginxImage is the repository of the cached nginx image.
const podmanNginxImage = "localhost/avsidecar-test-nginx"

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
	return p.CachedImage(podmanNginxImage, base, fmt.Sprintf(nginxContainerfile, base), map[string][]byte{})
}

// podman is the kit's podman runner with what only this package's tests
// read: container state and logs.
type podman struct {
	*testkit.Podman
	t *testing.T
}

func newPodman(t *testing.T) *podman {
	t.Helper()
	return &podman{Podman: testkit.NewPodman(t), t: t}
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
	if err := json.Unmarshal([]byte(p.Run("container", "inspect", name)), &s); err != nil || len(s) != 1 {
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
	c := p.Cmd(ctx, "logs", "-f", container)
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
