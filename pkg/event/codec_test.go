package event_test

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"runtime"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tandemdb/tandem/pkg/event"
	"github.com/tandemdb/tandem/pkg/hlc"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// Value constructors, to keep the tables readable.
func vInt(i int64) event.Value      { return event.Value{Kind: event.KindInt, Int: i} }
func vUint(u uint64) event.Value    { return event.Value{Kind: event.KindUint, Uint: u} }
func vBit(u uint64) event.Value     { return event.Value{Kind: event.KindBit, Uint: u} }
func vF64(f float64) event.Value    { return event.Value{Kind: event.KindFloat64, Float: f} }
func vF64bits(u uint64) event.Value { return vF64(math.Float64frombits(u)) }
func vF32bits(u uint32) event.Value {
	// The exact float64 a reader produces for these float32 bits. For a
	// NaN this builds the bits by hand: a hardware conversion would quiet
	// a signaling NaN.
	f := math.Float32frombits(u)
	if f != f {
		return event.Value{Kind: event.KindFloat32, Float: math.Float64frombits(
			uint64(u>>31)<<63 | 0x7ff<<52 | uint64(u&(1<<23-1))<<29)}
	}
	return event.Value{Kind: event.KindFloat32, Float: float64(f)}
}
func vB(k event.Kind, s string) event.Value { return event.Value{Kind: k, Bytes: []byte(s)} }
func vEnum(k event.Kind, label string, n uint64) event.Value {
	return event.Value{Kind: k, Uint: n, Bytes: []byte(label)}
}

var t0 = time.Date(2024, 11, 21, 6, 20, 0, 0, time.UTC)

// oneValue is a Txn with one change whose second column holds v.
func oneValue(v event.Value) event.Txn {
	return event.Txn{
		Origin: 1, GTID: "0-1-7", CommitTime: t0, Stamp: hlc.New(uint64(t0.UnixMilli()), 0, 1),
		Fragment: 0, Last: true,
		Changes: []event.Change{{
			Schema: "shop", Table: "t", Op: event.OpInsert,
			Columns: []string{"id", "v"}, PK: []int{0},
			Row:     []event.Value{vInt(1), v},
			Version: hlc.New(uint64(t0.UnixMilli()), 3, 1),
		}},
	}
}

// edgeValues covers every Kind with its edge values.
var edgeValues = []struct {
	name string
	v    event.Value
}{
	{"null", event.Null},
	{"int min", vInt(math.MinInt64)},
	{"int max", vInt(math.MaxInt64)},
	{"int -1", vInt(-1)},
	{"int 0", vInt(0)},
	{"year", vInt(2155)},
	{"uint max", vUint(math.MaxUint64)},
	{"uint 0", vUint(0)},
	{"float32 max", vF32bits(math.Float32bits(math.MaxFloat32))},
	{"float32 smallest subnormal", vF32bits(1)},
	{"float32 -0", vF32bits(0x80000000)},
	{"float32 +inf", vF32bits(0x7f800000)},
	{"float32 -inf", vF32bits(0xff800000)},
	{"float32 quiet NaN with payload", vF32bits(0x7fc12345)},
	{"float32 signaling NaN", vF32bits(0x7f800001)},
	{"float32 negative NaN", vF32bits(0xffffffff)},
	{"float32 0.1", vF32bits(math.Float32bits(0.1))},
	{"float64 max", vF64(math.MaxFloat64)},
	{"float64 smallest subnormal", vF64bits(1)},
	{"float64 -0", vF64bits(1 << 63)},
	{"float64 +inf", vF64(math.Inf(1))},
	{"float64 -inf", vF64(math.Inf(-1))},
	{"float64 signaling NaN", vF64bits(0x7ff0000000000001)},
	{"float64 negative NaN with payload", vF64bits(0xfff8000000000123)},
	{"float64 0.1", vF64(0.1)},
	{"decimal(65,30)", vB(event.KindDecimal, "-12345678901234567890123456789012345.123456789012345678901234567890")},
	{"decimal zero scale", vB(event.KindDecimal, "0.0000")},
	{"string empty", vB(event.KindString, "")},
	{"string nil", event.Value{Kind: event.KindString}},
	{"string utf8mb4 emoji", vB(event.KindString, "🦊 naïve café 𝄞")},
	{"string invalid utf8", vB(event.KindString, "\xff\xfe\x80abc\xc3")},
	{"string NUL bytes", vB(event.KindString, "a\x00b\x00")},
	{"string 70000 bytes", vB(event.KindString, strings.Repeat("x", 70000))},
	{"bytes", vB(event.KindBytes, "\x00\x01\xff\x80")},
	{"bytes empty", vB(event.KindBytes, "")},
	{"date zero", vB(event.KindDate, "0000-00-00")},
	{"date max", vB(event.KindDate, "9999-12-31")},
	{"datetime zero", vB(event.KindDateTime, "0000-00-00 00:00:00")},
	{"datetime(6) max", vB(event.KindDateTime, "9999-12-31 23:59:59.999999")},
	{"timestamp(6)", vB(event.KindTimestamp, "1970-01-01 00:00:01.000000")},
	{"time min", vB(event.KindTime, "-838:59:59.000000")},
	{"time max", vB(event.KindTime, "838:59:59")},
	{"json", vB(event.KindJSON, `{"a":[1,2.5e300,{"b":null}],"e":"🦊"}`)},
	{"enum", vEnum(event.KindEnum, "small", 1)},
	{"enum empty (invalid value)", vEnum(event.KindEnum, "", 0)},
	{"set", vEnum(event.KindSet, "a,c", 5)},
	{"set empty", vEnum(event.KindSet, "", 0)},
	{"set 64 members", vEnum(event.KindSet, "m0,…,m63", math.MaxUint64)},
	{"bit(1)", vBit(1)},
	{"bit(64)", vBit(1<<63 | 1)},
}

