package examples

import (
	"bytes"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"
)

// object is one YAML document of a manifest file.
type object struct {
	// where is "file#index", for messages.
	where      string
	apiVersion string
	kind       string
	name       string
	namespace  string
	// typed is a pointer to the k8s.io/api type, nil for a kind this
	// checker does not know (a CRD such as monitoring.coreos.com's
	// PrometheusRule), which is only checked for its identity.
	typed any
}

func (o object) String() string { return fmt.Sprintf("%s %s/%s", o.where, o.kind, o.name) }

// kinds are the built-in kinds decoded strictly, by apiVersion/kind.
var kinds = map[string]func() any{
	"v1/ConfigMap":                                    func() any { return &corev1.ConfigMap{} },
	"v1/Secret":                                       func() any { return &corev1.Secret{} },
	"v1/Service":                                      func() any { return &corev1.Service{} },
	"v1/ServiceAccount":                               func() any { return &corev1.ServiceAccount{} },
	"v1/PersistentVolumeClaim":                        func() any { return &corev1.PersistentVolumeClaim{} },
	"v1/Namespace":                                    func() any { return &corev1.Namespace{} },
	"v1/Pod":                                          func() any { return &corev1.Pod{} },
	"apps/v1/StatefulSet":                             func() any { return &appsv1.StatefulSet{} },
	"apps/v1/Deployment":                              func() any { return &appsv1.Deployment{} },
	"apps/v1/DaemonSet":                               func() any { return &appsv1.DaemonSet{} },
	"batch/v1/Job":                                    func() any { return &batchv1.Job{} },
	"batch/v1/CronJob":                                func() any { return &batchv1.CronJob{} },
	"policy/v1/PodDisruptionBudget":                   func() any { return &policyv1.PodDisruptionBudget{} },
	"networking.k8s.io/v1/NetworkPolicy":              func() any { return &networkingv1.NetworkPolicy{} },
	"rbac.authorization.k8s.io/v1/Role":               func() any { return &rbacv1.Role{} },
	"rbac.authorization.k8s.io/v1/RoleBinding":        func() any { return &rbacv1.RoleBinding{} },
	"rbac.authorization.k8s.io/v1/ClusterRole":        func() any { return &rbacv1.ClusterRole{} },
	"rbac.authorization.k8s.io/v1/ClusterRoleBinding": func() any { return &rbacv1.ClusterRoleBinding{} },
}

// builtinGroups are API groups served by Kubernetes itself: an unknown kind
// or version in one of them is a typo, not a CRD.
var builtinGroups = map[string]bool{
	"": true, "apps": true, "batch": true, "policy": true, "autoscaling": true,
	"networking.k8s.io": true, "rbac.authorization.k8s.io": true,
	"storage.k8s.io": true, "scheduling.k8s.io": true, "coordination.k8s.io": true,
	"discovery.k8s.io": true, "node.k8s.io": true, "apiextensions.k8s.io": true,
	"admissionregistration.k8s.io": true, "certificates.k8s.io": true,
}

// loadDir decodes every *.yaml and *.yml file under dir but those that are
// not manifests: kustomize directories (their patches are partial objects;
// kustomize_test.go checks what they render) and *_test.yaml files
// (promtool's rule tests).
func loadDir(dir string) ([]object, error) {
	var objs []object
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if _, err := os.Stat(filepath.Join(p, "kustomization.yaml")); err == nil {
				return filepath.SkipDir
			}
			return nil
		}
		if (filepath.Ext(p) != ".yaml" && filepath.Ext(p) != ".yml") || strings.HasSuffix(strings.TrimSuffix(p, filepath.Ext(p)), "_test") {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		o, err := decodeFile(p, b)
		if err != nil {
			return err
		}
		objs = append(objs, o...)
		return nil
	})
	return objs, err
}

// docSeparator is a YAML document separator line.
var docSeparator = regexp.MustCompile(`(?m)^---[ \t]*(#.*)?$`)

// decodeFile splits a file into documents and decodes each one strictly:
// an unknown or duplicated field is an error, as with kubectl's
// --validate=strict.
func decodeFile(name string, b []byte) ([]object, error) {
	var objs []object
	for i, doc := range docSeparator.Split(string(b), -1) {
		if isBlank(doc) {
			continue
		}
		where := fmt.Sprintf("%s#%d", name, i)
		var id struct {
			APIVersion string            `json:"apiVersion"`
			Kind       string            `json:"kind"`
			Metadata   metav1.ObjectMeta `json:"metadata"`
		}
		if err := yaml.Unmarshal([]byte(doc), &id); err != nil {
			return nil, fmt.Errorf("%s: not valid YAML: %w", where, err)
		}
		o := object{where: where, apiVersion: id.APIVersion, kind: id.Kind, name: id.Metadata.Name, namespace: id.Metadata.Namespace}
		if o.apiVersion == "" || o.kind == "" || o.name == "" {
			return nil, fmt.Errorf("%s: apiVersion, kind and metadata.name are required (got %q, %q, %q)", where, o.apiVersion, o.kind, o.name)
		}
		newObj, ok := kinds[o.apiVersion+"/"+o.kind]
		if !ok {
			group, _, _ := strings.Cut(o.apiVersion, "/")
			if !strings.Contains(o.apiVersion, "/") {
				group = ""
			}
			if builtinGroups[group] {
				return nil, fmt.Errorf("%s: unknown kind %s in the built-in API group %q", where, o.apiVersion+"/"+o.kind, group)
			}
			objs = append(objs, o) // a custom resource: identity checked only
			continue
		}
		o.typed = newObj()
		if err := yaml.UnmarshalStrict([]byte(doc), o.typed); err != nil {
			return nil, fmt.Errorf("%s: %s/%s: %w", where, o.kind, o.name, err)
		}
		objs = append(objs, o)
	}
	return objs, nil
}

