package hooks

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"
)

// Phases: before the backup (the dataset's run-at-start script) and after
// it (run-at-end).
const (
	PhasePre  = "pre"
	PhasePost = "post"
)

// Phases lists the phases: the label values of the hook metrics.
var Phases = []string{PhasePre, PhasePost}

// On-error policies of a hook.
const (
	// OnErrorFail makes the phase fail, and so the script: Avamar then
	// fails the backup. The rest of a pre list is not run.
	OnErrorFail = "fail"
	// OnErrorContinue logs and records the failure and goes on.
	OnErrorContinue = "continue"
)

// Limits of a hook's timeout.
const (
	DefaultTimeout = 30 * time.Second
	MaxTimeout     = 6 * time.Hour
)

// Limits of the freeze: how long the application may stay between its pre
// hooks and its post hooks before avsidecar runs the post hooks itself.
const (
	DefaultMaxFreeze = 15 * time.Minute
	MaxMaxFreeze     = 24 * time.Hour
)

// MaxHooks is the most hooks a phase may have: it bounds the answer a
// script reads (see MaxAnswer).
const MaxHooks = 32

// Dialects of a session hook's client: how avsidecar learns that a
// statement has been answered.
const (
	// DialectPsql is PostgreSQL's psql: statements end with ";", and
	// `\echo` prints a marker. avsidecar sends `\set ON_ERROR_STOP on`
	// first, so a failed statement ends the client.
	DialectPsql = "psql"
	// DialectMariaDB is MariaDB's (and MySQL's) mariadb client: statements
	// end with ";", and a SELECT of a string prints a marker. Reading from a
	// pipe it runs in batch mode, which stops at the first error (do not
	// pass --force).
	DialectMariaDB = "mariadb"
)

// Spec is the hooks' configuration (AVSIDECAR_HOOKS, or the file
// AVSIDECAR_HOOKS_FILE):
//
//	{
//	  "max_freeze": "15m",
//	  "pre": [
//	    {"name": "read-lock", "session": {"command": ["mariadb", "--unbuffered"], "dialect": "mariadb",
//	      "pre": ["FLUSH TABLES WITH READ LOCK"], "post": ["UNLOCK TABLES"]}},
//	    {"name": "flush", "http": {"url": "http://127.0.0.1:8080/admin/flush"}, "on_error": "continue"}
//	  ],
//	  "post": [
//	    {"name": "resume", "http": {"url": "http://127.0.0.1:8080/admin/resume", "method": "POST"}}
//	  ]
//	}
type Spec struct {
	// MaxFreeze bounds the freeze, from the start of the pre hooks to the
	// end of the post hooks (default 15m, at most 24h): when the post call
	// has not come by then, avsidecar runs the post hooks itself.
	MaxFreeze Duration `json:"max_freeze,omitzero"`
	// Pre runs, in order, before the backup.
	Pre []Hook `json:"pre"`
	// Post runs, in order, after the backup; also at once when a pre hook
	// fails, and when the freeze outlives MaxFreeze.
	Post []Hook `json:"post"`
}

// Hook is one action of a phase: a command run in the sidecar (which
// shares the pod's network with the application), an HTTP call, or (pre
// only) a session that stays open until the post phase.
type Hook struct {
	// Name names the hook in logs, status and the script's output; it is
	// unique in its phase. Default: the phase and its position (pre-1).
	Name string `json:"name,omitempty"`
	// Command is the program and its arguments, run without a shell (use
	// ["/bin/sh", "-c", "..."] for one). Exit status 0 is success.
	Command []string `json:"command,omitempty"`
	// HTTP is a request to make instead; a 2xx answer is success.
	HTTP *HTTPCall `json:"http,omitempty"`
	// Session is a database client kept open from the pre phase to the
	// post phase instead, for locks and backup modes that last as long as
	// the session that took them. Pre hooks only.
	Session *Session `json:"session,omitempty"`
	// Timeout bounds the hook, as a Go duration (default 30s, at most
	// 6h); a command is killed with its process group when it passes.
	Timeout Duration `json:"timeout,omitzero"`
	// OnError is fail (the default: the phase fails, and Avamar fails the
	// backup) or continue.
	OnError string `json:"on_error,omitempty"`
}

// HTTPCall is the request of an HTTP hook.
type HTTPCall struct {
	// URL is http:// or https://; its query and user info never reach
	// logs or status.
	URL string `json:"url"`
	// Method is the request's method (default POST).
	Method string `json:"method,omitempty"`
	// Headers are sent with the request; their values never reach logs or
	// status.
	Headers map[string]string `json:"headers,omitempty"`
	// Body is sent as it is.
	Body string `json:"body,omitempty"`
}

// Session is a database client that a pre hook starts and keeps open: it
// runs Pre's statements, one at a time, waiting for each to succeed; the
// client then holds its session (and the locks or backup mode it took)
// while Avamar copies; at the post phase it runs Post's statements and is
// ended. The hook's timeout bounds each of the two steps.
type Session struct {
	// Command is the client and its arguments, run without a shell; it
	// reads the statements on its standard input (psql -h 127.0.0.1 -U
	// postgres, mariadb -h 127.0.0.1 -u root). Its output goes, like a
	// command's, to the script only.
	Command []string `json:"command"`
	// Dialect is psql or mariadb: how the end of a statement is seen.
	Dialect string `json:"dialect"`
	// Pre are the statements run at the pre phase, in order.
	Pre []string `json:"pre"`
	// Post are the statements run at the post phase, before the client's
	// input is closed.
	Post []string `json:"post,omitempty"`
}

// Duration is a time.Duration written as a Go duration ("30s").
type Duration time.Duration

