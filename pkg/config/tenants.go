package config

import (
	"fmt"
	"slices"
	"time"

	"github.com/tandemdb/tandem/pkg/tenant"
)

// EnvRedisPassword and EnvRedisPasswordFile give the tenant registry's
// Redis password.
const (
	EnvRedisPassword     = "TANDEM_REDIS_PASSWORD"
	EnvRedisPasswordFile = "TANDEM_REDIS_PASSWORD_FILE"
)

// Tenants configures tenant resolution and the tenant registry
// (docs/tenants.md). With no rules every change belongs to the global
// tenant; with no redis.addr there is no registry and every tenant is
// active-active without limits.
type Tenants struct {
	Redis TenantsRedis `yaml:"redis"`
	// ReloadInterval is the period of the registry's full reload, which
	// heals missed pub/sub notices.
	ReloadInterval Duration `yaml:"reload_interval"`
	// Rules map tables to tenants, first match wins; unmatched tables
	// belong to the global tenant. Every site must hold the same rules.
	Rules []tenant.Rule `yaml:"rules,omitempty"`
	// MetricsMaxTenants bounds the tenant label of metrics; later tenants
	// count as "_other". MetricsTenants always get their own label.
	MetricsMaxTenants int      `yaml:"metrics_max_tenants"`
	MetricsTenants    []string `yaml:"metrics_tenants,omitempty"`
}

// TenantsRedis is the registry's Redis server.
type TenantsRedis struct {
	Addr string `yaml:"addr"`
	// Password is best given by TANDEM_REDIS_PASSWORD or a file.
	Password     Secret `yaml:"password,omitempty"`
	PasswordFile string `yaml:"password_file,omitempty"`
	DB           int    `yaml:"db"`
	// KeyPrefix is prepended to every registry key and the channel, so
	// that several Tandem deployments can share one Redis.
	KeyPrefix string `yaml:"key_prefix"`
}

// check validates a Redis server's settings under path (an empty addr is
// the caller's business: optional for the registry, required for HA).
func (r *TenantsRedis) check(ps *problems, path string) {
	if r.Addr != "" {
		checkHostPort(ps, path+".addr", r.Addr, "127.0.0.1:6379", false)
	}
	checkInt(ps, path+".db", r.DB, 0, 15)
	if len(r.KeyPrefix) > 200 {
		ps.add(path+".key_prefix", "is %d characters long; allowed at most 200", len(r.KeyPrefix))
	}
}

// Enabled reports whether a registry is configured.
func (t *Tenants) Enabled() bool { return t.Redis.Addr != "" }

// DefaultTenantsKeyPrefix is tenants.redis.key_prefix's default.
const DefaultTenantsKeyPrefix = "tandem:"

func defaultTenants() Tenants {
	return Tenants{
		Redis:             TenantsRedis{KeyPrefix: DefaultTenantsKeyPrefix},
		ReloadInterval:    Duration(10 * time.Second),
		MetricsMaxTenants: 100,
	}
}

func (t *Tenants) check(ps *problems) {
	t.Redis.check(ps, "tenants.redis")
	checkDuration(ps, "tenants.reload_interval", t.ReloadInterval, 100*time.Millisecond, time.Hour)
	for i, r := range t.Rules {
		if err := r.Check(); err != nil {
			ps.add(fmt.Sprintf("tenants.rules[%d]", i), "%v; allowed {schema: GLOB, table: GLOB, column: NAME} or {schema_pattern: REGEXP-WITH-ONE-GROUP, table: GLOB}", err)
		}
	}
	checkInt(ps, "tenants.metrics_max_tenants", t.MetricsMaxTenants, 0, 10_000)
	for i, id := range t.MetricsTenants {
		if err := tenant.CheckID(id); err != nil {
			ps.add(fmt.Sprintf("tenants.metrics_tenants[%d]", i), "%v", err)
		}
	}
}

func (t Tenants) clone() Tenants {
	t.Rules = slices.Clone(t.Rules)
	t.MetricsTenants = slices.Clone(t.MetricsTenants)
	return t
}
