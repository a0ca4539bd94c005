package testkit

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/avsidecar/avsidecar/internal/testkit/mcsproto"
)

// MCSOptions configure a fake MCS. The zero value accepts every
// registration at once.
type MCSOptions struct {
	// Down starts the MCS with its port closed; SetDown(false) opens it on
	// the same address later. With port 0 the port is still chosen at
	// start, so Addr is known while it is down.
	Down bool
	// Refuse, when not empty, refuses every registration with this reason.
	Refuse string
	// Delay is how long the MCS thinks before answering a registration.
	Delay time.Duration
	// MaxConcurrent, when positive, is how many registrations are handled
	// at once; the others are refused at once with a "busy" reason, as an
	// overloaded server would.
	MaxConcurrent int
	// RetryInterval is how often the MCS calls an agent back until it
	// answers (default 200ms).
	RetryInterval time.Duration
	// CheckInterval is how often the MCS calls a reachable agent back, to
	// notice it going away (default 2s).
	CheckInterval time.Duration
	// Name is what the MCS calls itself in callbacks (default "avkit-mcs").
	Name string
	// Log receives one line per registration, per check-in and per change
	// of an agent's reachability. The zero value logs nothing.
	Log zerolog.Logger
}

// BusyReason is the refusal reason when MaxConcurrent registrations are
// already being handled.
const BusyReason = "busy: too many concurrent registrations"

// Registration is one registration the MCS accepted.
type Registration struct {
	// Name is the client name.
	Name string
	// Domain is the Avamar domain.
	Domain string
	// IPList is where the MCS calls the agent back.
	IPList string
	// ListenPort is the agent's callback port.
	ListenPort int
	// ClientID is the id the MCS gave the client.
	ClientID string
	// Remote is the address the registration came from.
	Remote string
	// Time is when the registration was accepted.
	Time time.Time
}

// MCS is a fake Avamar Management Console Server: it accepts
// registrations on one TCP address, records them, and calls each
// registered agent back at its iplist:listenport. A registered agent that
// says hello when it starts (a pod moved to another node) moves the
// callback to its new address without registering again. Its behaviour
// can be changed while it runs (down, refusing, slow), so tests can play
// the outages the product must survive.
type MCS struct {
	opts   MCSOptions
	addr   string
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex
	ln        net.Listener
	conns     map[net.Conn]struct{}
	refuse    string
	delay     time.Duration
	inflight  int
	nextID    int
	regs      []Registration
	current   map[string]Registration // by name: the last registration, at the address of the last hello
	checkIns  map[string]int
	attempts  map[string]int
	reachable map[string]bool
	callbacks map[string]context.CancelFunc
	changed   chan struct{}
	closed    bool
}

// StartMCS starts a fake MCS listening on addr (host:port; port 0 picks
// one; 0.0.0.0 serves clients in other network namespaces).
func StartMCS(addr string, opts MCSOptions) (*MCS, error) {
	if opts.RetryInterval <= 0 {
		opts.RetryInterval = 200 * time.Millisecond
	}
	if opts.CheckInterval <= 0 {
		opts.CheckInterval = 2 * time.Second
	}
	if opts.Name == "" {
		opts.Name = "avkit-mcs"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("start mcs: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &MCS{
		opts:      opts,
		addr:      ln.Addr().String(),
		ctx:       ctx,
		cancel:    cancel,
		conns:     map[net.Conn]struct{}{},
		refuse:    opts.Refuse,
		delay:     opts.Delay,
		current:   map[string]Registration{},
		checkIns:  map[string]int{},
		attempts:  map[string]int{},
		reachable: map[string]bool{},
		callbacks: map[string]context.CancelFunc{},
		changed:   make(chan struct{}),
	}
	if opts.Down {
		ln.Close()
	} else {
		m.ln = ln
		m.wg.Add(1)
		go m.serve(ln)
	}
	m.opts.Log.Info().Str("addr", m.addr).Bool("down", opts.Down).Msg("mcs started")
	return m, nil
}

// Addr is the address the MCS listens on, also while it is down.
func (m *MCS) Addr() string { return m.addr }

// Port is the port the MCS listens on.
func (m *MCS) Port() int {
	_, p, _ := net.SplitHostPort(m.addr)
	n, _ := strconv.Atoi(p)
	return n
}

// SetDown closes the listening socket (down) or opens it again on the same
// address (up). Registrations in progress are not interrupted.
func (m *MCS) SetDown(down bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return errors.New("mcs closed")
	}
	if down && m.ln != nil {
		m.ln.Close()
		m.ln = nil
	}
	if !down && m.ln == nil {
		ln, err := net.Listen("tcp", m.addr)
		if err != nil {
			return fmt.Errorf("reopen mcs: %w", err)
		}
		m.ln = ln
		m.wg.Add(1)
		go m.serve(ln)
	}
	m.opts.Log.Info().Bool("down", down).Msg("mcs availability changed")
	return nil
}