func isBlank(doc string) bool {
	for _, l := range strings.Split(doc, "\n") {
		l = strings.TrimSpace(l)
		if l != "" && !strings.HasPrefix(l, "#") {
			return false
		}
	}
	return true
}

// The product's facts the checker enforces (SPEC "Configuration", "HTTP").
const (
	defaultHTTPAddr        = ":9180"
	defaultPrefix          = "/usr/local/avamar"
	defaultShutdownTimeout = 20 * time.Second
	defaultAuthorizedKeys  = "/etc/avsidecar/ssh/authorized_keys"
	defaultListenPort      = "28002"
	defaultHooksSocket     = "/run/avsidecar/hooks.sock"
	defaultRestCredentials = "/etc/avsidecar/rest/credentials"
	// avamarStateDir is where many installs keep the client's state.
	avamarStateDir     = "/var/avamar"
	defaultGracePeriod = 30
	// serviceAccountTokenDir is where the API server mounts the token in
	// every container without a mount of its own at exactly that path.
	serviceAccountTokenDir = "/var/run/secrets/kubernetes.io/serviceaccount"
	// exampleHostIP stands for status.hostIP when env values are expanded.
	exampleHostIP = "10.0.0.7"
)

// probePaths is which avsidecar path each probe kind must use.
var probePaths = map[string]string{"startupProbe": "/startupz", "readinessProbe": "/readyz", "livenessProbe": "/livez"}

// pod is one pod a workload would create, with what the controller adds.
type pod struct {
	owner  object
	name   string
	labels map[string]string
	spec   *corev1.PodSpec
	// claims are the volumeClaimTemplates' names, volumes of every pod.
	claims []string
	// env is each container's environment as the kubelet would set it,
	// by container name (filled by checker.pod).
	env map[string]map[string]string
}

// checker resolves the cross-references of a set of objects.
type checker struct {
	objs     []object
	problems []string
}

func (c *checker) addf(o object, format string, a ...any) {
	c.problems = append(c.problems, o.String()+": "+fmt.Sprintf(format, a...))
}

// check returns every problem found in objs, sorted; none means deployable
// as far as a static reading can tell.
func check(objs []object) []string {
	c := &checker{objs: objs}
	var pods []pod
	for _, o := range objs {
		c.names(o)
	}
	for _, o := range objs {
		switch t := o.typed.(type) {
		case *appsv1.StatefulSet:
			pods = append(pods, c.statefulSet(o, t)...)
		case *appsv1.Deployment:
			pods = append(pods, c.workload(o, t.Spec.Selector, &t.Spec.Template, o.name+"-0")...)
		case *appsv1.DaemonSet:
			pods = append(pods, c.workload(o, t.Spec.Selector, &t.Spec.Template, o.name+"-0")...)
		}
	}
	for i := range pods {
		c.pod(&pods[i])
	}
	nodePorts := map[int32]string{} // cluster-wide, like the API server's allocator
	for _, o := range objs {
		s, ok := o.typed.(*corev1.Service)
		if !ok {
			continue
		}
		c.service(o, s, pods)
		for _, sp := range s.Spec.Ports {
			if sp.NodePort == 0 {
				continue
			}
			if other, taken := nodePorts[sp.NodePort]; taken {
				c.addf(o, "nodePort %d is also allocated to Service %s", sp.NodePort, other)
			}
			nodePorts[sp.NodePort] = o.name
		}
	}
	for _, p := range pods {
		c.reachable(p)
		c.admitted(p)
	}
	for _, o := range objs {
		if pdb, ok := o.typed.(*policyv1.PodDisruptionBudget); ok {
			c.budget(o, pdb, pods)
		}
	}
	sort.Strings(c.problems)
	return c.problems
}

