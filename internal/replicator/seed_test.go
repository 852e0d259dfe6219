package replicator

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSeedNeedsAdminWithSeveralPeers: with more than one peer the seed
// refuses to run without a way to check the source's tenant queues.
func TestSeedNeedsAdminWithSeveralPeers(t *testing.T) {
	base, err := os.ReadFile("../../configs/site-b.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(t.TempDir(), "c.yaml")
	three := strings.Replace(string(base), "    name: site-a\n", "    name: site-a\n  - id: 3\n    name: site-c\n", 1)
	if three == string(base) {
		t.Fatal("configs/site-b.yaml changed: its peers list was not found")
	}
	os.WriteFile(cfg, []byte(three), 0o600)
	env := func(string) string { return "" }
	for _, tt := range []struct {
		args []string
		want string
	}{
		{nil, "pass --from-admin http://HOST:PORT"},
		{[]string{"--from-admin", "127.0.0.1:9181"}, `--from-admin "127.0.0.1:9181" is not an http(s)://host:port URL`},
	} {
		var out, errb bytes.Buffer
		args := append([]string{"seed", "--config", cfg, "--from", "site-a", "--from-addr", "db:3306"}, tt.args...)
		if code := Main(context.Background(), args, env, &out, &errb); code != 1 || !strings.Contains(errb.String(), tt.want) {
			t.Errorf("%v: code %d, stderr %q; want %q", tt.args, code, errb.String(), tt.want)
		}
	}
}

// TestSeedFlags: a copy and a backup are told apart by their flags, and
// a flag of the one given with the other is refused, naming both.
func TestSeedFlags(t *testing.T) {
	env := func(string) string { return "" }
	for _, tt := range []struct {
		args []string
		want string
	}{
		{nil, "either --from-addr HOST:PORT"},
		{[]string{"--from-addr", "db:3306", "--backup-gtid", "0-1-5"}, "either --from-addr HOST:PORT"},
		{[]string{"--backup-gtid", "0-1-5", "--from-admin", "http://a:9181"}, "--from-user and --from-admin belong to a copy"},
		{[]string{"--backup-gtid", "0-1-5", "--from-user", "seed"}, "--from-user and --from-admin belong to a copy"},
		{[]string{"--from-addr", "db:3306", "--queues-empty-at-backup"}, "--queues-empty-at-backup and --backup-within-retention go with --backup-gtid"},
		{[]string{"--from-addr", "db:3306", "--backup-within-retention"}, "--queues-empty-at-backup and --backup-within-retention go with --backup-gtid"},
		{[]string{"--backup-gtid", "0-1"}, `--backup-gtid "0-1" is not a GTID position`},
	} {
		var out, errb bytes.Buffer
		args := append([]string{"seed", "--config", "../../configs/site-b.yaml", "--from", "site-a"}, tt.args...)
		if code := Main(context.Background(), args, env, &out, &errb); code == 0 || !strings.Contains(errb.String(), tt.want) {
			t.Errorf("%v: code %d, stderr %q; want %q", tt.args, code, errb.String(), tt.want)
		}
	}
}

// TestQueueCheck reads a replicator's admin API as the seed does: queues
// holding messages are named, the queued counter is summed, a replicator
// without tenants has none, and a missing token is named.
func TestQueueCheck(t *testing.T) {
	var tenants, metrics string
	var tenantsCode int
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tok" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		switch r.URL.Path {
		case "/v1/tenants":
			w.WriteHeader(tenantsCode)
			w.Write([]byte(tenants))
		case "/metrics":
			w.Write([]byte(metrics))
		default:
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	defer srv.Close()
	q := &queueCheck{base: srv.URL, token: "tok", client: srv.Client()}
	ctx := context.Background()

	tenantsCode = http.StatusOK
	tenants = `{"registry":{},"tenants":[{"id":"a","mode":"paused","queues":{"s3":{"depth":5,"dead":0}}},` +
		`{"id":"b","queues":{"s2":{"depth":0,"dead":0},"s3":{"depth":2,"dead":2}}},{"id":"c"}]}`
	metrics = "# TYPE tandem_tenant_parked_total counter\n" +
		`tandem_tenant_parked_total{cause="paused",origin="s3",tenant="a"} 5` + "\n" +
		`tandem_tenant_parked_total{cause="throttled",origin="s3",tenant="b"} 7` + "\n"
	st, err := q.read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"tenant a: 5 messages of s3 (0 dead-lettered)", "tenant b: 2 messages of s3 (2 dead-lettered)"}
	if strings.Join(st.busy, "|") != strings.Join(want, "|") || st.parked != 12 {
		t.Errorf("read = %+v; want busy %q, parked 12", st, want)
	}

	tenants = `{"tenants":[{"id":"a","queues":{}}]}`
	if st, err = q.read(ctx); err != nil || len(st.busy) != 0 || st.parked != 12 {
		t.Errorf("empty queues: %+v, %v", st, err)
	}

	tenantsCode, tenants = http.StatusServiceUnavailable, `{"error":"tenants are not enabled on this replicator"}`
	if st, err = q.read(ctx); err != nil || len(st.busy) != 0 || st.parked != 0 {
		t.Errorf("tenants off: %+v, %v", st, err)
	}

	q.token = "wrong"
	if _, err = q.read(ctx); err == nil || !strings.Contains(err.Error(), "TANDEM_SEED_ADMIN_TOKEN") {
		t.Errorf("wrong token: %v", err)
	}
}
