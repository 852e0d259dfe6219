package e2e

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tandemdb/tandem/internal/testenv"
	"github.com/tandemdb/tandem/internal/workload"
)

// TestBackfillExistingSites: two sites that held different data before
// replication started (each its own rows, some keys at both with different
// contents) converge after `replicator backfill` runs at both at once,
// while both are written: every pre-existing row reaches the other site;
// of a key both held, the copy of the higher site id is kept, whichever
// backfill runs first; a write made since replication started (update,
// delete, insert) is never undone by a pre-existing copy; a second run
// stamps nothing. A's backfill runs with only the documented grants.
func TestBackfillExistingSites(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	c := newCluster(t, testenv.SharedBroker(t), testenv.SharedMariaDB(t, 1), testenv.SharedMariaDB(t, 2))
	c.createTables()
	ctx := context.Background()
	a, b := c.dbAt(0), c.dbAt(1)
	kv := c.db + ".kv"
	// Before replication: A holds kv 1..300, B 201..500 (201..300 at
	// both, with different contents), and each ran the mixed workload
	// with its own seed over the same key space.
	for i, db := range []*sqlDB{{a, "a", 1, 300}, {b, "b", 201, 500}} {
		mustExec(t, db.DB, "CREATE TABLE "+kv+" (id INT NOT NULL PRIMARY KEY, val VARCHAR(40) NOT NULL) ENGINE=InnoDB")
		var rows []string
		for id := db.from; id <= db.to; id++ {
			rows = append(rows, fmt.Sprintf("(%d, '%s-%d')", id, db.name, id))
		}
		mustExec(t, db.DB, "INSERT INTO "+kv+" VALUES "+strings.Join(rows, ","))
		if _, err := workload.Run(ctx, db.DB, workload.Options{DB: c.db, Seed: seed(t) + uint64(i), Changes: 2000, Keys: 300}); err != nil {
			t.Fatal(err)
		}
	}
	c.writeConfigs("")
	c.prepare() // the existing rows get version 0
	c.start(0)
	c.start(1)

	// Writes made since replication started, before and during the
	// backfills.
	mustExec(t, a, "UPDATE "+kv+" SET val = 'real-a' WHERE id BETWEEN 1 AND 5 OR id BETWEEN 250 AND 259")
	mustExec(t, b, "DELETE FROM "+kv+" WHERE id BETWEEN 400 AND 409")
	mustExec(t, b, "INSERT INTO "+kv+" VALUES (1000, 'real-b')")

	// A's backfill runs as an account with only the documented grants
	// (docs/privileges.md): SELECT and UPDATE on the replicated tables.
	user := "tandem_bf_" + strings.TrimPrefix(c.db, "e2e")
	account := "'" + user + "'@'%'"
	srvA := c.sites[0].srv
	srvA.Exec(t, "CREATE USER "+account+" IDENTIFIED BY 'backfill-pw'")
	t.Cleanup(func() { srvA.Exec(t, "DROP USER IF EXISTS "+account) })
	srvA.Exec(t, "GRANT SELECT, UPDATE ON `"+c.db+"`.* TO "+account)
	cfgText, err := os.ReadFile(c.sites[0].cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfgA := c.sites[0].cfg + ".backfill.yaml"
	if err := os.WriteFile(cfgA, []byte(strings.Replace(string(cfgText), "user: root}", "user: "+user+"}", 1)), 0o600); err != nil {
		t.Fatal(err)
	}

	var wg sync.WaitGroup
	outs := make([]string, 2)
	errs := make([]error, 2)
	for i := range c.sites {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i == 0 {
				outs[i], errs[i] = c.replicatorCmdWith(cfgA, []string{"TANDEM_DATABASE_PASSWORD=backfill-pw"}, "backfill", "--chunk", "100")
			} else {
				outs[i], errs[i] = c.replicatorCmd(i, "backfill", "--chunk", "100")
			}
		}()
	}
	if _, err := workload.Run(ctx, b, workload.Options{DB: c.db, Seed: seed(t), Changes: 1000, Keys: 300, Tables: []string{"items"}}); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	for i := range c.sites {
		if errs[i] != nil {
			t.Fatalf("backfill at %s: %v\n%s", c.sites[i].name, errs[i], outs[i])
		}
		t.Logf("backfill at %s:\n%s", c.sites[i].name, outs[i])
	}
	c.waitConverged(0, 1, 2*time.Minute)

	want := map[int]string{}
	for id := 1; id <= 500; id++ {
		switch {
		case id <= 5 || id >= 250 && id <= 259:
			want[id] = "real-a"
		case id <= 200:
			want[id] = fmt.Sprintf("a-%d", id)
		case id >= 400 && id <= 409:
			// deleted since replication started
		default:
			want[id] = fmt.Sprintf("b-%d", id) // B's copy of 201..300: site 2 > site 1
		}
	}
	want[1000] = "real-b"
	got := map[int]string{}
	rows, err := a.QueryContext(ctx, "SELECT id, val FROM "+kv)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id int
		var v string
		if err := rows.Scan(&id, &v); err != nil {
			t.Fatal(err)
		}
		got[id] = v
	}
	rows.Close()
	bad := 0
	for id, w := range want {
		if got[id] != w && bad < 10 {
			t.Errorf("kv %d = %q, want %q", id, got[id], w)
			bad++
		}
	}
	if len(got) != len(want) {
		t.Errorf("kv has %d rows, want %d", len(got), len(want))
	}
	// A pre-existing copy that lost to the other site's is logged there.
	var lost int
	if err := a.QueryRowContext(ctx, "SELECT COUNT(*) FROM "+c.meta+"._tandem_conflicts WHERE detail LIKE 'initial load%'").Scan(&lost); err != nil {
		t.Fatal(err)
	}
	var lostB int
	if err := b.QueryRowContext(ctx, "SELECT COUNT(*) FROM "+c.meta+"._tandem_conflicts WHERE detail LIKE 'initial load%'").Scan(&lostB); err != nil {
		t.Fatal(err)
	}
	if lost != 0 || lostB == 0 {
		t.Errorf("initial-load conflicts logged: %d at A, %d at B; want none at A (site 2's copies win there) and some at B", lost, lostB)
	}
	for i := range c.sites {
		out, err := c.replicatorCmd(i, "backfill", "--dry-run")
		if err != nil || !strings.Contains(out, "dry run: 0 rows") {
			t.Errorf("second backfill at %s: %v\n%s", c.sites[i].name, err, out)
		}
	}
}

type sqlDB struct {
	*sql.DB
	name     string
	from, to int
}
