package doctor

import (
	"context"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/net/dns/dnsmessage"
)

// dnsServer is a real DNS server on a loopback UDP socket, answering A
// records from forward and PTR records from reverse; any other name does
// not exist.
type dnsServer struct {
	conn    net.PacketConn
	forward map[string]string // first label -> IPv4 address
	reverse map[string]string // IPv4 address -> name
}

func startDNS(t *testing.T, forward, reverse map[string]string) *net.Resolver {
	t.Helper()
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &dnsServer{conn: conn, forward: forward, reverse: reverse}
	done := make(chan struct{})
	go func() { defer close(done); s.serve() }()
	t.Cleanup(func() { conn.Close(); <-done })
	addr := conn.LocalAddr().String()
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", addr)
	}}
}

func (s *dnsServer) serve() {
	buf := make([]byte, 1500)
	for {
		n, from, err := s.conn.ReadFrom(buf)
		if err != nil {
			return
		}
		var p dnsmessage.Parser
		h, err := p.Start(buf[:n])
		if err != nil {
			continue
		}
		q, err := p.Question()
		if err != nil {
			continue
		}
		b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true})
		b.EnableCompression()
		_ = b.StartQuestions()
		_ = b.Question(q)
		_ = b.StartAnswers()
		name := strings.TrimSuffix(q.Name.String(), ".")
		rh := dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 1}
		found := false
		switch q.Type {
		case dnsmessage.TypeA:
			if ip, ok := s.forward[strings.SplitN(name, ".", 2)[0]]; ok {
				var a [4]byte
				copy(a[:], net.ParseIP(ip).To4())
				_ = b.AResource(rh, dnsmessage.AResource{A: a})
				found = true
			}
		case dnsmessage.TypePTR:
			if target, ok := s.reverse[reverseToIP(name)]; ok {
				_ = b.PTRResource(rh, dnsmessage.PTRResource{PTR: dnsmessage.MustNewName(target + ".")})
				found = true
			}
		case dnsmessage.TypeAAAA:
			_, found = s.forward[strings.SplitN(name, ".", 2)[0]]
		}
		msg, err := b.Finish()
		if err != nil {
			continue
		}
		if !found {
			// NXDOMAIN
			msg[3] = msg[3]&0xf0 | byte(dnsmessage.RCodeNameError)
		}
		_, _ = s.conn.WriteTo(msg, from)
	}
}

// reverseToIP turns 4.3.2.1.in-addr.arpa into 1.2.3.4.
func reverseToIP(name string) string {
	l := strings.Split(strings.TrimSuffix(name, ".in-addr.arpa"), ".")
	for i, j := 0, len(l)-1; i < j; i, j = i+1, j-1 {
		l[i], l[j] = l[j], l[i]
	}
	return strings.Join(l, ".")
}

// newDoctor is a doctor of cfg's checks with the test's defaults filled.
func newDoctor(t *testing.T, cfg Config) *Doctor {
	t.Helper()
	if cfg.ClientName == "" {
		cfg.ClientName = "avsdoc-client"
	}
	if cfg.NodeIP == "" {
		cfg.NodeIP = "127.0.0.1"
	}
	if cfg.Server == "" {
		cfg.Server, cfg.ServerPort = "127.0.0.1", 28001
	}
	if cfg.ListenPort == 0 {
		cfg.ListenPort = 28002
	}
	if cfg.State.Agent == nil {
		cfg.State.Agent = func() Agent { return Agent{} }
	}
	if cfg.State.Registration == nil {
		cfg.State.Registration = func() Registration { return Registration{} }
	}
	d, err := New(cfg, zerolog.New(zerolog.NewTestWriter(t)))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return c
}

func want(t *testing.T, dg Diagnosis, state string, words ...string) {
	t.Helper()
	t.Logf("%s: %s: %s (fix: %s)", dg.Check, dg.State, dg.Message, dg.Fix)
	if dg.State != state {
		t.Errorf("%s: state %s, want %s", dg.Check, dg.State, state)
	}
	for _, w := range words {
		if !strings.Contains(dg.Message, w) {
			t.Errorf("%s: the message does not say %q", dg.Check, w)
		}
	}
	if dg.State == StateFault && dg.Fix == "" {
		t.Errorf("%s: a fault without a fix", dg.Check)
	}
}

