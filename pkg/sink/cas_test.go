package sink

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/tandemdb/tandem/pkg/event"
	"github.com/tandemdb/tandem/pkg/hlc"
)

const (
	ins = event.OpInsert
	upd = event.OpUpdate
	del = event.OpDelete
)

// TestCASMatrix applies sequences of changes to one row, each change in its
// own batch, and checks every outcome and the final row and tombstone.
func TestCASMatrix(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{}, kvTable)
	vs := newVersions()
	v := make([]hlc.Timestamp, 5) // v[1] < v[2] < v[3] < v[4]
	for i := 1; i < len(v); i++ {
		v[i] = vs.next(2)
	}
	type step struct {
		op   event.Op
		val  string
		ver  int    // index into v
		want string // applied, duplicate, conflict
	}
	cases := []struct {
		name     string
		steps    []step
		wantRow  int // index into v of the row's version, 0 = no row
		wantVal  string
		wantTomb int
	}{
		{"insert vs older insert", []step{{ins, "a", 2, "applied"}, {ins, "b", 1, "conflict"}, {ins, "c", 3, "applied"}}, 3, "c", 0},
		{"update vs delete: newer delete first", []step{{ins, "a", 1, "applied"}, {del, "", 3, "applied"}, {upd, "b", 2, "conflict"}}, 0, "", 3},
		{"delete vs update: newer update first", []step{{ins, "a", 1, "applied"}, {upd, "b", 3, "applied"}, {del, "", 2, "conflict"}}, 3, "b", 0},
		{"delete of a missing row, then a late older insert", []step{{del, "", 2, "applied"}, {ins, "old", 1, "conflict"}}, 0, "", 2},
		{"delete of a missing row, then a late older update", []step{{del, "", 2, "applied"}, {upd, "old", 1, "conflict"}}, 0, "", 2},
		{"equal versions are duplicates", []step{{ins, "a", 2, "applied"}, {ins, "a", 2, "duplicate"}, {del, "", 3, "applied"}, {del, "", 3, "duplicate"}}, 0, "", 3},
		{"newer insert over a tombstone recreates the row", []step{{ins, "a", 1, "applied"}, {del, "", 2, "applied"}, {ins, "b", 3, "applied"}}, 3, "b", 2},
		{"older delete after a newer delete", []step{{del, "", 3, "applied"}, {del, "", 2, "conflict"}}, 0, "", 3},
		{"newer delete raises the tombstone", []step{{del, "", 2, "applied"}, {del, "", 3, "applied"}}, 0, "", 3},
		{"updates in order", []step{{ins, "a", 1, "applied"}, {upd, "b", 2, "applied"}, {upd, "c", 4, "applied"}}, 4, "c", 0},
	}
	for i, tc := range cases {
		id := int64(i + 1)
		conflictsBefore := f.conflictCount(t, id)
		wantConflicts := 0
		for j, s := range tc.steps {
			res := f.apply(t, f.batch(txn(f.kv(s.op, id, s.val, v[s.ver]))))
			got := outcome(res)
			if got == "conflict" {
				wantConflicts++
			}
			if got != s.want {
				t.Errorf("%s: step %d (%v v%d): %s, want %s (%+v)", tc.name, j, s.op, s.ver, got, s.want, res)
			}
		}
		st := f.state(t, "kv", id)
		if st.row != v[tc.wantRow] || st.tomb != v[tc.wantTomb] {
			t.Errorf("%s: row version %v, tombstone %v; want %v, %v", tc.name, st.row, st.tomb, v[tc.wantRow], v[tc.wantTomb])
		}
		if tc.wantRow != 0 {
			if got := f.query(t, "SELECT val FROM kv WHERE id = ?", id); len(got) != 1 || got[0] != tc.wantVal {
				t.Errorf("%s: val %v, want %q", tc.name, got, tc.wantVal)
			}
		}
		if got := f.conflictCount(t, id) - conflictsBefore; got != wantConflicts {
			t.Errorf("%s: %d conflict rows, want %d", tc.name, got, wantConflicts)
		}
	}

	// The conflict rows carry both versions and sites.
	rows := f.query(t, "SELECT schema_name, table_name, pk_json, kind, local_version, incoming_version, local_site, incoming_site, origin_gtid FROM "+
		quoteIdent(f.meta)+"._tandem_conflicts WHERE pk_json = '[\"1\"]'")
	want := fmt.Sprintf("%s|kv|[\"1\"]|lost|%d|%d|2|2|2-102-1", f.data, v[2], v[1])
	if len(rows) != 1 || rows[0] != want {
		t.Errorf("conflict rows %q, want [%q]", rows, want)
	}
}

