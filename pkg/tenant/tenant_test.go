package tenant

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble"

	"github.com/tandemdb/tandem/internal/testenv"
	"github.com/tandemdb/tandem/pkg/conflict"
	"github.com/tandemdb/tandem/pkg/event"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func str(s string) event.Value { return event.Value{Kind: event.KindString, Bytes: []byte(s)} }
func num(n int64) event.Value  { return event.Value{Kind: event.KindInt, Int: n} }

func change(schema, table string, cols []string, row ...event.Value) event.Change {
	return event.Change{Schema: schema, Table: table, Op: event.OpInsert, Columns: cols, PK: []int{0}, Row: row}
}

var testRules = []Rule{
	{Schema: "shop", Table: "*", Column: "tenant_id"},
	{Schema: "crm", Table: "accounts", Column: "org"},
	{SchemaPattern: `tenant_(\w+)`},
}

func TestResolverTenant(t *testing.T) {
	r, err := NewResolver(testRules)
	if err != nil {
		t.Fatal(err)
	}
	cols := []string{"id", "tenant_id", "v"}
	for _, tc := range []struct {
		name string
		ch   event.Change
		want string
	}{
		{"column string", change("shop", "orders", cols, num(1), str("acme"), str("x")), "acme"},
		{"column int", change("shop", "orders", cols, num(1), num(42), str("x")), "42"},
		{"column null is global", change("shop", "orders", cols, num(1), event.Null, str("x")), Global},
		{"column missing is global", change("shop", "orders", []string{"id"}, num(1)), Global},
		{"table filter", change("crm", "accounts", []string{"id", "org"}, num(1), str("o1")), "o1"},
		{"table filter miss", change("crm", "contacts", []string{"id", "org"}, num(1), str("o1")), Global},
		{"schema pattern", change("tenant_blue", "orders", cols, num(1), str("acme"), str("x")), "blue"},
		{"schema pattern full match only", change("xtenant_blue", "orders", cols, num(1), str("a"), str("x")), Global},
		{"unmapped", change("other", "t", cols, num(1), str("acme"), str("x")), Global},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := r.Tenant(&tc.ch); got != tc.want {
				t.Fatalf("Tenant = %q, want %q", got, tc.want)
			}
		})
	}
	var none *Resolver
	ch := change("shop", "orders", cols, num(1), str("acme"), str("x"))
	if got := none.Tenant(&ch); got != Global {
		t.Fatalf("nil resolver: %q, want global", got)
	}
	// Column names the tenant column of column-mapped tables only.
	for _, tc := range []struct{ schema, table, want string }{
		{"shop", "orders", "tenant_id"},
		{"crm", "accounts", "org"},
		{"crm", "contacts", ""},
		{"tenant_blue", "orders", ""},
		{"other", "t", ""},
	} {
		if got := r.Column(tc.schema, tc.table); got != tc.want {
			t.Errorf("Column(%s, %s) = %q, want %q", tc.schema, tc.table, got, tc.want)
		}
	}
	if got := none.Column("shop", "orders"); got != "" {
		t.Errorf("nil resolver: Column = %q", got)
	}
}

func TestRuleCheck(t *testing.T) {
	for _, tc := range []struct {
		rule Rule
		want string
	}{
		{Rule{Schema: "shop", Column: "t"}, ""},
		{Rule{SchemaPattern: `tenant_(\w+)`}, ""},
		{Rule{Schema: "shop"}, "neither column nor schema_pattern"},
		{Rule{Column: "t"}, "needs schema"},
		{Rule{Schema: "s", Column: "t", SchemaPattern: "(x)"}, "both column and schema_pattern"},
		{Rule{SchemaPattern: `tenant_\w+`}, "no capture group"},
		{Rule{SchemaPattern: `(`}, "not a regular expression"},
		{Rule{Schema: "s", Table: "[", Column: "t"}, "not a valid glob"},
	} {
		err := tc.rule.Check()
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%+v: Check() = %v, want %q", tc.rule, err, tc.want)
		}
	}
}

