package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/avsidecar/avsidecar/internal/testkit"
	"github.com/avsidecar/avsidecar/internal/testkit/avrest"
)

// kind is what a subject runs.
type kind int

const (
	sidecarKind kind = iota // avsidecar run, registered, every part on
	oldRecipe               // sh running sshd -D, as the whitepaper's run.sh ends
	goHTTP                  // a static Go net/http server answering the probes
	tiniKind                // tini-static with one child
)

// subject is one program measured in its own container.
type subject struct {
	label string
	kind  kind
	bin   string   // the binary (avsidecar, the Go server, tini-static)
	env   []string // more environment for avsidecar (GOGC=50, ...)
}

// serves reports whether the subject answers probes and scrapes.
func (s subject) serves() bool { return s.kind == sidecarKind || s.kind == goHTTP }

// kit is what every sidecar run shares: the fake MCS, the REST stand-in,
// the client RPM and an SSH key.
type kit struct {
	mcs      *testkit.MCS
	rest     *avrest.Server
	creds    string // the credentials file's content
	rpm      string // the built RPM
	pubKey   []byte // an authorized key
	oldRoot  string // the old recipe's image, built once (copied per run)
	goServer string
}

const (
	restCredentials = "/etc/avsidecar/rest/credentials"
	restCA          = "/etc/avsidecar/rest/ca.pem"
	keysFile        = "/etc/avsidecar/ssh/authorized_keys"
	domain          = "/clients"
)

func newKit(dir, avkit, compression string) (*kit, error) {
	k := &kit{}
	var err error
	if k.mcs, err = testkit.StartMCS("127.0.0.1:0", testkit.MCSOptions{}); err != nil {
		return nil, err
	}
	c := avrest.Config{ClientID: "avsidecar", ClientSecret: rand.Text(), Username: "backup", Password: rand.Text()}
	if k.rest, err = avrest.Start(c); err != nil {
		k.close()
		return nil, err
	}
	k.creds = fmt.Sprintf("client_id=%s\nclient_secret=%s\nusername=%s\npassword=%s\n", c.ClientID, c.ClientSecret, c.Username, c.Password)
	rpmDir := filepath.Join(dir, "rpm")
	if err := os.MkdirAll(rpmDir, 0o755); err != nil {
		k.close()
		return nil, err
	}
	// The package's avagent.bin enters the workload's cgroup, then is the
	// kit's agent.
	agent := filepath.Join(dir, "avagent.bin")
	script := "#!/bin/bash\n" + enterWorkload + "\nexec -a \"$0\" " + avkit + " \"$@\"\n"
	if err := os.WriteFile(agent, []byte(script), 0o755); err != nil {
		k.close()
		return nil, err
	}
	if k.rpm, err = testkit.BuildRPMFile(rpmDir, testkit.RPMOptions{AgentBinary: agent, Compression: compression}); err != nil {
		k.close()
		return nil, err
	}
	key := filepath.Join(dir, "client_key")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key).CombinedOutput(); err != nil {
		k.close()
		return nil, fmt.Errorf("ssh-keygen: %w: %s", err, out)
	}
	if k.pubKey, err = os.ReadFile(key + ".pub"); err != nil {
		k.close()
		return nil, err
	}
	return k, nil
}

func (k *kit) close() {
	if k.mcs != nil {
		k.mcs.Close()
	}
	if k.rest != nil {
		k.rest.Close()
	}
}

// instance is one subject running in its container.
type instance struct {
	c        *container
	cmd      *exec.Cmd // unshare, whose child is the container's PID 1
	main     int       // that child's pid, as this process sees it
	addr     string    // HTTP address, for the subjects that serve
	workDir  string
	graceful bool // stopped with SIGTERM first
}

// launch runs argv as PID 1 of a new PID namespace, in container c: a
// shell enters the cgroup, then execs argv.
func launch(c *container, dir string, env []string, argv ...string) (*exec.Cmd, error) {
	const enter = `echo 0 > "$0/cgroup.procs" && exec "$@"`
	args := append([]string{"--pid", "--fork", "--mount-proc", "--kill-child", "--", "/bin/sh", "-c", enter, c.dir}, argv...)
	cmd := exec.Command("unshare", args...)
	cmd.Env = env
	out, err := os.Create(filepath.Join(dir, "output.log"))
	if err != nil {
		return nil, err
	}
	defer out.Close()
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd, cmd.Start()
}

