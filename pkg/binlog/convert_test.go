package binlog

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"strings"
	"testing"

	"github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/replication"

	"github.com/tandemdb/tandem/pkg/event"
)

// colSpec describes one column of a synthetic table map.
type colSpec struct {
	name      string
	typ       byte
	meta      uint16
	unsigned  bool
	collation uint64   // character columns
	enum, set []string // ENUM/SET values (typ MYSQL_TYPE_STRING, meta high byte ENUM/SET)
}

// newTableMap builds the table map MariaDB logs with binlog_row_metadata=FULL.
func newTableMap(id uint64, schemaName, table string, pk []uint64, cols ...colSpec) *replication.TableMapEvent {
	te := &replication.TableMapEvent{
		TableID:     id,
		Schema:      []byte(schemaName),
		Table:       []byte(table),
		ColumnCount: uint64(len(cols)),
		PrimaryKey:  pk,
	}
	for _, c := range cols {
		te.ColumnType = append(te.ColumnType, c.typ)
		te.ColumnMeta = append(te.ColumnMeta, c.meta)
		te.ColumnName = append(te.ColumnName, []byte(c.name))
	}
	// Optional metadata is positional over the columns of each class, in
	// the order TableMapEvent's accessors expect.
	numeric := 0
	for i, c := range cols {
		if te.IsNumericColumn(i) {
			if numeric%8 == 0 {
				te.SignednessBitmap = append(te.SignednessBitmap, 0)
			}
			if c.unsigned {
				te.SignednessBitmap[numeric/8] |= 0x80 >> (numeric % 8)
			}
			numeric++
		}
		if te.IsCharacterColumn(i) {
			te.ColumnCharset = append(te.ColumnCharset, c.collation)
		}
		if te.IsEnumColumn(i) {
			te.EnumStrValue = append(te.EnumStrValue, toBytes(c.enum))
		}
		if te.IsSetColumn(i) {
			te.SetStrValue = append(te.SetStrValue, toBytes(c.set))
		}
	}
	return te
}

func toBytes(ss []string) [][]byte {
	out := make([][]byte, len(ss))
	for i, s := range ss {
		out[i] = []byte(s)
	}
	return out
}

const utf8mb4Bin = 46

func enumMeta(packLen byte) uint16 { return uint16(mysql.MYSQL_TYPE_ENUM)<<8 | uint16(packLen) }
func setMeta(packLen byte) uint16  { return uint16(mysql.MYSQL_TYPE_SET)<<8 | uint16(packLen) }
func charMeta(n int) uint16 {
	// MariaDB's encoding of CHAR/BINARY(n bytes): type in the high byte,
	// lengths above 255 borrow bits 4-5 of it, inverted.
	hi := uint16(mysql.MYSQL_TYPE_STRING) ^ uint16((n>>4)&0x30)
	return hi<<8 | uint16(n&0xff)
}

