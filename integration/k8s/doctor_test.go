package k8s

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/avsidecar/avsidecar/internal/doctor"
	"github.com/avsidecar/avsidecar/internal/testkit"
)

// podDoctor reads a sidecar's doctor report from its /v1/status, through
// the API server's pod proxy (as kubectl get --raw does it), waiting until
// want holds.
func (c *cluster) podDoctor(ns, pod, what string, timeout time.Duration, want func(doctor.Report) error) doctor.Report {
	c.t.Helper()
	var r doctor.Report
	c.waitFor(pod+"'s doctor: "+what, timeout, func() error {
		out, err := c.kubectl("get", "--raw", fmt.Sprintf("/api/v1/namespaces/%s/pods/%s:9180/proxy/v1/status", ns, pod))
		if err != nil {
			return err
		}
		var st struct {
			Doctor *doctor.Report `json:"doctor"`
		}
		if err := json.Unmarshal([]byte(out), &st); err != nil || st.Doctor == nil {
			return fmt.Errorf("no doctor in /v1/status (%v): %.300s", err, out)
		}
		r = *st.Doctor
		return want(r)
	})
	return r
}

// faults wants every one of checks in state fault, with a message holding
// the matching words.
func faults(checks map[string]string) func(doctor.Report) error {
	return func(r doctor.Report) error {
		for check, words := range checks {
			d, _ := r.Get(check)
			if d.State != doctor.StateFault || !strings.Contains(d.Message, words) {
				return fmt.Errorf("%s: %s: %s", check, d.State, d.Message)
			}
		}
		return nil
	}
}

// logDiagnoses shows the named checks of a report as an operator reads
// them.
func logDiagnoses(t *testing.T, pod string, r doctor.Report, checks ...string) {
	t.Helper()
	for _, c := range checks {
		d, _ := r.Get(c)
		fix := ""
		if d.Fix != "" {
			fix = "\n    fix: " + d.Fix
		}
		t.Logf("%s /v1/status doctor (on %q): %s %s: %s%s", pod, r.Trigger, d.Check, d.State, d.Message, fix)
	}
}

// doctorNginx is a copy of the example's nginx configuration that also
// listens on the agent's port: an application container that takes it.
const doctorNginx = `server {
    listen %d;
    return 200 "not avagent\n";
}
`

