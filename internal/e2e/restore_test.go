package e2e

import (
	"context"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tandemdb/tandem/internal/testenv"
	"github.com/tandemdb/tandem/internal/workload"
)

// TestSeedFromBackup: a new site B starts from a physical backup of site A
// (mariadb-backup, taken while A is written) instead of a logical copy.
// `replicator seed --backup-gtid` refuses until `schema prepare` gave the
// restored tables B's triggers, then stores where B's sinks start in A's
// topic (just after the backup's last transaction) and removes what was
// A's alone, writing nothing to B's binary log, with the least privileges
// docs/privileges.md lists. B runs, is written too,
// and the sites converge row by row, versions included, with no change
// published twice.
func TestSeedFromBackup(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	// A has a server of its own: the backup copies the whole server.
	a := testenv.NewMariaDB(t, testenv.MariaDBOptions{Site: 1})
	c := newCluster(t, testenv.SharedBroker(t), a, testenv.SharedMariaDB(t, 2))
	c.createTables()
	c.writeConfigs("")
	c.prepare()
	c.start(0) // A runs alone: B does not exist yet
	ctx := context.Background()
	st, err := workload.Run(ctx, c.dbAt(0), workload.Options{DB: c.db, Seed: seed(t), Changes: 20_000, Keys: 2000})
	if err != nil {
		t.Fatal(err)
	}
	if st.Deletes == 0 {
		t.Fatal("the workload deleted nothing: no tombstones in the backup")
	}
	// A local conflict record, which must not follow A's data to B.
	if _, err := c.dbAt(0).Exec("INSERT INTO `" + c.meta + "`._tandem_conflicts (kind, detail) VALUES ('lost', 'A''s own')"); err != nil {
		t.Fatal(err)
	}

	// A keeps being written during the backup and after it.
	wctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var during workload.Stats
	var duringErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		during, duringErr = workload.Run(wctx, c.dbAt(0), workload.Options{DB: c.db, Seed: seed(t), Changes: 1_000_000, Keys: 2000, Rate: 2000})
	}()
	dir, gtid := a.Backup(t)
	t.Logf("backup of A consistent with GTID %s", gtid)

	// B's server starts on the restored backup.
	b := testenv.NewMariaDB(t, testenv.MariaDBOptions{Site: 2, DataDirFrom: dir})
	c.sites[1].srv = b
	c.writeConfigs("")
	binlogPos := func() string {
		var pos string
		if err := c.dbAt(1).QueryRow("SELECT @@gtid_binlog_pos").Scan(&pos); err != nil {
			t.Fatal(err)
		}
		return pos
	}

	for _, bad := range []struct {
		args []string
		want string
	}{
		{[]string{"--from", "s1", "--backup-gtid", "yesterday"}, `--backup-gtid "yesterday" is not a GTID position`},
		{[]string{"--from", "s1", "--backup-gtid", gtid, "--from-addr", a.Addr()}, "either --from-addr"},
		// The restored tables still carry A's triggers.
		{[]string{"--from", "s1", "--backup-gtid", gtid}, "run `replicator schema prepare` first"},
	} {
		if out, err := c.replicatorCmd(1, append([]string{"seed"}, bad.args...)...); err == nil || !strings.Contains(out, bad.want) {
			t.Errorf("seed %v: err %v, want output naming %q:\n%s", bad.args, err, bad.want, out)
		}
	}
	if out, err := c.replicatorCmd(1, "schema", "prepare"); err != nil {
		t.Fatalf("schema prepare at B: %v\n%s", err, out)
	}
	// The seed runs with the account of docs/privileges.md ("Seed").
	user := "tandem_seed_" + strings.TrimPrefix(c.db, "e2e")
	account := "'" + user + "'@'%'"
	b.Exec(t, "CREATE USER "+account+" IDENTIFIED BY 'seed-pw'")
	for _, g := range []string{"SELECT, TRIGGER ON `" + c.db + "`.*", "SELECT, INSERT, UPDATE, DELETE, TRIGGER ON `" + c.meta + "`.*", "BINLOG ADMIN ON *.*"} {
		b.Exec(t, "GRANT "+g+" TO "+account)
	}
	cfgText, err := os.ReadFile(c.sites[1].cfg)
	if err != nil {
		t.Fatal(err)
	}
	seedCfg := c.sites[1].cfg + ".seed.yaml"
	if err := os.WriteFile(seedCfg, []byte(strings.Replace(string(cfgText), "user: root}", "user: "+user+"}", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	before := binlogPos()
	out, err := c.replicatorCmdWith(seedCfg, []string{"TANDEM_DATABASE_PASSWORD=seed-pw"}, "seed", "--from", "s1", "--backup-gtid", gtid)
	if err != nil {
		t.Fatalf("seed: %v\n%s", err, out)
	}
	t.Logf("seed:\n%s", out)
	if after := binlogPos(); after != before {
		t.Errorf("the seed wrote to B's binary log: gtid_binlog_pos %q before, %q after", before, after)
	}
	var conflicts int
	if err := c.dbAt(1).QueryRow("SELECT COUNT(*) FROM `" + c.meta + "`._tandem_conflicts").Scan(&conflicts); err != nil {
		t.Fatal(err)
	}
	if conflicts != 0 {
		t.Errorf("B holds %d of A's conflict records after the seed", conflicts)
	}
	if out, err := c.replicatorCmd(1, "seed", "--from", "s1", "--backup-gtid", gtid); err == nil || !strings.Contains(out, "seed only a new site") {
		t.Errorf("second seed: err %v, output:\n%s", err, out)
	}

	c.start(1)
	if _, err := workload.Run(ctx, c.dbAt(1), workload.Options{DB: c.db, Seed: seed(t), Changes: 5000, Keys: 2000, Rate: 2000}); err != nil {
		t.Fatal(err)
	}
	stop()
	wg.Wait()
	if duringErr != nil && wctx.Err() == nil {
		t.Fatal(duringErr)
	}
	t.Logf("A during and after the backup: %+v", during)
	if during.Changes() == 0 {
		t.Fatal("A was not written during the backup")
	}
	res := c.waitConverged(0, 1, 3*time.Minute)
	t.Logf("B equals A: rows %v", res.Rows)
	for _, tb := range workload.Tables {
		if res.Rows[c.db+"."+tb] == 0 {
			t.Errorf("table %s is empty", tb)
		}
	}
	checkNoEcho(t, c)
}
