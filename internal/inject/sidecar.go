package inject

import (
	"errors"
	"fmt"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// The names and paths of the sidecar, as in examples/nginx.
const (
	// ContainerName is the sidecar container's name, which the alerts of
	// examples/monitoring select on.
	ContainerName = "avamar"
	// HTTPPortName names avsidecar's HTTP port, which the PodMonitor
	// scrapes.
	HTTPPortName = "avsidecar"
	httpPort     = 9180
	sshPortName  = "ssh"

	sshVolume   = "ssh-keys"
	tokenVolume = "browse-token"
	restVolume  = "avamar-rest"
	hooksVolume = "avamar-hooks"
	runVolume   = "avamar-run"
	tmpVolume   = "avamar-tmp"
	// noTokenVolume is an empty directory over the ServiceAccount token's
	// path in the sidecar only: the application keeps its token, and SSH
	// logins, which land in the sidecar, find none (the ServiceAccount
	// admission plugin mounts no token in a container that has a mount at
	// that path).
	noTokenVolume = "avamar-no-token"
	tokenPath     = "/var/run/secrets/kubernetes.io/serviceaccount"
	prefixDir     = "/usr/local/avamar"
	stateDir      = "/var/avamar"
	initDir       = "/etc/init.d"
	sshDir        = "/etc/avsidecar/ssh"
	tokenDir      = "/etc/avsidecar/browse"
	tokenFile     = tokenDir + "/token"
	restDir       = "/etc/avsidecar/rest"
	hooksDir      = "/etc/avsidecar/hooks"
	hooksKey      = "hooks.json"
	runDir        = "/run/avsidecar"
	tmpDir        = "/tmp"
	prefixSub     = "avamar"
	stateSub      = "avamar-state"
	initSub       = "init.d"
	// RestSecret is the Secret with the REST API's credentials, one key
	// per file (client_id, client_secret, username, password, and
	// optionally ca.crt); optional, like the check.
	RestSecret = "avamar-rest"
	// restURLKey is the ConfigMap's key with the REST API's URL; empty or
	// absent, the backup freshness check is off.
	restURLKey   = "rest-url"
	podIndexPath = "metadata.labels['apps.kubernetes.io/pod-index']"
	// podNameLabel is the label the StatefulSet controller gives each pod.
	podNameLabel = "statefulset.kubernetes.io/pod-name"
	// componentLabel marks what inject makes for the sidecar, with the
	// value componentBackup.
	componentLabel  = "app.kubernetes.io/component"
	componentBackup = "backup"

	// shutdownTimeout is AVSIDECAR_SHUTDOWN_TIMEOUT, spelled out next to
	// the grace period; gracePeriod leaves a margin above it.
	shutdownTimeout = "20s"
	gracePeriod     = 30
)

// reserved are the sidecar's own paths: a mirrored application mount may
// not cover, equal or sit inside one of them, or the sidecar would lose
// its binary, its client or its scriptlets' shell.
var reserved = []string{prefixDir, stateDir, initDir, "/etc/avsidecar", "/opt/avamar", runDir, tmpDir, "/usr/local/bin", "/bin", "/sbin", "/lib", "/lib64", "/usr/bin", "/usr/lib"}

// volumes are the names of the pod volumes the sidecar owns.
var volumes = []string{sshVolume, tokenVolume, restVolume, hooksVolume, runVolume, tmpVolume, noTokenVolume}

// workload is what inject needs of a StatefulSet or a Deployment.
type workload struct {
	kind, name, namespace string
	labels                map[string]string
	// meta is the workload's metadata, where inject keeps its annotations.
	meta        *metav1.ObjectMeta
	annotations map[string]string
	// selector is the workload's spec.selector.matchLabels.
	selector map[string]string
	replicas int32
	template *corev1.PodTemplateSpec
	// claims are the names of the volumeClaimTemplates.
	claims   []string
	stateful bool
	// rolling is a Deployment whose pods are replaced by a rolling update
	// (the default strategy).
	rolling bool
}

func statefulSet(s *appsv1.StatefulSet) workload {
	w := workload{kind: "StatefulSet", name: s.Name, namespace: s.Namespace, labels: s.Labels, meta: &s.ObjectMeta,
		annotations: s.Annotations, replicas: 1, template: &s.Spec.Template, stateful: true}
	if s.Spec.Replicas != nil {
		w.replicas = *s.Spec.Replicas
	}
	if s.Spec.Selector != nil {
		w.selector = s.Spec.Selector.MatchLabels
	}
	for _, c := range s.Spec.VolumeClaimTemplates {
		w.claims = append(w.claims, c.Name)
	}
	return w
}

func deployment(d *appsv1.Deployment) workload {
	w := workload{kind: "Deployment", name: d.Name, namespace: d.Namespace, labels: d.Labels, meta: &d.ObjectMeta,
		annotations: d.Annotations, replicas: 1, template: &d.Spec.Template,
		rolling: d.Spec.Strategy.Type == "" || d.Spec.Strategy.Type == appsv1.RollingUpdateDeploymentStrategyType}
	if d.Spec.Replicas != nil {
		w.replicas = *d.Spec.Replicas
	}
	if d.Spec.Selector != nil {
		w.selector = d.Spec.Selector.MatchLabels
	}
	return w
}

// persistentVolumes are the names of the pod's persistent volumes: its
// volumeClaimTemplates and its volumes of PersistentVolumeClaims, once
// each (a pod volume of a template's name is replaced by the template's
// claim, as cockroachdb's StatefulSet has it).
func (w workload) persistentVolumes() []string {
	claims := slices.Clone(w.claims)
	for _, v := range w.template.Spec.Volumes {
		if v.PersistentVolumeClaim != nil && !slices.Contains(claims, v.Name) {
			claims = append(claims, v.Name)
		}
	}
	return claims
}

// noVolume says why a workload without a persistent volume is not
// injected.
func noVolume(w workload) string {
	where := "a PersistentVolumeClaim volume"
	if w.stateful {
		where = "a volumeClaimTemplate"
	}
	return fmt.Sprintf("no persistent volume: the Avamar client's registration would not survive a restart, and there is nothing of its own to back up; add %s first", where)
}

// ownsName reports whether a Service of that name is one inject makes for
// w: NAME-N-avagent for a StatefulSet (any N, so that scaling down and
// injecting again removes the extra ones), NAME-avagent for a Deployment.
func (w workload) ownsName(name string) bool {
	if !w.stateful {
		return name == w.name+"-avagent"
	}
	rest, ok := strings.CutPrefix(name, w.name+"-")
	if !ok {
		return false
	}
	n, ok := strings.CutSuffix(rest, "-avagent")
	return ok && ordinal.MatchString(n)
}

var ordinal = regexp.MustCompile(`^(0|[1-9][0-9]*)$`)

// injectWorkload adds (or replaces) the sidecar in w's pod template, with
// base the first port of its block; restricted is true when a Namespace of
// the input enforces the restricted Pod Security level on it.
func (o Options) injectWorkload(w workload, base int, restricted bool) (notes, warnings []string, err error) {
	if !w.stateful && w.replicas > 1 {
		return nil, nil, fmt.Errorf("%d replicas: a Deployment's pods have no stable names, so each would be an Avamar client of its own sharing one registration; use a StatefulSet, or 1 replica", w.replicas)
	}
	if w.replicas < 0 {
		return nil, nil, fmt.Errorf("replicas %d is negative", w.replicas)
	}
	spec := &w.template.Spec
	// The sidecar inject made before, if any: replaced where it stands.
	pos := slices.IndexFunc(spec.Containers, isSidecar)
	spec.Containers = slices.DeleteFunc(spec.Containers, isSidecar)
	initPos := slices.IndexFunc(spec.InitContainers, isSidecar)
	spec.InitContainers = slices.DeleteFunc(spec.InitContainers, isSidecar)
	if len(spec.Containers) == 0 {
		return nil, nil, fmt.Errorf("no container besides %q: nothing to back up", ContainerName)
	}

	// The persistent volumes: the client's state goes on one of them, and
	// the application's mounts of all of them are what is backed up.
	claims := w.persistentVolumes()
	state, err := o.stateVolume(w, claims)
	if err != nil {
		return nil, nil, err
	}
	mounts, err := mirror(spec.Containers, claims)
	if err != nil {
		return nil, nil, err
	}
	for _, m := range mounts {
		if m.Name != state {
			continue
		}
		switch m.SubPath {
		case prefixSub, stateSub, initSub:
			return nil, nil, fmt.Errorf("volume %q: the application uses subPath %q, where the sidecar keeps the Avamar client", state, m.SubPath)
		case "":
			if m.SubPathExpr == "" {
				notes = append(notes, fmt.Sprintf("volume %q is mounted whole at %s, so the Avamar client's subPaths %s, %s and %s show there, and are backed up with it", state, m.MountPath, prefixSub, stateSub, initSub))
			}
		}
	}

	roots := o.BrowseRoots
	if roots == nil {
		for _, m := range mounts {
			roots = append(roots, m.MountPath)
		}
	}
	for _, r := range roots {
		if !slices.ContainsFunc(mounts, func(m corev1.VolumeMount) bool { return within(r, m.MountPath) }) {
			return nil, nil, fmt.Errorf("browse root %s is on no volume of the application that the sidecar mounts: it would list the sidecar's own files", r)
		}
	}
	ssh := o.SSHAddr != "off"
	browse := len(roots) > 0

	if err := o.setVolumes(spec, ssh, browse); err != nil {
		return nil, nil, err
	}
	ct := o.container(w, base, state, mounts, roots, ssh)
	if o.Native {
		ct.RestartPolicy = ptr(corev1.ContainerRestartPolicyAlways)
		spec.InitContainers = insert(spec.InitContainers, initPos, ct)
	} else {
		spec.Containers = insert(spec.Containers, pos, ct)
	}

	// Unset, the grace period is Kubernetes' 30s, above the sidecar's
	// shutdown timeout; a shorter one is raised, and remembered for
	// uninject.
	if g := spec.TerminationGracePeriodSeconds; g != nil && *g < gracePeriod {
		setAnnotation(w.meta, AnnotationGracePeriod, strconv.FormatInt(*g, 10))
		notes = append(notes, fmt.Sprintf("terminationGracePeriodSeconds %d raised to %d, above the sidecar's %s shutdown (uninject gives %d back)", *g, gracePeriod, shutdownTimeout, *g))
		spec.TerminationGracePeriodSeconds = ptr(int64(gracePeriod))
	}
	setAnnotation(w.meta, AnnotationPortBase, strconv.Itoa(base))
	return notes, o.warnings(w, base, restricted, ssh), nil
}

// warnings are the workload's choices that the sidecar makes risky.
func (o Options) warnings(w workload, base int, restricted, ssh bool) []string {
	var out []string
	spec := &w.template.Spec
	if spec.HostNetwork {
		ports := []string{strconv.Itoa(httpPort)}
		if ssh {
			p, _ := sshPort(o.SSHAddr)
			ports = append(ports, strconv.Itoa(int(p)))
		}
		ports = append(ports, portRange(base, w))
		out = append(out, fmt.Sprintf("hostNetwork: true: the sidecar's ports (%s) bind on the node itself, open to the node's network, and two such pods on one node collide", strings.Join(ports, ", ")))
	}
	if restricted || runsAsNonRoot(spec) {
		why := "the pod runs as non-root (runAsNonRoot: true), as the restricted Pod Security level asks"
		if restricted {
			why = "the namespace enforces the restricted Pod Security level"
		}
		out = append(out, why+": the sidecar runs as root with the capabilities CHOWN, DAC_OVERRIDE, FOWNER and FSETID to read and restore every file, which restricted refuses; the namespace must allow baseline")
	}
	if w.rolling {
		out = append(out, fmt.Sprintf("strategy RollingUpdate (the default): during a rollout the new pod starts before the old one stops, so two pods run the Avamar client %q at once on one volume (a ReadWriteOnce volume keeps the new pod Pending on another node); set spec.strategy.type: Recreate", w.name))
	}
	return out
}

// runsAsNonRoot reports whether the pod, or every application container,
// asks to run as non-root.
func runsAsNonRoot(spec *corev1.PodSpec) bool {
	if sc := spec.SecurityContext; sc != nil && sc.RunAsNonRoot != nil && *sc.RunAsNonRoot {
		return true
	}
	n := 0
	for _, c := range spec.Containers {
		if c.Name != ContainerName && c.SecurityContext != nil && c.SecurityContext.RunAsNonRoot != nil && *c.SecurityContext.RunAsNonRoot {
			n++
		}
	}
	return n > 0 && n == len(spec.Containers)-1
}

// restrictedNamespaces are the namespaces of the input whose Namespace
// enforces the restricted Pod Security level.
func restrictedNamespaces(docs []document) map[string]bool {
	out := map[string]bool{}
	for _, d := range docs {
		if n, ok := d.obj.(*corev1.Namespace); ok && n.Labels["pod-security.kubernetes.io/enforce"] == "restricted" {
			out[n.Name] = true
		}
	}
	return out
}

func setAnnotation(m *metav1.ObjectMeta, k, v string) {
	if m.Annotations == nil {
		m.Annotations = map[string]string{}
	}
	m.Annotations[k] = v
}

func isSidecar(c corev1.Container) bool { return c.Name == ContainerName }

// insert puts c at i, or at the end when i is not an index of s.
func insert(s []corev1.Container, i int, c corev1.Container) []corev1.Container {
	if i < 0 || i > len(s) {
		return append(s, c)
	}
	return slices.Insert(s, i, c)
}

func ptr[T any](v T) *T { return &v }

// stateVolume chooses the persistent volume that holds the client's prefix.
func (o Options) stateVolume(w workload, claims []string) (string, error) {
	if o.Volume != "" {
		if !slices.Contains(claims, o.Volume) {
			return "", fmt.Errorf("--volume %q is not a persistent volume of this %s (it has %s)", o.Volume, w.kind, list(claims))
		}
		return o.Volume, nil
	}
	switch len(claims) {
	case 1:
		return claims[0], nil
	case 0:
		return "", errors.New(noVolume(w))
	}
	return "", fmt.Errorf("several persistent volumes (%s): choose the one for the Avamar client with --volume", list(claims))
}

func list(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}

// mirror returns the application containers' mounts of persistent volumes,
// which the sidecar mounts at the same paths: the path an operator browses
// is then the path of the backup dataset. Writable, for restores.
func mirror(apps []corev1.Container, claims []string) ([]corev1.VolumeMount, error) {
	var out []corev1.VolumeMount
	from := map[string]string{} // mount path -> container
	for _, c := range apps {
		for _, m := range c.VolumeMounts {
			if !slices.Contains(claims, m.Name) {
				continue
			}
			mp := path.Clean(m.MountPath)
			for _, r := range reserved {
				if within(mp, r) || within(r, mp) {
					return nil, fmt.Errorf("container %s mounts volume %q at %s: mounted there in the sidecar too, it would cover %s, which the sidecar needs", c.Name, m.Name, m.MountPath, r)
				}
			}
			mm := corev1.VolumeMount{Name: m.Name, MountPath: mp, SubPath: m.SubPath, SubPathExpr: m.SubPathExpr}
			if i := slices.IndexFunc(out, func(o corev1.VolumeMount) bool { return o.MountPath == mp }); i >= 0 {
				if o := out[i]; o.Name != mm.Name || o.SubPath != mm.SubPath || o.SubPathExpr != mm.SubPathExpr {
					return nil, fmt.Errorf("containers %s and %s mount different volumes at %s: the sidecar cannot mount both there", from[mp], c.Name, mp)
				}
				continue
			}
			from[mp] = c.Name
			out = append(out, mm)
		}
	}
	return out, nil
}

// within reports whether p is dir or lies under it.
func within(p, dir string) bool {
	p, dir = path.Clean(p), path.Clean(dir)
	return p == dir || dir == "/" || strings.HasPrefix(p, dir+"/")
}

// setVolumes adds the sidecar's Secret volumes that are needed and removes
// those that are not (SSH or browse turned off), refusing a name the
// application uses for a volume of its own.
func (o Options) setVolumes(spec *corev1.PodSpec, ssh, browse bool) error {
	want := map[string]*corev1.Volume{
		restVolume: {Name: restVolume, VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
			SecretName: RestSecret, DefaultMode: ptr(int32(0o400)), Optional: ptr(true)}}},
		hooksVolume: {Name: hooksVolume, VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: o.ConfigMap},
			Items:                []corev1.KeyToPath{{Key: hooksKey, Path: hooksKey}}, Optional: ptr(true)}}},
		runVolume: {Name: runVolume, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{
			Medium: corev1.StorageMediumMemory, SizeLimit: ptr(resource.MustParse("1Mi"))}}},
		tmpVolume: {Name: tmpVolume, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{
			SizeLimit: ptr(resource.MustParse("1Gi"))}}},
		noTokenVolume: {Name: noTokenVolume, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{
			Medium: corev1.StorageMediumMemory, SizeLimit: ptr(resource.MustParse("1Ki"))}}},
	}
	if ssh {
		want[sshVolume] = secretVolume(sshVolume, o.Secret, "authorized_keys", "authorized_keys")
	}
	if browse {
		want[tokenVolume] = secretVolume(tokenVolume, o.Secret, "browse-token", "token")
	}
	for _, name := range volumes {
		for _, c := range slices.Concat(spec.Containers, spec.InitContainers) {
			if slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == name }) {
				return fmt.Errorf("container %s mounts a volume named %q, a name the sidecar uses: rename it", c.Name, name)
			}
		}
		i := slices.IndexFunc(spec.Volumes, func(v corev1.Volume) bool { return v.Name == name })
		switch v := want[name]; {
		case v != nil && i >= 0:
			spec.Volumes[i] = *v
		case v != nil:
			spec.Volumes = append(spec.Volumes, *v)
		case i >= 0:
			spec.Volumes = slices.Delete(spec.Volumes, i, i+1)
		}
	}
	return nil
}

