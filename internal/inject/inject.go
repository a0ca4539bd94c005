// Package inject adds the Avamar sidecar to Kubernetes workloads, and
// takes it out again, as `kubectl avamar inject` and `uninject` do: it
// reads manifests (files, directories, stdin, `kind: List` as `kubectl get
// -o yaml` prints, a Helm chart's rendered output) and writes them back
// with the avsidecar container, its volumes and its Services on the
// StatefulSets and Deployments it can back up, laid out as examples/nginx
// lays them out.
//
// Every other document passes through as it was, byte for byte, with a
// note saying why (a kind it does not inject, no persistent volume, opted
// out with the annotation avsidecar.io/inject: "false", not named by
// --only): a manifest is never refused as a whole for one document. What
// is refused is a real error: a document that is not YAML, a workload
// decoded strictly (unknown and duplicate fields named with their path, as
// kubectl's --validate=strict does) that has one, a workload that cannot
// take the sidecar, a port collision; every such problem is named at once.
//
// It is idempotent: the sidecar it owns (the container named "avamar", its
// volumes, the Services "NAME-N-avagent" and, with a server, the
// ConfigMap) is replaced, not added twice, so injecting its own output
// changes nothing, and injecting with new options updates the sidecar. The
// workload's annotation avsidecar.io/listen-port-base keeps its ports from
// one run to the next. Uninject gives the workload back as it was.
//
// Workloads are written back re-encoded (comments are lost, keys sorted as
// kubectl prints them); the other documents are passed through byte for
// byte (the items of a List are written as documents of their own).
package inject

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// Options are an operator's choices. Image is required; every other zero
// value means the example's choice.
type Options struct {
	// Image is the site image: avsidecar plus the site's AvamarClient RPM.
	Image string
	// Server, when set, is the Avamar server (HOST[:PORT]) written into a
	// ConfigMap that inject also outputs. Empty: the workload refers to
	// an existing ConfigMap, as examples/nginx does.
	Server string
	// Domain is the Avamar domain written with Server (default /clients).
	Domain string
	// ConfigMap is the ConfigMap with the keys server and domain (default
	// "avamar").
	ConfigMap string
	// Secret is the Secret with the keys authorized_keys and browse-token
	// (default "avsidecar").
	Secret string
	// BrowseRoots are the directories the file browser lists. Nil means
	// the application's mounts of persistent volumes, which the sidecar
	// mounts at the same paths; empty and non-nil turns browsing off.
	BrowseRoots []string
	// Native makes the sidecar a Kubernetes native sidecar (an init
	// container with restartPolicy Always, Kubernetes 1.29 and later)
	// instead of a regular container.
	Native bool
	// Volume is the persistent volume (a volumeClaimTemplate or a pod
	// volume of a PersistentVolumeClaim) that holds the client's state.
	// Empty: the workload's only one.
	Volume string
	// ListenPortBase is where the search for a free block of ports
	// starts (default 31000): avagent's port for pod 0 of a StatefulSet
	// (pod N listens on base + N), or the port of a Deployment's pod; also
	// the NodePorts. Each workload of a run gets a block of its own,
	// skipping the NodePorts of the input's Services; a workload injected
	// before keeps its block (its annotation avsidecar.io/listen-port-base).
	ListenPortBase int
	// SSHAddr is the embedded SSH server's address (default ":2222", an
	// unprivileged port); "off" turns SSH off.
	SSHAddr string
	// Only, when not empty, are the workloads to inject, as KIND/NAME
	// (statefulset/db, deploy/wiki; kubectl's kinds and short names, any
	// case) or KIND/NAMESPACE/NAME: the others pass through. A name that
	// matches no workload is an error.
	Only []string
}

// Defaults of Options, as in examples/nginx.
const (
	DefaultDomain         = "/clients"
	DefaultConfigMap      = "avamar"
	DefaultSecret         = "avsidecar"
	DefaultListenPortBase = 31000
	DefaultSSHAddr        = ":2222"
)

// The annotations inject reads and writes on a workload's metadata.
const (
	// AnnotationInject set to "false" (or "disabled") on a workload keeps
	// inject away from it: it passes through, noted.
	AnnotationInject = "avsidecar.io/inject"
	// AnnotationPortBase records the first port of the workload's block,
	// so that the next run keeps each workload's ports.
	AnnotationPortBase = "avsidecar.io/listen-port-base"
	// AnnotationGracePeriod records the pod's terminationGracePeriodSeconds
	// when inject raised it above the sidecar's shutdown timeout, so that
	// uninject gives it back.
	AnnotationGracePeriod = "avsidecar.io/original-termination-grace-period-seconds"
)

