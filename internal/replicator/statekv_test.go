package replicator

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/tandemdb/tandem/internal/testenv"
	"github.com/tandemdb/tandem/pkg/schema"
	"github.com/tandemdb/tandem/pkg/sink"
	"github.com/tandemdb/tandem/pkg/tenant"
)

// TestSQLKV: the tenant queues' store in _tandem_state (as schema
// prepare creates it) keeps Pebble's semantics — binary keys in byte
// order, [lower, upper) scans that stop when asked, atomic writes of sets
// and deletes, values larger than one statement — and refuses every write
// once a newer epoch holds the epoch row.
func TestSQLKV(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	srv := testenv.SharedMariaDB(t, 1)
	meta := testenv.NewDatabase(t, srv)
	srv.Exec(t, "DROP DATABASE `"+meta+"`") // prepare creates it
	db := srv.DB(t, "")
	ctx := context.Background()
	plan, err := schema.Inspect(ctx, db, schema.Options{Site: 1, MetaSchema: meta})
	if err != nil {
		t.Fatal(err)
	}
	if err := plan.Apply(ctx, db); err != nil {
		t.Fatal(err)
	}
	epoch := uint64(5)
	kv := newSQLKV(db, meta, func() uint64 { return epoch })

	keys := [][]byte{{'t', 0x00}, {'t', 0x00, 0x01}, {'t', 0x7f}, {'t', 0x80}, {'t', 0xff}, {'t', 0xff, 0xff}, {'u'}}
	var sets []tenant.KVPair
	for i, k := range keys {
		sets = append(sets, tenant.KVPair{Key: k, Value: []byte(fmt.Sprint(i))})
	}
	big := bytes.Repeat([]byte{0xab}, 3<<20) // two of them exceed one statement
	sets = append(sets, tenant.KVPair{Key: []byte("v1"), Value: big}, tenant.KVPair{Key: []byte("v2"), Value: big}, tenant.KVPair{Key: []byte("w")})
	if err := kv.Write(slices.Clone(sets), nil); err != nil {
		t.Fatal(err)
	}
	scan := func(lower, upper []byte, limit int) []string {
		var out []string
		if err := kv.Scan(lower, upper, func(k, v []byte) bool {
			out = append(out, fmt.Sprintf("%x=%d", k, len(v)))
			return len(out) < limit
		}); err != nil {
			t.Fatal(err)
		}
		return out
	}
	// Everything under "t", in byte order (0x80 and 0xff after 0x7f).
	got := scan([]byte("t"), []byte("u"), 100)
	want := []string{"7400=1", "740001=1", "747f=1", "7480=1", "74ff=1", "74ffff=1"}
	if !slices.Equal(got, want) {
		t.Errorf("scan [t, u) = %v, want %v", got, want)
	}
	if got := scan([]byte("t"), nil, 2); len(got) != 2 {
		t.Errorf("scan stopped after %d pairs, want 2", len(got))
	}
	if got := scan([]byte("v"), []byte("x"), 100); !slices.Equal(got, []string{"7631=3145728", "7632=3145728", "77=0"}) {
		t.Errorf("scan [v, x) = %v", got)
	}
	if ok, err := kv.Has([]byte{'t', 0xff}); !ok || err != nil {
		t.Errorf("Has(t\\xff) = %t, %v", ok, err)
	}
	if ok, err := kv.Has([]byte{'t', 0xfe}); ok || err != nil {
		t.Errorf("Has(t\\xfe) = %t, %v", ok, err)
	}
	// Sets and deletes in one write.
	if err := kv.Write([]tenant.KVPair{{Key: []byte{'t', 0x7f}, Value: []byte("new")}}, [][]byte{{'t', 0x00}, []byte("v1")}); err != nil {
		t.Fatal(err)
	}
	if got := scan([]byte("t"), []byte("u"), 100); !slices.Equal(got, []string{"740001=1", "747f=3", "7480=1", "74ff=1", "74ffff=1"}) {
		t.Errorf("after the second write: %v", got)
	}

	// A newer leader raised the epoch row (as fence does): refused, and
	// nothing of the refused write is kept.
	srv.Exec(t, "INSERT INTO `"+meta+"`.`_tandem_state` (k, v) VALUES (?, '6')", epochKey)
	err = kv.Write([]tenant.KVPair{{Key: []byte("x"), Value: []byte("1")}}, [][]byte{{'u'}})
	if !errors.Is(err, sink.ErrFenced) {
		t.Fatalf("write with epoch 5 after epoch 6: %v, want sink.ErrFenced", err)
	}
	if ok, _ := kv.Has([]byte("x")); ok {
		t.Error("the fenced write's set was kept")
	}
	if ok, _ := kv.Has([]byte("u")); !ok {
		t.Error("the fenced write's delete was kept")
	}
	epoch = 6
	if err := kv.Write([]tenant.KVPair{{Key: []byte("x"), Value: []byte("1")}}, nil); err != nil {
		t.Fatalf("write with the current epoch: %v", err)
	}
}