func TestRoundTripEveryKind(t *testing.T) {
	covered := map[event.Kind]bool{}
	for _, tt := range edgeValues {
		t.Run(tt.name, func(t *testing.T) {
			covered[tt.v.Kind] = true
			in := oneValue(tt.v)
			roundTrip(t, &in)
		})
	}
	for k := range event.Kind(255) {
		if k.Valid() && !covered[k] {
			t.Errorf("kind %d has no edge value in this test", k)
		}
	}
}

func TestRoundTripOneRowAllKinds(t *testing.T) {
	var cols []string
	var row []event.Value
	for i, tt := range edgeValues {
		cols = append(cols, fmt.Sprintf("c%d", i))
		row = append(row, tt.v)
	}
	in := event.Txn{Origin: 255, Changes: []event.Change{{
		Schema: "s", Table: "all_kinds", Op: event.OpUpdate,
		Columns: cols, PK: []int{3, 1}, Row: row, Version: math.MaxUint64,
	}}}
	roundTrip(t, &in)
}

func TestRoundTripTxnFields(t *testing.T) {
	berlin := time.FixedZone("CET", 3600)
	tests := []struct {
		name string
		txn  event.Txn
	}{
		{"minimal", event.Txn{Origin: 1}},
		{"empty changes slice", event.Txn{Origin: 1, Changes: []event.Change{}}},
		{"all header fields", event.Txn{
			Origin: 3, GTID: "1-101-42", Tenant: "acme 🦊",
			Position:   event.Position{GTIDSet: "1-101-42,2-102-7", File: "mysql-bin.000042", Offset: math.MaxUint32},
			CommitTime: t0, Stamp: math.MaxUint64, Fragment: math.MaxUint32, Last: true,
		}},
		{"zero commit time", event.Txn{Origin: 2, CommitTime: time.Time{}}},
		{"commit time before 1970", event.Txn{Origin: 2, CommitTime: time.Date(1001, 2, 3, 4, 5, 6, 7, time.UTC)}},
		{"commit time last second of 9999", event.Txn{Origin: 2, CommitTime: time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC)}},
		{"commit time in another zone with monotonic reading", event.Txn{Origin: 2, CommitTime: time.Now().In(berlin)}},
		{"first fragment", event.Txn{Origin: 4, Fragment: 0, Last: false}},
		{"middle fragment", event.Txn{Origin: 4, Fragment: 7, Last: false}},
		{"last fragment", event.Txn{Origin: 4, Fragment: 8, Last: true}},
		{"change without columns or PK", event.Txn{Origin: 1, Changes: []event.Change{{Schema: "s", Table: "t", Op: event.OpDelete}}}},
		{"empty PK slice", event.Txn{Origin: 1, Changes: []event.Change{{Schema: "s", Table: "t", Op: event.OpDelete,
			Columns: []string{"a"}, PK: []int{}, Row: []event.Value{vInt(1)}}}}},
		{"empty names", event.Txn{Origin: 1, Changes: []event.Change{{Op: event.OpInsert,
			Columns: []string{""}, PK: []int{0}, Row: []event.Value{event.Null}}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { roundTrip(t, &tt.txn) })
	}
}

// multiTable is a transaction over three tables, with the second table's
// columns changing mid-transaction (an ALTER TABLE between two row events).
func multiTable() event.Txn {
	orders := []string{"id", "customer", "amount", "note"}
	lines := []string{"order_id", "line", "sku", "qty"}
	lines2 := []string{"order_id", "line", "sku", "qty", "discount"}
	t := event.Txn{
		Origin: 2, GTID: "0-2-99", Tenant: "acme", CommitTime: t0, Stamp: hlc.New(uint64(t0.UnixMilli()), 9, 2),
		Position: event.Position{GTIDSet: "0-2-99", File: "mysql-bin.000003", Offset: 4711}, Last: true,
	}
	for i := range 6 {
		ver := hlc.New(uint64(t0.UnixMilli()), uint16(i), 2)
		t.Changes = append(t.Changes,
			event.Change{Schema: "shop", Table: "orders", Op: event.OpInsert, Columns: orders, PK: []int{0},
				Row: []event.Value{vInt(int64(i)), vUint(7), vB(event.KindDecimal, "19.99"), vB(event.KindString, "")}, Version: ver},
			event.Change{Schema: "shop", Table: "order_lines", Op: event.OpUpdate, Columns: lines, PK: []int{0, 1},
				Row: []event.Value{vInt(int64(i)), vInt(1), vB(event.KindString, "SKU-1"), vInt(2)}, Version: ver},
		)
	}
	t.Changes = append(t.Changes,
		event.Change{Schema: "shop", Table: "order_lines", Op: event.OpInsert, Columns: lines2, PK: []int{0, 1},
			Row: []event.Value{vInt(9), vInt(2), vB(event.KindString, "SKU-2"), vInt(1), vF64(0.1)}},
		// Same names, columns passed as a distinct but equal slice.
		event.Change{Schema: "shop", Table: "orders", Op: event.OpDelete, Columns: append([]string(nil), orders...), PK: []int{0},
			Row: []event.Value{vInt(3), event.Null, event.Null, event.Null}},
		// Another schema, same table name.
		event.Change{Schema: "audit", Table: "orders", Op: event.OpInsert, Columns: orders, PK: []int{0},
			Row: []event.Value{vInt(1), vUint(1), vB(event.KindDecimal, "1"), vB(event.KindString, "x")}},
	)
	return t
}

func TestRoundTripMultiTable(t *testing.T) {
	in := multiTable()
	out := roundTrip(t, &in)
	// Interned: the changes of one table share one Columns slice.
	if &out.Changes[0].Columns[0] != &out.Changes[2].Columns[0] {
		t.Error("decoded changes of one table do not share their Columns")
	}
	if &out.Changes[0].Columns[0] == &out.Changes[1].Columns[0] {
		t.Error("decoded changes of different tables share Columns")
	}
}

func TestColumnNamesAreInterned(t *testing.T) {
	long := []string{strings.Repeat("a_long_column_name_", 5), strings.Repeat("another_long_one_", 5)}
	change := event.Change{Schema: "shop", Table: "orders", Op: event.OpInsert, Columns: long, PK: []int{0},
		Row: []event.Value{vInt(1), vInt(2)}, Version: 1}
	size := func(n int) int {
		t.Helper()
		txn := event.Txn{Origin: 1}
		for range n {
			c := change
			c.Columns = append([]string(nil), long...) // equal, not identical
			txn.Changes = append(txn.Changes, c)
		}
		b, err := event.Encode(nil, &txn)
		if err != nil {
			t.Fatal(err)
		}
		return len(b)
	}
	// One more change costs: table index 1 + op 1 + version 8 + two ints
	// (kind + 1-byte varint each) = 14 bytes, and no column names.
	if d := size(11) - size(10); d != 14 {
		t.Fatalf("an extra change of an already described table costs %d bytes, want 14", d)
	}
}

// roundTrip encodes in, decodes it, checks the result is the canonical form
// of in, and returns it.
func roundTrip(t *testing.T, in *event.Txn) event.Txn {
	t.Helper()
	b, err := event.Encode(nil, in)
	if err != nil {
		t.Fatalf("Encode: %v", err)
	}
	out, err := event.Decode(b)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if d := diffTxn(canonical(in), &out); d != "" {
		t.Fatalf("round trip changed the txn: %s", d)
	}
	// Encoding is deterministic and the decoded form re-encodes to the
	// same bytes.
	b2, err := event.Encode(nil, &out)
	if err != nil {
		t.Fatalf("re-Encode: %v", err)
	}
	if !bytes.Equal(b, b2) {
		t.Fatalf("re-encoding the decoded txn changed the bytes:\n%x\n%x", b, b2)
	}
	return out
}

// canonical is what Decode returns for in: CommitTime in UTC without a
// monotonic reading, empty slices nil, unused Value fields zero and the byte
// kinds' Bytes non-nil.
func canonical(in *event.Txn) *event.Txn {
	out := *in
	out.CommitTime = time.Unix(in.CommitTime.Unix(), int64(in.CommitTime.Nanosecond())).UTC()
	out.Changes = nil
	for _, c := range in.Changes {
		c.Columns = nilIfEmpty(c.Columns)
		c.PK = nilIfEmpty(c.PK)
		var row []event.Value
		for _, v := range c.Row {
			row = append(row, canonicalValue(v))
		}
		c.Row = row
		out.Changes = append(out.Changes, c)
	}
	return &out
}

func nilIfEmpty[T any](s []T) []T {
	if len(s) == 0 {
		return nil
	}
	return s
}

func canonicalValue(v event.Value) event.Value {
	out := event.Value{Kind: v.Kind}
	switch v.Kind {
	case event.KindNull:
	case event.KindInt:
		out.Int = v.Int
	case event.KindUint, event.KindBit:
		out.Uint = v.Uint
	case event.KindFloat32, event.KindFloat64:
		out.Float = v.Float
	case event.KindEnum, event.KindSet:
		out.Uint = v.Uint
		out.Bytes = append([]byte{}, v.Bytes...)
	default:
		out.Bytes = append([]byte{}, v.Bytes...)
	}
	return out
}

// diffTxn describes the first difference between want and got, or "". It
// compares floats by their bits (NaN payloads, -0) and Bytes including
// their nil-ness.
func diffTxn(want, got *event.Txn) string {
	switch {
	case want.Origin != got.Origin:
		return fmt.Sprintf("Origin %d, want %d", got.Origin, want.Origin)
	case want.GTID != got.GTID:
		return fmt.Sprintf("GTID %q, want %q", got.GTID, want.GTID)
	case want.Position != got.Position:
		return fmt.Sprintf("Position %v, want %v", got.Position, want.Position)
	case want.CommitTime != got.CommitTime:
		return fmt.Sprintf("CommitTime %#v, want %#v", got.CommitTime, want.CommitTime)
	case want.Stamp != got.Stamp:
		return fmt.Sprintf("Stamp %s, want %s", got.Stamp, want.Stamp)
	case want.Tenant != got.Tenant:
		return fmt.Sprintf("Tenant %q, want %q", got.Tenant, want.Tenant)
	case want.Fragment != got.Fragment || want.Last != got.Last:
		return fmt.Sprintf("Fragment %d/%v, want %d/%v", got.Fragment, got.Last, want.Fragment, want.Last)
	case (want.Changes == nil) != (got.Changes == nil) || len(want.Changes) != len(got.Changes):
		return fmt.Sprintf("%d Changes (nil %v), want %d (nil %v)", len(got.Changes), got.Changes == nil, len(want.Changes), want.Changes == nil)
	}
	for i := range want.Changes {
		w, g := &want.Changes[i], &got.Changes[i]
		if d := diffChange(w, g); d != "" {
			return fmt.Sprintf("Changes[%d]: %s", i, d)
		}
	}
	return ""
}

func diffChange(w, g *event.Change) string {
	switch {
	case w.Schema != g.Schema || w.Table != g.Table:
		return fmt.Sprintf("table %s.%s, want %s.%s", g.Schema, g.Table, w.Schema, w.Table)
	case w.Op != g.Op:
		return fmt.Sprintf("Op %s, want %s", g.Op, w.Op)
	case w.Version != g.Version:
		return fmt.Sprintf("Version %s, want %s", g.Version, w.Version)
	case (w.Columns == nil) != (g.Columns == nil) || fmt.Sprint(w.Columns) != fmt.Sprint(g.Columns):
		return fmt.Sprintf("Columns %q, want %q", g.Columns, w.Columns)
	case (w.PK == nil) != (g.PK == nil) || fmt.Sprint(w.PK) != fmt.Sprint(g.PK):
		return fmt.Sprintf("PK %v, want %v", g.PK, w.PK)
	case (w.Row == nil) != (g.Row == nil) || len(w.Row) != len(g.Row):
		return fmt.Sprintf("%d values, want %d", len(g.Row), len(w.Row))
	}
	for j := range w.Row {
		wv, gv := &w.Row[j], &g.Row[j]
		if wv.Kind != gv.Kind || wv.Int != gv.Int || wv.Uint != gv.Uint ||
			math.Float64bits(wv.Float) != math.Float64bits(gv.Float) ||
			(wv.Bytes == nil) != (gv.Bytes == nil) || !bytes.Equal(wv.Bytes, gv.Bytes) {
			return fmt.Sprintf("Row[%d] = %s, want %s", j, fmtValue(gv), fmtValue(wv))
		}
	}
	return ""
}

func fmtValue(v *event.Value) string {
	return fmt.Sprintf("{Kind:%d Int:%d Uint:%d Float:%#x Bytes:%q nil:%v}",
		v.Kind, v.Int, v.Uint, math.Float64bits(v.Float), v.Bytes, v.Bytes == nil)
}

func TestDecodedEmptyBytesAreNotNil(t *testing.T) {
	for _, k := range []event.Kind{event.KindString, event.KindBytes, event.KindDecimal, event.KindJSON, event.KindEnum, event.KindSet} {
		in := oneValue(event.Value{Kind: k})
		b, err := event.Encode(nil, &in)
		if err != nil {
			t.Fatal(err)
		}
		out, err := event.Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		if v := out.Changes[0].Row[1]; v.Bytes == nil || len(v.Bytes) != 0 || v.IsNull() {
			t.Errorf("kind %d: empty value decoded as %s; want non-nil empty Bytes (a driver binds nil as NULL)", k, fmtValue(&v))
		}
	}
}

func TestDecodedBytesAreIsolated(t *testing.T) {
	in := oneValue(vB(event.KindString, "abc"))
	in.Changes[0].Row[0] = vB(event.KindBytes, "xyz")
	b, err := event.Encode(nil, &in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := event.Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	for i := range b {
		b[i] = 0 // Decode must not retain its input
	}
	row := out.Changes[0].Row
	_ = append(row[0].Bytes, "!!!"...) // must not overwrite row[1]
	if string(row[0].Bytes) != "xyz" || string(row[1].Bytes) != "abc" {
		t.Fatalf("decoded values changed: %q %q", row[0].Bytes, row[1].Bytes)
	}
}

func TestEncodeAppends(t *testing.T) {
	in := multiTable()
	prefix := []byte("previous message")
	b, err := event.Encode(prefix, &in)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(b, []byte("previous message")) {
		t.Fatalf("Encode overwrote dst: %q", b[:16])
	}
	out, err := event.Decode(b[len(prefix):])
	if err != nil {
		t.Fatal(err)
	}
	if d := diffTxn(canonical(&in), &out); d != "" {
		t.Fatal(d)
	}
}

func TestEncodeValidates(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*event.Txn)
		want   string
	}{
		{"origin 0", func(t *event.Txn) { t.Origin = 0 }, "event: encode: Origin: site id 0 is reserved"},
		{"op 0", func(t *event.Txn) { t.Changes[1].Op = 0 }, "event: encode: Changes[1].Op: invalid op(0)"},
		{"op 4", func(t *event.Txn) { t.Changes[0].Op = 4 }, "event: encode: Changes[0].Op: invalid op(4)"},
		{"short row", func(t *event.Txn) { t.Changes[2].Row = t.Changes[2].Row[:3] },
			"event: encode: Changes[2].Row: 3 values for 4 Columns of shop.orders"},
		{"PK out of range", func(t *event.Txn) { t.Changes[1].PK = []int{0, 4} },
			"event: encode: Changes[1].PK[1]: column index 4 out of range [0, 4) of shop.order_lines"},
		{"PK negative", func(t *event.Txn) { t.Changes[0].PK = []int{-1} },
			"event: encode: Changes[0].PK[0]: column index -1 out of range"},
		{"unknown kind", func(t *event.Txn) { t.Changes[3].Row[2].Kind = 16 },
			"event: encode: Changes[3].Row[2].Kind: unknown kind 16 (column sku)"},
		{"float32 not a float32", func(t *event.Txn) { t.Changes[0].Row[2] = event.Value{Kind: event.KindFloat32, Float: 0.1} },
			"event: encode: Changes[0].Row[2].Float: 0.1 is not a float32 value (column amount)"},
		{"float32 NaN payload too wide", func(t *event.Txn) {
			t.Changes[0].Row[2] = event.Value{Kind: event.KindFloat32, Float: math.Float64frombits(0x7ff8000000000001)}
		},
			"event: encode: Changes[0].Row[2].Float: NaN is not a float32 value"},
		{"float32 overflow", func(t *event.Txn) { t.Changes[0].Row[2] = event.Value{Kind: event.KindFloat32, Float: 1e300} },
			"event: encode: Changes[0].Row[2].Float: 1e+300 is not a float32 value"},
		{"commit time year 10000", func(t *event.Txn) { t.CommitTime = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) },
			"event: encode: CommitTime: 10000-01-01 00:00:00 +0000 UTC is outside years 0001..9999"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := multiTable()
			tt.mutate(&in)
			dst := []byte("keep")
			b, err := event.Encode(dst, &in)
			if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
				t.Fatalf("Encode error = %v\nwant prefix %s", err, tt.want)
			}
			if string(b) != "keep" {
				t.Fatalf("failed Encode returned %q, want dst unchanged", b)
			}
		})
	}
}

