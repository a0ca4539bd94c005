package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/avsidecar/avsidecar/internal/doctor"
	"github.com/avsidecar/avsidecar/internal/sidecar"
)

// statusCmd prints the local avsidecar's state: a summary for people, or
// /v1/status itself with -o json.
func statusCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	addr := addrFlag(fs)
	format := fs.String("o", "summary", "output: summary (for people) or json (/v1/status, for scripts)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: avsidecar status [-o summary|json] [--addr HOST:PORT]")
		fs.PrintDefaults()
	}
	if help, err := parseFlags(fs, args, stdout); help || err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError("status takes no arguments, got %q", fs.Args())
	}
	if *format != "summary" && *format != "json" {
		return usageError("-o %q: want summary or json", *format)
	}
	local, err := localAddr(*addr)
	if err != nil {
		return err
	}
	code, body, err := localGet(local, "/v1/status")
	if err != nil {
		return err
	}
	if code != 200 {
		return fmt.Errorf("status answered HTTP %d: %s", code, bytes.TrimSpace(body))
	}
	if *format == "json" {
		var out bytes.Buffer
		if err := json.Indent(&out, body, "", "  "); err != nil {
			return fmt.Errorf("status is not JSON: %w", err)
		}
		out.WriteByte('\n')
		_, err = stdout.Write(out.Bytes())
		return err
	}
	var st sidecar.Status
	if err := json.Unmarshal(body, &st); err != nil {
		return fmt.Errorf("status is not avsidecar's JSON: %w", err)
	}
	code, ready, err := localGet(local, "/readyz?verbose")
	if err != nil {
		return err
	}
	_, err = io.WriteString(stdout, summary(st, local, code == 200, string(ready), time.Now()))
	return err
}