// Input is one manifest file.
type Input struct {
	// Name is the file name, for messages ("stdin" for standard input).
	Name string
	// Data is the file's content: YAML or JSON documents, separated by
	// "---" lines.
	Data []byte
}

// Result is inject's output.
type Result struct {
	// Output is the manifests, YAML documents separated by "---".
	Output []byte
	// Notes say what was done and what passed through and why, one line
	// each.
	Notes []string
	// Warnings are the choices of a workload that the sidecar makes risky,
	// one line each.
	Warnings []string
}

// ErrInput is matched (errors.Is) by every error about the manifests or
// the options, as opposed to a failure to write.
var ErrInput = errors.New("bad input")

// Problems are every problem found in the input, one line each; it
// matches ErrInput.
type Problems []string

func (p Problems) Error() string        { return strings.Join(p, "\n") }
func (p Problems) Is(target error) bool { return target == ErrInput }

// Inject reads the workloads of inputs and returns them with the sidecar.
func Inject(inputs []Input, opts Options) (Result, error) {
	if err := opts.check(); err != nil {
		return Result{}, err
	}
	docs, err := decodeAll(inputs)
	if err != nil {
		return Result{}, err
	}
	return opts.withDefaults().inject(docs)
}

// withDefaults fills the zero fields of o.
func (o Options) withDefaults() Options {
	if o.Domain == "" {
		o.Domain = DefaultDomain
	}
	if o.ConfigMap == "" {
		o.ConfigMap = DefaultConfigMap
	}
	if o.Secret == "" {
		o.Secret = DefaultSecret
	}
	if o.ListenPortBase == 0 {
		o.ListenPortBase = DefaultListenPortBase
	}
	if o.SSHAddr == "" {
		o.SSHAddr = DefaultSSHAddr
	}
	return o
}

// Lowest and highest NodePort of Kubernetes' default range: the listen
// ports are also NodePorts.
const (
	minNodePort = 30000
	maxNodePort = 32767
)

func (o Options) check() error {
	var p []string
	if o.Image == "" {
		p = append(p, "--image is required: the site image with your AvamarClient RPM (examples/nginx/Dockerfile)")
	} else if strings.ContainsAny(o.Image, " \t\r\n") {
		p = append(p, fmt.Sprintf("--image %q contains white space", o.Image))
	}
	if o.Server != "" && (strings.ContainsAny(o.Server, " \t\r\n/,=") || strings.HasPrefix(o.Server, "-")) {
		p = append(p, fmt.Sprintf("--server %q is not HOST or HOST:PORT", o.Server))
	}
	if o.Domain != "" && o.Server == "" {
		p = append(p, "--domain needs --server: without it the domain is read from the existing ConfigMap")
	}
	if o.Domain != "" && (!strings.HasPrefix(o.Domain, "/") || strings.ContainsAny(o.Domain, " \r\n")) {
		p = append(p, fmt.Sprintf("--domain %q must be an absolute Avamar domain such as /clients", o.Domain))
	}
	if o.ListenPortBase != 0 && (o.ListenPortBase < minNodePort || o.ListenPortBase > maxNodePort) {
		p = append(p, fmt.Sprintf("--listen-port-base %d must be in the NodePort range %d-%d: each pod's listen port is also its NodePort", o.ListenPortBase, minNodePort, maxNodePort))
	}
	if o.SSHAddr != "" && o.SSHAddr != "off" {
		if _, err := sshPort(o.SSHAddr); err != nil {
			p = append(p, err.Error())
		}
	}
	for _, r := range o.BrowseRoots {
		if !strings.HasPrefix(r, "/") {
			p = append(p, fmt.Sprintf("--browse-roots entry %q must be an absolute path", r))
		}
	}
	for _, n := range []struct{ flag, v string }{{"--configmap", o.ConfigMap}, {"--secret", o.Secret}, {"--volume", o.Volume}} {
		if n.v != "" && !dnsLabel.MatchString(n.v) {
			p = append(p, fmt.Sprintf("%s %q is not a Kubernetes name", n.flag, n.v))
		}
	}
	for _, s := range o.Only {
		if _, err := parseSelector(s); err != nil {
			p = append(p, err.Error())
		}
	}
	if len(p) > 0 {
		return Problems{strings.Join(p, "; ")}
	}
	return nil
}