func TestNewColumnsKinds(t *testing.T) {
	te := newTableMap(1, "s", "t", []uint64{0},
		colSpec{name: "i8", typ: mysql.MYSQL_TYPE_TINY},
		colSpec{name: "u8", typ: mysql.MYSQL_TYPE_TINY, unsigned: true},
		colSpec{name: "u64", typ: mysql.MYSQL_TYPE_LONGLONG, unsigned: true},
		colSpec{name: "y", typ: mysql.MYSQL_TYPE_YEAR},
		colSpec{name: "f", typ: mysql.MYSQL_TYPE_FLOAT, meta: 4},
		colSpec{name: "d", typ: mysql.MYSQL_TYPE_DOUBLE, meta: 8},
		colSpec{name: "dec", typ: mysql.MYSQL_TYPE_NEWDECIMAL, meta: 65<<8 | 30},
		colSpec{name: "vc", typ: mysql.MYSQL_TYPE_VARCHAR, meta: 400, collation: utf8mb4Bin},
		colSpec{name: "vb", typ: mysql.MYSQL_TYPE_VARCHAR, meta: 100, collation: binaryCollation},
		colSpec{name: "txt", typ: mysql.MYSQL_TYPE_BLOB, meta: 2, collation: utf8mb4Bin},
		colSpec{name: "blb", typ: mysql.MYSQL_TYPE_BLOB, meta: 2, collation: binaryCollation},
		colSpec{name: "ch", typ: mysql.MYSQL_TYPE_STRING, meta: charMeta(40), collation: utf8mb4Bin},
		colSpec{name: "bin", typ: mysql.MYSQL_TYPE_STRING, meta: charMeta(300), collation: binaryCollation},
		colSpec{name: "e", typ: mysql.MYSQL_TYPE_STRING, meta: enumMeta(1), enum: []string{"a", "b"}},
		colSpec{name: "st", typ: mysql.MYSQL_TYPE_STRING, meta: setMeta(1), set: []string{"x", "y"}},
		colSpec{name: "bit", typ: mysql.MYSQL_TYPE_BIT, meta: 8<<8 | 0},
		colSpec{name: "dt", typ: mysql.MYSQL_TYPE_DATE},
		colSpec{name: "dtm", typ: mysql.MYSQL_TYPE_DATETIME2, meta: 6},
		colSpec{name: "ts", typ: mysql.MYSQL_TYPE_TIMESTAMP2, meta: 3},
		colSpec{name: "tm", typ: mysql.MYSQL_TYPE_TIME2, meta: 4},
		colSpec{name: "js", typ: mysql.MYSQL_TYPE_JSON, meta: 4},
		colSpec{name: "geo", typ: mysql.MYSQL_TYPE_GEOMETRY, meta: 4},
	)
	cols, err := newColumns(te)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]event.Kind{
		"i8": event.KindInt, "u8": event.KindUint, "u64": event.KindUint, "y": event.KindInt,
		"f": event.KindFloat32, "d": event.KindFloat64, "dec": event.KindDecimal,
		"vc": event.KindString, "vb": event.KindBytes, "txt": event.KindString, "blb": event.KindBytes,
		"ch": event.KindString, "bin": event.KindBytes, "e": event.KindEnum, "st": event.KindSet,
		"bit": event.KindBit, "dt": event.KindDate, "dtm": event.KindDateTime, "ts": event.KindTimestamp,
		"tm": event.KindTime, "js": event.KindJSON, "geo": event.KindBytes,
	}
	for _, c := range cols {
		if c.kind != want[c.name] {
			t.Errorf("column %s: kind %d, want %d", c.name, c.kind, want[c.name])
		}
	}
	byName := map[string]column{}
	for _, c := range cols {
		byName[c.name] = c
	}
	if got := byName["bin"].padTo; got != 300 {
		t.Errorf("BINARY(300) padTo = %d, want 300", got)
	}
	if got := byName["ch"].padTo; got != 0 {
		t.Errorf("CHAR padTo = %d, want 0 (trailing spaces are not restored, like MariaDB prints CHAR)", got)
	}
	if got := byName["tm"].dec; got != 4 {
		t.Errorf("TIME(4) dec = %d", got)
	}
	if got := byName["e"].labels; len(got) != 2 || got[1] != "b" {
		t.Errorf("enum labels %q", got)
	}
}

func TestNewColumnsWithoutNames(t *testing.T) {
	te := newTableMap(1, "s", "t", nil, colSpec{name: "a", typ: mysql.MYSQL_TYPE_LONG})
	te.ColumnName = nil
	_, err := newColumns(te)
	if !errors.Is(err, errNoMetadata) || !strings.Contains(err.Error(), "binlog_row_metadata=FULL") {
		t.Fatalf("err = %v, want one that says to set binlog_row_metadata=FULL", err)
	}
}

func TestStringLength(t *testing.T) {
	for _, n := range []int{0, 1, 255, 256, 300, 767, 1020} {
		rt, got := stringLength(charMeta(n))
		if rt != mysql.MYSQL_TYPE_STRING || got != n {
			t.Errorf("charMeta(%d): type %d length %d", n, rt, got)
		}
	}
	if rt, _ := stringLength(enumMeta(2)); rt != mysql.MYSQL_TYPE_ENUM {
		t.Errorf("enum meta decodes to type %d", rt)
	}
}

