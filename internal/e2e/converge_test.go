package e2e

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/tandemdb/tandem/internal/compare"
	"github.com/tandemdb/tandem/internal/testenv"
	"github.com/tandemdb/tandem/pkg/event"
	"github.com/tandemdb/tandem/pkg/hlc"
	"github.com/tandemdb/tandem/pkg/pipeline"
	"github.com/tandemdb/tandem/pkg/schema"
)

// The convergence tables: about 200 keys over three tables, so that
// concurrent writes at different sites hit the same rows all the time.
var convDDL = []string{
	"CREATE TABLE `%s`.kv (id INT NOT NULL PRIMARY KEY, val VARCHAR(64) NOT NULL, n INT NOT NULL) ENGINE=InnoDB",
	"CREATE TABLE `%s`.kc (a VARCHAR(8) NOT NULL, b INT NOT NULL, val VARCHAR(64) NULL, PRIMARY KEY (a, b)) ENGINE=InnoDB",
	"CREATE TABLE `%s`.kd (id INT NOT NULL PRIMARY KEY, val VARCHAR(64) NOT NULL, doc JSON NULL) ENGINE=InnoDB",
}

var convTables = []string{"kv", "kc", "kd"}

const (
	kvKeys = 70
	kcKeys = 70
	kdKeys = 60
)

// write is one acknowledged (committed) write, as the history records it.
type write struct {
	site    int
	table   string
	key     string // rendered primary key
	version hlc.Timestamp
	deleted bool
	val     string // the unique token the write stored ("" for deletes)
}

type history struct {
	mu     sync.Mutex
	writes []write
}

func (h *history) add(ws ...write) {
	h.mu.Lock()
	h.writes = append(h.writes, ws...)
	h.mu.Unlock()
}

// convOptions shape a convergence run.
type convOptions struct {
	duration  time.Duration
	skewSite  int    // index of a site whose clocks run ahead (-1: none)
	skew      string // libfaketime spec, e.g. "+30s"
	skewDur   time.Duration
	workers   int // writers per site
	partition time.Duration
}

func envSeed(t *testing.T) uint64 {
	if v := os.Getenv("TANDEM_SEED"); v != "" {
		s, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("TANDEM_SEED=%q: want an unsigned integer", v)
		}
		t.Logf("seed %d (from TANDEM_SEED)", s)
		return s
	}
	s := rand.Uint64()
	t.Logf("seed %d (replay with TANDEM_SEED=%d)", s, s)
	return s
}

func convDuration() time.Duration {
	if v := os.Getenv("TANDEM_CONVERGE_DURATION"); v != "" {
		if d, err := time.ParseDuration(v); err == nil {
			return d
		}
	}
	return 60 * time.Second
}

// TestConvergence is the Jepsen-style active-active test: three real
// MariaDB sites, random concurrent inserts/updates/deletes/key changes at
// every site on a small key space, a replicator SIGKILLed and restarted
// mid-run, one site's sinks stopped for 20 s (a partition) and resumed.
// Every acknowledged write is recorded with its version; afterwards all
// sites must be identical, each key must hold the acknowledged write with
// the greatest version (or be absent if that write was a delete), and no
// topic may carry a change another site originated (no echo).
func TestConvergence(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	srvs := []*testenv.MariaDB{testenv.SharedMariaDB(t, 1), testenv.SharedMariaDB(t, 2), testenv.SharedMariaDB(t, 3)}
	runConvergence(t, srvs, convOptions{duration: convDuration(), skewSite: -1, workers: 2, partition: 20 * time.Second})
}

