package binlog

import (
	"bytes"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/replication"

	"github.com/tandemdb/tandem/pkg/event"
)

// binaryCollation is the id of the "binary" character set/collation: a
// string column with it holds bytes (BINARY, VARBINARY, BLOB), not text.
const binaryCollation = 63

// column says how to turn go-mysql's decoded value of one column into an
// event.Value. It is derived from the table map only, never from the live
// table, so the mapping is the one that was true when the row was written.
type column struct {
	name     string
	typ      byte // real type: STRING resolved to ENUM/SET
	kind     event.Kind
	unsigned bool
	dec      int      // TIME2 fractional digits
	padTo    int      // BINARY(n): restore the trailing 0x00 bytes the binlog strips
	labels   []string // ENUM/SET values in definition order
}

// stringLength decodes the real type and byte length of a MYSQL_TYPE_STRING
// column from its table-map metadata: the real type (CHAR, ENUM, SET) is in
// the high byte, and lengths above 255 borrow two bits of it. This mirrors
// go-mysql's decodeValue.
func stringLength(meta uint16) (realType byte, length int) {
	if meta < 256 {
		return mysql.MYSQL_TYPE_STRING, int(meta)
	}
	b0, b1 := byte(meta>>8), byte(meta&0xff)
	if b0&0x30 != 0x30 {
		return b0 | 0x30, int(uint16(b1) | uint16((b0&0x30)^0x30)<<4)
	}
	return b0, int(b1)
}

// newColumns derives the column converters of a table map. It needs the
// metadata that binlog_row_metadata=FULL logs: names, signedness, charsets
// and ENUM/SET values.
func newColumns(te *replication.TableMapEvent) ([]column, error) {
	names := te.ColumnNameString()
	if len(names) != int(te.ColumnCount) {
		return nil, errNoMetadata
	}
	unsigned := te.UnsignedMap()
	collations := te.CollationMap()
	enums := te.EnumStrValueMap()
	sets := te.SetStrValueMap()
	cols := make([]column, te.ColumnCount)
	for i := range cols {
		c := &cols[i]
		c.name = names[i]
		c.typ = te.ColumnType[i]
		meta := te.ColumnMeta[i]
		switch c.typ {
		case mysql.MYSQL_TYPE_TINY, mysql.MYSQL_TYPE_SHORT, mysql.MYSQL_TYPE_INT24,
			mysql.MYSQL_TYPE_LONG, mysql.MYSQL_TYPE_LONGLONG:
			c.unsigned = unsigned[i]
			c.kind = event.KindInt
			if c.unsigned {
				c.kind = event.KindUint
			}
		case mysql.MYSQL_TYPE_YEAR:
			c.kind = event.KindInt
		case mysql.MYSQL_TYPE_FLOAT:
			c.kind = event.KindFloat32
		case mysql.MYSQL_TYPE_DOUBLE:
			c.kind = event.KindFloat64
		case mysql.MYSQL_TYPE_NEWDECIMAL:
			c.kind = event.KindDecimal
		case mysql.MYSQL_TYPE_DATE, mysql.MYSQL_TYPE_NEWDATE:
			c.kind = event.KindDate
		case mysql.MYSQL_TYPE_DATETIME, mysql.MYSQL_TYPE_DATETIME2:
			c.kind = event.KindDateTime
		case mysql.MYSQL_TYPE_TIMESTAMP, mysql.MYSQL_TYPE_TIMESTAMP2:
			c.kind = event.KindTimestamp
		case mysql.MYSQL_TYPE_TIME:
			c.kind = event.KindTime
		case mysql.MYSQL_TYPE_TIME2:
			c.kind = event.KindTime
			c.dec = int(meta)
		case mysql.MYSQL_TYPE_BIT:
			c.kind = event.KindBit
		case mysql.MYSQL_TYPE_JSON:
			c.kind = event.KindJSON
		case mysql.MYSQL_TYPE_GEOMETRY, mysql.MYSQL_TYPE_VECTOR:
			c.kind = event.KindBytes
		case mysql.MYSQL_TYPE_NULL:
			c.kind = event.KindNull
		case mysql.MYSQL_TYPE_VARCHAR, mysql.MYSQL_TYPE_VAR_STRING, mysql.MYSQL_TYPE_BLOB:
			c.kind = textOrBytes(collations, i)
		case mysql.MYSQL_TYPE_STRING:
			rt, length := stringLength(meta)
			switch rt {
			case mysql.MYSQL_TYPE_ENUM:
				c.typ, c.kind, c.labels = rt, event.KindEnum, enums[i]
				if c.labels == nil {
					return nil, fmt.Errorf("ENUM column %s has no values in the table map: %w", c.name, errNoMetadata)
				}
			case mysql.MYSQL_TYPE_SET:
				c.typ, c.kind, c.labels = rt, event.KindSet, sets[i]
				if c.labels == nil {
					return nil, fmt.Errorf("SET column %s has no values in the table map: %w", c.name, errNoMetadata)
				}
			default:
				c.kind = textOrBytes(collations, i)
				if c.kind == event.KindBytes {
					// Field_string::pack drops trailing pad bytes (0x00 for
					// the binary charset); BINARY(n) always holds n bytes.
					c.padTo = length
				}
			}
		default:
			return nil, fmt.Errorf("column %s has binlog type %d, which the reader does not support", c.name, c.typ)
		}
	}
	return cols, nil
}

