package examples

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
)

// TestManifests decodes every manifest under examples/ strictly and
// resolves its cross-references.
func TestManifests(t *testing.T) {
	objs, err := loadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	// The checker must have had something to check: the nginx example's
	// objects, all decoded into their API types.
	want := map[string]bool{"StatefulSet/nginx": false, "Service/nginx": false, "Service/nginx-0-avagent": false,
		"Service/nginx-1-avagent": false, "Secret/avsidecar": false, "ConfigMap/avamar": false}
	for _, o := range objs {
		if _, ok := want[o.kind+"/"+o.name]; ok && o.typed != nil {
			want[o.kind+"/"+o.name] = true
		}
	}
	for k, found := range want {
		if !found {
			t.Errorf("%s not found under examples/", k)
		}
	}
	if p := check(objs); len(p) > 0 {
		t.Errorf("the examples have %d problems:\n%s", len(p), render(p))
	}
}

// TestCheckerCatchesBrokenManifests breaks the nginx example one way at a
// time: each must be caught, or the checker proves nothing.
func TestCheckerCatchesBrokenManifests(t *testing.T) {
	files := map[string]string{}
	for _, f := range exampleFiles {
		b, err := os.ReadFile(filepath.Join("nginx", f))
		if err != nil {
			t.Fatal(err)
		}
		files[f] = string(b)
	}
	prometheusRule := `apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: avsidecar
spec:
  groups: []
`
	for _, tc := range []struct {
		name      string
		file      string
		old, new  string
		extra     string // a document added to the set
		wantError string // "" = must pass
	}{
		{name: "unchanged", wantError: ""},
		{name: "a custom resource is accepted", extra: prometheusRule, wantError: ""},
		{name: "a custom resource without a name", extra: strings.Replace(prometheusRule, "  name: avsidecar\n", "", 1), wantError: "metadata.name are required"},
		{name: "not YAML", extra: "kind: [Service\n", wantError: "not valid YAML"},
		{name: "unknown core kind", file: "configmap.yaml", old: "kind: ConfigMap", new: "kind: ConfigMaps", wantError: "unknown kind v1/ConfigMaps"},
		{name: "unknown field", file: "statefulset.yaml", old: "serviceName: nginx", new: "serviceNam: nginx", wantError: `unknown field "serviceNam"`},
		{name: "duplicate field", file: "configmap.yaml", old: "  domain: /clients\n", new: "  domain: /clients\n  domain: /other\n", wantError: "already set"},
		{name: "wrong field type", file: "statefulset.yaml", old: "replicas: 2", new: "replicas: two", wantError: "cannot unmarshal"},
		{name: "selector misses the template", file: "statefulset.yaml", old: "    matchLabels:\n      app.kubernetes.io/name: nginx", new: "    matchLabels:\n      app.kubernetes.io/name: web", wantError: "does not match the template labels"},
		{name: "serviceName names nothing", file: "statefulset.yaml", old: "serviceName: nginx", new: "serviceName: web", wantError: `spec.serviceName "web" names no Service`},
		{name: "governing Service not headless", file: "service.yaml", old: "  clusterIP: None\n", new: "", wantError: "not a headless Service"},
		{name: "Service selects nothing", file: "service.yaml", old: "statefulset.kubernetes.io/pod-name: nginx-1", new: "statefulset.kubernetes.io/pod-name: nginx1", wantError: "selects no pod"},
		{name: "Service targets a missing port", file: "service.yaml", old: "targetPort: http", new: "targetPort: https", wantError: `targets https, which pod nginx-0 does not serve`},
		{name: "per-pod Service targets the wrong ordinal's port", file: "service.yaml", old: "      targetPort: 31001\n", new: "      targetPort: 31000\n", wantError: "targets 31000, which pod nginx-1 does not serve"},
		{name: "NodePort allocated twice", file: "service.yaml", old: "nodePort: 31001", new: "nodePort: 31000", wantError: "nodePort 31000 is also allocated to Service nginx-0-avagent"},
		{name: "NodePort differs from the listen port", file: "service.yaml", old: "nodePort: 31001", new: "nodePort: 31101", wantError: "nodePort 31101 differs from avagent's listen port 31001"},
		{name: "agent Service only ready endpoints", file: "service.yaml", old: "  publishNotReadyAddresses: true\n  selector:\n    app.kubernetes.io/name: nginx\n    statefulset.kubernetes.io/pod-name: nginx-1", new: "  selector:\n    app.kubernetes.io/name: nginx\n    statefulset.kubernetes.io/pod-name: nginx-1", wantError: "needs publishNotReadyAddresses"},
		{name: "a replica without its Service", file: "statefulset.yaml", old: "replicas: 2", new: "replicas: 3", wantError: "pod nginx-2: no NodePort Service publishes avagent's listen port 31002"},
		{name: "env reference to a later variable", file: "statefulset.yaml", old: "value: /etc/avsidecar/rest\n", new: "value: $(REST_DIR)\n", wantError: "refers to $(REST_DIR), which is not defined before it"},
		{name: "listen port base not a number", file: "statefulset.yaml", old: `value: "31000"`, new: `value: "31k"`, wantError: `AVAMAR_LISTEN_PORT_BASE "31k" is not a port number`},
		{name: "listen port base and a fixed port", file: "statefulset.yaml", old: "            - name: AVAMAR_LISTEN_PORT_BASE\n", new: "            - name: AVAMAR_LISTEN_PORT\n              value: \"31000\"\n            - name: AVAMAR_LISTEN_PORT_BASE\n", wantError: "AVAMAR_LISTEN_PORT and AVAMAR_LISTEN_PORT_BASE are both set"},
		{name: "client state off the volume", file: "statefulset.yaml", old: "            - name: data\n              subPath: avamar-state\n              mountPath: /var/avamar\n", new: "            - name: avamar-tmp\n              mountPath: /var/avamar\n", wantError: "/var/avamar, where the client keeps its registration, is not on a PersistentVolume"},
		{name: "read-only root without the hooks socket's directory", file: "statefulset.yaml", old: "            - name: avamar-run\n              mountPath: /run/avsidecar\n", new: "", wantError: "AVSIDECAR_HOOKS_SOCKET /run/avsidecar is on the read-only root filesystem"},
		{name: "read-only root without /tmp", file: "statefulset.yaml", old: "            - name: avamar-tmp\n              mountPath: /tmp\n", new: "", wantError: "temporary files /tmp is on the read-only root filesystem"},
		{name: "ServiceAccount token mounted", file: "statefulset.yaml", old: "mountPath: /var/run/secrets/kubernetes.io/serviceaccount\n", new: "mountPath: /var/run/secrets/kubernetes.io/other\n", wantError: "mounts its ServiceAccount token in container avamar"},
		{name: "termination message from the file only", file: "statefulset.yaml", old: "terminationMessagePolicy: FallbackToLogsOnError", new: "terminationMessagePolicy: File", wantError: `terminationMessagePolicy "File"`},
		{name: "NetworkPolicy shuts the second replica's agent port", file: "networkpolicy.yaml", old: "          endPort: 31009\n", new: "", wantError: "pod nginx-1: no NetworkPolicy that selects it allows port 31001, where Service nginx-1-avagent sends"},
		{name: "NetworkPolicy shuts the site", file: "networkpolicy.yaml", old: "          port: 80\n", new: "          port: 8080\n", wantError: "pod nginx-0: no NetworkPolicy that selects it allows port 80, where Service nginx sends"},
		{name: "PodDisruptionBudget selects nothing", file: "pdb.yaml", old: "      app.kubernetes.io/name: nginx\n  # A pod", new: "      app.kubernetes.io/name: web\n  # A pod", wantError: "selects no pod"},
		{name: "REST credentials not mounted", file: "statefulset.yaml", old: "              mountPath: /etc/avsidecar/rest\n", new: "              mountPath: /etc/avsidecar/rest-credentials\n", wantError: "AVAMAR_REST_CREDENTIALS_FILE /etc/avsidecar/rest is not in a mounted Secret"},
		{name: "PodDisruptionBudget without a number", file: "pdb.yaml", old: "  maxUnavailable: 1\n", new: "", wantError: "neither minAvailable nor maxUnavailable"},
		{name: "downward API label that pods lack", file: "statefulset.yaml", old: "metadata.labels['apps.kubernetes.io/pod-index']", new: "metadata.labels['pod-index']", wantError: `has no label "pod-index"`},
		{name: "NODE_IP from the pod IP", file: "statefulset.yaml", old: "fieldPath: status.hostIP", new: "fieldPath: status.podIP", wantError: "NODE_IP must come from the downward API status.hostIP"},
		{name: "ConfigMap key missing", file: "statefulset.yaml", old: "key: server", new: "key: host", wantError: `ConfigMap "avamar" has no key "host"`},
		{name: "Secret key missing", file: "statefulset.yaml", old: "key: browse-token", new: "key: token", wantError: `Secret "avsidecar" has no key "token"`},
		{name: "Secret missing", file: "secret.example.yaml", old: "name: avsidecar", new: "name: avamar-secrets", wantError: `Secret "avsidecar" does not exist`},
		{name: "token file not projected", file: "statefulset.yaml", old: "path: token", new: "path: browse-token", wantError: `projects no file "token"`},
		{name: "mount of an undeclared volume", file: "statefulset.yaml", old: "- name: ssh-keys\n              mountPath", new: "- name: ssh-key\n              mountPath", wantError: `mounts volume "ssh-key", which is neither`},
		{name: "declared volume never mounted", file: "statefulset.yaml", old: "            - name: ssh-keys\n              mountPath: /etc/avsidecar/ssh\n              readOnly: true\n", new: "", wantError: `volume "ssh-keys" is mounted by no container`},
		{name: "two mounts on one path", file: "statefulset.yaml", old: "mountPath: /etc/avsidecar/browse", new: "mountPath: /etc/avsidecar/ssh", wantError: "mounts two volumes at /etc/avsidecar/ssh"},
		{name: "Secret mounted with subPath", file: "statefulset.yaml", old: "              mountPath: /etc/avsidecar/ssh\n", new: "              mountPath: /etc/avsidecar/ssh\n              subPath: x\n", wantError: "subPath mount of a Secret"},
		{name: "client prefix not on the volume", file: "statefulset.yaml", old: "mountPath: /usr/local/avamar", new: "mountPath: /var/lib/avamar", wantError: "AVAMAR_PREFIX /usr/local/avamar is not on a PersistentVolume"},
		{name: "browse root off the volume", file: "statefulset.yaml", old: "value: /usr/share/nginx/html", new: "value: /srv/www", wantError: "browse root /srv/www is on no volume"},
		{name: "probe on a wrong path", file: "statefulset.yaml", old: "path: /startupz", new: "path: /started", wantError: `startupProbe path "/started", want /startupz`},
		{name: "readiness probe on the sidecar", file: "statefulset.yaml", old: "          livenessProbe:\n", new: "          readinessProbe:\n            httpGet:\n              path: /readyz\n              port: avsidecar\n          livenessProbe:\n", wantError: "container avamar has a readinessProbe"},
		{name: "probe on an undeclared port", file: "statefulset.yaml", old: "              path: /livez\n              port: avsidecar", new: "              path: /livez\n              port: http-probe", wantError: "livenessProbe port http-probe is not a port of the container"},
		{name: "probe port not the HTTP address", file: "statefulset.yaml", old: "value: 20s\n", new: "value: 20s\n            - name: AVSIDECAR_HTTP_ADDR\n              value: \":9181\"\n", wantError: "goes to port 9180 but AVSIDECAR_HTTP_ADDR is :9181"},
		{name: "probe missing", file: "statefulset.yaml", old: "          startupProbe:\n            httpGet:\n              path: /startupz\n              port: avsidecar\n            periodSeconds: 5\n            failureThreshold: 60\n", new: "", wantError: "needs startup and liveness probes"},
		{name: "grace period not above the shutdown timeout", file: "statefulset.yaml", old: "      containers:\n", new: "      terminationGracePeriodSeconds: 20\n      containers:\n", wantError: "terminationGracePeriodSeconds 20 is not above AVSIDECAR_SHUTDOWN_TIMEOUT 20s"},
		{name: "port name too long", file: "statefulset.yaml", old: "- name: avsidecar\n              containerPort: 9180", new: "- name: avsidecar-http-probes\n              containerPort: 9180", wantError: `container port name "avsidecar-http-probes"`},
		{name: "Service name not a DNS label", file: "service.yaml", old: "name: nginx-1-avagent", new: "name: nginx.1.avagent", wantError: `Service name "nginx.1.avagent"`},
		{name: "container name with capitals", file: "statefulset.yaml", old: "- name: avamar\n", new: "- name: Avamar\n", wantError: `container "Avamar"`},
		{name: "label value with a space", file: "configmap.yaml", old: "app.kubernetes.io/component: backup", new: "app.kubernetes.io/component: back up", wantError: `metadata.labels value "back up"`},
		{name: "shell wrapper", file: "statefulset.yaml", old: "          # No command or args: the image runs `avsidecar run` as PID 1.\n", new: "          command: [\"/bin/sh\", \"-c\", \"exec avsidecar run\"]\n", wantError: "overrides the image's ENTRYPOINT"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var objs []object
			for _, f := range exampleFiles {
				text := files[f]
				if f == tc.file {
					if n := strings.Count(text, tc.old); n != 1 {
						t.Fatalf("%q occurs %d times in %s, want once: fix the table", tc.old, n, f)
					}
					text = strings.Replace(text, tc.old, tc.new, 1)
				}
				o, err := decodeFile(f, []byte(text))
				if err != nil {
					checkErr(t, err.Error(), tc.wantError)
					return
				}
				objs = append(objs, o...)
			}
			if tc.extra != "" {
				o, err := decodeFile("extra.yaml", []byte(tc.extra))
				if err != nil {
					checkErr(t, err.Error(), tc.wantError)
					return
				}
				objs = append(objs, o...)
			}
			checkErr(t, render(check(objs)), tc.wantError)
		})
	}
}