func TestEveryValidKindIsEncodable(t *testing.T) {
	for k := range event.Kind(255) {
		in := oneValue(event.Value{Kind: k})
		_, err := event.Encode(nil, &in)
		if k.Valid() != (err == nil) {
			t.Errorf("kind %d: Valid() = %v but Encode error = %v", k, k.Valid(), err)
		}
	}
}

func mustEncode(t testing.TB, in event.Txn) []byte {
	t.Helper()
	b, err := event.Encode(nil, &in)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestCorruptionIsDetected(t *testing.T) {
	msg := mustEncode(t, multiTable())
	t.Run("every single-byte change", func(t *testing.T) {
		b := make([]byte, len(msg))
		for i := range msg {
			for x := 1; x < 256; x++ {
				copy(b, msg)
				b[i] ^= byte(x)
				_, err := event.Decode(b)
				if err == nil {
					t.Fatalf("byte %d ^= %#02x: corrupt message decoded", i, x)
				}
				if !errors.Is(err, event.ErrCorrupt) && !(i == 2 && errors.Is(err, event.ErrUnsupportedVersion)) {
					t.Fatalf("byte %d ^= %#02x: error %v matches neither ErrCorrupt nor (version byte) ErrUnsupportedVersion", i, x, err)
				}
				if !strings.HasPrefix(err.Error(), "event: decode: ") {
					t.Fatalf("error %q lacks the package prefix", err)
				}
			}
		}
	})
	t.Run("every truncation", func(t *testing.T) {
		for n := range len(msg) {
			if _, err := event.Decode(msg[:n]); !errors.Is(err, event.ErrCorrupt) {
				t.Fatalf("truncated to %d of %d bytes: err = %v, want ErrCorrupt", n, len(msg), err)
			}
		}
	})
	t.Run("trailing bytes", func(t *testing.T) {
		if _, err := event.Decode(append(append([]byte(nil), msg...), 0)); !errors.Is(err, event.ErrCorrupt) {
			t.Fatalf("err = %v, want ErrCorrupt", err)
		}
	})
	t.Run("two messages concatenated", func(t *testing.T) {
		if _, err := event.Decode(append(append([]byte(nil), msg...), msg...)); !errors.Is(err, event.ErrCorrupt) {
			t.Fatalf("err = %v, want ErrCorrupt", err)
		}
	})
}

func TestDecodeVersionAndMagic(t *testing.T) {
	msg := mustEncode(t, multiTable())
	b := append([]byte(nil), msg...)
	b[2] = 2
	_, err := event.Decode(b)
	const want = "event: decode: format version at byte 2: unsupported format version 2 (this build reads versions [1])"
	if err == nil || err.Error() != want {
		t.Fatalf("err = %v\nwant %s", err, want)
	}
	if !errors.Is(err, event.ErrUnsupportedVersion) || errors.Is(err, event.ErrCorrupt) {
		t.Fatalf("a newer version must match ErrUnsupportedVersion and not ErrCorrupt: %v", err)
	}

	b = append([]byte(nil), msg...)
	b[0] = '{'
	_, err = event.Decode(b)
	if err == nil || !strings.HasPrefix(err.Error(), "event: decode: magic at byte 0: got 0x7b 0x44") || !errors.Is(err, event.ErrCorrupt) {
		t.Fatalf("err = %v", err)
	}
}

// frame wraps a payload in a valid header and checksum, following
// docs/wire-format.md, so that tests reach the structural checks behind the
// CRC.
func frame(payload []byte) []byte {
	b := []byte{'T', 'D', event.FormatVersion}
	b = binary.BigEndian.AppendUint32(b, uint32(len(payload)))
	b = append(b, payload...)
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli)))
}

