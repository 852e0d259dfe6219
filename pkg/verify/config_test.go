package verify

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// exampleConfig is the example of docs/verifier.md.
const exampleConfig = `
sites:
  - {name: a, id: 1, host: 10.0.0.1, port: 3306, user: tandem_verifier}
  - {name: b, id: 2, host: 10.0.0.2, port: 3306, user: tandem_verifier}
meta_schema: tandem
tenants:
  - {name: "", class: default}
  - {name: acme, class: gold}
probe:
  rate: 10
  poll_interval: 25ms
check:
  tables: ["shop.*"]
  chunk_time: 200ms
slos:
  default: {lag_p99: 1s, rpo_max_window: 5s, rto_max: 30s, recovery_samples: 10}
  classes:
    gold: {lag_p99: 250ms, rpo_max_writes: 50, rto_max: 10s}
admin: {listen: "127.0.0.1:9190"}
`

func TestParseConfig(t *testing.T) {
	env := map[string]string{
		"TANDEM_VERIFIER_A_PASSWORD":  "pa",
		"TANDEM_VERIFIER_ADMIN_TOKEN": "0123456789abcdef0123",
	}
	c, err := ParseConfig([]byte(exampleConfig), func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if c.Sites[0].Password.Reveal() != "pa" || c.Sites[1].Password != "" || c.Admin.Token.Reveal() != env["TANDEM_VERIFIER_ADMIN_TOKEN"] {
		t.Fatalf("secrets: %+v", c.Sites)
	}
	if c.Probe.WriteTimeout.Duration() != time.Second || c.Check.Retries != DefaultRetries {
		t.Fatalf("defaults lost: %+v %+v", c.Probe, c.Check)
	}
	gold := c.SLOFor("acme")
	if gold.LagP99.Duration() != 250*time.Millisecond || gold.FaultLag.Duration() != 250*time.Millisecond ||
		gold.RTOMax.Duration() != 10*time.Second || gold.RPOMaxWrites != 50 ||
		gold.RPOMaxWindow.Duration() != 5*time.Second || gold.RecoverySamples != 10 {
		t.Fatalf("gold SLO %+v", gold)
	}
	if def := c.SLOFor(""); def.FaultLag.Duration() != time.Second || def.RPOMaxWrites != 0 {
		t.Fatalf("default SLO %+v", def)
	}
	if got := c.ProbeTenants(); len(got) != 2 || got[1] != "acme" {
		t.Fatalf("tenants %q", got)
	}
	if s := c.Sites[0].DSN(); !strings.Contains(s, "utf8mb4_bin") || !strings.Contains(s, "time_zone") {
		t.Fatalf("DSN %s", s)
	}
}

func TestParseConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		want       []string
	}{
		{"unknown field", "sites: []\nprobe: {rat: 5}\n", []string{"line 2", "rat"}},
		{"bare duration", "probe: {poll_interval: 25}\n", []string{"line 1", "unit"}},
		{"everything wrong", `
sites:
  - {name: A, id: 0, host: "", port: 0}
  - {name: b, id: 2, host: h, port: 3306, user: u}
  - {name: b, id: 2, host: h, port: 3306, user: u}
meta_schema: "bad name"
tenants: [{name: x, class: platinum}]
probe: {rate: 0}
check: {tables: ["noschema"], chunk_rows: 0, tenant_column: t}
slos: {default: {lag_p99: 0s, recovery_samples: 0}}
admin: {listen: "127.0.0.1:9190"}
`, []string{
			`sites[0].name: "A" is not allowed`, "sites[0].id: required", "sites[0].host: required", "sites[0].port: 0 is out of range",
			"sites[0].user: required", `sites[2].name: "b" is also sites[1]`, "sites[2].id: 2 is also sites[1]",
			"meta_schema:", `tenants[0].class: "platinum" is not a class`, "probe.rate:", `check.tables[0]: "noschema"`,
			"check.chunk_rows:", "check.tenant_column: tenant_column and tenant go together", "slos.default.lag_p99:",
			"slos.default.recovery_samples:", "admin.token: required",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tc.yaml), nil)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not mention %q:\n%v", w, err)
				}
			}
			var ce *ConfigError
			if tc.name == "everything wrong" && (!errors.As(err, &ce) || len(ce.Problems) != len(tc.want)) {
				t.Errorf("want %d problems, got:\n%v", len(tc.want), err)
			}
		})
	}
}
