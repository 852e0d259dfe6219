package sink

import (
	"bytes"
	"fmt"
	"math"
	"testing"

	"github.com/tandemdb/tandem/pkg/event"
)

const allTypesTable = `CREATE TABLE alltypes (
	id INT NOT NULL PRIMARY KEY,
	ti TINYINT, tiu TINYINT UNSIGNED, si SMALLINT, siu SMALLINT UNSIGNED,
	mi MEDIUMINT, miu MEDIUMINT UNSIGNED, i INT, iu INT UNSIGNED, bi BIGINT, biu BIGINT UNSIGNED,
	dec65 DECIMAL(65,30), f FLOAT, d DOUBLE,
	vc VARCHAR(100) CHARACTER SET utf8mb4, tx TEXT CHARACTER SET utf8mb4, lat VARCHAR(20) CHARACTER SET latin1,
	ch CHAR(4) CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci,
	bin BINARY(4), vb VARBINARY(300), bl BLOB,
	dt DATE, dtm DATETIME(6), ts TIMESTAMP(6) NULL DEFAULT NULL, tm TIME(6), yr YEAR,
	e ENUM('a','b','ü'), st SET('x','y','z'), bt BIT(64), b1 BIT(1), j JSON,
	gen BIGINT AS (i + 1) VIRTUAL
) ENGINE=InnoDB`

// allTypesCols is the source column list: in a different order than the
// target's, with the generated column (which the sink must not write) and
// the version column.
var allTypesCols = []string{"j", "id", "ti", "tiu", "si", "siu", "mi", "miu", "i", "iu", "bi", "biu", "dec65", "f", "d",
	"vc", "tx", "lat", "ch", "bin", "vb", "bl", "dt", "dtm", "ts", "tm", "yr", "e", "st", "bt", "b1", "gen", "_tandem_hlc"}

func allBytes() []byte {
	b := make([]byte, 256)
	for i := range b {
		b[i] = byte(i)
	}
	return b
}

// allTypesRows are rows for allTypesCols: extremes, the other extremes,
// NULLs, and ordinary values.
func allTypesRows() [][]event.Value {
	f32 := func(f float32) event.Value { return event.Value{Kind: event.KindFloat32, Float: float64(f)} }
	f64 := func(f float64) event.Value { return event.Value{Kind: event.KindFloat64, Float: f} }
	null := event.Null
	max := []event.Value{
		vKind(event.KindJSON, `{"a": [1, "😀", null], "b": "it's \\ \"q\""}`), vInt(1),
		vInt(127), vUint(255), vInt(32767), vUint(65535), vInt(8388607), vUint(16777215),
		vInt(math.MaxInt32), vUint(math.MaxUint32), vInt(math.MaxInt64), vUint(math.MaxUint64),
		vKind(event.KindDecimal, "99999999999999999999999999999999999.999999999999999999999999999999"),
		f32(math.MaxFloat32), f64(math.MaxFloat64),
		vStr("😀 it's a \\ \x00\n\r\x1a \"q\" ☃"), vStr(string(bytes.Repeat([]byte("ü😀"), 1000))), vStr("caf\xe9"), vStr("ABCD"),
		vBytes([]byte{0xff, 0x00, 0xff, 0x00}), vBytes(append(allBytes(), 0, 0xff)), vBytes(allBytes()),
		vKind(event.KindDate, "9999-12-31"), vKind(event.KindDateTime, "9999-12-31 23:59:59.999999"),
		vKind(event.KindTimestamp, "2038-01-19 03:14:07.999999"), vKind(event.KindTime, "838:59:59.000000"),
		vInt(2155), event.Value{Kind: event.KindEnum, Uint: 3, Bytes: []byte("ü")},
		event.Value{Kind: event.KindSet, Uint: 7, Bytes: []byte("x,y,z")},
		event.Value{Kind: event.KindBit, Uint: math.MaxUint64}, event.Value{Kind: event.KindBit, Uint: 1},
		vInt(-1), null,
	}
	min := []event.Value{
		vKind(event.KindJSON, `[]`), vInt(2),
		vInt(-128), vUint(0), vInt(-32768), vUint(0), vInt(-8388608), vUint(0),
		vInt(math.MinInt32), vUint(0), vInt(math.MinInt64), vUint(0),
		vKind(event.KindDecimal, "-99999999999999999999999999999999999.999999999999999999999999999999"),
		f32(-math.MaxFloat32), f64(-math.SmallestNonzeroFloat64),
		vStr(""), vStr(""), vStr(""), vStr(""),
		vBytes([]byte{0, 0, 0, 0}), vBytes(nil), vBytes(nil),
		vKind(event.KindDate, "1000-01-01"), vKind(event.KindDateTime, "1000-01-01 00:00:00.000000"),
		vKind(event.KindTimestamp, "1970-01-01 00:00:01.000000"), vKind(event.KindTime, "-838:59:59.000000"),
		vInt(1901), event.Value{Kind: event.KindEnum, Uint: 1, Bytes: []byte("a")},
		event.Value{Kind: event.KindSet, Uint: 0, Bytes: []byte("")},
		event.Value{Kind: event.KindBit, Uint: 0}, event.Value{Kind: event.KindBit, Uint: 0},
		vInt(0), null,
	}
	nulls := make([]event.Value, len(allTypesCols))
	nulls[1] = vInt(3)
	mid := []event.Value{
		vKind(event.KindJSON, `{"n": 1.5e300}`), vInt(4),
		vInt(-1), vUint(1), vInt(-1), vUint(1), vInt(-1), vUint(1), vInt(-1), vUint(1), vInt(-1), vUint(1 << 63),
		vKind(event.KindDecimal, "0.000000000000000000000000000001"),
		f32(0.1), f64(0.1),
		vStr("plain"), vStr("text"), vStr("\xe0\xe9"), vStr("ab"),
		vBytes([]byte{1, 2, 3, 4}), vBytes([]byte("\x00\x00")), vBytes([]byte("\\'\"")),
		vKind(event.KindDate, "2024-02-29"), vKind(event.KindDateTime, "2024-02-29 12:34:56.000001"),
		vKind(event.KindTimestamp, "2024-10-27 01:30:00.500000"), vKind(event.KindTime, "-00:00:00.500000"),
		vInt(0), event.Value{Kind: event.KindEnum, Uint: 2, Bytes: []byte("b")},
		event.Value{Kind: event.KindSet, Uint: 5, Bytes: []byte("x,z")},
		event.Value{Kind: event.KindBit, Uint: 1 << 63}, event.Value{Kind: event.KindBit, Uint: 0},
		vInt(12345), null,
	}
	return [][]event.Value{max, min, nulls, mid}
}

