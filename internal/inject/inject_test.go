package inject

import (
	"bytes"
	"errors"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

// hasLine reports whether one of lines contains s.
func hasLine(lines []string, s string) bool {
	return slices.ContainsFunc(lines, func(l string) bool { return strings.Contains(l, s) })
}

func read(t *testing.T, path string) Input {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return Input{Name: path, Data: b}
}

func run(t *testing.T, o Options, in ...Input) Result {
	t.Helper()
	res, err := Inject(in, o)
	if err != nil {
		t.Fatalf("inject: %v", err)
	}
	return res
}

// workloads decodes a result and returns its documents by kind/name.
func docsOf(t *testing.T, out []byte) []document {
	t.Helper()
	d, err := decode(Input{Name: "output", Data: out})
	if err != nil {
		t.Fatalf("the output does not decode: %v\n%s", err, out)
	}
	return d
}

func podSpec(t *testing.T, docs []document, name string) *corev1.PodSpec {
	t.Helper()
	for _, d := range docs {
		switch o := d.obj.(type) {
		case *appsv1.StatefulSet:
			if o.Name == name {
				return &o.Spec.Template.Spec
			}
		case *appsv1.Deployment:
			if o.Name == name {
				return &o.Spec.Template.Spec
			}
		}
	}
	t.Fatalf("no workload %s in the output", name)
	return nil
}

func sidecarOf(t *testing.T, spec *corev1.PodSpec) corev1.Container {
	t.Helper()
	var found []corev1.Container
	for _, c := range slices.Concat(spec.Containers, spec.InitContainers) {
		if c.Name == ContainerName {
			found = append(found, c)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d sidecar containers, want 1", len(found))
	}
	return found[0]
}

func env(c corev1.Container) map[string]string {
	out := map[string]string{}
	for _, e := range c.Env {
		v := e.Value
		if f := e.ValueFrom; f != nil {
			switch {
			case f.FieldRef != nil:
				v = "field:" + f.FieldRef.FieldPath
			case f.ConfigMapKeyRef != nil:
				v = "configmap:" + f.ConfigMapKeyRef.Name + "/" + f.ConfigMapKeyRef.Key
			}
		}
		out[e.Name] = v
	}
	return out
}

func mounts(c corev1.Container) []string {
	var out []string
	for _, m := range c.VolumeMounts {
		s := m.Name + ":" + m.SubPath + "@" + m.MountPath
		if m.ReadOnly {
			s += ":ro"
		}
		out = append(out, s)
	}
	return out
}

// TestInjectTwiceIsOnce: injecting inject's own output changes nothing, byte
// for byte, for each kind of workload and each mode.
func TestInjectTwiceIsOnce(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []Input
		o    Options
	}{
		{"the bare nginx example", []Input{read(t, bareNginx)}, exampleOptions},
		{"several volumes", []Input{read(t, "testdata/postgres.yaml")}, Options{Image: "site:1", Volume: "data"}},
		{"a deployment", []Input{read(t, "testdata/deployment.yaml")}, Options{Image: "site:1", Server: "mcs.example.com:28101", Domain: "/k8s"}},
		{"native sidecar", []Input{read(t, bareNginx)}, Options{Image: "site:1", Native: true}},
		{"ssh and browse off", []Input{read(t, bareNginx)}, Options{Image: "site:1", SSHAddr: "off", BrowseRoots: []string{}}},
		{"the example itself, which has the sidecar", []Input{read(t, exampleDir+"/statefulset.yaml"), read(t, exampleDir+"/service.yaml")}, exampleOptions},
	} {
		t.Run(tc.name, func(t *testing.T) {
			once := run(t, tc.o, tc.in...)
			twice := run(t, tc.o, Input{Name: "once", Data: once.Output})
			if diff := cmp.Diff(string(once.Output), string(twice.Output)); diff != "" {
				t.Errorf("injecting twice differs from once (-once +twice):\n%s", diff)
			}
			if len(once.Output) == 0 || !bytes.Contains(once.Output, []byte("name: "+ContainerName+"\n")) {
				t.Errorf("no sidecar in the output:\n%s", once.Output)
			}
		})
	}
}

// TestInjectReplacesTheSidecar: an example that already has a (hand-made,
// older) sidecar comes out as if the bare application had been injected:
// the old container, volumes and per-replica Services are replaced, not
// doubled, and the application's own Service passes through.
func TestInjectReplacesTheSidecar(t *testing.T) {
	fromExample := objects(t, Input{Name: "example", Data: run(t, exampleOptions, read(t, exampleDir+"/statefulset.yaml"), read(t, exampleDir+"/service.yaml")).Output})
	fromBare := objects(t, Input{Name: "bare", Data: run(t, exampleOptions, read(t, bareNginx)).Output})
	headless := "v1/Service /nginx"
	if _, ok := fromExample[headless]; !ok {
		t.Errorf("the application's own Service %s did not pass through", headless)
	}
	delete(fromExample, headless)
	if diff := cmp.Diff(fromBare, fromExample); diff != "" {
		t.Errorf("re-injecting the example differs from injecting the bare application (-bare +example):\n%s", diff)
	}
	// New options reach an injected workload: the image, and the scale.
	again := string(run(t, Options{Image: "site:2"}, Input{Name: "x", Data: bytes.Replace(run(t, exampleOptions, read(t, bareNginx)).Output, []byte("replicas: 2"), []byte("replicas: 1"), 1)}).Output)
	if !strings.Contains(again, "image: site:2") || strings.Contains(again, "avsidecar-site") {
		t.Errorf("the new image did not replace the old one")
	}
	if !strings.Contains(again, "name: nginx-0-avagent") || strings.Contains(again, "nginx-1-avagent") {
		t.Errorf("scaled to 1 replica: want only nginx-0-avagent:\n%s", again)
	}
	if strings.Count(again, "kind: ConfigMap") != 1 || !strings.Contains(again, "server: avamar.example.com") {
		t.Errorf("without --server the ConfigMap is the operator's: it must pass through as it was")
	}
}

// TestInjectSeveralVolumes: the client's state goes on the chosen claim,
// the application's mounts of every claim are mirrored (once each, at the
// same paths, writable) and are the browse roots; configMap and emptyDir
// volumes are not; the longer grace period stays; 12 replicas get 12
// ports past 31009.
func TestInjectSeveralVolumes(t *testing.T) {
	in := read(t, "testdata/postgres.yaml")
	_, err := Inject([]Input{in}, Options{Image: "site:1"})
	if err == nil || !strings.Contains(err.Error(), "several persistent volumes (data, wal): choose the one for the Avamar client with --volume") {
		t.Fatalf("without --volume: %v", err)
	}
	res := run(t, Options{Image: "site:1", Volume: "data"}, in)
	docs := docsOf(t, res.Output)
	spec := podSpec(t, docs, "postgres")
	c := sidecarOf(t, spec)
	want := []string{
		"data:pgdata@/var/lib/postgresql/data", "wal:@/var/lib/postgresql/wal",
		"data:avamar@/usr/local/avamar", "data:avamar-state@/var/avamar", "data:init.d@/etc/init.d",
		"ssh-keys:@/etc/avsidecar/ssh:ro", "browse-token:@/etc/avsidecar/browse:ro",
		"avamar-rest:@/etc/avsidecar/rest:ro", "avamar-hooks:@/etc/avsidecar/hooks:ro",
		"avamar-run:@/run/avsidecar", "avamar-tmp:@/tmp", "avamar-no-token:@" + tokenPath + ":ro",
	}
	if diff := cmp.Diff(want, mounts(c)); diff != "" {
		t.Errorf("mounts (-want +got):\n%s", diff)
	}
	if e := env(c); e["AVSIDECAR_BROWSE_ROOTS"] != "/var/lib/postgresql/data,/var/lib/postgresql/wal" {
		t.Errorf("browse roots %q", e["AVSIDECAR_BROWSE_ROOTS"])
	}
	if *spec.TerminationGracePeriodSeconds != 120 {
		t.Errorf("grace period %d: a longer one must stay", *spec.TerminationGracePeriodSeconds)
	}
	if len(spec.InitContainers) != 1 || len(spec.Containers) != 3 || spec.Containers[2].Name != ContainerName {
		t.Errorf("containers: the sidecar goes last, the init container stays")
	}
	var ports []string
	for _, d := range docs {
		if s, ok := d.obj.(*corev1.Service); ok && strings.HasSuffix(s.Name, "-avagent") {
			p := s.Spec.Ports[0]
			if s.Namespace != "db" || p.Port != p.NodePort || p.TargetPort.IntVal != p.Port ||
				s.Spec.Selector[podNameLabel]+"-avagent" != s.Name {
				t.Errorf("Service %s: %+v", s.Name, s.Spec)
			}
			ports = append(ports, strconv.Itoa(int(p.NodePort)))
		}
	}
	if len(ports) != 12 || ports[10] != "31010" || ports[11] != "31011" {
		t.Errorf("ports %v, want 31000...31011", ports)
	}
	if !strings.Contains(string(res.Output), "# The governing Service: passed through as it is, comments and all.") {
		t.Errorf("the governing Service did not pass through with its comment")
	}
	// The wal volume, mounted whole, may hold the client: said, not refused.
	res = run(t, Options{Image: "site:1", Volume: "wal"}, in)
	if !hasLine(res.Notes, `volume "wal" is mounted whole at /var/lib/postgresql/wal`) {
		t.Errorf("notes %q", res.Notes)
	}
	// Browse roots of the operator's choosing, inside the mirrored mounts.
	res = run(t, Options{Image: "site:1", Volume: "data", BrowseRoots: []string{"/var/lib/postgresql/data/base"}}, in)
	if e := env(sidecarOf(t, podSpec(t, docsOf(t, res.Output), "postgres"))); e["AVSIDECAR_BROWSE_ROOTS"] != "/var/lib/postgresql/data/base" {
		t.Errorf("browse roots %q", e["AVSIDECAR_BROWSE_ROOTS"])
	}
}

// TestInjectDeployment: a Deployment's pods change names, so the client is
// named after the Deployment, listens on the base port, and one NodePort
// Service reaches it; with --server the ConfigMap comes first.
func TestInjectDeployment(t *testing.T) {
	res := run(t, Options{Image: "site:1", Server: "mcs.example.com", ListenPortBase: 30500}, read(t, "testdata/deployment.yaml"))
	docs := docsOf(t, res.Output)
	var kinds []string
	for _, d := range docs {
		kinds = append(kinds, d.gvk+" "+d.name)
	}
	if diff := cmp.Diff([]string{"v1/ConfigMap avamar", "apps/v1/Deployment wiki", "v1/Service wiki-avagent", "v1/PersistentVolumeClaim wiki-pages"}, kinds); diff != "" {
		t.Errorf("documents (-want +got):\n%s", diff)
	}
	c := sidecarOf(t, podSpec(t, docs, "wiki"))
	e := env(c)
	if e["AVAMAR_CLIENT_NAME"] != "wiki" || e["AVAMAR_LISTEN_PORT"] != "30500" || e["POD_INDEX"] != "" || e["AVAMAR_SERVER"] != "configmap:avamar/server" {
		t.Errorf("env %v", e)
	}
	if diff := cmp.Diff([]string{"pages:@/var/www/data", "pages:avamar@/usr/local/avamar", "pages:avamar-state@/var/avamar", "pages:init.d@/etc/init.d",
		"ssh-keys:@/etc/avsidecar/ssh:ro", "browse-token:@/etc/avsidecar/browse:ro", "avamar-rest:@/etc/avsidecar/rest:ro",
		"avamar-hooks:@/etc/avsidecar/hooks:ro", "avamar-run:@/run/avsidecar", "avamar-tmp:@/tmp", "avamar-no-token:@" + tokenPath + ":ro"}, mounts(c)); diff != "" {
		t.Errorf("mounts (-want +got):\n%s", diff)
	}
	s := docs[2].obj.(*corev1.Service)
	if s.Spec.Selector["app"] != "wiki" || len(s.Spec.Selector) != 1 || s.Spec.Ports[0].NodePort != 30500 {
		t.Errorf("Service %+v", s.Spec)
	}
	cm := docs[0].obj.(*corev1.ConfigMap)
	if cm.Data["server"] != "mcs.example.com" || cm.Data["domain"] != "/clients" || cm.Data["rest-url"] != "" || !strings.Contains(cm.Data["hooks.json"], `"/bin/sync"`) || cm.Labels["app.kubernetes.io/component"] != "backup" {
		t.Errorf("ConfigMap %+v", cm)
	}
	if !hasLine(res.Notes, `volume "pages" is mounted whole`) || !hasLine(res.Notes, "avagent ports 30500, the NodePorts of Service wiki-avagent (new)") ||
		!hasLine(res.Notes, "document 2 (PersistentVolumeClaim wiki-pages): passed through: v1/PersistentVolumeClaim is not a workload inject adds the sidecar to") {
		t.Errorf("notes %q", res.Notes)
	}
	if len(res.Warnings) != 0 {
		t.Errorf("warnings %q: a Recreate Deployment of one replica has none", res.Warnings)
	}
}

// TestInjectNative: a native sidecar is an init container that restarts
// always, without the startup probe that would hold the application back
// for the install; switching modes moves it rather than copying it.
func TestInjectNative(t *testing.T) {
	native := run(t, Options{Image: "site:1", Native: true}, read(t, bareNginx))
	spec := podSpec(t, docsOf(t, native.Output), "nginx")
	if len(spec.Containers) != 1 || len(spec.InitContainers) != 1 {
		t.Fatalf("native: %d containers, %d init containers", len(spec.Containers), len(spec.InitContainers))
	}
	c := spec.InitContainers[0]
	if c.RestartPolicy == nil || *c.RestartPolicy != corev1.ContainerRestartPolicyAlways || c.StartupProbe != nil || c.LivenessProbe == nil || c.ReadinessProbe != nil {
		t.Errorf("native sidecar: restartPolicy %v, probes startup %v liveness %v readiness %v", c.RestartPolicy, c.StartupProbe, c.LivenessProbe, c.ReadinessProbe)
	}
	regular := run(t, Options{Image: "site:1"}, Input{Name: "native", Data: native.Output})
	spec = podSpec(t, docsOf(t, regular.Output), "nginx")
	if len(spec.Containers) != 2 || len(spec.InitContainers) != 0 || spec.Containers[1].RestartPolicy != nil || spec.Containers[1].StartupProbe == nil {
		t.Errorf("back to a regular container: %d containers, %d init containers", len(spec.Containers), len(spec.InitContainers))
	}
}

// TestInjectOff: SSH and browse off leave out their variables, ports and
// Secret volumes, including those an earlier injection added; the REST
// credentials, the hooks and the writable directories stay.
func TestInjectOff(t *testing.T) {
	on := run(t, Options{Image: "site:1"}, read(t, bareNginx))
	off := run(t, Options{Image: "site:1", SSHAddr: "off", BrowseRoots: []string{}}, Input{Name: "on", Data: on.Output})
	spec := podSpec(t, docsOf(t, off.Output), "nginx")
	c := sidecarOf(t, spec)
	e := env(c)
	if e["AVSIDECAR_SSH_ADDR"] != "off" || e["AVSIDECAR_BROWSE_ROOTS"] != "" || e["AVSIDECAR_BROWSE_TOKEN_FILE"] != "" {
		t.Errorf("env %v", e)
	}
	var vols []string
	for _, v := range spec.Volumes {
		vols = append(vols, v.Name)
	}
	if diff := cmp.Diff([]string{restVolume, hooksVolume, runVolume, tmpVolume, noTokenVolume}, vols); diff != "" || len(c.Ports) != 1 {
		t.Errorf("volumes (-want +got):\n%s\nports %v: want the HTTP port only", diff, c.Ports)
	}
}

// noClaims is a StatefulSet without a persistent volume.
const noClaims = `apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: cache
spec:
  serviceName: cache
  selector:
    matchLabels: {app: cache}
  template:
    metadata:
      labels: {app: cache}
    spec:
      containers:
        - name: redis
          image: redis:7
`

// TestInjectRefuses: every bad input or option is an error that says what
// is wrong and where, and nothing is written.
func TestInjectRefuses(t *testing.T) {
	bare := string(read(t, bareNginx).Data)
	edit := func(old, new string) string {
		if strings.Count(bare, old) != 1 {
			t.Fatalf("%q is not once in the bare example: fix the table", old)
		}
		return strings.Replace(bare, old, new, 1)
	}
	ok := Options{Image: "site:1"}
	for _, tc := range []struct {
		name string
		in   string
		o    Options
		want string
	}{
		{"unknown field, with its path", edit("      containers:\n", "      contaners:\n"), ok, `unknown field "spec.template.spec.contaners"`},
		{"unknown field in a list", edit("          image: nginx:1.27\n", "          image: nginx:1.27\n          imagePullPolicyy: Always\n"), ok, `unknown field "spec.template.spec.containers[0].imagePullPolicyy"`},
		{"field in the wrong case", edit("  replicas: 2", "  Replicas: 2"), ok, `unknown field "spec.Replicas"`},
		{"duplicate field", edit("  replicas: 2\n", "  replicas: 2\n  replicas: 3\n"), ok, `"replicas" already set`},
		{"wrong type", edit("  replicas: 2", "  replicas: two"), ok, "cannot unmarshal string into Go struct field StatefulSetSpec.spec.replicas of type int32"},
		{"not YAML", "kind: [StatefulSet\n", ok, "document 1: not valid YAML"},
		{"no name", edit("  name: nginx\n  labels:", "  labels:"), ok, "document 1 (StatefulSet ): metadata.name is required"},
		{"no apiVersion", edit("apiVersion: apps/v1\n", ""), ok, `document 1: apiVersion and kind are required (got "", "StatefulSet")`},
		{"no persistent volume, named by --only", noClaims, Options{Image: "site:1", Only: []string{"sts/cache"}}, "(StatefulSet cache): no persistent volume"},
		{"--only names nothing", bare, Options{Image: "site:1", Only: []string{"deploy/nginx"}}, "--only deployment/nginx: no such workload in the input"},
		{"--only of another kind", bare, Options{Image: "site:1", Only: []string{"daemonset/nginx"}}, `--only "daemonset/nginx" must be KIND/NAME`},
		{"an unknown --volume", bare, Options{Image: "site:1", Volume: "logs"}, `--volume "logs" is not a persistent volume of this StatefulSet (it has data)`},
		{"application data over the sidecar's /etc", edit("mountPath: /usr/share/nginx/html", "mountPath: /etc"), ok, "container nginx mounts volume \"data\" at /etc: mounted there in the sidecar too, it would cover /etc/init.d"},
		{"application data at the client's prefix", edit("mountPath: /usr/share/nginx/html", "mountPath: /usr/local/avamar/x"), ok, "would cover /usr/local/avamar"},
		{"application uses the client's subPath", edit("subPath: html", "subPath: avamar"), ok, `the application uses subPath "avamar"`},
		{"application volume named like the sidecar's", edit("            - name: data\n              subPath: html\n", "            - name: ssh-keys\n              subPath: html\n") + "", ok, `container nginx mounts a volume named "ssh-keys"`},
		{"browse root outside the volumes", bare, Options{Image: "site:1", BrowseRoots: []string{"/srv"}}, "browse root /srv is on no volume"},
		{"a Deployment of several replicas", strings.Replace(string(read(t, "testdata/deployment.yaml").Data), "replicas: 1", "replicas: 3", 1), ok, "3 replicas: a Deployment's pods have no stable names"},
		{"a selector without matchLabels", edit("    matchLabels:\n      app.kubernetes.io/name: nginx\n", "    matchExpressions:\n      - {key: app.kubernetes.io/name, operator: In, values: [nginx]}\n"), ok, "spec.selector has no matchLabels"},
		{"too many replicas for the NodePort range", edit("replicas: 2", "replicas: 1800"), ok, "no free block of 1800 ports from 31000 to 32767, the last NodePort: lower --listen-port-base"},
		{"no image", bare, Options{}, "--image is required"},
		{"a base outside the NodePort range", bare, Options{Image: "site:1", ListenPortBase: 28002}, "--listen-port-base 28002 must be in the NodePort range 30000-32767"},
		{"a domain without a server", bare, Options{Image: "site:1", Domain: "/x"}, "--domain needs --server"},
		{"a relative domain", bare, Options{Image: "site:1", Server: "mcs", Domain: "clients"}, `--domain "clients" must be an absolute Avamar domain`},
		{"a bad server", bare, Options{Image: "site:1", Server: "--mcs"}, `--server "--mcs" is not HOST or HOST:PORT`},
		{"a bad SSH address", bare, Options{Image: "site:1", SSHAddr: "2222"}, `--ssh-addr "2222" must be :PORT, HOST:PORT or off`},
		{"a relative browse root", bare, Options{Image: "site:1", BrowseRoots: []string{"html"}}, `--browse-roots entry "html" must be an absolute path`},
		{"a bad ConfigMap name", bare, Options{Image: "site:1", ConfigMap: "Avamar"}, `--configmap "Avamar" is not a Kubernetes name`},
		{"several problems at once", bare, Options{Image: "a b", ListenPortBase: 1}, "--image \"a b\" contains white space; --listen-port-base 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := Inject([]Input{{Name: "app.yaml", Data: []byte(tc.in)}}, tc.o)
			if err == nil {
				t.Fatalf("accepted; output:\n%s", res.Output)
			}
			if !errors.Is(err, ErrInput) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q, want one containing %q (and matching ErrInput)", err, tc.want)
			}
			if res.Output != nil {
				t.Errorf("an error with output")
			}
		})
	}
}