func textOrBytes(collations map[int]uint64, i int) event.Kind {
	if collations[i] == binaryCollation {
		return event.KindBytes
	}
	return event.KindString
}

// arena hands out copies of value bytes from large shared chunks, so that
// a row costs one allocation for its []Value instead of one per string.
// go-mysql's strings point into the packet buffer; copying decouples the
// published values from it. A chunk stays alive as long as any value in it,
// which is bounded by what the consumer holds.
type arena struct {
	buf []byte
}

const (
	arenaChunk = 64 << 10
	arenaLarge = arenaChunk / 8 // values above this get their own allocation
)

func (a *arena) copy(s string) []byte { return arenaCopy(a, s) }

func arenaCopy[T string | []byte](a *arena, s T) []byte {
	if len(s) > arenaLarge {
		return append([]byte(nil), s...)
	}
	if len(a.buf)+len(s) > cap(a.buf) {
		a.buf = make([]byte, 0, arenaChunk)
	}
	n := len(a.buf)
	a.buf = append(a.buf, s...)
	return a.buf[n:len(a.buf):len(a.buf)]
}

func (a *arena) copyPadded(s string, padTo int) []byte {
	if len(s) >= padTo {
		return a.copy(s)
	}
	b := make([]byte, padTo)
	copy(b, s)
	return b
}

// convertRow converts one row image. It returns the values and their
// approximate size in bytes (value bytes plus 8 per column), which is what
// MaxFragmentBytes bounds.
func convertRow(cols []column, row []any, a *arena) ([]event.Value, int, error) {
	if len(row) != len(cols) {
		return nil, 0, fmt.Errorf("row has %d values but the table map has %d columns", len(row), len(cols))
	}
	vals := make([]event.Value, len(cols))
	size := 8 * len(cols)
	for i := range cols {
		v, err := convertValue(&cols[i], row[i], a)
		if err != nil {
			return nil, 0, fmt.Errorf("column %s: %w", cols[i].name, err)
		}
		vals[i] = v
		size += len(v.Bytes)
	}
	return vals, size, nil
}

