package fleet

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
)

// TestAPIProxyError: when the API server's proxy cannot reach the pod it
// answers 503 with a line of text saying why; the row must say that, not
// client-go's "the server is currently unable to handle the request". The
// answer here is a stand-in of the API server's (the text the real one
// gave in integration/k8s); a JSON Status keeps client-go's error.
func TestAPIProxyError(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/api/v1/namespaces/shop/pods/http:db-0:9180/proxy/v1/status":
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("error trying to reach service: dial tcp 10.244.0.9:9180: connect: connection refused\n"))
		case "/api/v1/namespaces/shop/pods/http:db-1:9180/proxy/v1/status":
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write([]byte(`{"phase":"running"}`))
		default:
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte(`{"kind":"Status","apiVersion":"v1","status":"Failure","message":"pods \"gone\" not found","reason":"NotFound","code":404}`))
		}
	}))
	defer srv.Close()
	client, err := corev1client.NewForConfig(&rest.Config{Host: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	api := API{Client: client}
	pod := func(name string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name}}
	}
	if _, err := api.Status(context.Background(), pod("db-0"), 9180); err == nil || err.Error() != "error trying to reach service: dial tcp 10.244.0.9:9180: connect: connection refused" {
		t.Errorf("unreachable pod: %v", err)
	}
	if b, err := api.Status(context.Background(), pod("db-1"), 9180); err != nil || string(b) != `{"phase":"running"}` {
		t.Errorf("reachable pod: %q %v", b, err)
	}
	if _, err := api.Status(context.Background(), pod("gone"), 9180); err == nil || !strings.Contains(err.Error(), `pods "gone" not found`) {
		t.Errorf("a pod gone: %v", err)
	}
}
