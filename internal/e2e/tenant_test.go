package e2e

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/tandemdb/tandem/internal/testenv"
	"github.com/tandemdb/tandem/pkg/event"
	"github.com/tandemdb/tandem/pkg/pipeline"
	"github.com/tandemdb/tandem/pkg/tenant"
)

// The tenant tests replicate one shared table whose tenant_id column names
// the tenant, one way (A → B), with the registry in Redis.
const tenantDDL = "CREATE TABLE `%s`.orders (id BIGINT NOT NULL PRIMARY KEY, tenant_id VARCHAR(32) NOT NULL, " +
	"seq INT NOT NULL, v VARCHAR(64) NOT NULL) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"

type tenantEnv struct {
	*cluster
	redis     *testenv.Redis
	keyPrefix string
	reg       *tenant.Registry // an operator's registry client, outside the replicators
}

// newTenantEnv replicates the tenant tests' orders table from A to B.
func newTenantEnv(t *testing.T, redisSrv *testenv.Redis, reloadInterval string) *tenantEnv {
	return newTenantEnvPeers(t, redisSrv, reloadInterval, false)
}

// newTenantEnvPeers replicates A to B, and B to A too when bothWays, with
// the tenant registry in redisSrv.
func newTenantEnvPeers(t *testing.T, redisSrv *testenv.Redis, reloadInterval string, bothWays bool) *tenantEnv {
	t.Helper()
	c := newCluster(t, testenv.SharedBroker(t), testenv.SharedMariaDB(t, 1), testenv.SharedMariaDB(t, 2))
	c.peers[0] = []int{}
	if bothWays {
		c.peers[0] = []int{1}
	}
	c.peers[1] = []int{0}
	return newTenantEnvOn(t, c, redisSrv, reloadInterval)
}

// newTenantEnvOn creates the orders table at every site of c (its peers
// set), writes the configs with the registry in redisSrv and prepares
// the schema; nothing is running yet.
func newTenantEnvOn(t *testing.T, c *cluster, redisSrv *testenv.Redis, reloadInterval string) *tenantEnv {
	t.Helper()
	for _, s := range c.sites {
		s.srv.Exec(t, fmt.Sprintf(tenantDDL, c.db))
	}
	prefix := testenv.KeyPrefix(t)
	c.writeConfigs(tenantsYAML(redisSrv.Addr, prefix, reloadInterval, c.db))
	c.prepare()
	reg := tenant.NewRegistry(tenant.RegistryConfig{Client: redisSrv.Client(t), Prefix: prefix}, zap.NewNop())
	return &tenantEnv{cluster: c, redis: redisSrv, keyPrefix: prefix, reg: reg}
}

// tenantsYAML is the tenants section of the e2e configs: the registry in
// the Redis server at redisAddr under prefix, and every table of db mapped
// to tenants by its tenant_id column.
func tenantsYAML(redisAddr, prefix, reloadInterval, db string) string {
	return fmt.Sprintf(`tenants:
  redis: {addr: "%s", key_prefix: "%s"}
  reload_interval: %s
  rules:
    - {schema: "%s", table: "*", column: tenant_id}
`, redisAddr, prefix, reloadInterval, db)
}

// tenantMode is the mode site i's replicator has in force for id.
func (e *tenantEnv) tenantMode(i int, id string) string {
	code, body := e.call(i, "GET", "/v1/tenants/"+id, nil)
	if code != http.StatusOK {
		e.t.Fatalf("GET /v1/tenants/%s: %d %s", id, code, body)
	}
	var v struct {
		Mode   string                 `json:"mode"`
		Queues map[string]tenant.Stat `json:"queues"`
	}
	json.Unmarshal([]byte(body), &v)
	return v.Mode
}

// setMode writes a mode change straight to Redis, like another
// replicator's admin endpoint would, and returns how long site i's running
// replicator took to have it in force.
func (e *tenantEnv) setMode(i int, id string, mode tenant.Mode) time.Duration {
	e.t.Helper()
	start := time.Now()
	if _, err := e.reg.Put(context.Background(), tenant.Tenant{ID: id, Mode: mode}); err != nil {
		e.t.Fatal(err)
	}
	testenv.WaitFor(e.t, time.Second, fmt.Sprintf("mode %s of %s in force at %s within 1s", mode, id, e.sites[i].name),
		func() bool { return e.tenantMode(i, id) == string(mode) })
	return time.Since(start)
}

