package config

import "time"

// EnvHARedisPassword and EnvHARedisPasswordFile give the lease Redis's
// password.
const (
	EnvHARedisPassword     = "TANDEM_HA_REDIS_PASSWORD"
	EnvHARedisPasswordFile = "TANDEM_HA_REDIS_PASSWORD_FILE"
)

// HA configures site-level high availability (pkg/lease, docs/operations.md
// "High availability"): several replicators of one site with the same
// configuration (each its own state_dir), of which the one holding the
// site's lease in Redis replicates and the others stand by. The tenant
// queues then live in the site's database (_tandem_state).
type HA struct {
	Enabled bool `yaml:"enabled"`
	// Redis holds the lease, its fencing epochs and the leader's reader
	// checkpoint; it needs persistence (appendonly) in production. (The
	// tenant queues move to the site database's _tandem_state table.)
	Redis TenantsRedis `yaml:"redis"`
	// LeaseTTL is how long a lease lives without renewal: how long a
	// standby waits after a leader died without releasing it.
	LeaseTTL Duration `yaml:"lease_ttl"`
	// RenewInterval is how often the leader renews, and how often a
	// standby tries to take the lease. At most a third of LeaseTTL.
	RenewInterval Duration `yaml:"renew_interval"`
	// Holder names this replicator in the lease; default host name and
	// process id.
	Holder string `yaml:"holder,omitempty"`
}

func defaultHA() HA {
	return HA{
		Redis:         TenantsRedis{KeyPrefix: DefaultTenantsKeyPrefix},
		LeaseTTL:      Duration(10 * time.Second),
		RenewInterval: Duration(2 * time.Second),
	}
}

func (c *Config) checkHA(ps *problems) {
	h := &c.HA
	if !h.Enabled {
		return
	}
	if h.Redis.Addr == "" {
		ps.add("ha.redis.addr", "required with ha.enabled; allowed host:port of the Redis server holding the lease, e.g. \"redis:6379\"")
	}
	h.Redis.check(ps, "ha.redis")
	checkDuration(ps, "ha.lease_ttl", h.LeaseTTL, time.Second, 5*time.Minute)
	checkDuration(ps, "ha.renew_interval", h.RenewInterval, 100*time.Millisecond, time.Minute)
	if h.RenewInterval.Duration()*3 > h.LeaseTTL.Duration() {
		ps.add("ha.renew_interval", "%s is more than a third of ha.lease_ttl (%s); allowed at most a third, so that a leader renews several times before its lease could expire",
			h.RenewInterval, h.LeaseTTL)
	}
	if len(h.Holder) > 200 {
		ps.add("ha.holder", "is %d characters long; allowed at most 200", len(h.Holder))
	}
}
