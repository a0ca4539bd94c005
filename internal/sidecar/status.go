package sidecar

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/avsidecar/avsidecar/internal/avclient"
	"github.com/avsidecar/avsidecar/internal/backupapi"
	"github.com/avsidecar/avsidecar/internal/browse"
	"github.com/avsidecar/avsidecar/internal/buildinfo"
	"github.com/avsidecar/avsidecar/internal/doctor"
	"github.com/avsidecar/avsidecar/internal/health"
	"github.com/avsidecar/avsidecar/internal/hooks"
	"github.com/avsidecar/avsidecar/internal/install"
	"github.com/avsidecar/avsidecar/internal/logfollow"
	"github.com/avsidecar/avsidecar/internal/metrics"
	"github.com/avsidecar/avsidecar/internal/register"
	"github.com/avsidecar/avsidecar/internal/sshd"
	"github.com/avsidecar/avsidecar/internal/supervise"
)

// Status is the JSON of /v1/status; /metrics is read from the same
// snapshots, so the two never disagree.
type Status struct {
	Version  string          `json:"version"`
	Revision string          `json:"revision,omitempty"`
	Phase    string          `json:"phase"`
	Install  *install.Result `json:"install"`
	// Client is where the installed client lives: its prefix and the var
	// dir it keeps its state and avagent.log in, and how that was found.
	Client       *avclient.Layout  `json:"client,omitempty"`
	Registration register.Status   `json:"registration"`
	Agent        supervise.Status  `json:"agent"`
	AgentLog     logfollow.Status  `json:"agent_log"`
	SSH          *sshd.Status      `json:"ssh"`
	Browse       *browse.Status    `json:"browse"`
	Backup       *backupapi.Status `json:"backup"`
	// Hooks are the backup hooks, when configured: the scripts, the hooks,
	// the last runs and the counts.
	Hooks *hooks.Status `json:"hooks,omitempty"`
	// InboundPorts are the ports the client should accept connections on
	// (the listen port, and AVAMAR_INBOUND_PORTS), dialled on loopback;
	// only /v1/status fills it.
	InboundPorts []InboundPort `json:"inbound_ports,omitempty"`
	// Doctor is the doctor's last report: what keeps the Avamar server
	// from reaching the client, check by check, with what to change.
	Doctor *doctor.Report `json:"doctor,omitempty"`
	// Faults are the side parts that failed or could not start, by name
	// (ssh, browse, agent-log, backup-api, hooks), with why, and a backup
	// check whose server redirects. The sidecar goes on without them.
	Faults map[string]string `json:"faults,omitempty"`
}

// Status returns a snapshot of the sidecar and its parts.
func (s *Sidecar) Status() Status {
	d := Status{
		Version:      buildinfo.Version(),
		Revision:     buildinfo.Revision(),
		Phase:        s.phase.Load().(string),
		Install:      s.installed.Load(),
		Registration: register.Status{Server: s.cfg.Server, Domain: s.cfg.Domain, Client: s.cfg.ClientName, Mode: s.cfg.RegisterMode},
		Faults:       s.parts.faults.all(),
	}
	if cp := s.client.Load(); cp != nil {
		d.Client = &cp.layout
		d.Registration, d.Agent, d.AgentLog = cp.registrar.Status(), cp.agent.Status(), cp.follow.Status()
	}
	if err := s.backupFault(); err != nil && d.Faults[sideBackupAPI] == "" {
		d.Faults[sideBackupAPI] = err.Error()
	}
	if len(d.Faults) == 0 {
		d.Faults = nil
	}
	if s.parts.ssh != nil {
		st := s.parts.ssh.Status()
		d.SSH = &st
	}
	if s.parts.browse != nil {
		st := s.parts.browse.Status()
		d.Browse = &st
	}
	if s.parts.backups != nil {
		st := s.parts.backups.Status()
		d.Backup = &st
	}
	if s.parts.hooks != nil {
		st := s.parts.hooks.Status()
		d.Hooks = &st
	}
	if s.doctor != nil {
		r := s.doctor.Report()
		d.Doctor = &r
	}
	return d
}

// MetricLabels are the label sets of /metrics, from the packages that own
// them.
var MetricLabels = metrics.Labels{
	Phases:       Phases,
	Outcomes:     register.Outcomes,
	BackupStates: backupapi.States,
	Handlers:     handlers,
	SSHStates:    sshd.States(),
	HookPhases:   hooks.Phases,
	HookOutcomes: hooks.Outcomes,
	HookResults:  hooks.Results,
	HookThawBy:   hooks.ThawBy,
	DoctorChecks: doctor.Checks,
	DoctorStates: doctor.States,
}

// metricsSnapshot is what /metrics reports, read from the same Status()
// snapshots as /v1/status.
func (s *Sidecar) metricsSnapshot() metrics.Snapshot {
	d := s.Status()
	m := metrics.Snapshot{
		Phase:            d.Phase,
		Ready:            health.Passed(health.Run(context.Background(), s.readyChecks(), time.Second)),
		Registrations:    d.Registration.Outcomes,
		Registered:       d.Registration.Registered,
		AgentUp:          d.Agent.Running,
		AgentRestarts:    d.Agent.Restarts,
		AgentDaemonized:  d.Agent.Daemonized,
		AvagentLogLines:  d.AgentLog.Lines,
		HTTPConnsOpen:    s.httpLn.Open(),
		HTTPConnsDropped: s.httpLn.Dropped(),
	}
	if d.Install != nil {
		m.Install = metrics.Install{Package: d.Install.Name, Version: d.Install.Version, Release: d.Install.Release}
	}
	if d.Agent.Running {
		m.AgentUptime = time.Since(d.Agent.StartedAt)
	}
	if d.SSH != nil {
		m.SSHLogins, m.SSHRefusals, m.SSHActiveSessions = d.SSH.Logins, d.SSH.Refusals, d.SSH.ActiveSessions
		m.SSHSessionsRefused, m.SSHHandshakesDropped = d.SSH.SessionsRefused, d.SSH.HandshakesDropped
		m.SSHAuthorizedKeysRefused = d.SSH.AuthorizedKeysRefused
		m.SSHState, m.SSHHostKeysReplaced, m.SSHHandshakesEvicted = d.SSH.State, d.SSH.HostKeysReplaced, d.SSH.HandshakesEvicted
	}
	if d.Browse != nil {
		m.BrowseRequests = d.Browse.Requests
	}
	if d.Backup != nil {
		m.LastBackup, m.LastBackupCheck, m.BackupAPIState = d.Backup.LastBackup, d.Backup.LastCheck, d.Backup.State
		m.LastCheckin = d.Backup.LastCheckin
	}
	if d.Doctor != nil {
		m.Doctor = map[string]string{}
		for _, dg := range d.Doctor.Diagnoses {
			m.Doctor[dg.Check] = dg.State
		}
	}
	if d.Hooks != nil {
		m.HooksConfigured, m.HookRuns, m.HookCalls = true, d.Hooks.Hooks, d.Hooks.Calls
		m.HookThaws, m.HookFreezeOpen = d.Hooks.Thaws, d.Hooks.Lease != nil
	}
	return m
}

func (s *Sidecar) serveStatus(w http.ResponseWriter, r *http.Request) {
	st := s.Status()
	if st.Phase == PhaseRunning {
		st.InboundPorts = s.inboundPorts(r.Context())
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(st)
}
