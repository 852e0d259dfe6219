package e2e

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tandemdb/tandem/internal/testenv"
	"github.com/tandemdb/tandem/pkg/tenant"
)

// The home-only tests replicate the tenant table both ways between A (site
// 1, tenant T's home) and B (site 2). T is home-only; U is active-active.
const (
	homeT = "tenT"
	lwwU  = "tenU"
)

type homeOnlyEnv struct {
	*tenantEnv
	dbs [2]*sql.DB
}

func newHomeOnlyEnv(t *testing.T) *homeOnlyEnv {
	t.Helper()
	e := &homeOnlyEnv{tenantEnv: newTenantEnvPeers(t, testenv.SharedRedis(t), "10s", true)}
	c := e.cluster
	c.dumpLogsOnFailure()
	e.dbs[0], e.dbs[1] = c.dbAt(0), c.dbAt(1)
	// T is home-only with home site A, set before the replicators start,
	// as an operator would before the tenant's writes begin.
	if _, err := e.reg.Put(context.Background(), tenant.Tenant{ID: homeT, Mode: tenant.ModeHomeOnly, HomeSite: c.sites[0].id}); err != nil {
		t.Fatal(err)
	}
	return e
}

// startAll starts both replicators and waits until each has T's mode in
// force.
func (e *homeOnlyEnv) startAll() {
	e.t.Helper()
	for i := range e.sites {
		e.startSite(i)
	}
}

// startSite starts site i's replicator and waits until it has T's mode in
// force.
func (e *homeOnlyEnv) startSite(i int) {
	e.t.Helper()
	e.start(i)
	testenv.WaitFor(e.t, 10*time.Second, "T home-only at "+e.sites[i].name, func() bool {
		return e.tenantMode(i, homeT) == string(tenant.ModeHomeOnly)
	})
}

func (e *homeOnlyEnv) exec(i int, q string, args ...any) {
	e.t.Helper()
	q = strings.ReplaceAll(q, "$T", "`"+e.db+"`.orders")
	if _, err := e.dbs[i].Exec(q, args...); err != nil {
		e.t.Fatalf("at %s: %s: %v", e.sites[i].name, q, err)
	}
}

// rows returns id's rows at site i as "id:seq:v@version" lines.
func (e *homeOnlyEnv) rows(i int, id string) string { return ordersOf(e.t, e.dbs[i], e.db, id, true) }

// value returns key k's v at site i ("" when the row is missing).
func (e *homeOnlyEnv) value(i int, k int64) string {
	e.t.Helper()
	var v string
	err := e.dbs[i].QueryRow("SELECT v FROM `"+e.db+"`.orders WHERE id = ?", k).Scan(&v)
	if err == sql.ErrNoRows {
		return ""
	}
	if err != nil {
		e.t.Fatal(err)
	}
	return v
}

// waitValue waits until key k holds v at site i ("" = missing).
func (e *homeOnlyEnv) waitValue(i int, k int64, v string) {
	e.t.Helper()
	testenv.WaitFor(e.t, 30*time.Second, fmt.Sprintf("key %d = %q at %s", k, v, e.sites[i].name),
		func() bool { return e.value(i, k) == v })
}

// waitSame waits until both sites hold the same rows of tenant id,
// versions included, and the rows equal want (id → v) when want is not
// nil; on timeout it fails with both sites' rows.
func (e *homeOnlyEnv) waitSame(id string, want map[int64]string, timeout time.Duration) {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		a, b := e.rows(0, id), e.rows(1, id)
		if a == b && (want == nil || e.matches(a, want) == "") {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("tenant %s: sites did not converge within %s (%s)\nA:\n%s\nB:\n%s",
				id, timeout, e.matches(a, want), a, b)
		}
		time.Sleep(100 * time.Millisecond) // polling interval of a condition wait with a deadline
	}
}

