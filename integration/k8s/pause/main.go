// Command pause is the sandbox ("pause") container of the test cluster in
// integration/k8s: it holds a pod's namespaces open and does nothing else
// until it is told to stop. No image registry is reachable here, so the
// test builds this static binary and an image from it instead of pulling
// registry.k8s.io/pause.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	// As PID 1 of the sandbox it inherits orphans: reap them, as the
	// upstream pause does, so none stays a zombie.
	children := make(chan os.Signal, 1)
	signal.Notify(children, syscall.SIGCHLD)
	for {
		select {
		case <-stop:
			os.Exit(0)
		case <-children:
			for {
				pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
				if pid <= 0 || err != nil {
					break
				}
			}
		}
	}
}
