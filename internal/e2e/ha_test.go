package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/tandemdb/tandem/internal/testenv"
	"github.com/tandemdb/tandem/internal/workload"
	"github.com/tandemdb/tandem/pkg/tenant"
)

// TestHAFailover: site s1 runs two replicators with the same configuration
// (site-level HA, a lease in Redis), s2 one; both sites are written all
// along. The standby stands by (not ready) while the other leads. When the
// leader is SIGKILLed the standby takes the lease with a greater fencing
// epoch and resumes from the shared checkpoint. When that leader is then
// frozen (SIGSTOP) past its lease, the restarted first replicator takes
// over, and the frozen one, thawed, stops by itself: it has lost the
// lease, and every offsets row carries the new epoch, so no batch of its
// is applied. The sites converge. s1's replicators run with the
// documented least-privilege grants.
func TestHAFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	redisSrv := testenv.SharedRedis(t)
	c := newCluster(t, testenv.SharedBroker(t), testenv.SharedMariaDB(t, 1), testenv.SharedMariaDB(t, 2))
	// sites[2] is s1's second replicator: same site, its own state_dir
	// and admin address.
	c.createTables()
	s1 := c.sites[0]
	c.sites = append(c.sites, &site{id: s1.id, name: s1.name, srv: s1.srv, dir: t.TempDir(), admin: freeAddr(t)})
	c.peers = [][]int{{1}, {0}, {1}}
	prefix := testenv.KeyPrefix(t)
	c.writeConfigs(fmt.Sprintf("ha: {enabled: true, redis: {addr: %q, key_prefix: %q}, lease_ttl: 3s, renew_interval: 500ms}\n",
		redisSrv.Addr, prefix))
	c.prepare()
	// s1's replicators run as an account with only the documented grants
	// (docs/privileges.md): the reader's, the sink's, and PROCESS for
	// ending a frozen former leader's transaction.
	user := "tandem_ha_" + strings.TrimPrefix(c.db, "e2e")
	account := "'" + user + "'@'%'"
	s1.srv.Exec(t, "CREATE USER "+account+" IDENTIFIED BY 'ha-pw'")
	t.Cleanup(func() { s1.srv.Exec(t, "DROP USER IF EXISTS "+account) })
	for _, g := range []string{"REPLICATION SLAVE, BINLOG MONITOR, PROCESS ON *.*",
		"SELECT, INSERT, UPDATE, DELETE ON `" + c.db + "`.*", "SELECT, INSERT, UPDATE, DELETE ON `" + c.meta + "`.*"} {
		s1.srv.Exec(t, "GRANT "+g+" TO "+account)
	}
	for _, i := range []int{0, 2} {
		s := c.sites[i]
		y, err := os.ReadFile(s.cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(s.cfg, []byte(strings.Replace(string(y), "user: root}", "user: "+user+"}", 1)), 0o600); err != nil {
			t.Fatal(err)
		}
		s.env = append(s.env, "TANDEM_DATABASE_PASSWORD=ha-pw")
	}

	c.start(0) // s1's first replicator takes the lease
	c.start(1)
	c.launch(2)
	c.waitStandby(2)
	if e := c.metric(0, "tandem_ha_epoch", ""); e != 1 {
		t.Fatalf("first leader's epoch %v, want 1", e)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = workload.Run(ctx, c.dbAt(i), workload.Options{DB: c.db, Seed: seed(t), Changes: 6000, Keys: 400, Rate: 300})
		}()
	}
	waitRows(t, c, 0, 200)

	// Failover: the leader dies without releasing the lease.
	killed := time.Now()
	c.kill(0)
	c.waitReady(2)
	t.Logf("the standby was ready %s after the leader's SIGKILL (lease_ttl 3s, renew_interval 500ms)", time.Since(killed).Round(time.Millisecond))
	if e := c.metric(2, "tandem_ha_epoch", ""); e != 2 {
		t.Fatalf("second leader's epoch %v, want 2", e)
	}

	// A leader frozen past its lease: the restarted first replicator
	// takes over, the thawed one must stop on its own.
	s2 := c.sites[2]
	s2.mu.Lock()
	frozen, frozenDone := s2.cmd, s2.done
	s2.mu.Unlock()
	if err := frozen.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	c.launch(0)
	c.waitReady(0)
	if e := c.metric(0, "tandem_ha_epoch", ""); e != 3 {
		t.Fatalf("third leader's epoch %v, want 3", e)
	}
	if err := frozen.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	select {
	case <-frozenDone:
	case <-time.After(30 * time.Second):
		t.Fatal("the thawed former leader did not stop within 30 s")
	}
	c.stop(2) // it exited by itself; this forgets the process
	log, _ := os.ReadFile(filepath.Join(s2.dir, "replicator.log"))
	for _, i := range []int{0, 2} {
		b, _ := os.ReadFile(filepath.Join(c.sites[i].dir, "replicator.log"))
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, "lease") || strings.Contains(line, "fenc") || strings.Contains(line, "former leader") || strings.HasPrefix(line, "===") {
				t.Logf("replicator %d: %.300s", i, line)
			}
		}
	}
	if !strings.Contains(string(log), "lost the site's lease") && !strings.Contains(string(log), "fenced") {
		t.Errorf("the former leader's log does not say it lost the lease or was fenced:\n%s", tail(string(log), 3000))
	}

	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("workload at s%d: %v", i+1, err)
		}
	}
	c.waitConverged(0, 1, 2*time.Minute)
	var epochs []string
	rows, err := c.dbAt(0).Query("SELECT DISTINCT epoch FROM " + c.meta + "._tandem_offsets")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var e string
		rows.Scan(&e)
		epochs = append(epochs, e)
	}
	rows.Close()
	if strings.Join(epochs, ",") != "3" {
		t.Errorf("epochs in s1's _tandem_offsets %v, want only the current leader's 3", epochs)
	}

	// The shared checkpoint, once every replicator of s1 stopped (and
	// released the lease).
	c.stop(0)
	out, err := c.replicatorCmd(0, "checkpoint", "show")
	if err != nil || !strings.Contains(out, "shared (the leader's, in Redis): {") || !strings.Contains(out, "held by nobody") {
		t.Errorf("checkpoint show: %v\n%s", err, out)
	}
	// Redis lost the checkpoint and the state_dir is new: the next leader
	// refuses to start at the current position by itself ...
	if err := redisSrv.Client(t).HDel(context.Background(), prefix+"ha/s1/state", "position").Err(); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(c.sites[0].dir, "state")); err != nil {
		t.Fatal(err)
	}
	runFailsEnv(t, c.bin, c.sites[0].cfg, c.sites[0].env, "did Redis lose its data", "replicator checkpoint reset")
	// ... until the operator accepts it.
	if out, err := c.replicatorCmd(0, "checkpoint", "reset"); err != nil || !strings.Contains(out, "the site's shared one") {
		t.Fatalf("checkpoint reset: %v\n%s", err, out)
	}
	c.start(0)
	if e := c.metric(0, "tandem_ha_epoch", ""); e != 5 {
		t.Errorf("leader after the reset: epoch %v, want 5 (the refused start took 4)", e)
	}

	// A clean shutdown hands over: the leader releases the lease, so the
	// standby need not wait for it to expire.
	c.launch(2)
	c.waitStandby(2)
	stopped := time.Now()
	c.stop(0)
	c.waitReady(2)
	t.Logf("the standby was ready %s after the leader's SIGTERM", time.Since(stopped).Round(time.Millisecond))
	if e := c.metric(2, "tandem_ha_epoch", ""); e != 6 {
		t.Errorf("leader after the handover: epoch %v, want 6", e)
	}
}