// convertValue maps one go-mysql value to an event.Value following the Kind
// table in pkg/event. go-mysql is configured with ParseTime=false,
// UseDecimal=false and TIMESTAMP rendered in UTC, so temporal and decimal
// values arrive as exact text.
func convertValue(c *column, v any, a *arena) (event.Value, error) {
	if v == nil {
		return event.Null, nil
	}
	switch c.kind {
	case event.KindInt:
		switch x := v.(type) {
		case int8:
			return event.Value{Kind: event.KindInt, Int: int64(x)}, nil
		case int16:
			return event.Value{Kind: event.KindInt, Int: int64(x)}, nil
		case int32:
			return event.Value{Kind: event.KindInt, Int: int64(x)}, nil
		case int64:
			return event.Value{Kind: event.KindInt, Int: x}, nil
		case int: // YEAR
			return event.Value{Kind: event.KindInt, Int: int64(x)}, nil
		}
	case event.KindUint:
		// go-mysql decodes unsigned columns as unsigned Go types when the
		// table map carries signedness; the signed cases reinterpret the
		// bits at the column's width in case it did not.
		switch x := v.(type) {
		case uint8:
			return event.Value{Kind: event.KindUint, Uint: uint64(x)}, nil
		case uint16:
			return event.Value{Kind: event.KindUint, Uint: uint64(x)}, nil
		case uint32:
			return event.Value{Kind: event.KindUint, Uint: uint64(x)}, nil
		case uint64:
			return event.Value{Kind: event.KindUint, Uint: x}, nil
		case int8:
			return event.Value{Kind: event.KindUint, Uint: uint64(uint8(x))}, nil
		case int16:
			return event.Value{Kind: event.KindUint, Uint: uint64(uint16(x))}, nil
		case int32:
			if c.typ == mysql.MYSQL_TYPE_INT24 {
				return event.Value{Kind: event.KindUint, Uint: uint64(uint32(x) & 0xffffff)}, nil
			}
			return event.Value{Kind: event.KindUint, Uint: uint64(uint32(x))}, nil
		case int64:
			return event.Value{Kind: event.KindUint, Uint: uint64(x)}, nil
		}
	case event.KindFloat32:
		if x, ok := v.(float32); ok {
			return event.Value{Kind: event.KindFloat32, Float: float64(x)}, nil
		}
	case event.KindFloat64:
		if x, ok := v.(float64); ok {
			return event.Value{Kind: event.KindFloat64, Float: x}, nil
		}
	case event.KindBit:
		if x, ok := v.(int64); ok {
			return event.Value{Kind: event.KindBit, Uint: uint64(x)}, nil
		}
	case event.KindEnum:
		if x, ok := v.(int64); ok {
			return enumValue(c.labels, x, a)
		}
	case event.KindSet:
		if x, ok := v.(int64); ok {
			return setValue(c.labels, uint64(x), a)
		}
	case event.KindTime:
		if x, ok := v.(string); ok {
			return event.Value{Kind: event.KindTime, Bytes: a.copy(fixFraction(x, c.dec))}, nil
		}
	case event.KindDecimal, event.KindDate, event.KindDateTime, event.KindTimestamp:
		if x, ok := v.(string); ok {
			return event.Value{Kind: c.kind, Bytes: a.copy(x)}, nil
		}
	case event.KindString, event.KindBytes, event.KindJSON:
		switch x := v.(type) {
		case string:
			if c.padTo > 0 {
				return event.Value{Kind: c.kind, Bytes: a.copyPadded(x, c.padTo)}, nil
			}
			return event.Value{Kind: c.kind, Bytes: a.copy(x)}, nil
		case []byte:
			return event.Value{Kind: c.kind, Bytes: arenaCopy(a, x)}, nil
		}
	case event.KindNull:
		return event.Null, nil
	}
	return event.Value{}, fmt.Errorf("unexpected decoded value %T for binlog type %d (kind %d)", v, c.typ, c.kind)
}

func enumValue(labels []string, idx int64, a *arena) (event.Value, error) {
	// Index 0 is the "" error value MariaDB stores for an invalid ENUM in
	// non-strict mode.
	if idx == 0 {
		return event.Value{Kind: event.KindEnum, Bytes: []byte{}}, nil
	}
	if idx < 0 || idx > int64(len(labels)) {
		return event.Value{}, fmt.Errorf("ENUM index %d out of range 1..%d", idx, len(labels))
	}
	return event.Value{Kind: event.KindEnum, Uint: uint64(idx), Bytes: a.copy(labels[idx-1])}, nil
}