// names applies the API server's syntax rules that the types cannot:
// object, container, port, volume and env names, and labels. A name the
// API server rejects fails `kubectl apply`, after everything before it in
// the file was applied.
func (c *checker) names(o object) {
	bad := func(what, value string, errs []string) {
		if len(errs) > 0 {
			c.addf(o, "%s %q: %s", what, value, strings.Join(errs, "; "))
		}
	}
	if o.kind == "Service" {
		bad("Service name", o.name, validation.IsDNS1035Label(o.name))
	} else {
		bad("name", o.name, validation.IsDNS1123Subdomain(o.name))
	}
	if m, ok := o.typed.(metav1.Object); ok {
		labelsOK(m.GetLabels(), "metadata.labels", bad)
	}
	var spec *corev1.PodSpec
	switch t := o.typed.(type) {
	case *appsv1.StatefulSet:
		spec = &t.Spec.Template.Spec
		labelsOK(t.Spec.Template.Labels, "template label", bad)
		if t.Spec.Selector != nil {
			labelsOK(t.Spec.Selector.MatchLabels, "selector", bad)
		}
		for _, v := range t.Spec.VolumeClaimTemplates {
			bad("volumeClaimTemplate", v.Name, validation.IsDNS1123Label(v.Name))
		}
	case *appsv1.Deployment:
		spec = &t.Spec.Template.Spec
		labelsOK(t.Spec.Template.Labels, "template label", bad)
	case *appsv1.DaemonSet:
		spec = &t.Spec.Template.Spec
		labelsOK(t.Spec.Template.Labels, "template label", bad)
	case *corev1.Service:
		labelsOK(t.Spec.Selector, "selector", bad)
		for _, p := range t.Spec.Ports {
			if p.Name != "" {
				bad("Service port name", p.Name, validation.IsDNS1123Label(p.Name))
			}
			if p.TargetPort.Type == intstr.String {
				bad("targetPort", p.TargetPort.StrVal, validation.IsValidPortName(p.TargetPort.StrVal))
			}
		}
	case *corev1.Secret:
		for k := range t.StringData {
			bad("Secret key", k, validation.IsConfigMapKey(k))
		}
		for k := range t.Data {
			bad("Secret key", k, validation.IsConfigMapKey(k))
		}
	case *corev1.ConfigMap:
		for k := range t.Data {
			bad("ConfigMap key", k, validation.IsConfigMapKey(k))
		}
	}
	if spec == nil {
		return
	}
	for _, v := range spec.Volumes {
		bad("volume", v.Name, validation.IsDNS1123Label(v.Name))
	}
	for _, ct := range spec.Containers {
		bad("container", ct.Name, validation.IsDNS1123Label(ct.Name))
		for _, p := range ct.Ports {
			if p.Name != "" {
				bad("container port name", p.Name, validation.IsValidPortName(p.Name))
			}
		}
		for _, e := range ct.Env {
			bad("env", e.Name, validation.IsEnvVarName(e.Name))
		}
	}
}

func labelsOK(l map[string]string, what string, bad func(string, string, []string)) {
	for k, v := range l {
		bad(what+" key", k, validation.IsQualifiedName(k))
		bad(what+" value", v, validation.IsValidLabelValue(v))
	}
}

func (c *checker) find(kind, namespace, name string) (object, bool) {
	for _, o := range c.objs {
		if o.kind == kind && o.namespace == namespace && o.name == name && o.typed != nil {
			return o, true
		}
	}
	return object{}, false
}

// workload checks a selector against its template and returns the pod.
func (c *checker) workload(o object, sel *metav1.LabelSelector, tpl *corev1.PodTemplateSpec, podName string) []pod {
	if sel == nil || (len(sel.MatchLabels) == 0 && len(sel.MatchExpressions) == 0) {
		c.addf(o, "spec.selector is empty")
		return nil
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		c.addf(o, "spec.selector: %v", err)
		return nil
	}
	if !s.Matches(labels.Set(tpl.Labels)) {
		c.addf(o, "spec.selector %s does not match the template labels %v", s, tpl.Labels)
	}
	return []pod{{owner: o, name: podName, labels: tpl.Labels, spec: &tpl.Spec}}
}

// statefulSet returns one pod per ordinal, labelled as the StatefulSet
// controller labels them.
func (c *checker) statefulSet(o object, s *appsv1.StatefulSet) []pod {
	if s.Spec.ServiceName == "" {
		c.addf(o, "spec.serviceName is empty")
	} else if so, ok := c.find("Service", o.namespace, s.Spec.ServiceName); !ok {
		c.addf(o, "spec.serviceName %q names no Service", s.Spec.ServiceName)
	} else if svc := so.typed.(*corev1.Service); svc.Spec.ClusterIP != corev1.ClusterIPNone {
		c.addf(o, "spec.serviceName %q is not a headless Service (clusterIP: None)", s.Spec.ServiceName)
	}
	base := c.workload(o, s.Spec.Selector, &s.Spec.Template, "")
	if base == nil {
		return nil
	}
	var claims []string
	for _, t := range s.Spec.VolumeClaimTemplates {
		claims = append(claims, t.Name)
	}
	replicas := 1
	if s.Spec.Replicas != nil {
		replicas = int(*s.Spec.Replicas)
	}
	var pods []pod
	for i := range replicas {
		name := fmt.Sprintf("%s-%d", o.name, i)
		l := map[string]string{
			appsv1.StatefulSetPodNameLabel: name,
			appsv1.PodIndexLabel:           strconv.Itoa(i),
		}
		for k, v := range s.Spec.Template.Labels {
			l[k] = v
		}
		pods = append(pods, pod{owner: o, name: name, labels: l, spec: &s.Spec.Template.Spec, claims: claims})
	}
	return pods
}

