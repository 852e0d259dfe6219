package schema

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	gomysql "github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/replication"
	"github.com/go-sql-driver/mysql"
)

// user creates an account with the given grants (each "PRIVS ON what")
// and returns a pool logged in as it.
func (f *fixture) user(t *testing.T, role string, grants ...string) *sql.DB {
	t.Helper()
	h := fnv.New32a()
	h.Write([]byte(f.data))
	name := fmt.Sprintf("tandem_%s_%x", role, h.Sum32())
	account := quoteString(name) + "@'%'"
	f.m.Exec(t, "CREATE USER "+account+" IDENTIFIED BY 'pw'")
	t.Cleanup(func() { _, _ = f.db.Exec("DROP USER IF EXISTS " + account) })
	for _, g := range grants {
		f.m.Exec(t, "GRANT "+g+" TO "+account)
	}
	cfg := f.m.Config(f.data)
	cfg.User, cfg.Passwd = name, "pw"
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		t.Fatal(err)
	}
	db := sql.OpenDB(conn)
	t.Cleanup(func() { db.Close() })
	return db
}

// The least-privilege accounts of docs/privileges.md work.
func TestLeastPrivilege(t *testing.T) {
	f := newFixture(t, 2, testTables[0])
	ctx := context.Background()
	data, meta := QuoteIdent(f.data)+".*", QuoteIdent(f.meta)+".*"
	const prepPrivs = "SELECT, INSERT, UPDATE, CREATE, ALTER, TRIGGER"
	prep := f.user(t, "prep", prepPrivs+" ON "+data, prepPrivs+" ON "+meta)

	// With binary logging on, creating triggers needs SUPER or
	// log_bin_trust_function_creators.
	var trust int
	if err := f.db.QueryRow("SELECT @@GLOBAL.log_bin_trust_function_creators").Scan(&trust); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.m.Exec(t, fmt.Sprintf("SET GLOBAL log_bin_trust_function_creators = %d", trust)) })
	f.m.Exec(t, "SET GLOBAL log_bin_trust_function_creators = 0")
	plan, err := Inspect(ctx, prep, f.opt)
	if err != nil {
		t.Fatal(err)
	}
	err = plan.Apply(ctx, prep)
	var me *mysql.MySQLError
	if !errors.As(err, &me) || me.Number != 1419 {
		t.Fatalf("prepare without SUPER and log_bin_trust_function_creators: %v; want error 1419", err)
	}
	f.m.Exec(t, "SET GLOBAL log_bin_trust_function_creators = 1")
	if err := plan.Apply(ctx, prep); err != nil {
		t.Fatalf("prepare with the documented grants: %v", err)
	}
	if p, err := Inspect(ctx, prep, f.opt); err != nil || !p.Empty() {
		t.Fatalf("Inspect as the prepare account after prepare: %v\n%v", err, p)
	}

	// The application needs nothing on Tandem's tables: triggers run with
	// their definer's (the prepare account's) privileges.
	app := f.user(t, "app", "SELECT, INSERT, UPDATE, DELETE ON "+data)
	for _, q := range []string{
		"INSERT INTO accounts (id, name) VALUES (1, 'a')",
		"UPDATE accounts SET name = 'b' WHERE id = 1",
		"UPDATE accounts SET id = 2 WHERE id = 1",
		"DELETE FROM accounts WHERE id = 2",
	} {
		if _, err := app.Exec(q); err != nil {
			t.Errorf("application account: %s: %v", q, err)
		}
	}

	// The sink writes rows, versions, tombstones and offsets.
	sinkDB := f.user(t, "sink", "SELECT, INSERT, UPDATE, DELETE ON "+data, "SELECT, INSERT, UPDATE, DELETE ON "+meta)
	c, err := sinkDB.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, q := range []string{
		"SET " + ApplySessionVar + " = 1",
		"INSERT INTO accounts (id, name, _tandem_hlc) VALUES (5, 'r', 1234)",
		"INSERT INTO " + TombTable("accounts") + " (id, _tandem_hlc) VALUES (6, 1235)",
		"INSERT INTO " + QuoteIdent(f.meta) + "." + Offsets + " (topic, part, next_offset, origin) VALUES ('t', 0, 1, 3)",
	} {
		if _, err := c.ExecContext(ctx, q); err != nil {
			t.Errorf("sink account: %s: %v", q, err)
		}
	}

	// Check needs the TRIGGER privilege to see triggers at all.
	checker := f.user(t, "check", "SELECT, TRIGGER ON "+data, "SELECT, TRIGGER ON "+meta)
	problems, err := Check(ctx, checker, f.opt)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("Check as the check account: %s", p)
	}
	blind := f.user(t, "blind", "SELECT ON "+data, "SELECT ON "+meta)
	problems, err = Check(ctx, blind, f.opt)
	if err != nil {
		t.Fatal(err)
	}
	if len(problems) == 0 || !containsFix(problems, "needs the TRIGGER privilege") {
		t.Errorf("Check without TRIGGER privilege: %v; want missing triggers with a hint about the privilege", problems)
	}
}

func containsFix(problems []Problem, s string) bool {
	for _, p := range problems {
		if strings.Contains(p.Fix, s) {
			return true
		}
	}
	return false
}

// The reader's account of docs/privileges.md can stream the binary log.
func TestReaderPrivileges(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 2, testTables[0])
	reader := f.user(t, "reader", "REPLICATION SLAVE, BINLOG MONITOR ON *.*", "SELECT ON "+QuoteIdent(f.data)+".*")
	var pos string
	if err := reader.QueryRow("SELECT @@gtid_binlog_pos").Scan(&pos); err != nil {
		t.Fatal(err)
	}
	var file string
	var offset int64
	var ignore sql.NullString
	if err := reader.QueryRow("SHOW BINLOG STATUS").Scan(&file, &offset, &ignore, &ignore); err != nil {
		t.Fatalf("SHOW BINLOG STATUS as the reader: %v", err)
	}
	gset, err := gomysql.ParseMariadbGTIDSet(pos)
	if err != nil {
		t.Fatal(err)
	}
	h := fnv.New32a()
	h.Write([]byte(f.data))
	syncer := replication.NewBinlogSyncer(replication.BinlogSyncerConfig{
		ServerID:         1000 + h.Sum32()%1000000,
		Flavor:           "mariadb",
		Host:             f.m.Host,
		Port:             uint16(f.m.Port),
		User:             "tandem_reader_" + fmt.Sprintf("%x", h.Sum32()),
		Password:         "pw",
		DisableRetrySync: true,
		Logger:           slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	defer syncer.Close()
	streamer, err := syncer.StartSyncGTID(gset)
	if err != nil {
		t.Fatalf("start binlog stream as the reader: %v", err)
	}
	f.exec(t, "INSERT INTO accounts (id, name) VALUES (1, 'streamed')")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		ev, err := streamer.GetEvent(ctx)
		if err != nil {
			t.Fatalf("read binlog as the reader: %v", err)
		}
		if rows, ok := ev.Event.(*replication.RowsEvent); ok && string(rows.Table.Schema) == f.data && string(rows.Table.Table) == "accounts" {
			return
		}
	}
}
