// Package fleet is `kubectl avamar status`: one row per backed-up pod of a
// namespace or of the cluster, read from each sidecar's /v1/status through
// the API server's pod proxy, so that it needs only the user's kubectl
// rights (list pods, get pods/proxy) and no port of the pod open to the
// user. A pod that cannot be read is a row that says why, never a failed
// command.
//
// /v1/status needs no token, like the probes and /metrics: it holds
// nothing secret (SPEC, "HTTP"). So fleet never reads a Secret: a user who
// may list pods and use their proxy sees the fleet's state, and the browse
// token stays with those who may read Secrets.
package fleet

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// The sidecar as inject writes it (internal/inject): its container's
// name, its HTTP port's name and the default port.
const (
	ContainerName = "avamar"
	PortName      = "avsidecar"
	DefaultPort   = 9180
)

// Pods is what fleet needs of the API server.
type Pods interface {
	// List returns the pods of namespace ("" for all) that match the label
	// selector ("" for all).
	List(ctx context.Context, namespace, selector string) ([]corev1.Pod, error)
	// Status returns the body of GET /v1/status on the pod's port, through
	// the API server's proxy.
	Status(ctx context.Context, pod *corev1.Pod, port int) ([]byte, error)
}

// Config says which pods to read.
type Config struct {
	// Namespace is the namespace to list; empty means every namespace.
	Namespace string
	// Selector is a label selector of the pods, as kubectl -l takes it.
	Selector string
	// Timeout bounds the read of one pod's status (default 10s).
	Timeout time.Duration
	// Parallel is how many pods are read at once (default 8).
	Parallel int
}

// Row is one backed-up pod.
type Row struct {
	Namespace string `json:"namespace"`
	Pod       string `json:"pod"`
	Node      string `json:"node,omitempty"`
	// Reached is true when the sidecar's /v1/status was read; Error
	// says why not.
	Reached bool   `json:"reached"`
	Error   string `json:"error,omitempty"`
	// Phase is the sidecar's (installing, registering, running...).
	Phase      string `json:"phase,omitempty"`
	Client     string `json:"client,omitempty"`
	Server     string `json:"server,omitempty"`
	Domain     string `json:"domain,omitempty"`
	Registered bool   `json:"registered"`
	// Registration is the last registration outcome of a client not
	// registered, with its error.
	Registration string `json:"registration,omitempty"`
	AgentRunning bool   `json:"agent_running"`
	Restarts     int    `json:"agent_restarts"`
	// Callback is where the Avamar server calls the agent back: the
	// node's address (NODE_IP) and avagent's listen port.
	Callback string `json:"callback,omitempty"`
	// LastBackup is the newest backup the REST API knows of (zero: none
	// known, or the check is off).
	LastBackup  time.Time `json:"last_backup,omitzero"`
	BackupState string    `json:"backup_state,omitempty"`
	Installed   string    `json:"installed,omitempty"`
	SSH         string    `json:"ssh,omitempty"`
	// Faults are the sidecar's side parts that failed, by name, with why.
	Faults map[string]string `json:"faults,omitempty"`
	// Doctor are the doctor's findings in state fault: what keeps the
	// Avamar server from reaching the client, with the fix (README,
	// "Doctor").
	Doctor  []Diagnosis `json:"doctor,omitempty"`
	Version string      `json:"version,omitempty"`
	// Status is the sidecar's /v1/status as it answered.
	Status json.RawMessage `json:"status,omitempty"`
}

// status is what fleet reads of /v1/status (SPEC, "HTTP").
type status struct {
	Version string `json:"version"`
	Phase   string `json:"phase"`
	Install *struct {
		Name    string `json:"name"`
		Version string `json:"version"`
		Release string `json:"release"`
	} `json:"install"`
	Registration struct {
		Registered  bool   `json:"registered"`
		Server      string `json:"server"`
		Domain      string `json:"domain"`
		Client      string `json:"client"`
		Attempts    int    `json:"attempts"`
		LastOutcome string `json:"last_outcome"`
		LastError   string `json:"last_error"`
	} `json:"registration"`
	Agent struct {
		Running  bool `json:"running"`
		Restarts int  `json:"restarts"`
	} `json:"agent"`
	SSH *struct {
		State string `json:"state"`
	} `json:"ssh"`
	Backup *struct {
		State      string    `json:"state"`
		LastBackup time.Time `json:"last_backup"`
	} `json:"backup"`
	InboundPorts []struct {
		Port int    `json:"port"`
		Role string `json:"role"`
	} `json:"inbound_ports"`
	Faults map[string]string `json:"faults"`
	Doctor *struct {
		Diagnoses []Diagnosis `json:"diagnoses"`
	} `json:"doctor"`
}

// Diagnosis is one finding of the sidecar's doctor, as /v1/status says it
// (internal/doctor).
type Diagnosis struct {
	Check   string `json:"check"`
	State   string `json:"state"`
	Message string `json:"message"`
	Fix     string `json:"fix,omitempty"`
}

// Collect reads every backed-up pod the configuration selects: those with
// a container (or native sidecar) named "avamar", or a port named
// "avsidecar". Only a failure to list pods is an error.
func Collect(ctx context.Context, api Pods, cfg Config) ([]Row, error) {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.Parallel <= 0 {
		cfg.Parallel = 8
	}
	pods, err := api.List(ctx, cfg.Namespace, cfg.Selector)
	if err != nil {
		return nil, fmt.Errorf("list pods: %w", err)
	}
	var backed []*corev1.Pod
	for i := range pods {
		if _, ok := sidecarOf(&pods[i]); ok {
			backed = append(backed, &pods[i])
		}
	}
	sort.Slice(backed, func(i, j int) bool {
		a, b := backed[i], backed[j]
		return a.Namespace < b.Namespace || a.Namespace == b.Namespace && a.Name < b.Name
	})
	rows := make([]Row, len(backed))
	slots := make(chan struct{}, cfg.Parallel)
	var wg sync.WaitGroup
	for i, p := range backed {
		wg.Add(1)
		go func() {
			defer wg.Done()
			slots <- struct{}{}
			defer func() { <-slots }()
			rows[i] = read(ctx, api, p, cfg.Timeout)
		}()
	}
	wg.Wait()
	return rows, nil
}

