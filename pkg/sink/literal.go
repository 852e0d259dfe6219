package sink

import (
	"encoding/binary"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/tandemdb/tandem/pkg/event"
)

// The sink sends every statement as text with the values written as SQL
// literals, rather than as server-side prepared statements with bound
// parameters:
//
//   - one round trip per statement and no statement cache to manage: a
//     multi-row statement exists in as many shapes as there are (table,
//     column list, row count) combinations, more than max_prepared_stmt_count
//     allows per server once every connection prepares its own copy;
//   - string values are written as _binary'…' literals, so their bytes reach
//     the column unchanged whatever its character set (latin1, utf8mb3,
//     utf8mb4…) and whatever the connection's: a bound string parameter
//     would be converted from character_set_client and mangle non-UTF-8
//     text. A _binary literal compared with a text column takes the
//     column's collation (the literal is merely coercible), so primary key
//     lookups still use the index.
//
// Escaping is safe because every sink session runs with SET NAMES utf8mb4
// (no multi-byte character has a byte below 0x80, so a quote or backslash is
// never part of one) and with an sql_mode that the sink sets and that does
// not contain NO_BACKSLASH_ESCAPES.

// colKind is what the sink must know about a target column to write a
// literal into it.
type colKind uint8

const (
	colPlain colKind = iota
	// colJSON is MySQL's JSON type, which refuses binary strings; MariaDB's
	// JSON is a LONGTEXT and takes them.
	colJSON
)

// appendLiteral appends v as a SQL literal for a column of kind ck.
func appendLiteral(b []byte, v event.Value, ck colKind) ([]byte, error) {
	switch v.Kind {
	case event.KindNull:
		return append(b, "NULL"...), nil
	case event.KindInt:
		return strconv.AppendInt(b, v.Int, 10), nil
	case event.KindUint, event.KindBit:
		// A BIT(n) column takes a number; the decimal form keeps BIT(64)
		// values above 2^63 exact (they parse as BIGINT UNSIGNED).
		return strconv.AppendUint(b, v.Uint, 10), nil
	case event.KindFloat32:
		// The float32 value widened to float64 is exact; its shortest
		// float64 text parses back to the same double, which narrows to
		// the same float32 without a second rounding.
		return appendFloat(b, float64(float32(v.Float)))
	case event.KindFloat64:
		return appendFloat(b, v.Float)
	case event.KindDecimal:
		// Quoted: a string converts to DECIMAL exactly at any precision,
		// whereas a numeric literal with more than 65 digits is a DOUBLE.
		return appendChecked(b, v, isDecimalByte)
	case event.KindDate, event.KindDateTime, event.KindTimestamp, event.KindTime:
		return appendChecked(b, v, isTemporalByte)
	case event.KindJSON:
		if ck == colJSON {
			b = append(b, "CONVERT("...)
			b = appendBinaryString(b, v.Bytes)
			return append(b, " USING utf8mb4)"...), nil
		}
		return appendBinaryString(b, v.Bytes), nil
	case event.KindString, event.KindBytes, event.KindEnum, event.KindSet:
		// ENUM and SET by label: a target whose definition lists the values
		// in another order still gets the same value.
		return appendBinaryString(b, v.Bytes), nil
	}
	return b, fmt.Errorf("value of unknown kind %d", v.Kind)
}

func appendFloat(b []byte, f float64) ([]byte, error) {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return b, fmt.Errorf("floating-point value %v cannot be stored", f)
	}
	// 'e' keeps every value a DOUBLE literal (also -0 and integral values).
	return strconv.AppendFloat(b, f, 'e', -1, 64), nil
}

// appendChecked appends v's text quoted, after checking that every byte is
// one the kind allows: a damaged value fails rather than becoming SQL.
func appendChecked(b []byte, v event.Value, ok func(byte) bool) ([]byte, error) {
	if len(v.Bytes) == 0 {
		return b, fmt.Errorf("empty %s value", kindName(v.Kind))
	}
	for _, c := range v.Bytes {
		if !ok(c) {
			return b, fmt.Errorf("%s value %q has an unexpected character %q", kindName(v.Kind), v.Bytes, c)
		}
	}
	b = append(b, '\'')
	b = append(b, v.Bytes...)
	return append(b, '\''), nil
}

