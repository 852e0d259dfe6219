package config

import (
	"strings"
	"testing"
)

func TestHASection(t *testing.T) {
	good := minimalYAML + "ha: {enabled: true, redis: {addr: \"127.0.0.1:6379\"}, lease_ttl: 6s, renew_interval: 1s}\n"
	c, err := Parse([]byte(good), envMap(map[string]string{EnvHARedisPassword: "ha-s3cret"}))
	if err != nil {
		t.Fatal(err)
	}
	if !c.HA.Enabled || c.HA.Redis.Password.Reveal() != "ha-s3cret" || c.HA.LeaseTTL.Duration().Seconds() != 6 || c.HA.Redis.KeyPrefix != DefaultTenantsKeyPrefix {
		t.Fatalf("ha %+v", c.HA)
	}
	if strings.Contains(c.Redacted().HA.Redis.Password.Reveal(), "ha-s3cret") {
		t.Fatal("Redacted keeps the HA Redis password")
	}
	if c, err := Parse([]byte(minimalYAML), noEnv); err != nil || c.HA.Enabled {
		t.Fatalf("default: %v, enabled %t", err, c.HA.Enabled)
	}
	for _, tt := range []struct {
		name, yaml string
		want       []string
	}{
		{"no redis", "ha: {enabled: true}\n", []string{"ha.redis.addr: required with ha.enabled"}},
		{"renew too slow", "ha: {enabled: true, redis: {addr: \"r:6379\"}, lease_ttl: 3s, renew_interval: 2s}\n",
			[]string{"ha.renew_interval: 2s is more than a third of ha.lease_ttl (3s)"}},
		{"ttl too short", "ha: {enabled: true, redis: {addr: \"r:6379\"}, lease_ttl: 100ms, renew_interval: 100ms}\n",
			[]string{"ha.lease_ttl"}},
		{"bad addr", "ha: {enabled: true, redis: {addr: \"nohost\"}}\n", []string{"ha.redis.addr"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(minimalYAML+tt.yaml), noEnv)
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}
