// Package inject adds the Avamar sidecar to Kubernetes workloads, as
// `kubectl avamar inject` does: it reads StatefulSet and Deployment manifests and
// writes them back with the avsidecar container, its volumes and its
// Services, laid out as examples/nginx lays them out.
//
// It is strict: every document is decoded into its k8s.io/api type with
// unknown and duplicate fields refused (named with their path, as
// kubectl's --validate=strict does), and a kind it does not know is an
// error, not something passed on unread. It is idempotent: the sidecar it
// owns (the container named "avamar", the volumes "ssh-keys" and
// "browse-token", the Services "NAME-N-avagent" and, with a server, the
// ConfigMap) is replaced, not added twice, so injecting its own output
// changes nothing, and injecting with new options updates the sidecar.
//
// Workloads are written back re-encoded (comments are lost, keys sorted as
// kubectl prints them); the other documents are passed through byte for
// byte.
package inject

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"regexp"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	kjson "sigs.k8s.io/json"
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
	// ListenPortBase is avagent's port for pod 0 of a StatefulSet (pod N
	// listens on ListenPortBase + N), or the port of a Deployment's pod;
	// also the NodePorts (default 31000).
	ListenPortBase int
	// SSHAddr is the embedded SSH server's address (default ":2222", an
	// unprivileged port); "off" turns SSH off.
	SSHAddr string
}

// Defaults of Options, as in examples/nginx.
const (
	DefaultDomain         = "/clients"
	DefaultConfigMap      = "avamar"
	DefaultSecret         = "avsidecar"
	DefaultListenPortBase = 31000
	DefaultSSHAddr        = ":2222"
)

// Input is one manifest file.
type Input struct {
	// Name is the file name, for messages ("-" or "stdin" for standard
	// input).
	Name string
	// Data is the file's content: YAML documents separated by "---".
	Data []byte
}

// Result is inject's output.
type Result struct {
	// Output is the manifests, YAML documents separated by "---".
	Output []byte
	// Notes are things the operator should know that are not errors, one
	// sentence each.
	Notes []string
}

// ErrInput is matched (errors.Is) by every error about the manifests or
// the options, as opposed to a failure to write.
var ErrInput = errors.New("bad input")

// inputError is a problem with the manifests or the options.
type inputError string

func (e inputError) Error() string        { return string(e) }
func (e inputError) Is(target error) bool { return target == ErrInput }

func inputErrorf(format string, a ...any) error {
	return inputError(fmt.Sprintf(format, a...))
}

// document is one YAML document of the input.
type document struct {
	where string // "FILE, document N", for messages
	raw   []byte // the text as read, for pass-through
	gvk   string // apiVersion/kind
	name  string
	ns    string
	// obj is the decoded object: *appsv1.StatefulSet, *appsv1.Deployment,
	// or a pass-through kind's type.
	obj any
}

// passThrough are the kinds that may sit beside a workload in a manifest:
// decoded strictly, then written back as they were.
var passThrough = map[string]func() any{
	"v1/Service":                         func() any { return &corev1.Service{} },
	"v1/ConfigMap":                       func() any { return &corev1.ConfigMap{} },
	"v1/Secret":                          func() any { return &corev1.Secret{} },
	"v1/ServiceAccount":                  func() any { return &corev1.ServiceAccount{} },
	"v1/PersistentVolumeClaim":           func() any { return &corev1.PersistentVolumeClaim{} },
	"v1/Namespace":                       func() any { return &corev1.Namespace{} },
	"policy/v1/PodDisruptionBudget":      func() any { return &policyv1.PodDisruptionBudget{} },
	"networking.k8s.io/v1/NetworkPolicy": func() any { return &networkingv1.NetworkPolicy{} },
}

// unsupported explains the workload kinds inject refuses.
var unsupported = map[string]string{
	"DaemonSet":  "a DaemonSet's pods have no stable identity or PersistentVolume of their own for the Avamar client's registration; use a StatefulSet",
	"ReplicaSet": "use the Deployment that owns it",
	"Pod":        "inject the workload that makes the pod (a StatefulSet or a Deployment)",
	"Job":        "a Job is not backed up by a long-running Avamar client; use a StatefulSet",
	"CronJob":    "a CronJob is not backed up by a long-running Avamar client; use a StatefulSet",
	"List":       "give the objects one per YAML document (kubectl get KIND NAME -o yaml prints one object)",
}

// Inject reads the workloads of inputs and returns them with the sidecar.
func Inject(inputs []Input, opts Options) (Result, error) {
	if err := opts.check(); err != nil {
		return Result{}, err
	}
	var docs []document
	for _, in := range inputs {
		d, err := decode(in)
		if err != nil {
			return Result{}, err
		}
		docs = append(docs, d...)
	}
	return opts.inject(docs)
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
	if len(p) > 0 {
		return inputError(strings.Join(p, "; "))
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

// decode splits in into documents and decodes each strictly.
func decode(in Input) ([]document, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(in.Data)))
	var docs []document
	for i := 1; ; i++ {
		raw, err := r.Read()
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		where := fmt.Sprintf("%s, document %d", in.Name, i)
		if err != nil {
			return nil, inputErrorf("%s: %v", where, err)
		}
		d, ok, err := decodeDoc(where, raw)
		if err != nil {
			return nil, err
		}
		if ok {
			docs = append(docs, d)
		}
	}
}