func TestSplit(t *testing.T) {
	r, _ := NewResolver(testRules)
	cols := []string{"id", "tenant_id"}
	a1 := change("shop", "o", cols, num(1), str("a"))
	b1 := change("shop", "o", cols, num(2), str("b"))
	a2 := change("shop", "o", cols, num(3), str("a"))
	g1 := change("other", "t", cols, num(4), str("a"))
	b2 := change("tenant_b", "o", cols, num(5), str("zzz"))
	base := event.Txn{Origin: 1, GTID: "1-1-9", Position: event.Position{GTIDSet: "1-1-9"}, Fragment: 2, Last: true}
	with := func(tenant string, chs ...event.Change) event.Txn {
		t := base
		t.Tenant, t.Changes = tenant, chs
		return t
	}
	for _, tc := range []struct {
		name string
		in   event.Txn
		want []event.Txn
	}{
		{"empty", base, []event.Txn{base}},
		{"one tenant", with("", a1, a2), []event.Txn{with("a", a1, a2)}},
		{"global only", with("", g1), []event.Txn{with("", g1)}},
		{"interleaved keeps order per tenant", with("", a1, b1, g1, a2, b2),
			[]event.Txn{with("a", a1, a2), with("b", b1, b2), with("", g1)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Split(tc.in, r)
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("Split:\n got %+v\nwant %+v", got, tc.want)
			}
			for _, p := range got {
				if i, _ := Foreign(&p, r); i >= 0 {
					t.Errorf("part of %q holds a foreign change %d", p.Tenant, i)
				}
			}
		})
	}
	forged := with("a", a1, b1)
	if i, owner := Foreign(&forged, r); i != 1 || owner != "b" {
		t.Fatalf("Foreign = %d, %q; want 1, b", i, owner)
	}
}

func TestTenantValidate(t *testing.T) {
	for _, tc := range []struct {
		t    Tenant
		want string
	}{
		{Tenant{ID: "a"}, ""},
		{Tenant{ID: "a", Mode: ModeHomeOnly, HomeSite: 2}, ""},
		{Tenant{ID: "", Mode: "x"}, "id: tenant id is empty"},
		{Tenant{ID: "a", Mode: "pause"}, `mode "pause" is not allowed; allowed active-active, home-only, paused, excluded`},
		{Tenant{ID: "a", RateLimit: -1}, "rate_limit"},
		{Tenant{ID: "a", Mode: ModeHomeOnly}, "home_site: required"},
		{Tenant{ID: "a", ConflictPolicy: "x"}, "conflict_policy"},
	} {
		err := tc.t.Validate()
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%+v: Validate() = %v, want %q", tc.t, err, tc.want)
		}
	}
	if p := (Tenant{ID: "a", Mode: ModeHomeOnly, HomeSite: 3}).Policy(); p != (conflict.Policy{HomeSite: 3}) {
		t.Fatalf("home-only policy %+v", p)
	}
	if p := (Tenant{ID: "a", HomeSite: 3}).Policy(); p != (conflict.Policy{}) {
		t.Fatalf("active-active policy %+v", p)
	}
}

func TestSnapshotDefaults(t *testing.T) {
	s := NewSnapshot(7, time.Time{}, []Tenant{{ID: "b", Mode: ModePaused}, {ID: "a", RateLimit: 5}})
	if got := s.Get("zz"); got.Mode != ModeActiveActive || got.RateLimit != 0 || got.ID != "zz" {
		t.Fatalf("default entry %+v", got)
	}
	if got := s.Get("b"); got.Mode != ModePaused {
		t.Fatalf("b: %+v", got)
	}
	if l := s.List(); len(l) != 2 || l[0].ID != "a" || l[1].ID != "b" {
		t.Fatalf("List %+v", l)
	}
	var none *Snapshot
	if none.Get("x").Mode != ModeActiveActive || none.Len() != 0 {
		t.Fatal("nil snapshot")
	}
}