// UnmarshalJSON reads "30s", "2m"...
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return errors.New(`a duration is text such as "30s"`)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration %q: %w", s, err)
	}
	*d = Duration(v)
	return nil
}

// MarshalJSON writes the duration as text.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// Kind is "command", "http" or "session".
func (h Hook) Kind() string {
	switch {
	case h.HTTP != nil:
		return "http"
	case h.Session != nil:
		return "session"
	}
	return "command"
}

// Parse reads and checks a Spec, filling the defaults. The error names
// every problem found.
func Parse(data []byte) (Spec, error) {
	var s Spec
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return Spec{}, fmt.Errorf("hooks: %w", err)
	}
	if dec.More() {
		return Spec{}, errors.New("hooks: more than one JSON value")
	}
	var problems []string
	switch {
	case s.MaxFreeze == 0:
		s.MaxFreeze = Duration(DefaultMaxFreeze)
	case s.MaxFreeze < Duration(time.Second) || time.Duration(s.MaxFreeze) > MaxMaxFreeze:
		problems = append(problems, fmt.Sprintf("max_freeze must be from 1s to %s", MaxMaxFreeze))
	}
	for _, phase := range []struct {
		name  string
		hooks []Hook
	}{{PhasePre, s.Pre}, {PhasePost, s.Post}} {
		if len(phase.hooks) > MaxHooks {
			problems = append(problems, fmt.Sprintf("%s: %d hooks, at most %d", phase.name, len(phase.hooks), MaxHooks))
		}
		seen := map[string]bool{}
		for i := range phase.hooks {
			h := &phase.hooks[i]
			if h.Name == "" {
				h.Name = fmt.Sprintf("%s-%d", phase.name, i+1)
			}
			where := fmt.Sprintf("%s hook %q", phase.name, h.Name)
			if seen[h.Name] {
				problems = append(problems, where+": name used twice")
			}
			seen[h.Name] = true
			if strings.ContainsAny(h.Name, "\n\r\x00") || len(h.Name) > 100 {
				problems = append(problems, fmt.Sprintf("%s hook %d: name must be one line of at most 100 bytes", phase.name, i+1))
			}
			if h.Session != nil && phase.name == PhasePost {
				problems = append(problems, where+": a session starts in the pre phase (its post statements end it)")
			}
			problems = append(problems, h.check(where)...)
		}
	}
	if len(problems) > 0 {
		return Spec{}, errors.New("hooks: " + strings.Join(problems, "; "))
	}
	return s, nil
}

// check fills h's defaults and lists its problems.
func (h *Hook) check(where string) []string {
	var p []string
	kinds := 0
	for _, set := range []bool{len(h.Command) > 0, h.HTTP != nil, h.Session != nil} {
		if set {
			kinds++
		}
	}
	switch {
	case kinds > 1:
		p = append(p, where+": give one of a command, an http call or a session, not more")
	case kinds == 0:
		p = append(p, where+": give a command or an http call (or, before the backup, a session)")
	case len(h.Command) > 0 && h.Command[0] == "":
		p = append(p, where+": the command's program is empty")
	case h.Session != nil:
		p = append(p, h.Session.check(where)...)
	case h.HTTP != nil:
		u, err := url.Parse(h.HTTP.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			p = append(p, where+": http.url must be http://HOST/... or https://HOST/...")
		}
		if h.HTTP.Method == "" {
			h.HTTP.Method = "POST"
		}
		for k, v := range h.HTTP.Headers {
			if k == "" || strings.ContainsAny(k+v, "\r\n\x00") {
				p = append(p, where+": a header name is empty or a header holds a line break")
			}
		}
	}
	switch {
	case h.Timeout == 0:
		h.Timeout = Duration(DefaultTimeout)
	case h.Timeout < 0 || time.Duration(h.Timeout) > MaxTimeout:
		p = append(p, fmt.Sprintf("%s: timeout must be positive and at most %s", where, MaxTimeout))
	}
	switch h.OnError {
	case "":
		h.OnError = OnErrorFail
	case OnErrorFail, OnErrorContinue:
	default:
		p = append(p, fmt.Sprintf("%s: on_error %q must be %s or %s", where, h.OnError, OnErrorFail, OnErrorContinue))
	}
	return p
}

// check lists a session's problems.
func (s *Session) check(where string) []string {
	var p []string
	if len(s.Command) == 0 || s.Command[0] == "" {
		p = append(p, where+": session.command needs a program (psql, mariadb...)")
	}
	if s.Dialect != DialectPsql && s.Dialect != DialectMariaDB {
		p = append(p, fmt.Sprintf("%s: session.dialect %q must be %s or %s", where, s.Dialect, DialectPsql, DialectMariaDB))
	}
	if s.Dialect == DialectMariaDB && !slices.ContainsFunc(s.Command, func(a string) bool { return a == "-n" || strings.Contains(a, "--unbuffered") }) {
		p = append(p, where+": session.command of dialect mariadb needs --unbuffered: without it the client keeps its answers until it ends")
	}
	if len(s.Pre) == 0 {
		p = append(p, where+": session.pre needs a statement: the session holds what they take")
	}
	for _, st := range append(append([]string(nil), s.Pre...), s.Post...) {
		if strings.TrimSpace(st) == "" || strings.ContainsAny(st, "\n\r\x00") {
			p = append(p, where+": a session statement is empty or holds a line break (one statement a line)")
			break
		}
	}
	return p
}

// redactURL is a URL without its user info and query, for logs and status.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	u.User, u.RawQuery, u.Fragment = nil, "", ""
	return u.String()
}
