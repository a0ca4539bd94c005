package integration

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/avsidecar/avsidecar/internal/hooks"
	"github.com/avsidecar/avsidecar/internal/testkit"
)

// recipeRuns is how many backups each recipe test takes and restores.
const recipeRuns = 3

// copyPause is how long the copy waits between two files: a backup that
// takes its time while the database keeps writing.
const copyPause = 2 * time.Millisecond

// recipe is the hooks JSON of an example, as shipped.
func recipe(t *testing.T, path string) string {
	t.Helper()
	root, err := testkit.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(root, path))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// backupUnderLoad takes runs backups of a database under a writer, as
// Avamar would with the recipe's hooks: the pre script (`avsidecar hook
// pre`, against the real sidecar as PID 1), a slow file-by-file copy of
// dataset, the post script; then restores each copy into a fresh server
// and checks it. A dump's point in time lies inside the pre phase: the
// copy must hold every transaction committed before pre was called, and
// none committed after it returned; a freeze's lies at its end: the copy
// must hold every transaction committed before pre returned. It returns
// the checks' outputs.
func backupUnderLoad(t *testing.T, db *dbServer, spec string, env []string, dataset string, freeze bool, runs int) []string {
	t.Helper()
	db.createTable(t)
	w := db.startWriter(t, "", 0)
	w.waitAcked(t, 200)
	hw, sock := hookWorld(t, spec, "20s")
	hw.env = append(hw.env, env...)
	s := hw.startPID1(t)
	s.waitHooks(t, sock)

	var checks []string
	for i := range runs {
		before, _, _ := w.state()
		if code, out := hookCall(t, hw.bins.Avsidecar, sock, "pre")(); code != 0 {
			t.Fatalf("backup %d: hook pre: exit %d\n%s", i, code, out)
		}
		returned, _, err := w.state()
		if err != nil {
			t.Fatal(err)
		}
		committed, atMost := before, returned+1 // +1: the one in flight when pre returned
		if freeze {
			committed, atMost = returned, 0
		}
		dst := filepath.Join(dbDir(t), "copy")
		files := slowCopy(t, dataset, dst, copyPause, 0)
		after, _, _ := w.state()
		if code, out := hookCall(t, hw.bins.Avsidecar, sock, "post")(); code != 0 {
			t.Fatalf("backup %d: hook post: exit %d\n%s", i, code, out)
		}
		if _, err := os.Stat(dataset); !freeze && !os.IsNotExist(err) {
			t.Errorf("backup %d: the post hook left %s (%v)", i, dataset, err)
		}
		out := checkRestored(t, db.kind, dst, committed, atMost)
		checks = append(checks, out)
		t.Logf("backup %d: transactions committed: %d when pre was called, %d when it returned, %d when the copy ended; %d files copied; restored:\n%s",
			i, before, returned, after, files, out)
		if !freeze && after <= returned {
			t.Errorf("backup %d: no transaction committed during the copy: the writes did not go on", i)
		}
	}
	if _, stall, err := w.state(); err != nil {
		t.Errorf("the writer: %v", err)
	} else {
		t.Logf("the writer's longest stall over %d backups: %s", runs, stall.Round(time.Millisecond))
	}
	st := s.status(t)["hooks"].(map[string]any)
	if thaws := st["thaws"].(map[string]any); thaws["post"] != float64(runs) || len(thaws) != 1 {
		t.Errorf("thaws %v, want %d by post", thaws, runs)
	}
	s.stopPID1(t)
	return checks
}

// TestPostgresRecipe: examples/postgres/hooks.json (pg_basebackup into
// the dump directory at pre, removed at post) under a writer, three
// times; each copy of the dump directory, made file by file after pre
// returned, starts as a server, passes pg_amcheck and holds every
// transaction committed before pre returned, with no gaps.
func TestPostgresRecipe(t *testing.T) {
	data := filepath.Join(dbDir(t), "pgdata")
	initPostgres(t, data)
	db := startPostgres(t, data)
	dump := dbDir(t)
	env := []string{"PGHOST=" + db.sock, "PGPORT=" + strconv.Itoa(db.port), "PGUSER=postgres", "AVAMAR_DUMP_DIR=" + dump}
	backupUnderLoad(t, db, recipe(t, "examples/postgres/hooks.json"), env, filepath.Join(dump, "postgres"), false, recipeRuns)
}