// waitQueued waits until site i's replicator holds at least n queued
// messages of tenant id.
func (e *tenantEnv) waitQueued(i int, id string, n int) {
	e.t.Helper()
	testenv.WaitFor(e.t, 30*time.Second, fmt.Sprintf("%d messages of %s queued at %s", n, id, e.sites[i].name), func() bool {
		return e.metric(i, "tandem_tenant_queue_depth", `tenant="`+id+`"`) >= float64(n)
	})
}

// countTenant counts id's rows at site i.
func (e *tenantEnv) countTenant(i int, id string) int {
	var n int
	if err := e.dbAt(i).QueryRow("SELECT COUNT(*) FROM `"+e.db+"`.orders WHERE tenant_id = ?", id).Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	return n
}

// tenantRows returns id's rows at site i as "id:seq:v" lines.
func (e *tenantEnv) tenantRows(i int, id string) string {
	return ordersOf(e.t, e.dbAt(i), e.db, id, false)
}

// ordersOf returns tenant id's rows of the tenant tests' orders table as
// "id:seq:v" lines, or "id:seq:v@version" with versions.
func ordersOf(t testing.TB, db *sql.DB, schema, id string, versions bool) string {
	t.Helper()
	rs, err := db.Query("SELECT id, seq, v, _tandem_hlc FROM `"+schema+"`.orders WHERE tenant_id = ? ORDER BY id", id)
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	var sb strings.Builder
	for rs.Next() {
		var k, seq int64
		var v string
		var ver uint64
		if err := rs.Scan(&k, &seq, &v, &ver); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&sb, "%d:%d:%s", k, seq, v)
		if versions {
			fmt.Fprintf(&sb, "@%d", ver)
		}
		sb.WriteByte('\n')
	}
	if err := rs.Err(); err != nil {
		t.Fatal(err)
	}
	return sb.String()
}

// writeInterleaved commits txns transactions at A, each inserting per rows
// for every tenant (so that each source transaction is split by tenant),
// ids increasing in commit order.
func writeInterleaved(t *testing.T, db *sql.DB, schema string, first int64, txns, per int, tenants ...string) int64 {
	t.Helper()
	id := first
	for range txns {
		var sb strings.Builder
		sb.WriteString("INSERT INTO `" + schema + "`.orders (id, tenant_id, seq, v) VALUES ")
		n := 0
		for range per {
			for _, ten := range tenants {
				if n > 0 {
					sb.WriteByte(',')
				}
				fmt.Fprintf(&sb, "(%d,'%s',%d,'v%d')", id, ten, id, id)
				id++
				n++
			}
		}
		if _, err := db.Exec(sb.String()); err != nil {
			t.Fatal(err)
		}
	}
	return id
}

