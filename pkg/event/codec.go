package event

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"math/bits"
	"time"

	"github.com/tandemdb/tandem/pkg/hlc"
)

// The wire format is specified byte by byte in docs/wire-format.md; keep the
// two in step.

// FormatVersion is the wire format version Encode writes.
const FormatVersion = 1

// supportedVersions are the format versions Decode reads, oldest first.
var supportedVersions = []byte{1}

// Framing.
const (
	magic0, magic1 = 'T', 'D'
	headerLen      = 2 + 1 + 4 // magic, version, payload length
	trailerLen     = 4         // CRC-32C
	flagLast       = 1 << 0
	knownFlags     = flagLast
	// Lower bounds on encoded sizes, used to reject counts the remaining
	// input cannot hold before allocating for them.
	minTableLen  = 4         // schema len, table len, column count, PK count
	minChangeLen = 1 + 1 + 8 // table index, op, version
)

// CommitTime must lie in years 0001..9999 (what DATETIME can hold and what
// round-trips through Unix seconds exactly).
var (
	minCommitSec = time.Time{}.Unix()
	maxCommitSec = time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC).Unix()
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrCorrupt is matched (errors.Is) by every Decode error except
// ErrUnsupportedVersion: the message is damaged or was not written by Encode.
// A sink must not apply it; it goes to the dead-letter queue.
var ErrCorrupt = errors.New("corrupt message")

// ErrUnsupportedVersion is matched by the Decode error for a message in a
// format version this build cannot read (written by a newer producer). Such
// a message is not damaged: the sink should stop and be upgraded, not skip.
var ErrUnsupportedVersion = errors.New("unsupported format version")

// Encode appends the wire encoding of t (one Kafka message value) to dst and
// returns the extended buffer. It validates t first; on error dst is
// returned unchanged in length and the error names the offending field.
//
// Value fields that a Kind does not use are not encoded (they decode as
// zero), and a nil Bytes encodes like an empty one.
func Encode(dst []byte, t *Txn) ([]byte, error) {
	start := len(dst)
	out, err := encode(dst, t)
	if err != nil {
		return dst[:start], fmt.Errorf("event: encode: %w", err)
	}
	return out, nil
}

func encode(b []byte, t *Txn) ([]byte, error) {
	if t.Origin == 0 {
		return nil, errors.New("Origin: site id 0 is reserved (want 1..255)")
	}
	sec := t.CommitTime.Unix()
	if sec < minCommitSec || sec > maxCommitSec {
		return nil, fmt.Errorf("CommitTime: %s is outside years 0001..9999", t.CommitTime)
	}

	// Pass 1: validate and intern the distinct tables.
	var small [8]*Change // most transactions touch few tables
	in := interner{tables: small[:0]}
	size := headerLen + trailerLen + 64 + len(t.GTID) + len(t.Tenant) + len(t.Position.GTIDSet) + len(t.Position.File)
	for i := range t.Changes {
		c := &t.Changes[i]
		n, err := validateChange(c)
		if err != nil {
			return nil, fmt.Errorf("Changes[%d].%w", i, err)
		}
		size += n
		if known := len(in.tables); in.index(c) == known {
			size += 2*binary.MaxVarintLen32 + len(c.Schema) + len(c.Table) + 2*len(c.PK)
			for _, name := range c.Columns {
				size += 2 + len(name)
			}
		}
	}
	if start := len(b); cap(b)-start < size {
		nb := make([]byte, start, start+size)
		copy(nb, b)
		b = nb
	}

	start := len(b)
	b = append(b, magic0, magic1, FormatVersion, 0, 0, 0, 0)
	var flags byte
	if t.Last {
		flags |= flagLast
	}
	b = append(b, flags, t.Origin)
	b = binary.AppendUvarint(b, uint64(t.Fragment))
	b = binary.BigEndian.AppendUint64(b, uint64(t.Stamp))
	b = binary.AppendVarint(b, sec)
	b = binary.AppendUvarint(b, uint64(t.CommitTime.Nanosecond()))
	b = appendString(b, t.GTID)
	b = appendString(b, t.Tenant)
	b = appendString(b, t.Position.GTIDSet)
	b = appendString(b, t.Position.File)
	b = binary.AppendUvarint(b, uint64(t.Position.Offset))

	b = binary.AppendUvarint(b, uint64(len(in.tables)))
	for _, c := range in.tables {
		b = appendString(b, c.Schema)
		b = appendString(b, c.Table)
		b = binary.AppendUvarint(b, uint64(len(c.Columns)))
		for _, name := range c.Columns {
			b = appendString(b, name)
		}
		b = binary.AppendUvarint(b, uint64(len(c.PK)))
		for _, k := range c.PK {
			b = binary.AppendUvarint(b, uint64(k))
		}
	}

	// Pass 2: the changes.
	b = binary.AppendUvarint(b, uint64(len(t.Changes)))
	for i := range t.Changes {
		c := &t.Changes[i]
		b = binary.AppendUvarint(b, uint64(in.index(c)))
		b = append(b, byte(c.Op))
		b = binary.BigEndian.AppendUint64(b, uint64(c.Version))
		for j := range c.Row {
			b = appendValue(b, &c.Row[j])
		}
	}

	payload := len(b) - start - headerLen
	if uint64(payload) > math.MaxUint32 {
		return nil, fmt.Errorf("message is %d bytes, more than the format's 4 GiB", payload)
	}
	binary.BigEndian.PutUint32(b[start+3:], uint32(payload))
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b[start:], castagnoli)), nil
}

