package main

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/avsidecar/avsidecar/internal/inject"
)

// files are the -f and -R flags, as kubectl has them.
type files struct {
	names     []string
	recursive bool
}

func (f *files) add(cmd *cobra.Command) {
	cmd.Flags().StringSliceVarP(&f.names, "filename", "f", nil, "manifest file, directory (its .yaml, .yml and .json files) or - for stdin; repeatable (default stdin)")
	cmd.Flags().BoolVarP(&f.recursive, "recursive", "R", false, "read the directories of -f recursively")
}

func (f *files) read() ([]inject.Input, error) {
	names := f.names
	if len(names) == 0 {
		names = []string{"-"}
	}
	in, err := inject.Read(names, f.recursive, stdin)
	if err != nil {
		return nil, &exitError{Code: exitUsage, Err: err}
	}
	return in, nil
}

// report writes a result: the manifests on stdout, the notes and warnings
// on stderr, one line each. A bad manifest or option exits 2 and writes no
// manifest.
func report(cmd *cobra.Command, stderr io.Writer, res inject.Result, err error) error {
	if errors.Is(err, inject.ErrInput) {
		return &exitError{Code: exitUsage, Err: err}
	}
	if err != nil {
		return err
	}
	name := "kubectl avamar " + cmd.Name()
	for _, w := range res.Warnings {
		fmt.Fprintf(stderr, "%s: warning: %s\n", name, w)
	}
	for _, n := range res.Notes {
		fmt.Fprintf(stderr, "%s: note: %s\n", name, n)
	}
	_, err = cmd.OutOrStdout().Write(res.Output)
	return err
}

const injectExample = `  # Add the sidecar to a StatefulSet and apply it
  kubectl avamar inject -f statefulset.yaml --image registry.example.com/avsidecar-site:7.5.101 \
      --server avamar.example.com | kubectl apply -f -

  # A directory of manifests, only one of its workloads
  kubectl avamar inject -f ./manifests -R --only statefulset/db --image ...

  # What runs in the cluster now
  kubectl get statefulset db -o yaml | kubectl avamar inject --image ... | kubectl apply -f -

  # A Helm chart's rendered manifests (helm 4: --post-renderer avamar, see cmd/kubectl-avamar/helm)
  helm template db ./chart | kubectl avamar inject --image ... | kubectl apply -f -`

func injectCmd(stderr io.Writer) *cobra.Command {
	var f files
	var o inject.Options
	var roots string
	cmd := &cobra.Command{
		Use:   "inject [-f FILE|DIR]... --image IMAGE [flags]",
		Short: "Add the Avamar sidecar to StatefulSet and Deployment manifests",
		Long: `Add the Avamar sidecar to the StatefulSets and Deployments of the manifests, as
examples/nginx has it, with a NodePort Service per replica for the Avamar
server's callback, and print them.

Other documents pass through unchanged, each with a note on stderr saying why
(a kind it does not inject, no persistent volume, opted out with the
annotation avsidecar.io/inject: "false", not named by --only). It exits 2,
writing nothing, on a real error: bad YAML, an unknown field of a workload, a
workload that cannot take the sidecar, a port collision; every problem is
named at once.

Each workload gets a block of NodePorts of its own from --listen-port-base
(skipping those of the input's Services), recorded in its annotation
avsidecar.io/listen-port-base: injecting again keeps them, replaces the
sidecar (new options apply) and changes nothing else.`,
		Example: injectExample,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if cmd.Flags().Changed("browse-roots") {
				o.BrowseRoots = []string{}
				if roots != "off" {
					for _, r := range strings.Split(roots, ",") {
						if r = strings.TrimSpace(r); r != "" {
							o.BrowseRoots = append(o.BrowseRoots, r)
						}
					}
				}
			}
			in, err := f.read()
			if err != nil {
				return err
			}
			res, err := inject.Inject(in, o)
			return report(cmd, stderr, res, err)
		},
	}
	f.add(cmd)
	fl := cmd.Flags()
	fl.StringVar(&o.Image, "image", "", "the site image, avsidecar plus your AvamarClient RPM (required)")
	fl.StringVar(&o.Server, "server", "", "Avamar server HOST[:PORT]: also write the ConfigMap with it (default: use the existing ConfigMap)")
	fl.StringVar(&o.Domain, "domain", "", "Avamar domain written with --server (default "+inject.DefaultDomain+")")
	fl.StringVar(&o.ConfigMap, "configmap", inject.DefaultConfigMap, "ConfigMap with the keys server and domain, and optionally rest-url and hooks.json")
	fl.StringVar(&o.Secret, "secret", inject.DefaultSecret, "Secret with the keys authorized_keys and browse-token")
	fl.StringVar(&roots, "browse-roots", "", "comma-separated directories the file browser lists, or off (default: the application's mounts of persistent volumes)")
	fl.BoolVar(&o.Native, "native", false, "a native sidecar (an init container with restartPolicy: Always, Kubernetes 1.29+) instead of a regular container")
	fl.StringVar(&o.Volume, "volume", "", "the persistent volume that keeps the Avamar client and its registration (default: the workload's only one)")
	fl.IntVar(&o.ListenPortBase, "listen-port-base", inject.DefaultListenPortBase, "where the search for each workload's free block of avagent ports (and NodePorts) starts; pod N of a StatefulSet gets its block's first + N; a workload injected before keeps its own")
	fl.StringVar(&o.SSHAddr, "ssh-addr", inject.DefaultSSHAddr, "the embedded SSH server's address, or off")
	fl.StringArrayVar(&o.Only, "only", nil, "inject only this workload, KIND/NAME or KIND/NAMESPACE/NAME (statefulset/db, deploy/wiki); repeatable")
	return cmd
}

func uninjectCmd(stderr io.Writer) *cobra.Command {
	var f files
	var o inject.UninjectOptions
	cmd := &cobra.Command{
		Use:   "uninject [-f FILE|DIR]... [flags]",
		Short: "Take the Avamar sidecar out of manifests",
		Long: `Take the Avamar sidecar out of the StatefulSets and Deployments of the
manifests, giving back the workloads as they were before inject, and print
them. The avagent Services and the ConfigMap inject made are left out, and a
note says how to delete them from the cluster (kubectl apply does not).`,
		Example: `  kubectl get statefulset db -o yaml | kubectl avamar uninject | kubectl apply -f -`,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			in, err := f.read()
			if err != nil {
				return err
			}
			res, err := inject.Uninject(in, o)
			return report(cmd, stderr, res, err)
		},
	}
	f.add(cmd)
	cmd.Flags().StringVar(&o.ConfigMap, "configmap", inject.DefaultConfigMap, "the ConfigMap inject wrote with --server")
	cmd.Flags().StringArrayVar(&o.Only, "only", nil, "uninject only this workload, KIND/NAME or KIND/NAMESPACE/NAME; repeatable")
	return cmd
}
