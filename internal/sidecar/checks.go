package sidecar

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/avsidecar/avsidecar/internal/backupapi"
	"github.com/avsidecar/avsidecar/internal/doctor"
	"github.com/avsidecar/avsidecar/internal/health"
	"github.com/avsidecar/avsidecar/internal/register"
)

// startupChecks pass once the client is installed and configured.
func (s *Sidecar) startupChecks() []health.Check {
	return []health.Check{
		{Name: "installed", Fn: s.checkInstalled},
		{Name: "configured", Fn: func(context.Context) error {
			if !s.configured.Load() {
				return errors.New("flag files not written yet")
			}
			return nil
		}},
	}
}

// readyChecks are SPEC's readiness: not stopping, installed, registered,
// and avagent accepting TCP on its listen port; then the side parts, which
// /readyz?verbose shows without failing on them.
func (s *Sidecar) readyChecks() []health.Check {
	checks := []health.Check{
		{Name: "shutdown", Fn: func(context.Context) error {
			if s.stopping.Load() {
				return errors.New("shutting down")
			}
			return nil
		}},
		{Name: "installed", Fn: s.checkInstalled},
		{Name: "registered", Fn: func(context.Context) error {
			cp := s.client.Load()
			if cp == nil {
				return errors.New("not registered yet")
			}
			st := cp.registrar.Status()
			if st.Registered {
				return nil
			}
			if st.Attempts == 0 {
				return errors.New("not registered yet")
			}
			return fmt.Errorf("not registered after %d attempts, last %s: %s", st.Attempts, st.LastOutcome, st.LastError)
		}},
		{Name: "agent", Fn: s.agentAccepts},
	}
	if len(s.cfg.InboundPorts) > 0 {
		checks = append(checks, health.Check{Name: "inbound-ports", Optional: true, Fn: s.inboundAccepts})
	}
	if s.doctor != nil {
		for _, name := range doctor.Checks {
			checks = append(checks, health.Check{Name: name, Optional: true, Fn: func(context.Context) error { return s.diagnosis(name) }})
		}
	}
	for _, name := range []string{sideSSH, sideBrowse, sideAgentLog, sideBackupAPI, sideHooks} {
		checks = append(checks, health.Check{Name: name, Optional: true, Fn: func(context.Context) error {
			if msg, ok := s.parts.faults.get(name); ok {
				return errors.New(msg)
			}
			if name == sideBackupAPI {
				return s.backupFault()
			}
			return nil
		}})
	}
	return checks
}

// backupFault is what the running backup check found that no retry heals
// and a person must fix: a REST server answering with a redirect, which is
// never followed (backupapi.StateRedirected). /readyz?verbose shows it
// like a side part's fault, and /v1/status lists it in faults.
func (s *Sidecar) backupFault() error {
	if s.parts.backups == nil {
		return nil
	}
	if st := s.parts.backups.Status(); st.State == backupapi.StateRedirected {
		return errors.New(st.Message)
	}
	return nil
}

func (s *Sidecar) checkInstalled(context.Context) error {
	if s.installed.Load() == nil {
		return fmt.Errorf("not installed yet (phase %s)", s.phase.Load())
	}
	return nil
}

// agentAccepts is ready when avagent accepts TCP on its listen port.
func (s *Sidecar) agentAccepts(ctx context.Context) error {
	cp := s.client.Load()
	if cp == nil {
		return errors.New("not started")
	}
	st := cp.agent.Status()
	if st.CrashLoop {
		if n := len(st.LogTail); n > 0 {
			return fmt.Errorf("crash looping: %d short runs, last %s: %s", st.ShortRuns, st.LastExit, st.LogTail[n-1])
		}
		return fmt.Errorf("crash looping: %d short runs, last %s", st.ShortRuns, st.LastExit)
	}
	if !st.Running {
		if st.LastExit != "" {
			return fmt.Errorf("not running, last %s", st.LastExit)
		}
		return errors.New("not started")
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(s.cfg.ListenPort)))
	if err != nil {
		return fmt.Errorf("not accepting on port %d: %w", s.cfg.ListenPort, err)
	}
	conn.Close()
	return nil
}