func setValue(labels []string, mask uint64, a *arena) (event.Value, error) {
	if len(labels) < 64 && mask>>uint(len(labels)) != 0 {
		return event.Value{}, fmt.Errorf("SET bitmask %#x has bits beyond its %d values", mask, len(labels))
	}
	var b strings.Builder
	first := true
	for i, l := range labels {
		if mask&(1<<uint(i)) == 0 {
			continue
		}
		if !first {
			b.WriteByte(',')
		}
		first = false
		b.WriteString(l)
	}
	return event.Value{Kind: event.KindSet, Uint: mask, Bytes: a.copy(b.String())}, nil
}

// fixFraction makes a TIME value carry exactly dec fractional digits, as
// MariaDB prints TIME(dec): go-mysql omits the fraction when it is zero
// ("12:00:00" for TIME(6) 12:00:00.000000).
func fixFraction(s string, dec int) string {
	whole, frac, dot := strings.Cut(s, ".")
	if dec == 0 {
		return whole
	}
	if dot && len(frac) == dec {
		return s
	}
	if len(frac) > dec {
		return whole + "." + frac[:dec]
	}
	return whole + "." + frac + strings.Repeat("0", dec-len(frac))
}

// keyAppend appends a self-delimiting encoding of v to b, used to compare
// primary keys. Integers of either signedness encode as decimal text so a
// tombstone table whose key column differs only in signedness still
// matches.
func keyAppend(b []byte, v event.Value) []byte {
	switch v.Kind {
	case event.KindNull:
		return append(b, 'N')
	case event.KindInt:
		b = append(b, 'i')
		b = strconv.AppendInt(b, v.Int, 10)
		return append(b, 0)
	case event.KindUint, event.KindBit:
		b = append(b, 'i')
		b = strconv.AppendUint(b, v.Uint, 10)
		return append(b, 0)
	case event.KindFloat32, event.KindFloat64:
		b = append(b, 'f')
		b = strconv.AppendUint(b, math.Float64bits(v.Float), 16)
		return append(b, 0)
	}
	b = append(b, 's')
	b = strconv.AppendInt(b, int64(len(v.Bytes)), 10)
	b = append(b, ':')
	return append(b, v.Bytes...)
}

// sameTableMap reports whether two table maps describe the same table
// definition, so that a cached column mapping can be reused. Table ids are
// reused across server restarts and ALTER TABLE, so the id alone is not
// enough.
func sameTableMap(a, b *replication.TableMapEvent) bool {
	return a.TableID == b.TableID &&
		bytes.Equal(a.Schema, b.Schema) &&
		bytes.Equal(a.Table, b.Table) &&
		bytes.Equal(a.ColumnType, b.ColumnType) &&
		slices.Equal(a.ColumnMeta, b.ColumnMeta) &&
		bytes.Equal(a.SignednessBitmap, b.SignednessBitmap) &&
		slices.Equal(a.DefaultCharset, b.DefaultCharset) &&
		slices.Equal(a.ColumnCharset, b.ColumnCharset) &&
		slices.Equal(a.PrimaryKey, b.PrimaryKey) &&
		slices.EqualFunc(a.ColumnName, b.ColumnName, bytes.Equal) &&
		slices.EqualFunc(a.EnumStrValue, b.EnumStrValue, byteSlicesEqual) &&
		slices.EqualFunc(a.SetStrValue, b.SetStrValue, byteSlicesEqual) &&
		slices.Equal(a.EnumSetDefaultCharset, b.EnumSetDefaultCharset) &&
		slices.Equal(a.EnumSetColumnCharset, b.EnumSetColumnCharset)
}

func byteSlicesEqual(a, b [][]byte) bool { return slices.EqualFunc(a, b, bytes.Equal) }
