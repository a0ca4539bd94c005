package sidecar

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/avsidecar/avsidecar/internal/avclient"
	"github.com/avsidecar/avsidecar/internal/backupapi"
	"github.com/avsidecar/avsidecar/internal/browse"
	"github.com/avsidecar/avsidecar/internal/config"
	"github.com/avsidecar/avsidecar/internal/install"
	"github.com/avsidecar/avsidecar/internal/logfollow"
	"github.com/avsidecar/avsidecar/internal/register"
	"github.com/avsidecar/avsidecar/internal/sshd"
	"github.com/avsidecar/avsidecar/internal/supervise"
	"github.com/avsidecar/avsidecar/internal/testkit"
)

// events is the order in which the fakes were called, shared by all of a
// test's fakes.
type events struct {
	mu      sync.Mutex
	list    []string
	changed chan struct{}
}

func newEvents() *events { return &events{changed: make(chan struct{})} }

func (e *events) add(ev string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.list = append(e.list, ev)
	close(e.changed)
	e.changed = make(chan struct{})
}

func (e *events) snapshot() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.list)
}

// wait blocks until ev has happened.
func (e *events) wait(t *testing.T, ev string) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		e.mu.Lock()
		seen, ch := slices.Contains(e.list, ev), e.changed
		e.mu.Unlock()
		if seen {
			return
		}
		select {
		case <-ch:
		case <-timeout:
			t.Fatalf("%q did not happen; events: %q", ev, e.snapshot())
		}
	}
}

// gate is a step a test releases by hand.
type gate chan struct{}