// matches says how rows (rows' format) differ from want, or "".
func (e *homeOnlyEnv) matches(rows string, want map[int64]string) string {
	if want == nil {
		return ""
	}
	got := map[int64]string{}
	for _, line := range strings.Split(strings.TrimSpace(rows), "\n") {
		if line == "" {
			continue
		}
		var k, seq int64
		var rest string
		fmt.Sscanf(line, "%d:%d:%s", &k, &seq, &rest)
		v, _, _ := strings.Cut(rest, "@")
		got[k] = v
	}
	var diffs []string
	for k, v := range want {
		if got[k] != v {
			diffs = append(diffs, fmt.Sprintf("key %d: got %q want %q", k, got[k], v))
		}
	}
	for k, v := range got {
		if _, ok := want[k]; !ok {
			diffs = append(diffs, fmt.Sprintf("key %d: got %q, want no row", k, v))
		}
	}
	if len(diffs) == 0 {
		return ""
	}
	return "A vs expected: " + strings.Join(diffs, "; ")
}

// conflicts counts site i's logged conflicts of kind for tenant id.
func (e *homeOnlyEnv) conflicts(i int, id, kind string) int {
	e.t.Helper()
	var n int
	if err := e.dbs[i].QueryRow("SELECT COUNT(*) FROM `"+e.meta+"`._tandem_conflicts WHERE tenant = ? AND kind = ?", id, kind).Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	return n
}

// violationKeys returns the keys (pk_json) of site i's home-only
// violations, each once.
func (e *homeOnlyEnv) violationKeys(i int) map[string]bool {
	e.t.Helper()
	rs, err := e.dbs[i].Query("SELECT DISTINCT pk_json FROM `" + e.meta + "`._tandem_conflicts WHERE kind = 'home_only_violation'")
	if err != nil {
		e.t.Fatal(err)
	}
	defer rs.Close()
	out := map[string]bool{}
	for rs.Next() {
		var k string
		rs.Scan(&k)
		out[k] = true
	}
	return out
}

// waitViolations waits until A has logged a home_only_violation for each
// of keys; on timeout it fails naming the keys still missing.
func (e *homeOnlyEnv) waitViolations(timeout time.Duration, keys ...int) {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		have := e.violationKeys(0)
		var missing []int
		for _, k := range keys {
			if !have[fmt.Sprintf(`["%d"]`, k)] {
				missing = append(missing, k)
			}
		}
		if len(missing) == 0 {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("no home_only_violation logged at A within %s for keys %v (have %v)", timeout, missing, have)
		}
		time.Sleep(100 * time.Millisecond) // polling interval of a condition wait with a deadline
	}
}

// pending counts site i's home_only_violations not yet re-asserted.
func (e *homeOnlyEnv) pending(i int) int {
	e.t.Helper()
	var n int
	if err := e.dbs[i].QueryRow("SELECT COUNT(*) FROM `" + e.meta + "`._tandem_conflicts WHERE kind = 'home_only_violation' AND reasserted_at IS NULL").Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	return n
}

// waitHandled waits until A has re-asserted every violation it logged.
func (e *homeOnlyEnv) waitHandled() {
	e.t.Helper()
	testenv.WaitFor(e.t, 30*time.Second, "every home_only_violation at A handled", func() bool { return e.pending(0) == 0 })
}

// reasserts returns A's count of handled violations with outcome.
func (e *homeOnlyEnv) reasserts(outcome string) float64 {
	return e.metric(0, "tandem_tenant_home_reasserts_total", `outcome="`+outcome+`"`)
}