func TestBucket(t *testing.T) {
	t0 := time.Unix(1000, 0)
	b := NewBucket(100, t0)
	if !b.Take(100, t0) {
		t.Fatal("a full bucket refused its burst")
	}
	if b.Take(1, t0) {
		t.Fatal("an empty bucket granted a take")
	}
	if w := b.Wait(t0); w <= 0 || w > 20*time.Millisecond {
		t.Fatalf("Wait = %v, want about 10ms", w)
	}
	// Debt: a take larger than the burst passes when the balance is
	// positive, and the debt is paid back at the rate.
	t1 := t0.Add(10 * time.Millisecond)
	if !b.Take(500, t1) {
		t.Fatal("positive balance refused a large take")
	}
	if b.Take(1, t0.Add(4*time.Second)) {
		t.Fatal("debt of 499 rows at 100 rows/s paid back in 4s")
	}
	if !b.Take(1, t0.Add(6*time.Second)) {
		t.Fatal("debt not paid back after 6s")
	}
	// Rate over a long run stays at the rate.
	b = NewBucket(1000, t0)
	granted := 0
	for i := range 10_000 { // 10 s in 1 ms steps, asking 5 rows each
		if b.Take(5, t0.Add(time.Duration(i)*time.Millisecond)) {
			granted += 5
		}
	}
	if granted < 10_000 || granted > 11_010 {
		t.Fatalf("granted %d rows in 10s at 1000 rows/s", granted)
	}
	u := NewBucket(0, t0)
	if !u.Take(1e9, t0) || u.Wait(t0) != 0 {
		t.Fatal("unlimited bucket throttled")
	}
}

