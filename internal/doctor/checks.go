package doctor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// checkClientName looks the client name up, and each of its addresses
// back: community images of the client ask for both records.
func (d *Doctor) checkClientName(ctx context.Context) Diagnosis {
	name := d.cfg.ClientName
	dg := Diagnosis{Check: CheckClientName}
	fix := fmt.Sprintf("add a DNS record %s -> %s (NODE_IP) and the reverse (PTR) record back to %s in the DNS the Avamar server and the pod use: the server finds its clients by name", name, d.cfg.NodeIP, name)
	addrs, err := d.cfg.Resolver.LookupHost(ctx, name)
	if err != nil || len(addrs) == 0 {
		dg.State, dg.Fix = StateFault, fix
		dg.Message = fmt.Sprintf("the client name %s does not resolve from the pod: %s", name, lookupError(err))
		return dg
	}
	var back []string
	for _, a := range addrs {
		names, err := d.cfg.Resolver.LookupAddr(ctx, a)
		if err != nil || len(names) == 0 {
			back = append(back, fmt.Sprintf("%s to no name (%s)", a, lookupError(err)))
			continue
		}
		for _, n := range names {
			if sameHost(n, name) {
				dg.State = StateOK
				dg.Message = fmt.Sprintf("the client name %s resolves to %s, and %s back to %s%s", name, strings.Join(addrs, ", "), a, strings.TrimSuffix(n, "."), d.ownAddressNote(addrs))
				return dg
			}
		}
		back = append(back, fmt.Sprintf("%s to %s", a, strings.TrimSuffix(strings.Join(names, ", "), ".")))
	}
	dg.State, dg.Fix = StateFault, fix
	dg.Message = fmt.Sprintf("the client name %s resolves to %s, but not back: %s", name, strings.Join(addrs, ", "), strings.Join(back, "; "))
	return dg
}

// ownAddressNote says when the name resolves, in the pod, to the pod's own
// address and not to NODE_IP: the pod's /etc/hosts names it so, which says
// nothing of what the Avamar server's DNS says.
func (d *Doctor) ownAddressNote(addrs []string) string {
	for _, a := range addrs {
		if a == d.cfg.NodeIP {
			return ""
		}
	}
	for _, a := range addrs {
		if ip := net.ParseIP(a); ip != nil && isLocal(ip) {
			return fmt.Sprintf(" (the pod's own address, not NODE_IP %s: the pod's /etc/hosts names it; what the Avamar server's DNS says cannot be seen from here)", d.cfg.NodeIP)
		}
	}
	return fmt.Sprintf(" (not NODE_IP %s)", d.cfg.NodeIP)
}

// sameHost reports whether a name found by a reverse lookup is the client
// name: itself, or a fully qualified name whose first label it is.
func sameHost(found, name string) bool {
	found = strings.ToLower(strings.TrimSuffix(found, "."))
	name = strings.ToLower(name)
	return found == name || strings.HasPrefix(found, name+".")
}

// lookupError is a lookup failure in words.
func lookupError(err error) string {
	var de *net.DNSError
	switch {
	case err == nil:
		return "no address"
	case errors.As(err, &de) && de.IsNotFound:
		return "no such name (" + de.Error() + ")"
	default:
		return err.Error()
	}
}

