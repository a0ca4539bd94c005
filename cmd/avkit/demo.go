package main

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/crypto/ssh"

	"github.com/avsidecar/avsidecar/internal/testkit"
	"github.com/avsidecar/avsidecar/internal/testkit/avrest"
)

// The demo's client identity, in the fake MCS and the fake REST API alike.
const (
	demoClient = "avkit-demo"
	demoDomain = "/clients"
)

// The REST stand-in's files, as the sidecar sees them (in its root), where
// a pod would mount the Secret and the CA bundle.
const (
	demoRESTCredentials = "/etc/avsidecar/rest/credentials"
	demoRESTCA          = "/etc/avsidecar/rest/ca.pem"
)

// demoBackupAge is how long ago the demo client's one backup was taken:
// recent, so the freshness metric looks like a healthy client's.
const demoBackupAge = 2 * time.Hour

// demoConfig is what the demo is run with.
type demoConfig struct {
	mcsAddr    string
	httpAddr   string
	sshAddr    string
	listenPort int
	mode       string
	keep       bool
}

// demoCmd runs avsidecar on this machine, without root, against the fake
// MCS and the fake client RPM, until Ctrl-C.
func demoCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("avkit demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c demoConfig
	fs.StringVar(&c.mcsAddr, "mcs", "127.0.0.1:28001", "address of the fake MCS")
	fs.StringVar(&c.httpAddr, "http", "127.0.0.1:9180", "avsidecar HTTP address (AVSIDECAR_HTTP_ADDR)")
	fs.StringVar(&c.sshAddr, "ssh", "127.0.0.1:2222", "avsidecar SSH address (AVSIDECAR_SSH_ADDR)")
	fs.IntVar(&c.listenPort, "listen-port", 28002, "avagent callback port (AVAMAR_LISTEN_PORT)")
	fs.StringVar(&c.mode, "register-mode", "direct", "AVAMAR_REGISTER_MODE: direct or initscript")
	fs.BoolVar(&c.keep, "keep", false, "keep the demo directory at the end")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := checkPorts(c); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	dir, err := os.MkdirTemp("", "avkit-demo-")
	if err != nil {
		return fmt.Errorf("demo directory: %w", err)
	}
	defer func() {
		if c.keep {
			fmt.Fprintf(stdout, "avkit demo: kept %s\n", dir)
			return
		}
		os.RemoveAll(dir)
	}()
	return runDemo(ctx, c, dir, stdout, stderr)
}

// checkPorts fails before anything is built when an address the demo
// needs is taken (a second demo, a real avsidecar, an sshd), naming the
// flag that moves it: later, the failure would surface as a sidecar that
// ended by itself, or an SSH fault.
func checkPorts(c demoConfig) error {
	for _, a := range []struct{ flag, addr string }{
		{"-mcs", c.mcsAddr},
		{"-http", c.httpAddr},
		{"-ssh", c.sshAddr},
		{"-listen-port", fmt.Sprintf(":%d", c.listenPort)},
	} {
		ln, err := net.Listen("tcp", a.addr)
		if err != nil {
			return usageErr{fmt.Errorf("%s %s: %w: choose a free address with %s", a.flag, a.addr, err, a.flag)}
		}
		ln.Close()
	}
	return nil
}

// demoPaths are the files of one demo run, under its directory.
type demoPaths struct {
	bin      string // avsidecar and avkit
	root     string // AVSIDECAR_ROOT
	key      string // SSH private key for the user
	data     string // demo data to browse, in the root
	lockFile string // avagent's lock file (pid first), on the host
}