func TestConvertValue(t *testing.T) {
	sint := func(typ byte) column { return column{name: "c", typ: typ, kind: event.KindInt} }
	uint_ := func(typ byte) column { return column{name: "c", typ: typ, kind: event.KindUint, unsigned: true} }
	text := func(k event.Kind) column { return column{name: "c", kind: k} }
	str := func(k event.Kind, s string) event.Value { return event.Value{Kind: k, Bytes: []byte(s)} }
	enumCol := column{name: "c", typ: mysql.MYSQL_TYPE_ENUM, kind: event.KindEnum, labels: []string{"small", "médium", "🐘"}}
	setCol := column{name: "c", typ: mysql.MYSQL_TYPE_SET, kind: event.KindSet, labels: []string{"a", "b", "c"}}
	cases := []struct {
		name string
		col  column
		in   any
		want event.Value
	}{
		{"null", sint(mysql.MYSQL_TYPE_LONG), nil, event.Null},
		{"tinyint min", sint(mysql.MYSQL_TYPE_TINY), int8(-128), event.Value{Kind: event.KindInt, Int: -128}},
		{"smallint max", sint(mysql.MYSQL_TYPE_SHORT), int16(32767), event.Value{Kind: event.KindInt, Int: 32767}},
		{"mediumint min", sint(mysql.MYSQL_TYPE_INT24), int32(-8388608), event.Value{Kind: event.KindInt, Int: -8388608}},
		{"int min", sint(mysql.MYSQL_TYPE_LONG), int32(math.MinInt32), event.Value{Kind: event.KindInt, Int: math.MinInt32}},
		{"bigint min", sint(mysql.MYSQL_TYPE_LONGLONG), int64(math.MinInt64), event.Value{Kind: event.KindInt, Int: math.MinInt64}},
		{"year", sint(mysql.MYSQL_TYPE_YEAR), 2155, event.Value{Kind: event.KindInt, Int: 2155}},
		{"year zero", sint(mysql.MYSQL_TYPE_YEAR), 0, event.Value{Kind: event.KindInt, Int: 0}},
		{"tinyint unsigned max", uint_(mysql.MYSQL_TYPE_TINY), uint8(255), event.Value{Kind: event.KindUint, Uint: 255}},
		{"bigint unsigned max", uint_(mysql.MYSQL_TYPE_LONGLONG), uint64(math.MaxUint64), event.Value{Kind: event.KindUint, Uint: math.MaxUint64}},
		// Decoded without signedness: the bits are reinterpreted at the
		// column's width.
		{"unsigned tinyint as int8", uint_(mysql.MYSQL_TYPE_TINY), int8(-1), event.Value{Kind: event.KindUint, Uint: 255}},
		{"unsigned smallint as int16", uint_(mysql.MYSQL_TYPE_SHORT), int16(-1), event.Value{Kind: event.KindUint, Uint: 65535}},
		{"unsigned mediumint as int32", uint_(mysql.MYSQL_TYPE_INT24), int32(-1), event.Value{Kind: event.KindUint, Uint: 16777215}},
		{"unsigned int as int32", uint_(mysql.MYSQL_TYPE_LONG), int32(-1), event.Value{Kind: event.KindUint, Uint: math.MaxUint32}},
		{"unsigned bigint as int64", uint_(mysql.MYSQL_TYPE_LONGLONG), int64(-1), event.Value{Kind: event.KindUint, Uint: math.MaxUint64}},
		{"float", column{kind: event.KindFloat32}, float32(3.4028235e38), event.Value{Kind: event.KindFloat32, Float: float64(float32(3.4028235e38))}},
		{"float tiny", column{kind: event.KindFloat32}, float32(1.1), event.Value{Kind: event.KindFloat32, Float: float64(float32(1.1))}},
		{"double", column{kind: event.KindFloat64}, -2.2250738585072014e-308, event.Value{Kind: event.KindFloat64, Float: -2.2250738585072014e-308}},
		{"decimal", text(event.KindDecimal), "-12345678901234567890123456789012345.123456789012345678901234567890",
			str(event.KindDecimal, "-12345678901234567890123456789012345.123456789012345678901234567890")},
		{"date", text(event.KindDate), "2024-02-29", str(event.KindDate, "2024-02-29")},
		{"zero date", text(event.KindDate), "0000-00-00", str(event.KindDate, "0000-00-00")},
		{"datetime(6)", text(event.KindDateTime), "9999-12-31 23:59:59.999999", str(event.KindDateTime, "9999-12-31 23:59:59.999999")},
		{"timestamp(6)", text(event.KindTimestamp), "2038-01-19 03:14:07.000000", str(event.KindTimestamp, "2038-01-19 03:14:07.000000")},
		{"time(6) zero fraction", column{kind: event.KindTime, dec: 6}, "12:00:00", str(event.KindTime, "12:00:00.000000")},
		{"time(6) negative", column{kind: event.KindTime, dec: 6}, "-838:59:59", str(event.KindTime, "-838:59:59.000000")},
		{"time(6) fraction", column{kind: event.KindTime, dec: 6}, "-00:00:01.000001", str(event.KindTime, "-00:00:01.000001")},
		{"time(2)", column{kind: event.KindTime, dec: 2}, "00:00:00", str(event.KindTime, "00:00:00.00")},
		{"time(0)", column{kind: event.KindTime}, "-12:34:56", str(event.KindTime, "-12:34:56")},
		{"utf8mb4 emoji", text(event.KindString), "héllo 🐘", str(event.KindString, "héllo 🐘")},
		{"varbinary", text(event.KindBytes), "\x00\xff\x00", str(event.KindBytes, "\x00\xff\x00")},
		{"blob", text(event.KindBytes), []byte{0, 0xff, 0}, str(event.KindBytes, "\x00\xff\x00")},
		{"text as bytes", text(event.KindString), []byte("abc"), str(event.KindString, "abc")},
		{"empty string", text(event.KindString), "", str(event.KindString, "")},
		{"binary(4) padding", column{kind: event.KindBytes, padTo: 4}, "\x00\xff", str(event.KindBytes, "\x00\xff\x00\x00")},
		{"binary(4) full", column{kind: event.KindBytes, padTo: 4}, "\xff\xff\xff\xff", str(event.KindBytes, "\xff\xff\xff\xff")},
		{"json text", text(event.KindJSON), `{"a": [1, 2.5, "x"]}`, str(event.KindJSON, `{"a": [1, 2.5, "x"]}`)},
		{"enum", enumCol, int64(2), event.Value{Kind: event.KindEnum, Uint: 2, Bytes: []byte("médium")}},
		{"enum emoji", enumCol, int64(3), event.Value{Kind: event.KindEnum, Uint: 3, Bytes: []byte("🐘")}},
		{"enum invalid ''", enumCol, int64(0), event.Value{Kind: event.KindEnum, Bytes: []byte{}}},
		{"set", setCol, int64(5), event.Value{Kind: event.KindSet, Uint: 5, Bytes: []byte("a,c")}},
		{"set empty", setCol, int64(0), event.Value{Kind: event.KindSet, Uint: 0, Bytes: []byte{}}},
		{"bit(1)", column{kind: event.KindBit}, int64(1), event.Value{Kind: event.KindBit, Uint: 1}},
		{"bit(64) max", column{kind: event.KindBit}, int64(-1), event.Value{Kind: event.KindBit, Uint: math.MaxUint64}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var a arena
			got, err := convertValue(&tc.col, tc.in, &a)
			if err != nil {
				t.Fatal(err)
			}
			if !valueEqual(got, tc.want) {
				t.Fatalf("convert %#v = %s, want %s", tc.in, fmtValue(got), fmtValue(tc.want))
			}
		})
	}
}