// breakDoctor breaks each cause the doctor names, on the real cluster, and
// reads its diagnosis through the API server: a copy of the manifest with
// a wrong NODE_IP (the other node's) and nginx on the agent's port; then,
// in the example as deployed, the NodePort Service deleted and the MCS
// stopped. The last two come back, and so does the doctor's all clear.
func breakDoctor(t *testing.T, c *cluster, mcs *testkit.MCS, ns string, site siteConfig, authorizedKeys, token, page string, imgs images) {
	// The copy: one replica "doctor", pinned to one node, told the other's
	// address, its agent's port taken by its own nginx.
	const copyNS, base = "nginx-doctor", 31200
	c.namespace(copyNS)
	c.enforce(copyNS, podSecurityLevel)
	c.localVolume(copyNS, "doctor-0", page)
	c.must("create", "secret", "generic", "avsidecar", "-n", copyNS,
		"--from-file=authorized_keys="+authorizedKeys, "--from-literal=browse-token="+token)
	c.must("create", "configmap", "avamar", "-n", copyNS, "--from-literal=server="+site.server, "--from-literal=domain=/clients")
	c.must("create", "configmap", "doctor-nginx", "-n", copyNS, "--from-literal=avagent-port.conf="+fmt.Sprintf(doctorNginx, base))
	var sts appsv1.StatefulSet
	decodeFile(t, exampleFile(t, "statefulset.yaml"), &sts)
	here, there := c.nodes[0], c.nodes[1]
	sts.Name, sts.Spec.ServiceName = "doctor", "doctor"
	one := int32(1)
	sts.Spec.Replicas = &one
	labels := map[string]string{"app.kubernetes.io/name": "doctor"}
	sts.Labels, sts.Spec.Selector.MatchLabels, sts.Spec.Template.Labels = labels, labels, labels
	sts.Spec.Template.Spec.NodeSelector = map[string]string{"kubernetes.io/hostname": here.name}
	sts.Spec.Template.Spec.Volumes = append(sts.Spec.Template.Spec.Volumes, corev1.Volume{Name: "doctor-nginx",
		VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "doctor-nginx"}}}})
	for i := range sts.Spec.Template.Spec.Containers {
		ct := &sts.Spec.Template.Spec.Containers[i]
		switch ct.Name {
		case "nginx":
			ct.VolumeMounts = append(ct.VolumeMounts, corev1.VolumeMount{Name: "doctor-nginx", MountPath: "/etc/nginx/conf.d", ReadOnly: true})
		case "avamar":
			for j := range ct.Env {
				switch ct.Env[j].Name {
				case "NODE_IP":
					ct.Env[j] = corev1.EnvVar{Name: "NODE_IP", Value: there.ip}
				case "AVAMAR_LISTEN_PORT_BASE":
					ct.Env[j].Value = fmt.Sprint(base)
				}
			}
		}
	}
	c.apply(copyNS, siteStatefulSet(t, &sts, imgs))
	p := c.waitPod(copyNS, "doctor-0", "", 3*time.Minute)
	t.Logf("doctor-0 on %s (%s), NODE_IP set to %s's %s, nginx listening on its agent port %d", p.Spec.NodeName, p.Status.HostIP, there.name, there.ip, base)
	r := c.podDoctor(copyNS, "doctor-0", "a wrong NODE_IP and a taken port", 2*time.Minute, faults(map[string]string{
		doctor.CheckNodeIP:     "is not an address of the node this pod runs on",
		doctor.CheckListenPort: "is taken by a process outside this container",
	}))
	logDiagnoses(t, "doctor-0", r, doctor.CheckNodeIP, doctor.CheckListenPort, doctor.CheckNodePort)
	summary := c.must("exec", "-n", copyNS, "doctor-0", "-c", "avamar", "--", "avsidecar", "status")
	t.Logf("kubectl exec doctor-0 -c avamar -- avsidecar status:\n%s", summary)
	for _, w := range []string{"diagnosis:   node-ip: NODE_IP " + there.ip + " is not an address", "diagnosis:   listen-port: port 31200 is taken"} {
		if !strings.Contains(summary, w) {
			t.Errorf("avsidecar status does not say %q", w)
		}
	}
	plugin := buildPlugin(t)
	fleet := c.kubectlAvamar(plugin, "status", "-n", copyNS, "-o", "wide")
	t.Logf("kubectl avamar status -n %s -o wide:\n%s", copyNS, fleet)
	for _, w := range []string{"listen-port: port 31200 is taken", "node-ip: NODE_IP " + there.ip + " is not an address"} {
		if !strings.Contains(fleet, w) {
			t.Errorf("kubectl avamar status -o wide does not say %q", w)
		}
	}
	if p, _ := c.pod(copyNS, "doctor-0"); !podReady(p) {
		t.Errorf("doctor-0 is not Ready: the doctor's findings must not make the pod unready")
	}
	c.must("delete", "namespace", copyNS, "--wait", "--timeout=3m")

	// The example as deployed: the NodePort Service of nginx-0 deleted
	// and the MCS stopped. Nothing happens in the pod; the doctor's
	// periodic round (every minute) finds both.
	c.must("delete", "service", "-n", ns, "nginx-0-avagent")
	if err := mcs.SetDown(true); err != nil {
		t.Fatal(err)
	}
	broke := time.Now()
	r = c.podDoctor(ns, "nginx-0", "the NodePort deleted and the MCS stopped", 2*time.Minute, faults(map[string]string{
		doctor.CheckNodePort: "connection refused",
		doctor.CheckMCS:      "unreachable from the pod",
	}))
	t.Logf("found %s after the break", time.Since(broke).Round(time.Second))
	logDiagnoses(t, "nginx-0", r, doctor.CheckNodePort, doctor.CheckMCS)
	fleet = c.kubectlAvamar(plugin, "status", "-n", ns)
	t.Logf("kubectl avamar status -n %s:\n%s", ns, fleet)
	if row := lineWith(fleet, "nginx-0 "); !strings.Contains(row, "mcs; node-port") {
		t.Errorf("kubectl avamar status: the row of nginx-0 does not name the faults mcs and node-port: %q", row)
	}
	web := "http://" + c.portForward(ns, "pod/nginx-0", 9180)
	code, readyz := testkit.Get(web+"/readyz?verbose", "")
	t.Logf("nginx-0 /readyz?verbose: %d\n%s", code, readyz)
	for _, w := range []string{"[!]node-port: nothing answers at", "[!]mcs: the MCS at"} {
		if !strings.Contains(readyz, w) {
			t.Errorf("/readyz?verbose does not say %q", w)
		}
	}
	if p, _ := c.pod(ns, "nginx-0"); !podReady(p) {
		t.Error("nginx-0 is not Ready with the doctor's faults")
	}

	c.must("apply", "-n", ns, "-f", exampleFile(t, "service.yaml"))
	if err := mcs.SetDown(false); err != nil {
		t.Fatal(err)
	}
	r = c.podDoctor(ns, "nginx-0", "all clear again", 2*time.Minute, func(r doctor.Report) error {
		for _, check := range []string{doctor.CheckNodePort, doctor.CheckMCS, doctor.CheckNodeIP, doctor.CheckListenPort, doctor.CheckRegistration} {
			if d, _ := r.Get(check); d.State != doctor.StateOK {
				return fmt.Errorf("%s: %s: %s", check, d.State, d.Message)
			}
		}
		return nil
	})
	logDiagnoses(t, "nginx-0", r, doctor.CheckNodePort, doctor.CheckMCS, doctor.CheckClientName)
}
