// Command gohttp is bench/mem's reference point: the smallest static Go
// net/http server that answers a kubelet's probes and a Prometheus scrape,
// built with the flags of avsidecar's image.
//
//	gohttp -addr 127.0.0.1:9180
package main

import (
	"flag"
	"fmt"
	"log"
	"net/http"
	"sync/atomic"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:9180", "listen address")
	flag.Parse()
	var requests atomic.Int64
	ok := func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		fmt.Fprintln(w, "ok")
	}
	http.HandleFunc("/livez", ok)
	http.HandleFunc("/readyz", ok)
	http.HandleFunc("/startupz", ok)
	http.HandleFunc("/metrics", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		fmt.Fprintf(w, "# TYPE gohttp_requests_total counter\ngohttp_requests_total %d\n", requests.Add(1))
	})
	log.Fatal(http.ListenAndServe(*addr, nil))
}