func (f *fixture) conflictCount(t testing.TB, id int64) int {
	t.Helper()
	var n int
	if err := f.db.QueryRow("SELECT COUNT(*) FROM "+quoteIdent(f.meta)+"._tandem_conflicts WHERE pk_json = ?",
		fmt.Sprintf(`["%d"]`, id)).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestCollapseInBatch checks that a batch holding several changes of one
// row writes the newest and accounts for the others.
func TestCollapseInBatch(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{}, kvTable)
	vs := newVersions()
	v1, v2, v3 := vs.next(2), vs.next(2), vs.next(2)
	res := f.apply(t, f.batch(
		txn(f.kv(ins, 1, "a", v1), f.kv(ins, 2, "a", v1)),
		txn(f.kv(upd, 1, "b", v2), f.kv(upd, 2, "b", v3)),
		txn(f.kv(del, 1, "", v3), f.kv(upd, 2, "old", v2)), // row 2: older after newer
		txn(f.kv(upd, 2, "b", v3)),                         // row 2: the same version again
	))
	if res.Rows != 7 || res.Applied != 2 || res.Superseded != 4 || res.Duplicates != 1 || res.Tombstones != 1 || res.Deletes != 0 {
		t.Errorf("Result %+v", res)
	}
	if st := f.state(t, "kv", 1); st.row != 0 || st.tomb != v3 {
		t.Errorf("row 1: %+v, want deleted with tombstone %v", st, v3)
	}
	if got := f.query(t, "SELECT val, _tandem_hlc FROM kv WHERE id = 2"); len(got) != 1 || got[0] != fmt.Sprintf("b|%d", v3) {
		t.Errorf("row 2: %v", got)
	}
}

// TestIdempotency replays batches: the same batch is recognised by its
// offsets, the same transactions at later offsets are all duplicates.
func TestIdempotency(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{}, kvTable)
	vs := newVersions()
	var txns []event.Txn
	for i := range 50 {
		id := int64(i%20 + 1)
		op := []event.Op{ins, upd, del}[i%3]
		txns = append(txns, txn(f.kv(op, id, fmt.Sprint("v", i), vs.next(2))))
	}
	b := f.batch(txns...)
	first := f.apply(t, b)
	if first.Applied == 0 {
		t.Fatalf("first apply: %+v", first)
	}
	sum := f.checksum(t, "kv")
	again := f.apply(t, b)
	if !again.AlreadyApplied || again.Rows != 0 {
		t.Errorf("same batch again: %+v, want AlreadyApplied", again)
	}
	later := f.apply(t, f.batch(txns...))
	if later.Duplicates != first.Applied+first.Duplicates || later.Superseded != first.Superseded || later.Conflicts != 0 {
		t.Errorf("same transactions at later offsets: %+v; first %+v", later, first)
	}
	if got := f.checksum(t, "kv"); got != sum {
		t.Errorf("replays changed the data: %s -> %s", sum, got)
	}
	// A batch whose offsets lie below the stored one is a replay too.
	old := b
	old.FirstOffset, old.NextOffset = 0, 1
	if res := f.apply(t, old); !res.AlreadyApplied {
		t.Errorf("older batch: %+v, want AlreadyApplied", res)
	}

	// A replayed batch whose table was dropped since is still recognised
	// by its offsets, not refused for the missing table.
	f.exec(t, "DROP TABLE kv")
	f.sink.meta.invalidate(f.data, "kv") // as a failed statement would
	if res := f.apply(t, b); !res.AlreadyApplied {
		t.Errorf("batch of a dropped table again: %+v, want AlreadyApplied", res)
	}
}

// TestFencing: once epoch 2 applied, a batch of epoch 1 is refused and
// changes nothing.
func TestFencing(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{}, kvTable)
	vs := newVersions()
	b := f.batch(txn(f.kv(ins, 1, "new leader", vs.next(2))))
	b.Epoch = 2
	f.apply(t, b)
	sum := f.checksum(t, "kv")
	offs, err := f.sink.Offsets(context.Background(), f.topic)
	if err != nil {
		t.Fatal(err)
	}

	stale := f.batch(txn(f.kv(ins, 2, "old leader", vs.next(2))))
	stale.Epoch = 1
	_, err = f.sink.Apply(context.Background(), stale)
	if !errors.Is(err, ErrFenced) || IsRetryable(err) {
		t.Fatalf("Apply with an older epoch: %v, want ErrFenced", err)
	}
	f.checkIdle(t) // the refused claim was rolled back
	if got := f.checksum(t, "kv"); got != sum {
		t.Errorf("fenced batch changed data: %s -> %s", sum, got)
	}
	if offs2, _ := f.sink.Offsets(context.Background(), f.topic); offs2[0] != offs[0] {
		t.Errorf("fenced batch moved the offset %d -> %d", offs[0], offs2[0])
	}
	f.checkIdle(t) // Offsets ends its read
	// No lease (epoch 0) is older than any lease.
	stale.Epoch = 0
	if _, err := f.sink.Apply(context.Background(), stale); !errors.Is(err, ErrFenced) {
		t.Errorf("epoch 0 after epoch 2: %v, want ErrFenced", err)
	}
	// The same or a newer epoch goes on.
	stale.Epoch = 3
	f.apply(t, stale)
	if got := f.query(t, "SELECT epoch FROM "+quoteIdent(f.meta)+"._tandem_offsets WHERE topic = ?", f.topic); len(got) != 1 || got[0] != "3" {
		t.Errorf("stored epoch %v, want 3", got)
	}
}

