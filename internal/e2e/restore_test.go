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

// TestSeedFromBackup: a new site B joins sites A and C from a physical
// backup of A (mariadb-backup, taken while A and C are written) instead of
// a logical copy. `replicator seed --backup-gtid` refuses until `schema
// prepare` gave the restored tables B's triggers, and, with two peers,
// until the operator vouches for A's queues; then it stores where B's
// sinks start in A's topic (just after the backup's last transaction) and
// in C's (A's applied offsets, from the backup) and removes what was A's
// alone, writing nothing to B's binary log, with the least privileges
// docs/privileges.md lists. B runs, is written too, and the three sites
// converge row by row, versions included, with no change published twice.
func TestSeedFromBackup(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	// A has a server of its own: the backup copies the whole server.
	a := testenv.NewMariaDB(t, testenv.MariaDBOptions{Site: 1})
	c := newCluster(t, testenv.SharedBroker(t), a, testenv.SharedMariaDB(t, 2), testenv.SharedMariaDB(t, 3))
	const src, other, nw = 0, 1, 2 // A, C and the new site B
	c.createTables()
	c.writeConfigs("")
	c.prepare()
	c.start(src) // A and C run; B does not exist yet
	c.start(other)
	ctx := context.Background()
	for i, n := range map[int]int{src: 20_000, other: 5000} {
		st, err := workload.Run(ctx, c.dbAt(i), workload.Options{DB: c.db, Seed: seed(t), Changes: n, Keys: 2000})
		if err != nil {
			t.Fatal(err)
		}
		if st.Deletes == 0 {
			t.Fatal("the workload deleted nothing: no tombstones in the backup")
		}
	}
	// A local conflict record, which must not follow A's data to B; the
	// progress of a parked retry of C's topic, which must; and offsets of
	// a topic B does not read, which must not.
	for _, q := range []string{
		"INSERT INTO `" + c.meta + "`._tandem_conflicts (kind, detail) VALUES ('lost', 'A''s own')",
		"INSERT INTO `" + c.meta + "`._tandem_offsets (topic, part, next_offset, origin) VALUES ('" + c.prefix + "s2~parked', 0, 5, 2), ('" + c.prefix + "gone', 0, 1, 9)",
	} {
		if _, err := c.dbAt(0).Exec(q); err != nil {
			t.Fatal(err)
		}
	}

	// A and C keep being written during the backup and after it: the
	// backup holds A's applied offsets of C's topic somewhere in the
	// middle.
	wctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var during [2]workload.Stats
	var duringErr [2]error
	for _, i := range []int{src, other} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			during[i], duringErr[i] = workload.Run(wctx, c.dbAt(i), workload.Options{DB: c.db, Seed: seed(t), Changes: 1_000_000, Keys: 2000, Rate: 1000})
		}()
	}
	dir, gtid := a.Backup(t)
	t.Logf("backup of A consistent with GTID %s", gtid)

	// B's server starts on the restored backup.
	b := testenv.NewMariaDB(t, testenv.MariaDBOptions{Site: 3, DataDirFrom: dir})
	c.sites[nw].srv = b
	c.writeConfigs("")
	binlogPos := func() string {
		var pos string
		if err := c.dbAt(nw).QueryRow("SELECT @@gtid_binlog_pos").Scan(&pos); err != nil {
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
		{[]string{"--from", "s1", "--backup-gtid", gtid, "--queues-empty-at-backup"}, "run `replicator schema prepare` first"},
	} {
		if out, err := c.replicatorCmd(nw, append([]string{"seed"}, bad.args...)...); err == nil || !strings.Contains(out, bad.want) {
			t.Errorf("seed %v: err %v, want output naming %q:\n%s", bad.args, err, bad.want, out)
		}
	}
	if out, err := c.replicatorCmd(nw, "schema", "prepare"); err != nil {
		t.Fatalf("schema prepare at B: %v\n%s", err, out)
	}
	// A's queues were empty (no tenants), but only the operator can say so.
	if out, err := c.replicatorCmd(nw, "seed", "--from", "s1", "--backup-gtid", gtid); err == nil || !strings.Contains(out, "pass --queues-empty-at-backup") {
		t.Errorf("seed with two peers, A's queues not vouched for: err %v, output:\n%s", err, out)
	}
	// The seed runs with the account of docs/privileges.md ("Seed").
	user := "tandem_seed_" + strings.TrimPrefix(c.db, "e2e")
	account := "'" + user + "'@'%'"
	b.Exec(t, "CREATE USER "+account+" IDENTIFIED BY 'seed-pw'")
	for _, g := range []string{"SELECT, TRIGGER ON `" + c.db + "`.*", "SELECT, INSERT, UPDATE, DELETE, TRIGGER ON `" + c.meta + "`.*", "BINLOG ADMIN ON *.*"} {
		b.Exec(t, "GRANT "+g+" TO "+account)
	}
	cfgText, err := os.ReadFile(c.sites[nw].cfg)
	if err != nil {
		t.Fatal(err)
	}
	seedCfg := c.sites[nw].cfg + ".seed.yaml"
	if err := os.WriteFile(seedCfg, []byte(strings.Replace(string(cfgText), "user: root}", "user: "+user+"}", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	before := binlogPos()
	out, err := c.replicatorCmdWith(seedCfg, []string{"TANDEM_DATABASE_PASSWORD=seed-pw"}, "seed", "--from", "s1", "--backup-gtid", gtid, "--queues-empty-at-backup")
	if err != nil {
		t.Fatalf("seed: %v\n%s", err, out)
	}
	t.Logf("seed:\n%s", out)
	if after := binlogPos(); after != before {
		t.Errorf("the seed wrote to B's binary log: gtid_binlog_pos %q before, %q after", before, after)
	}
	var conflicts int
	if err := c.dbAt(nw).QueryRow("SELECT COUNT(*) FROM `" + c.meta + "`._tandem_conflicts").Scan(&conflicts); err != nil {
		t.Fatal(err)
	}
	if conflicts != 0 {
		t.Errorf("B holds %d of A's conflict records after the seed", conflicts)
	}
	for topic, want := range map[string]int{c.prefix + "s2~parked": 1, c.prefix + "gone": 0} {
		if n := c.count(nw, "`"+c.meta+"`._tandem_offsets WHERE topic = '"+topic+"'"); n != want {
			t.Errorf("B holds %d offsets rows of %s after the seed; want %d", n, topic, want)
		}
	}
	if out, err := c.replicatorCmd(nw, "seed", "--from", "s1", "--backup-gtid", gtid, "--queues-empty-at-backup"); err == nil || !strings.Contains(out, "seed only a new site") {
		t.Errorf("second seed: err %v, output:\n%s", err, out)
	}

	c.start(nw)
	if _, err := workload.Run(ctx, c.dbAt(nw), workload.Options{DB: c.db, Seed: seed(t), Changes: 5000, Keys: 2000, Rate: 2000}); err != nil {
		t.Fatal(err)
	}
	stop()
	wg.Wait()
	for i, err := range duringErr {
		if err != nil && wctx.Err() == nil {
			t.Fatal(err)
		}
		t.Logf("%s during and after the backup: %+v", c.sites[i].name, during[i])
		if during[i].Changes() == 0 {
			t.Fatalf("%s was not written during the backup", c.sites[i].name)
		}
	}
	for _, pair := range [][2]int{{src, nw}, {other, nw}, {src, other}} {
		res := c.waitConverged(pair[0], pair[1], 3*time.Minute)
		t.Logf("%s equals %s: rows %v", c.sites[pair[1]].name, c.sites[pair[0]].name, res.Rows)
		for _, tb := range workload.Tables {
			if res.Rows[c.db+"."+tb] == 0 {
				t.Errorf("table %s is empty", tb)
			}
		}
	}
	checkNoEcho(t, c)
}
