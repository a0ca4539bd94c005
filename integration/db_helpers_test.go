package integration

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/avsidecar/avsidecar/internal/testkit"
)

// dbServer is a real database server the test started: PostgreSQL or
// MariaDB from Debian's packages, in a data directory of its own, as the
// user the server insists on.
type dbServer struct {
	kind string // "postgres" or "mariadb"
	data string // data directory
	sock string // unix socket (PostgreSQL: its directory)
	port int
	cmd  *exec.Cmd
	done chan struct{}

	mu   sync.Mutex
	logs []string
}

// dbUser is the system user a server runs as, and owns its files.
func dbUser(t *testing.T, name string) *syscall.Credential {
	t.Helper()
	testkit.NeedRoot(t)
	u, err := user.Lookup(name)
	testkit.Need(t, err == nil, "the "+name+" user (Debian's "+map[string]string{"postgres": "postgresql", "mysql": "mariadb-server"}[name]+" package)")
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
}

// dbDir is a directory every user may enter (t.TempDir's are root's only),
// removed at the end.
func dbDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "avsidecar-db-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// chownTree gives a tree to cred's user, as a restore does.
func chownTree(t *testing.T, dir string, cred *syscall.Credential) {
	t.Helper()
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, int(cred.Uid), int(cred.Gid))
	})
	if err != nil {
		t.Fatal(err)
	}
}

// pgBin is the path of a PostgreSQL server program.
func pgBin(t *testing.T, name string) string {
	t.Helper()
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/" + name)
	testkit.Need(t, len(matches) > 0, "PostgreSQL's "+name+" (Debian's postgresql package)")
	return matches[len(matches)-1]
}

// runAs runs argv as cred's user and fails the test when it fails.
func runAs(t *testing.T, cred *syscall.Credential, argv ...string) string {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	cmd.Dir = "/"
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, out)
	}
	return string(out)
}

// initPostgres makes a new cluster in data, with data checksums.
func initPostgres(t *testing.T, data string) {
	t.Helper()
	cred := dbUser(t, "postgres")
	if err := os.MkdirAll(data, 0o700); err != nil {
		t.Fatal(err)
	}
	chownTree(t, data, cred)
	runAs(t, cred, pgBin(t, "initdb"), "-D", data, "-A", "trust", "-U", "postgres", "-k", "--no-sync")
}

// startPostgres runs a PostgreSQL server on data (a cluster, or the copy
// of one), on a fresh port and a socket in its own directory, and waits
// until it accepts connections; the test ends it.
func startPostgres(t *testing.T, data string, extra ...string) *dbServer {
	t.Helper()
	cred := dbUser(t, "postgres")
	chownTree(t, data, cred)
	if err := os.Chmod(data, 0o700); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dbDir(t), "pg")
	if err := os.Mkdir(sock, 0o755); err != nil {
		t.Fatal(err)
	}
	chownTree(t, sock, cred)
	s := &dbServer{kind: "postgres", data: data, sock: sock, port: testkit.FreePort(t)}
	args := append([]string{"-D", data, "-p", strconv.Itoa(s.port), "-k", sock, "-c", "listen_addresses=", "-c", "fsync=on"}, extra...)
	s.start(t, cred, pgBin(t, "postgres"), args, "database system is ready to accept connections")
	return s
}

// initMariaDB makes a new data directory.
func initMariaDB(t *testing.T, data string) {
	t.Helper()
	cred := dbUser(t, "mysql")
	testkit.NeedCommand(t, "mariadb-install-db")
	if err := os.MkdirAll(data, 0o755); err != nil {
		t.Fatal(err)
	}
	chownTree(t, data, cred)
	runAs(t, cred, "mariadb-install-db", "--no-defaults", "--datadir="+data, "--auth-root-authentication-method=normal", "--skip-test-db")
}

// startMariaDB runs mariadbd on data, on a socket and a fresh port, and
// waits until it accepts connections; the test ends it.
func startMariaDB(t *testing.T, data string) *dbServer {
	t.Helper()
	cred := dbUser(t, "mysql")
	mariadbd := testkit.NeedCommand(t, "mariadbd")
	chownTree(t, data, cred)
	dir := dbDir(t)
	chownTree(t, dir, cred)
	s := &dbServer{kind: "mariadb", data: data, sock: filepath.Join(dir, "mysqld.sock"), port: testkit.FreePort(t)}
	args := []string{"--no-defaults", "--datadir=" + data, "--socket=" + s.sock, "--port=" + strconv.Itoa(s.port),
		"--bind-address=127.0.0.1", "--pid-file=" + filepath.Join(dir, "pid"), "--innodb-flush-log-at-trx-commit=1"}
	s.start(t, cred, mariadbd, args, "ready for connections")
	return s
}