func openPebble(t *testing.T, dir string) *pebble.DB {
	t.Helper()
	db, err := pebble.Open(dir, &pebble.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func TestQueuesDurableOrderedDeduped(t *testing.T) {
	dir := t.TempDir()
	db := openPebble(t, dir)
	q, err := OpenQueues(db, "topic.a")
	if err != nil {
		t.Fatal(err)
	}
	var es []Entry
	for i := range 5 {
		es = append(es, Entry{Tenant: "t\x00x", Partition: 1, Offset: int64(10 + i), Payload: []byte{byte(i)}, Cause: CausePaused})
	}
	es = append(es, Entry{Tenant: "u", Partition: 2, Offset: 3, Cause: CausePaused})
	if err := q.Append(es); err != nil {
		t.Fatal(err)
	}
	other, _ := OpenQueues(db, "topic.b")
	if err := other.Append([]Entry{{Tenant: "t\x00x", Partition: 1, Offset: 10}}); err != nil {
		t.Fatal(err)
	}
	if seen, _ := q.Seen(1, 12); !seen {
		t.Fatal("queued offset not seen")
	}
	if seen, _ := q.Seen(1, 15); seen {
		t.Fatal("unqueued offset seen")
	}
	db.Close()

	db = openPebble(t, dir)
	defer db.Close()
	q, err = OpenQueues(db, "topic.a")
	if err != nil {
		t.Fatal(err)
	}
	if q.Depth("t\x00x") != 5 || q.Depth("u") != 1 || q.Depth("t") != 0 {
		t.Fatalf("after reopen: %+v", q.Stats())
	}
	head, err := q.Head("t\x00x", 3, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range head {
		if e.Offset != int64(10+i) || e.Payload[0] != byte(i) {
			t.Fatalf("head[%d] = %+v", i, e)
		}
	}
	if err := q.Remove(head[:2]); err != nil {
		t.Fatal(err)
	}
	if err := q.MarkDead(head[2], "apply", "constraint"); err != nil {
		t.Fatal(err)
	}
	if !q.Blocked("t\x00x") || q.Depth("t\x00x") != 3 {
		t.Fatalf("after dead: %+v", q.Stats())
	}
	if got := q.Ready(func(string) int { return 0 }); !reflect.DeepEqual(got, []string{"u"}) {
		t.Fatalf("Ready = %q, want only u (t is blocked)", got)
	}
	// Appends land behind the dead head; a later Append gets a higher seq.
	if err := q.Append([]Entry{{Tenant: "t\x00x", Partition: 1, Offset: 20, Cause: CauseBehind}}); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Skip("u"); err == nil {
		t.Fatal("Skip without a dead head succeeded")
	}
	e, err := q.Retry("t\x00x")
	if err != nil || e.Offset != 12 || q.Blocked("t\x00x") {
		t.Fatalf("Retry: %+v %v", e, err)
	}
	q.MarkDead(e, "apply", "again")
	e, err = q.Skip("t\x00x")
	if err != nil || e.Offset != 12 {
		t.Fatalf("Skip: %+v %v", e, err)
	}
	rest, _ := q.Head("t\x00x", 10, 1<<20)
	var offs []int64
	for _, e := range rest {
		offs = append(offs, e.Offset)
	}
	if !reflect.DeepEqual(offs, []int64{13, 14, 20}) {
		t.Fatalf("remaining offsets %v, want [13 14 20]", offs)
	}
	if seen, _ := q.Seen(1, 12); seen {
		t.Fatal("skipped entry still indexed")
	}
}

// TestQueuesScanStops: Scan hands over entries in order and stops at the
// first false, decoding nothing past it.
func TestQueuesScanStops(t *testing.T) {
	db := openPebble(t, t.TempDir())
	defer db.Close()
	q, err := OpenQueues(db, "topic.a")
	if err != nil {
		t.Fatal(err)
	}
	var es []Entry
	for i := range 5 {
		es = append(es, Entry{Tenant: "t", Partition: 1, Offset: int64(i), Cause: CauseThrottled})
	}
	if err := q.Append(es); err != nil {
		t.Fatal(err)
	}
	var got []int64
	err = q.Scan("t", func(e Entry) bool {
		got = append(got, e.Offset)
		return len(got) < 2
	})
	if err != nil || len(got) != 2 || got[0] != 0 || got[1] != 1 {
		t.Fatalf("Scan saw offsets %v, %v; want [0 1], nil", got, err)
	}
}

// TestSQLMatch: SQLMatch's choice per type. Text-like types compare the
// column's bytes with the ids; BIT and YEAR go through "+ 0"; FLOAT and
// DOUBLE compare numbers, the ids read back at the column's precision and
// written as exact double literals, ids Go could not have written for the
// column dropped; other types are refused. That each accepted type
// matches what the reader names is checked in pkg/binlog
// (TestTenantSQLMatchesReader).
func TestSQLMatch(t *testing.T) {
	quote := func(s string) string { return "'" + s + "'" }
	for _, c := range []struct {
		dataType string
		ids      []string
		want     string
	}{
		{"varchar", []string{"a", "b"}, "CAST(t.`c` AS BINARY) IN (CAST('a' AS BINARY), CAST('b' AS BINARY))"},
		{"bigint", []string{"7"}, "CAST(t.`c` AS BINARY) IN (CAST('7' AS BINARY))"},
		{"datetime", []string{"2024-01-02 03:04:05"}, "CAST(t.`c` AS BINARY) IN (CAST('2024-01-02 03:04:05' AS BINARY))"},
		{"year", []string{"0"}, "CAST(t.`c` + 0 AS BINARY) IN (CAST('0' AS BINARY))"}, // YEAR 0 is "0000" as text, 0 in the binlog
		{"bit", []string{"5"}, "CAST(t.`c` + 0 AS BINARY) IN (CAST('5' AS BINARY))"},  // bytes as text, a number in the binlog
		{"enum", nil, "FALSE"},
		{"double", []string{"1e+06", "0.1", "1000000", "x"}, "t.`c` IN (1e+06, 1e-01)"}, // Go never writes 1000000 for a double
		{"float", []string{"0.1", "1.5"}, "t.`c` IN (1.0000000149011612e-01, 1.5e+00)"}, // the float32 0.1, widened
		{"float", []string{"0.10000000149011612"}, "FALSE"},                             // not how Go writes a float32
		{"json", []string{"a"}, ""},
		{"geometry", []string{"a"}, ""},
	} {
		got, ok := SQLMatch("t.`c`", c.dataType, c.ids, quote)
		if got != c.want || ok != (c.want != "") {
			t.Errorf("SQLMatch(%s, %q) = %q, %v; want %q", c.dataType, c.ids, got, ok, c.want)
		}
	}
}