// SetRefuse makes the MCS refuse registrations with reason; "" accepts.
func (m *MCS) SetRefuse(reason string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.refuse = reason
}

// SetDelay makes the MCS wait d before answering each registration.
func (m *MCS) SetDelay(d time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.delay = d
}

// Registrations returns the accepted registrations, oldest first.
func (m *MCS) Registrations() []Registration {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]Registration(nil), m.regs...)
}

// Count returns how many times name was registered.
func (m *MCS) Count(name string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, r := range m.regs {
		if r.Name == name {
			n++
		}
	}
	return n
}

// CheckIns returns how many hellos of name's agent the MCS accepted: each
// start of a registered agent is one, and none is a registration.
func (m *MCS) CheckIns(name string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.checkIns[name]
}

// CallbackAddr returns where the MCS calls name's agent back
// (iplist and listenport): the registration's, or the last hello's.
func (m *MCS) CallbackAddr(name string) (iplist string, listenport int, ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.current[name]
	return r.IPList, r.ListenPort, ok
}

// WaitCheckIns returns once at least n hellos of name's agent were
// accepted.
func (m *MCS) WaitCheckIns(ctx context.Context, name string, n int) error {
	return m.wait(ctx, func() bool { return m.checkIns[name] >= n }, fmt.Sprintf("%d check-ins of %s", n, name))
}

// Attempts returns how many registration requests for name arrived,
// accepted or not.
func (m *MCS) Attempts(name string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.attempts[name]
}

// Reachable reports whether the last callback to name's agent succeeded.
func (m *MCS) Reachable(name string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.reachable[name]
}

// WaitRegistered returns once name has been registered at least once.
func (m *MCS) WaitRegistered(ctx context.Context, name string) error {
	return m.wait(ctx, func() bool {
		for _, r := range m.regs {
			if r.Name == name {
				return true
			}
		}
		return false
	}, "registration of "+name)
}

// WaitAttempts returns once at least n registration requests for name
// arrived, accepted or not.
func (m *MCS) WaitAttempts(ctx context.Context, name string, n int) error {
	return m.wait(ctx, func() bool { return m.attempts[name] >= n }, fmt.Sprintf("%d attempts of %s", n, name))
}

// WaitReachable returns once name's agent answers the MCS callback (at
// once if its last callback succeeded).
func (m *MCS) WaitReachable(ctx context.Context, name string) error {
	return m.wait(ctx, func() bool { return m.reachable[name] }, name+" reachable")
}

// WaitUnreachable returns once a callback to name's agent failed after it
// had been registered, for tests that stop an agent.
func (m *MCS) WaitUnreachable(ctx context.Context, name string) error {
	return m.wait(ctx, func() bool {
		r, known := m.reachable[name]
		return known && !r
	}, name+" unreachable")
}

// wait blocks until cond, called with m.mu held, is true.
func (m *MCS) wait(ctx context.Context, cond func() bool, what string) error {
	for {
		m.mu.Lock()
		ok, changed := cond(), m.changed
		m.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("wait for %s: %w", what, ctx.Err())
		}
	}
}

// notify wakes the waiters; m.mu must be held.
func (m *MCS) notify() {
	close(m.changed)
	m.changed = make(chan struct{})
}

// Close stops the MCS, its connections and its callbacks.
func (m *MCS) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	m.cancel()
	if m.ln != nil {
		m.ln.Close()
		m.ln = nil
	}
	for c := range m.conns {
		c.Close()
	}
	m.mu.Unlock()
	m.wg.Wait()
	return nil
}

func (m *MCS) serve(ln net.Listener) {
	defer m.wg.Done()
	for {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		m.mu.Lock()
		if m.closed {
			m.mu.Unlock()
			conn.Close()
			return
		}
		m.conns[conn] = struct{}{}
		m.wg.Add(1)
		m.mu.Unlock()
		go func() {
			defer m.wg.Done()
			m.handle(conn)
			m.mu.Lock()
			delete(m.conns, conn)
			m.mu.Unlock()
			conn.Close()
		}()
	}
}