// payloadOf is the inverse of frame for a well-framed message; other input
// is returned as is.
func payloadOf(msg []byte) []byte {
	if len(msg) < 11 {
		return msg
	}
	return msg[7 : len(msg)-4]
}

func TestFrameMatchesEncode(t *testing.T) {
	msg := mustEncode(t, multiTable())
	if !bytes.Equal(frame(payloadOf(msg)), msg) {
		t.Fatal("the test's framing (from docs/wire-format.md) differs from Encode's")
	}
}

// header is a valid payload prefix: flags Last, origin 1, fragment 0, stamp
// 0, commit time 1970-01-01 (seconds 0, nanoseconds 0), four empty strings,
// offset 0. It is 18 bytes long, so the table count is at byte 7+18 = 25.
func header() []byte {
	b := []byte{1, 1, 0}
	b = append(b, make([]byte, 8)...)
	return append(b, 0, 0, 0, 0, 0, 0, 0)
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func uv(v uint64) []byte { return binary.AppendUvarint(nil, v) }

func TestDecodeStructuralErrors(t *testing.T) {
	if n := len(header()); n != 18 {
		t.Fatalf("header() is %d bytes", n)
	}
	// table: "s"."t" with columns a, b and PK [0]
	tbl := cat(uv(1), []byte("s"), uv(1), []byte("t"), uv(2), uv(1), []byte("a"), uv(1), []byte("b"), uv(1), uv(0))
	change := func(ti uint64, op byte, vals ...[]byte) []byte {
		return cat(uv(ti), []byte{op}, make([]byte, 8), cat(vals...))
	}
	tests := []struct {
		name    string
		payload []byte
		want    string
	}{
		{"empty payload", nil, "event: decode: flags at byte 7: need 1 bytes, 0 left"},
		{"unknown flag", cat([]byte{3}, header()[1:]), "event: decode: flags at byte 7: unknown flag bits 0x02"},
		{"origin 0", cat([]byte{1, 0}, header()[2:]), "event: decode: origin at byte 8: site id 0 is reserved"},
		{"fragment overflows uint32", cat([]byte{1, 1}, uv(1<<32)), "event: decode: fragment at byte 9: 4294967296 overflows 32 bits"},
		{"varint overflow", cat([]byte{1, 1}, bytes.Repeat([]byte{0xff}, 10), []byte{1}), "event: decode: fragment at byte 9: varint overflows 64 bits"},
		{"truncated varint", []byte{1, 1, 0x80}, "event: decode: fragment at byte 9: truncated varint"},
		{"commit time too late", cat([]byte{1, 1, 0}, make([]byte, 8), binary.AppendVarint(nil, 253402300800)),
			"event: decode: commit time seconds at byte 18: 253402300800 is outside years 0001..9999"},
		{"nanoseconds ≥ 1e9", cat([]byte{1, 1, 0}, make([]byte, 8), binary.AppendVarint(nil, 0), uv(1e9)),
			"event: decode: commit time nanoseconds at byte 19: 1000000000 is not below 1e9"},
		{"string longer than the message", cat([]byte{1, 1, 0}, make([]byte, 8), binary.AppendVarint(nil, 0), uv(0), uv(1000)),
			"event: decode: gtid at byte 20: length 1000 exceeds the 0 bytes left"},
		{"huge table count", cat(header(), uv(1<<60)),
			"event: decode: table count at byte 25: 1152921504606846976 items of at least 4 bytes do not fit in the 0 bytes left"},
		{"huge column count", cat(header(), uv(1), uv(0), uv(0), uv(1<<40), uv(0)),
			"event: decode: tables[0] column count at byte 28: 1099511627776 items of at least 1 bytes do not fit in the 1 bytes left"},
		{"PK index out of range", cat(header(), uv(1), uv(0), uv(0), uv(1), uv(0), uv(1), uv(1), uv(0)),
			"event: decode: tables[0] PK[0] at byte 31: column index 1 out of range [0, 1)"},
		{"truncated column name", cat(header(), uv(1), uv(0), uv(0), uv(2), uv(1), []byte("a"), uv(5), []byte("b")),
			"event: decode: tables[0] columns[1] column name at byte 31: length 5 exceeds the 1 bytes left"},
		{"huge change count", cat(header(), uv(1), tbl, uv(1<<50)),
			"event: decode: change count at byte 37: 1125899906842624 items of at least 10 bytes do not fit in the 0 bytes left"},
		{"table index out of range", cat(header(), uv(1), tbl, uv(1), change(1, 1, []byte{0}, []byte{0})),
			"event: decode: Changes[0] table index at byte 38: 1 out of range [0, 1)"},
		{"invalid op", cat(header(), uv(1), tbl, uv(1), change(0, 9, []byte{0}, []byte{0})),
			"event: decode: Changes[0] op at byte 39: invalid op(9)"},
		{"unknown kind", cat(header(), uv(1), tbl, uv(1), change(0, 1, []byte{0}, []byte{16})),
			"event: decode: Changes[0] Row[1] kind at byte 49: unknown kind 16"},
		{"truncated float64", cat(header(), uv(1), tbl, uv(1), change(0, 1, []byte{0}, []byte{4, 1, 2})),
			"event: decode: Changes[0] Row[1] float64 at byte 50: need 8 bytes, 2 left"},
		{"row wider than the rest", cat(header(), uv(1), tbl, uv(1), change(0, 1, []byte{0})),
			"event: decode: Changes[0] row at byte 48: 2 values do not fit in the 1 bytes left"},
		{"trailing payload bytes", cat(header(), uv(0), uv(0), []byte{0}),
			"event: decode: end of payload at byte 27: 1 unexpected trailing bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := event.Decode(frame(tt.payload))
			if err == nil || err.Error() != tt.want {
				t.Fatalf("err = %v\nwant  %s", err, tt.want)
			}
			if !errors.Is(err, event.ErrCorrupt) {
				t.Fatalf("%v does not match ErrCorrupt", err)
			}
		})
	}
	// And the valid skeleton decodes.
	if _, err := event.Decode(frame(cat(header(), uv(1), tbl, uv(1), change(0, 1, []byte{0}, []byte{1, 2})))); err != nil {
		t.Fatalf("valid hand-built message: %v", err)
	}
}

