// Package mcsproto is the wire protocol between the project's fake Avamar
// client agent and its fake MCS (Management Console Server).
//
// The real protocol is proprietary; this one only has to carry what the
// product depends on: a client registers with the MCS on port 28001 and
// waits for the answer, and the MCS later connects back to the agent at
// the address of its --iplist and its --listenport. A registered agent
// says hello when it starts, so the MCS learns where it now lives (a pod
// moved to another node keeps its registration but not its address). The
// MCS starts a backup on an agent with a work order over the same
// callback, naming the dataset's run-at-start and run-at-end scripts.
// Every message is one JSON object on one line, so a human can speak it
// with nc.
package mcsproto

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// Default ports of the Avamar protocol.
const (
	// DefaultMCSPort is where the MCS accepts registrations.
	DefaultMCSPort = 28001
	// DefaultListenPort is where avagent accepts the MCS callback.
	DefaultListenPort = 28002
)

// Message operations.
const (
	// OpRegister is a client asking the MCS to register it.
	OpRegister = "register"
	// OpPing is the MCS calling an agent back.
	OpPing = "ping"
	// OpHello is a registered agent checking in with its MCS at start.
	OpHello = "hello"
	// OpBackup is the MCS starting a backup on an agent.
	OpBackup = "backup"
)

// maxLine bounds one message, so a confused peer cannot make the other
// side buffer without end.
const maxLine = 64 << 10

// Register is the request a client sends to the MCS (avagent --init).
type Register struct {
	// Op is OpRegister.
	Op string `json:"op"`
	// Name is the client name (avagent --hostname, else the host name).
	Name string `json:"name"`
	// Domain is the Avamar domain (avagent --dpndomain), e.g. /clients.
	Domain string `json:"domain"`
	// IPList is where the MCS reaches the agent: one address or several
	// separated by commas (avagent --iplist).
	IPList string `json:"iplist"`
	// ListenPort is the agent's callback port (avagent --listenport).
	ListenPort int `json:"listenport"`
}

// RegisterReply is the MCS's answer to a Register.
type RegisterReply struct {
	// OK is true when the client is registered.
	OK bool `json:"ok"`
	// Reason says why a registration was refused.
	Reason string `json:"reason,omitempty"`
	// ClientID is the identifier the MCS gave the client.
	ClientID string `json:"client_id,omitempty"`
}

// Hello is what a registered agent (one with avagent.cfg) sends its MCS
// when it starts: who it is and where the MCS now reaches it. It is not a
// registration: the MCS only moves its callback to IPList:ListenPort.
type Hello struct {
	// Op is OpHello.
	Op string `json:"op"`
	// Name is the client name the agent registered with.
	Name string `json:"name"`
	// ClientID is the id the MCS gave at registration (avagent.cfg --cid).
	ClientID string `json:"client_id"`
	// IPList is where the MCS now reaches the agent (avagent --iplist).
	IPList string `json:"iplist"`
	// ListenPort is the agent's callback port (avagent --listenport).
	ListenPort int `json:"listenport"`
}

// HelloReply is the MCS's answer to a Hello.
type HelloReply struct {
	// OK is true when the MCS knows the client and took its address.
	OK bool `json:"ok"`
	// Reason says why a hello was refused (an unknown client).
	Reason string `json:"reason,omitempty"`
}

// Ping is what the MCS sends when it connects back to an agent.
type Ping struct {
	// Op is OpPing.
	Op string `json:"op"`
	// Server names the calling MCS.
	Server string `json:"server"`
}

// Pong is the agent's answer to a Ping.
type Pong struct {
	// OK is true when the agent is running and serving.
	OK bool `json:"ok"`
	// Name is the agent's client name, so the MCS can tell it reached the
	// client it registered.
	Name string `json:"name"`
	// ClientID is the client id from the agent's avagent.cfg, if any.
	ClientID string `json:"client_id,omitempty"`
}

// Backup is a work order the MCS sends an agent: back the client up, with
// the dataset's plug-in options run_at_start and run_at_end, which name
// scripts in the client's etc/scripts directory.
type Backup struct {
	// Op is OpBackup.
	Op string `json:"op"`
	// RunAtStart is the script to run before the backup; empty: none.
	RunAtStart string `json:"run_at_start,omitempty"`
	// RunAtEnd is the script to run after it; empty: none.
	RunAtEnd string `json:"run_at_end,omitempty"`
	// Paths are the dataset's files.
	Paths []string `json:"paths,omitempty"`
	// HoldMS is how long the backup step lasts after reading the paths,
	// in milliseconds: a backup that takes its time, so that a test can
	// kill the agent in the middle of one.
	HoldMS int `json:"hold_ms,omitempty"`
}

// Steps of a backup, in BackupReply.Steps.
const (
	StepRunAtStart = "run_at_start"
	StepBackup     = "backup"
	StepRunAtEnd   = "run_at_end"
)

// BackupReply is the agent's answer to a Backup, once it is over.
type BackupReply struct {
	// OK is true when every step succeeded.
	OK bool `json:"ok"`
	// Reason says why not.
	Reason string `json:"reason,omitempty"`
	// Steps are the steps taken, in order.
	Steps []BackupStep `json:"steps"`
	// Captured holds, for each path of the dataset, what the backup read:
	// the file's content (its first 4 KiB), or "error: ..." when it could
	// not be read.
	Captured map[string]string `json:"captured,omitempty"`
}

// BackupStep is one step of a backup.
type BackupStep struct {
	// Step is StepRunAtStart, StepBackup or StepRunAtEnd.
	Step string `json:"step"`
	// Script is the script a run-at step ran.
	Script string `json:"script,omitempty"`
	// ExitCode is a script's exit status (-1 for a signal or a failure to
	// start).
	ExitCode int `json:"exit_code"`
	// Output is the script's last lines of output.
	Output []string `json:"output,omitempty"`
	// DurationMS is how long the step took.
	DurationMS int64 `json:"duration_ms"`
}

// Write sends v as one JSON line.
func Write(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode message: %w", err)
	}
	if _, err := w.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("send message: %w", err)
	}
	return nil
}

// Read reads one JSON line from r into v. It returns io.EOF when the peer
// closed the connection without sending anything, which is how a plain TCP
// probe (a readiness check) looks.
func Read(r *bufio.Reader, v any) error {
	var line []byte
	for {
		chunk, isPrefix, err := r.ReadLine()
		if errors.Is(err, io.EOF) && len(line) == 0 {
			return io.EOF
		}
		if err != nil {
			return fmt.Errorf("read message: %w", err)
		}
		line = append(line, chunk...)
		if len(line) > maxLine {
			return errors.New("read message: line too long")
		}
		if !isPrefix {
			break
		}
	}
	if err := json.Unmarshal(line, v); err != nil {
		return fmt.Errorf("decode message: %w", err)
	}
	return nil
}
