package config

import (
	"maps"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
)

// DSN returns the go-sql-driver DSN of the database, without a default
// database (Tandem always qualifies table names). It fixes what the sink and
// verifier rely on: utf8mb4 with the binary collation (byte-exact
// comparisons), times in UTC on both sides (loc=UTC, time_zone '+00:00'),
// server-side placeholders (interpolateParams=false), time values as raw
// text (parseTime=false), one statement per query, the configured
// timeouts; then Params.
//
// The DSN holds the password: never log it. Log Redacted().Database.DSN().
func (d Database) DSN() string { return d.dsn(false) }

// SinkDSN is DSN with several statements allowed per query
// (multiStatements=true): the sink sends a batch's writes in one round
// trip. Its statements are built as text with every value quoted by the
// sink; placeholders stay server-side.
func (d Database) SinkDSN() string { return d.dsn(true) }

func (d Database) dsn(multiStatements bool) string {
	cfg := mysql.NewConfig()
	cfg.User = d.User
	cfg.Passwd = d.Password.Reveal()
	cfg.Net = "tcp"
	cfg.Addr = d.Addr()
	cfg.Loc = time.UTC
	cfg.ParseTime = false
	cfg.InterpolateParams = false
	cfg.MultiStatements = multiStatements
	cfg.Timeout = d.ConnectTimeout.Duration()
	cfg.ReadTimeout = d.ReadTimeout.Duration()
	cfg.WriteTimeout = d.WriteTimeout.Duration()
	// Charset makes the driver send SET NAMES utf8mb4 COLLATE utf8mb4_bin
	// on connect, which servers honour even when they ignore the
	// handshake's collation id.
	_ = cfg.Apply(mysql.Charset("utf8mb4", "utf8mb4_bin"))
	// Params on a mysql.Config are session variables, sent as SET
	// name=value: the value must be an SQL literal.
	cfg.Params = map[string]string{"time_zone": "'+00:00'"}
	var b strings.Builder
	b.WriteString(cfg.FormatDSN())
	// User params go through the DSN text so that the driver interprets
	// its own (tls, maxAllowedPacket...) and passes the rest as session
	// variables. FormatDSN always wrote a '?' (charset is set).
	for _, k := range sortedKeys(d.Params) {
		if _, reserved := reservedParams[k]; reserved {
			continue
		}
		b.WriteString("&")
		b.WriteString(k)
		b.WriteString("=")
		b.WriteString(url.QueryEscape(d.Params[k]))
	}
	return b.String()
}

func sortedKeys(m map[string]string) []string {
	return slices.Sorted(maps.Keys(m))
}