// waitStandby waits until site i's replicator runs and stands by: alive,
// not ready, saying who holds the lease.
func (c *cluster) waitStandby(i int) {
	c.t.Helper()
	s := c.sites[i]
	var body string
	testenv.WaitFor(c.t, 60*time.Second, s.name+"'s second replicator standing by", func() bool {
		resp, err := http.Get("http://" + s.admin + "/readyz")
		if err != nil {
			return false
		}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		resp.Body.Close()
		body = string(b)
		return resp.StatusCode == http.StatusServiceUnavailable && strings.Contains(body, "standby: the site's lease is held by")
	})
}

// waitRows waits until site i's items table holds at least n rows.
func waitRows(t *testing.T, c *cluster, i, n int) {
	t.Helper()
	testenv.WaitFor(t, time.Minute, fmt.Sprintf("%d rows at s%d", n, i+1), func() bool {
		var got int
		err := c.dbAt(i).QueryRow("SELECT COUNT(*) FROM " + c.db + ".items").Scan(&got)
		return err == nil && got >= n
	})
}

// TestHATenantQueuesSurviveFailover: under site-level HA the tenant queues
// live in the site's database, so a takeover keeps them. B runs two
// replicators and applies A's writes; tenant T is paused at B, so B's
// leader queues T's messages while U's flow. The leader is SIGKILLed: the
// standby takes over with T's queue, keeps queueing T's later writes, and
// on resume applies all of T's rows in full.
func TestHATenantQueuesSurviveFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	redisSrv := testenv.SharedRedis(t)
	c := newCluster(t, testenv.SharedBroker(t), testenv.SharedMariaDB(t, 1), testenv.SharedMariaDB(t, 2))
	for _, s := range c.sites {
		s.srv.Exec(t, fmt.Sprintf(tenantDDL, c.db))
	}
	b := c.sites[1]
	c.sites = append(c.sites, &site{id: b.id, name: b.name, srv: b.srv, dir: t.TempDir(), admin: freeAddr(t)})
	c.peers = [][]int{{}, {0}, {0}}
	prefix := testenv.KeyPrefix(t)
	c.writeConfigs(tenantsYAML(redisSrv.Addr, prefix, "10s", c.db) +
		fmt.Sprintf("ha: {enabled: true, redis: {addr: %q, key_prefix: %q}, lease_ttl: 3s, renew_interval: 500ms}\n", redisSrv.Addr, prefix))
	c.prepare()
	e := &tenantEnv{cluster: c, redis: redisSrv, keyPrefix: prefix,
		reg: tenant.NewRegistry(tenant.RegistryConfig{Client: redisSrv.Client(t), Prefix: prefix}, zap.NewNop())}

	e.start(0)
	e.start(1)
	e.launch(2)
	e.waitStandby(2)
	e.setMode(1, "tenT", tenant.ModePaused)
	a := e.dbAt(0)
	next := writeInterleaved(t, a, e.db, 1, 100, 50, "tenT", "tenU")
	testenv.WaitFor(t, 60*time.Second, "U's 5000 rows at B while T is paused", func() bool { return e.countTenant(1, "tenU") == 5000 })
	e.waitQueued(1, "tenT", 100)

	e.kill(1)
	e.waitReady(2)
	if mode := e.tenantMode(2, "tenT"); mode != "paused" {
		t.Fatalf("T is %s at the new leader", mode)
	}
	if d := e.metric(2, "tandem_tenant_queue_depth", `tenant="tenT"`); d < 100 {
		t.Fatalf("the new leader holds %v of T's queued messages, want the former leader's 100 or more", d)
	}
	writeInterleaved(t, a, e.db, next, 10, 25, "tenT", "tenU")
	testenv.WaitFor(t, 60*time.Second, "U's writes after the takeover", func() bool { return e.countTenant(1, "tenU") == 5250 })
	if n := e.countTenant(1, "tenT"); n != 0 {
		t.Fatalf("paused tenant T has %d rows at B after the takeover", n)
	}
	e.setMode(2, "tenT", tenant.ModeActiveActive)
	testenv.WaitFor(t, 60*time.Second, "T complete at B after resume", func() bool { return e.countTenant(1, "tenT") == 5250 })
	if ra, rb := e.tenantRows(0, "tenT"), e.tenantRows(1, "tenT"); ra != rb {
		t.Fatal("T's rows differ between A and B after resume")
	}
	if ra, rb := e.tenantRows(0, "tenU"), e.tenantRows(1, "tenU"); ra != rb {
		t.Fatal("U's rows differ between A and B")
	}
}
