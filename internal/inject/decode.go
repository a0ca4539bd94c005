package inject

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// document is one object of the input: a YAML document, or an item of a
// List.
type document struct {
	where string // "FILE, document N (Kind name)", for messages
	order int    // the place in the whole input, for the notes' order
	raw   []byte // the text as read, for pass-through
	gvk   string // apiVersion/kind
	kind  string
	name  string
	ns    string
	// obj is the decoded object of the kinds inject reads:
	// *appsv1.StatefulSet, *appsv1.Deployment, *corev1.Service,
	// *corev1.ConfigMap, *corev1.Namespace; nil for the others.
	obj any
	// why is the note of a document passed through unread.
	why string
}

// decoded are the kinds inject reads, strictly: the workloads it injects,
// and the documents beside them that it makes (Services, the ConfigMap)
// or that tell it something (a Service's NodePorts, a Namespace's Pod
// Security level).
var decoded = map[string]func() any{
	"apps/v1/StatefulSet": func() any { return &appsv1.StatefulSet{} },
	"apps/v1/Deployment":  func() any { return &appsv1.Deployment{} },
	"v1/Service":          func() any { return &corev1.Service{} },
	"v1/ConfigMap":        func() any { return &corev1.ConfigMap{} },
	"v1/Namespace":        func() any { return &corev1.Namespace{} },
}

// notInjected explains the workload kinds inject passes through.
var notInjected = map[string]string{
	"DaemonSet":   "a DaemonSet's pods have no stable identity or PersistentVolume of their own for the Avamar client's registration; use a StatefulSet",
	"ReplicaSet":  "inject the Deployment that owns it",
	"Pod":         "inject the workload that makes the pod (a StatefulSet or a Deployment)",
	"Job":         "a Job is not backed up by a long-running Avamar client",
	"CronJob":     "a CronJob is not backed up by a long-running Avamar client",
	"StatefulSet": "only apps/v1 StatefulSets are read (the API version every supported Kubernetes serves)",
	"Deployment":  "only apps/v1 Deployments are read (the API version every supported Kubernetes serves)",
}

// decodeAll decodes every input; every problem is named, not only the
// first.
func decodeAll(inputs []Input) ([]document, error) {
	var docs []document
	var problems Problems
	for _, in := range inputs {
		d, p := decodeInput(in)
		docs = append(docs, d...)
		problems = append(problems, p...)
	}
	if len(problems) > 0 {
		return nil, problems
	}
	for i := range docs {
		docs[i].order = i
	}
	return docs, nil
}

// decode is decodeInput with the problems as an error (nil when none).
func decode(in Input) ([]document, error) {
	d, p := decodeInput(in)
	if len(p) > 0 {
		return nil, p
	}
	return d, nil
}

// decodeInput splits in into documents and decodes each.
func decodeInput(in Input) ([]document, Problems) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(in.Data)))
	var docs []document
	var problems Problems
	for i := 1; ; i++ {
		raw, err := r.Read()
		if errors.Is(err, io.EOF) {
			return docs, problems
		}
		where := fmt.Sprintf("%s, document %d", in.Name, i)
		if err != nil {
			return docs, append(problems, fmt.Sprintf("%s: %v", where, err))
		}
		js, err := yaml.YAMLToJSONStrict(raw)
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: not valid YAML: %v", where, err))
			continue
		}
		if t := bytes.TrimSpace(js); len(t) == 0 || string(t) == "null" {
			continue
		}
		d, p := decodeObject(where, raw, js, true)
		docs = append(docs, d...)
		problems = append(problems, p...)
	}
}

