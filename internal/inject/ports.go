package inject

import (
	"fmt"
	"slices"
	"strconv"

	corev1 "k8s.io/api/core/v1"
)

// blockSize is the step between the blocks of ports given to workloads:
// a StatefulSet can grow to 10 replicas without running into the next
// workload's ports.
const blockSize = 10

// size is the number of ports the workload listens on: one per replica of
// a StatefulSet, one for a Deployment.
func (w workload) size() int {
	if w.stateful {
		return int(w.replicas)
	}
	return 1
}

// portRange prints the workload's ports, "31000" or "31000-31002".
func portRange(base int, w workload) string {
	switch n := w.size(); n {
	case 0:
		return "none (0 replicas)"
	case 1:
		return strconv.Itoa(base)
	default:
		return fmt.Sprintf("%d-%d", base, base+n-1)
	}
}

// keptBase is the first port of a workload injected before: its
// annotation, else its sidecar's variable (an older injection); ok is
// false for a workload never injected, err says an annotation is not a
// port.
func keptBase(w workload) (base int, from string, ok bool, err error) {
	if v, found := w.annotations[AnnotationPortBase]; found {
		n, err := strconv.Atoi(v)
		if err != nil {
			return 0, "", true, fmt.Errorf("annotation %s: %q is not a port number", AnnotationPortBase, v)
		}
		return n, "annotation " + AnnotationPortBase, true, nil
	}
	for _, c := range append(slices.Clone(w.template.Spec.Containers), w.template.Spec.InitContainers...) {
		if !isSidecar(c) {
			continue
		}
		for _, e := range c.Env {
			if e.Name == "AVAMAR_LISTEN_PORT_BASE" || e.Name == "AVAMAR_LISTEN_PORT" {
				if n, err := strconv.Atoi(e.Value); err == nil {
					return n, "its sidecar's " + e.Name, true, nil
				}
			}
		}
	}
	return 0, "", false, nil
}

// claim is a block of ports and who holds it, for messages.
type claim struct {
	first, last int
	who         string
}

// allocatePorts gives each planned workload its block of ports: the one it
// had (kept), else the first free block from o.ListenPortBase in steps of
// blockSize. A block is free when no Service of the input that inject
// does not remake has a NodePort in it, no workload of the input that
// keeps its sidecar without being injected now holds it, and no other
// workload of this run has it. Each workload's ports are noted.
func (o Options) allocatePorts(plans []*plan, docs []document, notes *notes) Problems {
	var problems Problems
	var taken []claim
	injected := func(ns, svc string) bool {
		for _, p := range plans {
			if p.w.namespace == ns && p.w.ownsName(svc) {
				return true
			}
		}
		return false
	}
	planned := map[*document]bool{}
	for _, p := range plans {
		planned[p.doc] = true
	}
	for i := range docs {
		d := &docs[i]
		switch t := d.obj.(type) {
		case *corev1.Service:
			if injected(d.ns, t.Name) {
				continue // remade with the workload's ports
			}
			for _, sp := range t.Spec.Ports {
				if sp.NodePort != 0 {
					taken = append(taken, claim{int(sp.NodePort), int(sp.NodePort), fmt.Sprintf("Service %s (nodePort %d)", t.Name, sp.NodePort)})
				}
			}
		default:
			w, ok := asWorkload(d)
			if !ok || planned[d] {
				continue
			}
			if base, _, ok, err := keptBase(w); ok && err == nil && hasSidecar(w) && w.size() > 0 {
				taken = append(taken, claim{base, base + w.size() - 1, fmt.Sprintf("%s %s (ports %s, not injected now)", w.kind, w.name, portRange(base, w))})
			}
		}
	}
	collides := func(first, last int) (claim, bool) {
		for _, c := range taken {
			if first <= c.last && c.first <= last {
				return c, true
			}
		}
		return claim{}, false
	}
	// First the workloads that keep their ports, then the new ones.
	for _, p := range plans {
		base, from, ok, err := keptBase(p.w)
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", p.doc.where, err))
		}
		if !ok || err != nil {
			continue
		}
		last := base + max(p.w.size(), 1) - 1
		if base < minNodePort || last > maxNodePort {
			problems = append(problems, fmt.Sprintf("%s: %s says %d: %s ports %d-%d are not all in the NodePort range %d-%d", p.doc.where, from, base, p.w.kind, base, last, minNodePort, maxNodePort))
			continue
		}
		if c, bad := collides(base, last); bad {
			problems = append(problems, fmt.Sprintf("%s: its ports %s (%s) collide with %s: change one of them", p.doc.where, portRange(base, p.w), from, c.who))
			continue
		}
		p.base, p.kept = base, from
		taken = append(taken, claim{base, last, fmt.Sprintf("%s %s (ports %s)", p.w.kind, p.w.name, portRange(base, p.w))})
	}
	for _, p := range plans {
		if p.kept != "" {
			continue
		}
		if _, _, ok, _ := keptBase(p.w); ok {
			continue // a problem already named
		}
		n := max(p.w.size(), 1)
		span := max(n, blockSize)
		found := false
		for base := o.ListenPortBase; base+n-1 <= maxNodePort; base += blockSize {
			if _, bad := collides(base, min(base+span-1, maxNodePort)); bad {
				continue
			}
			p.base, found = base, true
			taken = append(taken, claim{base, base + span - 1, fmt.Sprintf("%s %s (ports %s)", p.w.kind, p.w.name, portRange(base, p.w))})
			break
		}
		if !found {
			problems = append(problems, fmt.Sprintf("%s: no free block of %d ports from %d to %d, the last NodePort: lower --listen-port-base", p.doc.where, n, o.ListenPortBase, maxNodePort))
		}
	}
	for _, p := range plans {
		if p.base == 0 {
			continue
		}
		how := "new"
		if p.kept != "" {
			how = "kept from its " + p.kept
		}
		notes.add(p.doc, fmt.Sprintf("avagent ports %s, the NodePorts of %s (%s)", portRange(p.base, p.w), serviceNames(p.w), how))
	}
	return problems
}

// serviceNames names the avagent Services of w.
func serviceNames(w workload) string {
	switch {
	case !w.stateful:
		return "Service " + w.name + "-avagent"
	case w.replicas == 0:
		return "no Service"
	case w.replicas == 1:
		return "Service " + w.name + "-0-avagent"
	}
	return fmt.Sprintf("Services %s-0-avagent to %s-%d-avagent", w.name, w.name, w.replicas-1)
}

// hasSidecar reports whether w's pod has the sidecar container.
func hasSidecar(w workload) bool {
	return slices.ContainsFunc(w.template.Spec.Containers, isSidecar) || slices.ContainsFunc(w.template.Spec.InitContainers, isSidecar)
}