func TestConvertValueErrors(t *testing.T) {
	var a arena
	for _, tc := range []struct {
		name string
		col  column
		in   any
	}{
		{"enum out of range", column{kind: event.KindEnum, labels: []string{"a"}}, int64(2)},
		{"set bit beyond values", column{kind: event.KindSet, labels: []string{"a"}}, int64(2)},
		{"string for int", column{kind: event.KindInt}, "1"},
		{"int for decimal", column{kind: event.KindDecimal}, int64(1)},
	} {
		if _, err := convertValue(&tc.col, tc.in, &a); err == nil {
			t.Errorf("%s: no error", tc.name)
		}
	}
}

func TestConvertRowSizeAndIsolation(t *testing.T) {
	cols := []column{{name: "id", kind: event.KindInt}, {name: "s", kind: event.KindString}}
	src := []byte("payload")
	var a arena
	row, size, err := convertRow(cols, []any{int32(1), src}, &a)
	if err != nil {
		t.Fatal(err)
	}
	if size != 16+len("payload") {
		t.Errorf("size = %d", size)
	}
	src[0] = 'X' // the decoded packet may be reused: values must not alias it
	if string(row[1].Bytes) != "payload" {
		t.Errorf("value aliases the input: %q", row[1].Bytes)
	}
	// Appending to one value must not overwrite the next one in the arena.
	row2, _, _ := convertRow(cols, []any{int32(2), "next"}, &a)
	_ = append(row[1].Bytes, "!!!!"...)
	if string(row2[1].Bytes) != "next" {
		t.Errorf("arena values overlap: %q", row2[1].Bytes)
	}
	if _, _, err := convertRow(cols, []any{int32(1)}, &a); err == nil {
		t.Error("short row accepted")
	}
}

