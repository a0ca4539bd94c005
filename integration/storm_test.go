package integration

import (
	"fmt"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/avsidecar/avsidecar/internal/testkit"
)

// stormSize is how many sidecars start together in TestRegistrationStorm.
const stormSize = 100

// TestRegistrationStorm starts 100 sidecars at once (a StatefulSet scaled
// up, or a cluster coming back) against an MCS that handles 4
// registrations at a time, 50ms each, and refuses the rest as busy. The MCS
// is down while they start, so that all of them are retrying (backoff
// capped at 2s) when it comes up and hit it within one backoff window:
// every sidecar ends registered exactly once and ready.
func TestRegistrationStorm(t *testing.T) {
	if testing.Short() {
		t.Skip("the storm takes a minute or more")
	}
	bins := testkit.BuildBinaries(t)
	rpm := testkit.WriteRPM(t, t.TempDir(), testkit.RPMOptions{})
	mcs, err := testkit.StartMCS("127.0.0.1:0", testkit.MCSOptions{Down: true, MaxConcurrent: 4, Delay: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mcs.Close() })
	ports := freePorts(t, 2*stormSize) // agent listen ports, then HTTP ports

	type member struct {
		name string
		env  []string
		http string
		s    *sidecar
	}
	members := make([]member, stormSize)
	for i := range members {
		root := t.TempDir()
		linkRPM(t, rpm, root)
		m := &members[i]
		m.name = fmt.Sprintf("storm-%03d", i)
		m.http = "127.0.0.1:" + strconv.Itoa(ports[stormSize+i])
		m.env = []string{
			"PATH=" + os.Getenv("PATH"),
			"AVSIDECAR_ROOT=" + root,
			"AVAMAR_SERVER=" + mcs.Addr(),
			"NODE_IP=127.0.0.1",
			"POD_NAME=" + m.name,
			"AVAMAR_LISTEN_PORT=" + strconv.Itoa(ports[i]),
			"AVSIDECAR_HTTP_ADDR=" + m.http,
			"AVSIDECAR_SSH_ADDR=off",
			"AVSIDECAR_REGISTER_BACKOFF_MAX=2s",
			"AVSIDECAR_SHUTDOWN_TIMEOUT=20s",
			"AVSIDECAR_LOG_LEVEL=info",
		}
	}
	begin := time.Now()
	for i := range members {
		members[i].s = startPlain(t, bins.Avsidecar, members[i].env, members[i].http)
	}
	started := time.Since(begin)
	for _, m := range members {
		m.s.log.Wait(t, 0, m.name+" retrying", 3*time.Minute, msg("register", "registration failed", "outcome", "unreachable"))
	}
	installed := time.Since(begin)

	up := time.Now()
	if err := mcs.SetDown(false); err != nil {
		t.Fatal(err)
	}
	for _, m := range members {
		m.s.log.Wait(t, 0, m.name+" registered", 3*time.Minute, msg("register", "registered", "client", m.name))
	}
	allRegistered := time.Since(up)
	t.Logf("storm of %d: started in %s, all installed and retrying in %s; MCS up: all registered in %s",
		stormSize, started.Round(time.Millisecond), installed.Round(time.Millisecond), allRegistered.Round(time.Millisecond))
	for _, m := range members {
		m.s.eventually(t, "/readyz", 200, time.Minute)
	}
	ctx := testContext(t, time.Minute)
	for _, m := range members {
		if err := mcs.WaitReachable(ctx, m.name); err != nil {
			t.Fatal(err)
		}
	}
	allReady := time.Since(up)

	attempts, busy, maxAttempts := 0, 0, 0
	for _, m := range members {
		if n := mcs.Count(m.name); n != 1 {
			t.Errorf("%s registered %d times, want once", m.name, n)
		}
		a := mcs.Attempts(m.name)
		attempts += a
		maxAttempts = max(maxAttempts, a)
		busy += m.s.log.Count(0, msg("register", "registration failed", "outcome", "refused"))
	}
	if n := len(mcs.Registrations()); n != stormSize {
		t.Errorf("%d registrations in all, want %d", n, stormSize)
	}
	if busy == 0 || attempts <= stormSize {
		t.Errorf("%d attempts, %d refusals: the MCS was never busy, so this was no storm", attempts, busy)
	}
	t.Logf("storm of %d: after the MCS came up, all registered in %s, all ready and called back in %s; "+
		"%d registration requests reached the MCS (%d refused busy, at most %d for one client)",
		stormSize, allRegistered.Round(time.Millisecond), allReady.Round(time.Millisecond), attempts, busy, maxAttempts)

	// Everything stops cleanly, together.
	for _, m := range members {
		signal(t, m.s.cmd.Process.Pid, syscall.SIGTERM)
	}
	for _, m := range members {
		if code := m.s.exitCode(t, time.Minute); code != 0 {
			t.Errorf("%s exit code %d after SIGTERM", m.name, code)
		}
	}
	t.Logf("storm of %d: whole test %s", stormSize, time.Since(begin).Round(time.Millisecond))
}