// start runs the server and waits for its ready line on stderr.
func (s *dbServer) start(t *testing.T, cred *syscall.Credential, bin string, args []string, ready string) {
	t.Helper()
	s.cmd = exec.Command(bin, args...)
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Setpgid: true}
	s.cmd.Dir = "/"
	out, err := s.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s.done = make(chan struct{})
	up := make(chan struct{})
	var once sync.Once
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			s.mu.Lock()
			s.logs = append(s.logs, sc.Text())
			s.mu.Unlock()
			if strings.Contains(sc.Text(), ready) {
				once.Do(func() { close(up) })
			}
		}
		_ = s.cmd.Wait()
		close(s.done)
	}()
	t.Cleanup(s.stop)
	select {
	case <-up:
	case <-s.done:
		t.Fatalf("%s on %s ended before it was ready:\n%s", s.kind, s.data, s.log())
	case <-time.After(2 * time.Minute):
		t.Fatalf("%s on %s not ready after 2 minutes:\n%s", s.kind, s.data, s.log())
	}
}

// stop ends the server cleanly (SIGTERM: PostgreSQL's smart shutdown,
// mariadbd's normal one), then for good.
func (s *dbServer) stop() {
	select {
	case <-s.done:
		return
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.done
	}
}

// log is the server's log so far.
func (s *dbServer) log() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.logs, "\n")
}

// client is the server's command line client's argv, as root.
func (s *dbServer) client() []string {
	if s.kind == "postgres" {
		return []string{"psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", s.sock, "-p", strconv.Itoa(s.port), "-U", "postgres", "-d", "postgres"}
	}
	return []string{"mariadb", "--no-defaults", "--unbuffered", "-N", "-B", "-S", s.sock, "-u", "root"}
}

// sql runs statements through the command line client and returns what
// it printed.
func (s *dbServer) sql(t *testing.T, statements string) string {
	t.Helper()
	argv := s.client()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin = strings.NewReader(statements)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s\n%s", statements, err, out, s.log())
	}
	return strings.TrimSpace(string(out))
}

// writer commits numbered transactions, one at a time, through a client
// session, and keeps when each was acknowledged.
type writer struct {
	mu    sync.Mutex
	acked int64     // the highest number committed and acknowledged
	last  time.Time // when it was
	stall time.Duration
	err   error
	done  chan struct{}
	stop  context.CancelFunc
}

// createTable makes the table the writer fills: a primary key (a btree
// index for the integrity checks) and some padding, so that pages fill
// and split.
func (s *dbServer) createTable(t *testing.T) {
	t.Helper()
	if s.kind == "postgres" {
		s.sql(t, "CREATE TABLE tx (n bigint PRIMARY KEY, at timestamptz NOT NULL DEFAULT now(), pad text NOT NULL);")
		return
	}
	s.sql(t, "CREATE DATABASE app; CREATE TABLE app.tx (n bigint PRIMARY KEY, at timestamp(6) NOT NULL DEFAULT now(6), pad varchar(300) NOT NULL) ENGINE=InnoDB;")
}

// startWriter starts committing transactions 1, 2, 3... until the test
// ends or stop is called; every each-th transaction is followed by extra
// (a CHECKPOINT, say) when extra is not empty.
func (s *dbServer) startWriter(t *testing.T, extra string, each int64) *writer {
	t.Helper()
	argv := s.client()
	cmd := exec.Command(argv[0], argv[1:]...)
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &writer{done: make(chan struct{}), stop: cancel, last: time.Now()}
	go func() {
		defer close(w.done)
		defer func() { in.Close(); _ = cmd.Process.Kill(); _ = cmd.Wait() }()
		r := bufio.NewReader(out)
		for n := int64(1); ctx.Err() == nil; n++ {
			var stmt string
			if s.kind == "postgres" {
				stmt = fmt.Sprintf("INSERT INTO tx (n, pad) VALUES (%d, repeat('x', 200));\n\\echo ack %d\n", n, n)
			} else {
				stmt = fmt.Sprintf("INSERT INTO app.tx (n, pad) VALUES (%d, repeat('x', 200));\nSELECT 'ack %d';\n", n, n)
			}
			if extra != "" && n%each == 0 {
				stmt = extra + "\n" + stmt
			}
			if _, err := io.WriteString(in, stmt); err != nil {
				w.fail(fmt.Errorf("write transaction %d: %w", n, err))
				return
			}
			for {
				line, err := r.ReadString('\n')
				if err != nil {
					w.fail(fmt.Errorf("transaction %d: the client ended: %w", n, err))
					return
				}
				if strings.TrimSpace(line) == fmt.Sprintf("ack %d", n) {
					break
				}
				if strings.Contains(line, "ERROR") {
					w.fail(fmt.Errorf("transaction %d: %s", n, line))
					return
				}
			}
			w.mu.Lock()
			now := time.Now()
			w.stall = max(w.stall, now.Sub(w.last))
			w.acked, w.last = n, now
			w.mu.Unlock()
		}
	}()
	t.Cleanup(func() { cancel(); <-w.done })
	return w
}

func (w *writer) fail(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.err = err
}

