package sink

import (
	"bytes"
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"testing"

	"github.com/go-sql-driver/mysql"

	"github.com/tandemdb/tandem/pkg/conflict"
	"github.com/tandemdb/tandem/pkg/event"
	"github.com/tandemdb/tandem/pkg/hlc"
)

func TestAppendLiteral(t *testing.T) {
	f32 := float32(0.1)
	tests := []struct {
		name string
		v    event.Value
		ck   colKind
		want string
	}{
		{"null", event.Null, colPlain, "NULL"},
		{"int min", event.Value{Kind: event.KindInt, Int: math.MinInt64}, colPlain, "-9223372036854775808"},
		{"int max", event.Value{Kind: event.KindInt, Int: math.MaxInt64}, colPlain, "9223372036854775807"},
		{"year", event.Value{Kind: event.KindInt, Int: 2155}, colPlain, "2155"},
		{"uint max", event.Value{Kind: event.KindUint, Uint: math.MaxUint64}, colPlain, "18446744073709551615"},
		{"bit64", event.Value{Kind: event.KindBit, Uint: 1 << 63}, colPlain, "9223372036854775808"},
		{"float32 exact", event.Value{Kind: event.KindFloat32, Float: float64(f32)}, colPlain, "1.0000000149011612e-01"},
		{"float32 max", event.Value{Kind: event.KindFloat32, Float: math.MaxFloat32}, colPlain, "3.4028234663852886e+38"},
		{"float64", event.Value{Kind: event.KindFloat64, Float: 0.1}, colPlain, "1e-01"},
		{"float64 integral", event.Value{Kind: event.KindFloat64, Float: 100}, colPlain, "1e+02"},
		{"float64 negative zero", event.Value{Kind: event.KindFloat64, Float: math.Copysign(0, -1)}, colPlain, "-0e+00"},
		{"float64 max", event.Value{Kind: event.KindFloat64, Float: math.MaxFloat64}, colPlain, "1.7976931348623157e+308"},
		{"decimal", event.Value{Kind: event.KindDecimal, Bytes: []byte("-123.4500")}, colPlain, "'-123.4500'"},
		{"date", event.Value{Kind: event.KindDate, Bytes: []byte("2024-02-29")}, colPlain, "'2024-02-29'"},
		{"datetime", event.Value{Kind: event.KindDateTime, Bytes: []byte("9999-12-31 23:59:59.999999")}, colPlain, "'9999-12-31 23:59:59.999999'"},
		{"timestamp", event.Value{Kind: event.KindTimestamp, Bytes: []byte("1970-01-01 00:00:01")}, colPlain, "'1970-01-01 00:00:01'"},
		{"time negative", event.Value{Kind: event.KindTime, Bytes: []byte("-838:59:59.000000")}, colPlain, "'-838:59:59.000000'"},
		{"string escapes", event.Value{Kind: event.KindString, Bytes: []byte("it's a \\ \x00\n\r\x1a \"q\" 😀")}, colPlain,
			`_binary'it\'s a \\ \0\n\r\Z "q" 😀'`},
		{"bytes", event.Value{Kind: event.KindBytes, Bytes: []byte{0x00, 0xff, '\'', 0x80}}, colPlain, "_binary'\\0\xff\\'\x80'"},
		{"empty bytes", event.Value{Kind: event.KindBytes}, colPlain, "_binary''"},
		{"enum label", event.Value{Kind: event.KindEnum, Uint: 2, Bytes: []byte("ü")}, colPlain, "_binary'ü'"},
		{"set labels", event.Value{Kind: event.KindSet, Uint: 5, Bytes: []byte("x,z")}, colPlain, "_binary'x,z'"},
		{"json mariadb", event.Value{Kind: event.KindJSON, Bytes: []byte(`{"a":1}`)}, colPlain, `_binary'{"a":1}'`},
		{"json mysql", event.Value{Kind: event.KindJSON, Bytes: []byte(`{"a":1}`)}, colJSON, `CONVERT(_binary'{"a":1}' USING utf8mb4)`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := appendLiteral([]byte("x="), tc.v, tc.ck)
			if err != nil {
				t.Fatalf("appendLiteral: %v", err)
			}
			if string(got) != "x="+tc.want {
				t.Errorf("appendLiteral = %q, want %q", got, "x="+tc.want)
			}
		})
	}
}

