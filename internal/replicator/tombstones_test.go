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

// TestSameSiteOf: the reconciler compares a row with another site's
// tombstone unless its tenant's policy ranks a home site first (home-only
// mode or the home-wins policy).
func TestSameSiteOf(t *testing.T) {
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
		{ID: "a", Mode: tenant.ModeActiveActive},
		{ID: "p", Mode: tenant.ModePaused},
	})
	for _, c := range []struct {
		table schema.TableRef
		want  sink.SameSite
	}{
		{schema.TableRef{Schema: "shop", Table: "orders"}, sink.SameSite{Column: "tenant_id", Tenants: []string{"h", "w"}}},
		{schema.TableRef{Schema: "tenant_h", Table: "orders"}, sink.SameSite{All: true}},
		{schema.TableRef{Schema: "tenant_a", Table: "orders"}, sink.SameSite{}},
		{schema.TableRef{Schema: "tenant_new", Table: "orders"}, sink.SameSite{}}, // no entry: active-active
		{schema.TableRef{Schema: "other", Table: "t"}, sink.SameSite{}},           // global tenant
	} {
		got := sameSiteOf(snap, res)(c.table)
		slices.Sort(got.Tenants)
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: %+v; want %+v", c.table, got, c.want)
		}
	}
	// Without a snapshot yet every tenant has the default rule.
	if got := sameSiteOf(nil, res)(schema.TableRef{Schema: "shop", Table: "orders"}); len(got.Tenants) != 0 || got.All {
		t.Errorf("no snapshot: %+v; want no rows named", got)
	}
}