// TestDecodeAllocationIsBounded feeds messages whose counts claim as much as
// the input could possibly hold and checks that Decode allocates no more
// than a small multiple of the input size.
func TestDecodeAllocationIsBounded(t *testing.T) {
	const n = 1 << 16
	// A table of n one-byte-named columns... and no room for a row.
	wide := cat(header(), uv(1), uv(0), uv(0), uv(n), bytes.Repeat([]byte{0}, n), uv(0), uv(1), uv(0), []byte{1}, make([]byte, 8))
	// Many zero-column tables, then many changes claimed.
	manyTables := cat(header(), uv(n), bytes.Repeat([]byte{0, 0, 0, 0}, n), uv(n))
	// Claims of huge lengths everywhere.
	huge := cat(header(), uv(1<<62))
	// A valid message with the most values per input byte: n one-byte
	// column names and a row of n NULLs (one byte each).
	nulls := cat(header(), uv(1), uv(0), uv(0), uv(n), bytes.Repeat([]byte{0}, n), uv(0),
		uv(1), uv(0), []byte{1}, make([]byte, 8), bytes.Repeat([]byte{0}, n))
	for _, tt := range []struct {
		name    string
		payload []byte
		valid   bool
	}{{"wide table", wide, false}, {"many tables", manyTables, false}, {"huge count", huge, false}, {"wide row of NULLs", nulls, true}} {
		t.Run(tt.name, func(t *testing.T) {
			msg := frame(tt.payload)
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			_, err := event.Decode(msg)
			runtime.ReadMemStats(&after)
			if (err == nil) != tt.valid {
				t.Fatalf("Decode error = %v, want valid=%v", err, tt.valid)
			}
			if got, limit := after.TotalAlloc-before.TotalAlloc, uint64(64*len(msg)+64<<10); got > limit {
				t.Fatalf("Decode of %d bytes allocated %d bytes (limit %d)", len(msg), got, limit)
			} else {
				t.Logf("Decode of %d bytes allocated %d bytes (%.1f×)", len(msg), got, float64(got)/float64(len(msg)))
			}
		})
	}
}