// checkNodeIP tells whether NODE_IP is the node the pod runs on: a packet
// with a time to live of 1 reaches the pod's own node (it delivers it
// locally) but no further (the first router drops it and says so). Either
// an answer or a refusal from NODE_IP proves it is local to the first hop.
func (d *Doctor) checkNodeIP(ctx context.Context) Diagnosis {
	ip := net.ParseIP(d.cfg.NodeIP)
	dg := Diagnosis{Check: CheckNodeIP}
	fix := "set NODE_IP from the downward API (valueFrom: fieldRef: fieldPath: status.hostIP), not a fixed address: a pod that moves to another node must give the Avamar server its new address"
	if isLocal(ip) {
		dg.State = StateOK
		dg.Message = fmt.Sprintf("NODE_IP %s is an address of the pod's own network namespace: right for a pod on the host network; in a pod network it is the pod's own address, which the Avamar server cannot reach (then %s)", ip, fix)
		return dg
	}
	addr := net.JoinHostPort(ip.String(), strconv.Itoa(d.cfg.NodeProbePort))
	half, cancel := context.WithTimeout(ctx, d.cfg.Timeout/2)
	near := knock(half, addr, 1)
	cancel()
	switch {
	case near == nil || errors.Is(near, syscall.ECONNREFUSED):
		dg.State = StateOK
		dg.Message = fmt.Sprintf("NODE_IP %s is the node this pod runs on: it answers with no router in between", ip)
	case errors.Is(near, syscall.EHOSTUNREACH) || errors.Is(near, syscall.ENETUNREACH):
		dg.State, dg.Fix = StateFault, fix
		far := knock(ctx, addr, 0)
		if far == nil || errors.Is(far, syscall.ECONNREFUSED) {
			dg.Message = fmt.Sprintf("NODE_IP %s is not an address of the node this pod runs on: another host answers there, a router away (another node?), so the Avamar server would call the agent there", ip)
		} else {
			dg.Message = fmt.Sprintf("NODE_IP %s is not an address of the node this pod runs on, and nothing answers there (%s)", ip, netError(far))
		}
	case isTimeout(near):
		dg.State, dg.Fix = StateUnknown, "if NODE_IP comes from status.hostIP it is right; else "+fix
		dg.Message = fmt.Sprintf("NODE_IP %s did not answer within %s, not even with a refusal: the node or a firewall drops the pod's packets to port %d, so the pod cannot tell whether it is its own node", ip, d.cfg.Timeout/2, d.cfg.NodeProbePort)
	default:
		dg.State, dg.Fix = StateUnknown, "if NODE_IP comes from status.hostIP it is right; else "+fix
		dg.Message = fmt.Sprintf("NODE_IP %s could not be asked: %s", ip, netError(near))
	}
	return dg
}

// knock connects to addr and closes at once; hops, when not 0, is the
// packets' time to live (IPv4) or hop limit (IPv6).
func knock(ctx context.Context, addr string, hops int) error {
	var dl net.Dialer
	if hops > 0 {
		dl.Control = func(network, _ string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) {
				if strings.HasSuffix(network, "6") {
					serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IPV6, syscall.IPV6_UNICAST_HOPS, hops)
				} else {
					serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, syscall.IP_TTL, hops)
				}
			})
			if err != nil {
				return err
			}
			return serr
		}
	}
	conn, err := dl.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	return conn.Close()
}

// checkMCS connects to the MCS and listens: an MCS waits for its client to
// speak, while SSH, FTP, mail and some other servers greet first.
func (d *Doctor) checkMCS(ctx context.Context) Diagnosis {
	addr := net.JoinHostPort(d.cfg.Server, strconv.Itoa(d.cfg.ServerPort))
	dg := Diagnosis{Check: CheckMCS}
	if net.ParseIP(d.cfg.Server) == nil {
		if _, err := d.cfg.Resolver.LookupHost(ctx, d.cfg.Server); err != nil {
			dg.State = StateFault
			dg.Message = fmt.Sprintf("the MCS name %s does not resolve from the pod: %s", d.cfg.Server, lookupError(err))
			dg.Fix = "set AVAMAR_SERVER to a name the pod's DNS resolves, or to the MCS's IP address"
			return dg
		}
	}
	var dl net.Dialer
	conn, err := dl.DialContext(ctx, "tcp", addr)
	if err != nil {
		dg.State = StateFault
		dg.Message = fmt.Sprintf("the MCS at %s is unreachable from the pod: %s", addr, netError(err))
		dg.Fix = fmt.Sprintf("check that the MCS runs, that AVAMAR_SERVER names it (HOST[:PORT], port 28001 by default), and that nothing between the pod and the server (a NetworkPolicy's egress, a firewall) blocks port %d", d.cfg.ServerPort)
		return dg
	}
	defer conn.Close()
	listen := min(time.Second, d.cfg.Timeout/2)
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < listen {
		listen = time.Until(dl)
	}
	_ = conn.SetReadDeadline(time.Now().Add(listen))
	buf := make([]byte, 64)
	n, err := conn.Read(buf)
	switch {
	case n > 0:
		dg.State = StateFault
		dg.Message = fmt.Sprintf("%s answers at %s, not an MCS: it spoke first, %q", greeter(buf[:n]), addr, printable(buf[:n]))
		dg.Fix = "AVAMAR_SERVER names the wrong host or port: set the MCS's address (and :PORT when it is not 28001)"
	case errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET):
		dg.State = StateFault
		dg.Message = fmt.Sprintf("the port %s accepts connections and closes them at once, without a word: not what an MCS does (it waits for the client); a proxy with nothing behind it, or another service?", addr)
		dg.Fix = "check that AVAMAR_SERVER names the MCS itself (and :PORT when it is not 28001), and whatever forwards that port"
	case isTimeout(err):
		dg.State = StateOK
		dg.Message = fmt.Sprintf("the MCS port %s accepts connections and waits for the client to speak", addr)
	default:
		dg.State = StateUnknown
		dg.Message = fmt.Sprintf("the MCS port %s accepted a connection, then: %s", addr, netError(err))
	}
	return dg
}