// pod checks volumes, probes, references and, for the avsidecar container,
// the product's own rules.
func (c *checker) pod(p *pod) {
	o := p.owner
	p.env = map[string]map[string]string{}
	vols := map[string]*corev1.Volume{}
	used := map[string]bool{}
	for i := range p.spec.Volumes {
		v := &p.spec.Volumes[i]
		if vols[v.Name] != nil || slices.Contains(p.claims, v.Name) {
			c.addf(o, "volume %q is declared twice", v.Name)
		}
		vols[v.Name] = v
		c.volumeRefs(o, v)
	}
	for _, ct := range p.spec.Containers {
		paths := map[string]bool{}
		for _, m := range ct.VolumeMounts {
			if vols[m.Name] == nil && !slices.Contains(p.claims, m.Name) {
				c.addf(o, "container %s mounts volume %q, which is neither a volume nor a volumeClaimTemplate", ct.Name, m.Name)
			}
			if paths[m.MountPath] {
				c.addf(o, "container %s mounts two volumes at %s", ct.Name, m.MountPath)
			}
			paths[m.MountPath] = true
			used[m.Name] = true
		}
		env := c.env(*p, ct)
		p.env[ct.Name] = env
		for _, probe := range []struct {
			kind string
			p    *corev1.Probe
		}{{"startupProbe", ct.StartupProbe}, {"readinessProbe", ct.ReadinessProbe}, {"livenessProbe", ct.LivenessProbe}} {
			c.probe(o, ct, probe.kind, probe.p, env)
		}
		if _, ok := env["AVAMAR_SERVER"]; ok {
			c.sidecar(*p, ct, env, vols)
		}
	}
	for name := range vols {
		if !used[name] {
			c.addf(o, "volume %q is mounted by no container", name)
		}
	}
	for _, name := range p.claims {
		if !used[name] {
			c.addf(o, "volumeClaimTemplate %q is mounted by no container", name)
		}
	}
}

// volumeRefs checks that a Secret or ConfigMap volume names keys that exist.
func (c *checker) volumeRefs(o object, v *corev1.Volume) {
	switch {
	case v.Secret != nil:
		optional := v.Secret.Optional != nil && *v.Secret.Optional
		keys, ok := c.secretKeys(o.namespace, v.Secret.SecretName)
		if !ok {
			if !optional {
				c.addf(o, "volume %q: Secret %q does not exist", v.Name, v.Secret.SecretName)
			}
			return
		}
		for _, it := range v.Secret.Items {
			if !keys[it.Key] && !optional {
				c.addf(o, "volume %q: Secret %q has no key %q", v.Name, v.Secret.SecretName, it.Key)
			}
		}
	case v.ConfigMap != nil:
		optional := v.ConfigMap.Optional != nil && *v.ConfigMap.Optional
		keys, ok := c.configMapKeys(o.namespace, v.ConfigMap.Name)
		if !ok {
			if !optional {
				c.addf(o, "volume %q: ConfigMap %q does not exist", v.Name, v.ConfigMap.Name)
			}
			return
		}
		for _, it := range v.ConfigMap.Items {
			if !keys[it.Key] && !optional {
				c.addf(o, "volume %q: ConfigMap %q has no key %q", v.Name, v.ConfigMap.Name, it.Key)
			}
		}
	}
}

func (c *checker) secretKeys(namespace, name string) (map[string]bool, bool) {
	so, ok := c.find("Secret", namespace, name)
	if !ok {
		return nil, false
	}
	s := so.typed.(*corev1.Secret)
	keys := map[string]bool{}
	for k := range s.Data {
		keys[k] = true
	}
	for k := range s.StringData {
		keys[k] = true
	}
	return keys, true
}

func (c *checker) configMapKeys(namespace, name string) (map[string]bool, bool) {
	co, ok := c.find("ConfigMap", namespace, name)
	if !ok {
		return nil, false
	}
	cm := co.typed.(*corev1.ConfigMap)
	keys := map[string]bool{}
	for k := range cm.Data {
		keys[k] = true
	}
	for k := range cm.BinaryData {
		keys[k] = true
	}
	return keys, true
}

// envRef is a $(VAR) reference in an env value.
var envRef = regexp.MustCompile(`\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)`)

// env returns the container's environment as the kubelet would set it in
// pod p: $(VAR) expanded from earlier variables, the downward API and
// ConfigMap/Secret keys resolved. Unresolvable references are problems.
func (c *checker) env(p pod, ct corev1.Container) map[string]string {
	o := p.owner
	out := map[string]string{}
	for _, e := range ct.Env {
		if e.ValueFrom == nil {
			out[e.Name] = envRef.ReplaceAllStringFunc(e.Value, func(ref string) string {
				if ref == "$$" {
					return "$"
				}
				name := ref[2 : len(ref)-1]
				v, ok := out[name]
				if !ok {
					c.addf(o, "container %s: %s refers to $(%s), which is not defined before it (the kubelet would leave it as is)", ct.Name, e.Name, name)
					return ref
				}
				return v
			})
			continue
		}
		switch f := e.ValueFrom; {
		case f.FieldRef != nil:
			v, err := fieldValue(p, f.FieldRef.FieldPath)
			if err != nil {
				c.addf(o, "container %s: %s: %v", ct.Name, e.Name, err)
			}
			out[e.Name] = v
		case f.ConfigMapKeyRef != nil:
			r := f.ConfigMapKeyRef
			co, ok := c.find("ConfigMap", o.namespace, r.Name)
			optional := r.Optional != nil && *r.Optional
			switch {
			case !ok && !optional:
				c.addf(o, "container %s: %s: ConfigMap %q does not exist", ct.Name, e.Name, r.Name)
			case ok:
				v, has := co.typed.(*corev1.ConfigMap).Data[r.Key]
				if !has && !optional {
					c.addf(o, "container %s: %s: ConfigMap %q has no key %q", ct.Name, e.Name, r.Name, r.Key)
				}
				out[e.Name] = v
			}
		case f.SecretKeyRef != nil:
			r := f.SecretKeyRef
			keys, ok := c.secretKeys(o.namespace, r.Name)
			optional := r.Optional != nil && *r.Optional
			switch {
			case !ok && !optional:
				c.addf(o, "container %s: %s: Secret %q does not exist", ct.Name, e.Name, r.Name)
			case ok && !keys[r.Key] && !optional:
				c.addf(o, "container %s: %s: Secret %q has no key %q", ct.Name, e.Name, r.Name, r.Key)
			}
			out[e.Name] = "(secret)"
		default:
			out[e.Name] = ""
		}
	}
	return out
}

