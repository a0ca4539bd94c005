package main

import (
	"bufio"
	"encoding/json"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/avsidecar/avsidecar/internal/testkit"
)

// TestDemo runs the README's first command end to end: the demo comes up
// ready, serves what it announces, shows the last backup from the REST
// stand-in without showing its secrets, and Ctrl-C stops it cleanly and
// removes its directory.
func TestDemo(t *testing.T) {
	avkit := testkit.BuildAvkit(t)
	httpAddr := "127.0.0.1:" + strconv.Itoa(testkit.FreePort(t))
	sshPort := strconv.Itoa(testkit.FreePort(t))
	demo := exec.Command(avkit, "demo",
		"--mcs", "127.0.0.1:"+strconv.Itoa(testkit.FreePort(t)),
		"--http", httpAddr,
		"--ssh", "127.0.0.1:"+sshPort,
		"--listen-port", strconv.Itoa(testkit.FreePort(t)))
	stdin, err := demo.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := demo.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	demo.Stderr = demo.Stdout
	if err := demo.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = demo.Process.Kill(); _ = demo.Wait() })

	// Read the demo's output in the background, handing each line over.
	lines := make(chan string, 1000)
	var transcript strings.Builder
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	timeout := time.After(3 * time.Minute)
	waitLine := func(re *regexp.Regexp) []string {
		t.Helper()
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("demo ended before %v:\n%s", re, transcript.String())
				}
				transcript.WriteString(l + "\n")
				if m := re.FindStringSubmatch(l); m != nil {
					return m
				}
			case <-timeout:
				t.Fatalf("no %v in the demo output:\n%s", re, transcript.String())
			}
		}
	}

	dir := filepath.Dir(waitLine(regexp.MustCompile(`building avsidecar and avkit into (\S+)`))[1])
	filesURL := waitLine(regexp.MustCompile(`curl -s '(\S+/v1/files\?path=\S*)'`))[1]
	key := waitLine(regexp.MustCompile(`ssh -p \d+ -i (\S+)`))[1]
	waitLine(regexp.MustCompile(`avsidecar is ready`))

	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get("http://" + httpAddr + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/readyz?verbose"); code != 200 {
		t.Errorf("/readyz: %d %s", code, body)
	}
	// The browse API speaks paths in AVSIDECAR_ROOT, and so does the URL
	// the demo prints: /data, not ROOT/data, which is outside the roots.
	if want := "http://" + httpAddr + "/v1/files?path=/data"; filesURL != want {
		t.Errorf("the demo prints %s, want %s", filesURL, want)
	}
	if code, body := get("/v1/files?path=/data"); code != 200 || !strings.Contains(body, `"README.txt"`) || !strings.HasPrefix(body, `{"path":"/data",`) {
		t.Errorf("/v1/files?path=/data: %d %s", code, body)
	}
	hostData := filepath.Join(dir, "root", "data")
	if code, body := get("/v1/files?path=" + hostData); code != 404 {
		t.Errorf("/v1/files?path=%s (the host path): %d %s, want 404", hostData, code, body)
	}
	// The REST check runs at start: poll the real status endpoint, bounded,
	// until it reports the demo client's backup.
	var status struct {
		Backup *struct {
			State      string    `json:"state"`
			Client     string    `json:"client"`
			LastBackup time.Time `json:"last_backup"`
		} `json:"backup"`
	}
	var statusBody string
	for deadline := time.Now().Add(30 * time.Second); ; {
		code, body := get("/v1/status")
		if code != 200 || json.Unmarshal([]byte(body), &status) != nil {
			t.Fatalf("/v1/status: %d %s", code, body)
		}
		statusBody = body
		if status.Backup != nil && !status.Backup.LastBackup.IsZero() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no last backup in /v1/status:\n%s", body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if b := status.Backup; b.State != "ok" || b.Client != demoClient || time.Since(b.LastBackup) > 24*time.Hour {
		t.Errorf("backup status: %+v, want state ok, client %s, a recent backup", *b, demoClient)
	}
	// avsidecar status, from the binary the demo built: the summary an
	// operator reads, and the JSON for scripts.
	avsidecar := filepath.Join(dir, "bin", "avsidecar")
	summary, err := exec.Command(avsidecar, "status", "--addr", httpAddr).CombinedOutput()
	if err != nil {
		t.Fatalf("avsidecar status: %v\n%s", err, summary)
	}
	for _, want := range []string{
		"\nphase:       running\n",
		"\nready:       yes\n",
		"\nregistered:  yes, " + demoClient + " in " + demoDomain + " on 127.0.0.1 at ",
		"\ninstalled:   AvamarClient ",
		"\nagent:       running, pid ",
		"\nlast backup: " + status.Backup.LastBackup.UTC().Format(time.RFC3339) + " (2h",
		"\nssh:         127.0.0.1:" + sshPort + ", 1 authorized keys, 0 sessions open\n",
		"\nbrowse:      /data, /usr/local/avamar, loopback clients only (no token file)\n",
	} {
		if !strings.Contains(string(summary), want) {
			t.Errorf("avsidecar status lacks %q:\n%s", want, summary)
		}
	}
	asJSON, err := exec.Command(avsidecar, "status", "-o", "json", "--addr", httpAddr).Output()
	var st struct {
		Phase string `json:"phase"`
	}
	if err != nil || json.Unmarshal(asJSON, &st) != nil || st.Phase != "running" {
		t.Errorf("avsidecar status -o json: %v\n%s", err, asJSON)
	}

	_, metrics := get("/metrics")
	if got := metricValue(metrics, "avsidecar_last_backup_timestamp_seconds"); got != float64(status.Backup.LastBackup.Unix()) {
		t.Errorf("avsidecar_last_backup_timestamp_seconds = %v, want %d", got, status.Backup.LastBackup.Unix())
	}
	// The REST secrets, read from the demo's own credentials file, appear
	// nowhere the user looks.
	var secrets []string
	creds, err := os.ReadFile(filepath.Join(dir, "root", demoRESTCredentials))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(creds), "\n") {
		key, value, _ := strings.Cut(line, "=")
		if key != "client_secret" && key != "password" {
			continue
		}
		if value == "" {
			t.Fatalf("credentials without %s:\n%s", key, creds)
		}
		secrets = append(secrets, value)
	}
	checkSecrets := func(where, text string) {
		t.Helper()
		for _, sec := range secrets {
			if strings.Contains(text, sec) {
				t.Errorf("%s shows a REST secret", where)
			}
		}
	}
	checkSecrets("/v1/status", statusBody)
	checkSecrets("/metrics", metrics)

	if sshBin, err := exec.LookPath("ssh"); err == nil {
		out, err := exec.Command(sshBin, "-p", sshPort, "-i", key, "-o", "BatchMode=yes",
			"-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
			"demo@127.0.0.1", "echo hello from the sidecar").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "hello from the sidecar") {
			t.Errorf("ssh with the demo key: %v\n%s", err, out)
		}
	}

	// The fake MCS obeys stdin.
	if _, err := io.WriteString(stdin, "regs\n"); err != nil {
		t.Fatal(err)
	}
	waitLine(regexp.MustCompile(`avkit-demo in /clients at 127\.0\.0\.1:`))

	if err := demo.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	waitLine(regexp.MustCompile(`avsidecar stopped cleanly`))
	for l := range lines {
		transcript.WriteString(l + "\n")
	}
	checkSecrets("the demo output", transcript.String())
	if n := strings.Count(transcript.String(), "\x1b["); n > 0 {
		t.Errorf("the demo's output, a pipe, holds %d ANSI escape sequences: colours are for terminals", n)
	}
	if err := demo.Wait(); err != nil {
		t.Errorf("demo on Ctrl-C: %v\n%s", err, transcript.String())
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("demo directory %s left behind: %v", dir, err)
	}
}

