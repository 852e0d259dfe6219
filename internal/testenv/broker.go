package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

// Broker is a cmd/devbroker child process: one node speaking the Kafka
// protocol on a loopback port, journaling to a data directory under its
// temporary root. Like a real broker, a killed or stopped one keeps every
// acknowledged topic and record: after Start, each partition has the same
// records at the same offsets.
//
// Use kafka-go partition readers (kafka.ReaderConfig with Partition and no
// GroupID), writers and admin calls against it; kafka-go's consumer groups
// do not work with it.
type Broker struct {
	Addr string // "127.0.0.1:port"

	shared    bool
	root      string
	logPath   string
	readyFile string
	bin       string
	mu        sync.Mutex // guards proc
	proc      *process

	secure *BrokerSecurity // nil: a durable PLAINTEXT broker
	dialer *kafka.Dialer   // how the readiness check connects
}

// BrokerSecurity makes NewSecureBroker's broker require TLS, SASL or both.
type BrokerSecurity struct {
	// TLS, when its Cert is set, serves TLS with Cert and Key; with
	// ClientCerts, client certificates signed by TLS.CA are required.
	TLS         TLSFiles
	ClientCerts bool
	// SASLMechanism (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512), when set,
	// requires SASL as SASLUser with SASLPassword.
	SASLMechanism, SASLUser, SASLPassword string
	// Dialer is a kafka-go dialer that passes these checks, for the
	// readiness check (and the test's own clients).
	Dialer *kafka.Dialer
}

// SharedBroker returns the broker shared by all tests of the test binary,
// starting it on first use. Tests must not stop or kill it; Topic keeps
// their topics apart.
func SharedBroker(t testing.TB) *Broker {
	t.Helper()
	skipShort(t, "the broker")
	b, err := shared.broker.get(func() (*Broker, error) {
		b, err := startBroker(true)
		if err != nil {
			return nil, err
		}
		shared.onStop(func(failed bool) error { return b.cleanup(failed, stderrf) })
		return b, nil
	})
	if err != nil {
		failStart(t, fmt.Errorf("shared broker: %w", err))
		return nil
	}
	return b
}

// NewBroker starts a broker for this test only, killed at the end of it.
func NewBroker(t testing.TB) *Broker {
	t.Helper()
	return newDedicatedBroker(t, nil)
}

// newDedicatedBroker starts a broker (with sec's security, when set) for
// this test only, killed at the end of it.
func newDedicatedBroker(t testing.TB, sec *BrokerSecurity) *Broker {
	t.Helper()
	skipShort(t, "the broker")
	b, err := startBrokerWith(false, sec)
	if err != nil {
		failStart(t, err)
		return nil
	}
	t.Cleanup(func() {
		if err := b.cleanup(t.Failed(), t.Logf); err != nil {
			t.Error(err)
		}
	})
	return b
}

// Stop shuts the broker down with SIGTERM and waits for it to exit.
func (b *Broker) Stop(t testing.TB) {
	t.Helper()
	b.mustBeDedicated(t, "Stop")
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.proc == nil {
		return
	}
	if err := b.proc.stop(); err != nil {
		t.Fatalf("testenv: broker %s: stop: %v", b.Addr, err)
	}
}

// Kill sends SIGKILL and waits until the process is gone.
func (b *Broker) Kill(t testing.TB) {
	t.Helper()
	b.mustBeDedicated(t, "Kill")
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.proc != nil {
		b.proc.kill()
	}
}

// Start starts a stopped or killed broker again on the same address and
// waits until a client can connect, which is once the broker has replayed
// its journal.
func (b *Broker) Start(t testing.TB) {
	t.Helper()
	b.mustBeDedicated(t, "Start")
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.proc != nil && !b.proc.exited() {
		t.Fatalf("testenv: broker %s: Start: already running", b.Addr)
	}
	if err := b.startLocked(b.Addr); err != nil {
		t.Fatal(err)
	}
}

func (b *Broker) mustBeDedicated(t testing.TB, op string) {
	t.Helper()
	if b.shared {
		t.Fatalf("testenv: %s on the shared broker; use NewBroker for tests that stop or crash servers", op)
	}
}

// NewSecureBroker starts a broker requiring sec's TLS and SASL for this
// test only. It keeps its log in memory (devbroker secures only in-memory
// brokers), so it must not be stopped and started again.
func NewSecureBroker(t testing.TB, sec BrokerSecurity) *Broker {
	t.Helper()
	if sec.Dialer == nil {
		t.Fatal("testenv: NewSecureBroker needs sec.Dialer for its readiness check")
	}
	return newDedicatedBroker(t, &sec)
}

func startBroker(shared bool) (*Broker, error) { return startBrokerWith(shared, nil) }

func startBrokerWith(shared bool, sec *BrokerSecurity) (*Broker, error) {
	bin, err := builds.build("./cmd/devbroker")
	if err != nil {
		return nil, err
	}
	root, err := makeRoot("tandem-broker-")
	if err != nil {
		return nil, fmt.Errorf("testenv: %w", err)
	}
	b := &Broker{
		shared:    shared,
		root:      root,
		logPath:   filepath.Join(root, "devbroker.log"),
		readyFile: filepath.Join(root, "ready"),
		bin:       bin,
		secure:    sec,
		dialer:    &kafka.Dialer{Timeout: 2 * time.Second},
	}
	if sec != nil {
		b.dialer = sec.Dialer
	}
	// Port 0: the broker binds a free port itself and reports it in the
	// ready file, so the first start cannot race for the port.
	b.mu.Lock()
	err = b.startLocked("127.0.0.1:0")
	b.mu.Unlock()
	if err != nil {
		_ = b.cleanup(true, nil) // err names the kept log
		return nil, err
	}
	return b, nil
}