func isDecimalByte(c byte) bool {
	return c >= '0' && c <= '9' || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E'
}

func isTemporalByte(c byte) bool {
	return c >= '0' && c <= '9' || c == '-' || c == ':' || c == '.' || c == ' '
}

func kindName(k event.Kind) string {
	switch k {
	case event.KindDecimal:
		return "DECIMAL"
	case event.KindDate:
		return "DATE"
	case event.KindDateTime:
		return "DATETIME"
	case event.KindTimestamp:
		return "TIMESTAMP"
	case event.KindTime:
		return "TIME"
	}
	return fmt.Sprintf("kind %d", k)
}

// appendBinaryString appends s as a _binary'…' literal.
func appendBinaryString(b []byte, s []byte) []byte {
	b = append(b, "_binary'"...)
	b = appendEscaped(b, s)
	return append(b, '\'')
}

// appendTextString appends s as a utf8mb4 string literal, for the sink's
// own bookkeeping text (tenant names, error messages); invalid UTF-8 is
// replaced so the row is always accepted.
func appendTextString(b []byte, s string) []byte {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	b = append(b, "_utf8mb4'"...)
	b = appendEscaped(b, []byte(s))
	return append(b, '\'')
}

// appendEscaped escapes what the MariaDB lexer treats specially inside a
// quoted string.
func appendEscaped(b []byte, s []byte) []byte {
	start := 0
	for i, c := range s {
		var esc byte
		switch c {
		case 0:
			esc = '0'
		case '\'':
			esc = '\''
		case '\\':
			esc = '\\'
		case '\n':
			esc = 'n'
		case '\r':
			esc = 'r'
		case 0x1a:
			esc = 'Z'
		default:
			continue
		}
		b = append(b, s[start:i]...)
		b = append(b, '\\', esc)
		start = i + 1
	}
	return append(b, s[start:]...)
}

// appendQuotedIdent appends name as a backquoted identifier.
func appendQuotedIdent(b []byte, name string) []byte {
	b = append(b, '`')
	for i := 0; i < len(name); i++ {
		if name[i] == '`' {
			b = append(b, '`')
		}
		b = append(b, name[i])
	}
	return append(b, '`')
}

func quoteIdent(name string) string { return string(appendQuotedIdent(nil, name)) }

// appendKeyPart appends one primary key value to a row key: the value as
// the text protocol renders it (so keys built from incoming values and from
// rows read back compare equal), length-prefixed so that concatenated parts
// cannot collide.
func appendKeyPart(b []byte, v event.Value) []byte {
	var tmp [64]byte
	var text []byte
	switch v.Kind {
	case event.KindInt:
		text = strconv.AppendInt(tmp[:0], v.Int, 10)
	case event.KindUint:
		text = strconv.AppendUint(tmp[:0], v.Uint, 10)
	case event.KindBit:
		// BIT(n) values come back as their big-endian bytes; n is not known
		// here, so this matches only BIT(64). Other widths take the slow
		// per-key lookup.
		text = binary.BigEndian.AppendUint64(tmp[:0], v.Uint)
	case event.KindFloat32:
		text = strconv.AppendFloat(tmp[:0], v.Float, 'g', -1, 32)
	case event.KindFloat64:
		text = strconv.AppendFloat(tmp[:0], v.Float, 'g', -1, 64)
	case event.KindNull:
		// Primary key columns are NOT NULL; a length no text can have.
		return binary.AppendUvarint(b, math.MaxUint64)
	default:
		text = v.Bytes
	}
	return appendRawKeyPart(b, text)
}

// appendRawKeyPart appends one column of a row read back (text protocol).
func appendRawKeyPart(b []byte, text []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(text)))
	return append(b, text...)
}
