package fleet

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/avsidecar/avsidecar/internal/doctor"
	"github.com/avsidecar/avsidecar/internal/install"
	"github.com/avsidecar/avsidecar/internal/register"
	"github.com/avsidecar/avsidecar/internal/sidecar"
	"github.com/avsidecar/avsidecar/internal/supervise"
)

// fakePods is the API server as fleet sees it: a list of pods, and for
// each reachable one the body its sidecar answers, made from
// sidecar.Status, the type /v1/status encodes, so that a renamed field
// fails here. The real API server's proxy is proved by the cluster test
// (integration/k8s, plugin_test.go).
type fakePods struct {
	pods    []corev1.Pod
	bodies  map[string][]byte
	errs    map[string]error
	listErr error
	asked   map[string]int // pod -> port asked
}

func (f *fakePods) List(ctx context.Context, namespace, selector string) ([]corev1.Pod, error) {
	var out []corev1.Pod
	for _, p := range f.pods {
		if namespace == "" || p.Namespace == namespace {
			out = append(out, p)
		}
	}
	return out, f.listErr
}

func (f *fakePods) Status(ctx context.Context, pod *corev1.Pod, port int) ([]byte, error) {
	f.asked[pod.Name] = port
	if err := f.errs[pod.Name]; err != nil {
		return nil, err
	}
	return f.bodies[pod.Name], nil
}

func pod(ns, name string, c corev1.Container) corev1.Pod {
	return corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"apps.kubernetes.io/pod-index": "1"}},
		Spec:       corev1.PodSpec{NodeName: "node-a", Containers: []corev1.Container{{Name: "app"}, c}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, HostIP: "10.0.0.7",
			ContainerStatuses: []corev1.ContainerStatus{{Name: c.Name, State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}}},
	}
}