// TestRoundTripAllKinds applies rows with every value kind into a table with
// every MariaDB type and reads them back with the binary protocol, which
// returns FLOAT and DOUBLE exactly, comparing every value.
func TestRoundTripAllKinds(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{}, allTypesTable)
	vs := newVersions()
	rows := allTypesRows()
	var tx event.Txn
	for _, row := range rows {
		v := vs.next(2)
		row[len(row)-1] = vUint(uint64(v))
		tx.Changes = append(tx.Changes, event.Change{Schema: f.data, Table: "alltypes", Op: event.OpInsert,
			Columns: allTypesCols, PK: []int{1}, Row: row, Version: v})
	}
	tx.Origin, tx.Stamp = 2, tx.Changes[0].Version
	res := f.apply(t, f.batch(tx))
	if res.Applied != len(rows) {
		t.Fatalf("Applied = %d, want %d (%+v)", res.Applied, len(rows), res)
	}

	// Read back. The text of the query makes it a prepared statement
	// (binary protocol) because of the argument.
	cols := allTypesCols[:len(allTypesCols)-2] // without gen and the version column
	sel := "SELECT "
	for i, c := range cols {
		if i > 0 {
			sel += ","
		}
		if c == "lat" {
			// The connection is utf8mb4; read the latin1 bytes as stored.
			sel += "CAST(lat AS BINARY)"
			continue
		}
		sel += quoteIdent(c)
	}
	for _, row := range rows {
		id := row[1].Int
		dst := make([]any, len(cols))
		for i := range dst {
			dst[i] = new(any)
		}
		if err := f.db.QueryRow(sel+" FROM alltypes WHERE id = ?", id).Scan(dst...); err != nil {
			t.Fatalf("read row %d: %v", id, err)
		}
		for i, c := range cols {
			got := *(dst[i].(*any))
			if err := sameValue(row[i], got); err != nil {
				t.Errorf("row %d column %s: %v", id, c, err)
			}
		}
		var gen, version any
		if err := f.db.QueryRow("SELECT gen, _tandem_hlc FROM alltypes WHERE id = ?", id).Scan(&gen, &version); err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(version) != fmt.Sprint(row[len(row)-1].Uint) {
			t.Errorf("row %d: version %v, want %d", id, version, row[len(row)-1].Uint)
		}
	}
	// Applying the same rows again (a replay in a new batch) changes nothing.
	sum := f.checksum(t, "alltypes")
	res = f.apply(t, f.batch(tx))
	if res.Duplicates != len(rows) {
		t.Errorf("replay: %+v, want all duplicates", res)
	}
	if got := f.checksum(t, "alltypes"); got != sum {
		t.Errorf("replay changed the table: %s -> %s", sum, got)
	}
}

// sameValue compares an applied value with what the binary protocol
// returned for it (go-sql-driver types: int64, uint64, float32, float64,
// []byte for everything else).
func sameValue(want event.Value, got any) error {
	mismatch := func() error { return fmt.Errorf("got %#v (%T), want %+v", got, got, want) }
	switch want.Kind {
	case event.KindNull:
		if got != nil {
			return mismatch()
		}
	case event.KindInt:
		var g int64
		switch x := got.(type) {
		case int64:
			g = x
		case uint64:
			g = int64(x)
		case []byte: // YEAR
			fmt.Sscan(string(x), &g)
		default:
			return mismatch()
		}
		if g != want.Int {
			return mismatch()
		}
	case event.KindUint:
		var g uint64
		switch x := got.(type) {
		case int64:
			g = uint64(x)
		case uint64:
			g = x
		case []byte: // above MaxInt64
			fmt.Sscan(string(x), &g)
		default:
			return mismatch()
		}
		if g != want.Uint {
			return mismatch()
		}
	case event.KindFloat32:
		if x, ok := got.(float32); !ok || math.Float32bits(x) != math.Float32bits(float32(want.Float)) {
			return mismatch()
		}
	case event.KindFloat64:
		if x, ok := got.(float64); !ok || math.Float64bits(x) != math.Float64bits(want.Float) {
			return mismatch()
		}
	case event.KindBit:
		x, ok := got.([]byte)
		if !ok || len(x) > 8 {
			return mismatch()
		}
		var g uint64
		for _, c := range x {
			g = g<<8 | uint64(c)
		}
		if g != want.Uint {
			return mismatch()
		}
	case event.KindJSON:
		// MariaDB stores JSON text as given.
		if x, ok := got.([]byte); !ok || !bytes.Equal(x, want.Bytes) {
			return mismatch()
		}
	default:
		x, ok := got.([]byte)
		if !ok || !bytes.Equal(x, want.Bytes) {
			return mismatch()
		}
	}
	return nil
}