// sidecarOf is the pod's avsidecar container, regular or native.
func sidecarOf(p *corev1.Pod) (*corev1.Container, bool) {
	all := append(append([]corev1.Container{}, p.Spec.Containers...), p.Spec.InitContainers...)
	for i := range all {
		c := &all[i]
		if c.Name == ContainerName {
			return c, true
		}
		for _, port := range c.Ports {
			if port.Name == PortName {
				return c, true
			}
		}
	}
	return nil, false
}

// httpPort is the sidecar's HTTP port: the port named "avsidecar", else
// AVSIDECAR_HTTP_ADDR's, else 9180.
func httpPort(c *corev1.Container) int {
	for _, port := range c.Ports {
		if port.Name == PortName {
			return int(port.ContainerPort)
		}
	}
	for _, e := range c.Env {
		if e.Name == "AVSIDECAR_HTTP_ADDR" {
			if _, p, err := net.SplitHostPort(e.Value); err == nil {
				if n, err := strconv.Atoi(p); err == nil {
					return n
				}
			}
		}
	}
	return DefaultPort
}

// read makes the row of one pod.
func read(ctx context.Context, api Pods, p *corev1.Pod, timeout time.Duration) Row {
	r := Row{Namespace: p.Namespace, Pod: p.Name, Node: p.Spec.NodeName}
	c, _ := sidecarOf(p)
	if why := notRunning(p, c.Name); why != "" {
		r.Error = why
		return r
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	body, err := api.Status(ctx, p, httpPort(c))
	if err != nil {
		r.Error = oneLine(err.Error())
		return r
	}
	var st status
	if err := json.Unmarshal(body, &st); err != nil {
		r.Error = fmt.Sprintf("/v1/status is not avsidecar's JSON: %v", err)
		return r
	}
	r.Reached, r.Status = true, json.RawMessage(body)
	r.Phase, r.Version, r.Faults = st.Phase, st.Version, st.Faults
	reg := st.Registration
	r.Client, r.Server, r.Domain, r.Registered = reg.Client, reg.Server, reg.Domain, reg.Registered
	if !reg.Registered && reg.Attempts > 0 {
		r.Registration = fmt.Sprintf("%d attempts, last %s: %s", reg.Attempts, reg.LastOutcome, reg.LastError)
	}
	r.AgentRunning, r.Restarts = st.Agent.Running, st.Agent.Restarts
	if st.Install != nil {
		r.Installed = st.Install.Name + "-" + st.Install.Version + "-" + st.Install.Release
	}
	if st.SSH != nil {
		r.SSH = st.SSH.State
	}
	if b := st.Backup; b != nil {
		r.LastBackup, r.BackupState = b.LastBackup, b.State
	}
	if st.Doctor != nil {
		for _, d := range st.Doctor.Diagnoses {
			if d.State == "fault" {
				r.Doctor = append(r.Doctor, d)
			}
		}
	}
	if port := listenPort(st, c, p); port != "" && p.Status.HostIP != "" {
		r.Callback = net.JoinHostPort(p.Status.HostIP, port)
	}
	return r
}

// notRunning says why a pod's sidecar cannot answer, or "".
func notRunning(p *corev1.Pod, container string) string {
	if p.DeletionTimestamp != nil {
		return "pod terminating"
	}
	if p.Status.Phase != corev1.PodRunning {
		why := "pod " + string(p.Status.Phase)
		for _, cond := range p.Status.Conditions {
			if cond.Type == corev1.PodScheduled && cond.Status != corev1.ConditionTrue && cond.Message != "" {
				why += ": " + cond.Message
			}
		}
		return oneLine(why)
	}
	for _, cs := range append(append([]corev1.ContainerStatus{}, p.Status.ContainerStatuses...), p.Status.InitContainerStatuses...) {
		if cs.Name != container || cs.State.Running != nil {
			continue
		}
		switch {
		case cs.State.Waiting != nil:
			return oneLine(fmt.Sprintf("container %s waiting: %s %s", container, cs.State.Waiting.Reason, cs.State.Waiting.Message))
		case cs.State.Terminated != nil:
			return oneLine(fmt.Sprintf("container %s terminated: %s, exit code %d", container, cs.State.Terminated.Reason, cs.State.Terminated.ExitCode))
		}
	}
	return ""
}

// listenPort is avagent's listen port: from /v1/status when the sidecar
// runs, else from the container's environment.
func listenPort(st status, c *corev1.Container, p *corev1.Pod) string {
	for _, ip := range st.InboundPorts {
		if ip.Role == "listen" {
			return strconv.Itoa(ip.Port)
		}
	}
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value
	}
	if v := env["AVAMAR_LISTEN_PORT"]; v != "" {
		return v
	}
	if base, err := strconv.Atoi(env["AVAMAR_LISTEN_PORT_BASE"]); err == nil {
		if i, err := strconv.Atoi(p.Labels["apps.kubernetes.io/pod-index"]); err == nil {
			return strconv.Itoa(base + i)
		}
	}
	return ""
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