// greeter names what kind of server spoke first.
func greeter(b []byte) string {
	switch {
	case bytes.HasPrefix(b, []byte("SSH-")):
		return "an SSH server"
	case bytes.HasPrefix(b, []byte("HTTP/")):
		return "an HTTP server"
	case bytes.HasPrefix(b, []byte("220")):
		return "an FTP or mail server"
	case bytes.HasPrefix(b, []byte("+OK")) || bytes.HasPrefix(b, []byte("* OK")):
		return "a mail server"
	default:
		return "another service"
	}
}

// printable keeps the first line of what a server said, as text.
func printable(b []byte) string {
	s, _, _ := strings.Cut(string(b), "\n")
	return strings.ToValidUTF8(strings.TrimSpace(s), "?")
}

// checkListenPort finds the sockets that listen on the listen port in the
// pod's network namespace and the processes of this container that hold
// them: avagent must be one, and nothing else may be.
func (d *Doctor) checkListenPort(ctx context.Context) Diagnosis {
	port := d.cfg.ListenPort
	dg := Diagnosis{Check: CheckListenPort}
	ag := d.cfg.State.Agent()
	if !ag.Started {
		dg.State, dg.Message = StatePending, "avagent has not started yet"
		return dg
	}
	var inodes []uint64
	var err error
	for {
		inodes, err = listeners(d.cfg.Proc, port)
		if err != nil || len(inodes) > 0 || !ag.Running || ctx.Err() != nil {
			break
		}
		// avagent may be binding right now.
		t := time.NewTimer(100 * time.Millisecond)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
		ag = d.cfg.State.Agent()
	}
	if err != nil {
		dg.State, dg.Message = StateUnknown, fmt.Sprintf("the pod's sockets cannot be read: %v", err)
		return dg
	}
	why := agentWhy(ag)
	if len(inodes) == 0 {
		dg.State = StateFault
		if ag.Running {
			dg.Message = fmt.Sprintf("avagent runs (pid %d) but nothing listens on port %d in the pod", ag.PID, port)
		} else {
			dg.Message = fmt.Sprintf("nothing listens on port %d in the pod: avagent is not running%s", port, why)
		}
		dg.Fix = "see why in avagent's log (kubectl logs -c avamar, component avagent.log), and that avagent.cmd and .avagent in the var dir say --listenport=" + strconv.Itoa(port)
		return dg
	}
	owners := owners(d.cfg.Proc, inodes, ag.PID)
	for _, o := range owners {
		if (ag.Running && o.pid == ag.PID) || strings.HasPrefix(o.comm, "avagent") {
			dg.State = StateOK
			dg.Message = fmt.Sprintf("avagent (pid %d) listens on port %d", o.pid, port)
			return dg
		}
	}
	dg.State = StateFault
	dg.Fix = fmt.Sprintf("free port %d in the pod (no other container of the pod may listen on it), or give avagent another port (AVAMAR_LISTEN_PORT, or AVAMAR_LISTEN_PORT_BASE), with a NodePort Service of the same number", port)
	if len(owners) > 0 {
		dg.Message = fmt.Sprintf("port %d is taken by %s (pid %d), not avagent: avagent cannot listen there%s", port, owners[0].comm, owners[0].pid, why)
	} else {
		dg.Message = fmt.Sprintf("port %d is taken by a process outside this container (another container of the pod, which shares its network): avagent cannot listen there%s", port, why)
	}
	return dg
}

