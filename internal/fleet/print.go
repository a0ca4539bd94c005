package fleet

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"k8s.io/apimachinery/pkg/util/duration"
	"sigs.k8s.io/yaml"
)

// Formats of Print, as kubectl's -o takes them.
var Formats = []string{"", "wide", "json", "yaml"}

// Print writes rows as a table (format "" or "wide", kubectl's columns,
// with NAMESPACE first when allNamespaces), or as JSON or YAML: a List of
// the rows, each with the sidecar's whole /v1/status. now is the time the
// backups' ages are counted from.
func Print(w io.Writer, rows []Row, format string, allNamespaces bool, now time.Time) error {
	switch format {
	case "json", "yaml":
		list := struct {
			Items []Row `json:"items"`
		}{Items: rows}
		if list.Items == nil {
			list.Items = []Row{}
		}
		b, err := json.MarshalIndent(list, "", "  ")
		if err != nil {
			return fmt.Errorf("encode: %w", err)
		}
		if format == "yaml" {
			if b, err = yaml.JSONToYAML(b); err != nil {
				return fmt.Errorf("encode: %w", err)
			}
		} else {
			b = append(b, '\n')
		}
		_, err = w.Write(b)
		return err
	case "", "wide":
	default:
		return fmt.Errorf("unknown output format %q: use wide, json or yaml", format)
	}
	wide := format == "wide"
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	head := []string{"POD", "NODE", "PHASE", "CLIENT", "REGISTERED", "AGENT", "RESTARTS", "CALLBACK", "LAST BACKUP", "AGE", "FAULTS", "VERSION"}
	if wide {
		head = append(head, "SERVER", "DOMAIN", "INSTALLED", "SSH")
	}
	if allNamespaces {
		head = append([]string{"NAMESPACE"}, head...)
	}
	fmt.Fprintln(tw, strings.Join(head, "\t"))
	for _, r := range rows {
		var cells []string
		if !r.Reached {
			cells = []string{r.Pod, dash(r.Node), "unreachable", "-", "-", "-", "-", "-", "-", "-", r.Error, "-"}
			if wide {
				cells = append(cells, "-", "-", "-", "-")
			}
		} else {
			registered := "yes"
			if !r.Registered {
				registered = "no"
				if wide && r.Registration != "" {
					registered = "no (" + r.Registration + ")"
				}
			}
			agent := "running"
			if !r.AgentRunning {
				agent = "stopped"
			}
			last, age := "-", "-"
			if !r.LastBackup.IsZero() {
				last = r.LastBackup.UTC().Format(time.RFC3339)
				age = duration.HumanDuration(now.Sub(r.LastBackup))
			} else if r.BackupState != "" {
				last = r.BackupState
			}
			cells = []string{r.Pod, dash(r.Node), dash(r.Phase), dash(r.Client), registered, agent, strconv.Itoa(r.Restarts),
				dash(r.Callback), last, age, faults(r, wide), dash(r.Version)}
			if wide {
				cells = append(cells, dash(r.Server), dash(r.Domain), dash(r.Installed), dash(r.SSH))
			}
		}
		if allNamespaces {
			cells = append([]string{r.Namespace}, cells...)
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// faults lists the names of the row's faults, its side parts' and its
// doctor's checks', and with wide why.
func faults(r Row, wide bool) string {
	var names []string
	add := func(name, why string) {
		if wide {
			name += ": " + oneLine(why)
		}
		names = append(names, name)
	}
	for k, v := range r.Faults {
		add(k, v)
	}
	for _, d := range r.Doctor {
		add(d.Check, d.Message)
	}
	if len(names) == 0 {
		return "-"
	}
	slices.Sort(names)
	return strings.Join(names, "; ")
}