// dnsLabel is a DNS-1123 label, the syntax of volume, ConfigMap and
// Secret names that inject writes.
var dnsLabel = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

func sshPort(addr string) (int32, error) {
	_, ps, err := net.SplitHostPort(addr)
	n, perr := strconv.Atoi(ps)
	if err != nil || perr != nil || n < 1 || n > 65535 {
		return 0, fmt.Errorf("--ssh-addr %q must be :PORT, HOST:PORT or off", addr)
	}
	return int32(n), nil
}

// selector is one --only entry.
type selector struct {
	kind, ns, name string
	used           bool
}

// kinds are the names kubectl knows the two workload kinds by.
var kinds = map[string]string{
	"statefulset": "StatefulSet", "statefulsets": "StatefulSet", "sts": "StatefulSet",
	"deployment": "Deployment", "deployments": "Deployment", "deploy": "Deployment",
}

func parseSelector(s string) (*selector, error) {
	parts := strings.Split(s, "/")
	kind, ok := kinds[strings.ToLower(parts[0])]
	if !ok || len(parts) < 2 || len(parts) > 3 || slices.Contains(parts, "") {
		return nil, fmt.Errorf("--only %q must be KIND/NAME or KIND/NAMESPACE/NAME with KIND statefulset or deployment", s)
	}
	sel := &selector{kind: kind, name: parts[len(parts)-1], ns: "*"}
	if len(parts) == 3 {
		sel.ns = parts[1]
	}
	return sel, nil
}

func (s *selector) matches(w workload) bool {
	return s.kind == w.kind && s.name == w.name && (s.ns == "*" || s.ns == w.namespace)
}

// output is one document of the result: raw text, or an object to encode.
type output struct {
	raw []byte
	obj any
}

// plan is what inject does with one workload document.
type plan struct {
	doc *document
	w   workload
	// ports: the first port of the workload's block and how it was chosen.
	base int
	kept string
}

// inject adds the sidecar to the selected workloads of docs and lays out
// the result.
func (o Options) inject(docs []document) (Result, error) {
	var res Result
	var problems Problems
	var only []*selector
	for _, s := range o.Only {
		sel, _ := parseSelector(s) // checked by Options.check
		only = append(only, sel)
	}
	namespaces := restrictedNamespaces(docs)
	var notes notes

	// Which workloads take the sidecar; the others pass through, noted.
	var plans []*plan
	for i := range docs {
		d := &docs[i]
		w, ok := asWorkload(d)
		if !ok {
			continue // noted below unless inject remakes it
		}
		selected := len(only) == 0
		for _, s := range only {
			if s.matches(w) {
				s.used, selected = true, true
			}
		}
		if !selected {
			notes.add(d, "passed through: not named by --only")
			continue
		}
		if v := w.annotations[AnnotationInject]; v == "false" || v == "disabled" {
			if len(only) > 0 {
				problems = append(problems, fmt.Sprintf("%s: named by --only, but annotated %s: %q", d.where, AnnotationInject, v))
			} else {
				notes.add(d, fmt.Sprintf("passed through: opted out (%s: %q)", AnnotationInject, v))
			}
			continue
		}
		if len(w.persistentVolumes()) == 0 && len(only) == 0 {
			notes.add(d, "passed through: "+noVolume(w))
			continue
		}
		plans = append(plans, &plan{doc: d, w: w})
	}
	for _, s := range only {
		if !s.used {
			problems = append(problems, fmt.Sprintf("--only %s/%s: no such workload in the input", strings.ToLower(s.kind), s.name))
		}
	}
	if len(plans) == 0 && len(problems) == 0 {
		notes.add(nil, "nothing injected: no StatefulSet or Deployment in the input can take the sidecar")
	}

	problems = append(problems, o.allocatePorts(plans, docs, &notes)...)

	// The sidecar, into each workload.
	owned := map[string]bool{} // kind/namespace/name made anew by inject
	made := map[*document][]any{}
	before := map[*document][]any{}
	configMaps := map[string]bool{}
	for _, p := range plans {
		d := p.doc
		said, warnings, err := o.injectWorkload(p.w, p.base, namespaces[p.w.namespace])
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", d.where, err))
			continue
		}
		for _, n := range said {
			notes.add(d, n)
		}
		res.Warnings = append(res.Warnings, prefix(d.where, warnings)...)
		if o.Server != "" && !configMaps[d.ns] {
			configMaps[d.ns] = true
			before[d] = append(before[d], o.configMap(p.w))
			owned["ConfigMap/"+d.ns+"/"+o.ConfigMap] = true
		}
		svcs, err := o.services(p.w, p.base)
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", d.where, err))
			continue
		}
		for _, s := range svcs {
			made[d] = append(made[d], s)
		}
		for j := range docs {
			if s, ok := docs[j].obj.(*corev1.Service); ok && docs[j].ns == d.ns && p.w.ownsName(s.Name) {
				owned["Service/"+d.ns+"/"+s.Name] = true
			}
		}
	}
	if len(problems) > 0 {
		return Result{}, problems
	}
	var out []output
	for i := range docs {
		d := &docs[i]
		if _, ok := made[d]; ok {
			for _, b := range before[d] {
				out = append(out, output{obj: b})
			}
			out = append(out, output{obj: d.obj})
			for _, a := range made[d] {
				out = append(out, output{obj: a})
			}
			continue
		}
		if owned[d.kind+"/"+d.ns+"/"+d.name] {
			continue // made anew next to its workload
		}
		if _, ok := asWorkload(d); !ok {
			why := d.why
			if why == "" {
				why = "not a workload"
			}
			notes.add(d, "passed through: "+why)
		}
		out = append(out, output{raw: d.raw})
	}
	b, err := write(out)
	if err != nil {
		return Result{}, err
	}
	res.Output, res.Notes = b, notes.lines()
	return res, nil
}

