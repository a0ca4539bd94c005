package doctor

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/avsidecar/avsidecar/internal/testkit"
)

// helperEnv carries a check for TestHelperInNetns to run: the test binary
// runs again inside a network namespace, as a pod's sidecar runs in its
// pod's.
const helperEnv = "AVSDOC_HELPER"

// helperCase is one check to run in a namespace.
type helperCase struct {
	Check  string
	NodeIP string
	Port   int
}

// TestHelperInNetns is not a test: the netns tests run it in a namespace.
func TestHelperInNetns(t *testing.T) {
	spec := os.Getenv(helperEnv)
	if spec == "" {
		t.Skip("run by the netns tests only")
	}
	var hc helperCase
	if err := json.Unmarshal([]byte(spec), &hc); err != nil {
		t.Fatal(err)
	}
	d := newDoctor(t, Config{NodeIP: hc.NodeIP, ListenPort: hc.Port, NodeProbePort: hc.Port})
	var dg Diagnosis
	switch hc.Check {
	case CheckNodeIP:
		dg = d.checkNodeIP(ctx(t))
	case CheckNodePort:
		dg = d.checkNodePort(ctx(t), Diagnosis{State: StateOK})
	}
	b, _ := json.Marshal(dg)
	fmt.Printf("DIAGNOSIS %s\n", b)
}

// netns is a network namespace the test made.
type netns string

func (n netns) run(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", append([]string{"-n", string(n)}, args...)...).CombinedOutput(); err != nil {
		t.Fatalf("ip -n %s %s: %v\n%s", n, strings.Join(args, " "), err, out)
	}
}

func (n netns) exec(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("nsenter", append([]string{"--net=/run/netns/" + string(n), "--"}, args...)...).CombinedOutput(); err != nil {
		t.Fatalf("in %s: %s: %v\n%s", n, strings.Join(args, " "), err, out)
	}
}

// check runs a check of the doctor inside n.
func (n netns) check(t *testing.T, hc helperCase) Diagnosis {
	t.Helper()
	spec, _ := json.Marshal(hc)
	cmd := exec.Command("nsenter", "--net=/run/netns/"+string(n), "--", os.Args[0], "-test.run=^TestHelperInNetns$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperEnv+"="+string(spec))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the check in %s: %v\n%s", n, err, out)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if j, ok := strings.CutPrefix(l, "DIAGNOSIS "); ok {
			var dg Diagnosis
			if err := json.Unmarshal([]byte(j), &dg); err != nil {
				t.Fatal(err)
			}
			return dg
		}
	}
	t.Fatalf("the check in %s said nothing:\n%s", n, out)
	return Diagnosis{}
}

// TestThroughARouter builds, with network namespaces, a pod, the node it
// runs on (which routes) and another host behind the node:
//
//	pod 10.250.0.2 --- 10.250.0.1 node 10.250.1.1 --- 10.250.1.2 other
//
// and runs the node-ip and node-port checks in the pod, as the sidecar
// does, against each address.
func TestThroughARouter(t *testing.T) {
	testkit.NeedRoot(t)
	for _, c := range []string{"ip", "nsenter", "iptables"} {
		testkit.NeedCommand(t, c)
	}
	prefix := fmt.Sprintf("avsdoc%d", os.Getpid())
	pod, node, other := netns(prefix+"-pod"), netns(prefix+"-node"), netns(prefix+"-other")
	for _, n := range []netns{pod, node, other} {
		if out, err := exec.Command("ip", "netns", "add", string(n)).CombinedOutput(); err != nil {
			t.Fatalf("ip netns add: %v\n%s", err, out)
		}
		t.Cleanup(func() {
			if out, err := exec.Command("ip", "netns", "del", string(n)).CombinedOutput(); err != nil {
				t.Errorf("ip netns del %s: %v\n%s", n, err, out)
			}
		})
		n.run(t, "link", "set", "lo", "up")
	}
	link := func(a netns, aName, aAddr string, b netns, bName, bAddr string) {
		a.run(t, "link", "add", aName, "type", "veth", "peer", "name", bName, "netns", string(b))
		a.run(t, "addr", "add", aAddr, "dev", aName)
		b.run(t, "addr", "add", bAddr, "dev", bName)
		a.run(t, "link", "set", aName, "up")
		b.run(t, "link", "set", bName, "up")
	}
	link(pod, "eth0", "10.250.0.2/24", node, "vpod", "10.250.0.1/24")
	link(node, "vother", "10.250.1.1/24", other, "eth0", "10.250.1.2/24")
	pod.run(t, "route", "add", "default", "via", "10.250.0.1")
	other.run(t, "route", "add", "default", "via", "10.250.1.1")
	node.exec(t, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward")
	const port = 10250 // nothing listens: every host answers with a refusal

	for _, tc := range []struct {
		name, nodeIP, state string
		words               []string
	}{
		{"the node", "10.250.0.1", StateOK, []string{"NODE_IP 10.250.0.1 is the node this pod runs on"}},
		{"the node's other address", "10.250.1.1", StateOK, []string{"NODE_IP 10.250.1.1 is the node this pod runs on"}},
		{"another host", "10.250.1.2", StateFault, []string{"NODE_IP 10.250.1.2 is not an address of the node this pod runs on", "another host answers there"}},
		{"nobody", "10.250.1.99", StateFault, []string{"NODE_IP 10.250.1.99 is not an address of the node this pod runs on", "nothing answers there"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want(t, pod.check(t, helperCase{Check: CheckNodeIP, NodeIP: tc.nodeIP, Port: port}), tc.state, tc.words...)
		})
	}

	// The node drops what the pod sends it: no answer at all.
	node.exec(t, "iptables", "-w", "-A", "INPUT", "-p", "tcp", "--dport", fmt.Sprint(port), "-j", "DROP")
	t.Run("the node drops", func(t *testing.T) {
		want(t, pod.check(t, helperCase{Check: CheckNodeIP, NodeIP: "10.250.0.1", Port: port}), StateUnknown,
			"NODE_IP 10.250.0.1 did not answer", "cannot tell whether it is its own node")
	})
	t.Run("hairpin dropped", func(t *testing.T) {
		want(t, pod.check(t, helperCase{Check: CheckNodePort, NodeIP: "10.250.0.1", Port: port}), StateUnknown,
			"no answer at 10.250.0.1:10250", "hairpin", "this check cannot tell")
	})
}