// fieldLabel matches metadata.labels['key'] and metadata.annotations['key'].
var fieldLabel = regexp.MustCompile(`^metadata\.(labels|annotations)\['([^']+)'\]$`)

// fieldValue is what the downward API gives for path in pod p.
func fieldValue(p pod, path string) (string, error) {
	switch path {
	case "metadata.name":
		return p.name, nil
	case "metadata.namespace", "metadata.uid", "spec.nodeName", "spec.serviceAccountName":
		return "example", nil
	case "status.hostIP", "status.hostIPs":
		return exampleHostIP, nil
	case "status.podIP", "status.podIPs":
		return "10.244.0.9", nil
	}
	if m := fieldLabel.FindStringSubmatch(path); m != nil {
		if m[1] == "annotations" {
			return "", nil
		}
		v, ok := p.labels[m[2]]
		if !ok {
			return "", fmt.Errorf("pod %s has no label %q (the variable would be empty)", p.name, m[2])
		}
		return v, nil
	}
	return "", fmt.Errorf("fieldPath %q is not supported by the downward API", path)
}

// containerPort resolves a probe's or Service's port (name or number) to a
// port the container declares.
func containerPort(ct corev1.Container, port intstr.IntOrString) (int32, bool) {
	for _, cp := range ct.Ports {
		if (port.Type == intstr.String && cp.Name == port.StrVal) || (port.Type == intstr.Int && cp.ContainerPort == port.IntVal) {
			return cp.ContainerPort, true
		}
	}
	return 0, false
}

func (c *checker) probe(o object, ct corev1.Container, kind string, p *corev1.Probe, env map[string]string) {
	if p == nil {
		return
	}
	var port intstr.IntOrString
	switch {
	case p.HTTPGet != nil:
		port = p.HTTPGet.Port
	case p.TCPSocket != nil:
		port = p.TCPSocket.Port
	default:
		return // exec and grpc probes name no container port
	}
	n, ok := containerPort(ct, port)
	if !ok {
		c.addf(o, "container %s: %s port %s is not a port of the container", ct.Name, kind, port.String())
	}
	if _, sidecar := env["AVAMAR_SERVER"]; !sidecar {
		return
	}
	if p.HTTPGet == nil {
		c.addf(o, "container %s: %s must be an httpGet of %s", ct.Name, kind, probePaths[kind])
		return
	}
	if p.HTTPGet.Path != probePaths[kind] {
		c.addf(o, "container %s: %s path %q, want %s", ct.Name, kind, p.HTTPGet.Path, probePaths[kind])
	}
	addr := envOr(env, "AVSIDECAR_HTTP_ADDR", defaultHTTPAddr)
	if _, ps, err := net.SplitHostPort(addr); err == nil && ok && ps != strconv.Itoa(int(n)) {
		c.addf(o, "container %s: %s goes to port %d but AVSIDECAR_HTTP_ADDR is %s", ct.Name, kind, n, addr)
	}
}

func envOr(env map[string]string, name, def string) string {
	if v, ok := env[name]; ok && v != "" {
		return v
	}
	return def
}

