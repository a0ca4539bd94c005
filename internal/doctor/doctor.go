// Package doctor names what keeps the Avamar server from reaching the
// client, in words an operator acts on. A backup that fails in the Avamar
// UI says nothing about the pod; the usual causes, as community images of
// the client note them, are a client name without forward and reverse DNS
// records, a wrong --iplist, and a listen port that is taken or not
// published. The doctor looks for each from inside the pod:
//
//   - client-name: the client name resolves, and one of its addresses
//     resolves back to it;
//   - node-ip: NODE_IP (--iplist) is an address of the node the pod runs on
//     (a packet with a time to live of 1 reaches it: no router in between);
//   - mcs: the MCS port accepts connections and does not greet like
//     something else (an SSH, HTTP or mail server);
//   - listen-port: avagent, and nothing else, listens on its port;
//   - node-port: something answers at NODE_IP:port from inside the pod,
//     the way the Avamar server comes in (a NodePort Service);
//   - registration: the server did not refuse the registration.
//
// Each finding is a Diagnosis: ok, fault, unknown (the pod cannot tell,
// and says why) or pending (not yet checkable). None is a crash and none
// fails readiness: they are shown in /v1/status, /readyz?verbose and
// `avsidecar status`. The doctor checks at start, when avagent starts,
// when a symptom appears on the backup side (a registration attempt
// fails, avagent exits, the backup check goes bad), and every Interval.
package doctor

import (
	"context"
	"errors"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// Names of the checks, as Diagnosis.Check and the optional checks of
// /readyz?verbose.
const (
	CheckClientName   = "client-name"
	CheckNodeIP       = "node-ip"
	CheckMCS          = "mcs"
	CheckListenPort   = "listen-port"
	CheckNodePort     = "node-port"
	CheckRegistration = "registration"
)

// Checks lists every check, in the order reports show them.
var Checks = []string{CheckClientName, CheckNodeIP, CheckMCS, CheckListenPort, CheckNodePort, CheckRegistration}

// States of a diagnosis.
const (
	// StateOK: the check found nothing wrong.
	StateOK = "ok"
	// StateFault: the check found a cause; Fix says what to do.
	StateFault = "fault"
	// StateUnknown: the pod cannot tell; Message says why.
	StateUnknown = "unknown"
	// StatePending: the check needs something that has not happened yet
	// (avagent has not started, no registration attempt was made).
	StatePending = "pending"
)

// States lists every state of a diagnosis.
var States = []string{StateOK, StateFault, StateUnknown, StatePending}

// Diagnosis is what one check found.
type Diagnosis struct {
	// Check is the check's name (CheckClientName, ...).
	Check string `json:"check"`
	// State is ok, fault, unknown or pending.
	State string `json:"state"`
	// Message says what was found, with the addresses and names involved.
	Message string `json:"message"`
	// Fix says what to change, for a fault or an unknown.
	Fix string `json:"fix,omitempty"`
}

// Report is the outcome of one round of checks.
type Report struct {
	// CheckedAt is when the round ended; zero before the first one.
	CheckedAt time.Time `json:"checked_at,omitzero"`
	// Trigger is why the round ran: start, avagent started, a symptom
	// ("registration failed: refused", "avagent exited"...), or periodic.
	Trigger string `json:"trigger,omitempty"`
	// Diagnoses are the findings, one per check, in Checks order.
	Diagnoses []Diagnosis `json:"diagnoses"`
}

// Faults returns the diagnoses in state fault.
func (r Report) Faults() []Diagnosis {
	var out []Diagnosis
	for _, d := range r.Diagnoses {
		if d.State == StateFault {
			out = append(out, d)
		}
	}
	return out
}

// Get returns the diagnosis of check, if the report has one.
func (r Report) Get(check string) (Diagnosis, bool) {
	i := slices.IndexFunc(r.Diagnoses, func(d Diagnosis) bool { return d.Check == check })
	if i < 0 {
		return Diagnosis{}, false
	}
	return r.Diagnoses[i], true
}

// Agent is what the doctor needs to know of avagent.
type Agent struct {
	// Started is true once the sidecar has started avagent.
	Started bool
	// Running is true while avagent runs.
	Running bool
	// PID is avagent's pid while it runs.
	PID int
	// LastExit says how its last run ended ("exit status 1").
	LastExit string
	// LastLog is the last line it wrote to avagent.log in its last run.
	LastLog string
}

// Registration is what the doctor needs to know of the registration.
type Registration struct {
	// Registered is true once the client is registered (now or before).
	Registered bool
	// Attempts counts the attempts of this run.
	Attempts int
	// Refused is true when the last attempt reached the server, which
	// did not register the client.
	Refused bool
	// LastOutcome is the last failed attempt's outcome, in words.
	LastOutcome string
	// LastError is the last failed attempt's error, with the command's
	// own words.
	LastError string
}

// State is where the doctor reads the sidecar's state: functions, called
// from the doctor's goroutines, that return snapshots.
type State struct {
	// Agent reports avagent's state; Registration the registration's.
	Agent        func() Agent
	Registration func() Registration
	// Symptom names the last symptom seen on the backup side (a failed
	// registration attempt, avagent's last exit), or is empty. When it
	// changes to a new non-empty value, the doctor checks again with it
	// as the trigger. It is polled every Config.SymptomPoll, so an event
	// must stay named until the next one; nil is never a symptom.
	Symptom func() string
}

// Config is what the doctor checks and where it reads the sidecar's state.
type Config struct {
	// ClientName is the client's name on the Avamar server.
	ClientName string
	// NodeIP is --iplist: where the Avamar server reaches the agent.
	NodeIP string
	// Server and ServerPort are the MCS.
	Server     string
	ServerPort int
	// ListenPort is avagent's --listenport.
	ListenPort int
	// NodeProbePort is the port of NODE_IP the node-ip check knocks on;
	// any port will do, as a refusal proves the node answered, and the
	// kubelet's (10250, the default) is open on every node. It must not
	// be a NodePort, whose traffic is forwarded.
	NodeProbePort int
	// Interval is the time between two rounds without a trigger (default
	// one minute).
	Interval time.Duration
	// Timeout bounds each check (default 3s).
	Timeout time.Duration
	// Resolver looks names up (nil: net.DefaultResolver).
	Resolver *net.Resolver
	// Proc is the proc filesystem the listen-port check reads the
	// sockets and their owners from (default /proc).
	Proc string
	// State is where the doctor reads the sidecar's state.
	State State
	// SymptomPoll is the time between two polls of Symptom (default 2s).
	SymptomPoll time.Duration
}

// Doctor runs the checks and keeps the last report.
type Doctor struct {
	cfg Config
	log zerolog.Logger

	mu     sync.Mutex
	report Report
}

// New checks cfg and fills its defaults.
func New(cfg Config, log zerolog.Logger) (*Doctor, error) {
	if cfg.ClientName == "" || cfg.Server == "" || cfg.ServerPort == 0 || cfg.ListenPort == 0 || net.ParseIP(cfg.NodeIP) == nil {
		return nil, errors.New("doctor: client name, NODE_IP, server, server port and listen port are required")
	}
	if cfg.State.Agent == nil || cfg.State.Registration == nil {
		return nil, errors.New("doctor: the agent's and the registration's state are required")
	}
	if cfg.NodeProbePort == 0 {
		cfg.NodeProbePort = 10250
	}
	if cfg.Interval <= 0 {
		cfg.Interval = time.Minute
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 3 * time.Second
	}
	if cfg.Resolver == nil {
		cfg.Resolver = net.DefaultResolver
	}
	if cfg.Proc == "" {
		cfg.Proc = "/proc"
	}
	if cfg.State.Symptom == nil {
		cfg.State.Symptom = func() string { return "" }
	}
	if cfg.SymptomPoll <= 0 {
		cfg.SymptomPoll = 2 * time.Second
	}
	d := &Doctor{cfg: cfg, log: log}
	for _, c := range Checks {
		d.report.Diagnoses = append(d.report.Diagnoses, Diagnosis{Check: c, State: StatePending, Message: "not checked yet"})
	}
	return d, nil
}

// Report returns the last report.
func (d *Doctor) Report() Report {
	d.mu.Lock()
	defer d.mu.Unlock()
	r := d.report
	r.Diagnoses = slices.Clone(r.Diagnoses)
	return r
}

// Trigger names of the rounds the doctor starts by itself.
const (
	TriggerStart        = "start"
	TriggerAgentStarted = "avagent started"
	TriggerPeriodic     = "periodic"
)

// Run checks at once, then again when avagent starts, when a new symptom
// appears and every Interval, until ctx ends. It returns nil then.
func (d *Doctor) Run(ctx context.Context) error {
	// What the first round sees: a change after this is a new trigger,
	// even when it comes while the round runs.
	agentStarted := d.cfg.State.Agent().Started
	symptom := d.cfg.State.Symptom()
	d.Check(ctx, TriggerStart)
	poll := time.NewTicker(d.cfg.SymptomPoll)
	defer poll.Stop()
	periodic := time.NewTicker(d.cfg.Interval)
	defer periodic.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-periodic.C:
			d.Check(ctx, TriggerPeriodic)
		case <-poll.C:
			if !agentStarted && d.cfg.State.Agent().Started {
				agentStarted = true
				d.Check(ctx, TriggerAgentStarted)
				periodic.Reset(d.cfg.Interval)
				continue
			}
			if s := d.cfg.State.Symptom(); s != symptom {
				symptom = s
				if s != "" {
					d.Check(ctx, s)
					periodic.Reset(d.cfg.Interval)
				}
			}
		}
	}
}