// TestMariaDBRecipe: examples/mariadb/hooks.json (mariadb-backup --backup
// and --prepare into the dump directory at pre, removed at post), the
// same way; each copy passes mariadb-check --extended.
func TestMariaDBRecipe(t *testing.T) {
	testkit.NeedCommand(t, "mariadb-backup")
	data := filepath.Join(dbDir(t), "mysql")
	initMariaDB(t, data)
	db := startMariaDB(t, data)
	dump := dbDir(t)
	cnf := filepath.Join(dbDir(t), "backup.cnf")
	writeFile(t, cnf, "[client-server]\nuser=root\nsocket="+db.sock+"\n[mariadb-backup]\ndatadir="+data+"\n")
	env := []string{"AVAMAR_DUMP_DIR=" + dump, "MARIADB_BACKUP_CNF=" + cnf}
	backupUnderLoad(t, db, recipe(t, "examples/mariadb/hooks.json"), env, filepath.Join(dump, "mariadb"), false, recipeRuns)
}

// TestCopyWithoutHooks is the control: the live data directory copied the
// same way with no hooks at all. It may restore or not; it is run by hand
// (AVSIDECAR_SHOW_UNHOOKED=postgres or mariadb) to show that the check
// above can fail, and is no part of CI.
func TestCopyWithoutHooks(t *testing.T) {
	kind := os.Getenv("AVSIDECAR_SHOW_UNHOOKED")
	if kind == "" {
		t.Skip("a demonstration, not a test: AVSIDECAR_SHOW_UNHOOKED=postgres|mariadb runs it")
	}
	var db *dbServer
	var data, extra string
	switch kind {
	case "postgres":
		data = filepath.Join(dbDir(t), "pgdata")
		initPostgres(t, data)
		db = startPostgres(t, data)
		extra = "CHECKPOINT;" // checkpoints move the redo point while the copy runs
	case "mariadb":
		data = filepath.Join(dbDir(t), "mysql")
		initMariaDB(t, data)
		db = startMariaDB(t, data)
	default:
		t.Fatalf("AVSIDECAR_SHOW_UNHOOKED=%q: postgres or mariadb", kind)
	}
	db.createTable(t)
	w := db.startWriter(t, extra, 500)
	w.waitAcked(t, 20000)
	committed, _, _ := w.state()
	dst := filepath.Join(dbDir(t), "copy")
	files := slowCopy(t, data, dst, 2*time.Millisecond, 64<<10)
	for _, stale := range []string{"postmaster.pid", "postmaster.opts", "aria_log_control.lock"} {
		os.Remove(filepath.Join(dst, stale))
	}
	t.Logf("%d files copied from the live %s data directory, %d transactions committed before", files, kind, committed)
	t.Log(strings.TrimSpace(checkRestored(t, kind, dst, committed, 0)))
}

// TestMariaDBReadLockSession: examples/mariadb/hooks-read-lock.json, a
// session hook that holds FLUSH TABLES WITH READ LOCK from pre to post.
// While it is held the writer commits nothing; post releases it, and the
// writer goes on. When no post call comes, the lease's expiry ends the
// session itself, the writer goes on after max_freeze, and the late post
// call fails.
func TestMariaDBReadLockSession(t *testing.T) {
	data := filepath.Join(dbDir(t), "mysql")
	initMariaDB(t, data)
	db := startMariaDB(t, data)
	cnf := filepath.Join(dbDir(t), "backup.cnf")
	writeFile(t, cnf, "[client-server]\nuser=root\nsocket="+db.sock+"\n")
	spec := strings.Replace(recipe(t, "examples/mariadb/hooks-read-lock.json"), `"max_freeze": "15m"`, `"max_freeze": "3s"`, 1)
	db.createTable(t)
	w := db.startWriter(t, "", 0)
	w.waitAcked(t, 200)
	hw, sock := hookWorld(t, spec, "20s")
	hw.env = append(hw.env, "MARIADB_BACKUP_CNF="+cnf)
	s := hw.startPID1(t)
	s.waitHooks(t, sock)

	// The freeze, ended by the post call.
	if code, out := hookCall(t, hw.bins.Avsidecar, sock, "pre")(); code != 0 {
		t.Fatalf("hook pre: exit %d\n%s", code, out)
	}
	frozen, _, _ := w.state()
	dst := filepath.Join(dbDir(t), "copy")
	files := slowCopy(t, data, dst, copyPause, 0)
	during, _, _ := w.state()
	if code, out := hookCall(t, hw.bins.Avsidecar, sock, "post")(); code != 0 {
		t.Fatalf("hook post: exit %d\n%s", code, out)
	}
	w.waitAcked(t, during+10)
	if during > frozen+1 {
		t.Errorf("the writer committed %d transactions under the read lock", during-frozen)
	}
	t.Logf("%d files copied under the read lock; the writer stood at %d from pre to post, then went on", files, frozen)

	// No post call: the expiry ends the session after max_freeze.
	w.resetStall()
	if code, out := hookCall(t, hw.bins.Avsidecar, sock, "pre")(); code != 0 {
		t.Fatalf("second hook pre: exit %d\n%s", code, out)
	}
	s.log.Wait(t, 0, "the expiry", 30*time.Second, msg("hooks", "freeze lease thawed", "by", "expiry"))
	acked, _, _ := w.state()
	w.waitAcked(t, acked+10)
	_, stall, err := w.state()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("the writer's longest stall with no post call: %s (max_freeze 3s)", stall.Round(time.Millisecond))
	if stall < 2*time.Second || stall > 8*time.Second {
		t.Errorf("stall %s, want about max_freeze (3s), at most 8s", stall)
	}
	if code, out := hookCall(t, hw.bins.Avsidecar, sock, "post")(); code != 1 || !strings.Contains(out, "late: the freeze had ended") {
		t.Errorf("the late post: exit %d\n%s", code, out)
	}
	s.stopPID1(t)
	t.Log(strings.TrimSpace(checkRestored(t, "mariadb", dst, frozen, frozen+1)))
}