// sidecar checks the avsidecar container against SPEC: downward API
// identity, shutdown within the grace period, state on a PersistentVolume,
// Secrets mounted as directories, startup and liveness probes and no
// readiness probe, and no shell wrapper.
func (c *checker) sidecar(p pod, ct corev1.Container, env map[string]string, vols map[string]*corev1.Volume) {
	o := p.owner
	if len(ct.Command) > 0 {
		c.addf(o, "container %s overrides the image's ENTRYPOINT with %q: avsidecar must be PID 1", ct.Name, ct.Command)
	}
	fieldOf := func(name string) string {
		for _, e := range ct.Env {
			if e.Name == name && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
				return e.ValueFrom.FieldRef.FieldPath
			}
		}
		return ""
	}
	if f := fieldOf("NODE_IP"); f != "status.hostIP" {
		c.addf(o, "container %s: NODE_IP must come from the downward API status.hostIP, not %q", ct.Name, f)
	}
	if _, named := env["AVAMAR_CLIENT_NAME"]; !named && fieldOf("POD_NAME") != "metadata.name" {
		c.addf(o, "container %s: POD_NAME must come from metadata.name (the client name) unless AVAMAR_CLIENT_NAME is set", ct.Name)
	}
	if ct.StartupProbe == nil || ct.LivenessProbe == nil {
		c.addf(o, "container %s needs startup and liveness probes", ct.Name)
	}
	// The pod's readiness is the application's: a backup outage (server
	// down, avagent crash looping) must not take it out of its Services.
	if ct.ReadinessProbe != nil {
		c.addf(o, "container %s has a readinessProbe: a backup outage would take the application out of service (alert on /readyz and avsidecar_ready instead)", ct.Name)
	}

	grace := int64(defaultGracePeriod)
	if p.spec.TerminationGracePeriodSeconds != nil {
		grace = *p.spec.TerminationGracePeriodSeconds
	}
	timeout := defaultShutdownTimeout
	if v, ok := env["AVSIDECAR_SHUTDOWN_TIMEOUT"]; ok {
		d, err := time.ParseDuration(v)
		if err != nil {
			c.addf(o, "container %s: AVSIDECAR_SHUTDOWN_TIMEOUT %q: %v", ct.Name, v, err)
		}
		timeout = d
	}
	if time.Duration(grace)*time.Second <= timeout {
		c.addf(o, "terminationGracePeriodSeconds %d is not above AVSIDECAR_SHUTDOWN_TIMEOUT %s: the kubelet would SIGKILL a clean stop", grace, timeout)
	}

	if _, err := listenPort(env); err != nil {
		c.addf(o, "container %s in pod %s: %v", ct.Name, p.name, err)
	}

	// The client's prefix and avsidecar's state must be on a
	// PersistentVolume, or every restart reinstalls and registers again.
	prefix := envOr(env, "AVAMAR_PREFIX", defaultPrefix)
	for _, d := range []struct{ name, path string }{
		{"AVAMAR_PREFIX", prefix},
		{"AVSIDECAR_STATE_DIR", envOr(env, "AVSIDECAR_STATE_DIR", prefix+"/var/avsidecar")},
	} {
		m, ok := mountOf(ct, d.path)
		if !ok || !(slices.Contains(p.claims, m.Name) || (vols[m.Name] != nil && vols[m.Name].PersistentVolumeClaim != nil)) {
			c.addf(o, "container %s: %s %s is not on a PersistentVolume: var/ and the registration would not survive a restart", ct.Name, d.name, d.path)
		}
	}

	for _, r := range strings.Split(env["AVSIDECAR_BROWSE_ROOTS"], ",") {
		if r = strings.TrimSpace(r); r == "" {
			continue
		}
		if _, ok := mountOf(ct, r); !ok {
			c.addf(o, "container %s: browse root %s is on no volume: it would list the container's own files", ct.Name, r)
		}
	}

	if ct.TerminationMessagePolicy != corev1.TerminationMessageFallbackToLogsOnError {
		c.addf(o, "container %s: terminationMessagePolicy %q: FallbackToLogsOnError lets kubectl describe show why the sidecar exited", ct.Name, ct.TerminationMessagePolicy)
	}
	if m, ok := mountOf(ct, serviceAccountTokenDir); env["AVSIDECAR_SSH_ADDR"] != "off" && !(ok && m.MountPath == serviceAccountTokenDir) &&
		(p.spec.AutomountServiceAccountToken == nil || *p.spec.AutomountServiceAccountToken) {
		c.addf(o, "pod %s mounts its ServiceAccount token in container %s, where anyone logged in over SSH can read it: mount an emptyDir at %s there", p.name, ct.Name, serviceAccountTokenDir)
	}
	if m, ok := mountOf(ct, avamarStateDir); ok && m.MountPath == avamarStateDir && !(slices.Contains(p.claims, m.Name) || (vols[m.Name] != nil && vols[m.Name].PersistentVolumeClaim != nil)) {
		c.addf(o, "container %s: %s, where the client keeps its registration, is not on a PersistentVolume", ct.Name, avamarStateDir)
	}
	if sc := ct.SecurityContext; sc != nil && sc.ReadOnlyRootFilesystem != nil && *sc.ReadOnlyRootFilesystem {
		// What avsidecar writes outside its prefix and state dir.
		for _, w := range []struct{ what, path string }{
			{"AVSIDECAR_HOOKS_SOCKET", path.Dir(envOr(env, "AVSIDECAR_HOOKS_SOCKET", defaultHooksSocket))},
			{"temporary files", "/tmp"},
		} {
			m, ok := mountOf(ct, w.path)
			if !ok || m.ReadOnly || (vols[m.Name] != nil && (vols[m.Name].Secret != nil || vols[m.Name].ConfigMap != nil)) {
				c.addf(o, "container %s: %s %s is on the read-only root filesystem: mount a writable volume (an emptyDir) there", ct.Name, w.what, w.path)
			}
		}
	}

	files := []struct{ name, path string }{{"AVSIDECAR_BROWSE_TOKEN_FILE", env["AVSIDECAR_BROWSE_TOKEN_FILE"]}}
	if env["AVSIDECAR_SSH_ADDR"] != "off" {
		files = append(files, struct{ name, path string }{"AVSIDECAR_SSH_AUTHORIZED_KEYS", envOr(env, "AVSIDECAR_SSH_AUTHORIZED_KEYS", defaultAuthorizedKeys)})
	}
	for _, f := range files {
		if f.path != "" {
			c.secretFile(o, ct, vols, f.name, f.path)
		}
	}
	// The REST API's credentials: a Secret mounted as a directory (one
	// file per key), or a file of one.
	if _, rest := env["AVAMAR_REST_URL"]; rest {
		cred := envOr(env, "AVAMAR_REST_CREDENTIALS_FILE", defaultRestCredentials)
		m, ok := mountOf(ct, cred)
		if v := vols[m.Name]; ok && m.MountPath == cred && (v == nil || v.Secret == nil || m.SubPath != "") {
			c.addf(o, "container %s: AVAMAR_REST_CREDENTIALS_FILE %s is not a Secret mounted as a directory", ct.Name, cred)
		} else if !ok || m.MountPath != cred {
			c.secretFile(o, ct, vols, "AVAMAR_REST_CREDENTIALS_FILE", cred)
		}
	}
}