// InboundPort is one port the client is expected to listen on, as
// /v1/status shows it.
type InboundPort struct {
	Port int `json:"port"`
	// Role is "listen" for avagent's --listenport, where the MCS connects
	// (confirmed), and "extra" for AVAMAR_INBOUND_PORTS.
	Role string `json:"role"`
	// Accepting is whether something accepts TCP on it in the pod now.
	Accepting bool `json:"accepting"`
}

// inboundPorts dials the listen port and AVAMAR_INBOUND_PORTS on loopback.
func (s *Sidecar) inboundPorts(ctx context.Context) []InboundPort {
	out := []InboundPort{{Port: s.cfg.ListenPort, Role: "listen"}}
	for _, p := range s.cfg.InboundPorts {
		out = append(out, InboundPort{Port: p, Role: "extra"})
	}
	var d net.Dialer
	for i := range out {
		cctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		conn, err := d.DialContext(cctx, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(out[i].Port)))
		cancel()
		if err == nil {
			conn.Close()
			out[i].Accepting = true
		}
	}
	return out
}

// inboundAccepts is the optional check of AVAMAR_INBOUND_PORTS: it names
// the ports nothing accepts on, without failing readiness (what those
// ports serve is not confirmed).
func (s *Sidecar) inboundAccepts(ctx context.Context) error {
	var closed []string
	for _, p := range s.inboundPorts(ctx) {
		if p.Role == "extra" && !p.Accepting {
			closed = append(closed, strconv.Itoa(p.Port))
		}
	}
	if len(closed) > 0 {
		return fmt.Errorf("not accepting on %s", strings.Join(closed, ", "))
	}
	return nil
}

// diagnosis is the doctor's last finding of one check as an optional
// readiness check: a fault, or a check that cannot tell, shows as
// [!]check in /readyz?verbose; it never fails readiness (backups are
// the doctor's concern, the application's service is not).
func (s *Sidecar) diagnosis(check string) error {
	dg, ok := s.doctor.Report().Get(check)
	if !ok {
		return nil
	}
	switch dg.State {
	case doctor.StateFault:
		return fmt.Errorf("%s; fix: %s", dg.Message, dg.Fix)
	case doctor.StateUnknown:
		return errors.New(dg.Message)
	}
	return nil
}

// doctorAgent is avagent's state, as the doctor reads it.
func (s *Sidecar) doctorAgent() doctor.Agent {
	cp := s.client.Load()
	if cp == nil {
		return doctor.Agent{}
	}
	st := cp.agent.Status()
	a := doctor.Agent{Started: st.Starts > 0, Running: st.Running, PID: st.PID, LastExit: st.LastExit}
	if n := len(st.LogTail); n > 0 {
		a.LastLog = st.LogTail[n-1]
	}
	return a
}

// doctorRegistration is the registration's state, as the doctor reads it.
func (s *Sidecar) doctorRegistration() doctor.Registration {
	cp := s.client.Load()
	if cp == nil {
		return doctor.Registration{}
	}
	st := cp.registrar.Status()
	return doctor.Registration{
		Registered: st.Registered, Attempts: st.Attempts,
		Refused: st.LastOutcome == register.OutcomeRefused, LastOutcome: st.LastOutcome, LastError: st.LastError,
	}
}

// symptom names what went wrong on the backup side last: a failed
// registration attempt, avagent's last exit, a backup check that went bad.
// Each new one makes the doctor look again.
func (s *Sidecar) symptom() string {
	var out []string
	if cp := s.client.Load(); cp != nil {
		if r := cp.registrar.Status(); !r.Registered && r.Attempts > 0 {
			out = append(out, fmt.Sprintf("registration attempt %d failed: %s", r.Attempts, r.LastOutcome))
		}
		// The last exit, not whether avagent is down now: a restart
		// comes within a second, before the doctor's next look.
		if a := cp.agent.Status(); a.LastExit != "" {
			out = append(out, fmt.Sprintf("avagent exited at %s: %s", a.LastExitAt.UTC().Format(time.TimeOnly), a.LastExit))
		}
	}
	if s.parts.backups != nil {
		if b := s.parts.backups.Status(); b.State != backupapi.StateOK && b.State != backupapi.StateUnknown {
			out = append(out, "backup check: "+b.State)
		}
	}
	return strings.Join(out, "; ")
}
