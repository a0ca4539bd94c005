package fleet

import (
	"context"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
)

// API is Pods over a Kubernetes client: the pods' list, and their
// /v1/status through the API server's proxy
// (/api/v1/namespaces/NS/pods/NAME:PORT/proxy/v1/status).
type API struct {
	Client corev1client.CoreV1Interface
}

// List lists the pods, a page of 500 at a time.
func (a API) List(ctx context.Context, namespace, selector string) ([]corev1.Pod, error) {
	var out []corev1.Pod
	opts := metav1.ListOptions{LabelSelector: selector, Limit: 500}
	for {
		l, err := a.Client.Pods(namespace).List(ctx, opts)
		if err != nil {
			return nil, err
		}
		out = append(out, l.Items...)
		if l.Continue == "" {
			return out, nil
		}
		opts.Continue = l.Continue
	}
}

// Status reads /v1/status through the API server's pod proxy.
func (a API) Status(ctx context.Context, pod *corev1.Pod, port int) ([]byte, error) {
	return a.Client.Pods(pod.Namespace).ProxyGet("http", pod.Name, strconv.Itoa(port), "/v1/status", nil).DoRaw(ctx)
}