// metricValue is the value of the unlabelled sample name in a Prometheus
// text exposition; NaN when there is none.
func metricValue(exposition, name string) float64 {
	for _, line := range strings.Split(exposition, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			if f, err := strconv.ParseFloat(v, 64); err == nil {
				return f
			}
		}
	}
	return math.NaN()
}

// TestDemoPortInUse: an address the demo needs that another process holds
// is refused at once, exit 2, naming the flag that moves it.
func TestDemoPortInUse(t *testing.T) {
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	busy := held.Addr().String()
	_, busyPort, _ := net.SplitHostPort(busy)
	free := func() string { return "127.0.0.1:" + strconv.Itoa(testkit.FreePort(t)) }
	for _, flag := range []string{"-mcs", "-http", "-ssh", "-listen-port"} {
		args := map[string]string{"-mcs": free(), "-http": free(), "-ssh": free(), "-listen-port": strconv.Itoa(testkit.FreePort(t))}
		args[flag] = busy
		if flag == "-listen-port" {
			args[flag] = busyPort
		}
		argv := []string{"avkit", "demo"}
		for _, f := range []string{"-mcs", "-http", "-ssh", "-listen-port"} {
			argv = append(argv, f, args[f])
		}
		var out, errOut strings.Builder
		code := execute(argv, &out, &errOut)
		want := "choose a free address with " + flag + "\n"
		if code != 2 || !strings.HasPrefix(errOut.String(), "avkit demo: "+flag+" ") || !strings.HasSuffix(errOut.String(), want) ||
			!strings.Contains(errOut.String(), "address already in use") || out.Len() != 0 {
			t.Errorf("%s on a busy port: exit %d, stdout %q, stderr %q", flag, code, out.String(), errOut.String())
		}
	}
}