// TestOffsetsAndParked: Offsets returns what Apply stored per partition; a
// parked message is stored once even when a later batch carries it again.
func TestOffsetsAndParked(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{}, kvTable)
	vs := newVersions()
	ctx := context.Background()
	if offs, err := f.sink.Offsets(ctx, f.topic); err != nil || len(offs) != 0 {
		t.Fatalf("Offsets of a new topic: %v, %v", offs, err)
	}
	parked := Parked{Offset: 11, Tenant: "acme", Reason: "decode", Err: "bad magic \xff", Payload: []byte{0, 0xff, '\'', '\\'}}
	b := Batch{Topic: f.topic, Partition: 3, FirstOffset: 10, NextOffset: 12, Origin: 2,
		Txns: []event.Txn{txn(f.kv(ins, 1, "a", vs.next(2)))}, Parked: []Parked{parked}}
	f.apply(t, b)
	b2 := Batch{Topic: f.topic, Partition: 5, FirstOffset: 0, NextOffset: 7, Origin: 2}
	f.apply(t, b2)
	// The consumer re-reads from offset 11 after a restart that lost the
	// first batch's boundaries: the parked message comes again.
	b3 := Batch{Topic: f.topic, Partition: 3, FirstOffset: 11, NextOffset: 13, Origin: 2, Parked: []Parked{parked, {Offset: 12, Reason: "apply", Err: "x"}}}
	f.apply(t, b3)
	offs, err := f.sink.Offsets(ctx, f.topic)
	if err != nil {
		t.Fatal(err)
	}
	if len(offs) != 2 || offs[3] != 13 || offs[5] != 7 {
		t.Errorf("Offsets = %v, want map[3:13 5:7]", offs)
	}
	rows := f.query(t, "SELECT topic, part, msg_offset, tenant, reason, error, HEX(payload), status FROM "+
		quoteIdent(f.meta)+"._tandem_parked ORDER BY msg_offset")
	want := []string{
		f.topic + "|3|11|acme|decode|bad magic \uFFFD|00FF275C|parked",
		f.topic + "|3|12||apply|x||parked",
	}
	if strings.Join(rows, "\n") != strings.Join(want, "\n") {
		t.Errorf("parked rows:\n%s\nwant:\n%s", strings.Join(rows, "\n"), strings.Join(want, "\n"))
	}
	// The watermark is the greatest stamp applied.
	if got := f.query(t, "SELECT origin, applied_hlc FROM "+quoteIdent(f.meta)+"._tandem_watermarks"); len(got) != 1 ||
		got[0] != fmt.Sprintf("2|%d", b.Txns[0].Stamp) {
		t.Errorf("watermarks %v", got)
	}
}

func TestInvalidBatch(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{}, kvTable)
	for _, b := range []Batch{
		{Partition: 0, FirstOffset: 0, NextOffset: 1, Origin: 2},
		{Topic: "t", FirstOffset: 5, NextOffset: 5, Origin: 2},
		{Topic: "t", FirstOffset: 0, NextOffset: 1},
	} {
		if _, err := f.sink.Apply(context.Background(), b); err == nil || IsRetryable(err) {
			t.Errorf("Apply(%+v) = %v, want a non-retryable error", b, err)
		}
	}
}

// TestStaleConnectionReplaced: an idle sink connection the server closed
// (a restart, wait_timeout) is replaced once when the next batch claims
// its offsets, and the batch applies without an error.
func TestStaleConnectionReplaced(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{}, kvTable)
	vs := newVersions()
	f.apply(t, f.batch(txn(f.kv(ins, 1, "a", vs.next(2)))))
	f.sink.mu.Lock()
	idle := append([]*sql.Conn(nil), f.sink.idle...)
	f.sink.mu.Unlock()
	if len(idle) == 0 {
		t.Fatal("no idle sink connection after an apply")
	}
	for _, c := range idle {
		var id int64
		if err := c.QueryRowContext(context.Background(), "SELECT CONNECTION_ID()").Scan(&id); err != nil {
			t.Fatal(err)
		}
		f.exec(t, fmt.Sprintf("KILL CONNECTION %d", id))
	}
	f.apply(t, f.batch(txn(f.kv(ins, 2, "b", vs.next(2)))))
	if got := f.query(t, "SELECT id, val FROM kv ORDER BY id"); strings.Join(got, ",") != "1|a,2|b" {
		t.Errorf("rows %v, want 1|a,2|b", got)
	}
}