// TestConvergenceClockSkew is TestConvergence with site 3's database and
// replicator clocks 30 s ahead (what Chaos Mesh's TimeChaos injects). Its
// versions win most conflicts, the other sites refuse to let them drag
// their clocks forward (counted as skew), and everything still converges.
func TestConvergenceClockSkew(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	skewed := testenv.NewMariaDB(t, testenv.MariaDBOptions{Site: 3, FakeTime: "+30s"})
	srvs := []*testenv.MariaDB{testenv.SharedMariaDB(t, 1), testenv.SharedMariaDB(t, 2), skewed}
	runConvergence(t, srvs, convOptions{duration: convDuration(), skewSite: 2, skew: "+30s", skewDur: 30 * time.Second,
		workers: 2, partition: 20 * time.Second})
}

func runConvergence(t *testing.T, srvs []*testenv.MariaDB, opt convOptions) {
	s := envSeed(t)
	c := newCluster(t, testenv.SharedBroker(t), srvs...)
	for _, st := range c.sites {
		for _, q := range convDDL {
			st.srv.Exec(t, fmt.Sprintf(q, c.db))
		}
	}
	if opt.skewSite >= 0 {
		c.sites[opt.skewSite].extra = fmt.Sprintf("clock: {wall_offset: %s}\n", opt.skewDur)
	}
	c.writeConfigs("")
	c.prepare()
	for i := range c.sites {
		c.start(i)
	}

	h := &history{}
	ctx, cancel := context.WithTimeout(context.Background(), opt.duration)
	defer cancel()
	var wg sync.WaitGroup
	for i := range c.sites {
		for w := range opt.workers {
			wg.Add(1)
			r := rand.New(rand.NewPCG(s, uint64(i*100+w)))
			db := c.dbAt(i)
			go func() {
				defer wg.Done()
				writer(ctx, db, c.db, i, w, r, h)
			}()
		}
	}

	// Faults, on a schedule drawn from the seed.
	r := rand.New(rand.NewPCG(s, 999))
	step := func(d time.Duration) bool {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(d):
			return true
		}
	}
	victim := r.IntN(len(c.sites))
	if step(opt.duration/10 + time.Duration(r.IntN(3000))*time.Millisecond) {
		t.Logf("fault: SIGKILL replicator %s", c.sites[victim].name)
		c.kill(victim)
		c.start(victim)
	}
	cut := (victim + 1) % len(c.sites)
	if step(opt.duration / 6) {
		t.Logf("fault: partition: %s stops applying for %s", c.sites[cut].name, opt.partition)
		c.admin(cut, "POST", "/v1/appliers/pause")
		if step(min(opt.partition, time.Until(deadlineOf(ctx)))) {
			// Kill another replicator while the partition holds: a crash
			// mid-batch must not change the final data either.
			other := (cut + 1) % len(c.sites)
			t.Logf("fault: SIGKILL replicator %s during the partition", c.sites[other].name)
			c.kill(other)
			c.start(other)
		}
		c.admin(cut, "POST", "/v1/appliers/resume")
		t.Logf("fault: partition healed")
	}
	wg.Wait()
	t.Logf("workload done: %d acknowledged writes", len(h.writes))

	for i := 1; i < len(c.sites); i++ {
		waitConvergedTables(t, c, 0, i, 3*time.Minute)
	}
	checkHistory(t, c, h, s)
	checkNoEcho(t, c)
	var conflicts float64
	for i := range c.sites {
		conflicts += c.metric(i, "tandem_conflicts_total", "")
	}
	t.Logf("conflicts counted across sites: %.0f", conflicts)
	if conflicts == 0 {
		t.Errorf("no conflicts counted: the workload did not exercise conflict resolution")
	}
	if opt.skewSite >= 0 {
		var skew float64
		for i := range c.sites {
			if i != opt.skewSite {
				skew += c.metric(i, "tandem_clock_skew_total", "")
			}
		}
		t.Logf("clock skew counted at the other sites: %.0f", skew)
		if skew == 0 {
			t.Errorf("site %s ran %s ahead but no clock skew was counted", c.sites[opt.skewSite].name, opt.skew)
		}
	}
}

func deadlineOf(ctx context.Context) time.Time {
	d, _ := ctx.Deadline()
	return d
}