// TestTenantHomeOnly: tenant T is home-only at A; U in the same table is
// active-active. Both sites write; every site ends with the home site's
// rows for T, the non-home writes are logged as home_only_violation at A,
// and U keeps last-writer-wins.
func TestTenantHomeOnly(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	e := newHomeOnlyEnv(t)
	e.startAll()

	// Rows of both tenants written at A, replicated to B.
	for k := int64(1); k <= 20; k++ {
		e.exec(0, "INSERT INTO $T VALUES (?, ?, 0, 'base')", k, homeT)
		e.exec(0, "INSERT INTO $T VALUES (?, ?, 0, 'base')", 100+k, lwwU)
	}
	want := map[int64]string{}
	for k := int64(1); k <= 20; k++ {
		want[k] = "base"
	}
	e.waitSame(homeT, want, 30*time.Second)
	e.waitSame(lwwU, nil, 30*time.Second)

	t.Log("scenario: concurrent")
	{
		// Both replicators down: every write below is concurrent with the
		// other site's. A writes first, B second, so B's versions are the
		// greater ones and would win under last-writer-wins.
		e.stop(0)
		e.stop(1)
		e.exec(0, "UPDATE $T SET v = 'a', seq = 1 WHERE tenant_id = ? AND id BETWEEN 1 AND 10", homeT)
		e.exec(0, "DELETE FROM $T WHERE id IN (11, 12)")
		e.exec(0, "UPDATE $T SET v = 'a', seq = 1 WHERE tenant_id = ? AND id BETWEEN 101 AND 110", lwwU)
		for k := int64(21); k <= 25; k++ {
			e.exec(0, "INSERT INTO $T VALUES (?, ?, 1, 'a')", k, homeT)
		}
		e.exec(1, "UPDATE $T SET v = 'b', seq = 2 WHERE tenant_id = ? AND id BETWEEN 1 AND 12", homeT)
		e.exec(1, "UPDATE $T SET v = 'b', seq = 2 WHERE tenant_id = ? AND id BETWEEN 101 AND 110", lwwU)
		for k := int64(21); k <= 25; k++ {
			e.exec(1, "INSERT INTO $T VALUES (?, ?, 2, 'b')", k, homeT)
		}
		e.startAll()
		for k := int64(1); k <= 10; k++ {
			want[k] = "a"
		}
		delete(want, 11) // the home site's delete beats B's later update
		delete(want, 12)
		for k := int64(21); k <= 25; k++ {
			want[k] = "a"
		}
		e.waitSame(homeT, want, 60*time.Second)
		// U: last writer (B) wins everywhere.
		wantU := map[int64]string{}
		for k := int64(101); k <= 120; k++ {
			wantU[k] = "base"
			if k <= 110 {
				wantU[k] = "b"
			}
		}
		e.waitSame(lwwU, wantU, 60*time.Second)

		// Every B write to T lost at A and would have won on its HLC: 1..10
		// and 11, 12 (updates), 21..25 (inserts). The rows above can
		// converge before A has even read B's writes (A's rows are the
		// result either way, and T and U may sit in different
		// partitions), so the reports are waited for, not sampled.
		e.waitViolations(30*time.Second, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 21, 22, 23, 24, 25)
		// A's updates of U reach B after B's own: B logs them as lost.
		testenv.WaitFor(t, 30*time.Second, "≥ 10 lost conflicts for U at B (A's updates lost to B's)", func() bool {
			return e.conflicts(1, lwwU, "lost") >= 10
		})
		if n := e.conflicts(0, lwwU, "home_only_violation"); n != 0 {
			t.Errorf("%d home_only_violation rows for active-active tenant U", n)
		}
		if n := e.conflicts(1, homeT, "home_only_violation"); n != 0 {
			t.Errorf("B logged %d home_only_violation rows; only the home site rejects non-home writes", n)
		}
		e.waitHandled()
	}

	t.Log("scenario: nonHomeUpdateAfterHome")
	{
		// B overwrites a row it received from A: its trigger stamps a
		// version above A's, which A rejects.
		e.exec(0, "INSERT INTO $T VALUES (30, ?, 0, 'a')", homeT)
		e.exec(0, "INSERT INTO $T VALUES (31, ?, 0, 'a')", homeT)
		e.waitValue(1, 30, "a")
		e.waitValue(1, 31, "a")
		before := e.conflicts(0, homeT, "home_only_violation")
		e.exec(1, "UPDATE $T SET v = 'b' WHERE id = 30")
		e.exec(1, "DELETE FROM $T WHERE id = 31")
		testenv.WaitFor(t, 30*time.Second, "B's writes to 30, 31 reported at A", func() bool {
			return e.conflicts(0, homeT, "home_only_violation") >= before+2
		})
		want[30], want[31] = "a", "a"
		e.waitSame(homeT, want, 30*time.Second)
		e.waitHandled()
		if n := e.reasserts("row"); n < 2 {
			t.Errorf("A re-asserted %v rows, want ≥ 2", n)
		}
	}

	t.Log("scenario: nonHomeInsertAfterHomeDelete")
	{
		// A deletes a row; B, after applying the delete, inserts the key
		// again: its version follows A's tombstone, which A keeps.
		e.exec(0, "INSERT INTO $T VALUES (40, ?, 0, 'a')", homeT)
		e.waitValue(1, 40, "a")
		e.exec(0, "DELETE FROM $T WHERE id = 40")
		e.waitValue(1, 40, "")
		before := e.conflicts(0, homeT, "home_only_violation")
		e.exec(1, "INSERT INTO $T VALUES (40, ?, 2, 'b')", homeT)
		testenv.WaitFor(t, 30*time.Second, "B's insert of 40 reported at A", func() bool {
			return e.conflicts(0, homeT, "home_only_violation") > before
		})
		e.waitSame(homeT, want, 30*time.Second)
		e.waitHandled()
		if n := e.reasserts("tombstone"); n < 1 {
			t.Errorf("A published %v deletes again, want ≥ 1", n)
		}
	}

	t.Log("scenario: replicatorCrashes")
	{
		// B overwrites 40 of A's rows, one per transaction, while A's
		// replicator is killed now and then: a kill may fall between a
		// violation's commit and its re-assert, or between the re-assert
		// and its mark.
		for k := int64(50); k < 90; k++ {
			e.exec(0, "INSERT INTO $T VALUES (?, ?, 0, 'a')", k, homeT)
			want[k] = "a"
		}
		e.waitValue(1, 89, "a")
		for k := int64(50); k < 90; k++ {
			e.exec(1, "UPDATE $T SET v = 'b' WHERE id = ?", k)
			if k%10 == 5 {
				e.kill(0)
				e.startSite(0)
			}
		}
		e.waitSame(homeT, want, 60*time.Second)
		e.waitHandled()
	}

	t.Log("scenario: crashWhilePending")
	{
		// A's re-assert of key 95 fails (a trigger refuses local updates
		// of it), so its violation is committed and pending when A's
		// replicator is killed: the restarted replicator re-asserts it.
		e.exec(0, "INSERT INTO $T VALUES (95, ?, 0, 'a')", homeT)
		want[95] = "a"
		e.waitValue(1, 95, "a")
		e.exec(0, "CREATE TRIGGER `"+e.db+"`.block_reassert BEFORE UPDATE ON $T FOR EACH ROW "+
			"IF NEW.id = 95 AND COALESCE(@tandem_apply, 0) = 0 THEN "+
			"SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'test: re-assert of 95 refused'; END IF")
		before := e.reasserts("error")
		e.exec(1, "UPDATE $T SET v = 'b' WHERE id = 95")
		testenv.WaitFor(t, 30*time.Second, "A's re-assert of 95 failing", func() bool { return e.reasserts("error") > before })
		if e.pending(0) == 0 || e.value(1, 95) != "b" {
			t.Fatalf("want 95's violation pending at A and B diverged; pending %d, B has %q", e.pending(0), e.value(1, 95))
		}
		e.kill(0)
		e.exec(0, "DROP TRIGGER `"+e.db+"`.block_reassert")
		e.startSite(0)
		e.waitSame(homeT, want, 30*time.Second)
		e.waitHandled()
	}

	t.Log("scenario: reassertAgain")
	{
		// Every violation handled once more, as after a crash between the
		// re-assert and its mark: nothing is stamped again (the rows moved
		// on), deletes are only published again (duplicates), the sites
		// stay converged.
		e.stop(0)
		rowsBefore := e.rows(0, homeT)
		e.exec(0, "UPDATE `"+e.meta+"`._tandem_conflicts SET reasserted_at = NULL WHERE kind = 'home_only_violation'")
		e.startSite(0)
		e.waitHandled()
		if n := e.reasserts("row"); n != 0 {
			t.Errorf("handling the violations again stamped %v rows again", n)
		}
		if n := e.reasserts("superseded"); n < 40 {
			t.Errorf("handling the violations again found %v superseded, want ≥ 40", n)
		}
		if after := e.rows(0, homeT); after != rowsBefore {
			t.Errorf("A's rows changed when the violations were handled again:\nbefore:\n%s\nafter:\n%s", rowsBefore, after)
		}
		e.waitSame(homeT, want, 30*time.Second)
	}

	t.Log("scenario: activeActiveTenant")
	{
		// U: B's later write wins everywhere, and nothing is reported.
		before := e.conflicts(0, lwwU, "lost") + e.conflicts(1, lwwU, "lost")
		e.exec(0, "INSERT INTO $T VALUES (130, ?, 0, 'a')", lwwU)
		e.waitValue(1, 130, "a")
		e.exec(1, "UPDATE $T SET v = 'b' WHERE id = 130")
		e.exec(1, "DELETE FROM $T WHERE id = 120")
		e.waitValue(0, 130, "b")
		e.waitValue(0, 120, "")
		e.waitSame(lwwU, nil, 30*time.Second)
		if after := e.conflicts(0, lwwU, "lost") + e.conflicts(1, lwwU, "lost"); after != before {
			t.Errorf("U's causal writes logged %d conflicts", after-before)
		}
	}
}

