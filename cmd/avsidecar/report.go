package main

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/avsidecar/avsidecar/internal/backupapi"
	"github.com/avsidecar/avsidecar/internal/browse"
	"github.com/avsidecar/avsidecar/internal/health"
	"github.com/avsidecar/avsidecar/internal/install"
	"github.com/avsidecar/avsidecar/internal/logfollow"
	"github.com/avsidecar/avsidecar/internal/metrics"
	"github.com/avsidecar/avsidecar/internal/register"
	"github.com/avsidecar/avsidecar/internal/sshd"
	"github.com/avsidecar/avsidecar/internal/supervise"
)

// statusDoc is the JSON of /v1/status; /metrics is read from the same
// snapshots.
type statusDoc struct {
	Version      string            `json:"version"`
	Phase        string            `json:"phase"`
	Install      *install.Result   `json:"install"`
	Registration register.Status   `json:"registration"`
	Agent        supervise.Status  `json:"agent"`
	AgentLog     logfollow.Status  `json:"agent_log"`
	SSH          *sshd.Status      `json:"ssh"`
	Browse       browse.Status     `json:"browse"`
	Backup       *backupapi.Status `json:"backup"`
}

func (s *sidecar) status() statusDoc {
	d := statusDoc{
		Version:      buildVersion(),
		Phase:        s.phase.Load().(string),
		Install:      s.installed.Load(),
		Registration: s.reg.Status(),
		Agent:        s.sup.Status(),
		AgentLog:     s.follow.Status(),
		Browse:       s.browse.Status(),
	}
	if srv := s.ssh.Load(); srv != nil {
		st := srv.Status()
		d.SSH = &st
	}
	if s.backups != nil {
		st := s.backups.Status()
		d.Backup = &st
	}
	return d
}

// metricsSnapshot is what /metrics reports, read from the same Status()
// snapshots as /v1/status so the two never disagree.
func (s *sidecar) metricsSnapshot() metrics.Snapshot {
	d := s.status()
	ready := true
	for _, r := range health.Run(context.Background(), s.readyChecks(), time.Second) {
		ready = ready && r.OK
	}
	m := metrics.Snapshot{
		Phase:           d.Phase,
		Ready:           ready,
		Registrations:   d.Registration.Outcomes,
		Registered:      d.Registration.Registered,
		AgentUp:         d.Agent.Running,
		AgentRestarts:   d.Agent.Restarts,
		BrowseRequests:  d.Browse.Requests,
		AvagentLogLines: d.AgentLog.Lines,
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
	}
	if d.Backup != nil {
		m.LastBackup, m.LastBackupCheck, m.BackupAPIState = d.Backup.LastBackup, d.Backup.LastCheck, d.Backup.State
	}
	return m
}

func (s *sidecar) serveStatus(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(s.status())
}