// start makes a fresh container and working directory for s and starts
// it; it returns once the subject is up (for the sidecar: registered,
// ready, its backup check done) and its workload moved out.
func (k *kit) start(ctx context.Context, s subject, dir string, parent string, name string) (*instance, error) {
	c, err := newContainer(parent, name)
	if err != nil {
		return nil, err
	}
	in := &instance{c: c, workDir: dir, graceful: s.kind == sidecarKind}
	fail := func(err error) (*instance, error) {
		in.stop()
		log, _ := os.ReadFile(filepath.Join(dir, "output.log"))
		if len(log) > 4000 {
			log = log[len(log)-4000:]
		}
		return nil, fmt.Errorf("%s: %w; its output ends:\n%s", s.label, err, log)
	}
	switch s.kind {
	case sidecarKind:
		err = k.startSidecar(ctx, in, s, name)
	case oldRecipe:
		err = k.startOldRecipe(ctx, in)
	case goHTTP:
		err = k.startGoHTTP(ctx, in)
	case tiniKind:
		err = startTini(ctx, in, s.bin)
	}
	if err != nil {
		return fail(err)
	}
	return in, nil
}

func (k *kit) startSidecar(ctx context.Context, in *instance, s subject, client string) error {
	root := filepath.Join(in.workDir, "root")
	bin := filepath.Join(in.workDir, "avsidecar")
	if err := uncached(s.bin, bin, 0o755); err != nil {
		return err
	}
	if err := uncached(k.rpm, filepath.Join(root, "opt/avamar", filepath.Base(k.rpm)), 0o644); err != nil {
		return err
	}
	if err := k.rest.AddBackup(k.rest.AddClient(domain, client), time.Now().Add(-2*time.Hour).Truncate(time.Second)); err != nil {
		return err
	}
	files := map[string][]byte{
		keysFile:                k.pubKey,
		restCredentials:         []byte(k.creds),
		restCA:                  k.rest.CAPEM(),
		"/data/README.txt":      []byte("data to browse\n"),
		"/data/db/dump.sql":     bytes.Repeat([]byte("INSERT INTO t VALUES (1);\n"), 2000),
		"/data/uploads/a.jpg":   bytes.Repeat([]byte{0xff, 0xd8}, 50000),
		testkit.RPMPrefix + "/": nil, // var/ is the volume's mount point in a pod
	}
	for p, b := range files {
		full := filepath.Join(root, p)
		if strings.HasSuffix(p, "/") {
			if err := os.MkdirAll(filepath.Join(full, "var"), 0o755); err != nil {
				return err
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(full, b, 0o600); err != nil {
			return err
		}
	}
	in.addr = "127.0.0.1:" + strconv.Itoa(freePort())
	env := append(cleanEnv(),
		"AVSIDECAR_ROOT="+root,
		"AVAMAR_SERVER="+k.mcs.Addr(),
		"NODE_IP=127.0.0.1",
		"AVAMAR_CLIENT_NAME="+client,
		"AVAMAR_DOMAIN="+domain,
		"AVAMAR_LISTEN_PORT="+strconv.Itoa(freePort()),
		"AVSIDECAR_HTTP_ADDR="+in.addr,
		"AVSIDECAR_SSH_ADDR=127.0.0.1:"+strconv.Itoa(freePort()),
		"AVSIDECAR_SSH_AUTHORIZED_KEYS="+keysFile,
		"AVSIDECAR_BROWSE_ROOTS="+testkit.RPMPrefix+",/data",
		"AVAMAR_REST_URL="+k.rest.URL(),
		"AVAMAR_REST_CREDENTIALS_FILE="+restCredentials,
		"AVAMAR_REST_CA_FILE="+restCA,
		"AVAMAR_REST_INTERVAL="+restInterval.String(),
	)
	env = append(env, s.env...)
	var err error
	if in.cmd, err = launch(in.c, in.workDir, env, bin, "run"); err != nil {
		return err
	}
	// Up, registered and ready, and the backup check has answered once.
	if err := waitFor(ctx, 2*time.Minute, func() bool {
		return get(in.addr, "/readyz") == 200 && strings.Contains(getBody(in.addr, "/metrics"), "\navsidecar_last_backup_timestamp_seconds ")
	}); err != nil {
		return fmt.Errorf("not ready with a known backup: %w", err)
	}
	in.main, err = pid1(in.cmd.Process.Pid)
	return err
}

// startOldRecipe runs the whitepaper's resident part in an image of its
// own (sh, sshd and the libraries they load, fresh copies): the
// container is charged for the pages of its programs, as it is for the
// avsidecar binary.
func (k *kit) startOldRecipe(ctx context.Context, in *instance) error {
	img := filepath.Join(in.workDir, "image")
	if err := exec.Command("cp", "-a", k.oldRoot, img).Run(); err != nil {
		return fmt.Errorf("copy the old recipe's image: %w", err)
	}
	if err := dropTree(img); err != nil {
		return err
	}
	port := freePort()
	conf := fmt.Sprintf("Port %d\nListenAddress 127.0.0.1\nHostKey /etc/ssh/ssh_host_ed25519_key\nPidFile none\nUsePAM no\n", port)
	if err := os.WriteFile(filepath.Join(img, "etc/ssh/sshd_config"), []byte(conf), 0o600); err != nil {
		return err
	}
	var err error
	in.cmd, err = launch(in.c, in.workDir, cleanEnv(), "chroot", img, "/bin/sh", "-c", "/usr/sbin/sshd -D -f /etc/ssh/sshd_config; echo done")
	if err != nil {
		return err
	}
	// sshd listens; the connection that proves it is a child of sshd's,
	// gone once it is closed.
	if err := waitFor(ctx, 30*time.Second, func() bool {
		c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			return false
		}
		bufio.NewReader(c).ReadString('\n') // the banner
		c.Close()
		return true
	}); err != nil {
		return fmt.Errorf("sshd does not listen: %w", err)
	}
	if err := waitFor(ctx, 30*time.Second, func() bool { return len(in.c.procs()) == 2 }); err != nil {
		return fmt.Errorf("expected sh and sshd alone in the container, found %v", in.c.procs())
	}
	in.main, err = pid1(in.cmd.Process.Pid)
	return err
}

func (k *kit) startGoHTTP(ctx context.Context, in *instance) error {
	bin := filepath.Join(in.workDir, "server")
	if err := uncached(k.goServer, bin, 0o755); err != nil {
		return err
	}
	in.addr = "127.0.0.1:" + strconv.Itoa(freePort())
	var err error
	if in.cmd, err = launch(in.c, in.workDir, cleanEnv(), bin, "-addr", in.addr); err != nil {
		return err
	}
	if err := waitFor(ctx, 30*time.Second, func() bool { return get(in.addr, "/livez") == 200 }); err != nil {
		return err
	}
	in.main, err = pid1(in.cmd.Process.Pid)
	return err
}

func startTini(ctx context.Context, in *instance, tini string) error {
	bin := filepath.Join(in.workDir, "tini-static")
	if err := uncached(tini, bin, 0o755); err != nil {
		return err
	}
	var err error
	if in.cmd, err = launch(in.c, in.workDir, cleanEnv(), bin, "--", "/bin/sh", "-c", enterWorkload+"; exec /bin/sleep 1d"); err != nil {
		return err
	}
	if err := waitFor(ctx, 30*time.Second, func() bool {
		for _, p := range pids(filepath.Join(in.c.workload, "cgroup.procs")) {
			if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", p)); exe == "/usr/bin/sleep" {
				return true
			}
		}
		return false
	}); err != nil {
		return fmt.Errorf("tini's child did not start: %w", err)
	}
	in.main, err = pid1(in.cmd.Process.Pid)
	return err
}