// validateChange checks c and returns an upper estimate of its encoded
// size (exact table interning aside).
func validateChange(c *Change) (int, error) {
	switch c.Op {
	case OpInsert, OpUpdate, OpDelete:
	default:
		return 0, fmt.Errorf("Op: invalid %s (want insert, update or delete)", c.Op)
	}
	if len(c.Row) != len(c.Columns) {
		return 0, fmt.Errorf("Row: %d values for %d Columns of %s.%s", len(c.Row), len(c.Columns), c.Schema, c.Table)
	}
	for j, k := range c.PK {
		if k < 0 || k >= len(c.Columns) {
			return 0, fmt.Errorf("PK[%d]: column index %d out of range [0, %d) of %s.%s", j, k, len(c.Columns), c.Schema, c.Table)
		}
	}
	size := binary.MaxVarintLen32 + 1 + 8 // table index, op, version
	for j := range c.Row {
		v := &c.Row[j]
		if !encodable(v.Kind) {
			return 0, fmt.Errorf("Row[%d].Kind: unknown kind %d (column %s)", j, v.Kind, c.Columns[j])
		}
		if v.Kind == KindFloat32 {
			if _, ok := float32Bits(v.Float); !ok {
				return 0, fmt.Errorf("Row[%d].Float: %v is not a float32 value (column %s)", j, v.Float, c.Columns[j])
			}
		}
		size += valueSize(v)
	}
	return size, nil
}

// valueSize is the exact encoded size of v.
func valueSize(v *Value) int {
	switch v.Kind {
	case KindNull:
		return 1
	case KindInt:
		return 1 + uvarintLen(uint64(v.Int)<<1^uint64(v.Int>>63))
	case KindUint, KindBit:
		return 1 + uvarintLen(v.Uint)
	case KindFloat32:
		return 1 + 4
	case KindFloat64:
		return 1 + 8
	case KindEnum, KindSet:
		return 1 + uvarintLen(v.Uint) + uvarintLen(uint64(len(v.Bytes))) + len(v.Bytes)
	}
	return 1 + uvarintLen(uint64(len(v.Bytes))) + len(v.Bytes)
}

func uvarintLen(x uint64) int { return (bits.Len64(x|1) + 6) / 7 }

// interner assigns each distinct (schema, table, columns, PK) an index in
// order of first appearance. Consecutive changes to one table hit the cache.
type interner struct {
	tables []*Change // the first change of each distinct table
	last   int
	byName map[[2]string][]int // once there are many tables
}