// decodeDoc decodes one document; ok is false for an empty one.
func decodeDoc(where string, raw []byte) (document, bool, error) {
	d := document{where: where, raw: raw}
	js, err := yaml.YAMLToJSONStrict(raw)
	if err != nil {
		return d, false, inputErrorf("%s: not valid YAML: %v", where, err)
	}
	if t := bytes.TrimSpace(js); len(t) == 0 || string(t) == "null" {
		return d, false, nil
	}
	var id struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name      string `json:"name"`
			Namespace string `json:"namespace"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(js, &id); err != nil {
		return d, false, inputErrorf("%s: not a Kubernetes object: %v", where, err)
	}
	d.gvk, d.name, d.ns = id.APIVersion+"/"+id.Kind, id.Metadata.Name, id.Metadata.Namespace
	if id.APIVersion == "" || id.Kind == "" || d.name == "" {
		return d, false, inputErrorf("%s: apiVersion, kind and metadata.name are required (got %q, %q, %q)", where, id.APIVersion, id.Kind, d.name)
	}
	where = fmt.Sprintf("%s (%s %s)", where, id.Kind, d.name)
	d.where = where
	var obj any
	switch d.gvk {
	case "apps/v1/StatefulSet":
		obj = &appsv1.StatefulSet{}
	case "apps/v1/Deployment":
		obj = &appsv1.Deployment{}
	default:
		newObj, ok := passThrough[d.gvk]
		if !ok {
			why := "inject adds the sidecar to apps/v1 StatefulSets and Deployments and passes through v1 Services, ConfigMaps, Secrets, ServiceAccounts, PersistentVolumeClaims, Namespaces, policy/v1 PodDisruptionBudgets and networking.k8s.io/v1 NetworkPolicies"
			if u, ok := unsupported[id.Kind]; ok {
				why = u
			}
			return d, false, inputErrorf("%s: kind %s is not supported: %s", where, d.gvk, why)
		}
		obj = newObj()
	}
	strict, err := kjson.UnmarshalStrict(js, obj)
	if err != nil {
		return d, false, inputErrorf("%s: %v", where, err)
	}
	if len(strict) > 0 {
		msgs := make([]string, len(strict))
		for i, e := range strict {
			msgs[i] = e.Error()
		}
		return d, false, inputErrorf("%s: %s", where, strings.Join(msgs, "; "))
	}
	d.obj = obj
	return d, true, nil
}

// output is one document of the result: raw text, or an object to encode.
type output struct {
	raw []byte
	obj any
}

// inject adds the sidecar to every workload of docs and lays out the result.
func (o Options) inject(docs []document) (Result, error) {
	o = o.withDefaults()
	var res Result
	// First the workloads, to know which Services and ConfigMaps are the
	// sidecar's (made anew) wherever they stand in the input.
	type made struct {
		before []any // the ConfigMap, once per namespace
		after  []any // the workload's Services
	}
	byDoc := map[int]made{}
	owned := map[string]bool{} // kind/namespace/name made by inject
	configMaps := map[string]bool{}
	for i := range docs {
		d := &docs[i]
		var w workload
		switch t := d.obj.(type) {
		case *appsv1.StatefulSet:
			w = statefulSet(t)
		case *appsv1.Deployment:
			w = deployment(t)
		default:
			continue
		}
		notes, err := o.injectWorkload(w)
		if err != nil {
			return Result{}, inputErrorf("%s: %v", d.where, err)
		}
		res.Notes = append(res.Notes, prefix(d.where, notes)...)
		m := made{}
		if o.Server != "" && !configMaps[d.ns] {
			configMaps[d.ns] = true
			m.before = append(m.before, o.configMap(w))
			owned["ConfigMap/"+d.ns+"/"+o.ConfigMap] = true
		}
		svcs, err := o.services(w)
		if err != nil {
			return Result{}, inputErrorf("%s: %v", d.where, err)
		}
		for _, s := range svcs {
			m.after = append(m.after, s)
		}
		byDoc[i] = m
		for j := range docs {
			if s, ok := docs[j].obj.(*corev1.Service); ok && docs[j].ns == d.ns && w.ownsName(s.Name) {
				owned["Service/"+d.ns+"/"+s.Name] = true
			}
		}
	}
	if len(byDoc) == 0 {
		return Result{}, inputErrorf("no StatefulSet or Deployment in the input: nothing to inject")
	}
	var out []output
	for i, d := range docs {
		if m, ok := byDoc[i]; ok {
			for _, b := range m.before {
				out = append(out, output{obj: b})
			}
			out = append(out, output{obj: d.obj})
			for _, a := range m.after {
				out = append(out, output{obj: a})
			}
			continue
		}
		kind := d.gvk[strings.LastIndex(d.gvk, "/")+1:]
		if owned[kind+"/"+d.ns+"/"+d.name] {
			continue // made anew next to its workload
		}
		out = append(out, output{raw: d.raw})
	}
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
			return Result{}, err
		}
		buf.Write(b)
	}
	res.Output = buf.Bytes()
	return res, nil
}

func prefix(where string, notes []string) []string {
	out := make([]string, len(notes))
	for i, n := range notes {
		out[i] = where + ": " + n
	}
	return out
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