// notes are the notes of a run, each about a document (or none), told in
// the documents' order.
type notes []struct {
	order int
	line  string
}

// add notes line about d (nil: about the whole input).
func (n *notes) add(d *document, line string) {
	order := math.MaxInt
	if d != nil {
		order, line = d.order, d.where+": "+line
	}
	*n = append(*n, struct {
		order int
		line  string
	}{order, line})
}

func (n notes) lines() []string {
	slices.SortStableFunc(n, func(a, b struct {
		order int
		line  string
	}) int {
		return cmp.Compare(a.order, b.order)
	})
	out := make([]string, len(n))
	for i, x := range n {
		out[i] = x.line
	}
	return out
}

// write lays out the documents of a result.
func write(out []output) ([]byte, error) {
	var buf bytes.Buffer
	for i, od := range out {
		if i > 0 {
			buf.WriteString("---\n")
		}
		if od.raw != nil {
			buf.Write(bytes.TrimLeft(od.raw, "\n"))
			if !bytes.HasSuffix(od.raw, []byte("\n")) {
				buf.WriteByte('\n')
			}
			continue
		}
		b, err := encode(od.obj)
		if err != nil {
			return nil, err
		}
		buf.Write(b)
	}
	return buf.Bytes(), nil
}

func prefix(where string, notes []string) []string {
	out := make([]string, len(notes))
	for i, n := range notes {
		out[i] = where + ": " + n
	}
	return out
}

// asWorkload is the workload of a StatefulSet or Deployment document.
func asWorkload(d *document) (workload, bool) {
	switch t := d.obj.(type) {
	case *appsv1.StatefulSet:
		return statefulSet(t), true
	case *appsv1.Deployment:
		return deployment(t), true
	}
	return workload{}, false
}

// encode writes obj as kubectl would print it, without the fields that
// only an API server fills (status, creationTimestamp: null) and without
// empty resources.
func encode(obj any) ([]byte, error) {
	js, err := json.Marshal(obj)
	if err != nil {
		return nil, fmt.Errorf("encode: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("encode: %w", err)
	}
	delete(m, "status")
	prune(m)
	if js, err = json.Marshal(m); err != nil {
		return nil, fmt.Errorf("encode: %w", err)
	}
	y, err := yaml.JSONToYAML(js)
	if err != nil {
		return nil, fmt.Errorf("encode: %w", err)
	}
	return y, nil
}

// prune removes null values, the status of embedded objects
// (volumeClaimTemplates) and empty resources, everywhere under v.
func prune(v any) {
	switch t := v.(type) {
	case map[string]any:
		for k, c := range t {
			if c == nil {
				delete(t, k)
				continue
			}
			if cm, ok := c.(map[string]any); ok && len(cm) == 0 && k == "resources" {
				delete(t, k)
				continue
			}
			prune(c)
		}
		if _, isObj := t["metadata"]; isObj {
			if _, hasSpec := t["spec"]; hasSpec {
				delete(t, "status")
			}
		}
	case []any:
		for _, c := range t {
			prune(c)
		}
	}
}
