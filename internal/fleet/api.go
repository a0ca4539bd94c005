package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"

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
	b, err := a.Client.Pods(pod.Namespace).ProxyGet("http", pod.Name, strconv.Itoa(port), "/v1/status", nil).DoRaw(ctx)
	if err != nil {
		// The proxy says why it could not reach the pod in a line of text
		// ("error trying to reach service: dial tcp ...: connection
		// refused") or a Status ("pods \"x\" not found"), which client-go
		// replaces by a generic message.
		var st metav1.Status
		switch text := strings.TrimSpace(string(b)); {
		case json.Unmarshal(b, &st) == nil && st.Kind == "Status" && st.Message != "":
			return nil, errors.New(st.Message)
		case text != "" && !json.Valid(b):
			return nil, errors.New(text)
		}
		return nil, err
	}
	return b, nil
}