func TestFixFraction(t *testing.T) {
	for _, tc := range []struct {
		in   string
		dec  int
		want string
	}{
		{"12:00:00", 0, "12:00:00"},
		{"12:00:00", 3, "12:00:00.000"},
		{"12:00:00.5", 3, "12:00:00.500"},
		{"12:00:00.123456", 6, "12:00:00.123456"},
		{"12:00:00.123456", 2, "12:00:00.12"},
		{"-838:59:59", 1, "-838:59:59.0"},
	} {
		if got := fixFraction(tc.in, tc.dec); got != tc.want {
			t.Errorf("fixFraction(%q, %d) = %q, want %q", tc.in, tc.dec, got, tc.want)
		}
	}
}

// FuzzConvert checks the ENUM/SET/TIME conversions for arbitrary inputs:
// no panic, a SET's labels are exactly its bits, and TIME carries exactly
// the declared digits.
func FuzzConvert(f *testing.F) {
	f.Add("a,b,c", uint64(5), "12:00:00", uint8(6))
	f.Add("", uint64(0), "-838:59:59.1", uint8(0))
	f.Add("x", uint64(1<<63), "1:2:3.123456789", uint8(3))
	f.Fuzz(func(t *testing.T, labelList string, mask uint64, tm string, dec uint8) {
		var a arena
		var labels []string
		if labelList != "" {
			labels = strings.Split(labelList, "|")
		}
		set := column{name: "s", kind: event.KindSet, labels: labels}
		v, err := convertValue(&set, int64(mask), &a)
		if len(labels) < 64 && mask>>uint(len(labels)) != 0 {
			if err == nil {
				t.Fatalf("mask %#x beyond %d labels accepted", mask, len(labels))
			}
		} else if err != nil {
			t.Fatal(err)
		} else {
			if v.Uint != mask {
				t.Fatalf("mask %#x became %#x", mask, v.Uint)
			}
			n := 0
			for i := range labels {
				if mask&(1<<uint(i)) != 0 {
					n++
				}
			}
			if n != bits.OnesCount64(mask) {
				t.Fatalf("bits %d, labels %d", bits.OnesCount64(mask), n)
			}
			wantLen := 0
			for i, l := range labels {
				if mask&(1<<uint(i)) != 0 {
					wantLen += len(l) + 1
				}
			}
			if wantLen > 0 {
				wantLen--
			}
			if len(v.Bytes) != wantLen {
				t.Fatalf("set text %q has length %d, want %d", v.Bytes, len(v.Bytes), wantLen)
			}
		}
		d := int(dec % 7)
		tc := column{name: "t", kind: event.KindTime, dec: d}
		tv, err := convertValue(&tc, tm, &a)
		if err != nil {
			t.Fatal(err)
		}
		whole, frac, hasFrac := bytes.Cut(tv.Bytes, []byte("."))
		wantWhole, _, _ := strings.Cut(tm, ".")
		if string(whole) != wantWhole {
			t.Fatalf("TIME %q became %q", tm, tv.Bytes)
		}
		if d == 0 && hasFrac || d > 0 && len(frac) != d {
			t.Fatalf("TIME(%d) %q became %q", d, tm, tv.Bytes)
		}
	})
}

func valueEqual(a, b event.Value) bool {
	if a.Kind != b.Kind || a.Int != b.Int || a.Uint != b.Uint || !bytes.Equal(a.Bytes, b.Bytes) {
		return false
	}
	if math.IsNaN(a.Float) && math.IsNaN(b.Float) {
		return true
	}
	return a.Float == b.Float
}

func fmtValue(v event.Value) string {
	switch v.Kind {
	case event.KindNull:
		return "NULL"
	case event.KindInt:
		return fmt.Sprintf("int(%d)", v.Int)
	case event.KindUint, event.KindBit:
		return fmt.Sprintf("kind%d(%d)", v.Kind, v.Uint)
	case event.KindFloat32, event.KindFloat64:
		return fmt.Sprintf("kind%d(%v)", v.Kind, v.Float)
	case event.KindEnum, event.KindSet:
		return fmt.Sprintf("kind%d(%d %q)", v.Kind, v.Uint, v.Bytes)
	}
	return fmt.Sprintf("kind%d(%q)", v.Kind, v.Bytes)
}