// exampleFiles are the manifests of examples/nginx.
var exampleFiles = []string{"configmap.yaml", "secret.example.yaml", "service.yaml", "statefulset.yaml", "networkpolicy.yaml", "pdb.yaml"}

func checkErr(t *testing.T, got, want string) {
	t.Helper()
	switch {
	case want == "" && got != "":
		t.Errorf("want no problem, got:\n%s", got)
	case want != "" && !strings.Contains(got, want):
		t.Errorf("want a problem containing %q, got:\n%s", want, got)
	}
}

// TestDockerfiles checks what the manifests rely on in the images: the
// product image runs avsidecar as PID 1 in exec form (the StatefulSet sets
// no command), both base images can be overridden for offline builds, and
// the site image adds the RPM where AVAMAR_RPM's default looks for it.
func TestDockerfiles(t *testing.T) {
	read := func(p string) string {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	root := read("../Dockerfile")
	for _, want := range []string{
		`(?m)^ENTRYPOINT \["/usr/local/bin/avsidecar"\]$`,
		`(?m)^CMD \["run"\]$`,
		`(?m)^ARG GO_IMAGE=`,
		`(?m)^ARG BASE_IMAGE=`,
		`(?m)^FROM \$\{GO_IMAGE\} AS build$`,
		`(?m)^FROM \$\{BASE_IMAGE\} AS runtime$`,
		`(?m)^FROM runtime AS prebuilt$`,
		`CGO_ENABLED=0 go build -trimpath -tags nethttpomithttp2 `, // both the build stage and the prebuilt recipe
		`#     CGO_ENABLED=0 go build -trimpath -tags nethttpomithttp2 `,
		// SSH where the example and the README have it, unprivileged.
		`(?m)^ENV AVSIDECAR_SSH_ADDR=:2222$`,
		`(?m)^EXPOSE 9180 2222 28002$`,
	} {
		if !regexp.MustCompile(want).MatchString(root) {
			t.Errorf("Dockerfile does not match %s", want)
		}
	}
	site := read("nginx/Dockerfile")
	if !regexp.MustCompile(`(?m)^COPY AvamarClient-\*\.rpm /opt/avamar/$`).MatchString(site) {
		t.Errorf("nginx/Dockerfile does not copy the RPM into /opt/avamar/, where AVAMAR_RPM's default looks")
	}
	// The StatefulSet must use the image's ENTRYPOINT (checked by the
	// manifest checker) and name the site image, not the bare product.
	objs, err := loadDir("nginx")
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, o := range objs {
		sts, ok := o.typed.(*appsv1.StatefulSet)
		if !ok {
			continue
		}
		for _, ct := range sts.Spec.Template.Spec.Containers {
			if ct.Name != "avamar" {
				continue
			}
			found = true
			if !strings.Contains(ct.Image, "avsidecar-site") {
				t.Errorf("container avamar runs %s, want the site image with the RPM (avsidecar-site)", ct.Image)
			}
		}
	}
	if !found {
		t.Error("no StatefulSet with an avamar container under nginx/")
	}
}
