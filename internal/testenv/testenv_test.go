package testenv_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"

	"github.com/tandemdb/tandem/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func TestSharedMariaDB(t *testing.T) {
	t.Parallel()
	for _, site := range []int{1, 2} {
		m := testenv.SharedMariaDB(t, site)
		if again := testenv.SharedMariaDB(t, site); again != m {
			t.Fatalf("site %d: second SharedMariaDB returned another server", site)
		}
		var (
			format, image, meta, collation, tz string
			logBin                             int
			domain, serverID                   uint32
		)
		err := m.DB(t, "").QueryRow(`SELECT @@binlog_format, @@binlog_row_image, @@binlog_row_metadata,
			@@log_bin, @@gtid_domain_id, @@server_id, @@collation_server, @@time_zone`).
			Scan(&format, &image, &meta, &logBin, &domain, &serverID, &collation, &tz)
		if err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf("ROW FULL FULL 1 %d %d utf8mb4_bin +00:00", site, 100+site)
		got := fmt.Sprintf("%s %s %s %d %d %d %s %s", format, image, meta, logBin, domain, serverID, collation, tz)
		if got != want {
			t.Errorf("site %d: got %q, want %q", site, got, want)
		}
		if m.DomainID != uint32(site) || m.ServerID != uint32(100+site) {
			t.Errorf("site %d: DomainID %d ServerID %d", site, m.DomainID, m.ServerID)
		}
	}
}

func TestNewDatabaseOnSites(t *testing.T) {
	t.Parallel()
	a, b := testenv.SharedMariaDB(t, 1), testenv.SharedMariaDB(t, 2)
	name := testenv.NewDatabaseOn(t, "", a, b)
	for _, m := range []*testenv.MariaDB{a, b} {
		m.Exec(t, "CREATE TABLE `"+name+"`.t (id INT PRIMARY KEY)")
		var n int
		if err := m.DB(t, name).QueryRow("SELECT COUNT(*) FROM t").Scan(&n); err != nil {
			t.Fatalf("site %d: %v", m.DomainID, err)
		}
	}
	t.Run(strings.Repeat("very_long_subtest_name_", 8), func(t *testing.T) {
		n1, n2 := testenv.NewDatabase(t, a), testenv.NewDatabase(t, a)
		if len(n1) > 64 || n1 == n2 {
			t.Errorf("names %q and %q: want distinct, at most 64 bytes", n1, n2)
		}
	})
}

func TestMariaDBKillAndStart(t *testing.T) {
	t.Parallel()
	m := testenv.NewMariaDB(t, testenv.MariaDBOptions{Site: 3})
	db := testenv.NewDatabase(t, m)
	m.Exec(t, "CREATE TABLE `"+db+"`.t (id INT PRIMARY KEY, v VARCHAR(20))")
	m.Exec(t, "INSERT INTO `"+db+"`.t VALUES (?, ?)", 1, "before kill")
	port := m.Port

	m.Kill(t)
	if err := ping(m.DSN("")); err == nil {
		t.Fatal("a killed server still accepts connections")
	}
	m.Start(t)
	if m.Port != port {
		t.Fatalf("restarted on port %d, want %d", m.Port, port)
	}
	if got := value(t, m, db, 1); got != "before kill" {
		t.Fatalf("after kill: row 1 = %q", got)
	}

	m.Exec(t, "INSERT INTO `"+db+"`.t VALUES (?, ?)", 2, "before stop")
	m.Stop(t)
	m.Start(t)
	if got := value(t, m, db, 2); got != "before stop" {
		t.Fatalf("after stop: row 2 = %q", got)
	}
	var gtid string
	if err := m.DB(t, "").QueryRow("SELECT @@gtid_binlog_pos").Scan(&gtid); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(gtid, "3-103-") {
		t.Errorf("gtid_binlog_pos %q, want domain 3 and server 103", gtid)
	}
}

func TestMariaDBFakeTime(t *testing.T) {
	t.Parallel()
	m := testenv.NewMariaDB(t, testenv.MariaDBOptions{Site: 4, FakeTime: "+3600s"})
	pool := m.DB(t, "")
	skew := func() float64 {
		var server float64
		if err := pool.QueryRow("SELECT UNIX_TIMESTAMP(NOW(6))").Scan(&server); err != nil {
			t.Fatal(err)
		}
		return server - float64(time.Now().UnixMicro())/1e6
	}
	if s := skew(); math.Abs(s-3600) > 30 {
		t.Fatalf("server clock is %.1fs ahead, want about 3600s", s)
	}
	m.SetFakeTime(t, "-600s")
	testenv.WaitFor(t, 10*time.Second, "server clock 600s behind", func() bool {
		return math.Abs(skew()+600) < 30
	})
	// Writes still commit after the clock went back.
	db := testenv.NewDatabase(t, m)
	m.Exec(t, "CREATE TABLE `"+db+"`.t (id INT PRIMARY KEY, at DATETIME(6))")
	m.Exec(t, "INSERT INTO `"+db+"`.t VALUES (1, NOW(6))")
}

