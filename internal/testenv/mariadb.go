package testenv

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"database/sql/driver"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/tandemdb/tandem/internal/fsutil"
)

// innodbLogFileSize keeps the template datadir small (the default redo log
// is 96 MiB) so copying it per server is cheap. Template and servers must
// agree, or every start would resize the log.
const innodbLogFileSize = "16M"

// MariaDB is a mariadbd child process with binary logs on, listening on a
// loopback port, with its own datadir.
type MariaDB struct {
	Host     string // always 127.0.0.1
	Port     int
	User     string // root
	Password string // empty
	ServerID uint32 // 100 + site
	DomainID uint32 // gtid_domain_id = site
	DataDir  string
	Socket   string

	site      int
	opt       MariaDBOptions
	shared    bool
	root      string // temporary directory holding everything below
	logPath   string
	fakeFile  string // libfaketime spec, re-read on every clock call
	mariadbd  string
	fakeLib   string
	mu        sync.Mutex // guards proc and admin
	proc      *process
	admin     *sql.DB
	adminConn driver.Connector
}

// MariaDBOptions configures a dedicated server.
type MariaDBOptions struct {
	// Site numbers the site, 1..n (0 means 1): server_id = 100+Site,
	// gtid_domain_id = Site.
	Site int
	// BinlogFormat is binlog_format; default ROW.
	BinlogFormat string
	// RowMetadata is binlog_row_metadata; default FULL.
	RowMetadata string
	// FakeTime runs mariadbd under libfaketime with this spec (e.g. "+30s",
	// "-2m", "@2030-01-01 00:00:00"); SetFakeTime changes it while the
	// server runs. CLOCK_MONOTONIC is left real. Needs the Debian package
	// faketime; without it the test skips (fails under CI).
	FakeTime string
	// ExtraArgs are appended to mariadbd's command line and so override
	// the defaults.
	ExtraArgs []string
	// DataDirFrom, when set, is copied as the server's data directory
	// instead of a fresh one: a physical backup restored (Backup).
	DataDirFrom string
}

// SharedMariaDB returns the server of site (1..n) shared by all tests of the
// test binary, starting it on first use. Tests must not stop, kill or
// restart it, and should work in their own database (NewDatabase).
func SharedMariaDB(t testing.TB, site int) *MariaDB {
	t.Helper()
	skipShort(t, "MariaDB")
	if site < 1 {
		t.Fatalf("testenv: SharedMariaDB site %d: want 1..n", site)
	}
	m, err := shared.mariadbSlot(site).get(func() (*MariaDB, error) {
		m, err := startMariaDB(MariaDBOptions{Site: site}, true)
		if err != nil {
			return nil, err
		}
		shared.onStop(func(failed bool) error { return m.cleanup(failed, stderrf) })
		return m, nil
	})
	if err != nil {
		failStart(t, fmt.Errorf("shared MariaDB site %d: %w", site, err))
		return nil
	}
	return m
}

// NewMariaDB starts a server for this test only; it is killed and its
// datadir removed at the end of the test (logs are kept when the test
// failed, and their path is logged).
func NewMariaDB(t testing.TB, opt MariaDBOptions) *MariaDB {
	t.Helper()
	skipShort(t, "MariaDB")
	m, err := startMariaDB(opt, false)
	if err != nil {
		failStart(t, err)
		return nil
	}
	t.Cleanup(func() {
		if err := m.cleanup(t.Failed(), t.Logf); err != nil {
			t.Error(err)
		}
	})
	return m
}

// Addr returns "127.0.0.1:port".
func (m *MariaDB) Addr() string {
	return m.Host + ":" + strconv.Itoa(m.Port)
}

// Config returns the go-sql-driver configuration DSN returns: TCP, the
// given database (may be empty), utf8mb4_bin, no parseTime, no
// multiStatements, no client-side interpolation, times in UTC.
func (m *MariaDB) Config(db string) *mysql.Config {
	cfg := mysql.NewConfig()
	cfg.User = m.User
	cfg.Passwd = m.Password
	cfg.Net = "tcp"
	cfg.Addr = m.Addr()
	cfg.DBName = db
	cfg.Collation = "utf8mb4_bin"
	cfg.Loc = time.UTC
	cfg.ParseTime = false
	cfg.MultiStatements = false
	cfg.InterpolateParams = false
	cfg.Timeout = 5 * time.Second
	return cfg
}