func TestClientName(t *testing.T) {
	res := startDNS(t,
		map[string]string{"avsdoc-good": "198.51.100.7", "avsdoc-oneway": "198.51.100.8", "avsdoc-other": "198.51.100.9"},
		map[string]string{"198.51.100.7": "avsdoc-good.example.com", "198.51.100.9": "somebody-else.example.com"})
	for _, tc := range []struct {
		name, state string
		words       []string
	}{
		{"avsdoc-good", StateOK, []string{"resolves to 198.51.100.7", "back to avsdoc-good.example.com", "not NODE_IP 192.0.2.2"}},
		{"avsdoc-missing", StateFault, []string{"avsdoc-missing does not resolve", "no such name"}},
		{"avsdoc-oneway", StateFault, []string{"resolves to 198.51.100.8, but not back", "198.51.100.8 to no name"}},
		{"avsdoc-other", StateFault, []string{"not back", "198.51.100.9 to somebody-else.example.com"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newDoctor(t, Config{ClientName: tc.name, NodeIP: "192.0.2.2", Resolver: res})
			dg := d.checkClientName(ctx(t))
			want(t, dg, tc.state, tc.words...)
			if tc.state == StateFault && !strings.Contains(dg.Fix, tc.name+" -> 192.0.2.2") {
				t.Errorf("the fix does not name the record to add: %s", dg.Fix)
			}
		})
	}
}

// listen listens on a loopback port and serves each connection with fn.
func listen(t *testing.T, fn func(net.Conn)) (string, int) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { fn(c) })
		}
	})
	return "127.0.0.1", ln.Addr().(*net.TCPAddr).Port
}

// closedPort is a loopback port nothing listens on.
func closedPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return port
}

func TestMCS(t *testing.T) {
	res := startDNS(t, nil, nil)
	silent := func(c net.Conn) {
		defer c.Close()
		_, _ = c.Read(make([]byte, 1)) // waits for the client, as an MCS
	}
	greets := func(c net.Conn) {
		defer c.Close()
		_, _ = c.Write([]byte("SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n"))
		_, _ = c.Read(make([]byte, 1))
	}
	hangsUp := func(c net.Conn) { c.Close() }
	for _, tc := range []struct {
		name, state string
		server      string
		port        int
		words       []string
	}{
		{name: "an MCS that waits", state: StateOK, words: []string{"accepts connections and waits for the client"}},
		{name: "nothing listens", state: StateFault, port: closedPort(t), words: []string{"unreachable from the pod", "connection refused"}},
		{name: "an SSH server", state: StateFault, words: []string{"an SSH server answers at", "not an MCS", "SSH-2.0-OpenSSH_9.2p1"}},
		{name: "hangs up", state: StateFault, words: []string{"closes them at once"}},
		{name: "no such name", state: StateFault, server: "avsdoc-no-mcs.invalid", port: 28001, words: []string{"MCS name avsdoc-no-mcs.invalid does not resolve"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			server, port := tc.server, tc.port
			if port == 0 {
				fn := map[string]func(net.Conn){"an MCS that waits": silent, "an SSH server": greets, "hangs up": hangsUp}[tc.name]
				server, port = listen(t, fn)
			}
			if server == "" {
				server = "127.0.0.1"
			}
			d := newDoctor(t, Config{Server: server, ServerPort: port, Resolver: res})
			want(t, d.checkMCS(ctx(t)), tc.state, tc.words...)
		})
	}
}

func TestListenPort(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	free := closedPort(t)
	me := os.Getpid()
	comm, _ := os.ReadFile("/proc/self/comm")
	for _, tc := range []struct {
		name  string
		port  int
		agent Agent
		state string
		words []string
	}{
		{"avagent not started", port, Agent{}, StatePending, []string{"not started yet"}},
		{"avagent listens", port, Agent{Started: true, Running: true, PID: me}, StateOK, []string{"avagent (pid " + strconv.Itoa(me) + ") listens on port " + strconv.Itoa(port)}},
		{"taken while avagent is down", port, Agent{Started: true, LastExit: "exit status 1", LastLog: "cannot listen on port: address already in use"}, StateFault,
			[]string{"port " + strconv.Itoa(port) + " is taken by " + strings.TrimSpace(string(comm)) + " (pid " + strconv.Itoa(me) + "), not avagent", "ended with exit status 1", "address already in use"}},
		{"taken by another process while avagent runs", port, Agent{Started: true, Running: true, PID: os.Getppid()}, StateFault, []string{"is taken by"}},
		{"nothing listens, avagent down", free, Agent{Started: true, LastExit: "exit status 1"}, StateFault, []string{"nothing listens on port " + strconv.Itoa(free), "avagent is not running", "exit status 1"}},
		{"nothing listens, avagent runs", free, Agent{Started: true, Running: true, PID: os.Getppid()}, StateFault, []string{"avagent runs (pid", "nothing listens on port " + strconv.Itoa(free)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newDoctor(t, Config{ListenPort: tc.port, State: State{Agent: func() Agent { return tc.agent }}})
			c, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			want(t, d.checkListenPort(c), tc.state, tc.words...)
		})
	}
}

