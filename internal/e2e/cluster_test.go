package e2e

import (
	"bytes"
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/tandemdb/tandem/internal/compare"
	"github.com/tandemdb/tandem/internal/testenv"
	"github.com/tandemdb/tandem/internal/workload"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// cluster is N sites, each a MariaDB server and (when started) a replicator
// process built from ./cmd/replicator, sharing one broker.
type cluster struct {
	t      testing.TB
	db     string // the replicated database, same name on every site
	meta   string // Tandem's meta schema, per test so tests do not share offsets
	bin    string
	broker *testenv.Broker
	prefix string // topic prefix, per test
	sites  []*site
	// peers[i] lists the sites whose topics site i applies; nil = all others.
	peers [][]int
	pprof bool // serve /debug/pprof/ on the replicators' admin servers
	// partitions of each site's topic; 0 means 4.
	partitions int
	// kafka is YAML added inside every site's kafka section (indented by
	// two spaces), e.g. tls and sasl.
	kafka string
}

type site struct {
	id    uint8
	name  string
	srv   *testenv.MariaDB
	dir   string
	cfg   string
	admin string
	env   []string // extra environment for the replicator process
	extra string   // extra YAML for this site's config

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	runs int
}

const adminToken = "e2e-admin-token-0123456789abcdef"

var serverIDs struct {
	sync.Mutex
	next uint32
}

func nextServerID() uint32 {
	serverIDs.Lock()
	defer serverIDs.Unlock()
	serverIDs.next++
	return 5000 + serverIDs.next
}

func newCluster(t testing.TB, broker *testenv.Broker, srvs ...*testenv.MariaDB) *cluster {
	t.Helper()
	c := &cluster{
		t:      t,
		bin:    testenv.BuildBinary(t, "./cmd/replicator"),
		broker: broker,
		prefix: testenv.Topic(t) + ".",
	}
	c.db = testenv.NewDatabaseOn(t, "e2e", srvs...)
	c.meta = c.db + "_m"
	for i, srv := range srvs {
		s := &site{id: uint8(i + 1), name: fmt.Sprintf("s%d", i+1), srv: srv, dir: t.TempDir()}
		s.admin = freeAddr(t)
		c.sites = append(c.sites, s)
	}
	c.peers = make([][]int, len(srvs))
	t.Cleanup(func() {
		for i := range c.sites {
			c.stop(i)
		}
		if t.Failed() {
			for _, s := range c.sites {
				t.Logf("replicator %s log: %s", s.name, filepath.Join(s.dir, "replicator.log"))
			}
		}
	})
	return c
}

func freeAddr(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// createTables creates the workload's tables at every site.
func (c *cluster) createTables() {
	for _, s := range c.sites {
		if err := workload.Create(context.Background(), s.srv.DB(c.t, ""), c.db); err != nil {
			c.t.Fatal(err)
		}
	}
}

func (c *cluster) tables() []string {
	out := make([]string, len(workload.Tables))
	for i, tb := range workload.Tables {
		out[i] = c.db + "." + tb
	}
	return out
}

// writeConfigs writes each site's YAML config.
func (c *cluster) writeConfigs(extra string) {
	for i, s := range c.sites {
		var peers strings.Builder
		ps := c.peers[i]
		if ps == nil {
			for j := range c.sites {
				if j != i {
					ps = append(ps, j)
				}
			}
		}
		for _, j := range ps {
			fmt.Fprintf(&peers, "  - {id: %d, name: %s}\n", c.sites[j].id, c.sites[j].name)
		}
		peerBlock := "peers: []\n"
		if peers.Len() > 0 {
			peerBlock = "peers:\n" + peers.String()
		}
		cfg := fmt.Sprintf(`site: {id: %d, name: %s}
database: {host: 127.0.0.1, port: %d, user: root}
reader:
  server_id: %d
  include: ["%s.*", "%s.*"]
kafka:
  brokers: ["%s"]
  topic_prefix: "%s"
  partitions: %d
  replication_factor: 1
%s%sschema:
  meta_schema: %s
  tables: ["%s.*"]
state_dir: %s
admin: {listen: "%s", pprof: %t}
log: {level: info, format: json}
%s`, s.id, s.name, s.srv.Port, nextServerID(), c.db, c.meta, c.broker.Addr, c.prefix, cmp.Or(c.partitions, 4), c.kafka, peerBlock,
			c.meta, c.db, filepath.Join(s.dir, "state"), s.admin, c.pprof, extra+s.extra)
		s.cfg = filepath.Join(s.dir, "replicator.yaml")
		if err := os.WriteFile(s.cfg, []byte(cfg), 0o600); err != nil {
			c.t.Fatal(err)
		}
	}
}

// replicatorCmd runs a replicator subcommand to completion.
func (c *cluster) replicatorCmd(i int, args ...string) (string, error) {
	return c.replicatorCmdWith(c.sites[i].cfg, c.sites[i].env, args...)
}

// replicatorCmdWith runs a replicator subcommand to completion with config
// file cfg and env added to the environment.
func (c *cluster) replicatorCmdWith(cfg string, env []string, args ...string) (string, error) {
	cmd := exec.Command(c.bin, append(args, "--config", cfg)...)
	cmd.Env = append(append(os.Environ(), "TANDEM_ADMIN_TOKEN="+adminToken), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// prepare runs `replicator schema prepare` at every site.
func (c *cluster) prepare() {
	for i := range c.sites {
		if out, err := c.replicatorCmd(i, "schema", "prepare"); err != nil {
			c.t.Fatalf("schema prepare at %s: %v\n%s", c.sites[i].name, err, out)
		}
	}
}

// start launches site i's replicator and waits until it is ready.
func (c *cluster) start(i int) {
	c.t.Helper()
	c.launch(i)
	c.waitReady(i)
}

// launch starts site i's replicator process without waiting for it.
func (c *cluster) launch(i int) {
	c.t.Helper()
	s := c.sites[i]
	s.mu.Lock()
	if s.cmd != nil {
		s.mu.Unlock()
		c.t.Fatalf("replicator %s already running", s.name)
	}
	logf, err := os.OpenFile(filepath.Join(s.dir, "replicator.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		s.mu.Unlock()
		c.t.Fatal(err)
	}
	s.runs++
	fmt.Fprintf(logf, "=== start #%d at %s\n", s.runs, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(c.bin, "run", "--config", s.cfg)
	cmd.Env = append(append(os.Environ(), "TANDEM_ADMIN_TOKEN="+adminToken), s.env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		s.mu.Unlock()
		logf.Close()
		c.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		logf.Close()
		close(done)
	}()
	s.cmd, s.done = cmd, done
	s.mu.Unlock()
}

func (c *cluster) waitReady(i int) {
	c.t.Helper()
	s := c.sites[i]
	const timeout = 60 * time.Second
	deadline := time.Now().Add(timeout)
	why := "no answer from /readyz"
	for {
		select {
		case <-s.done:
			log, _ := os.ReadFile(filepath.Join(s.dir, "replicator.log"))
			c.t.Fatalf("replicator %s exited during start:\n%s", s.name, tail(string(log), 4000))
		default:
		}
		if resp, err := http.Get("http://" + s.admin + "/readyz"); err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			why = fmt.Sprintf("/readyz: %d %s", resp.StatusCode, bytes.TrimSpace(body))
		}
		if time.Now().After(deadline) {
			// The log goes with the test's temporary directory: show
			// it here.
			log, _ := os.ReadFile(filepath.Join(s.dir, "replicator.log"))
			c.t.Fatalf("replicator %s not ready after %s (%s); log tail:\n%s", s.name, timeout, why, tail(string(log), 6000))
		}
		time.Sleep(50 * time.Millisecond) // polling interval of a condition wait with a deadline
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// kill SIGKILLs site i's replicator and waits for it to be gone.
func (c *cluster) kill(i int) { c.signal(i, syscall.SIGKILL) }

// stop asks site i's replicator to shut down (SIGTERM) and waits.
func (c *cluster) stop(i int) { c.signal(i, syscall.SIGTERM) }

func (c *cluster) signal(i int, sig syscall.Signal) {
	s := c.sites[i]
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		<-done
	}
}

// running reports whether site i's replicator process is alive.
func (c *cluster) running(i int) bool {
	s := c.sites[i]
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done == nil {
		return false
	}
	select {
	case <-s.done:
		return false
	default:
		return true
	}
}

// waitConverged waits until sites a and b hold identical rows in every
// workload table, then returns the comparison.
func (c *cluster) waitConverged(a, b int, timeout time.Duration) compare.Result {
	c.t.Helper()
	da, db := c.sites[a].srv.DB(c.t, ""), c.sites[b].srv.DB(c.t, "")
	var last compare.Result
	var lastErr error
	deadline := time.Now().Add(timeout)
	for {
		last, lastErr = compare.Tables(context.Background(), da, db, c.tables())
		if lastErr == nil && last.Equal() {
			return last
		}
		if time.Now().After(deadline) {
			break
		}
		for i := range c.sites {
			s := c.sites[i]
			s.mu.Lock()
			started := s.cmd != nil
			s.mu.Unlock()
			if started && !c.running(i) {
				log, _ := os.ReadFile(filepath.Join(s.dir, "replicator.log"))
				c.t.Fatalf("replicator %s died:\n%s", s.name, tail(string(log), 4000))
			}
		}
		time.Sleep(200 * time.Millisecond) // polling interval of a condition wait with a deadline
	}
	if lastErr != nil {
		c.t.Fatalf("sites %s and %s: compare failed: %v", c.sites[a].name, c.sites[b].name, lastErr)
	}
	var sb strings.Builder
	for _, d := range last.Diffs {
		sb.WriteString(d.String())
		sb.WriteByte('\n')
	}
	c.t.Fatalf("sites %s and %s did not converge within %s: %d+%d differing rows:\n%s",
		c.sites[a].name, c.sites[b].name, timeout, len(last.Diffs), last.More, sb.String())
	return last
}

// count returns SELECT COUNT(*) of a meta or data table at site i.
func (c *cluster) count(i int, table string) int {
	var n int
	if err := c.sites[i].srv.DB(c.t, "").QueryRow("SELECT COUNT(*) FROM " + table).Scan(&n); err != nil {
		c.t.Fatal(err)
	}
	return n
}

func (c *cluster) dbAt(i int) *sql.DB { return c.sites[i].srv.DB(c.t, "") }

func execOut(ctx context.Context, bin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), "TANDEM_ADMIN_TOKEN="+adminToken)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// admin calls site i's authenticated admin API and fails the test unless
// it answers 200.
func (c *cluster) admin(i int, method, path string) string {
	c.t.Helper()
	code, body := c.call(i, method, path, nil)
	if code != http.StatusOK {
		c.t.Fatalf("admin %s %s at %s: status %d: %s", method, path, c.sites[i].name, code, body)
	}
	return body
}

// call sends an authenticated admin request with an optional JSON body and
// returns the status code and body.
func (c *cluster) call(i int, method, path string, body any) (int, string) {
	c.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, "http://"+c.sites[i].admin+path, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatalf("admin %s %s at %s: %v", method, path, c.sites[i].name, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// metric returns the sum of a Prometheus counter/gauge's samples at site i
// whose label set contains match ("" matches all).
func (c *cluster) metric(i int, name, match string) float64 {
	c.t.Helper()
	var sum float64
	for _, line := range strings.Split(c.admin(i, "GET", "/metrics"), "\n") {
		if !strings.HasPrefix(line, name) || (len(line) > len(name) && line[len(name)] != '{' && line[len(name)] != ' ') {
			continue
		}
		if match != "" && !strings.Contains(line, match) {
			continue
		}
		f := strings.Fields(line)
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			sum += v
		}
	}
	return sum
}

// produceRaw writes one record to topic/partition with a client of its own:
// kafka-go's shared default transport caches topic metadata for seconds and
// would not see a topic created moments ago.
func produceRaw(t testing.TB, brokerAddr, topic string, partition int, key, value []byte) {
	t.Helper()
	tr := &kafka.Transport{MetadataTTL: time.Second}
	defer tr.CloseIdleConnections()
	cl := &kafka.Client{Addr: kafka.TCP(brokerAddr), Transport: tr, Timeout: 10 * time.Second}
	req := &kafka.ProduceRequest{Topic: topic, Partition: partition, RequiredAcks: kafka.RequireAll,
		Records: kafka.NewRecordReader(kafka.Record{Key: kafka.NewBytes(key), Value: kafka.NewBytes(value)})}
	var err error
	testenv.WaitFor(t, 30*time.Second, "produce to "+topic, func() bool {
		var resp *kafka.ProduceResponse
		resp, err = cl.Produce(context.Background(), req)
		if err == nil {
			err = resp.Error
		}
		return err == nil
	})
}