func (g gate) wait(ctx context.Context) error {
	select {
	case <-g:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

type fakeRegistrar struct {
	ev      *events
	release gate
	err     error
	mu      sync.Mutex
	st      register.Status
}

func (f *fakeRegistrar) Register(ctx context.Context) error {
	f.ev.add("register")
	f.mu.Lock()
	f.st.Attempts = 1
	f.st.LastOutcome, f.st.LastError = register.OutcomeUnreachable, "connect to MCS: refused"
	f.st.Outcomes = map[string]int{register.OutcomeUnreachable: 1}
	f.mu.Unlock()
	if err := f.release.wait(ctx); err != nil {
		return err
	}
	if f.err != nil {
		return f.err
	}
	f.mu.Lock()
	f.st.Registered = true
	f.st.Outcomes[register.OutcomeSuccess] = 1
	f.mu.Unlock()
	f.ev.add("registered")
	return nil
}

func (f *fakeRegistrar) Status() register.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.st
}

// fakeAgent listens on a real port while it runs, as avagent does; its
// stop takes until stopGate is released (nil: at once).
type fakeAgent struct {
	ev       *events
	ln       net.Listener
	stopGate gate
	ignore   bool // never stops: for the shutdown deadline
	mu       sync.Mutex
	running  bool
}

func (f *fakeAgent) Run(ctx context.Context) error {
	f.mu.Lock()
	f.running = true
	f.mu.Unlock()
	f.ev.add("agent started")
	go func() {
		for {
			c, err := f.ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	<-ctx.Done()
	f.ev.add("agent stopping")
	if f.ignore {
		select {}
	}
	if f.stopGate != nil {
		<-f.stopGate
	}
	f.ln.Close()
	f.mu.Lock()
	f.running = false
	f.mu.Unlock()
	f.ev.add("agent stopped")
	return nil
}

func (f *fakeAgent) Status() supervise.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	return supervise.Status{Running: f.running, StartedAt: time.Now()}
}

// fakeSide is a side part: it runs until ctx ends, or fails with err.
type fakeSide struct {
	ev   *events
	name string
	err  error
}

func (f *fakeSide) Run(ctx context.Context) error {
	f.ev.add(f.name + " started")
	if f.err != nil {
		return f.err
	}
	<-ctx.Done()
	f.ev.add(f.name + " stopped")
	return nil
}

type fakeFollower struct{ fakeSide }

func (f *fakeFollower) Status() logfollow.Status { return logfollow.Status{Lines: 7} }

type fakeSSH struct {
	fakeSide
	listenErr error
}

func (f *fakeSSH) Listen() error {
	f.ev.add("ssh listening")
	return f.listenErr
}

func (f *fakeSSH) Status() sshd.Status { return sshd.Status{Addr: "127.0.0.1:2222", Logins: 2} }

type fakeBrowse struct{ fakeSide }

func (f *fakeBrowse) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	io.WriteString(w, `{"path":"/data","entries":[]}`)
}
func (f *fakeBrowse) Status() browse.Status {
	return browse.Status{Enabled: true, Requests: map[string]uint64{"200": 1}}
}

type fakeBackups struct{ fakeSide }

func (f *fakeBackups) Status() backupapi.Status { return backupapi.Status{State: backupapi.StateOK} }

// world is a sidecar of fakes, with the gates that hold its steps.
type world struct {
	ev       *events
	install  gate
	register *fakeRegistrar
	agent    *fakeAgent
	ssh      *fakeSSH
	browse   *fakeBrowse
	parts    parts
	cfg      config.Config
	limits   httpLimits
	logs     *testkit.LogLines
}

func newWorld(t *testing.T) *world {
	t.Helper()
	ev := newEvents()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	w := &world{ev: ev, install: make(gate), logs: testkit.NewLogLines(), limits: defaultHTTPLimits}
	w.register = &fakeRegistrar{ev: ev, release: make(gate)}
	w.agent = &fakeAgent{ev: ev, ln: ln}
	w.ssh = &fakeSSH{fakeSide: fakeSide{ev: ev, name: "ssh"}}
	w.browse = &fakeBrowse{fakeSide{ev: ev, name: "browse"}}
	w.parts = parts{
		install: func(ctx context.Context) (install.Result, error) {
			ev.add("install")
			if err := w.install.wait(ctx); err != nil {
				return install.Result{}, err
			}
			return install.Result{Name: "AvamarClient", Version: "7.5.101", Release: "101", Changed: true}, nil
		},
		client: func() (*clientParts, error) {
			ev.add("locate")
			return &clientParts{
				layout:     avclient.Layout{Prefix: "/usr/local/avamar", VarDir: "/var/avamar", FoundBy: avclient.VarStateDir},
				writeFlags: func() ([]string, error) { ev.add("flags"); return []string{"avagent.cmd"}, nil },
				registrar:  w.register,
				agent:      w.agent,
				follow:     &fakeFollower{fakeSide{ev: ev, name: "agent-log"}},
			}, nil
		},
		ssh:     w.ssh,
		browse:  w.browse,
		backups: &fakeBackups{fakeSide{ev: ev, name: "backup-api"}},
		faults:  &faults{},
	}
	w.cfg = config.Config{
		HTTPAddr:        "127.0.0.1:0",
		ListenPort:      ln.Addr().(*net.TCPAddr).Port,
		ShutdownTimeout: 5 * time.Second,
		ClientName:      "nginx-0",
		Server:          "mcs.example.com",
	}
	return w
}

// run is a running sidecar's result.
type run struct {
	done chan struct{} // closed when Run returned
	err  error
}

// start builds and runs the sidecar.
func (w *world) start(t *testing.T) (*Sidecar, context.CancelFunc, *run) {
	t.Helper()
	s, err := build(w.cfg, zerolog.New(w.logs), w.parts, w.limits)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &run{done: make(chan struct{})}
	go func() { r.err = s.Run(ctx); close(r.done) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(10 * time.Second):
			t.Error("Run did not return after the test")
		}
	})
	return s, cancel, r
}

// wait returns Run's result.
func (r *run) wait(t *testing.T) error {
	t.Helper()
	select {
	case <-r.done:
		return r.err
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
		return nil
	}
}