// stop ends the container: SIGTERM to the sidecar (it stops avagent and
// exits), then the namespace's end for what is left. The peers need no
// grace (sh as PID 1 ignores SIGTERM).
func (in *instance) stop() {
	if in.cmd == nil {
		in.c.remove()
		return
	}
	done := make(chan struct{})
	go func() { in.cmd.Wait(); close(done) }()
	if in.main > 0 && in.graceful {
		syscall.Kill(in.main, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
		}
	}
	in.cmd.Process.Kill() // unshare --kill-child: PID 1 and every process of its namespace go with it
	<-done
	// The workload, in the sibling cgroup, lived in the
	// namespace: it is gone too. Wait for the kernel to empty both.
	waitFor(context.Background(), 10*time.Second, func() bool {
		return len(in.c.procs()) == 0 && len(pids(filepath.Join(in.c.workload, "cgroup.procs"))) == 0
	})
	in.c.remove()
}

// pid1 finds the child of unshare: PID 1 of the namespace.
func pid1(unshare int) (int, error) {
	var found int
	err := waitFor(context.Background(), 10*time.Second, func() bool {
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", unshare))
		for _, t := range tasks {
			if c := pids(t); len(c) > 0 {
				found = c[0]
				return true
			}
		}
		return false
	})
	return found, err
}