// summary renders a status for people: one line per part, what an operator
// asks first (is it ready, is it registered, when was the last backup).
func summary(st sidecar.Status, addr string, ready bool, readyz string, now time.Time) string {
	var b strings.Builder
	line := func(key, format string, a ...any) {
		fmt.Fprintf(&b, "%-12s %s\n", key+":", fmt.Sprintf(format, a...))
	}
	ago := func(t time.Time) string {
		return fmt.Sprintf("%s (%s ago)", t.UTC().Format(time.RFC3339), now.Sub(t).Round(time.Second))
	}

	version := st.Version
	if st.Revision != "" {
		version += " (revision " + st.Revision + ")"
	}
	line("avsidecar", "%s at %s", version, addr)
	line("phase", "%s", st.Phase)
	if ready {
		line("ready", "yes")
	} else {
		// The failing checks, as /readyz names them.
		var why []string
		for _, l := range strings.Split(readyz, "\n") {
			if strings.HasPrefix(l, "[-]") {
				why = append(why, strings.TrimPrefix(l, "[-]"))
			}
		}
		line("ready", "no: %s", strings.Join(why, "; "))
	}

	r := st.Registration
	switch {
	case r.Registered && r.Reused:
		line("registered", "yes, %s in %s on %s (receipt kept from an earlier start)", r.Client, r.Domain, r.Server)
	case r.Registered:
		line("registered", "yes, %s in %s on %s at %s", r.Client, r.Domain, r.Server, r.RegisteredAt.UTC().Format(time.RFC3339))
	case r.Attempts == 0:
		line("registered", "not yet, %s in %s on %s", r.Client, r.Domain, r.Server)
	default:
		line("registered", "no, %s in %s on %s: %d attempts, last %s: %s", r.Client, r.Domain, r.Server, r.Attempts, r.LastOutcome, r.LastError)
	}

	if in := st.Install; in != nil {
		line("installed", "%s %s-%s in %s", in.Name, in.Version, in.Release, in.Prefix)
	} else {
		line("installed", "not yet")
	}

	a := st.Agent
	switch {
	case a.Running:
		line("agent", "running, pid %d, up %s, %d restarts", a.PID, now.Sub(a.StartedAt).Round(time.Second), a.Restarts)
	case a.CrashLoop:
		line("agent", "crash looping: %d short runs, last %s, %d restarts", a.ShortRuns, a.LastExit, a.Restarts)
	case a.LastExit != "":
		line("agent", "down, last %s, %d restarts", a.LastExit, a.Restarts)
	default:
		line("agent", "not started")
	}

	switch bk := st.Backup; {
	case bk == nil:
		line("last backup", "unknown (the backup check is off: AVAMAR_REST_URL)")
	case bk.LastBackup.IsZero() && bk.State == "ok":
		line("last backup", "none on the server")
	case bk.LastBackup.IsZero():
		line("last backup", "unknown, check %s: %s", bk.State, bk.Message)
	case bk.State != "ok":
		line("last backup", "%s, but the check is %s: %s", ago(bk.LastBackup), bk.State, bk.Message)
	default:
		line("last backup", "%s", ago(bk.LastBackup))
	}
	if h := st.Hooks; h != nil {
		switch {
		case h.FileAbsent:
			line("hooks", "none: the hooks file does not exist (a ConfigMap without hooks.json); a backup that calls the hook scripts fails")
		case h.ConfigError != "":
			line("hooks", "broken: %s", h.ConfigError)
		case h.Lease != nil:
			line("hooks", "frozen since %s: the post hooks run at the post call, or at %s", ago(h.Lease.Opened), h.Lease.Deadline.Format(time.RFC3339))
		case h.LastThaw != nil:
			line("hooks", "%d pre, %d post; the last freeze ended %s, by %s", len(h.Pre), len(h.Post), ago(h.LastThaw.At), h.LastThaw.By)
		default:
			line("hooks", "%d pre, %d post; no freeze yet", len(h.Pre), len(h.Post))
		}
	}

	if s := st.SSH; s == nil {
		line("ssh", "off")
	} else {
		keys := fmt.Sprintf("%d authorized keys", s.AuthorizedKeys)
		switch {
		case s.AuthorizedKeysMissing:
			keys = "no authorized_keys file: nobody can log in"
		case s.AuthorizedKeysEmpty:
			keys = "authorized_keys holds no usable key: nobody can log in"
		}
		line("ssh", "%s, %s, %d sessions open", s.Addr, keys, s.ActiveSessions)
	}

	if br := st.Browse; br == nil || !br.Enabled {
		line("browse", "off")
	} else {
		who := "loopback clients only (no token file)"
		if br.Token {
			who = "a bearer token from every client, loopback and kubectl port-forward included"
		}
		line("browse", "%s, %s", strings.Join(br.Roots, ", "), who)
	}

	doctorLines(line, ago, st.Doctor)

	names := make([]string, 0, len(st.Faults))
	for n := range st.Faults {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		line("fault", "%s: %s", n, st.Faults[n])
	}
	return b.String()
}

// doctorLines renders the doctor's report: a count, then each fault and
// each check that cannot tell, with what to do.
func doctorLines(line func(key, format string, a ...any), ago func(time.Time) string, r *doctor.Report) {
	if r == nil {
		return
	}
	if r.CheckedAt.IsZero() {
		line("doctor", "not checked yet")
		return
	}
	n := map[string]int{}
	for _, d := range r.Diagnoses {
		n[d.State]++
	}
	var counts []string
	for _, c := range []struct{ state, words string }{
		{doctor.StateFault, "faults"}, {doctor.StateUnknown, "cannot tell"}, {doctor.StateOK, "ok"}, {doctor.StatePending, "pending"},
	} {
		if n[c.state] > 0 {
			counts = append(counts, fmt.Sprintf("%d %s", n[c.state], c.words))
		}
	}
	line("doctor", "%s (checked %s, on %s)", strings.Join(counts, ", "), ago(r.CheckedAt), r.Trigger)
	for _, d := range r.Diagnoses {
		switch d.State {
		case doctor.StateFault:
			line("diagnosis", "%s: %s", d.Check, d.Message)
		case doctor.StateUnknown:
			line("diagnosis", "%s, cannot tell: %s", d.Check, d.Message)
		default:
			continue
		}
		if d.Fix != "" {
			line("  fix", "%s", d.Fix)
		}
	}
}