func waitConvergedTables(t *testing.T, c *cluster, a, b int, timeout time.Duration) {
	t.Helper()
	tables := make([]string, len(convTables))
	for i, tb := range convTables {
		tables[i] = c.db + "." + tb
	}
	var last compare.Result
	var err error
	ok := false
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		last, err = compare.Tables(context.Background(), c.dbAt(a), c.dbAt(b), tables)
		if err == nil && last.Equal() {
			ok = true
			break
		}
		time.Sleep(250 * time.Millisecond) // polling interval of a condition wait with a deadline
	}
	if !ok {
		var sb strings.Builder
		for _, d := range last.Diffs {
			sb.WriteString(d.String() + "\n")
		}
		t.Fatalf("sites %s and %s did not converge within %s (err %v): %d+%d diffs:\n%s",
			c.sites[a].name, c.sites[b].name, timeout, err, len(last.Diffs), last.More, sb.String())
	}
}

// writer runs random single-row transactions at one site until ctx ends,
// recording each committed write with the version the trigger gave it.
func writer(ctx context.Context, db *sql.DB, schemaName string, site, worker int, r *rand.Rand, h *history) {
	seq := 0
	for ctx.Err() == nil {
		seq++
		token := fmt.Sprintf("s%d-w%d-%d", site+1, worker, seq)
		table := convTables[r.IntN(len(convTables))]
		ws, err := oneWrite(ctx, db, schemaName, table, site, token, r)
		if err == nil {
			h.add(ws...)
		}
	}
}

func keyOf(table string, r *rand.Rand) (string, []any) {
	switch table {
	case "kv":
		id := r.IntN(kvKeys)
		return strconv.Itoa(id), []any{id}
	case "kc":
		n := r.IntN(kcKeys)
		a := string(rune('x' + n%2))
		return a + "/" + strconv.Itoa(n/2), []any{a, n / 2}
	default:
		id := r.IntN(kdKeys)
		return strconv.Itoa(id), []any{id}
	}
}

func pkWhere(table string) string {
	if table == "kc" {
		return "a = ? AND b = ?"
	}
	return "id = ?"
}