// decodeObject decodes one object, given as its text (raw) and as JSON;
// a List (top level only) gives its items.
func decodeObject(where string, raw, js []byte, top bool) ([]document, Problems) {
	var id struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name      string `json:"name"`
			Namespace string `json:"namespace"`
		} `json:"metadata"`
		Items []json.RawMessage `json:"items"`
	}
	if err := json.Unmarshal(js, &id); err != nil {
		return nil, Problems{fmt.Sprintf("%s: not a Kubernetes object: %v", where, err)}
	}
	if id.APIVersion == "" || id.Kind == "" {
		return nil, Problems{fmt.Sprintf("%s: apiVersion and kind are required (got %q, %q)", where, id.APIVersion, id.Kind)}
	}
	// kubectl get -o yaml|json prints several objects as a List (v1 List,
	// or KINDList).
	if top && (id.Kind == "List" || strings.HasSuffix(id.Kind, "List")) && id.Items != nil {
		var docs []document
		var problems Problems
		for j, item := range id.Items {
			iw := fmt.Sprintf("%s, item %d", where, j+1)
			y, err := yaml.JSONToYAML(item)
			if err != nil {
				problems = append(problems, fmt.Sprintf("%s: %v", iw, err))
				continue
			}
			d, p := decodeObject(iw, y, item, false)
			docs = append(docs, d...)
			problems = append(problems, p...)
		}
		return docs, problems
	}
	d := document{raw: raw, gvk: id.APIVersion + "/" + id.Kind, kind: id.Kind, name: id.Metadata.Name, ns: id.Metadata.Namespace}
	d.where = fmt.Sprintf("%s (%s %s)", where, id.Kind, d.name)
	newObj, ok := decoded[d.gvk]
	if !ok {
		d.why = fmt.Sprintf("%s is not a workload inject adds the sidecar to (apps/v1 StatefulSet, Deployment)", d.gvk)
		if why, ok := notInjected[id.Kind]; ok {
			d.why = fmt.Sprintf("%s: %s", d.gvk, why)
		}
		return []document{d}, nil
	}
	if d.name == "" {
		return nil, Problems{fmt.Sprintf("%s: metadata.name is required", d.where)}
	}
	obj := newObj()
	strict, err := kjson.UnmarshalStrict(js, obj)
	if err != nil {
		return nil, Problems{fmt.Sprintf("%s: %v", d.where, err)}
	}
	if len(strict) > 0 {
		msgs := make([]string, len(strict))
		for i, e := range strict {
			msgs[i] = e.Error()
		}
		return nil, Problems{fmt.Sprintf("%s: %s", d.where, strings.Join(msgs, "; "))}
	}
	d.obj = obj
	return []document{d}, nil
}

// MaxFileSize is the most inject reads of one file or of stdin; a Helm
// chart's whole rendered output is a few hundred KiB. The YAML decoder
// holds several times the input while it reads, so the cap bounds the
// memory too.
const MaxFileSize = 16 << 20

// MaxInputSize is the most inject reads in all.
const MaxInputSize = 64 << 20

// manifestExts are the file name extensions read from a directory, as
// kubectl -f DIR reads them.
var manifestExts = []string{".yaml", ".yml", ".json"}

// Read reads the manifests named by paths as kubectl -f does: "-" is
// stdin, a directory gives its .yaml, .yml and .json files in name order
// (and those of its subdirectories with recursive, kubectl's -R). Each file
// is read through a limited reader: one larger than MaxFileSize, or all of
// them larger than MaxInputSize, is an error that says so.
func Read(paths []string, recursive bool, stdin io.Reader) ([]Input, error) {
	var out []Input
	var problems Problems
	total := 0
	add := func(name string, r io.Reader) {
		b, err := io.ReadAll(io.LimitReader(r, MaxFileSize+1))
		switch {
		case err != nil:
			problems = append(problems, fmt.Sprintf("read %s: %v", name, err))
		case len(b) > MaxFileSize:
			problems = append(problems, fmt.Sprintf("%s is larger than %d MiB, the most inject reads of one file: split it", name, MaxFileSize>>20))
		case total+len(b) > MaxInputSize:
			problems = append(problems, fmt.Sprintf("%s: the input is larger than %d MiB in all, the most inject reads: inject fewer files at once", name, MaxInputSize>>20))
		default:
			total += len(b)
			out = append(out, Input{Name: name, Data: b})
		}
	}
	readFile := func(name string) {
		f, err := os.Open(name)
		if err != nil {
			problems = append(problems, fmt.Sprintf("read %s: %v", name, errors.Unwrap(err)))
			return
		}
		defer f.Close()
		add(name, f)
	}
	for _, p := range paths {
		if p == "-" {
			add("stdin", stdin)
			continue
		}
		st, err := os.Stat(p)
		if err != nil {
			problems = append(problems, fmt.Sprintf("read %s: %v", p, errors.Unwrap(err)))
			continue
		}
		if !st.IsDir() {
			readFile(p)
			continue
		}
		var files []string
		err = filepath.WalkDir(p, func(path string, e fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if e.IsDir() {
				if path != p && !recursive {
					return fs.SkipDir
				}
				return nil
			}
			if slices.Contains(manifestExts, strings.ToLower(filepath.Ext(path))) {
				files = append(files, path)
			}
			return nil
		})
		if err != nil {
			problems = append(problems, fmt.Sprintf("read %s: %v", p, err))
			continue
		}
		if len(files) == 0 {
			problems = append(problems, fmt.Sprintf("%s: no .yaml, .yml or .json file in the directory%s", p, map[bool]string{false: " (-R reads its subdirectories)", true: " or under it"}[recursive]))
		}
		for _, f := range files {
			readFile(f)
		}
	}
	if len(problems) > 0 {
		return nil, problems
	}
	return out, nil
}