// secretVolume projects one key of the Secret as a directory mount: the
// kubelet updates such a mount in place when the Secret changes, and
// avsidecar reloads it (a subPath mount never changes).
func secretVolume(name, secret, key, file string) *corev1.Volume {
	return &corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
		SecretName:  secret,
		DefaultMode: ptr(int32(0o400)),
		Items:       []corev1.KeyToPath{{Key: key, Path: file}},
	}}}
}

// container is the sidecar of examples/nginx.
func (o Options) container(w workload, base int, state string, mounts []corev1.VolumeMount, roots []string, ssh bool) corev1.Container {
	field := func(name, path string) corev1.EnvVar {
		return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}}
	}
	key := func(name, key string) corev1.EnvVar {
		return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: o.ConfigMap}, Key: key}}}
	}
	value := func(name, v string) corev1.EnvVar { return corev1.EnvVar{Name: name, Value: v} }

	env := []corev1.EnvVar{field("NODE_IP", "status.hostIP")}
	if w.stateful {
		// The client is the pod (nginx-0, nginx-1...), stable across
		// restarts, and avagent listens on the base plus its ordinal.
		env = append(env, field("POD_NAME", "metadata.name"), field("POD_INDEX", podIndexPath),
			value("AVAMAR_LISTEN_PORT_BASE", strconv.Itoa(base)))
	} else {
		// A Deployment's pod names change at every rollout: the client is
		// the Deployment.
		env = append(env, value("AVAMAR_CLIENT_NAME", w.name), value("AVAMAR_LISTEN_PORT", strconv.Itoa(base)))
	}
	env = append(env, key("AVAMAR_SERVER", "server"), key("AVAMAR_DOMAIN", "domain"))
	if len(roots) > 0 {
		env = append(env, value("AVSIDECAR_BROWSE_ROOTS", strings.Join(roots, ",")), value("AVSIDECAR_BROWSE_TOKEN_FILE", tokenFile))
	}
	env = append(env, value("AVSIDECAR_SSH_ADDR", o.SSHAddr), value("AVSIDECAR_SHUTDOWN_TIMEOUT", shutdownTimeout))
	// Backup freshness, on when the ConfigMap's rest-url is set; hooks
	// from its hooks.json.
	restURL := key("AVAMAR_REST_URL", restURLKey)
	restURL.ValueFrom.ConfigMapKeyRef.Optional = ptr(true)
	env = append(env, restURL, value("AVAMAR_REST_CREDENTIALS_FILE", restDir),
		value("AVSIDECAR_HOOKS_FILE", hooksDir+"/"+hooksKey))

	ports := []corev1.ContainerPort{{Name: HTTPPortName, ContainerPort: httpPort}}
	vm := slices.Clone(mounts)
	vm = append(vm,
		corev1.VolumeMount{Name: state, SubPath: prefixSub, MountPath: prefixDir},
		corev1.VolumeMount{Name: state, SubPath: stateSub, MountPath: stateDir},
		corev1.VolumeMount{Name: state, SubPath: initSub, MountPath: initDir})
	if ssh {
		p, _ := sshPort(o.SSHAddr) // checked by Options.check
		ports = append(ports, corev1.ContainerPort{Name: sshPortName, ContainerPort: p})
		vm = append(vm, corev1.VolumeMount{Name: sshVolume, MountPath: sshDir, ReadOnly: true})
	}
	if len(roots) > 0 {
		vm = append(vm, corev1.VolumeMount{Name: tokenVolume, MountPath: tokenDir, ReadOnly: true})
	}
	// With the root filesystem read-only, the only places written outside
	// the persistent volume: the hooks' socket and temporary files.
	vm = append(vm,
		corev1.VolumeMount{Name: restVolume, MountPath: restDir, ReadOnly: true},
		corev1.VolumeMount{Name: hooksVolume, MountPath: hooksDir, ReadOnly: true},
		corev1.VolumeMount{Name: runVolume, MountPath: runDir},
		corev1.VolumeMount{Name: tmpVolume, MountPath: tmpDir},
		corev1.VolumeMount{Name: noTokenVolume, MountPath: tokenPath, ReadOnly: true})

	probe := func(path string) *corev1.Probe {
		return &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: intstr.FromString(HTTPPortName)}}}
	}
	// Up while the first start installs the RPM: 5s x 60 = 5 minutes.
	// Left out of a native sidecar, where it would hold back the
	// application's start for the install: a backup outage must not
	// become an application outage.
	var startup *corev1.Probe
	if !o.Native {
		startup = probe("/startupz")
		startup.PeriodSeconds, startup.FailureThreshold = 5, 60
	}
	// Restarts the container only when the supervisor hangs: avagent's
	// crashes are handled inside. No readiness probe: an unregistered
	// backup client must not take the application out of its Services;
	// the alerts of examples/monitoring watch avsidecar_ready instead.
	live := probe("/livez")
	live.PeriodSeconds, live.TimeoutSeconds, live.FailureThreshold = 10, 3, 3

	return corev1.Container{
		Name:          ContainerName,
		Image:         o.Image,
		Env:           env,
		Ports:         ports,
		StartupProbe:  startup,
		LivenessProbe: live,
		VolumeMounts:  vm,
		Resources:     resources(),
		// kubectl describe shows the last lines of the log when the
		// sidecar exits without a termination message.
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
		SecurityContext:          securityContext(),
	}
}

