package binlog

import (
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestGlobMatch(t *testing.T) {
	for _, tc := range []struct {
		pat, name string
		want      bool
	}{
		{"*", "", true},
		{"*", "anything", true},
		{"shop", "shop", true},
		{"shop", "shops", false},
		{"shop*", "shop_eu", true},
		{"*_log", "audit_log", true},
		{"*_log", "audit_logs", false},
		{"a*b*c", "abc", true},
		{"a*b*c", "aXbYbZc", true},
		{"a*b*c", "aXbYc_", false},
		{"**", "x", true},
		{"", "", true},
		{"", "x", false},
	} {
		if got := globMatch(tc.pat, tc.name); got != tc.want {
			t.Errorf("globMatch(%q, %q) = %v, want %v", tc.pat, tc.name, got, tc.want)
		}
	}
}

func TestFilter(t *testing.T) {
	f, err := newFilter([]string{"shop.*", "*.audit_log"}, []string{"shop.tmp_*"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		schema, table string
		want          bool
	}{
		{"shop", "orders", true},
		{"crm", "audit_log", true},
		{"crm", "users", false},
		{"shop", "tmp_x", false},
		{"shopx", "orders", false}, // * does not cross the dot
	} {
		if got := f.allows(tc.schema, tc.table); got != tc.want {
			t.Errorf("allows(%s.%s) = %v, want %v", tc.schema, tc.table, got, tc.want)
		}
	}
	all, _ := newFilter(nil, []string{"*.secret"})
	if !all.allows("a", "b") || all.allows("a", "secret") {
		t.Error("empty Include must allow everything not excluded")
	}
}

func TestPatternValidation(t *testing.T) {
	for _, p := range []string{"shop", "shop.", ".t", "a.b.c", "`a`.b", "a.b?", ""} {
		if err := validPattern(p); err == nil {
			t.Errorf("pattern %q accepted", p)
		} else if !strings.Contains(err.Error(), "schema") && !strings.Contains(err.Error(), "character") {
			t.Errorf("pattern %q: unhelpful error %v", p, err)
		}
	}
	for _, p := range []string{"shop.*", "*.*", "*.audit_log", "a_b.c-d"} {
		if err := validPattern(p); err != nil {
			t.Errorf("pattern %q rejected: %v", p, err)
		}
	}
}

// FuzzGlobMatch checks globMatch against a regular-expression reference.
func FuzzGlobMatch(f *testing.F) {
	f.Add("a*b*c", "aXbYc")
	f.Add("*", "")
	f.Add("x**y", "xy")
	f.Add("*a*", "bbb")
	f.Fuzz(func(t *testing.T, pat, name string) {
		if len(pat) > 64 || len(name) > 64 {
			return
		}
		var re strings.Builder
		re.WriteString(`(?s)\A`)
		for _, part := range strings.Split(pat, "*") {
			re.WriteString(regexp.QuoteMeta(part))
			re.WriteString(".*")
		}
		ref := strings.TrimSuffix(re.String(), ".*") + `\z`
		// regexp works on UTF-8 runes; compare on valid UTF-8 only, where
		// byte and rune matching agree.
		if !utf8.ValidString(pat) || !utf8.ValidString(name) {
			globMatch(pat, name) // must not panic
			return
		}
		want := regexp.MustCompile(ref).MatchString(name)
		if got := globMatch(pat, name); got != want {
			t.Fatalf("globMatch(%q, %q) = %v, regexp %s says %v", pat, name, got, ref, want)
		}
	})
}