// EnvBrokerFsync = "0" starts the broker with -fsync=false: its log is
// written to the OS before a produce is acknowledged but not fsynced, as a
// Kafka broker does by default. Benchmarks use it to measure Tandem rather
// than this broker's disk flushes; a killed broker still keeps everything.
const EnvBrokerFsync = "TANDEM_BROKER_FSYNC"

func (b *Broker) startLocked(listen string) error {
	// A file left by a killed broker must not pass for readiness.
	if err := os.Remove(b.readyFile); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("testenv: broker: %w", err)
	}
	args := []string{"-listen", listen, "-ready-file", b.readyFile}
	if b.secure == nil {
		args = append(args, "-data-dir", filepath.Join(b.root, "data"))
		if os.Getenv(EnvBrokerFsync) == "0" {
			args = append(args, "-fsync=false")
		}
	} else {
		var err error
		if args, err = b.securityArgs(args); err != nil {
			return err
		}
	}
	proc, err := startProcess(b.bin, args, nil, b.root, b.logPath)
	if err != nil {
		return fmt.Errorf("testenv: broker: %w", err)
	}
	b.proc = proc
	var lastErr error
	err = poll(startTimeout, func() (bool, error) {
		if proc.exited() {
			return false, proc.exitError()
		}
		data, err := os.ReadFile(b.readyFile)
		if err != nil {
			lastErr = err
			return false, nil
		}
		addr := strings.TrimSpace(string(data))
		if lastErr = dialBroker(b.dialer, addr); lastErr != nil {
			return false, nil
		}
		b.Addr = addr
		return true, nil
	})
	if err == nil {
		return nil
	}
	proc.kill()
	if errors.Is(err, errPollTimeout) {
		err = fmt.Errorf("not ready after %v (last error: %v)", startTimeout, lastErr)
	}
	return fmt.Errorf("testenv: broker on %s: %w; log %s:\n%s", listen, err, b.logPath, tailFile(b.logPath, 30))
}

// dialBroker connects with kafka-go and asks for metadata.
func dialBroker(d *kafka.Dialer, addr string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(2 * time.Second)); err != nil {
		return err
	}
	_, err = conn.Brokers()
	return err
}

func (b *Broker) securityArgs(args []string) ([]string, error) {
	sec := b.secure
	if sec.TLS.Cert != "" {
		args = append(args, "-tls-cert", sec.TLS.Cert, "-tls-key", sec.TLS.Key)
		if sec.ClientCerts {
			args = append(args, "-tls-client-ca", sec.TLS.CA)
		}
	}
	if sec.SASLMechanism != "" {
		pw := filepath.Join(b.root, "sasl-password")
		if err := os.WriteFile(pw, []byte(sec.SASLPassword), 0o600); err != nil {
			return nil, fmt.Errorf("testenv: broker: %w", err)
		}
		args = append(args, "-sasl-mechanism", sec.SASLMechanism, "-sasl-user", sec.SASLUser, "-sasl-password-file", pw)
	}
	return args, nil
}

func (b *Broker) cleanup(keepLogs bool, logf func(string, ...any)) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.proc != nil {
		b.proc.kill()
	}
	if keepLogs {
		if logf != nil {
			logf("testenv: broker (%s) log kept at %s", b.Addr, b.logPath)
		}
		return nil
	}
	return os.RemoveAll(b.root)
}

// Topic returns a topic name unique to this test.
func Topic(t testing.TB) string {
	return "tandem-test-" + uniqueName(t, "", 200)
}

// CreateTopic creates topic with the given partitions (replication factor
// 1), waits until its metadata is visible and fails the test on error. An
// existing topic is left as it is.
//
// kafka-go Transports answer metadata requests from a cache refreshed every
// MetadataTTL (6 s by default), so a Writer whose Transport has already seen
// the broker reports UnknownTopicOrPartition for a topic created elsewhere
// until the next refresh. CreateTopic goes through kafka-go's
// DefaultTransport, which refreshes its cache for the new topic, so Writers
// with a nil Transport see the topic at once. Code with its own Transport
// should create topics through it, as production code against a real Kafka
// must too.
//
// After a broker restart, pooled connections of a Transport are dead and the
// first request on each fails (io.ErrUnexpectedEOF); CreateTopic retries,
// and so must clients.
func CreateTopic(t testing.TB, b *Broker, topic string, partitions int) {
	t.Helper()
	var lastErr error
	err := poll(10*time.Second, func() (bool, error) {
		lastErr = createTopic(b.Addr, topic, partitions)
		return lastErr == nil, nil
	})
	if err != nil {
		t.Fatalf("testenv: broker %s: create topic %s: %v", b.Addr, topic, lastErr)
	}
	WaitFor(t, 10*time.Second, "topic "+topic+" in the metadata", func() bool {
		parts, err := readPartitions(b.Addr, topic)
		return err == nil && len(parts) == partitions
	})
}

func createTopic(addr, topic string, partitions int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	client := &kafka.Client{Addr: kafka.TCP(addr)} // DefaultTransport; routes to the controller
	resp, err := client.CreateTopics(ctx, &kafka.CreateTopicsRequest{
		Topics: []kafka.TopicConfig{{Topic: topic, NumPartitions: partitions, ReplicationFactor: 1}},
	})
	if err != nil {
		return err
	}
	if err := resp.Errors[topic]; err != nil && !errors.Is(err, kafka.TopicAlreadyExists) {
		return err
	}
	return nil
}

func readPartitions(addr, topic string) ([]kafka.Partition, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	conn, err := kafka.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return conn.ReadPartitions(topic)
}
