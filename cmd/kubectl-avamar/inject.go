package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/avsidecar/avsidecar/internal/inject"
)

// injectCmd is `kubectl avamar inject`: manifests in (files or stdin), the same
// manifests with the sidecar out, notes on stderr. A bad manifest or
// option exits 2 and writes nothing.
func injectCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("inject", flag.ContinueOnError)
	var files []string
	fs.Func("f", "manifest file, - for stdin; repeatable (default stdin)", func(s string) error {
		files = append(files, s)
		return nil
	})
	var o inject.Options
	fs.StringVar(&o.Image, "image", "", "the site image, avsidecar plus your AvamarClient RPM (required)")
	fs.StringVar(&o.Server, "server", "", "Avamar server HOST[:PORT]: also write the ConfigMap with it (default: use the existing ConfigMap)")
	fs.StringVar(&o.Domain, "domain", "", "Avamar domain written with --server (default "+inject.DefaultDomain+")")
	fs.StringVar(&o.ConfigMap, "configmap", inject.DefaultConfigMap, "ConfigMap with the keys server and domain, and optionally rest-url and hooks.json")
	fs.StringVar(&o.Secret, "secret", inject.DefaultSecret, "Secret with the keys authorized_keys and browse-token")
	roots := fs.String("browse-roots", "", "comma-separated directories the file browser lists, or off (default: the application's mounts of persistent volumes)")
	fs.BoolVar(&o.Native, "native", false, "a native sidecar (an init container with restartPolicy: Always, Kubernetes 1.29+) instead of a regular container")
	fs.StringVar(&o.Volume, "volume", "", "the persistent volume that keeps the Avamar client and its registration (default: the workload's only one)")
	fs.IntVar(&o.ListenPortBase, "listen-port-base", inject.DefaultListenPortBase, "avagent's port and NodePort of pod 0; pod N gets base + N (a Deployment's pod: base)")
	fs.StringVar(&o.SSHAddr, "ssh-addr", inject.DefaultSSHAddr, "the embedded SSH server's address, or off")
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintln(w, "usage: kubectl avamar inject [-f FILE]... --image IMAGE [flags]")
		fmt.Fprintln(w)
		fmt.Fprintln(w, "Adds the Avamar sidecar to the StatefulSets and Deployments of the manifests, as")
		fmt.Fprintln(w, "examples/nginx has it, with a NodePort Service per replica for the Avamar server's")
		fmt.Fprintln(w, "callback. Injecting again replaces the sidecar (new options apply); other documents")
		fmt.Fprintln(w, "pass through unchanged. Example:")
		fmt.Fprintln(w)
		fmt.Fprintln(w, "  kubectl avamar inject -f statefulset.yaml --image registry.example.com/avsidecar-site:7.5.101 \\")
		fmt.Fprintln(w, "    --server avamar.example.com | kubectl apply -f -")
		fmt.Fprintln(w)
		fs.PrintDefaults()
	}
	if help, err := parseFlags(fs, args, stdout); help || err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError("inject takes its files with -f, got %q", fs.Args())
	}
	fs.Visit(func(f *flag.Flag) {
		if f.Name != "browse-roots" {
			return
		}
		o.BrowseRoots = []string{}
		if *roots == "off" {
			return
		}
		for _, r := range strings.Split(*roots, ",") {
			if r = strings.TrimSpace(r); r != "" {
				o.BrowseRoots = append(o.BrowseRoots, r)
			}
		}
	})
	if len(files) == 0 {
		files = []string{"-"}
	}
	var inputs []inject.Input
	for _, f := range files {
		var data []byte
		var err error
		if f == "-" {
			data, err = io.ReadAll(stdin)
			f = "stdin"
		} else {
			data, err = os.ReadFile(f)
		}
		if err != nil {
			return usageError("read %s: %v", f, err)
		}
		inputs = append(inputs, inject.Input{Name: f, Data: data})
	}
	res, err := inject.Inject(inputs, o)
	if errors.Is(err, inject.ErrInput) {
		return &exitError{Code: exitUsage, Err: err}
	}
	if err != nil {
		return err
	}
	for _, n := range res.Notes {
		fmt.Fprintf(stderr, "kubectl avamar inject: note: %s\n", n)
	}
	_, err = stdout.Write(res.Output)
	return err
}