func runDemo(ctx context.Context, c demoConfig, dir string, stdout, stderr io.Writer) error {
	p := demoPaths{
		bin:      filepath.Join(dir, "bin"),
		root:     filepath.Join(dir, "root"),
		key:      filepath.Join(dir, "id_ed25519"),
		data:     "/data",
		lockFile: filepath.Join(dir, "root", testkit.RPMPrefix, "var", "avagent.lck"),
	}
	fmt.Fprintf(stdout, "avkit demo: building avsidecar and avkit into %s\n", p.bin)
	for _, name := range []string{"avsidecar", "avkit"} {
		if err := testkit.GoBuild(filepath.Join(p.bin, name), "./cmd/"+name); err != nil {
			return err
		}
	}
	rpmDir := filepath.Join(p.root, "opt", "avamar")
	if err := os.MkdirAll(rpmDir, 0o755); err != nil {
		return fmt.Errorf("demo root: %w", err)
	}
	rpm, err := testkit.BuildRPMFile(rpmDir, testkit.RPMOptions{AgentBinary: filepath.Join(p.bin, "avkit")})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "avkit demo: fake client RPM %s\n", rpm)
	if err := writeDemoData(filepath.Join(p.root, p.data)); err != nil {
		return err
	}
	// In a pod, var/ is the persistent volume's mount point, so it exists
	// before the client is installed; the demo root has it too.
	if err := os.MkdirAll(filepath.Join(p.root, testkit.RPMPrefix, "var"), 0o755); err != nil {
		return fmt.Errorf("demo root: %w", err)
	}
	keysFile := "/etc/avsidecar/ssh/authorized_keys"
	if err := writeDemoKey(p.key, filepath.Join(p.root, keysFile)); err != nil {
		return err
	}

	// Colours on a terminal only: avsidecar, which writes to the same
	// stdout, decides the same way.
	st, err := os.Stdout.Stat()
	colour := err == nil && stdout == io.Writer(os.Stdout) && st.Mode()&os.ModeCharDevice != 0 && os.Getenv("NO_COLOR") == ""
	log := zerolog.New(zerolog.ConsoleWriter{Out: stdout, TimeFormat: "15:04:05", NoColor: !colour}).With().
		Timestamp().Str("component", "fake-mcs").Logger()
	mcs, err := testkit.StartMCS(c.mcsAddr, testkit.MCSOptions{Log: log})
	if err != nil {
		return err
	}
	defer mcs.Close()
	rest, err := startDemoREST(p.root)
	if err != nil {
		return err
	}
	defer rest.Close()

	sidecar := exec.Command(filepath.Join(p.bin, "avsidecar"), "run")
	sidecar.Env = append(demoEnviron(),
		"AVSIDECAR_ROOT="+p.root,
		"AVAMAR_SERVER="+c.mcsAddr,
		"NODE_IP=127.0.0.1",
		"AVAMAR_CLIENT_NAME="+demoClient,
		"AVAMAR_DOMAIN="+demoDomain,
		"AVAMAR_REGISTER_MODE="+c.mode,
		fmt.Sprintf("AVAMAR_LISTEN_PORT=%d", c.listenPort),
		"AVSIDECAR_HTTP_ADDR="+c.httpAddr,
		"AVSIDECAR_SSH_ADDR="+c.sshAddr,
		"AVSIDECAR_SSH_AUTHORIZED_KEYS="+keysFile,
		"AVSIDECAR_SSH_USERS=demo", // the name the printed ssh command gives
		"AVSIDECAR_BROWSE_ROOTS="+testkit.RPMPrefix+","+p.data,
		"AVSIDECAR_LOG_FORMAT=console",
		"AVSIDECAR_SHUTDOWN_TIMEOUT=10s",
		"AVAMAR_REST_URL="+rest.URL(),
		"AVAMAR_REST_CREDENTIALS_FILE="+demoRESTCredentials,
		"AVAMAR_REST_CA_FILE="+demoRESTCA,
		"AVAMAR_REST_INTERVAL=1m",
	)
	sidecar.Stdout, sidecar.Stderr = stdout, stderr
	// Its own process group: Ctrl-C reaches the demo, which stops the
	// sidecar with one SIGTERM as a kubelet would. Pdeathsig stops it if
	// the demo itself is killed.
	sidecar.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := sidecar.Start(); err != nil {
		return fmt.Errorf("start avsidecar: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- sidecar.Wait() }()

	go announce(ctx, c, p, rest.URL(), stdout)
	go controlMCS(mcs, os.Stdin, stdout)

	select {
	case err := <-exited:
		return fmt.Errorf("avsidecar ended by itself: %w", err)
	case <-ctx.Done():
	}
	fmt.Fprintln(stdout, "avkit demo: stopping avsidecar (SIGTERM)")
	_ = sidecar.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		if err != nil {
			return fmt.Errorf("avsidecar stop: %w", err)
		}
		fmt.Fprintln(stdout, "avkit demo: avsidecar stopped cleanly")
		return nil
	case <-time.After(30 * time.Second):
		_ = syscall.Kill(-sidecar.Process.Pid, syscall.SIGKILL)
		<-exited
		return errors.New("avsidecar did not stop within 30s: killed")
	}
}