// handle answers one request: a registration or an agent's hello.
func (m *MCS) handle(conn net.Conn) {
	log := m.opts.Log.With().Str("remote", conn.RemoteAddr().String()).Logger()
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	var raw json.RawMessage
	if err := mcsproto.Read(bufio.NewReader(conn), &raw); err != nil {
		if errors.Is(err, io.EOF) { // a TCP probe of the port, not a client
			log.Debug().Msg("connection closed without a request")
			return
		}
		log.Warn().Err(err).Msg("bad request")
		return
	}
	_ = conn.SetReadDeadline(time.Time{})
	var head struct {
		Op string `json:"op"`
	}
	_ = json.Unmarshal(raw, &head) // raw is valid JSON; a non-object has no op
	switch head.Op {
	case mcsproto.OpRegister:
		var req mcsproto.Register
		if err := json.Unmarshal(raw, &req); err != nil {
			log.Warn().Err(err).Msg("bad request")
			_ = mcsproto.Write(conn, mcsproto.RegisterReply{Reason: "bad registration: " + err.Error()})
			return
		}
		m.register(conn, log, req)
	case mcsproto.OpHello:
		var req mcsproto.Hello
		if err := json.Unmarshal(raw, &req); err != nil {
			log.Warn().Err(err).Msg("bad request")
			_ = mcsproto.Write(conn, mcsproto.HelloReply{Reason: "bad hello: " + err.Error()})
			return
		}
		m.hello(conn, log, req)
	default:
		_ = mcsproto.Write(conn, mcsproto.RegisterReply{Reason: "unknown operation " + head.Op})
	}
}

// register answers one registration request.
func (m *MCS) register(conn net.Conn, log zerolog.Logger, req mcsproto.Register) {
	log = log.With().Str("name", req.Name).Str("domain", req.Domain).Str("iplist", req.IPList).
		Int("listenport", req.ListenPort).Logger()
	if req.Name == "" {
		_ = mcsproto.Write(conn, mcsproto.RegisterReply{Reason: "client name is empty"})
		return
	}

	m.mu.Lock()
	m.attempts[req.Name]++
	m.notify()
	if m.opts.MaxConcurrent > 0 && m.inflight >= m.opts.MaxConcurrent {
		m.mu.Unlock()
		log.Info().Str("reason", BusyReason).Msg("registration refused")
		_ = mcsproto.Write(conn, mcsproto.RegisterReply{Reason: BusyReason})
		return
	}
	m.inflight++
	delay, refuse := m.delay, m.refuse
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		m.inflight--
		m.mu.Unlock()
	}()

	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-m.ctx.Done():
			t.Stop()
			return
		}
	}
	if refuse != "" {
		log.Info().Str("reason", refuse).Msg("registration refused")
		_ = mcsproto.Write(conn, mcsproto.RegisterReply{Reason: refuse})
		return
	}

	// The registration is recorded before the answer is sent, as on a real
	// server: a client that gave up waiting is registered all the same.
	m.mu.Lock()
	m.nextID++
	reg := Registration{
		Name:       req.Name,
		Domain:     req.Domain,
		IPList:     req.IPList,
		ListenPort: req.ListenPort,
		ClientID:   fmt.Sprintf("%040x", m.nextID),
		Remote:     conn.RemoteAddr().String(),
		Time:       time.Now(),
	}
	m.regs = append(m.regs, reg)
	delete(m.reachable, reg.Name)
	m.startCallBack(reg)
	m.notify()
	m.mu.Unlock()

	log.Info().Str("client_id", reg.ClientID).Msg("client registered")
	if err := mcsproto.Write(conn, mcsproto.RegisterReply{OK: true, ClientID: reg.ClientID}); err != nil {
		log.Warn().Err(err).Msg("registration answer not delivered")
	}
}

// hello answers an agent checking in at start. A known client (name and
// current client id) moves its callback to the address it gives, and the
// MCS calls it there at once; it is a check-in, not a registration. The
// MCS's refusal, delay and concurrency limit are about registrations and
// do not apply.
func (m *MCS) hello(conn net.Conn, log zerolog.Logger, req mcsproto.Hello) {
	log = log.With().Str("name", req.Name).Str("client_id", req.ClientID).Str("iplist", req.IPList).
		Int("listenport", req.ListenPort).Logger()
	m.mu.Lock()
	reg, known := m.current[req.Name]
	if !known || req.Name == "" || req.ClientID != reg.ClientID {
		m.mu.Unlock()
		reason := fmt.Sprintf("unknown client %q with id %q", req.Name, req.ClientID)
		log.Info().Str("reason", reason).Msg("check-in refused")
		_ = mcsproto.Write(conn, mcsproto.HelloReply{Reason: reason})
		return
	}
	moved := reg.IPList != req.IPList || reg.ListenPort != req.ListenPort
	reg.IPList, reg.ListenPort = req.IPList, req.ListenPort
	if moved {
		// Whether the old address answered says nothing about the new one.
		delete(m.reachable, reg.Name)
	}
	m.checkIns[reg.Name]++
	m.startCallBack(reg)
	m.notify()
	m.mu.Unlock()

	log.Info().Bool("moved", moved).Msg("client checked in")
	if err := mcsproto.Write(conn, mcsproto.HelloReply{OK: true}); err != nil {
		log.Warn().Err(err).Msg("check-in answer not delivered")
	}
}

