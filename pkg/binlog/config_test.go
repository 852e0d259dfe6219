package binlog

import (
	"strings"
	"testing"
	"time"

	"github.com/tandemdb/tandem/pkg/schema"
)

func validConfig() Config {
	return Config{Host: "127.0.0.1", Port: 3306, User: "tandem", ServerID: 9001, Site: 1}
}

func TestValidateDefaults(t *testing.T) {
	c := validConfig()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Flavor != FlavorMariaDB || c.VersionColumn != schema.DefaultVersionColumn || c.MetaSchema != schema.DefaultMetaSchema ||
		c.MaxFragmentChanges != 1000 || c.MaxFragmentBytes != 4<<20 ||
		c.ReconnectMin != 100*time.Millisecond || c.ReconnectMax != 10*time.Second {
		t.Fatalf("defaults not applied: %+v", c)
	}
}

func TestValidateNamesBadFields(t *testing.T) {
	for _, tc := range []struct {
		mut  func(*Config)
		want []string
	}{
		{func(c *Config) { c.Host = "" }, []string{"Host"}},
		{func(c *Config) { c.Port = 70000 }, []string{"Port", "1..65535"}},
		{func(c *Config) { c.Flavor = "postgres" }, []string{"Flavor", `"mariadb"`, `"mysql"`}},
		{func(c *Config) { c.ServerID = 0 }, []string{"ServerID"}},
		{func(c *Config) { c.Site = 0 }, []string{"Site", "1..255"}},
		{func(c *Config) { c.Include = []string{"shop.*", "shop"} }, []string{"Include[1]", `"shop"`}},
		{func(c *Config) { c.Exclude = []string{"a.b.c"} }, []string{"Exclude[0]", `"a.b.c"`}},
		{func(c *Config) { c.MaxFragmentChanges = -1 }, []string{"MaxFragmentChanges"}},
		{func(c *Config) { c.ReconnectMin, c.ReconnectMax = time.Second, time.Millisecond }, []string{"ReconnectMax", "ReconnectMin"}},
	} {
		c := validConfig()
		tc.mut(&c)
		err := c.Validate()
		if err == nil {
			t.Errorf("%v: accepted", tc.want)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("error %q does not mention %s", err, w)
			}
		}
	}
}

func TestBackoff(t *testing.T) {
	lo, hi := 100*time.Millisecond, 2*time.Second
	for n := 1; n < 100; n++ {
		full := min(hi, lo<<min(n-1, 30))
		for range 20 {
			d := backoff(lo, hi, n)
			if d < full/2 || d > full {
				t.Fatalf("attempt %d: %s outside [%s, %s]", n, d, full/2, full)
			}
		}
	}
	if d := backoff(0, 0, 5); d != 0 {
		t.Fatalf("zero backoff = %s", d)
	}
}
