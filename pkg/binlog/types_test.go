package binlog

import (
	"bytes"
	"database/sql"
	"encoding/binary"
	"math"
	"strconv"
	"testing"

	"github.com/tandemdb/tandem/internal/testenv"
	"github.com/tandemdb/tandem/pkg/event"
	"github.com/tandemdb/tandem/pkg/hlc"
)

// typeColumns is every column type of the round-trip test with the Kind the
// reader must give it.
var typeColumns = []struct {
	name, ddl string
	kind      event.Kind
}{
	{"ti", "TINYINT", event.KindInt},
	{"tiu", "TINYINT UNSIGNED", event.KindUint},
	{"si", "SMALLINT", event.KindInt},
	{"siu", "SMALLINT UNSIGNED", event.KindUint},
	{"mi", "MEDIUMINT", event.KindInt},
	{"miu", "MEDIUMINT UNSIGNED", event.KindUint},
	{"i", "INT", event.KindInt},
	{"iu", "INT UNSIGNED", event.KindUint},
	{"bi", "BIGINT", event.KindInt},
	{"biu", "BIGINT UNSIGNED", event.KindUint},
	{"dec65", "DECIMAL(65,30)", event.KindDecimal},
	{"dec0", "DECIMAL(10,0)", event.KindDecimal},
	{"f", "FLOAT", event.KindFloat32},
	{"d", "DOUBLE", event.KindFloat64},
	{"ch", "CHAR(10)", event.KindString},
	{"vc", "VARCHAR(100)", event.KindString},
	{"tx", "TEXT", event.KindString},
	{"bn", "BINARY(4)", event.KindBytes},
	{"vb", "VARBINARY(10)", event.KindBytes},
	{"bl", "BLOB", event.KindBytes},
	{"dt", "DATE", event.KindDate},
	{"dtm", "DATETIME(6)", event.KindDateTime},
	{"dtm0", "DATETIME", event.KindDateTime},
	{"ts", "TIMESTAMP(6) NULL", event.KindTimestamp},
	{"tm", "TIME(6)", event.KindTime},
	{"tm2", "TIME(2)", event.KindTime},
	{"y", "YEAR", event.KindInt},
	{"e", "ENUM('a','b','ç','🐘')", event.KindEnum},
	{"st", "SET('x','y','z')", event.KindSet},
	{"b1", "BIT(1)", event.KindBit},
	{"b64", "BIT(64)", event.KindBit},
	// MariaDB's JSON is LONGTEXT with a CHECK: the binlog cannot tell it
	// from text.
	{"js", "JSON", event.KindString},
	{"tm4", "TIME(4)", event.KindTime},
	{"tm1", "TIME(1)", event.KindTime},
	{"dtm3", "DATETIME(3)", event.KindDateTime},
	{"ts0", "TIMESTAMP NULL", event.KindTimestamp},
}

var typeRows = []string{
	// minimums and empties
	`(1, -128, 0, -32768, 0, -8388608, 0, -2147483648, 0, -9223372036854775808, 0,
	  '-99999999999999999999999999999999999.999999999999999999999999999999', -9999999999,
	  -3.40282e38, -1.7976931348623157e308, '', '', '', x'00', x'00FF', x'00FF00',
	  '1000-01-01', '1000-01-01 00:00:00.000000', '1000-01-01 00:00:00', '1970-01-01 00:00:01.000000', '-838:59:59.000000', '-838:59:59.00', 1901,
	  'a', '', 0, 0, '[]', '-838:59:59.0000', '-00:00:00.1', '1000-01-01 00:00:00.000', '1970-01-01 00:00:01', 1)`,
	// maximums
	`(2, 127, 255, 32767, 65535, 8388607, 16777215, 2147483647, 4294967295, 9223372036854775807, 18446744073709551615,
	  '99999999999999999999999999999999999.999999999999999999999999999999', 9999999999,
	  3.40282e38, 1.7976931348623157e308, 'héllo 🐘', 'ünïcødé 🐘🐘', REPEAT('🐘', 1000), x'FFFFFFFF', x'FF00FF00', CONCAT(x'00FF', REPEAT(x'FF00', 5000)),
	  '9999-12-31', '9999-12-31 23:59:59.999999', '9999-12-31 23:59:59', '2038-01-19 03:14:07.999999', '838:59:59.000000', '838:59:59.99', 2155,
	  '🐘', 'x,y,z', 1, x'FFFFFFFFFFFFFFFF', '{"k": [1, 2.5, "🐘", null], "n": {"a": true}}',
	  '838:59:59.9999', '-00:00:01.1', '9999-12-31 23:59:59.999', '2038-01-19 03:14:07', 2)`,
	// values in between, with trailing bytes the binlog strips
	`(3, -1, 1, -1, 1, -1, 1, -1, 1, -1, 9223372036854775808,
	  '0.000000000000000000000000000001', 0,
	  1.1, 0.1, 'pad  ', ' x ', 'a\0b', 'ab', x'FF0000', x'00',
	  '2024-02-29', '2024-02-29 12:34:56.000001', '2024-02-29 12:34:56', '2024-02-29 12:34:56.123456', '-00:00:01.000001', '12:00:00', 0,
	  'ç', 'x,z', 0, x'8000000000000001', '"str"', '-12:34:56.0001', '00:00:00.0', '2024-02-29 12:34:56.500', '2024-02-29 12:34:56', 3)`,
	// NULL in every column
	`(4` + nullsFor() + `, 4)`,
}

func nullsFor() string {
	s := ""
	for range typeColumns {
		s += ", NULL"
	}
	return s
}

