package replicator

import (
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/tandemdb/tandem/pkg/schema"
	"github.com/tandemdb/tandem/pkg/sink"
	"github.com/tandemdb/tandem/pkg/tenant"
)

// TestHomeRowsOf: the reconciler ranks a row and its tombstone under the
// home policy of the row's tenant (home-only mode or the home-wins policy),
// by home site; other tenants' rows by the rule alone.
func TestHomeRowsOf(t *testing.T) {
	res, err := tenant.NewResolver([]tenant.Rule{
		{Schema: "shop", Table: "*", Column: "tenant_id"},
		{SchemaPattern: `tenant_(\w+)`, Table: "*"},
	})
	if err != nil {
		t.Fatal(err)
	}
	snap := tenant.NewSnapshot(7, time.Time{}, []tenant.Tenant{
		{ID: "h", Mode: tenant.ModeHomeOnly, HomeSite: 1},
		{ID: "w", ConflictPolicy: tenant.PolicyHomeWins, HomeSite: 2},
		{ID: "x", Mode: tenant.ModeHomeOnly, HomeSite: 1},
		{ID: "a", Mode: tenant.ModeActiveActive},
		{ID: "p", Mode: tenant.ModePaused},
	})
	for _, c := range []struct {
		table schema.TableRef
		want  sink.HomeRows
	}{
		{schema.TableRef{Schema: "shop", Table: "orders"}, sink.HomeRows{Column: "tenant_id", Tenants: map[uint8][]string{1: {"h", "x"}, 2: {"w"}}}},
		{schema.TableRef{Schema: "tenant_h", Table: "orders"}, sink.HomeRows{Site: 1}},
		{schema.TableRef{Schema: "tenant_w", Table: "orders"}, sink.HomeRows{Site: 2}},
		{schema.TableRef{Schema: "tenant_a", Table: "orders"}, sink.HomeRows{}},
		{schema.TableRef{Schema: "tenant_new", Table: "orders"}, sink.HomeRows{}}, // no entry: active-active
		{schema.TableRef{Schema: "other", Table: "t"}, sink.HomeRows{}},           // global tenant
	} {
		got := homeRowsOf(snap, res)(c.table)
		for _, ids := range got.Tenants {
			slices.Sort(ids)
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: %+v; want %+v", c.table, got, c.want)
		}
	}
	// Without a snapshot yet every tenant has the default rule.
	if got := homeRowsOf(nil, res)(schema.TableRef{Schema: "shop", Table: "orders"}); len(got.Tenants) != 0 || got.Site != 0 {
		t.Errorf("no snapshot: %+v; want no rows named", got)
	}
}
