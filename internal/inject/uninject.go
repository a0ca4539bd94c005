package inject

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// UninjectOptions are the choices of uninject.
type UninjectOptions struct {
	// ConfigMap is the name of the ConfigMap inject wrote with --server
	// (default "avamar"): left out of the output, with the avagent
	// Services, when no workload of its namespace keeps the sidecar.
	ConfigMap string
	// Only, when not empty, are the workloads to take the sidecar out of,
	// as in Options.Only.
	Only []string
}

// Uninject takes the sidecar out of the workloads of inputs: the container
// named "avamar", its volumes and inject's annotations go, and a grace
// period inject raised comes back; the avagent Services and the ConfigMap
// inject made are left out of the output (a note names them: kubectl
// apply does not delete what a manifest no longer has). Everything else
// passes through as it was.
func Uninject(inputs []Input, opts UninjectOptions) (Result, error) {
	if opts.ConfigMap == "" {
		opts.ConfigMap = DefaultConfigMap
	}
	var problems Problems
	var only []*selector
	for _, s := range opts.Only {
		sel, err := parseSelector(s)
		if err != nil {
			problems = append(problems, err.Error())
			continue
		}
		only = append(only, sel)
	}
	if len(problems) > 0 {
		return Result{}, problems
	}
	docs, err := decodeAll(inputs)
	if err != nil {
		return Result{}, err
	}
	var res Result
	var done []workload
	keeps := map[string]bool{} // namespaces where a workload keeps its sidecar
	changed := map[*document]bool{}
	for i := range docs {
		d := &docs[i]
		w, ok := asWorkload(d)
		if !ok {
			continue
		}
		selected := len(only) == 0
		for _, s := range only {
			if s.matches(w) {
				s.used, selected = true, true
			}
		}
		switch {
		case !hasSidecar(w):
			if len(only) > 0 && selected {
				problems = append(problems, fmt.Sprintf("%s: named by --only, but has no sidecar", d.where))
			}
		case !selected:
			keeps[w.namespace] = true
			res.Notes = append(res.Notes, d.where+": passed through: not named by --only")
		default:
			if err := uninjectWorkload(w); err != nil {
				problems = append(problems, fmt.Sprintf("%s: %v", d.where, err))
				continue
			}
			changed[d] = true
			done = append(done, w)
		}
	}
	for _, s := range only {
		if !s.used {
			problems = append(problems, fmt.Sprintf("--only %s/%s: no such workload in the input", strings.ToLower(s.kind), s.name))
		}
	}
	if len(problems) > 0 {
		return Result{}, problems
	}
	var out []output
	dropped := map[string][]string{} // namespace -> kind/name left out
	for i := range docs {
		d := &docs[i]
		if changed[d] {
			out = append(out, output{obj: d.obj})
			continue
		}
		if madeByInject(d, done, keeps, opts.ConfigMap) {
			dropped[d.ns] = append(dropped[d.ns], strings.ToLower(d.kind)+"/"+d.name)
			continue
		}
		out = append(out, output{raw: d.raw})
	}
	for _, w := range done {
		res.Notes = append(res.Notes, fmt.Sprintf("%s %s: sidecar taken out", w.kind, w.name))
	}
	for ns, objs := range dropped {
		n := ""
		if ns != "" {
			n = " -n " + ns
		}
		res.Notes = append(res.Notes, fmt.Sprintf("left out of the output: %s; kubectl apply does not delete them: kubectl delete%s %s", strings.Join(objs, ", "), n, strings.Join(objs, " ")))
	}
	if len(done) == 0 {
		res.Notes = append(res.Notes, "nothing to uninject: no workload in the input has the sidecar")
	}
	b, err := write(out)
	if err != nil {
		return Result{}, err
	}
	res.Output = b
	return res, nil
}

// madeByInject reports whether d is an avagent Service of a workload the
// sidecar was taken out of, or inject's ConfigMap in a namespace where no
// workload of the input keeps the sidecar. Both carry inject's label.
func madeByInject(d *document, done []workload, keeps map[string]bool, configMap string) bool {
	switch t := d.obj.(type) {
	case *corev1.Service:
		if t.Labels[componentLabel] != componentBackup {
			return false
		}
		return slices.ContainsFunc(done, func(w workload) bool { return w.namespace == d.ns && w.ownsName(t.Name) })
	case *corev1.ConfigMap:
		return t.Name == configMap && t.Labels[componentLabel] == componentBackup && !keeps[d.ns] &&
			slices.ContainsFunc(done, func(w workload) bool { return w.namespace == d.ns })
	}
	return false
}

// uninjectWorkload takes the sidecar out of w's pod template.
func uninjectWorkload(w workload) error {
	spec := &w.template.Spec
	for _, name := range volumes {
		for _, c := range slices.Concat(spec.Containers, spec.InitContainers) {
			if !isSidecar(c) && slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == name }) {
				return fmt.Errorf("container %s mounts the sidecar's volume %q: take it out by hand", c.Name, name)
			}
		}
	}
	var grace *int64
	if v, ok := w.annotations[AnnotationGracePeriod]; ok {
		g, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return fmt.Errorf("annotation %s: %q is not a number of seconds", AnnotationGracePeriod, v)
		}
		grace = &g
	}
	spec.Containers = slices.DeleteFunc(spec.Containers, isSidecar)
	spec.InitContainers = slices.DeleteFunc(spec.InitContainers, isSidecar)
	spec.Volumes = slices.DeleteFunc(spec.Volumes, func(v corev1.Volume) bool { return slices.Contains(volumes, v.Name) })
	if len(spec.Volumes) == 0 {
		spec.Volumes = nil
	}
	if len(spec.InitContainers) == 0 {
		spec.InitContainers = nil
	}
	if grace != nil {
		spec.TerminationGracePeriodSeconds = grace
	}
	for _, k := range []string{AnnotationPortBase, AnnotationGracePeriod} {
		delete(w.meta.Annotations, k)
	}
	if len(w.meta.Annotations) == 0 {
		w.meta.Annotations = nil
	}
	return nil
}