func TestReaderTypeRoundTrip(t *testing.T) {
	t.Parallel()
	m := testenv.SharedMariaDB(t, 1)
	dbName := testenv.NewDatabase(t, m)
	db := m.DB(t, dbName)
	ddl := "CREATE TABLE types (id INT PRIMARY KEY"
	for _, c := range typeColumns {
		ddl += ", " + c.name + " " + c.ddl
	}
	execAll(t, db, ddl+", "+vcol+") DEFAULT CHARSET utf8mb4")
	rr := startReader(t, readerConfig(m, dbName+".*"), currentPosition(t, m))
	for _, r := range typeRows {
		execAll(t, db, "INSERT INTO types VALUES "+r)
	}
	got := rr.waitChanges(t, dbName, len(typeRows))

	// What MariaDB prints for each value is the reference.
	rows, err := db.Query("SELECT * FROM types ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for ri := 0; rows.Next(); ri++ {
		raw := make([]sql.RawBytes, len(typeColumns)+2)
		ptrs := make([]any, len(raw))
		for i := range raw {
			ptrs[i] = &raw[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		ch := got[ri]
		if len(ch.Row) != len(raw) || ch.Columns[0] != "id" || ch.Version != hlc.Timestamp(ri+1) {
			t.Fatalf("row %d: %d values, columns %v, version %d", ri, len(ch.Row), ch.Columns, ch.Version)
		}
		for ci, c := range typeColumns {
			v := ch.Row[ci+1]
			if ch.Columns[ci+1] != c.name {
				t.Fatalf("column %d named %q, want %q", ci+1, ch.Columns[ci+1], c.name)
			}
			text := raw[ci+1]
			if text == nil {
				if v.Kind != event.KindNull {
					t.Errorf("row %d %s: %s, want NULL", ri+1, c.name, fmtValue(v))
				}
				continue
			}
			if v.Kind != c.kind {
				t.Errorf("row %d %s (%s): kind %d, want %d", ri+1, c.name, c.ddl, v.Kind, c.kind)
				continue
			}
			if want, ok := matches(v, text); !ok {
				t.Errorf("row %d %s (%s): got %s, MariaDB prints %q (%q)", ri+1, c.name, c.ddl, fmtValue(v), text, want)
			}
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}

	// A few values spelled out, so the test does not only trust the
	// comparison above.
	byName := func(row int, name string) event.Value {
		for i, n := range got[row].Columns {
			if n == name {
				return got[row].Row[i]
			}
		}
		t.Fatalf("no column %s", name)
		return event.Value{}
	}
	for _, tc := range []struct {
		row  int
		col  string
		want event.Value
	}{
		{1, "biu", event.Value{Kind: event.KindUint, Uint: math.MaxUint64}},
		{0, "bi", event.Value{Kind: event.KindInt, Int: math.MinInt64}},
		{2, "biu", event.Value{Kind: event.KindUint, Uint: 1 << 63}},
		{1, "b64", event.Value{Kind: event.KindBit, Uint: math.MaxUint64}},
		{2, "bn", event.Value{Kind: event.KindBytes, Bytes: []byte("ab\x00\x00")}},
		{0, "bn", event.Value{Kind: event.KindBytes, Bytes: []byte{0, 0, 0, 0}}},
		{2, "tm", event.Value{Kind: event.KindTime, Bytes: []byte("-00:00:01.000001")}},
		{2, "tm2", event.Value{Kind: event.KindTime, Bytes: []byte("12:00:00.00")}},
		{0, "tm", event.Value{Kind: event.KindTime, Bytes: []byte("-838:59:59.000000")}},
		{1, "vc", event.Value{Kind: event.KindString, Bytes: []byte("ünïcødé 🐘🐘")}},
		{1, "e", event.Value{Kind: event.KindEnum, Uint: 4, Bytes: []byte("🐘")}},
		{2, "st", event.Value{Kind: event.KindSet, Uint: 5, Bytes: []byte("x,z")}},
		{0, "dec65", event.Value{Kind: event.KindDecimal, Bytes: []byte("-99999999999999999999999999999999999.999999999999999999999999999999")}},
		{2, "f", event.Value{Kind: event.KindFloat32, Float: float64(float32(1.1))}},
		{2, "y", event.Value{Kind: event.KindInt, Int: 0}},
	} {
		if v := byName(tc.row, tc.col); !valueEqual(v, tc.want) {
			t.Errorf("row %d %s = %s, want %s", tc.row+1, tc.col, fmtValue(v), fmtValue(tc.want))
		}
	}
}

// matches reports whether v is the value MariaDB prints as text, and
// returns the expected rendering.
func matches(v event.Value, text []byte) (string, bool) {
	s := string(text)
	switch v.Kind {
	case event.KindInt:
		return s, strconv.FormatInt(v.Int, 10) == s
	case event.KindUint:
		return s, strconv.FormatUint(v.Uint, 10) == s
	case event.KindFloat32:
		f, err := strconv.ParseFloat(s, 32)
		return s, err == nil && float32(f) == float32(v.Float) && float64(float32(v.Float)) == v.Float
	case event.KindFloat64:
		f, err := strconv.ParseFloat(s, 64)
		return s, err == nil && f == v.Float
	case event.KindBit:
		var b [8]byte
		copy(b[8-len(text):], text)
		return strconv.FormatUint(binary.BigEndian.Uint64(b[:]), 10), binary.BigEndian.Uint64(b[:]) == v.Uint
	}
	return s, bytes.Equal(v.Bytes, text)
}