// cleanEnv is this process's environment without the variables that
// change what is measured.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(name, "AVAMAR_"), strings.HasPrefix(name, "AVSIDECAR_"),
			name == "GOGC", name == "GOMEMLIMIT", name == "GODEBUG", name == "GOMAXPROCS", name == "NODE_IP", name == "POD_NAME":
			continue
		}
		env = append(env, kv)
	}
	return env
}

// buildOldRecipeImage makes a directory with what the old recipe's
// resident part loads: /bin/sh, /usr/sbin/sshd, their libraries (as ldd
// lists them), the users sshd needs, /run/sshd, /dev/null and a host key.
func buildOldRecipeImage(dir string) (string, error) {
	img := filepath.Join(dir, "old-recipe-image")
	progs := []string{"/bin/sh", "/usr/sbin/sshd"}
	files := map[string]bool{}
	for _, p := range progs {
		files[p] = true
		out, err := exec.Command("ldd", p).Output()
		if err != nil {
			return "", fmt.Errorf("ldd %s: %w", p, err)
		}
		for _, line := range strings.Split(string(out), "\n") {
			for _, f := range strings.Fields(line) {
				if strings.HasPrefix(f, "/") {
					files[f] = true
				}
			}
		}
	}
	for f := range files {
		real, err := filepath.EvalSymlinks(f)
		if err != nil {
			return "", err
		}
		b, err := os.ReadFile(real)
		if err != nil {
			return "", err
		}
		dst := filepath.Join(img, f)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return "", err
		}
		if err := os.WriteFile(dst, b, 0o755); err != nil {
			return "", err
		}
	}
	for _, d := range []string{"run/sshd", "dev", "etc/ssh", "root"} {
		if err := os.MkdirAll(filepath.Join(img, d), 0o755); err != nil {
			return "", err
		}
	}
	etc := map[string]string{
		"etc/passwd": "root:x:0:0:root:/root:/bin/sh\nsshd:x:100:65534::/run/sshd:/usr/sbin/nologin\n",
		"etc/group":  "root:x:0:\nnogroup:x:65534:\n",
	}
	for name, content := range etc {
		if err := os.WriteFile(filepath.Join(img, name), []byte(content), 0o644); err != nil {
			return "", err
		}
	}
	if err := syscall.Mknod(filepath.Join(img, "dev/null"), syscall.S_IFCHR|0o666, 1<<8|3); err != nil {
		return "", fmt.Errorf("mknod dev/null: %w", err)
	}
	key := filepath.Join(img, "etc/ssh/ssh_host_ed25519_key")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key).CombinedOutput(); err != nil {
		return "", fmt.Errorf("ssh-keygen: %w: %s", err, out)
	}
	return img, nil
}

// dropTree drops every regular file under dir from the page cache (see
// uncached).
func dropTree(dir string) error {
	return filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || !fi.Mode().IsRegular() {
			return err
		}
		return drop(p)
	})
}

// waitFor polls cond until it holds or timeout passes. Polling is the
// method here: the subjects are other processes, watched from outside.
func waitFor(ctx context.Context, timeout time.Duration, cond func() bool) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for !cond() {
		select {
		case <-ctx.Done():
			return errors.New("timed out")
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

var probeClient = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// get asks as the kubelet's prober does: a new connection each time.
func get(addr, path string) int {
	req, _ := http.NewRequest("GET", "http://"+addr+path, nil)
	req.Header.Set("User-Agent", "kube-probe/1.33")
	resp, err := probeClient.Do(req)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func getBody(addr, path string) string {
	resp, err := probeClient.Get("http://" + addr + path)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	return b.String()
}

// freePort is a port for the sidecar to listen on (testkit.PickPort).
func freePort() int {
	port, err := testkit.PickPort()
	if err != nil {
		panic(err)
	}
	return port
}