// TestGoldenV1 pins format version 1: these bytes must decode to this txn
// for as long as readers accept version 1, whatever Encode writes by then.
func TestGoldenV1(t *testing.T) {
	in := event.Txn{
		Origin: 2, GTID: "0-2-9", Tenant: "acme",
		Position:   event.Position{GTIDSet: "0-2-9", File: "bin.000001", Offset: 1234},
		CommitTime: time.Date(2024, 11, 21, 6, 20, 0, 0, time.UTC),
		Stamp:      hlc.New(1732170000000, 1, 2), Fragment: 0, Last: true,
		Changes: []event.Change{{
			Schema: "shop", Table: "t", Op: event.OpUpdate,
			Columns: []string{"id", "name", "price", "w"}, PK: []int{0},
			Row:     []event.Value{vInt(-2), vB(event.KindString, "é"), vB(event.KindDecimal, "1.50"), vF32bits(0x3fc00000)},
			Version: hlc.New(1732170000000, 0, 2),
		}},
	}
	const golden = "544401" + "00000066" + // magic "TD", version 1, payload length 102
		"01" + "02" + "00" + // flags Last, origin 2, fragment 0
		"1934d60a68000102" + // stamp 1732170000000.1@2
		"a0c4f6f30c" + "00" + // commit time: varint seconds 1732170000, nanoseconds 0
		"05302d322d39" + "0461636d65" + // gtid "0-2-9", tenant "acme"
		"05302d322d39" + "0a62696e2e303030303031" + "d209" + // position
		"01" + // 1 table
		"0473686f70" + "0174" + "04" + "026964" + "046e616d65" + "057072696365" + "0177" + "01" + "00" +
		"01" + // 1 change
		"00" + "02" + "1934d60a68000002" + // table 0, update, version 1732170000000.0@2
		"0103" + "0602c3a9" + "0504312e3530" + "033fc00000" + // values
		"da2f2833" // CRC-32C of all the bytes above
	want, err := hex.DecodeString(golden)
	if err != nil {
		t.Fatal(err)
	}
	got := mustEncode(t, in)
	if !bytes.Equal(got, want) {
		t.Errorf("Encode =\n%x\nwant\n%x", got, want)
	}
	out, err := event.Decode(want)
	if err != nil {
		t.Fatalf("Decode(golden): %v", err)
	}
	if d := diffTxn(canonical(&in), &out); d != "" {
		t.Fatalf("Decode(golden): %s", d)
	}
}