func TestAppendLiteralRejects(t *testing.T) {
	for _, v := range []event.Value{
		{Kind: event.KindFloat64, Float: math.NaN()},
		{Kind: event.KindFloat32, Float: math.Inf(1)},
		{Kind: event.KindDecimal, Bytes: []byte("1'; DROP TABLE t; --")},
		{Kind: event.KindDecimal},
		{Kind: event.KindDateTime, Bytes: []byte("2024-01-01'")},
		{Kind: event.KindTime, Bytes: []byte("12:00\\")},
		{Kind: event.Kind(99)},
	} {
		if got, err := appendLiteral(nil, v, colPlain); err == nil {
			t.Errorf("appendLiteral(%+v) = %q, want an error", v, got)
		}
	}
}

// TestEscapedStringsParse checks that every byte value survives escaping:
// unescaping with MariaDB's rules gives the input back.
func TestEscapedStringsParse(t *testing.T) {
	in := make([]byte, 256)
	for i := range in {
		in[i] = byte(i)
	}
	lit := appendBinaryString(nil, in)
	body, ok := bytes.CutPrefix(lit, []byte("_binary'"))
	if !ok || body[len(body)-1] != '\'' {
		t.Fatalf("literal %q is not _binary'…'", lit)
	}
	body = body[:len(body)-1]
	var out []byte
	for i := 0; i < len(body); i++ {
		c := body[i]
		switch c {
		case '\'':
			t.Fatalf("unescaped quote at %d in %q", i, body)
		case '\\':
			i++
			switch body[i] {
			case '0':
				c = 0
			case 'n':
				c = '\n'
			case 'r':
				c = '\r'
			case 'Z':
				c = 0x1a
			default:
				c = body[i]
			}
		}
		out = append(out, c)
	}
	if !bytes.Equal(out, in) {
		t.Errorf("unescaped %q, want %q", out, in)
	}
}

func TestAppendTextString(t *testing.T) {
	got := string(appendTextString(nil, "a'b\xffc"))
	if want := "_utf8mb4'a\\'b\uFFFDc'"; got != want {
		t.Errorf("appendTextString = %q, want %q", got, want)
	}
}

func TestQuoteIdent(t *testing.T) {
	if got, want := quoteIdent("we`ird"), "`we``ird`"; got != want {
		t.Errorf("quoteIdent = %s, want %s", got, want)
	}
}

func TestKeyParts(t *testing.T) {
	// Keys built from incoming values equal keys built from the text the
	// server sends back for the same values.
	for _, tc := range []struct {
		v    event.Value
		text string
	}{
		{event.Value{Kind: event.KindInt, Int: -5}, "-5"},
		{event.Value{Kind: event.KindUint, Uint: math.MaxUint64}, "18446744073709551615"},
		{event.Value{Kind: event.KindString, Bytes: []byte("abc")}, "abc"},
		{event.Value{Kind: event.KindBytes, Bytes: []byte{0, 1, 0}}, "\x00\x01\x00"},
		{event.Value{Kind: event.KindDecimal, Bytes: []byte("1.50")}, "1.50"},
		{event.Value{Kind: event.KindDateTime, Bytes: []byte("2024-01-01 00:00:00.000000")}, "2024-01-01 00:00:00.000000"},
	} {
		if a, b := appendKeyPart(nil, tc.v), appendRawKeyPart(nil, []byte(tc.text)); !bytes.Equal(a, b) {
			t.Errorf("key of %+v = %q, key of text %q = %q", tc.v, a, tc.text, b)
		}
	}
	// Length prefixes keep ("ab","c") and ("a","bc") apart.
	ab := appendKeyPart(appendKeyPart(nil, event.Value{Kind: event.KindString, Bytes: []byte("ab")}), event.Value{Kind: event.KindString, Bytes: []byte("c")})
	bc := appendKeyPart(appendKeyPart(nil, event.Value{Kind: event.KindString, Bytes: []byte("a")}), event.Value{Kind: event.KindString, Bytes: []byte("bc")})
	if bytes.Equal(ab, bc) {
		t.Errorf("composite keys collide: %q", ab)
	}
}

