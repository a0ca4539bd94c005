package main

import (
	"context"
	"slices"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"

	"github.com/avsidecar/avsidecar/internal/fleet"
)

func statusCmd() *cobra.Command {
	kube := genericclioptions.NewConfigFlags(true)
	var all bool
	var selector, output string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "status [-n NAMESPACE | -A] [-l SELECTOR] [-o wide|json|yaml]",
		Short: "Show every backed-up pod: registration, agent, callback port, last backup, faults",
		Long: `Show one row per backed-up pod (a pod with the avamar container) of the
namespace, or of every namespace with -A: its node, the Avamar client's name,
whether it is registered, whether avagent runs and how often it restarted,
where the Avamar server calls it back (NODE_IP:port), the last backup and its
age, the sidecar's faults (its side parts' and those its doctor found: what
keeps the Avamar server from reaching the client; -o wide says why) and its
version.

Each sidecar's /v1/status is read through the API server's pod proxy: this
needs the rights to list pods and to get pods/proxy, nothing else (no Secret
is read: /v1/status needs no token). A pod that cannot be read is a row that
says why.`,
		Example: `  kubectl avamar status -n shop
  kubectl avamar status -A -o wide
  kubectl avamar status -A -o json | jq '.items[] | select(.registered | not)'`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if !slices.Contains(fleet.Formats, output) {
				return usageError("-o %q: use wide, json or yaml", output)
			}
			ns := ""
			if !all {
				n, _, err := kube.ToRawKubeConfigLoader().Namespace()
				if err != nil {
					return usageError("namespace: %v", err)
				}
				ns = n
			}
			conf, err := kube.ToRESTConfig()
			if err != nil {
				return usageError("kubeconfig: %v", err)
			}
			client, err := corev1client.NewForConfig(conf)
			if err != nil {
				return err
			}
			rows, err := fleet.Collect(cmd.Context(), fleet.API{Client: client}, fleet.Config{Namespace: ns, Selector: selector, Timeout: timeout})
			if err != nil {
				return err
			}
			if len(rows) == 0 && output == "" {
				where := "namespace " + ns
				if all {
					where = "any namespace"
				}
				cmd.PrintErrf("No backed-up pods found in %s.\n", where)
				return nil
			}
			return fleet.Print(cmd.OutOrStdout(), rows, output, all, time.Now())
		},
	}
	kube.AddFlags(cmd.Flags())
	cmd.Flags().BoolVarP(&all, "all-namespaces", "A", false, "every namespace")
	cmd.Flags().StringVarP(&selector, "selector", "l", "", "label selector of the pods (e.g. app=db)")
	cmd.Flags().StringVarP(&output, "output", "o", "", "wide, json or yaml")
	cmd.Flags().DurationVar(&timeout, "pod-timeout", 10*time.Second, "how long to wait for one pod's status")
	cmd.SetContext(context.Background())
	return cmd
}