func resources() corev1.ResourceRequirements {
	return corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("128Mi")},
		// No CPU limit: throttling a backup makes it longer, not safer.
		Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1Gi")},
	}
}

// securityContext is root with only the capabilities a file-level backup
// client needs (examples/nginx/README.md, "Security").
func securityContext() *corev1.SecurityContext {
	return &corev1.SecurityContext{
		RunAsUser:                ptr(int64(0)),
		RunAsNonRoot:             ptr(false),
		AllowPrivilegeEscalation: ptr(false),
		ReadOnlyRootFilesystem:   ptr(true),
		SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		Capabilities: &corev1.Capabilities{
			Drop: []corev1.Capability{"ALL"},
			Add:  []corev1.Capability{"CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID"},
		},
	}
}

// sidecarLabels are the labels of what inject makes beside w.
func sidecarLabels(w workload) map[string]string {
	l := map[string]string{}
	for k, v := range w.labels {
		l[k] = v
	}
	l[componentLabel] = componentBackup
	return l
}

// services are the NodePort Services where the Avamar server reaches each
// pod's avagent: the server dials NODE_IP at the agent's listen port, so
// each pod gets its own port, the same number inside and on the node.
func (o Options) services(w workload, base int) ([]*corev1.Service, error) {
	if len(w.selector) == 0 {
		return nil, fmt.Errorf("spec.selector has no matchLabels, which the avagent Services select on")
	}
	svc := func(name string, port int32, podName string) *corev1.Service {
		sel := map[string]string{}
		for k, v := range w.selector {
			sel[k] = v
		}
		if podName != "" {
			sel[podNameLabel] = podName
		}
		return &corev1.Service{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: w.namespace, Labels: sidecarLabels(w)},
			Spec: corev1.ServiceSpec{
				Type: corev1.ServiceTypeNodePort,
				// The node that receives the connection holds the pod: no
				// extra hop, no source NAT.
				ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyLocal,
				// Registration makes the server call the agent back before
				// the sidecar is ready.
				PublishNotReadyAddresses: true,
				Selector:                 sel,
				Ports:                    []corev1.ServicePort{{Name: "avagent", Port: port, TargetPort: intstr.FromInt32(port), NodePort: port}},
			},
		}
	}
	if !w.stateful {
		return []*corev1.Service{svc(w.name+"-avagent", int32(base), "")}, nil
	}
	out := make([]*corev1.Service, w.replicas)
	for i := range out {
		pod := w.name + "-" + strconv.Itoa(i)
		out[i] = svc(pod+"-avagent", int32(base+i), pod)
	}
	return out, nil
}

// defaultHooks is the ConfigMap's hooks.json: flush written files to the
// volumes before a backup reads them, harmless for any application, and
// never failing the backup. An application that must be quiesced adds its
// own hooks (README.md, "Backup hooks").
const defaultHooks = `{
  "pre": [
    {"name": "sync", "command": ["/bin/sync"], "timeout": "1m", "on_error": "continue"}
  ],
  "post": []
}
`

// configMap holds the server and domain the workloads of a namespace read,
// the REST API's URL (empty: the freshness check off) and the hooks.
func (o Options) configMap(w workload) *corev1.ConfigMap {
	return &corev1.ConfigMap{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: metav1.ObjectMeta{Name: o.ConfigMap, Namespace: w.namespace, Labels: sidecarLabels(w)},
		Data:       map[string]string{"server": o.Server, "domain": o.Domain, restURLKey: "", hooksKey: defaultHooks},
	}
}