// TestPostgresSession: a psql session hook holds PostgreSQL's
// non-exclusive backup mode (pg_backup_start) from pre to post, in one
// session that stays open; post's pg_backup_stop ends it and the session.
// A statement that fails fails the pre phase with the server's error, and
// the undo ends the session.
func TestPostgresSession(t *testing.T) {
	data := filepath.Join(dbDir(t), "pgdata")
	initPostgres(t, data)
	db := startPostgres(t, data)
	psql := `["psql", "-X", "-h", "` + db.sock + `", "-p", "` + strconv.Itoa(db.port) + `", "-U", "postgres"]`
	session := func(stmt string) string {
		return `{"pre": [{"name": "backup-mode", "session": {"command": ` + psql + `, "dialect": "psql",
			"pre": ["` + stmt + `"], "post": ["SELECT lsn FROM pg_backup_stop(false)"]}}]}`
	}
	inBackup := "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_backup_start%';"

	h := newHooksPart(t, session("SELECT pg_backup_start('avamar', true)"))
	pre, err := h.RunPhase(context.Background(), hooks.PhasePre)
	if err != nil || pre.Result != hooks.ResultPassed {
		t.Fatalf("pre %+v, %v", pre, err)
	}
	if got := db.sql(t, inBackup); got != "1" {
		t.Errorf("sessions in backup mode after pre: %s, want 1", got)
	}
	post, err := h.RunPhase(context.Background(), hooks.PhasePost)
	if err != nil || post.Result != hooks.ResultPassed || post.By != hooks.ByPost || len(post.Hooks) != 1 || post.Hooks[0].Kind != "session" {
		t.Fatalf("post %+v, %v", post, err)
	}
	if got := db.sql(t, inBackup); got != "0" {
		t.Errorf("sessions in backup mode after post: %s, want 0", got)
	}

	// The server ends the session during the backup: the post phase says
	// that what it held was let go, and fails.
	if pre, err := h.RunPhase(context.Background(), hooks.PhasePre); err != nil || pre.Result != hooks.ResultPassed {
		t.Fatalf("second pre %+v, %v", pre, err)
	}
	db.sql(t, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_backup_start%';")
	post, err = h.RunPhase(context.Background(), hooks.PhasePost)
	if err != nil || post.Result != hooks.ResultFailed || !strings.Contains(post.Hooks[0].Error, "the session ended during the backup") {
		t.Errorf("post after the session was ended %+v, %v", post, err)
	}

	h = newHooksPart(t, session("SELECT pg_backup_begin('avamar')"))
	pre, err = h.RunPhase(context.Background(), hooks.PhasePre)
	if err != nil || pre.Result != hooks.ResultFailed || pre.Undo == nil || pre.Undo.By != hooks.ByPreFailed {
		t.Fatalf("pre with a bad statement %+v, %v", pre, err)
	}
	if r := pre.Hooks[0]; !strings.Contains(r.Error, "statement 1: the client ended before answering") ||
		!strings.Contains(strings.Join(r.Output, "\n"), "function pg_backup_begin(unknown) does not exist") {
		t.Errorf("the failed statement: %+v", r)
	}
}

// newHooksPart makes the sidecar's hooks part from spec, as `avsidecar
// run` does, without its socket.
func newHooksPart(t *testing.T, spec string) *hooks.Hooks {
	t.Helper()
	dir := t.TempDir()
	h, err := hooks.New(hooks.Config{Spec: spec, Socket: filepath.Join(dir, "h.sock"), ScriptsDir: dir, Command: "avsidecar",
		LeaseFile: filepath.Join(dir, "lease.json")}, zerolog.Nop())
	if err != nil || h.ConfigError() != nil {
		t.Fatal(err, h.ConfigError())
	}
	return h
}