func oneWrite(ctx context.Context, db *sql.DB, s, table string, site int, token string, r *rand.Rand) ([]write, error) {
	key, kargs := keyOf(table, r)
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	version := func(tb, k string, args []any) (hlc.Timestamp, error) {
		var v uint64
		err := tx.QueryRowContext(ctx, fmt.Sprintf("SELECT %s FROM `%s`.`%s` WHERE %s", schema.DefaultVersionColumn, s, tb, pkWhere(table)), args...).Scan(&v)
		return hlc.Timestamp(v), err
	}
	var ws []write
	switch p := r.IntN(10); {
	case p < 4: // upsert
		var q string
		args := append([]any{}, kargs...)
		switch table {
		case "kv":
			q = "INSERT INTO `%s`.kv (id, val, n) VALUES (?, ?, ?) ON DUPLICATE KEY UPDATE val = VALUES(val), n = n + 1"
			args = append(args, token, 0)
		case "kc":
			q = "INSERT INTO `%s`.kc (a, b, val) VALUES (?, ?, ?) ON DUPLICATE KEY UPDATE val = VALUES(val)"
			args = append(args, token)
		default:
			q = "INSERT INTO `%s`.kd (id, val, doc) VALUES (?, ?, JSON_OBJECT('t', ?)) ON DUPLICATE KEY UPDATE val = VALUES(val), doc = VALUES(doc)"
			args = append(args, token, token)
		}
		if _, err := tx.ExecContext(ctx, fmt.Sprintf(q, s), args...); err != nil {
			return nil, err
		}
		v, err := version(table, key, kargs)
		if err != nil {
			return nil, err
		}
		ws = append(ws, write{site: site, table: table, key: key, version: v, val: token})
	case p < 7: // update
		res, err := tx.ExecContext(ctx, fmt.Sprintf("UPDATE `%s`.`%s` SET val = ? WHERE %s", s, table, pkWhere(table)), append([]any{token}, kargs...)...)
		if err != nil {
			return nil, err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return nil, nil
		}
		v, err := version(table, key, kargs)
		if err != nil {
			return nil, err
		}
		ws = append(ws, write{site: site, table: table, key: key, version: v, val: token})
	case p < 9 || table != "kv": // delete
		res, err := tx.ExecContext(ctx, fmt.Sprintf("DELETE FROM `%s`.`%s` WHERE %s", s, table, pkWhere(table)), kargs...)
		if err != nil {
			return nil, err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return nil, nil
		}
		v, err := version(schema.TombTable(table), key, kargs)
		if err != nil {
			return nil, err
		}
		ws = append(ws, write{site: site, table: table, key: key, version: v, deleted: true})
	default: // primary-key change on kv: a delete of the old key and an insert of the new one
		nid := r.IntN(kvKeys)
		nkey := strconv.Itoa(nid)
		if nkey == key {
			return nil, nil
		}
		res, err := tx.ExecContext(ctx, fmt.Sprintf("UPDATE `%s`.kv SET id = ?, val = ? WHERE id = ?", s), nid, token, kargs[0])
		if err != nil {
			return nil, err // a duplicate new key is a normal refusal
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return nil, nil
		}
		tv, err := version(schema.TombTable("kv"), key, kargs)
		if err != nil {
			return nil, err
		}
		nv, err := version("kv", nkey, []any{nid})
		if err != nil {
			return nil, err
		}
		ws = append(ws, write{site: site, table: "kv", key: key, version: tv, deleted: true},
			write{site: site, table: "kv", key: nkey, version: nv, val: token})
	}
	if err := tx.Commit(); err != nil {
		return nil, err
	}
	return ws, nil
}

// checkHistory asserts that every key's final state at every site is the
// acknowledged write with the greatest version, and names every key that
// is not: lost (an older write won), resurrected (deleted but present) or
// diverged.
func checkHistory(t *testing.T, c *cluster, h *history, seed uint64) {
	t.Helper()
	winner := map[string]write{}
	for _, w := range h.writes {
		k := w.table + ":" + w.key
		cur, ok := winner[k]
		switch {
		case !ok || w.version > cur.version:
			winner[k] = w
		case w.version != cur.version || w.site == cur.site && w.val == cur.val && w.deleted == cur.deleted:
		case w.site == cur.site && w.deleted != cur.deleted:
			// A late insert (docs/tombstones.md): an insert whose
			// snapshot predates a concurrent delete of its key at the
			// same site can take the delete's version when both read
			// the same clock millisecond. The rule ranks a row at or
			// below its key's tombstone as deleted, every site drops
			// it, and the reconciler removes it at its own site.
			if !cur.deleted {
				winner[k] = w
			}
			t.Logf("a late insert tied with a delete of %s at site %d (version %s): the delete wins", k, w.site+1, w.version)
		default:
			t.Errorf("two acknowledged writes share version %s on %s: %+v and %+v", w.version, k, w, cur)
		}
	}
	var problems []string
	for i := range c.sites {
		final := map[string]write{}
		for _, table := range convTables {
			keyExpr := "id"
			if table == "kc" {
				keyExpr = "CONCAT(a, '/', b)"
			}
			rows, err := c.dbAt(i).Query(fmt.Sprintf("SELECT %s, val, %s FROM `%s`.`%s`", keyExpr, schema.DefaultVersionColumn, c.db, table))
			if err != nil {
				t.Fatal(err)
			}
			for rows.Next() {
				var k string
				var val sql.NullString
				var v uint64
				if err := rows.Scan(&k, &val, &v); err != nil {
					t.Fatal(err)
				}
				final[table+":"+k] = write{version: hlc.Timestamp(v), val: val.String}
			}
			rows.Close()
		}
		keys := make([]string, 0, len(winner))
		for k := range winner {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			w := winner[k]
			got, present := final[k]
			switch {
			case w.deleted && present:
				problems = append(problems, fmt.Sprintf("site %s: %s RESURRECTED: deleted at version %s by site %d, present with version %s val %q",
					c.sites[i].name, k, w.version, w.site+1, got.version, got.val))
			case !w.deleted && !present:
				problems = append(problems, fmt.Sprintf("site %s: %s LOST: winning write %q version %s by site %d is missing",
					c.sites[i].name, k, w.val, w.version, w.site+1))
			case !w.deleted && (got.version != w.version || got.val != w.val):
				problems = append(problems, fmt.Sprintf("site %s: %s WRONG WINNER: want %q version %s by site %d, have %q version %s",
					c.sites[i].name, k, w.val, w.version, w.site+1, got.val, got.version))
			}
		}
		for k, got := range final {
			if _, ok := winner[k]; !ok {
				problems = append(problems, fmt.Sprintf("site %s: %s present (val %q version %s) but no acknowledged write created it", c.sites[i].name, k, got.val, got.version))
			}
		}
	}
	if len(problems) > 0 {
		if len(problems) > 40 {
			problems = append(problems[:40], fmt.Sprintf("… and %d more", len(problems)-40))
		}
		t.Fatalf("history check failed (seed %d, replay with TANDEM_SEED=%d):\n%s", seed, seed, strings.Join(problems, "\n"))
	}
	t.Logf("history check: %d keys, each holds its greatest acknowledged version at all %d sites", len(winner), len(c.sites))
}