func TestNodePort(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	listening := Diagnosis{Check: CheckListenPort, State: StateOK}
	for _, tc := range []struct {
		name, nodeIP string
		listen       Diagnosis
		state        string
		words        []string
	}{
		{"answers", "127.0.0.1", listening, StateOK, []string{"127.0.0.1:" + strconv.Itoa(port) + " answers from inside the pod"}},
		// 127.0.0.2 is this host too, but the listener is on 127.0.0.1
		// only: as a node without the NodePort.
		{"refused", "127.0.0.2", listening, StateFault, []string{"nothing answers at 127.0.0.2:" + strconv.Itoa(port), "connection refused", "no NodePort Service publishes port"}},
		{"avagent does not listen", "127.0.0.1", Diagnosis{State: StateFault}, StateUnknown, []string{"cannot tell", "while avagent does not listen"}},
		{"avagent not started", "127.0.0.1", Diagnosis{State: StatePending}, StatePending, []string{"waits for avagent"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newDoctor(t, Config{NodeIP: tc.nodeIP, ListenPort: port})
			want(t, d.checkNodePort(ctx(t), tc.listen), tc.state, tc.words...)
		})
	}
}

func TestRegistration(t *testing.T) {
	for _, tc := range []struct {
		name  string
		reg   Registration
		state string
		words []string
	}{
		{"registered", Registration{Registered: true}, StateOK, []string{"registered"}},
		{"no attempt", Registration{}, StatePending, []string{"no registration attempt"}},
		{"refused", Registration{Attempts: 2, Refused: true, LastOutcome: "refused", LastError: "exit status 1: avagent Error: registration refused by MCS 192.0.2.2:28001: domain /nowhere does not exist"},
			StateFault, []string{"refused the registration (attempt 2)", "domain /nowhere does not exist"}},
		{"unreachable", Registration{Attempts: 1, LastOutcome: "unreachable", LastError: "connect to MCS: connection refused"}, StateUnknown, []string{"1 attempts, the last unreachable", "see mcs"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newDoctor(t, Config{State: State{Registration: func() Registration { return tc.reg }}})
			want(t, d.checkRegistration(ctx(t)), tc.state, tc.words...)
		})
	}
}

func TestNodeIPLocal(t *testing.T) {
	d := newDoctor(t, Config{NodeIP: "127.0.0.1"})
	want(t, d.checkNodeIP(ctx(t)), StateOK, "NODE_IP 127.0.0.1 is an address of the pod's own network namespace")
}

// TestRunTriggers: the first report comes at once, then one when avagent
// starts and one for each new symptom, each naming its trigger.
func TestRunTriggers(t *testing.T) {
	var mu sync.Mutex
	agent, symptom := Agent{}, ""
	set := func(a Agent, s string) { mu.Lock(); agent, symptom = a, s; mu.Unlock() }
	d := newDoctor(t, Config{
		Server: "127.0.0.1", ServerPort: closedPort(t), Resolver: startDNS(t, nil, nil),
		State: State{
			Agent:   func() Agent { mu.Lock(); defer mu.Unlock(); return agent },
			Symptom: func() string { mu.Lock(); defer mu.Unlock(); return symptom },
		},
		SymptomPoll: 10 * time.Millisecond, Timeout: time.Second,
	})
	c, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- d.Run(c) }()
	waitTrigger := func(trigger string) Report {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			if r := d.Report(); r.Trigger == trigger {
				return r
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Fatalf("no report triggered by %q: last %+v", trigger, d.Report())
		return Report{}
	}
	r := waitTrigger(TriggerStart)
	t.Logf("first report %s after the start", time.Since(start).Round(time.Millisecond))
	if mcs, _ := r.Get(CheckMCS); mcs.State != StateFault {
		t.Errorf("first report: mcs %+v", mcs)
	}
	if lp, _ := r.Get(CheckListenPort); lp.State != StatePending {
		t.Errorf("first report: listen-port %+v", lp)
	}
	set(Agent{Started: true, Running: false, LastExit: "exit status 1"}, "")
	r = waitTrigger(TriggerAgentStarted)
	if lp, _ := r.Get(CheckListenPort); lp.State != StateFault {
		t.Errorf("after avagent started: listen-port %+v", lp)
	}
	set(Agent{Started: true, LastExit: "exit status 1"}, "registration failed: refused")
	waitTrigger("registration failed: refused")
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
	if n := len(d.Report().Faults()); n == 0 {
		t.Error("no faults in the last report")
	}
}