func get(t *testing.T, s *Sidecar, path string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + s.Addr().String() + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func expect(t *testing.T, s *Sidecar, path string, code int, contains string) {
	t.Helper()
	got, body := get(t, s, path)
	if got != code || !strings.Contains(body, contains) {
		t.Errorf("GET %s = %d %q, want %d with %q", path, got, body, code, contains)
	}
}

// TestStartOrder walks a start step by step: HTTP answers before anything
// else, the side parts start beside it, and the agent's life goes install,
// flag files, registration, agent; each phase is visible in the probes and
// the status.
func TestStartOrder(t *testing.T) {
	w := newWorld(t)
	s, _, _ := w.start(t)

	w.ev.wait(t, "install")
	expect(t, s, "/livez", 200, "ok")
	expect(t, s, "/startupz?verbose", 503, "[-]installed: not installed yet (phase installing)")
	expect(t, s, "/readyz", 503, "[-]installed")
	if st := s.Status(); st.Phase != PhaseInstalling || st.Install != nil || st.Client != nil || st.Registration.Server != "mcs.example.com" {
		t.Errorf("status while installing: %+v", st)
	}
	for _, side := range []string{"ssh started", "browse started", "backup-api started"} {
		w.ev.wait(t, side)
	}

	close(w.install)
	w.ev.wait(t, "register")
	w.ev.wait(t, "agent-log started") // once the client is located
	expect(t, s, "/startupz", 200, "ok")
	expect(t, s, "/readyz", 503, "[-]registered: not registered after 1 attempts, last unreachable: connect to MCS: refused")
	if st := s.Status(); st.Phase != PhaseRegistering || st.Install == nil || st.Install.Version != "7.5.101" ||
		st.Client == nil || st.Client.VarDir != "/var/avamar" {
		t.Errorf("status while registering: %+v", st)
	}

	close(w.register.release)
	w.ev.wait(t, "agent started")
	expect(t, s, "/readyz?verbose", 200, "[+]shutdown ok\n[+]installed ok\n[+]registered ok\n[+]agent ok\n")
	if st := s.Status(); st.Phase != PhaseRunning || !st.Registration.Registered || st.SSH == nil || st.SSH.Logins != 2 {
		t.Errorf("status while running: %+v", st)
	}

	var life []string
	for _, e := range w.ev.snapshot() {
		if !strings.HasSuffix(e, " started") || e == "agent started" {
			life = append(life, e)
		}
	}
	if want := []string{"ssh listening", "install", "locate", "flags", "register", "registered", "agent started"}; !slices.Equal(life, want) {
		t.Errorf("the agent's life went %q, want %q", life, want)
	}
}

// TestStopOrder stops a running sidecar: readiness fails at once, while
// the agent is still stopping; the side parts and HTTP close only after the
// agent has stopped; Run returns nil.
func TestStopOrder(t *testing.T) {
	w := newWorld(t)
	w.agent.stopGate = make(gate)
	close(w.install)
	close(w.register.release)
	s, cancel, done := w.start(t)
	w.ev.wait(t, "agent started")
	expect(t, s, "/readyz", 200, "ok")

	cancel()
	w.ev.wait(t, "agent stopping")
	expect(t, s, "/readyz", 503, "[-]shutdown: shutting down")
	expect(t, s, "/livez", 200, "ok")
	if st := s.Status(); st.Phase != PhaseStopping {
		t.Errorf("phase while stopping: %s", st.Phase)
	}
	close(w.agent.stopGate)
	if err := done.wait(t); err != nil {
		t.Fatalf("Run after a stop: %v", err)
	}
	evs := w.ev.snapshot()
	stopped := slices.Index(evs, "agent stopped")
	for _, side := range []string{"ssh stopped", "browse stopped", "agent-log stopped", "backup-api stopped"} {
		if i := slices.Index(evs, side); i < stopped {
			t.Errorf("%s at %d, before the agent stopped at %d: %q", side, i, stopped, evs)
		}
	}
	if _, err := http.Get("http://" + s.Addr().String() + "/livez"); err == nil {
		t.Error("HTTP still answers after Run returned")
	}
	if w.logs.Count(0, testkit.Msg("main", "stopped")) != 1 {
		t.Errorf("no stopped line:\n%s", w.logs.Raw())
	}
}

// TestStopDeadline: an agent that will not stop cannot hold the sidecar
// past its shutdown timeout.
func TestStopDeadline(t *testing.T) {
	w := newWorld(t)
	w.agent.ignore = true
	w.cfg.ShutdownTimeout = 200 * time.Millisecond
	close(w.install)
	close(w.register.release)
	_, cancel, done := w.start(t)
	w.ev.wait(t, "agent started")
	cancel()
	if err := done.wait(t); err == nil || !strings.Contains(err.Error(), "shutdown timed out") {
		t.Fatalf("Run = %v, want a shutdown timeout", err)
	}
}

// TestFailuresEndRun: an unusable RPM or a failed registration ends Run
// with that error, and the sidecar stops in order.
func TestFailuresEndRun(t *testing.T) {
	bad := fmt.Errorf("install x.rpm: %w: digest mismatch", install.ErrUnusable)
	t.Run("install", func(t *testing.T) {
		w := newWorld(t)
		w.parts.install = func(context.Context) (install.Result, error) { return install.Result{}, bad }
		_, _, done := w.start(t)
		if err := done.wait(t); !errors.Is(err, install.ErrUnusable) {
			t.Fatalf("Run = %v, want the install error", err)
		}
		if slices.Contains(w.ev.snapshot(), "register") {
			t.Error("registered after a failed install")
		}
	})
	t.Run("locate", func(t *testing.T) {
		w := newWorld(t)
		close(w.install)
		w.parts.client = func() (*clientParts, error) {
			return nil, errors.New("client var dir: /usr/local/avamar/var leads out of the root")
		}
		_, _, done := w.start(t)
		if err := done.wait(t); err == nil || !strings.Contains(err.Error(), "locate the client's var dir") {
			t.Fatalf("Run = %v, want the locate error", err)
		}
		if slices.Contains(w.ev.snapshot(), "flags") {
			t.Error("flag files written for a client not located")
		}
	})
	t.Run("register", func(t *testing.T) {
		w := newWorld(t)
		close(w.install)
		close(w.register.release)
		w.register.err = errors.New("write registration receipt: read-only file system")
		_, _, done := w.start(t)
		if err := done.wait(t); err == nil || !strings.Contains(err.Error(), "read-only") {
			t.Fatalf("Run = %v, want the receipt error", err)
		}
		if slices.Contains(w.ev.snapshot(), "agent started") {
			t.Error("agent started after a failed registration")
		}
	})
}

// TestSideFaults: a side part that fails is logged, shown in the status
// and /readyz?verbose, and the agent's life goes on, ready.
func TestSideFaults(t *testing.T) {
	w := newWorld(t)
	w.ssh.listenErr = errors.New("host key /state/ssh_host_ed25519_key: permission denied")
	w.parts.browse = nil
	w.parts.faults.set(sideBrowse, errors.New("AVSIDECAR_BROWSE_ROOTS: open /data: no such file or directory"))
	close(w.install)
	close(w.register.release)
	s, _, done := w.start(t)
	w.ev.wait(t, "agent started")
	w.logs.Wait(t, 0, "ssh fault log", 5*time.Second, testkit.Msg("sshd", "side part failed, the sidecar goes on without it"))

	expect(t, s, "/readyz", 200, "ok")
	expect(t, s, "/readyz?verbose", 200, "[!]ssh: host key /state/ssh_host_ed25519_key: permission denied\n[!]browse: AVSIDECAR_BROWSE_ROOTS: open /data")
	expect(t, s, "/v1/files?path=/data", 503, `"error":"browse unavailable: AVSIDECAR_BROWSE_ROOTS: open /data`)
	code, body := get(t, s, "/v1/status")
	var st Status
	if err := json.Unmarshal([]byte(body), &st); err != nil || code != 200 {
		t.Fatalf("status %d %q: %v", code, body, err)
	}
	if st.Faults[sideSSH] == "" || st.Faults[sideBrowse] == "" || st.Browse != nil || st.Phase != PhaseRunning {
		t.Errorf("status with faults: %+v", st)
	}
	select {
	case <-done.done:
		t.Fatalf("Run ended on a side fault: %v", done.err)
	default:
	}
}

// TestSSHPermissionDenied: SSH on a privileged port without the right to
// bind it (the default :22 as non-root) is a fault that names the variable
// to change.
func TestSSHPermissionDenied(t *testing.T) {
	w := newWorld(t)
	// What net.Listen returns for :22 without NET_BIND_SERVICE.
	w.ssh.listenErr = fmt.Errorf("listen ssh :22: %w", &net.OpError{Op: "listen", Net: "tcp",
		Addr: &net.TCPAddr{Port: 22}, Err: os.NewSyscallError("bind", syscall.EACCES)})
	close(w.install)
	close(w.register.release)
	s, _, _ := w.start(t)
	w.ev.wait(t, "agent started")
	w.logs.Wait(t, 0, "ssh fault log", 5*time.Second, testkit.Msg("sshd", "side part failed, the sidecar goes on without it"))
	expect(t, s, "/readyz?verbose", 200, "[!]ssh: listen ssh :22: listen tcp :22: bind: permission denied (set AVSIDECAR_SSH_ADDR to a port above 1023, such as :2222)")
}

// TestMetricsLabelSets: /metrics carries every phase and every
// registration outcome from their owners' lists, and ready follows the
// non-optional checks only.
func TestMetricsLabelSets(t *testing.T) {
	w := newWorld(t)
	w.ssh.err = errors.New("bind :22: permission denied")
	close(w.install)
	close(w.register.release)
	s, _, _ := w.start(t)
	w.ev.wait(t, "agent started")
	w.logs.Wait(t, 0, "ssh fault", 5*time.Second, testkit.Msg("sshd", "side part failed, the sidecar goes on without it"))
	_, body := get(t, s, "/metrics")
	for _, p := range Phases {
		if want := fmt.Sprintf("avsidecar_phase{phase=%q} %d", p, map[bool]int{true: 1}[p == PhaseRunning]); !strings.Contains(body, want) {
			t.Errorf("no %s", want)
		}
	}
	for _, o := range register.Outcomes {
		if !strings.Contains(body, fmt.Sprintf("avsidecar_registration_attempts_total{outcome=%q}", o)) {
			t.Errorf("no series for outcome %s", o)
		}
	}
	for _, want := range []string{"avsidecar_ready 1", `avsidecar_backup_api_state{state="ok"} 1`, `avsidecar_browse_requests_total{code="200"} 1`} {
		if !strings.Contains(body, want) {
			t.Errorf("no %s in\n%s", want, body)
		}
	}
}

// TestInboundPorts: the ports of AVAMAR_INBOUND_PORTS are dialled on
// loopback: /v1/status lists them with the listen port, and a closed one
// shows in /readyz?verbose without failing readiness.
func TestInboundPorts(t *testing.T) {
	w := newWorld(t)
	open, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()
	closed := testkit.FreePort(t)
	openPort := open.Addr().(*net.TCPAddr).Port
	w.cfg.InboundPorts = []int{openPort, closed}
	close(w.install)
	close(w.register.release)
	s, _, _ := w.start(t)
	w.ev.wait(t, "agent started")
	expect(t, s, "/readyz", 200, "ok")
	expect(t, s, "/readyz?verbose", 200, fmt.Sprintf("[!]inbound-ports: not accepting on %d", closed))
	_, body := get(t, s, "/v1/status")
	var st Status
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatal(err)
	}
	want := []InboundPort{{w.cfg.ListenPort, "listen", true}, {openPort, "extra", true}, {closed, "extra", false}}
	if !slices.Equal(st.InboundPorts, want) {
		t.Errorf("inbound ports %+v, want %+v", st.InboundPorts, want)
	}
}