// bigTxn is a realistic 200-row transaction on one 10-column table.
func bigTxn() event.Txn {
	cols := []string{"id", "tenant_id", "customer_id", "status", "amount", "currency", "note", "created_at", "updated_at", "weight"}
	t := event.Txn{
		Origin: 1, GTID: "0-1-123456", Tenant: "acme", CommitTime: t0,
		Position: event.Position{GTIDSet: "0-1-123456", File: "mysql-bin.000042", Offset: 1337},
		Stamp:    hlc.New(uint64(t0.UnixMilli()), 0, 1), Last: true,
	}
	for i := range 200 {
		t.Changes = append(t.Changes, event.Change{
			Schema: "shop", Table: "orders", Op: event.OpInsert, Columns: cols, PK: []int{0},
			Row: []event.Value{
				vInt(int64(1_000_000 + i)),
				vB(event.KindString, "acme"),
				vUint(uint64(42_000 + i)),
				vEnum(event.KindEnum, "paid", 2),
				vB(event.KindDecimal, fmt.Sprintf("%d.%02d", 10+i, i%100)),
				vB(event.KindString, "EUR"),
				vB(event.KindString, "deliver to the back door, ring twice 🦊"),
				vB(event.KindDateTime, "2024-11-21 06:20:00.123456"),
				vB(event.KindTimestamp, "2024-11-21 06:20:00.123456"),
				vF32bits(math.Float32bits(float32(i) * 0.25)),
			},
			Version: hlc.New(uint64(t0.UnixMilli()), uint16(i), 1),
		})
	}
	return t
}

func BenchmarkEncode(b *testing.B) {
	in := bigTxn()
	buf, err := event.Encode(nil, &in)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("reuse-buffer", func(b *testing.B) {
		b.SetBytes(int64(len(buf)))
		b.ReportAllocs()
		for b.Loop() {
			buf, err = event.Encode(buf[:0], &in)
			if err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("new-buffer", func(b *testing.B) {
		b.SetBytes(int64(len(buf)))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := event.Encode(nil, &in); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkDecode(b *testing.B) {
	in := bigTxn()
	buf, err := event.Encode(nil, &in)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := event.Decode(buf); err != nil {
			b.Fatal(err)
		}
	}
}