func TestRedisSharedAndRestart(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	sr := testenv.SharedRedis(t)
	prefix := testenv.KeyPrefix(t)
	if err := sr.Client(t).Set(ctx, prefix+"k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}

	r := testenv.NewRedis(t)
	c := r.Client(t)
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	addr := r.Addr
	r.Kill(t)
	if conn, err := net.Dial("tcp", addr); err == nil {
		conn.Close()
		t.Fatal("a killed Redis accepts connections")
	}
	r.Start(t)
	if r.Addr != addr {
		t.Fatalf("restarted on %s, want %s", r.Addr, addr)
	}
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("after restart: %v", err)
	}
	if err := c.Get(ctx, "k").Err(); !errors.Is(err, redis.Nil) {
		t.Fatalf("after restart: GET k = %v, want redis.Nil (no persistence)", err)
	}
}

func TestBrokerProduceConsumeRestart(t *testing.T) {
	t.Parallel()
	b := testenv.NewBroker(t)
	topic := testenv.Topic(t)
	testenv.CreateTopic(t, b, topic, 2)
	produceConsume(t, b, topic, 10)

	addr := b.Addr
	b.Kill(t)
	b.Start(t)
	if b.Addr != addr {
		t.Fatalf("restarted on %s, want %s", b.Addr, addr)
	}
	// The broker keeps its log in its data directory, like a real Kafka
	// broker: the topic and its records survive the SIGKILL. Rewriting
	// k0..k9 finds all ten keys, the old records included.
	produceConsume(t, b, topic, 10)
}

func TestSharedBroker(t *testing.T) {
	t.Parallel()
	b := testenv.SharedBroker(t)
	if again := testenv.SharedBroker(t); again != b {
		t.Fatal("second SharedBroker returned another broker")
	}
	topic := testenv.Topic(t)
	testenv.CreateTopic(t, b, topic, 1)
	produceConsume(t, b, topic, 5)
}

func TestBuildBinaryCaches(t *testing.T) {
	t.Parallel()
	p1 := testenv.BuildBinary(t, "./cmd/devbroker")
	p2 := testenv.BuildBinary(t, "./cmd/devbroker")
	if p1 != p2 {
		t.Fatalf("built twice: %s and %s", p1, p2)
	}
}

func TestRequired(t *testing.T) {
	t.Setenv("CI", "true")
	if !testenv.Required() {
		t.Error("CI=true: Required() = false")
	}
	t.Setenv("CI", "")
	if testenv.Required() {
		t.Error("CI empty: Required() = true")
	}
}

// produceConsume writes n keyed messages with acks=all and reads them back
// from every partition with partition readers.
func produceConsume(t *testing.T, b *testenv.Broker, topic string, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	w := &kafka.Writer{
		Addr:         kafka.TCP(b.Addr),
		Topic:        topic,
		Balancer:     &kafka.Hash{},
		RequiredAcks: kafka.RequireAll,
		BatchTimeout: time.Millisecond,
	}
	msgs := make([]kafka.Message, n)
	for i := range msgs {
		msgs[i] = kafka.Message{Key: fmt.Appendf(nil, "k%d", i), Value: fmt.Appendf(nil, "v%d", i)}
	}
	err := w.WriteMessages(ctx, msgs...)
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatalf("produce: %v", err)
	}

	conn, err := kafka.DialContext(ctx, "tcp", b.Addr)
	if err != nil {
		t.Fatal(err)
	}
	parts, err := conn.ReadPartitions(topic)
	conn.Close()
	if err != nil {
		t.Fatal(err)
	}
	got := make(map[string]string)
	for _, p := range parts {
		last, err := lastOffset(ctx, b.Addr, topic, p.ID)
		if err != nil {
			t.Fatal(err)
		}
		r := kafka.NewReader(kafka.ReaderConfig{
			Brokers:   []string{b.Addr},
			Topic:     topic,
			Partition: p.ID,
			MaxWait:   100 * time.Millisecond,
		})
		for off := int64(0); off < last; off++ {
			m, err := r.ReadMessage(ctx)
			if err != nil {
				r.Close()
				t.Fatalf("partition %d offset %d: %v", p.ID, off, err)
			}
			got[string(m.Key)] = string(m.Value)
		}
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if len(got) != n {
		t.Fatalf("consumed %d distinct messages, want %d: %v", len(got), n, got)
	}
	for i := range n {
		if k, v := fmt.Sprintf("k%d", i), fmt.Sprintf("v%d", i); got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
}

func lastOffset(ctx context.Context, addr, topic string, partition int) (int64, error) {
	conn, err := kafka.DialLeader(ctx, "tcp", addr, topic, partition)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	return conn.ReadLastOffset()
}

func value(t *testing.T, m *testenv.MariaDB, db string, id int) string {
	t.Helper()
	var v string
	if err := m.DB(t, db).QueryRow("SELECT v FROM t WHERE id = ?", id).Scan(&v); err != nil {
		t.Fatalf("row %d: %v", id, err)
	}
	return v
}

func ping(dsn string) error {
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return db.PingContext(ctx)
}