func (in *interner) index(c *Change) int {
	if len(in.tables) > 0 && sameTable(in.tables[in.last], c) {
		return in.last
	}
	if in.byName != nil {
		for _, i := range in.byName[[2]string{c.Schema, c.Table}] {
			if sameTable(in.tables[i], c) {
				in.last = i
				return i
			}
		}
	} else {
		for i, t := range in.tables {
			if sameTable(t, c) {
				in.last = i
				return i
			}
		}
	}
	in.tables = append(in.tables, c)
	in.last = len(in.tables) - 1
	switch {
	case in.byName != nil:
		k := [2]string{c.Schema, c.Table}
		in.byName[k] = append(in.byName[k], in.last)
	case len(in.tables) > 16:
		in.byName = make(map[[2]string][]int, 2*len(in.tables))
		for i, t := range in.tables {
			k := [2]string{t.Schema, t.Table}
			in.byName[k] = append(in.byName[k], i)
		}
	}
	return in.last
}

func sameTable(a, c *Change) bool {
	return a.Schema == c.Schema && a.Table == c.Table &&
		sameStrings(a.Columns, c.Columns) && sameInts(a.PK, c.PK)
}

func sameStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	if len(a) == 0 || &a[0] == &b[0] {
		return true
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func sameInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	if len(a) == 0 || &a[0] == &b[0] {
		return true
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendBytes(b, s []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// appendValue appends v, which validateChange accepted.
func appendValue(b []byte, v *Value) []byte {
	b = append(b, byte(v.Kind))
	switch v.Kind {
	case KindNull:
	case KindInt:
		b = binary.AppendVarint(b, v.Int)
	case KindUint, KindBit:
		b = binary.AppendUvarint(b, v.Uint)
	case KindFloat32:
		u, _ := float32Bits(v.Float)
		b = binary.BigEndian.AppendUint32(b, u)
	case KindFloat64:
		b = binary.BigEndian.AppendUint64(b, math.Float64bits(v.Float))
	case KindEnum, KindSet:
		b = binary.AppendUvarint(b, v.Uint)
		b = appendBytes(b, v.Bytes)
	case KindDecimal, KindString, KindBytes, KindDate, KindDateTime, KindTimestamp, KindTime, KindJSON:
		b = appendBytes(b, v.Bytes)
	default:
		// validateChange rejects every kind not listed above.
		panic(fmt.Sprintf("event: encode: kind %d passed validation but has no encoding", v.Kind))
	}
	return b
}

// encodable reports whether the codec has an encoding for k. It must agree
// with Kind.Valid (a test checks): a kind added to event.go needs a case
// here, in appendValue and in decoder.value, and a row in
// docs/wire-format.md.
func encodable(k Kind) bool {
	switch k {
	case KindNull, KindInt, KindUint, KindBit, KindFloat32, KindFloat64, KindEnum, KindSet,
		KindDecimal, KindString, KindBytes, KindDate, KindDateTime, KindTimestamp, KindTime, KindJSON:
		return true
	}
	return false
}

// float32Bits returns the IEEE-754 single-precision bits of f when f is
// exactly a float32 value. A NaN keeps its payload bit for bit (including a
// signaling NaN, which a hardware conversion would quiet).
func float32Bits(f float64) (uint32, bool) {
	if f != f {
		u := math.Float64bits(f)
		if u&(1<<29-1) != 0 {
			return 0, false
		}
		return uint32(u>>63)<<31 | 0xff<<23 | uint32(u>>29)&(1<<23-1), true
	}
	g := float32(f)
	if float64(g) != f {
		return 0, false
	}
	return math.Float32bits(g), true
}

// float32From is the inverse of float32Bits.
func float32From(u uint32) float64 {
	if u&(0xff<<23) == 0xff<<23 && u&(1<<23-1) != 0 { // NaN
		return math.Float64frombits(uint64(u>>31)<<63 | 0x7ff<<52 | uint64(u&(1<<23-1))<<29)
	}
	return float64(math.Float32frombits(u))
}

// Decode decodes one message written by Encode. b must hold exactly one
// message. Decode does not retain b: it copies the message once, and the
// Bytes of the returned values share that copy (each capped to its own
// length, so appending to one cannot overwrite another). The Changes of one
// table share one Columns and one PK slice; treat them as read-only.
//
// Values of the byte kinds always have non-nil Bytes (empty when the value
// was empty or nil), so that a database driver never binds an empty string
// as NULL; only KindNull is NULL. CommitTime is in UTC.
//
// Every error matches ErrCorrupt or ErrUnsupportedVersion and reads
// "event: decode: <what> at byte N: <why>".
func Decode(b []byte) (Txn, error) {
	if len(b) < headerLen+trailerLen {
		return Txn{}, decodeErr("message", len(b), "%d bytes, shorter than the %d-byte frame", len(b), headerLen+trailerLen)
	}
	if b[0] != magic0 || b[1] != magic1 {
		return Txn{}, decodeErr("magic", 0, "got %#02x %#02x, want %#02x %#02x (%q)", b[0], b[1], magic0, magic1, "TD")
	}
	if v := b[2]; v != FormatVersion {
		return Txn{}, &decodeError{what: "format version", off: 2,
			err: fmt.Errorf("%w %d (this build reads versions %v)", ErrUnsupportedVersion, v, supportedVersions)}
	}
	n := binary.BigEndian.Uint32(b[3:])
	if want := uint64(len(b) - headerLen - trailerLen); uint64(n) != want {
		return Txn{}, decodeErr("payload length", 3, "header says %d bytes, the message holds %d", n, want)
	}
	end := len(b) - trailerLen
	if got, want := crc32.Checksum(b[:end], castagnoli), binary.BigEndian.Uint32(b[end:]); got != want {
		return Txn{}, decodeErr("checksum", end, "CRC-32C of bytes 0..%d is %#08x, message says %#08x", end, got, want)
	}

	d := decoder{b: make([]byte, end), off: headerLen}
	copy(d.b, b[:end])
	return d.txn()
}

type decoder struct {
	b   []byte // the message up to the checksum (a private copy)
	off int
}

type decodeError struct {
	what string
	off  int
	err  error
}

func (e *decodeError) Error() string {
	return fmt.Sprintf("event: decode: %s at byte %d: %v", e.what, e.off, e.err)
}

func (e *decodeError) Unwrap() error { return e.err }

func (e *decodeError) Is(target error) bool {
	return target == ErrCorrupt && !errors.Is(e.err, ErrUnsupportedVersion)
}

func decodeErr(what string, off int, format string, args ...any) error {
	return &decodeError{what: what, off: off, err: fmt.Errorf(format, args...)}
}

func (d *decoder) remaining() int { return len(d.b) - d.off }

func (d *decoder) uvarint(what string) (uint64, error) {
	v, n := binary.Uvarint(d.b[d.off:])
	if n <= 0 {
		if n == 0 {
			return 0, decodeErr(what, d.off, "truncated varint")
		}
		return 0, decodeErr(what, d.off, "varint overflows 64 bits")
	}
	d.off += n
	return v, nil
}

func (d *decoder) varint(what string) (int64, error) {
	v, n := binary.Varint(d.b[d.off:])
	if n <= 0 {
		if n == 0 {
			return 0, decodeErr(what, d.off, "truncated varint")
		}
		return 0, decodeErr(what, d.off, "varint overflows 64 bits")
	}
	d.off += n
	return v, nil
}

// count reads a uvarint count of items each at least min bytes long and
// rejects one the rest of the message cannot hold.
func (d *decoder) count(what string, min int) (int, error) {
	at := d.off
	v, err := d.uvarint(what)
	if err != nil {
		return 0, err
	}
	if v > uint64(d.remaining()/min) {
		return 0, decodeErr(what, at, "%d items of at least %d bytes do not fit in the %d bytes left", v, min, d.remaining())
	}
	return int(v), nil
}

func (d *decoder) uint32(what string) (uint32, error) {
	at := d.off
	v, err := d.uvarint(what)
	if err != nil {
		return 0, err
	}
	if v > math.MaxUint32 {
		return 0, decodeErr(what, at, "%d overflows 32 bits", v)
	}
	return uint32(v), nil
}

func (d *decoder) fixed(what string, n int) ([]byte, error) {
	if d.remaining() < n {
		return nil, decodeErr(what, d.off, "need %d bytes, %d left", n, d.remaining())
	}
	p := d.b[d.off : d.off+n]
	d.off += n
	return p, nil
}

func (d *decoder) byte(what string) (byte, error) {
	p, err := d.fixed(what, 1)
	if err != nil {
		return 0, err
	}
	return p[0], nil
}

func (d *decoder) uint64(what string) (uint64, error) {
	p, err := d.fixed(what, 8)
	if err != nil {
		return 0, err
	}
	return binary.BigEndian.Uint64(p), nil
}

// bytes reads a length-prefixed byte string, aliasing d.b with its capacity
// capped. The result is never nil.
func (d *decoder) bytes(what string) ([]byte, error) {
	at := d.off
	n, err := d.uvarint(what)
	if err != nil {
		return nil, err
	}
	if n > uint64(d.remaining()) {
		return nil, decodeErr(what, at, "length %d exceeds the %d bytes left", n, d.remaining())
	}
	p := d.b[d.off : d.off+int(n) : d.off+int(n)]
	d.off += int(n)
	return p, nil
}

func (d *decoder) string(what string) (string, error) {
	p, err := d.bytes(what)
	return string(p), err
}

type table struct {
	schema, name string
	columns      []string
	pk           []int
}

func (d *decoder) txn() (Txn, error) {
	var t Txn
	at := d.off
	flags, err := d.byte("flags")
	if err != nil {
		return Txn{}, err
	}
	if flags&^knownFlags != 0 {
		return Txn{}, decodeErr("flags", at, "unknown flag bits %#02x", flags&^knownFlags)
	}
	t.Last = flags&flagLast != 0
	at = d.off
	if t.Origin, err = d.byte("origin"); err != nil {
		return Txn{}, err
	}
	if t.Origin == 0 {
		return Txn{}, decodeErr("origin", at, "site id 0 is reserved")
	}
	if t.Fragment, err = d.uint32("fragment"); err != nil {
		return Txn{}, err
	}
	stamp, err := d.uint64("stamp")
	if err != nil {
		return Txn{}, err
	}
	t.Stamp = hlc.Timestamp(stamp)
	at = d.off
	sec, err := d.varint("commit time seconds")
	if err != nil {
		return Txn{}, err
	}
	if sec < minCommitSec || sec > maxCommitSec {
		return Txn{}, decodeErr("commit time seconds", at, "%d is outside years 0001..9999", sec)
	}
	at = d.off
	nsec, err := d.uvarint("commit time nanoseconds")
	if err != nil {
		return Txn{}, err
	}
	if nsec >= 1e9 {
		return Txn{}, decodeErr("commit time nanoseconds", at, "%d is not below 1e9", nsec)
	}
	t.CommitTime = time.Unix(sec, int64(nsec)).UTC()
	if t.GTID, err = d.string("gtid"); err != nil {
		return Txn{}, err
	}
	if t.Tenant, err = d.string("tenant"); err != nil {
		return Txn{}, err
	}
	if t.Position.GTIDSet, err = d.string("position gtid set"); err != nil {
		return Txn{}, err
	}
	if t.Position.File, err = d.string("position file"); err != nil {
		return Txn{}, err
	}
	if t.Position.Offset, err = d.uint32("position offset"); err != nil {
		return Txn{}, err
	}

	ntables, err := d.count("table count", minTableLen)
	if err != nil {
		return Txn{}, err
	}
	tables := make([]table, ntables)
	for i := range tables {
		if err := d.table(i, &tables[i]); err != nil {
			return Txn{}, err
		}
	}

	nchanges, err := d.count("change count", minChangeLen)
	if err != nil {
		return Txn{}, err
	}
	if nchanges > 0 {
		t.Changes = make([]Change, nchanges)
	}
	var slab []Value
	for i := range t.Changes {
		c := &t.Changes[i]
		at := d.off
		ti, err := d.uvarint("change table index")
		if err != nil {
			return Txn{}, wrapIndex(err, "Changes", i)
		}
		if ti >= uint64(len(tables)) {
			return Txn{}, decodeErr(fmt.Sprintf("Changes[%d] table index", i), at, "%d out of range [0, %d)", ti, len(tables))
		}
		tb := &tables[ti]
		c.Schema, c.Table, c.Columns, c.PK = tb.schema, tb.name, tb.columns, tb.pk
		at = d.off
		op, err := d.byte("change op")
		if err != nil {
			return Txn{}, wrapIndex(err, "Changes", i)
		}
		c.Op = Op(op)
		switch c.Op {
		case OpInsert, OpUpdate, OpDelete:
		default:
			return Txn{}, decodeErr(fmt.Sprintf("Changes[%d] op", i), at, "invalid %s", c.Op)
		}
		v, err := d.uint64("change version")
		if err != nil {
			return Txn{}, wrapIndex(err, "Changes", i)
		}
		c.Version = hlc.Timestamp(v)

		n := len(tb.columns)
		if n == 0 {
			continue
		}
		// Every value takes at least its kind byte.
		if n > d.remaining() {
			return Txn{}, decodeErr(fmt.Sprintf("Changes[%d] row", i), d.off, "%d values do not fit in the %d bytes left", n, d.remaining())
		}
		if cap(slab)-len(slab) < n {
			// One slab for this and the following rows of the same
			// width, bounded by what the input can still hold.
			slab = make([]Value, 0, max(n, min((nchanges-i)*n, d.remaining())))
		}
		row := slab[len(slab) : len(slab)+n : len(slab)+n]
		slab = slab[:len(slab)+n]
		for j := range row {
			if err := d.value(&row[j]); err != nil {
				return Txn{}, wrapIndex(wrapIndex(err, "Row", j), "Changes", i)
			}
		}
		c.Row = row
	}
	if d.remaining() != 0 {
		return Txn{}, decodeErr("end of payload", d.off, "%d unexpected trailing bytes", d.remaining())
	}
	return t, nil
}

// wrapIndex prefixes the "what" of a decode error with a container index,
// e.g. "kind" → "Row[2] kind" → "Changes[3] Row[2] kind".
func wrapIndex(err error, name string, i int) error {
	var de *decodeError
	if errors.As(err, &de) {
		de.what = fmt.Sprintf("%s[%d] %s", name, i, de.what)
	}
	return err
}

func (d *decoder) table(i int, tb *table) error {
	var err error
	if tb.schema, err = d.string("schema"); err != nil {
		return wrapIndex(err, "tables", i)
	}
	if tb.name, err = d.string("table name"); err != nil {
		return wrapIndex(err, "tables", i)
	}
	ncols, err := d.count("column count", 1)
	if err != nil {
		return wrapIndex(err, "tables", i)
	}
	if ncols > 0 {
		tb.columns = make([]string, ncols)
	}
	for j := range tb.columns {
		if tb.columns[j], err = d.string("column name"); err != nil {
			return wrapIndex(wrapIndex(err, "columns", j), "tables", i)
		}
	}
	npk, err := d.count("primary key length", 1)
	if err != nil {
		return wrapIndex(err, "tables", i)
	}
	if npk > 0 {
		tb.pk = make([]int, npk)
	}
	for j := range tb.pk {
		at := d.off
		k, err := d.uvarint("primary key column index")
		if err != nil {
			return wrapIndex(wrapIndex(err, "PK", j), "tables", i)
		}
		if k >= uint64(ncols) {
			return decodeErr(fmt.Sprintf("tables[%d] PK[%d]", i, j), at, "column index %d out of range [0, %d)", k, ncols)
		}
		tb.pk[j] = int(k)
	}
	return nil
}

func (d *decoder) value(v *Value) error {
	at := d.off
	k, err := d.byte("kind")
	if err != nil {
		return err
	}
	v.Kind = Kind(k)
	switch v.Kind {
	case KindNull:
	case KindInt:
		v.Int, err = d.varint("int")
	case KindUint, KindBit:
		v.Uint, err = d.uvarint("uint")
	case KindFloat32:
		var p []byte
		if p, err = d.fixed("float32", 4); err == nil {
			v.Float = float32From(binary.BigEndian.Uint32(p))
		}
	case KindFloat64:
		var u uint64
		if u, err = d.uint64("float64"); err == nil {
			v.Float = math.Float64frombits(u)
		}
	case KindEnum, KindSet:
		if v.Uint, err = d.uvarint("enum/set number"); err == nil {
			v.Bytes, err = d.bytes("enum/set label")
		}
	case KindDecimal, KindString, KindBytes, KindDate, KindDateTime, KindTimestamp, KindTime, KindJSON:
		v.Bytes, err = d.bytes("bytes")
	default:
		return decodeErr("kind", at, "unknown kind %d", k)
	}
	return err
}
