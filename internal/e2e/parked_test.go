package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tandemdb/tandem/internal/compare"
	"github.com/tandemdb/tandem/internal/testenv"
)

// TestParkedRetryAfterSchemaChange: a column added at A first (a schema
// change rolled out site by site) makes A's changes to that table fail at
// B, without the tenant registry: they are parked and the partition goes
// on. Retrying before B is altered fails on the first one and applies
// nothing; after B's ALTER TABLE, POST /v1/parked/retry applies them all,
// oldest first, exactly once (a second retry finds none), while B's own
// writes to the same rows meanwhile keep their greater versions; the sites
// converge. Skipping an unknown id is refused.
func TestParkedRetryAfterSchemaChange(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	c := newCluster(t, testenv.SharedBroker(t), testenv.SharedMariaDB(t, 1), testenv.SharedMariaDB(t, 2))
	for _, s := range c.sites {
		s.srv.Exec(t, "CREATE TABLE `"+c.db+"`.dd (id INT NOT NULL PRIMARY KEY, v VARCHAR(20) NOT NULL) ENGINE=InnoDB")
	}
	c.writeConfigs("")
	c.prepare()
	c.start(0)
	c.start(1)
	a, b := c.dbAt(0), c.dbAt(1)
	run := func(i int, qs ...string) {
		t.Helper()
		for _, q := range qs {
			if _, err := c.dbAt(i).Exec(strings.ReplaceAll(q, "$db", "`"+c.db+"`")); err != nil {
				t.Fatalf("%s at %s: %v", q, c.sites[i].name, err)
			}
		}
	}
	tables := []string{c.db + ".dd"}
	converged := func(what string) {
		t.Helper()
		testenv.WaitFor(t, time.Minute, what, func() bool {
			res, err := compare.Tables(context.Background(), a, b, tables)
			return err == nil && res.Equal()
		})
	}
	run(0, "INSERT INTO $db.dd (id, v) VALUES (1, 'one'), (2, 'two'), (3, 'three')")
	converged("the first rows at both sites")

	// The schema change reaches A first; A's application writes the new
	// column at once.
	run(0, "ALTER TABLE $db.dd ADD COLUMN extra VARCHAR(20) NULL",
		"INSERT INTO $db.dd (id, v, extra) VALUES (10, 'ten', 'x')",
		"UPDATE $db.dd SET extra = 'y' WHERE id = 1",
		"UPDATE $db.dd SET v = 'two at A' WHERE id = 2")
	type parked struct {
		ID     int64  `json:"id"`
		Reason string `json:"reason"`
		Error  string `json:"error"`
		Status string `json:"status"`
	}
	list := func(status string) []parked {
		t.Helper()
		code, body := c.call(1, "GET", "/v1/parked?status="+status, nil)
		if code != 200 {
			t.Fatalf("GET /v1/parked?status=%s: %d %s", status, code, body)
		}
		var v struct {
			Parked []parked `json:"parked"`
		}
		if err := json.Unmarshal([]byte(body), &v); err != nil {
			t.Fatal(err)
		}
		return v.Parked
	}
	testenv.WaitFor(t, time.Minute, "A's three transactions parked at B", func() bool { return len(list("parked")) == 3 })
	for _, p := range list("parked") {
		if p.Reason != "apply" || !strings.Contains(p.Error, "extra") {
			t.Errorf("parked %+v: want reason apply and an error naming the column", p)
		}
	}
	// B writes row 2 after A did: B's version is greater and must stay.
	run(1, "UPDATE $db.dd SET v = 'two at B' WHERE id = 2")

	// Retried before the fix: the first still fails, nothing is applied.
	code, body := c.call(1, "POST", "/v1/parked/retry", nil)
	if code != 409 || !strings.Contains(body, `"retried":[]`) || !strings.Contains(body, "extra") {
		t.Errorf("retry before the fix: %d %s; want 409 naming the column, nothing retried", code, body)
	}
	if code, body := c.call(1, "GET", "/v1/parked?status=sideways", nil); code != 400 || !strings.Contains(body, `"all"`) {
		t.Errorf("bad status: %d %s", code, body)
	}
	if code, body := c.call(1, "POST", "/v1/parked/999999/skip", nil); code != 404 {
		t.Errorf("skip of an unknown id: %d %s", code, body)
	}
	if code, body := c.call(1, "POST", "/v1/parked/retry?origin=s9", nil); code != 404 || !strings.Contains(body, `"s1"`) {
		t.Errorf("retry from an unknown origin: %d %s", code, body)
	}

	run(1, "ALTER TABLE $db.dd ADD COLUMN extra VARCHAR(20) NULL")
	code, body = c.call(1, "POST", "/v1/parked/retry", nil)
	var done struct {
		Retried []int64 `json:"retried"`
	}
	json.Unmarshal([]byte(body), &done)
	if code != 200 || len(done.Retried) != 3 {
		t.Fatalf("retry after the fix: %d %s; want all three retried", code, body)
	}
	if n := len(list("parked")); n != 0 {
		t.Errorf("%d messages still parked after the retry", n)
	}
	if n := len(list("retried")); n != 3 {
		t.Errorf("%d messages listed as retried; want 3", n)
	}
	if code, body := c.call(1, "POST", "/v1/parked/retry", nil); code != 200 || !strings.Contains(body, `"retried":[]`) {
		t.Errorf("second retry: %d %s; want nothing to do", code, body)
	}
	converged("the sites after the retry")
	var v, extra string
	if err := b.QueryRow(fmt.Sprintf("SELECT v, COALESCE((SELECT extra FROM `%s`.dd WHERE id = 10), '') FROM `%s`.dd WHERE id = 2", c.db, c.db)).Scan(&v, &extra); err != nil {
		t.Fatal(err)
	}
	if v != "two at B" || extra != "x" {
		t.Errorf("row 2 holds %q (want B's later write), row 10's extra %q (want A's)", v, extra)
	}
	// The readers count dropped sink transactions in their metrics once a
	// second.
	testenv.WaitFor(t, 10*time.Second, "the readers' loop-prevention counters", func() bool {
		return c.metric(0, "tandem_txns_dropped_loop_total", "")+c.metric(1, "tandem_txns_dropped_loop_total", "") > 0
	})
	checkNoEcho(t, c)
}