// demoEnviron is the demo's environment without avsidecar's own
// variables, so a stray export cannot change the demo.
func demoEnviron() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "AVAMAR_") || strings.HasPrefix(kv, "AVSIDECAR_") || strings.HasPrefix(kv, "NODE_IP=") || strings.HasPrefix(kv, "POD_NAME=") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// announce prints what to open and try once the sidecar answers, and
// again when it is ready.
func announce(ctx context.Context, c demoConfig, p demoPaths, restURL string, w io.Writer) {
	base := "http://" + c.httpAddr
	if !waitHTTP(ctx, base+"/livez") {
		return
	}
	sshHost, sshPort, _ := net.SplitHostPort(c.sshAddr)
	fmt.Fprintf(w, `
avkit demo: avsidecar runs against a fake Avamar server.
  AVSIDECAR_ROOT  %[1]s
  fake MCS        %[2]s
  fake REST API   %[10]s (TLS, its own CA; credentials in the root, never shown)
  binaries        %[11]s (avsidecar, avkit; removed at the end unless --keep)

Open:
  %[3]s/                  the file browser
  %[3]s/readyz?verbose    readiness, check by check
  %[3]s/metrics           Prometheus metrics
  %[3]s/v1/status         status as JSON

Try:
  curl -s '%[3]s/v1/files?path=%[4]s'
  curl -s '%[3]s/v1/status' | grep last_backup    # the newest backup, from the fake REST API (also /metrics)
  %[11]s/avsidecar status --addr %[12]s    # the same, summed up
  ssh -p %[5]s -i %[6]s -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null demo@%[7]s 'ls -l %[1]s%[4]s'
  sftp -P %[5]s -i %[6]s -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null demo@%[7]s
  kill $(cut -d' ' -f1 %[8]s)     # avsidecar restarts the agent
  type "down" here to stop the fake MCS, "up" to start it, "refuse REASON", "accept", "delay 5s", "regs"
  Ctrl-C stops everything and removes %[9]s (--keep keeps it)

`, p.root, c.mcsAddr, base, p.data, sshPort, p.key, sshHost, p.lockFile, filepath.Dir(p.root), restURL, p.bin, c.httpAddr)
	if waitHTTP(ctx, base+"/readyz") {
		fmt.Fprintf(w, "\navkit demo: avsidecar is ready (%s/readyz answers 200)\n\n", base)
	}
}

// waitHTTP polls url until it answers 200 or ctx ends. Polling is right
// here: the demo watches another process over HTTP, and nothing else tells
// it when that process is up.
func waitHTTP(ctx context.Context, url string) bool {
	client := &http.Client{Timeout: time.Second}
	for {
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return true
			}
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// controlMCS reads commands from the demo's stdin to change the fake MCS,
// so the user can play an outage and watch the sidecar cope.
func controlMCS(m *testkit.MCS, in io.Reader, w io.Writer) {
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		verb, arg, _ := strings.Cut(strings.TrimSpace(sc.Text()), " ")
		var err error
		switch verb {
		case "":
			continue
		case "down", "up":
			err = m.SetDown(verb == "down")
		case "refuse":
			if arg == "" {
				arg = "refused by the demo"
			}
			m.SetRefuse(arg)
		case "accept":
			m.SetRefuse("")
		case "delay":
			var d time.Duration
			if d, err = time.ParseDuration(arg); err == nil {
				m.SetDelay(d)
			}
		case "regs":
			for _, r := range m.Registrations() {
				fmt.Fprintf(w, "  %s  %s in %s at %s:%d (id %s)\n", r.Time.Format("15:04:05"), r.Name, r.Domain, r.IPList, r.ListenPort, r.ClientID)
			}
			continue
		default:
			err = fmt.Errorf("unknown command %q (down, up, refuse REASON, accept, delay D, regs)", verb)
		}
		if err != nil {
			fmt.Fprintf(w, "avkit demo: %v\n", err)
			continue
		}
		fmt.Fprintf(w, "avkit demo: fake MCS: %s %s\n", verb, arg)
	}
}