func TestParseVersion(t *testing.T) {
	for _, tc := range []struct {
		in   []byte
		want hlc.Timestamp
		ok   bool
	}{
		{nil, 0, true},
		{[]byte("0"), 0, true},
		{[]byte("18446744073709551615"), math.MaxUint64, true},
		{[]byte("18446744073709551616"), 0, false},
		{[]byte("-1"), 0, false},
		{[]byte("1x"), 0, false},
	} {
		got, err := parseVersion(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseVersion(%q) = %d, %v; want %d, ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestIsRetryable(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{nil, false},
		{&mysql.MySQLError{Number: erLockDeadlock}, true},
		{fmt.Errorf("wrapped: %w", &mysql.MySQLError{Number: erLockWaitTimeout}), true},
		{&mysql.MySQLError{Number: 1142}, true}, // command denied: fixable by an operator
		{&mysql.MySQLError{Number: erDataTooLong}, false},
		{driver.ErrBadConn, true},
		{mysql.ErrInvalidConn, true},
		{io.ErrUnexpectedEOF, true},
		{&transientError{err: errConcurrentWriter}, true},
		{bookkeepingError("x", "t", &mysql.MySQLError{Number: erNoSuchTable}), true},
		{&PermanentError{Err: &mysql.MySQLError{Number: erLockDeadlock}}, false},
		{fmt.Errorf("x: %w", ErrFenced), false},
		{context.Canceled, false},
		{fmt.Errorf("sink: %w: bad", errInvalidBatch), false},
		{errors.New("something else"), false},
	} {
		if got := IsRetryable(tc.err); got != tc.want {
			t.Errorf("IsRetryable(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

func TestWinsSQL(t *testing.T) {
	if got, want := winsSQL(conflict.Policy{})("a", "b"), "a > b"; got != want {
		t.Errorf("active-active: %s, want %s", got, want)
	}
	got := winsSQL(conflict.Policy{HomeSite: 3})("a", "b")
	if !strings.Contains(got, "((a & 255) = 3)") || !strings.Contains(got, "a > b") {
		t.Errorf("home-only: %s", got)
	}
}

func TestConfigDefaults(t *testing.T) {
	c, err := Config{Site: 1}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if c.MetaSchema != "tandem" || c.VersionColumn != "_tandem_hlc" || c.MaxRowsPerStatement != DefaultMaxRowsPerStatement {
		t.Errorf("defaults: %+v", c)
	}
	for _, bad := range []Config{{}, {Site: 1, MaxRowsPerStatement: -1}, {Site: 1, MaxRowsPerStatement: maxRowsPerStatement + 1}} {
		if _, err := bad.withDefaults(); err == nil {
			t.Errorf("%+v: want an error", bad)
		}
	}
}

func TestTruncateUTF8(t *testing.T) {
	if got := truncateUTF8("aé", 2); got != "a" {
		t.Errorf("truncateUTF8 = %q, want %q", got, "a")
	}
	if got := truncateUTF8("abc", 5); got != "abc" {
		t.Errorf("truncateUTF8 = %q", got)
	}
}

func TestIsLockConflict(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{nil, false},
		{&mysql.MySQLError{Number: erLockDeadlock}, true},
		{fmt.Errorf("sink: apply to x: %w", &mysql.MySQLError{Number: erLockWaitTimeout}), true},
		{&mysql.MySQLError{Number: erDupEntry}, false},
		{driver.ErrBadConn, false},
	} {
		if got := IsLockConflict(tc.err); got != tc.want {
			t.Errorf("IsLockConflict(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