// state returns the highest acknowledged transaction, the longest stall
// so far (the gap between two acknowledgements, or since the last one),
// and the writer's error.
func (w *writer) state() (int64, time.Duration, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.acked, max(w.stall, time.Since(w.last)), w.err
}

// resetStall starts measuring the longest stall afresh.
func (w *writer) resetStall() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stall, w.last = 0, time.Now()
}

// waitAcked waits until the writer has committed at least n transactions.
func (w *writer) waitAcked(t *testing.T, n int64) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		acked, _, err := w.state()
		if err != nil {
			t.Fatal(err)
		}
		if acked >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the writer committed %d transactions in a minute, want %d", acked, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// slowCopy copies the tree src to dst the way a file-level backup reads a
// volume: a plain recursive walk, one file after the other, with a pause
// between files (and between chunks of a file, when chunk is not 0), so
// that writes arrive during the copy where the method lets them. It
// returns the number of files.
func slowCopy(t *testing.T, src, dst string, pause time.Duration, chunk int) int {
	t.Helper()
	files := 0
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		to := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return os.MkdirAll(to, info.Mode().Perm())
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(target, to)
		case !d.Type().IsRegular():
			return nil // sockets, lock files' FIFOs: not data
		}
		b, err := readSlowly(p, chunk, pause)
		if err != nil {
			return err
		}
		files++
		time.Sleep(pause)
		return os.WriteFile(to, b, info.Mode().Perm())
	})
	if err != nil {
		t.Fatalf("copy %s: %v", src, err)
	}
	return files
}

// checkRestored starts a fresh server on a copy and checks it: it starts,
// the database's own integrity check passes, and the table holds every
// transaction from 1 to at least committed, with no gaps, and none past
// atMost (0: no bound). It returns the check's output for the report.
func checkRestored(t *testing.T, kind, copyDir string, committed, atMost int64) string {
	t.Helper()
	var s *dbServer
	var check string
	if kind == "postgres" {
		s = startPostgres(t, copyDir)
		cmd := exec.Command(pgBin(t, "pg_amcheck"), "-h", s.sock, "-p", strconv.Itoa(s.port), "-U", "postgres", "--all",
			"--install-missing", "--heapallindexed", "--parent-check", "--progress")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("pg_amcheck on the restored copy: %v\n%s", err, out)
		}
		check = fmt.Sprintf("pg_amcheck --all --install-missing --heapallindexed --parent-check: %s\n%s", exitOf(err), lastLines(string(out), 4))
	} else {
		s = startMariaDB(t, copyDir)
		cmd := exec.Command("mariadb-check", "--no-defaults", "-S", s.sock, "-u", "root", "--all-databases", "--extended")
		out, err := cmd.CombinedOutput()
		if err != nil || strings.Contains(string(out), "error") || strings.Contains(string(out), "corrupt") {
			t.Errorf("mariadb-check on the restored copy: %v\n%s", err, out)
		}
		check = fmt.Sprintf("mariadb-check --all-databases --extended: %s, %s", exitOf(err), strings.Join(strings.Fields(grepLine(string(out), "app.tx")), " "))
	}
	table := "tx"
	if kind == "mariadb" {
		table = "app.tx"
	}
	got := strings.FieldsFunc(s.sql(t, "SELECT count(*), min(n), max(n) FROM "+table+";"), func(r rune) bool { return r == '|' || r == ' ' || r == '\t' })
	if len(got) != 3 {
		t.Fatalf("the restored table: %q", got)
	}
	count, _ := strconv.ParseInt(got[0], 10, 64)
	low, _ := strconv.ParseInt(got[1], 10, 64)
	high, _ := strconv.ParseInt(got[2], 10, 64)
	if low != 1 || count != high || high < committed || (atMost > 0 && high > atMost) {
		t.Errorf("the restored table holds %d rows from %d to %d; want every transaction from 1 to at least %d (at most %d), no gaps",
			count, low, high, committed, atMost)
	}
	for _, bad := range []string{"PANIC", "corrupt", "[ERROR]"} {
		if strings.Contains(s.log(), bad) {
			t.Errorf("the restored server logged %q:\n%s", bad, s.log())
		}
	}
	s.stop()
	return fmt.Sprintf("%s\nrows: %d, from %d to %d (%d missing); required: every one from 1 to at least %d", check, count, low, high, high-low+1-count, committed)
}

// exitOf says how a command ended.
func exitOf(err error) string {
	if err == nil {
		return "exit 0"
	}
	return err.Error()
}

// readSlowly reads a file whole, or chunk bytes at a time with a pause
// after each.
func readSlowly(path string, chunk int, pause time.Duration) ([]byte, error) {
	if chunk == 0 {
		return os.ReadFile(path)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []byte
	buf := make([]byte, chunk)
	for {
		n, err := f.Read(buf)
		out = append(out, buf[:n]...)
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		time.Sleep(pause)
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

func grepLine(s, substr string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			return l
		}
	}
	return ""
}