// DSN returns a go-sql-driver DSN for database db (may be empty).
func (m *MariaDB) DSN(db string) string {
	return m.Config(db).FormatDSN()
}

// DB opens a connection pool on database db (may be empty), checks that it
// works and closes it when the test ends.
func (m *MariaDB) DB(t testing.TB, db string) *sql.DB {
	t.Helper()
	return m.Open(t, m.Config(db))
}

// SinkDB is DB with several statements allowed per query, as the
// replicator opens its sinks' pool (config.Database.SinkDSN).
func (m *MariaDB) SinkDB(t testing.TB, db string) *sql.DB {
	t.Helper()
	cfg := m.Config(db)
	cfg.MultiStatements = true
	return m.Open(t, cfg)
}

// Open is DB for a configuration derived from Config: another address
// (a proxy in front of the server), other driver settings.
func (m *MariaDB) Open(t testing.TB, cfg *mysql.Config) *sql.DB {
	t.Helper()
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		t.Fatalf("testenv: MariaDB %s: %v", cfg.Addr, err)
	}
	pool := sql.OpenDB(conn)
	t.Cleanup(func() { pool.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := pool.PingContext(ctx); err != nil {
		t.Fatalf("testenv: MariaDB %s: connect to database %q: %v", cfg.Addr, cfg.DBName, err)
	}
	return pool
}

// Exec runs one statement as root, failing the test on error.
func (m *MariaDB) Exec(t testing.TB, query string, args ...any) {
	t.Helper()
	if err := m.exec(query, args...); err != nil {
		t.Fatalf("testenv: MariaDB %s: %s: %v", m.Addr(), query, err)
	}
}

func (m *MariaDB) exec(query string, args ...any) error {
	db, err := m.adminDB()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err = db.ExecContext(ctx, query, args...)
	return err
}

// adminDB returns the root pool used by Exec, opened on first use and
// closed whenever the server stops.
func (m *MariaDB) adminDB() (*sql.DB, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.proc == nil || m.proc.exited() {
		return nil, errors.New("server is not running")
	}
	if m.admin == nil {
		m.admin = sql.OpenDB(m.adminConn)
	}
	return m.admin, nil
}

// Stop shuts the server down gracefully and waits for it to exit.
func (m *MariaDB) Stop(t testing.TB) {
	t.Helper()
	m.mustBeDedicated(t, "Stop")
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closeAdminLocked()
	if m.proc == nil {
		return
	}
	if err := m.proc.stop(); err != nil {
		t.Fatalf("testenv: MariaDB %s: stop: %v; log %s:\n%s", m.Addr(), err, m.logPath, tailFile(m.logPath, 30))
	}
}

// Kill sends SIGKILL, like a crash, and waits until the process is gone.
func (m *MariaDB) Kill(t testing.TB) {
	t.Helper()
	m.mustBeDedicated(t, "Kill")
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closeAdminLocked()
	if m.proc != nil {
		m.proc.kill()
	}
}

// Start starts a stopped or killed server again on the same port and
// datadir, and waits until it accepts connections (after crash recovery).
func (m *MariaDB) Start(t testing.TB) {
	t.Helper()
	m.mustBeDedicated(t, "Start")
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.proc != nil && !m.proc.exited() {
		t.Fatalf("testenv: MariaDB %s: Start: already running", m.Addr())
	}
	if err := m.startLocked(); err != nil {
		t.Fatal(err)
	}
}

// SetFakeTime changes the libfaketime spec of a server started with
// MariaDBOptions.FakeTime. The server sees the new time from its next clock
// reading; poll (WaitFor) on SELECT NOW(6) rather than assuming.
func (m *MariaDB) SetFakeTime(t testing.TB, spec string) {
	t.Helper()
	if m.fakeFile == "" {
		t.Fatalf("testenv: MariaDB %s: SetFakeTime needs MariaDBOptions.FakeTime", m.Addr())
	}
	if err := fsutil.WriteFileAtomic(m.fakeFile, spec+"\n"); err != nil {
		t.Fatalf("testenv: MariaDB %s: SetFakeTime: %v", m.Addr(), err)
	}
}

// LogPath returns the server's error log.
func (m *MariaDB) LogPath() string { return m.logPath }

func (m *MariaDB) mustBeDedicated(t testing.TB, op string) {
	t.Helper()
	if m.shared {
		t.Fatalf("testenv: %s on the shared MariaDB of site %d; use NewMariaDB for tests that stop or crash servers", op, m.site)
	}
}

func (m *MariaDB) closeAdminLocked() {
	if m.admin != nil {
		m.admin.Close()
		m.admin = nil
	}
}

// CreateDatabase creates database name on this server and drops it at the
// end of the test. Use it (or NewDatabaseOn) to create the same schema name
// on several sites.
func (m *MariaDB) CreateDatabase(t testing.TB, name string) {
	t.Helper()
	m.Exec(t, "CREATE DATABASE "+quoteIdent(name))
	t.Cleanup(func() {
		m.mu.Lock()
		running := m.proc != nil && !m.proc.exited()
		m.mu.Unlock()
		if !running {
			return // the test stopped the server; its datadir goes anyway
		}
		if err := m.exec("DROP DATABASE IF EXISTS " + quoteIdent(name)); err != nil {
			t.Errorf("testenv: MariaDB %s: drop database %s: %v", m.Addr(), name, err)
		}
	})
}

// NewDatabase creates a database with a unique name derived from the test
// name (at most 64 bytes) on m, drops it at the end of the test and returns
// the name.
func NewDatabase(t testing.TB, m *MariaDB) string {
	t.Helper()
	return NewDatabaseOn(t, "", m)
}

// NewDatabaseOn creates one database with a unique name on every given
// server, so sites share a schema name, and returns the name. The name is
// prefix (default "t_") + the sanitized test name + a sequence number.
func NewDatabaseOn(t testing.TB, prefix string, sites ...*MariaDB) string {
	t.Helper()
	if prefix == "" {
		prefix = "t_"
	}
	name := uniqueName(t, prefix, 64)
	for _, m := range sites {
		m.CreateDatabase(t, name)
	}
	return name
}

func quoteIdent(s string) string {
	return "`" + strings.ReplaceAll(s, "`", "``") + "`"
}

func startMariaDB(opt MariaDBOptions, shared bool) (*MariaDB, error) {
	if opt.Site == 0 {
		opt.Site = 1
	}
	if opt.Site < 0 {
		return nil, fmt.Errorf("testenv: MariaDBOptions.Site %d: want 1..n", opt.Site)
	}
	if opt.BinlogFormat == "" {
		opt.BinlogFormat = "ROW"
	}
	if opt.RowMetadata == "" {
		opt.RowMetadata = "FULL"
	}
	mariadbd, err := lookPath("mariadbd")
	if err != nil {
		return nil, err
	}
	installDB, err := lookPath("mariadb-install-db")
	if err != nil {
		return nil, err
	}
	var fakeLib string
	if opt.FakeTime != "" {
		if fakeLib, err = findFaketime(); err != nil {
			return nil, err
		}
	}
	template, err := mariadbTemplate(mariadbd, installDB)
	if err != nil {
		return nil, err
	}
	root, err := makeRoot(fmt.Sprintf("tandem-mariadb-site%d-", opt.Site))
	if err != nil {
		return nil, fmt.Errorf("testenv: %w", err)
	}
	m := &MariaDB{
		Host:     "127.0.0.1",
		User:     "root",
		ServerID: uint32(100 + opt.Site),
		DomainID: uint32(opt.Site),
		DataDir:  filepath.Join(root, "data"),
		Socket:   filepath.Join(root, "mysqld.sock"),
		site:     opt.Site,
		opt:      opt,
		shared:   shared,
		root:     root,
		logPath:  filepath.Join(root, "error.log"),
		mariadbd: mariadbd,
		fakeLib:  fakeLib,
	}
	if err := os.MkdirAll(filepath.Join(root, "tmp"), 0o700); err != nil {
		os.RemoveAll(root)
		return nil, fmt.Errorf("testenv: %w", err)
	}
	if opt.DataDirFrom != "" {
		template = opt.DataDirFrom
	}
	if out, err := exec.Command("cp", "-a", template, m.DataDir).CombinedOutput(); err != nil {
		os.RemoveAll(root)
		return nil, fmt.Errorf("testenv: copy datadir %s: %v: %s", template, err, out)
	}
	if opt.FakeTime != "" {
		m.fakeFile = filepath.Join(root, "faketime")
		if err := fsutil.WriteFileAtomic(m.fakeFile, opt.FakeTime+"\n"); err != nil {
			os.RemoveAll(root)
			return nil, fmt.Errorf("testenv: %w", err)
		}
	}
	// Another process may take the port between freePort and the bind.
	for attempt := 0; ; attempt++ {
		if m.Port, err = freePort(); err == nil {
			m.mu.Lock()
			err = m.startLocked()
			m.mu.Unlock()
		}
		if err == nil {
			return m, nil
		}
		if !errors.Is(err, errPortInUse) || attempt == 4 {
			_ = m.cleanup(true, nil) // err names the kept log
			return nil, err
		}
		os.Remove(m.logPath) // its bind error would mark the next attempt too
	}
}

func (m *MariaDB) args() []string {
	args := []string{
		"--no-defaults", // must come first
		"--user=root",
		"--datadir=" + m.DataDir,
		"--socket=" + m.Socket,
		"--pid-file=" + filepath.Join(m.root, "mysqld.pid"),
		// A private tmpdir: a starting mariadbd deletes every #sql* file in
		// its tmpdir, which with a shared /tmp includes the live temporary
		// tables of the other test servers.
		"--tmpdir=" + filepath.Join(m.root, "tmp"),
		"--port=" + strconv.Itoa(m.Port),
		"--bind-address=127.0.0.1",
		"--skip-name-resolve",
		"--log-error=" + m.logPath,
		"--log-bin=mysql-bin",
		"--binlog-format=" + m.opt.BinlogFormat,
		"--binlog-row-image=FULL",
		"--binlog-row-metadata=" + m.opt.RowMetadata,
		"--server-id=" + strconv.FormatUint(uint64(m.ServerID), 10),
		"--gtid-domain-id=" + strconv.FormatUint(uint64(m.DomainID), 10),
		"--gtid-strict-mode=0",
		"--character-set-server=utf8mb4",
		"--collation-server=utf8mb4_bin",
		"--default-time-zone=+00:00",
		// Parallel tests share a server, each with replicators holding
		// pools (the sinks' and the rest), verifiers and load
		// generators: 250 connections at once were seen in one run.
		"--max-connections=1500",
		"--max-allowed-packet=64M",
		// Durable against a killed process (the page cache survives), which
		// is the crash these tests inject; not against a machine crash.
		"--innodb-flush-log-at-trx-commit=2",
		"--sync-binlog=0",
		"--innodb-buffer-pool-size=256M",
		"--innodb-log-file-size=" + innodbLogFileSize,
		"--innodb-buffer-pool-dump-at-shutdown=OFF",
		"--innodb-buffer-pool-load-at-startup=OFF",
	}
	return append(args, m.opt.ExtraArgs...)
}

// fakeEnv returns the variables that put mariadbd under libfaketime.
func (m *MariaDB) fakeEnv() []string {
	// The spec lives in a file so SetFakeTime can change it; libfaketime
	// prefers a FAKETIME variable over the file, so none may be inherited.
	return []string{
		"LD_PRELOAD=" + m.fakeLib,
		"FAKETIME_TIMESTAMP_FILE=" + m.fakeFile,
		"FAKETIME_NO_CACHE=1",
		"DONT_FAKE_MONOTONIC=1",
	}
}

// startLocked starts mariadbd and waits until it accepts connections.
func (m *MariaDB) startLocked() error {
	cfg := m.Config("")
	cfg.Timeout = time.Second
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		return fmt.Errorf("testenv: MariaDB: %w", err)
	}
	m.adminConn = conn
	var env []string
	if m.fakeLib != "" {
		env = append(withoutEnv("FAKETIME"), m.fakeEnv()...)
	}
	proc, err := startProcess(m.mariadbd, m.args(), env, m.root, m.logPath)
	if err != nil {
		return fmt.Errorf("testenv: MariaDB site %d: %w", m.site, err)
	}
	m.proc = proc
	var lastErr error
	err = poll(startTimeout, func() (bool, error) {
		if proc.exited() {
			return false, proc.exitError()
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		c, err := conn.Connect(ctx)
		if err != nil {
			lastErr = err
			return false, nil
		}
		c.Close()
		return true, nil
	})
	if err == nil {
		return nil
	}
	proc.kill()
	tail := tailFile(m.logPath, 30)
	if errors.Is(err, errPollTimeout) {
		err = fmt.Errorf("not accepting connections after %v (last error: %v)", startTimeout, lastErr)
	}
	if strings.Contains(tail, "Address already in use") {
		err = fmt.Errorf("%w (%v)", errPortInUse, err)
	}
	return fmt.Errorf("testenv: MariaDB site %d on %s: %w; error log %s:\n%s", m.site, m.Addr(), err, m.logPath, tail)
}

// cleanup kills the server and removes its directory; when keepLogs is set
// it keeps the error log and reports where it is through logf (if not nil).
func (m *MariaDB) cleanup(keepLogs bool, logf func(string, ...any)) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closeAdminLocked()
	if m.proc != nil {
		m.proc.kill()
	}
	if !keepLogs {
		return os.RemoveAll(m.root)
	}
	if logf != nil {
		logf("testenv: MariaDB site %d (%s) error log kept at %s", m.site, m.Addr(), m.logPath)
	}
	return os.RemoveAll(m.DataDir)
}

