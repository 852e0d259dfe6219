package config

import (
	"strings"
	"testing"
)

func TestTenantsSection(t *testing.T) {
	base := "site: {id: 1, name: a}\ndatabase: {user: root}\nreader: {server_id: 7}\nkafka: {brokers: [\"127.0.0.1:9092\"]}\nstate_dir: /tmp/x\nadmin: {allow_no_token: true}\n"
	good := base + `tenants:
  redis: {addr: "127.0.0.1:6379", key_prefix: "t:"}
  reload_interval: 2s
  rules:
    - {schema: shop, table: "*", column: tenant_id}
    - {schema_pattern: 'tenant_(\w+)'}
  metrics_tenants: [acme]
`
	c, err := Parse([]byte(good), envMap(map[string]string{EnvRedisPassword: "s3cret"}))
	if err != nil {
		t.Fatal(err)
	}
	if !c.Tenants.Enabled() || len(c.Tenants.Rules) != 2 || c.Tenants.Rules[1].SchemaPattern != `tenant_(\w+)` ||
		c.Tenants.Redis.Password.Reveal() != "s3cret" || c.Tenants.ReloadInterval.Duration().Seconds() != 2 {
		t.Fatalf("parsed %+v", c.Tenants)
	}
	if strings.Contains(c.Redacted().Tenants.Redis.Password.Reveal(), "s3cret") {
		t.Fatal("Redacted keeps the Redis password")
	}
	bad := base + `tenants:
  redis: {addr: "nohost"}
  reload_interval: 1ms
  rules:
    - {schema: shop}
    - {schema_pattern: 'tenant_\w+'}
    - {schema: shop, colum: x}
`
	_, err = Parse([]byte(bad), nil)
	if err == nil {
		t.Fatal("bad tenants section accepted")
	}
	for _, want := range []string{"tenants.redis.addr", "tenants.reload_interval", "tenants.rules[0]", "neither column nor schema_pattern",
		"tenants.rules[1]", "no capture group", "tenants.rules[2].colum", "did you mean column"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}
