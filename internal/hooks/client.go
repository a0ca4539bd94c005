package hooks

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
)

// MaxAnswer is the most a script reads of the sidecar's answer. The
// answer's worst case (a pre phase of MaxHooks hooks and its undo of
// MaxHooks post hooks, each with its output and error at their bounds, in
// bytes that JSON escapes six-fold) is under half of it
// (TestWorstAnswerFits).
const MaxAnswer = 4 << 20

// Call asks the sidecar serving socket to run phase, as the scripts do
// through `avsidecar hook`, and returns the run. It waits as long as the
// phase takes: each hook's timeout bounds it.
func Call(ctx context.Context, socket, phase string, args []string) (PhaseRun, error) {
	c := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
	}}
	body, _ := json.Marshal(request{Args: args})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://avsidecar/v1/hooks/"+phase, bytes.NewReader(body))
	if err != nil {
		return PhaseRun{}, fmt.Errorf("call hooks: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return PhaseRun{}, fmt.Errorf("call the sidecar's hooks at %s: %w", socket, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, MaxAnswer+1))
	if err != nil {
		return PhaseRun{}, fmt.Errorf("read the hooks' answer: %w", err)
	}
	if len(b) > MaxAnswer {
		return PhaseRun{}, fmt.Errorf("the hooks' answer is larger than %d bytes: the sidecar is not this avsidecar's", MaxAnswer)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			return PhaseRun{}, fmt.Errorf("the sidecar did not run the %s hooks: %s", phase, e.Error)
		}
		return PhaseRun{}, fmt.Errorf("the sidecar answered %s", resp.Status)
	}
	var run PhaseRun
	if err := json.Unmarshal(b, &run); err != nil {
		return PhaseRun{}, fmt.Errorf("read the hooks' answer: %w", err)
	}
	return run, nil
}