// agentWhy says how avagent's last run ended, when it is not running.
func agentWhy(ag Agent) string {
	if ag.Running || ag.LastExit == "" {
		return ""
	}
	s := "; its last run ended with " + ag.LastExit
	if ag.LastLog != "" {
		s += ", its log's last line: " + ag.LastLog
	}
	return s
}

// checkNodePort connects to NODE_IP:port from inside the pod, the way the
// Avamar server comes in (through the node's NodePort, back to this pod).
func (d *Doctor) checkNodePort(ctx context.Context, listen Diagnosis) Diagnosis {
	port := d.cfg.ListenPort
	addr := net.JoinHostPort(d.cfg.NodeIP, strconv.Itoa(port))
	dg := Diagnosis{Check: CheckNodePort}
	switch listen.State {
	case StatePending:
		dg.State, dg.Message = StatePending, "waits for avagent to listen"
		return dg
	case StateOK:
	default:
		dg.State = StateUnknown
		dg.Message = fmt.Sprintf("cannot tell whether %s leads to this pod while avagent does not listen on port %d (see listen-port)", addr, port)
		return dg
	}
	fix := fmt.Sprintf("publish the port with a NodePort Service selecting only this pod, nodePort = port = targetPort = %d (examples/nginx/service.yaml, nginx-N-avagent); kubectl get services -o wide shows which pods each selects", port)
	err := knock(ctx, addr, 0)
	switch {
	case err == nil:
		dg.State = StateOK
		dg.Message = fmt.Sprintf("%s answers from inside the pod: the node forwards the agent's port (a NodePort) to a listener", addr)
	case errors.Is(err, syscall.ECONNREFUSED):
		dg.State, dg.Fix = StateFault, fix
		dg.Message = fmt.Sprintf("nothing answers at %s (connection refused): no NodePort Service publishes port %d on the node, or it leads to a pod where nothing listens on %d", addr, port, port)
	case isTimeout(err):
		dg.State, dg.Fix = StateUnknown, fmt.Sprintf("from a host outside the cluster: nc -vz %s %d; and %s", d.cfg.NodeIP, port, fix)
		dg.Message = fmt.Sprintf("no answer at %s within %s: either nothing forwards it to this pod, or the network does not let a pod reach itself through its node (hairpin traffic): this check cannot tell", addr, d.cfg.Timeout)
	default:
		dg.State, dg.Fix = StateFault, fix
		dg.Message = fmt.Sprintf("%s cannot be reached from the pod: %s", addr, netError(err))
	}
	return dg
}

// checkRegistration reports the server's refusal, in its own words.
func (d *Doctor) checkRegistration(context.Context) Diagnosis {
	r := d.cfg.State.Registration()
	dg := Diagnosis{Check: CheckRegistration}
	switch {
	case r.Registered:
		dg.State, dg.Message = StateOK, "the client is registered"
	case r.Attempts == 0:
		dg.State, dg.Message = StatePending, "no registration attempt yet"
	case r.Refused:
		dg.State = StateFault
		dg.Message = fmt.Sprintf("the Avamar server refused the registration (attempt %d): %s", r.Attempts, r.LastError)
		dg.Fix = "act on the server's reason: the client's name (AVAMAR_CLIENT_NAME) or domain (AVAMAR_DOMAIN, which must exist on the server), a client of that name registered from elsewhere, or the server's own settings; the sidecar keeps retrying"
	default:
		dg.State = StateUnknown
		dg.Message = fmt.Sprintf("not registered yet: %d attempts, the last %s: %s (see mcs)", r.Attempts, r.LastOutcome, r.LastError)
	}
	return dg
}

// isTimeout reports a dial or read that ran out of time.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// netError is a network error in words, without Go's operation prefix.
func netError(err error) string {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused: nothing listens there"
	case errors.Is(err, syscall.EHOSTUNREACH):
		return "no route to host"
	case errors.Is(err, syscall.ENETUNREACH):
		return "network unreachable"
	case isTimeout(err):
		return "no answer in time"
	}
	return err.Error()
}

// isLocal reports whether ip is an address of this network namespace.
func isLocal(ip net.IP) bool {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.Equal(ip) {
			return true
		}
	}
	return false
}