// startCallBack makes reg where name's agent is called back, replacing the
// callback loop it had; m.mu must be held.
func (m *MCS) startCallBack(reg Registration) {
	m.current[reg.Name] = reg
	if stop := m.callbacks[reg.Name]; stop != nil {
		stop()
	}
	ctx, stop := context.WithCancel(m.ctx)
	m.callbacks[reg.Name] = stop
	m.wg.Add(1)
	go m.callBack(ctx, reg)
}

// callBack calls reg's agent until ctx ends: every RetryInterval while it
// does not answer, every CheckInterval once it does.
func (m *MCS) callBack(ctx context.Context, reg Registration) {
	defer m.wg.Done()
	log := m.opts.Log.With().Str("name", reg.Name).Logger()
	for {
		addr, err := m.ping(ctx, reg)
		m.mu.Lock()
		was, known := m.reachable[reg.Name]
		if ctx.Err() == nil {
			m.reachable[reg.Name] = err == nil
			m.notify()
		}
		m.mu.Unlock()
		switch {
		case ctx.Err() != nil:
			return
		case err == nil && !was:
			log.Info().Str("agent", addr).Msg("agent reachable")
		case err != nil && (was || !known):
			log.Info().Err(err).Msg("agent unreachable")
		}
		interval := m.opts.RetryInterval
		if err == nil {
			interval = m.opts.CheckInterval
		}
		t := time.NewTimer(interval)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return
		}
	}
}

// ping calls the agent at each address of its iplist and returns the one
// that answered with the registered name.
func (m *MCS) ping(ctx context.Context, reg Registration) (string, error) {
	if reg.IPList == "" {
		return "", errors.New("no iplist")
	}
	var errs []error
	for _, ip := range strings.Split(reg.IPList, ",") {
		addr := net.JoinHostPort(strings.TrimSpace(ip), strconv.Itoa(reg.ListenPort))
		err := m.pingOne(ctx, addr, reg.Name)
		if err == nil {
			return addr, nil
		}
		errs = append(errs, err)
	}
	return "", errors.Join(errs...)
}

// PingAt calls name's agent at addr, as the MCS calls it back: nil when
// the agent there answers with that name. Tests ask with it whether an
// address other than the registered one leads to the agent (a NodePort of
// another node).
func (m *MCS) PingAt(ctx context.Context, addr, name string) error {
	return m.pingOne(ctx, addr, name)
}

func (m *MCS) pingOne(ctx context.Context, addr, name string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("call back %s: %w", addr, err)
	}
	defer conn.Close()
	deadline, _ := ctx.Deadline()
	_ = conn.SetDeadline(deadline)
	var pong mcsproto.Pong
	if err := mcsproto.Write(conn, mcsproto.Ping{Op: mcsproto.OpPing, Server: m.opts.Name}); err != nil {
		return fmt.Errorf("call back %s: %w", addr, err)
	}
	if err := mcsproto.Read(bufio.NewReader(conn), &pong); err != nil {
		return fmt.Errorf("call back %s: %w", addr, err)
	}
	if !pong.OK || pong.Name != name {
		return fmt.Errorf("call back %s: answered as %q, not %q", addr, pong.Name, name)
	}
	return nil
}

// Backup starts a backup of name's client as a real MCS does when a
// schedule or an administrator runs a dataset: it sends the agent a work
// order over its callback (iplist:listenport), naming the dataset's
// run-at-start and run-at-end scripts, and returns the agent's reply once
// the backup is over or ctx ends.
func (m *MCS) Backup(ctx context.Context, name string, order mcsproto.Backup) (mcsproto.BackupReply, error) {
	iplist, port, ok := m.CallbackAddr(name)
	if !ok {
		return mcsproto.BackupReply{}, fmt.Errorf("backup %s: no such client", name)
	}
	return RunBackup(ctx, net.JoinHostPort(strings.TrimSpace(strings.Split(iplist, ",")[0]), strconv.Itoa(port)), order)
}

// RunBackup sends a backup work order to the agent at addr and waits for
// its reply: what the fake MCS's Backup does, for tests that run an agent
// without an MCS.
func RunBackup(ctx context.Context, addr string, order mcsproto.Backup) (mcsproto.BackupReply, error) {
	order.Op = mcsproto.OpBackup
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return mcsproto.BackupReply{}, fmt.Errorf("backup at %s: %w", addr, err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	var reply mcsproto.BackupReply
	if err := mcsproto.Write(conn, order); err != nil {
		return reply, fmt.Errorf("backup at %s: %w", addr, err)
	}
	if err := mcsproto.Read(bufio.NewReader(conn), &reply); err != nil {
		return reply, fmt.Errorf("backup at %s: %w", addr, err)
	}
	return reply, nil
}
