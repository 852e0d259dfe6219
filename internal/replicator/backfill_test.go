package replicator

import (
	"bytes"
	"context"
	"reflect"
	"strings"
	"testing"
)

func TestAfterKey(t *testing.T) {
	if got, want := afterKey([]string{"`a`"}), "(`a` > ?)"; got != want {
		t.Errorf("afterKey(a) = %s, want %s", got, want)
	}
	if got, want := afterKey([]string{"`a`", "`b`", "`c`"}), "(`a` > ?) OR (`a` = ? AND `b` > ?) OR (`a` = ? AND `b` = ? AND `c` > ?)"; got != want {
		t.Errorf("afterKey(a, b, c) = %s, want %s", got, want)
	}
	if got, want := afterArgs([]any{1, "x", 3}), []any{1, 1, "x", 1, "x", 3}; !reflect.DeepEqual(got, want) {
		t.Errorf("afterArgs = %v, want %v", got, want)
	}
}

// TestBackfillRejectsBadArguments: bad flags are refused before anything
// connects, naming what is allowed.
func TestBackfillRejectsBadArguments(t *testing.T) {
	env := func(string) string { return "" }
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--chunk", "0"}, "--chunk 0: allowed 1..100000"},
		{[]string{"--chunk", "100001"}, "--chunk 100001: allowed 1..100000"},
		{[]string{"--rate", "-5"}, "--rate -5: allowed 0 (no limit) or a positive number"},
		{[]string{"--chunk", "x"}, `invalid value "x" for flag -chunk`},
	} {
		var out, errb bytes.Buffer
		args := append([]string{"backfill", "--config", "../../configs/site-a.yaml"}, tt.args...)
		if code := Main(context.Background(), args, env, &out, &errb); code != 2 || !strings.Contains(errb.String(), tt.want) {
			t.Errorf("%v: code %d, stderr %q; want 2 and %q", tt.args, code, errb.String(), tt.want)
		}
	}
}
