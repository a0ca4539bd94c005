// Package examples holds the deployment examples of avsidecar (nginx/: a
// StatefulSet with the Avamar sidecar, its Services, Secrets,
// NetworkPolicies, PodDisruptionBudget and site image) and, in its tests,
// the checker that keeps them deployable: every manifest is decoded
// strictly into the Kubernetes API types and its cross-references
// (selectors, Services, probes, volumes, Secret and ConfigMap keys, the
// per-pod avagent ports, the ports the NetworkPolicies admit) are resolved
// as the API server and kubelet would.
package examples