func body(t *testing.T, st sidecar.Status) []byte {
	t.Helper()
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestCollect: a row per backed-up pod, in namespace then name order, read
// on the sidecar's own port; pods without the sidecar are not rows; a pod
// that is not running, one whose proxy fails and one that answers
// something else are rows that say why.
func TestCollect(t *testing.T) {
	sidecarC := corev1.Container{Name: ContainerName, Ports: []corev1.ContainerPort{{Name: PortName, ContainerPort: 9181}},
		Env: []corev1.EnvVar{{Name: "AVAMAR_LISTEN_PORT_BASE", Value: "31000"}}}
	registered := sidecar.Status{Version: "v0.2.0", Phase: "running",
		Install:      &install.Result{Name: "AvamarClient", Version: "19.10.100", Release: "1"},
		Registration: register.Status{Registered: true, Client: "db-1", Server: "mcs.example.com", Domain: "/clients"},
		Agent:        supervise.Status{Running: true, Restarts: 2},
		InboundPorts: []sidecar.InboundPort{{Port: 31001, Role: "listen", Accepting: true}},
		Faults:       map[string]string{"ssh": "host key unreadable"},
		Doctor: &doctor.Report{Diagnoses: []doctor.Diagnosis{
			{Check: doctor.CheckNodeIP, State: doctor.StateOK, Message: "NODE_IP 10.0.0.7 is an address of this node"},
			{Check: doctor.CheckNodePort, State: doctor.StateFault, Message: "nothing answers at 10.0.0.7:31001", Fix: "publish the port"},
			{Check: doctor.CheckMCS, State: doctor.StateUnknown, Message: "not checked yet"}}}}
	unregistered := sidecar.Status{Version: "v0.2.0", Phase: "registering",
		Registration: register.Status{Client: "db-0", Attempts: 3, LastOutcome: "unreachable", LastError: "dial tcp: i/o timeout"}}
	pending := pod("shop", "db-2", sidecarC)
	pending.Status = corev1.PodStatus{Phase: corev1.PodPending, Conditions: []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse,
		Message: "0/1 nodes are available: pod has unbound immediate PersistentVolumeClaims."}}}
	crashing := pod("shop", "db-3", sidecarC)
	crashing.Status.ContainerStatuses[0].State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff", Message: "back-off 5m0s"}}
	native := pod("web", "wiki-7d9", corev1.Container{Name: "other"})
	native.Spec.InitContainers = []corev1.Container{{Name: ContainerName, Env: []corev1.EnvVar{{Name: "AVAMAR_LISTEN_PORT", Value: "31100"}}}}
	native.Status.InitContainerStatuses = []corev1.ContainerStatus{{Name: ContainerName, State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}}

	api := &fakePods{
		pods: []corev1.Pod{pod("shop", "db-1", sidecarC), pod("shop", "db-0", sidecarC), pending, crashing, native,
			pod("shop", "cache-0", corev1.Container{Name: "redis"}), pod("shop", "junk-0", sidecarC)},
		bodies: map[string][]byte{"db-1": body(t, registered), "db-0": body(t, unregistered), "junk-0": []byte("<html>")},
		errs:   map[string]error{"wiki-7d9": errors.New("error trying to reach service: dial tcp 10.244.0.9:9180: connect: connection refused")},
		asked:  map[string]int{},
	}
	rows, err := Collect(context.Background(), api, Config{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range rows {
		names = append(names, r.Namespace+"/"+r.Pod)
	}
	if got := strings.Join(names, " "); got != "shop/db-0 shop/db-1 shop/db-2 shop/db-3 shop/junk-0 web/wiki-7d9" {
		t.Fatalf("rows %s", got)
	}
	r := rows[1]
	if !r.Reached || r.Client != "db-1" || !r.Registered || !r.AgentRunning || r.Restarts != 2 || r.Callback != "10.0.0.7:31001" ||
		r.Installed != "AvamarClient-19.10.100-1" || r.Version != "v0.2.0" || r.Faults["ssh"] != "host key unreadable" || api.asked["db-1"] != 9181 {
		t.Errorf("db-1: %+v (asked port %d)", r, api.asked["db-1"])
	}
	if len(r.Doctor) != 1 || r.Doctor[0] != (Diagnosis{Check: "node-port", State: "fault", Message: "nothing answers at 10.0.0.7:31001", Fix: "publish the port"}) {
		t.Errorf("db-1: the doctor's faults %+v, want node-port's alone", r.Doctor)
	}
	if r := rows[0]; r.Registered || r.Registration != "3 attempts, last unreachable: dial tcp: i/o timeout" || r.Callback != "10.0.0.7:31001" {
		t.Errorf("db-0: %+v", r)
	}
	for i, want := range map[int]string{
		2: "pod Pending: 0/1 nodes are available: pod has unbound immediate PersistentVolumeClaims.",
		3: "container avamar waiting: CrashLoopBackOff back-off 5m0s",
		4: "/v1/status is not avsidecar's JSON",
		5: "error trying to reach service: dial tcp 10.244.0.9:9180: connect: connection refused",
	} {
		if rows[i].Reached || !strings.HasPrefix(rows[i].Error, want) {
			t.Errorf("%s: reached %v, error %q, want %q", rows[i].Pod, rows[i].Reached, rows[i].Error, want)
		}
	}
	if api.asked["wiki-7d9"] != DefaultPort {
		t.Errorf("a sidecar without a named port is read on %d, want %d", api.asked["wiki-7d9"], DefaultPort)
	}
	if _, asked := api.asked["db-2"]; asked {
		t.Error("a Pending pod was asked")
	}

	// Only a failure to list is the command's failure.
	api.listErr = errors.New(`pods is forbidden: User "dev" cannot list resource "pods"`)
	if _, err := Collect(context.Background(), api, Config{Namespace: "shop"}); err == nil || !strings.Contains(err.Error(), "list pods: pods is forbidden") {
		t.Errorf("list refused: %v", err)
	}
}

// TestPrint: kubectl's table, NAMESPACE first with -A, the backup's age
// counted from now, wide columns, and a List of rows in JSON and YAML.
func TestPrint(t *testing.T) {
	now := time.Date(2026, 11, 30, 21, 30, 0, 0, time.UTC)
	rows := []Row{
		{Namespace: "shop", Pod: "db-0", Node: "node-a", Reached: true, Phase: "running", Client: "db-0", Registered: true, AgentRunning: true,
			Restarts: 1, Callback: "10.0.0.7:31000", LastBackup: now.Add(-49 * time.Hour), Version: "v0.2.0", Server: "mcs", Domain: "/clients",
			Faults: map[string]string{"ssh": "key\nunreadable"},
			Doctor: []Diagnosis{{Check: "node-ip", State: "fault", Message: "NODE_IP 10.0.0.9 is not an address of the node"}}},
		{Namespace: "shop", Pod: "db-1", Node: "node-b", Error: "pod Pending"},
	}
	var b bytes.Buffer
	if err := Print(&b, rows, "", true, now); err != nil {
		t.Fatal(err)
	}
	want := `NAMESPACE   POD    NODE     PHASE         CLIENT   REGISTERED   AGENT     RESTARTS   CALLBACK         LAST BACKUP            AGE    FAULTS         VERSION
shop        db-0   node-a   running       db-0     yes          running   1          10.0.0.7:31000   2026-11-28T20:30:00Z   2d1h   node-ip; ssh   v0.2.0
shop        db-1   node-b   unreachable   -        -            -         -          -                -                      -      pod Pending    -
`
	if b.String() != want {
		t.Errorf("table:\n%s\nwant:\n%s", b.String(), want)
	}
	b.Reset()
	if err := Print(&b, rows[:1], "wide", false, now); err != nil {
		t.Fatal(err)
	}
	if lines := strings.Split(b.String(), "\n"); !strings.HasPrefix(lines[0], "POD ") || !strings.HasSuffix(lines[0], "SERVER   DOMAIN     INSTALLED   SSH") ||
		!strings.Contains(lines[1], "node-ip: NODE_IP 10.0.0.9 is not an address of the node; ssh: key unreadable") {
		t.Errorf("wide:\n%s", b.String())
	}
	for _, format := range []string{"json", "yaml"} {
		b.Reset()
		if err := Print(&b, rows, format, true, now); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(b.String(), "items") || !strings.Contains(b.String(), "10.0.0.7:31000") || !strings.Contains(b.String(), "pod Pending") {
			t.Errorf("%s:\n%s", format, b.String())
		}
	}
	if err := Print(&b, rows, "name", false, now); err == nil {
		t.Error("-o name was accepted")
	}
}
