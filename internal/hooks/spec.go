package hooks

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
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

// Spec is the hooks' configuration (AVSIDECAR_HOOKS, or the file
// AVSIDECAR_HOOKS_FILE):
//
//	{
//	  "pre": [
//	    {"name": "checkpoint", "command": ["psql", "-h", "127.0.0.1", "-c", "CHECKPOINT"], "timeout": "2m"},
//	    {"name": "flush", "http": {"url": "http://127.0.0.1:8080/admin/flush"}, "on_error": "continue"}
//	  ],
//	  "post": [
//	    {"name": "resume", "http": {"url": "http://127.0.0.1:8080/admin/resume", "method": "POST"}}
//	  ]
//	}
type Spec struct {
	// Pre runs, in order, before the backup.
	Pre []Hook `json:"pre"`
	// Post runs, in order, after the backup.
	Post []Hook `json:"post"`
}

// Hook is one action of a phase: a command run in the sidecar (which
// shares the pod's network with the application), or an HTTP call.
type Hook struct {
	// Name names the hook in logs, status and the script's output; it is
	// unique in its phase. Default: the phase and its position (pre-1).
	Name string `json:"name,omitempty"`
	// Command is the program and its arguments, run without a shell (use
	// ["/bin/sh", "-c", "..."] for one). Exit status 0 is success.
	Command []string `json:"command,omitempty"`
	// HTTP is a request to make instead; a 2xx answer is success.
	HTTP *HTTPCall `json:"http,omitempty"`
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

// Kind is "command" or "http".
func (h Hook) Kind() string {
	if h.HTTP != nil {
		return "http"
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
	for _, phase := range []struct {
		name  string
		hooks []Hook
	}{{PhasePre, s.Pre}, {PhasePost, s.Post}} {
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
	switch {
	case len(h.Command) > 0 && h.HTTP != nil:
		p = append(p, where+": give a command or an http call, not both")
	case len(h.Command) == 0 && h.HTTP == nil:
		p = append(p, where+": give a command or an http call")
	case len(h.Command) > 0 && h.Command[0] == "":
		p = append(p, where+": the command's program is empty")
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

// redactURL is a URL without its user info and query, for logs and status.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	u.User, u.RawQuery, u.Fragment = nil, "", ""
	return u.String()
}