// startDemoREST starts the Avamar REST stand-in with fresh random
// credentials, knowing the demo client and one recent backup of it, and
// writes its credentials file and CA into root where the sidecar reads them.
func startDemoREST(root string) (*avrest.Server, error) {
	creds := avrest.Config{ClientID: "avsidecar", ClientSecret: rand.Text(), Username: "backup", Password: rand.Text()}
	rest, err := avrest.Start(creds)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*avrest.Server, error) {
		rest.Close()
		return nil, err
	}
	if err := rest.AddBackup(rest.AddClient(demoDomain, demoClient), time.Now().Add(-demoBackupAge).Truncate(time.Second)); err != nil {
		return fail(err)
	}
	content := fmt.Sprintf("client_id=%s\nclient_secret=%s\nusername=%s\npassword=%s\n",
		creds.ClientID, creds.ClientSecret, creds.Username, creds.Password)
	files := []struct {
		path    string
		content []byte
		mode    os.FileMode
	}{
		{demoRESTCredentials, []byte(content), 0o600},
		{demoRESTCA, rest.CAPEM(), 0o644},
	}
	for _, f := range files {
		p := filepath.Join(root, f.path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return fail(fmt.Errorf("demo REST files: %w", err))
		}
		if err := os.WriteFile(p, f.content, f.mode); err != nil {
			return fail(fmt.Errorf("demo REST files: %w", err))
		}
	}
	return rest, nil
}

// writeDemoData makes a small tree to browse, with the kinds of entries
// the browser shows: files, directories, a symlink.
func writeDemoData(dir string) error {
	files := map[string]string{
		"README.txt":                 "Data of the demo application. Browse it at http://127.0.0.1:9180/\n",
		"db/dump-2026-01-01.sql":     strings.Repeat("INSERT INTO t VALUES (1);\n", 2000),
		"db/dump-2026-01-02.sql":     strings.Repeat("INSERT INTO t VALUES (2);\n", 4000),
		"uploads/photo-0001.jpg":     strings.Repeat("\xff\xd8", 50000),
		"uploads/2026/report.pdf":    strings.Repeat("%PDF", 10000),
		"logs/app.log":               "started\n",
		"config/app.yaml":            "replicas: 1\n",
		"uploads/2026/notes/todo.md": "- back up /data with Avamar\n",
	}
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return fmt.Errorf("demo data: %w", err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			return fmt.Errorf("demo data: %w", err)
		}
	}
	if err := os.Symlink("db/dump-2026-01-02.sql", filepath.Join(dir, "latest.sql")); err != nil {
		return fmt.Errorf("demo data: %w", err)
	}
	return nil
}

// writeDemoKey makes a fresh ed25519 key pair: the private key for the
// user's ssh, the public one in the sidecar's authorized_keys.
func writeDemoKey(keyPath, authorizedKeys string) error {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return fmt.Errorf("demo key: %w", err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "avkit-demo")
	if err != nil {
		return fmt.Errorf("demo key: %w", err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(block), 0o600); err != nil {
		return fmt.Errorf("demo key: %w", err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		return fmt.Errorf("demo key: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(authorizedKeys), 0o755); err != nil {
		return fmt.Errorf("demo key: %w", err)
	}
	if err := os.WriteFile(authorizedKeys, ssh.MarshalAuthorizedKey(sshPub), 0o644); err != nil {
		return fmt.Errorf("demo key: %w", err)
	}
	return nil
}
