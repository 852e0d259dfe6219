package config

import (
	"fmt"
	"path"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Duration is a time.Duration written in YAML as a string with a unit
// ("100ms", "30s", "1m30s"). A bare number is refused, because "5" could
// mean seconds or nanoseconds; only "0" needs no unit.
type Duration time.Duration

// Duration converts d to a time.Duration.
func (d Duration) Duration() time.Duration { return time.Duration(d) }

// String formats d like time.Duration.
func (d Duration) String() string { return time.Duration(d).String() }

// MarshalYAML writes d as a string with a unit.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// MarshalText writes d as a string with a unit (JSON, zap).
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

const durationAllowed = `a duration with a unit such as "100ms", "30s" or "1m30s" (units: ns, us, ms, s, m, h)`

// UnmarshalYAML parses a duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("want %s, got %s", durationAllowed, describeNode(n, false))
	}
	if n.Value == "0" {
		*d = 0
		return nil
	}
	if n.ShortTag() != "!!str" {
		return fmt.Errorf("want %s, got %s", durationAllowed, describeNode(n, false))
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("want %s, got %s", durationAllowed, describeNode(n, false))
	}
	*d = Duration(v)
	return nil
}

// redacted replaces a secret in Redacted and in every printed form.
const redacted = "***"

// Secret is a string that never prints: fmt (%v, %s, %q, %#v...), YAML,
// JSON and zap's reflection encoder all see "***" (or "" when empty, so an
// unset secret stays visibly unset). Reveal returns the value.
type Secret string

// Reveal returns the secret itself. Call it only where the value is used
// (a DSN, a token comparison), never to log.
func (s Secret) Reveal() string { return string(s) }

// String implements fmt.Stringer.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return redacted
}

// GoString implements fmt.GoStringer (%#v).
func (s Secret) GoString() string { return fmt.Sprintf("config.Secret(%q)", s.String()) }

// Format implements fmt.Formatter, so that no verb (%x, %d...) bypasses
// String.
func (s Secret) Format(f fmt.State, verb rune) {
	switch verb {
	case 'q':
		fmt.Fprintf(f, "%q", s.String())
	case 'v':
		if f.Flag('#') {
			fmt.Fprint(f, s.GoString())
			return
		}
		fmt.Fprint(f, s.String())
	default:
		fmt.Fprint(f, s.String())
	}
}

// MarshalYAML writes "***".
func (s Secret) MarshalYAML() (any, error) { return s.String(), nil }

// MarshalText writes "***" (JSON, zap).
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// systemSchemas are never replicated: they hold the server's own state.
var systemSchemas = map[string]bool{
	"mysql":              true,
	"information_schema": true,
	"performance_schema": true,
	"sys":                true,
}

const tablePatternAllowed = `"schema.table" where either part may use the glob characters *, ? and [a-z], e.g. "shop.orders", "shop.*", "tenant_*.*"`

// MatchTable reports whether schema.table matches pattern, a
// "schema.table" pattern whose parts are path.Match globs. Matching is
// case-sensitive, like table names on Linux. A malformed pattern matches
// nothing (Validate reports it).
func MatchTable(pattern, schemaName, table string) bool {
	sp, tp, ok := strings.Cut(pattern, ".")
	if !ok {
		return false
	}
	ms, err := path.Match(sp, schemaName)
	if err != nil || !ms {
		return false
	}
	mt, err := path.Match(tp, table)
	return err == nil && mt
}

// checkTablePattern explains what is wrong with a table pattern, or returns
// "" when it is well formed.
func checkTablePattern(p string) string {
	sp, tp, ok := strings.Cut(p, ".")
	switch {
	case !ok:
		return fmt.Sprintf("%q has no '.'; want %s", p, tablePatternAllowed)
	case strings.Contains(tp, "."):
		return fmt.Sprintf("%q has more than one '.'; want %s", p, tablePatternAllowed)
	case sp == "" || tp == "":
		return fmt.Sprintf("%q has an empty schema or table part; want %s", p, tablePatternAllowed)
	case strings.ContainsAny(p, "/` \t\n"):
		return fmt.Sprintf("%q contains '/', '`' or white space; want %s", p, tablePatternAllowed)
	}
	for _, part := range []string{sp, tp} {
		if _, err := path.Match(part, ""); err != nil {
			return fmt.Sprintf("%q is not a valid glob (%v); want %s", p, err, tablePatternAllowed)
		}
	}
	return ""
}