// template holds the datadir every server is copied from.
var template struct {
	once sync.Once
	dir  string
	err  error
}

// mariadbTemplate returns a datadir initialised by mariadb-install-db. It is
// built once per mariadbd version and options and kept in the temporary
// directory for later test binaries; a lock file serialises test binaries
// that run in parallel.
func mariadbTemplate(mariadbd, installDB string) (string, error) {
	template.once.Do(func() {
		template.dir, template.err = buildTemplate(mariadbd, installDB)
	})
	return template.dir, template.err
}

func buildTemplate(mariadbd, installDB string) (string, error) {
	out, err := exec.Command(mariadbd, "--version").Output()
	if err != nil {
		return "", fmt.Errorf("testenv: %s --version: %w", mariadbd, err)
	}
	version := strings.TrimSpace(string(out))
	args := []string{
		"--no-defaults",
		"--auth-root-authentication-method=normal",
		"--skip-test-db",
		"--skip-name-resolve",
		"--user=root",
		"--innodb-log-file-size=" + innodbLogFileSize,
	}
	sum := sha256.Sum256([]byte(version + "\x00" + installDB + "\x00" + strings.Join(args, "\x00")))
	base := filepath.Join(os.TempDir(), "tandem-testenv-template-"+versionTag(version)+"-"+hex.EncodeToString(sum[:6]))
	data := filepath.Join(base, "data")
	complete := filepath.Join(base, "complete")

	lock, err := os.OpenFile(base+".lock", os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", fmt.Errorf("testenv: template lock: %w", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", fmt.Errorf("testenv: template lock %s: %w", lock.Name(), err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)

	if _, err := os.Stat(complete); err == nil {
		return data, nil
	}
	tmp := fmt.Sprintf("%s.tmp-%d", base, os.Getpid())
	os.RemoveAll(tmp)
	defer os.RemoveAll(tmp)
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return "", fmt.Errorf("testenv: %w", err)
	}
	cmd := exec.Command(installDB, append(args, "--datadir="+filepath.Join(tmp, "data"))...)
	cmd.Dir = tmp
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("testenv: %s: %v:\n%s", installDB, err, out)
	}
	if err := os.WriteFile(filepath.Join(tmp, "complete"), []byte(version+"\n"), 0o644); err != nil {
		return "", fmt.Errorf("testenv: %w", err)
	}
	os.RemoveAll(base)
	if err := os.Rename(tmp, base); err != nil {
		return "", fmt.Errorf("testenv: %w", err)
	}
	return data, nil
}

// versionTag extracts "10.11.19-MariaDB-0+deb12u1" from mariadbd --version.
func versionTag(version string) string {
	fields := strings.Fields(version)
	tag := "unknown"
	for i, f := range fields {
		if f == "Ver" && i+1 < len(fields) {
			tag = fields[i+1]
			break
		}
	}
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '-', r == '+', r == '_':
			return r
		}
		return '_'
	}, tag)
}

// findFaketime returns the path of libfaketime.so.1.
func findFaketime() (string, error) {
	for _, pattern := range []string{
		"/usr/lib/*/faketime/libfaketime.so.1",
		"/usr/lib/faketime/libfaketime.so.1",
		"/usr/local/lib/faketime/libfaketime.so.1",
	} {
		if matches, _ := filepath.Glob(pattern); len(matches) > 0 {
			return matches[0], nil
		}
	}
	return "", &missingError{what: "libfaketime (Debian package faketime)"}
}

// withoutEnv returns os.Environ without the named variables.
func withoutEnv(names ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		drop := false
		for _, n := range names {
			drop = drop || name == n
		}
		if !drop {
			env = append(env, kv)
		}
	}
	return env
}