// TestTenantPauseRestartResume: pausing tenant T (a mode change written to
// Redis, in force at the running replicator within 1 s) parks T's changes
// durably while U keeps flowing; the parked changes survive a restart of
// the replicator and are applied completely and in order on resume.
func TestTenantPauseRestartResume(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	e := newTenantEnv(t, testenv.SharedRedis(t), "10s")
	// Record the order in which B applies rows.
	b := e.dbAt(1)
	for _, q := range []string{
		"CREATE TABLE `" + e.db + "`.apply_log (n BIGINT AUTO_INCREMENT PRIMARY KEY, tenant_id VARCHAR(32), id BIGINT)",
		"CREATE TRIGGER `" + e.db + "`.log_orders AFTER INSERT ON `" + e.db + "`.orders FOR EACH ROW " +
			"INSERT INTO `" + e.db + "`.apply_log (tenant_id, id) VALUES (NEW.tenant_id, NEW.id)",
	} {
		if _, err := b.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	e.start(0)
	e.start(1)
	took := e.setMode(1, "tenT", tenant.ModePaused)
	t.Logf("pause in force at B %s after the Redis write", took.Round(time.Millisecond))

	// 10k rows for each tenant, 50+50 per source transaction.
	a := e.dbAt(0)
	next := writeInterleaved(t, a, e.db, 1, 200, 50, "tenT", "tenU")
	testenv.WaitFor(t, 60*time.Second, "U's 10k rows at B while T is paused", func() bool { return e.countTenant(1, "tenU") == 10_000 })
	if n := e.countTenant(1, "tenT"); n != 0 {
		t.Fatalf("paused tenant T has %d rows at B", n)
	}
	e.waitQueued(1, "tenT", 200)

	// Restart B with T still paused: the queue is durable.
	e.stop(1)
	e.start(1)
	if mode := e.tenantMode(1, "tenT"); mode != "paused" {
		t.Fatalf("after restart T is %s", mode)
	}
	// More writes for both while paused, after the restart.
	writeInterleaved(t, a, e.db, next, 20, 25, "tenT", "tenU")
	testenv.WaitFor(t, 60*time.Second, "U's writes after the restart at B", func() bool { return e.countTenant(1, "tenU") == 10_500 })
	if n := e.countTenant(1, "tenT"); n != 0 {
		t.Fatalf("paused tenant T has %d rows at B after the restart", n)
	}

	resumeStart := time.Now()
	e.setMode(1, "tenT", tenant.ModeActiveActive)
	testenv.WaitFor(t, 60*time.Second, "T complete at B after resume", func() bool { return e.countTenant(1, "tenT") == 10_500 })
	t.Logf("T's 10500 parked rows applied %s after resume", time.Since(resumeStart).Round(time.Millisecond))
	if ra, rb := e.tenantRows(0, "tenT"), e.tenantRows(1, "tenT"); ra != rb {
		t.Fatal("T's rows differ between A and B after resume")
	}
	if ra, rb := e.tenantRows(0, "tenU"), e.tenantRows(1, "tenU"); ra != rb {
		t.Fatal("U's rows differ between A and B")
	}
	// In order: B applied T's rows in id order (A committed them so).
	rows, err := b.Query("SELECT id FROM `" + e.db + "`.apply_log WHERE tenant_id = 'tenT' ORDER BY n")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var prev, n int64
	for rows.Next() {
		var id int64
		rows.Scan(&id)
		if id <= prev {
			t.Fatalf("T's row %d applied after row %d: out of order", id, prev)
		}
		prev = id
		n++
	}
	if n != 10_500 {
		t.Fatalf("apply log holds %d inserts of T, want 10500 (each exactly once)", n)
	}
	testenv.WaitFor(t, 10*time.Second, "T's queue empty", func() bool {
		return e.metric(1, "tandem_tenant_queue_depth", `tenant="tenT"`) == 0
	})
}

// TestTenantPoisonRetry: a target-side constraint rejects one of T's rows;
// T's transaction lands in T's dead-letter queue and T's later changes
// wait behind it while U's continue; after the target is fixed and the
// operator retries, the sites converge. A forged message carrying another
// tenant's row is refused (isolation), and skip drops it.
func TestTenantPoisonRetry(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	e := newTenantEnv(t, testenv.SharedRedis(t), "10s")
	e.dumpLogsOnFailure()
	b := e.dbAt(1)
	if _, err := b.Exec("ALTER TABLE `" + e.db + "`.orders ADD CONSTRAINT no_poison CHECK (v <> 'poison')"); err != nil {
		t.Fatal(err)
	}
	e.start(0)
	e.start(1)
	a := e.dbAt(0)
	next := writeInterleaved(t, a, e.db, 1, 10, 50, "tenT", "tenU")
	testenv.WaitFor(t, 30*time.Second, "first rows at B", func() bool {
		return e.countTenant(1, "tenT") == 500 && e.countTenant(1, "tenU") == 500
	})
	// The poison row, then more changes to it and to other T rows, and U's.
	mustExec(t, a, "INSERT INTO `"+e.db+"`.orders VALUES (?, 'tenT', 0, 'poison')", next)
	mustExec(t, a, "UPDATE `"+e.db+"`.orders SET seq = seq + 1 WHERE id = ?", next)
	mustExec(t, a, "UPDATE `"+e.db+"`.orders SET v = 'later' WHERE tenant_id = 'tenT' AND id < 20")
	writeInterleaved(t, a, e.db, next+1, 10, 50, "tenT", "tenU")
	testenv.WaitFor(t, 30*time.Second, "U's later rows at B", func() bool { return e.countTenant(1, "tenU") == 1000 })
	testenv.WaitFor(t, 30*time.Second, "T's poison dead-lettered", func() bool {
		return e.metric(1, "tandem_tenant_dlq_depth", `tenant="tenT"`) == 1
	})
	if n := e.countTenant(1, "tenT"); n != 500 {
		t.Fatalf("T has %d rows at B; want 500: nothing after the poison may overtake it", n)
	}
	code, body := e.call(1, "GET", "/v1/tenants/tenT/dlq", nil)
	if code != http.StatusOK || !strings.Contains(body, `"reason":"apply"`) || !strings.Contains(body, "no_poison") {
		t.Fatalf("DLQ listing: %d %s", code, body)
	}
	t.Logf("DLQ: %s", tail(body, 600))

	if _, err := b.Exec("ALTER TABLE `" + e.db + "`.orders DROP CONSTRAINT no_poison"); err != nil {
		t.Fatal(err)
	}
	if code, body := e.call(1, "POST", "/v1/tenants/tenT/dlq/retry", nil); code != http.StatusOK {
		t.Fatalf("retry: %d %s", code, body)
	}
	testenv.WaitFor(t, 30*time.Second, "T converged after retry", func() bool {
		return e.tenantRows(0, "tenT") == e.tenantRows(1, "tenT")
	})
	if ra, rb := e.tenantRows(0, "tenU"), e.tenantRows(1, "tenU"); ra != rb {
		t.Fatal("U's rows differ between A and B")
	}

	// Isolation: a message of tenant T carrying U's row is refused.
	forged := event.Txn{Origin: e.sites[0].id, GTID: "0-0-1", Tenant: "tenT", Last: true, Stamp: 1, Changes: []event.Change{{
		Schema: e.db, Table: "orders", Op: event.OpInsert, Columns: []string{"id", "tenant_id", "seq", "v"}, PK: []int{0},
		Row: []event.Value{{Kind: event.KindInt, Int: 999_999}, {Kind: event.KindString, Bytes: []byte("tenU")},
			{Kind: event.KindInt, Int: 1}, {Kind: event.KindString, Bytes: []byte("stolen")}},
		Version: 1 << 30,
	}}}
	payload, err := event.Encode(nil, &forged)
	if err != nil {
		t.Fatal(err)
	}
	topic := e.cluster.prefix + e.sites[0].name
	parts, err := pipeline.EnsureTopic(context.Background(), pipeline.KafkaConfig{Brokers: []string{e.broker.Addr}}, topic)
	if err != nil {
		t.Fatal(err)
	}
	produceRaw(t, e.broker.Addr, topic, pipeline.PartitionFor([]byte("tenT"), parts), []byte("tenT"), payload)
	testenv.WaitFor(t, 30*time.Second, "forged message dead-lettered for isolation", func() bool {
		return e.metric(1, "tandem_tenant_dead_lettered_total", `reason="isolation"`) == 1
	})
	var stolen int
	b.QueryRow("SELECT COUNT(*) FROM `" + e.db + "`.orders WHERE id = 999999").Scan(&stolen)
	if stolen != 0 {
		t.Fatal("a change of tenant U carried by tenant T's message was applied")
	}
	// While T is blocked its messages are queued by their key without
	// being decoded; the replay still refuses an undecodable one and one
	// whose key is not its payload's tenant, in order, each when it
	// reaches the head.
	mislabelled := forged
	mislabelled.Tenant = "tenU"
	mislabelled.Changes = slices.Clone(forged.Changes)
	mislabelled.Changes[0].Row = slices.Clone(forged.Changes[0].Row)
	mislabelled.Changes[0].Row[0] = event.Value{Kind: event.KindInt, Int: 999_998}
	payload2, err := event.Encode(nil, &mislabelled)
	if err != nil {
		t.Fatal(err)
	}
	tp := pipeline.PartitionFor([]byte("tenT"), parts)
	produceRaw(t, e.broker.Addr, topic, tp, []byte("tenT"), []byte("{not a transaction"))
	produceRaw(t, e.broker.Addr, topic, tp, []byte("tenT"), payload2)
	testenv.WaitFor(t, 30*time.Second, "both queued behind T's dead head", func() bool {
		return e.metric(1, "tandem_tenant_queue_depth", `tenant="tenT"`) == 3
	})
	for _, want := range []string{"isolation", "decode", "isolation"} {
		testenv.WaitFor(t, 30*time.Second, "T's DLQ head: "+want, func() bool {
			_, body := e.call(1, "GET", "/v1/tenants/tenT/dlq", nil)
			return strings.Contains(body, `"reason":"`+want+`"`)
		})
		code, body = e.call(1, "POST", "/v1/tenants/tenT/dlq/skip", nil)
		if code != http.StatusOK || !strings.Contains(body, `"reason":"`+want+`"`) {
			t.Fatalf("skip (want a %s head): %d %s", want, code, body)
		}
	}
	b.QueryRow("SELECT COUNT(*) FROM `" + e.db + "`.orders WHERE id IN (999998, 999999)").Scan(&stolen)
	if stolen != 0 {
		t.Fatal("a forged or mislabelled change was applied")
	}
	// T flows again after the skip.
	writeInterleaved(t, a, e.db, next+10_000, 2, 10, "tenT")
	testenv.WaitFor(t, 30*time.Second, "T flows after skip", func() bool {
		return e.tenantRows(0, "tenT") == e.tenantRows(1, "tenT")
	})
}

// dumpLogsOnFailure prints the tail of every replicator's log when the
// test fails (the directories are removed with the test).
func (c *cluster) dumpLogsOnFailure() {
	c.t.Cleanup(func() {
		if !c.t.Failed() {
			return
		}
		for _, s := range c.sites {
			b, _ := os.ReadFile(filepath.Join(s.dir, "replicator.log"))
			c.t.Logf("replicator %s log tail:\n%s", s.name, tail(string(b), 6000))
		}
	})
}

func mustExec(t *testing.T, db *sql.DB, q string, args ...any) {
	t.Helper()
	if _, err := db.Exec(q, args...); err != nil {
		t.Fatal(err)
	}
}

// TestTenantRedisKilled: killing the registry's Redis during replication
// stalls nothing and loses nothing: the replicator keeps the snapshot in
// force (T stays paused, U flows), reports the registry unhealthy, and
// reloads again once Redis is back — here empty, as Redis without
// persistence comes back: the older registry is refused, and the next
// write through the admin API re-seeds it from the snapshot.
func TestTenantRedisKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	e := newTenantEnv(t, testenv.NewRedis(t), "300ms")
	e.dumpLogsOnFailure()
	e.start(0)
	e.start(1)
	e.setMode(1, "tenT", tenant.ModePaused)
	a := e.dbAt(0)
	next := writeInterleaved(t, a, e.db, 1, 20, 50, "tenT", "tenU")
	testenv.WaitFor(t, 30*time.Second, "U at B", func() bool { return e.countTenant(1, "tenU") == 1000 })

	e.redis.Kill(t)
	registry := func() (healthy bool, version uint64) {
		_, body := e.call(1, "GET", "/v1/tenants", nil)
		var v struct {
			Registry tenant.Status `json:"registry"`
		}
		json.Unmarshal([]byte(body), &v)
		return v.Registry.Healthy, v.Registry.Version
	}
	testenv.WaitFor(t, 5*time.Second, "registry reported unhealthy", func() bool { h, _ := registry(); return !h })
	next = writeInterleaved(t, a, e.db, next, 20, 50, "tenT", "tenU")
	testenv.WaitFor(t, 30*time.Second, "U keeps flowing with Redis down", func() bool { return e.countTenant(1, "tenU") == 2000 })
	if n := e.countTenant(1, "tenT"); n != 0 || e.tenantMode(1, "tenT") != "paused" {
		t.Fatalf("with Redis down T has %d rows at B and mode %s; want the snapshot (paused) kept", n, e.tenantMode(1, "tenT"))
	}

	e.redis.Start(t)
	testenv.WaitFor(t, 5*time.Second, "reloads resume", func() bool { h, _ := registry(); return h })
	if e.tenantMode(1, "tenT") != "paused" {
		t.Fatal("an empty Redis replaced the registry snapshot")
	}
	if code, body := e.call(1, "PUT", "/v1/tenants/tenT", map[string]any{"mode": "active-active"}); code != http.StatusOK {
		t.Fatalf("PUT: %d %s", code, body)
	}
	writeInterleaved(t, a, e.db, next, 5, 10, "tenT", "tenU")
	testenv.WaitFor(t, 30*time.Second, "both tenants converged", func() bool {
		return e.tenantRows(0, "tenT") == e.tenantRows(1, "tenT") && e.tenantRows(0, "tenU") == e.tenantRows(1, "tenU")
	})
	if n := e.countTenant(1, "tenT"); n != 2050 {
		t.Fatalf("T has %d rows at B, want 2050", n)
	}
}