// TestLateInsertHomePolicy: TestLateInsertConverges's late insert at A,
// behind A's sink applying a delete replicated from B, for a key of each
// of three tenants: T at home at A, W at home at B, U active-active. Each
// insert's version is below the delete's. Under T's rule A's insert (a
// home version) beats B's tombstone: B applies it and A keeps it. Under
// W's rule B's (home) tombstone wins, under U's the greater version, the
// tombstone again: B refuses the insert as lost (not a violation: it
// would not have won on its HLC either, so nothing is re-asserted), and
// A's reconciler must remove it, or the sites differ for good.
func TestLateInsertHomePolicy(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	e := newHomeOnlyEnv(t)
	const homeW = "tenW"
	if _, err := e.reg.Put(context.Background(), tenant.Tenant{ID: homeW, Mode: tenant.ModeHomeOnly, HomeSite: e.sites[1].id}); err != nil {
		t.Fatal(err)
	}
	e.startAll()
	for i := range e.sites {
		testenv.WaitFor(t, 10*time.Second, "W home-only at "+e.sites[i].name, func() bool {
			return e.tenantMode(i, homeW) == string(tenant.ModeHomeOnly)
		})
	}
	keys := map[string]int64{homeT: 1, homeW: 2, lwwU: 3}
	for _, id := range []string{homeT, homeW, lwwU} {
		// Written at B, so that A's sink applies B's delete under every
		// rule (a row of T's home would beat it at A).
		e.exec(1, "INSERT INTO $T VALUES (?, ?, 0, 'b')", keys[id], id)
		e.waitValue(0, keys[id], "b")
	}
	orders := "`" + e.db + "`.orders"
	for _, id := range []string{homeT, homeW, lwwU} {
		k := keys[id]
		testenv.InsertBehindSinkDelete(t, e.dbs[0], fmt.Sprintf("SELECT id FROM %s WHERE id = %d FOR UPDATE", orders, k),
			func() { e.exec(1, "DELETE FROM $T WHERE id = ?", k) },
			fmt.Sprintf("INSERT INTO %s VALUES (%d, '%s', 1, 'late')", orders, k, id), 5*time.Second)
	}
	e.waitSame(homeT, map[int64]string{keys[homeT]: "late"}, 30*time.Second)
	e.waitSame(homeW, map[int64]string{}, 30*time.Second)
	e.waitSame(lwwU, map[int64]string{}, 30*time.Second)
	if got := e.metric(0, "tandem_late_inserts_removed_total", ""); got != 2 {
		t.Errorf("tandem_late_inserts_removed_total at A = %v, want 2 (W's and U's inserts)", got)
	}
	if got := e.metric(1, "tandem_late_inserts_removed_total", ""); got != 0 {
		t.Errorf("tandem_late_inserts_removed_total at B = %v, want 0 (T's row beats B's tombstone there)", got)
	}
}