// TestSettleMemory: once avagent runs, GOMAXPROCS is capped and GOGC set
// as the tuning says, and a zero tuning (the operator's own GOGC and
// GOMAXPROCS) leaves both as they are.
func TestSettleMemory(t *testing.T) {
	procs, gc := runtime.GOMAXPROCS(0), debug.SetGCPercent(100)
	t.Cleanup(func() { runtime.GOMAXPROCS(procs); debug.SetGCPercent(gc) })

	var s Sidecar
	runtime.GOMAXPROCS(16)
	s.settleMemory(Tuning{})
	if got := runtime.GOMAXPROCS(0); got != 16 {
		t.Errorf("zero tuning: GOMAXPROCS %d, want 16 left as it was", got)
	}
	if got := debug.SetGCPercent(100); got != 100 {
		t.Errorf("zero tuning: GOGC %d, want 100 left as it was", got)
	}

	idle := IdleTuning
	idle.ReleaseText = false // exepages' own test releases in a process of its own
	s.settleMemory(idle)
	if got := runtime.GOMAXPROCS(0); got != IdleTuning.MaxProcs {
		t.Errorf("GOMAXPROCS %d after settling, want %d", got, IdleTuning.MaxProcs)
	}
	if got := debug.SetGCPercent(100); got != IdleTuning.GCPercent {
		t.Errorf("GOGC %d after settling, want %d", got, IdleTuning.GCPercent)
	}

	runtime.GOMAXPROCS(1)
	s.settleMemory(idle)
	if got := runtime.GOMAXPROCS(0); got != 1 {
		t.Errorf("GOMAXPROCS %d after settling from 1, want 1: the cap never raises it", got)
	}
}