// listenPort is avagent's --listenport in this container's environment:
// AVAMAR_LISTEN_PORT, or AVAMAR_LISTEN_PORT_BASE + POD_INDEX as
// internal/config computes it.
func listenPort(env map[string]string) (int, error) {
	if base := env["AVAMAR_LISTEN_PORT_BASE"]; base != "" {
		b, err := strconv.Atoi(base)
		i, ierr := strconv.Atoi(env["POD_INDEX"])
		switch {
		case env["AVAMAR_LISTEN_PORT"] != "":
			return 0, fmt.Errorf("AVAMAR_LISTEN_PORT and AVAMAR_LISTEN_PORT_BASE are both set")
		case err != nil || b < 1 || b > 65535:
			return 0, fmt.Errorf("AVAMAR_LISTEN_PORT_BASE %q is not a port number", base)
		case ierr != nil || i < 0:
			return 0, fmt.Errorf("POD_INDEX %q is not a pod ordinal, which AVAMAR_LISTEN_PORT_BASE needs", env["POD_INDEX"])
		case b+i > 65535:
			return 0, fmt.Errorf("AVAMAR_LISTEN_PORT_BASE %d + POD_INDEX %d is not a port number", b, i)
		}
		return b + i, nil
	}
	v := envOr(env, "AVAMAR_LISTEN_PORT", defaultListenPort)
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 65535 {
		return 0, fmt.Errorf("AVAMAR_LISTEN_PORT %q is not a port number", v)
	}
	return n, nil
}

// mountOf returns the mount that holds path in the container.
func mountOf(ct corev1.Container, path string) (corev1.VolumeMount, bool) {
	var best corev1.VolumeMount
	found := false
	for _, m := range ct.VolumeMounts {
		mp := strings.TrimSuffix(m.MountPath, "/")
		if (path == mp || strings.HasPrefix(path, mp+"/")) && len(mp) >= len(best.MountPath) {
			best, found = m, true
		}
	}
	return best, found
}

// secretFile checks that path is a file of a Secret volume mounted as a
// directory: a subPath mount would never see the Secret change, and
// avsidecar reloads it when the kubelet swaps the files.
func (c *checker) secretFile(o object, ct corev1.Container, vols map[string]*corev1.Volume, name, path string) {
	m, ok := mountOf(ct, path)
	v := vols[m.Name]
	if !ok || v == nil || v.Secret == nil {
		c.addf(o, "container %s: %s %s is not in a mounted Secret", ct.Name, name, path)
		return
	}
	if m.SubPath != "" {
		c.addf(o, "container %s: %s %s is a subPath mount of a Secret: it would never be updated", ct.Name, name, path)
		return
	}
	file := strings.TrimPrefix(path, strings.TrimSuffix(m.MountPath, "/")+"/")
	if len(v.Secret.Items) == 0 {
		if keys, ok := c.secretKeys(o.namespace, v.Secret.SecretName); ok && !keys[file] {
			c.addf(o, "container %s: %s %s: Secret %q has no key %q", ct.Name, name, path, v.Secret.SecretName, file)
		}
		return
	}
	for _, it := range v.Secret.Items {
		if it.Path == file {
			return
		}
	}
	c.addf(o, "container %s: %s %s: volume %q projects no file %q", ct.Name, name, path, m.Name, file)
}

// servesPort reports whether pod p serves port (name or number) in some
// container: a declared containerPort, or avagent's listen port.
func servesPort(p pod, port intstr.IntOrString) bool {
	for _, ct := range p.spec.Containers {
		if _, ok := containerPort(ct, port); ok {
			return true
		}
		if port.Type != intstr.Int {
			continue
		}
		env := p.env[ct.Name]
		if _, sidecar := env["AVAMAR_SERVER"]; sidecar {
			if n, err := listenPort(env); err == nil && int32(n) == port.IntVal {
				return true
			}
		}
	}
	return false
}

// service checks a Service's selector and ports against the pods it selects.
func (c *checker) service(o object, s *corev1.Service, pods []pod) {
	if len(s.Spec.Selector) == 0 {
		c.addf(o, "spec.selector is empty")
		return
	}
	sel := labels.SelectorFromSet(s.Spec.Selector)
	var selected []pod
	for _, p := range pods {
		if p.owner.namespace == o.namespace && sel.Matches(labels.Set(p.labels)) {
			selected = append(selected, p)
		}
	}
	if len(selected) == 0 {
		c.addf(o, "spec.selector %s selects no pod", sel)
		return
	}
	for _, sp := range s.Spec.Ports {
		target := sp.TargetPort
		if target.Type == intstr.Int && target.IntVal == 0 {
			target = intstr.FromInt32(sp.Port)
		}
		for _, p := range selected {
			if !servesPort(p, target) {
				c.addf(o, "port %q targets %s, which pod %s does not serve", sp.Name, target.String(), p.name)
			}
		}
		if sp.NodePort != 0 && (sp.NodePort < 30000 || sp.NodePort > 32767) {
			c.addf(o, "port %q: nodePort %d is outside the default range 30000-32767", sp.Name, sp.NodePort)
		}
	}
}