// checkNoEcho reads every site's topic from the start and requires that
// each change in it carries a version stamped by that site: a change a sink
// applied and a reader republished would carry the originating site's id.
func checkNoEcho(t *testing.T, c *cluster) {
	t.Helper()
	ctx := context.Background()
	kc := pipeline.KafkaConfig{Brokers: []string{c.broker.Addr}}
	total := 0
	for _, s := range c.sites {
		topic := c.prefix + s.name
		parts, err := pipeline.EnsureTopic(ctx, kc, topic)
		if err != nil {
			t.Fatal(err)
		}
		for p := range parts {
			conn, err := kafka.DialLeader(ctx, "tcp", c.broker.Addr, topic, p)
			if err != nil {
				t.Fatal(err)
			}
			last, err := conn.ReadLastOffset()
			conn.Close()
			if err != nil {
				t.Fatal(err)
			}
			if last == 0 {
				continue
			}
			r := kafka.NewReader(kafka.ReaderConfig{Brokers: []string{c.broker.Addr}, Topic: topic, Partition: p, MaxWait: 100 * time.Millisecond})
			for {
				m, err := r.FetchMessage(ctx)
				if err != nil {
					r.Close()
					t.Fatal(err)
				}
				txn, err := event.Decode(m.Value)
				if err != nil {
					r.Close()
					t.Fatalf("topic %s offset %d: %v", topic, m.Offset, err)
				}
				for _, ch := range txn.Changes {
					total++
					if ch.Version.Site() != s.id {
						r.Close()
						t.Fatalf("ECHO: topic %s (site %d) offset %d carries %s.%s version %s stamped by site %d",
							topic, s.id, m.Offset, ch.Schema, ch.Table, ch.Version, ch.Version.Site())
					}
				}
				if m.Offset+1 >= last {
					break
				}
			}
			r.Close()
		}
	}
	t.Logf("no echo: all %d published changes carry their own site's versions", total)
	var dropped float64
	for i := range c.sites {
		dropped += c.metric(i, "tandem_txns_dropped_loop_total", "")
	}
	if dropped == 0 {
		t.Errorf("no sink transaction was dropped by a reader: loop prevention was not exercised")
	}
	t.Logf("sink transactions dropped by readers (loop prevention): %.0f", dropped)
}