// Check runs every check now, concurrently, keeps the report and logs the
// diagnoses that changed.
func (d *Doctor) Check(ctx context.Context, trigger string) Report {
	checks := []func(context.Context) Diagnosis{
		d.checkClientName, d.checkNodeIP, d.checkMCS, d.checkListenPort, nil, d.checkRegistration,
	}
	out := make([]Diagnosis, len(checks))
	var wg sync.WaitGroup
	for i, fn := range checks {
		if fn == nil {
			continue
		}
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, d.cfg.Timeout)
			defer cancel()
			out[i] = fn(cctx)
		})
	}
	wg.Wait()
	// The way in through the node means something only once avagent
	// listens in the pod.
	i := slices.Index(Checks, CheckNodePort)
	cctx, cancel := context.WithTimeout(ctx, d.cfg.Timeout)
	out[i] = d.checkNodePort(cctx, out[slices.Index(Checks, CheckListenPort)])
	cancel()

	if ctx.Err() != nil {
		// Stopping: what the checks say now is about the stop.
		return d.Report()
	}
	r := Report{CheckedAt: time.Now().UTC(), Trigger: trigger, Diagnoses: out}
	d.mu.Lock()
	old := d.report
	d.report = r
	d.mu.Unlock()
	for _, dg := range out {
		if prev, ok := old.Get(dg.Check); ok && prev.State == dg.State && prev.Message == dg.Message {
			continue
		}
		ev := d.log.Info()
		if dg.State == StateFault {
			ev = d.log.Warn()
		}
		ev.Str("check", dg.Check).Str("state", dg.State).Str("found", dg.Message).Str("fix", dg.Fix).Str("trigger", trigger).Msg("diagnosis")
	}
	return r
}