// TestInjectServiceAccountToken: the application's token setting is kept,
// whatever it is; the sidecar, where SSH logins land, always has an empty
// directory over the token's path, which keeps the API server from
// mounting the token there.
func TestInjectServiceAccountToken(t *testing.T) {
	for _, setting := range []string{"", "true", "false"} {
		in := read(t, bareNginx)
		if setting != "" {
			in.Data = bytes.Replace(in.Data, []byte("      containers:\n"), []byte("      automountServiceAccountToken: "+setting+"\n      containers:\n"), 1)
		}
		res := run(t, Options{Image: "site:1"}, in)
		spec := podSpec(t, docsOf(t, res.Output), "nginx")
		got := ""
		if a := spec.AutomountServiceAccountToken; a != nil {
			got = strconv.FormatBool(*a)
		}
		if got != setting {
			t.Errorf("automountServiceAccountToken %q became %q: it is the application's", setting, got)
		}
		c := sidecarOf(t, spec)
		i := slices.IndexFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.MountPath == tokenPath })
		if i < 0 || c.VolumeMounts[i].Name != noTokenVolume || !c.VolumeMounts[i].ReadOnly {
			t.Fatalf("automount %q: the sidecar has no read-only mount of %s at %s: %v", setting, noTokenVolume, tokenPath, mounts(c))
		}
		v := spec.Volumes[slices.IndexFunc(spec.Volumes, func(v corev1.Volume) bool { return v.Name == noTokenVolume })]
		if v.EmptyDir == nil {
			t.Errorf("volume %s is not an emptyDir: %+v", noTokenVolume, v.VolumeSource)
		}
		for _, app := range spec.Containers {
			if app.Name != ContainerName && slices.ContainsFunc(app.VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == noTokenVolume }) {
				t.Errorf("the application's container %s lost its token", app.Name)
			}
		}
	}
	// The sidecar's own directories cannot take an application's mount.
	tmp := bytes.Replace(read(t, bareNginx).Data, []byte("mountPath: /usr/share/nginx/html"), []byte("mountPath: /tmp"), 1)
	if _, err := Inject([]Input{{Name: "tmp", Data: tmp}}, Options{Image: "site:1"}); err == nil || !strings.Contains(err.Error(), "it would cover /tmp, which the sidecar needs") {
		t.Errorf("an application mount at /tmp: %v", err)
	}
}