// reachable checks that the Avamar server can reach every avsidecar pod:
// it dials NODE_IP at avagent's listen port, so a NodePort Service must
// publish that very port for that pod (the whitepaper's mismatch), before
// the pod is ready (registration calls back before readiness).
func (c *checker) reachable(p pod) {
	for _, ct := range p.spec.Containers {
		env := p.env[ct.Name]
		if _, sidecar := env["AVAMAR_SERVER"]; !sidecar {
			continue
		}
		port, err := listenPort(env)
		if err != nil {
			continue
		}
		var found []string
		for _, o := range c.objs {
			s, ok := o.typed.(*corev1.Service)
			if !ok || o.namespace != p.owner.namespace || len(s.Spec.Selector) == 0 ||
				!labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(p.labels)) {
				continue
			}
			for _, sp := range s.Spec.Ports {
				if sp.TargetPort.Type == intstr.Int && sp.TargetPort.IntVal == int32(port) || sp.TargetPort.IntVal == 0 && sp.Port == int32(port) {
					switch {
					case s.Spec.Type != corev1.ServiceTypeNodePort && s.Spec.Type != corev1.ServiceTypeLoadBalancer:
						c.addf(o, "exposes avagent's port %d of pod %s, but not on the node (type %q): the Avamar server dials NODE_IP", port, p.name, s.Spec.Type)
					case sp.NodePort != int32(port):
						c.addf(o, "nodePort %d differs from avagent's listen port %d of pod %s: the Avamar server dials NODE_IP:%d", sp.NodePort, port, p.name, port)
					case !s.Spec.PublishNotReadyAddresses:
						c.addf(o, "needs publishNotReadyAddresses: the Avamar server calls pod %s back while it registers, before it is ready", p.name)
					default:
						found = append(found, o.name)
					}
				}
			}
		}
		if len(found) == 0 {
			c.addf(p.owner, "pod %s: no NodePort Service publishes avagent's listen port %d, so the Avamar server cannot reach it", p.name, port)
		}
	}
}

// admitted checks, when NetworkPolicies isolate pod p for ingress, that
// they allow every port a Service sends to it: a Service of the
// application or avagent's NodePort that no policy lets through is dead.
func (c *checker) admitted(p pod) {
	var rules []networkingv1.NetworkPolicyIngressRule
	isolated := false
	for _, o := range c.objs {
		np, ok := o.typed.(*networkingv1.NetworkPolicy)
		if !ok || o.namespace != p.owner.namespace {
			continue
		}
		sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
		if err != nil {
			c.addf(o, "spec.podSelector: %v", err)
			continue
		}
		ingress := len(np.Spec.PolicyTypes) == 0 || slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress)
		if !ingress || !sel.Matches(labels.Set(p.labels)) {
			continue
		}
		isolated = true
		rules = append(rules, np.Spec.Ingress...)
	}
	if !isolated {
		return
	}
	// The numeric port a Service port targets on this pod.
	number := func(target intstr.IntOrString) (int32, bool) {
		if target.Type == intstr.Int {
			return target.IntVal, true
		}
		for _, ct := range p.spec.Containers {
			if n, ok := containerPort(ct, target); ok {
				return n, true
			}
		}
		return 0, false
	}
	allowed := func(port int32) bool {
		for _, r := range rules {
			if len(r.Ports) == 0 {
				return true
			}
			for _, rp := range r.Ports {
				if rp.Port == nil {
					return true
				}
				n, ok := number(*rp.Port)
				if !ok {
					continue
				}
				last := n
				if rp.EndPort != nil {
					last = *rp.EndPort
				}
				if port >= n && port <= last {
					return true
				}
			}
		}
		return false
	}
	for _, o := range c.objs {
		s, ok := o.typed.(*corev1.Service)
		if !ok || o.namespace != p.owner.namespace || len(s.Spec.Selector) == 0 || !labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(p.labels)) {
			continue
		}
		for _, sp := range s.Spec.Ports {
			target := sp.TargetPort
			if target.Type == intstr.Int && target.IntVal == 0 {
				target = intstr.FromInt32(sp.Port)
			}
			if n, ok := number(target); ok && !allowed(n) {
				c.addf(p.owner, "pod %s: no NetworkPolicy that selects it allows port %d, where Service %s sends", p.name, n, o.name)
			}
		}
	}
}

// budget checks that a PodDisruptionBudget says how many pods may go and
// selects pods of its namespace.
func (c *checker) budget(o object, pdb *policyv1.PodDisruptionBudget, pods []pod) {
	if pdb.Spec.MinAvailable == nil && pdb.Spec.MaxUnavailable == nil {
		c.addf(o, "neither minAvailable nor maxUnavailable is set")
	}
	sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
	if err != nil || pdb.Spec.Selector == nil {
		c.addf(o, "spec.selector: %v", err)
		return
	}
	for _, p := range pods {
		if p.owner.namespace == o.namespace && sel.Matches(labels.Set(p.labels)) {
			return
		}
	}
	c.addf(o, "spec.selector %s selects no pod", sel)
}

// render is for test messages: the problems, one per line.
func render(problems []string) string {
	var b bytes.Buffer
	for _, p := range problems {
		b.WriteString("  " + p + "\n")
	}
	return b.String()
}
