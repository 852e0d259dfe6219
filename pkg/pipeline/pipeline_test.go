package pipeline

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap/zaptest"

	"github.com/tandemdb/tandem/internal/testenv"
	"github.com/tandemdb/tandem/pkg/checkpoint"
	"github.com/tandemdb/tandem/pkg/event"
	"github.com/tandemdb/tandem/pkg/hlc"
	"github.com/tandemdb/tandem/pkg/sink"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func TestPartitionForMatchesKafkaGoHash(t *testing.T) {
	h := &kafka.Hash{}
	parts := []int{0, 1, 2, 3, 4, 5, 6, 7}
	for _, key := range []string{"", "acme", "tenant-42", "日本", "x"} {
		want := h.Balance(kafka.Message{Key: []byte(key)}, parts...)
		if got := PartitionFor([]byte(key), len(parts)); got != want {
			t.Errorf("PartitionFor(%q) = %d, kafka-go's Hash says %d", key, got, want)
		}
	}
}

func TestGatePauseResume(t *testing.T) {
	var g gate
	ctx := context.Background()
	g.wait(ctx) // open: returns at once
	g.set(true)
	released := make(chan struct{})
	go func() { g.wait(ctx); close(released) }()
	select {
	case <-released:
		t.Fatal("wait returned while the gate was shut")
	case <-time.After(50 * time.Millisecond): // a bounded check that nothing happens
	}
	g.set(false)
	<-released
	g.set(true)
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	g.wait(cctx) // a cancelled context releases a shut gate
}

// scriptedReader emits a fixed history, then blocks until cancelled. It
// records where each run started.
type scriptedReader struct {
	mu     sync.Mutex
	froms  []event.Position
	txns   []event.Txn
	failAt int // emit returns this error after failAt txns on the first run (0: never)
}

func (r *scriptedReader) CurrentPosition(context.Context) (event.Position, error) {
	return event.Position{GTIDSet: "1-101-0"}, nil
}

func (r *scriptedReader) Run(ctx context.Context, from event.Position, emit func(context.Context, event.Txn) error) error {
	r.mu.Lock()
	r.froms = append(r.froms, from)
	r.mu.Unlock()
	started := false
	for _, t := range r.txns {
		if !started {
			// Resume after from: positions are "1-101-N" with N increasing.
			if from.GTIDSet != "1-101-0" && t.Position.GTIDSet <= from.GTIDSet && len(t.Position.GTIDSet) <= len(from.GTIDSet) {
				continue
			}
			started = true
		}
		if err := emit(ctx, t); err != nil {
			return err
		}
	}
	<-ctx.Done()
	return nil
}

func txn(seq int, frag uint32, last bool, rows int) event.Txn {
	t := event.Txn{Origin: 1, GTID: fmt.Sprintf("1-101-%d", seq), Fragment: frag, Last: last, Stamp: hlc.New(1, 0, 1)}
	if last {
		t.Position = event.Position{GTIDSet: fmt.Sprintf("1-101-%d", seq)}
	}
	for i := range rows {
		t.Changes = append(t.Changes, event.Change{Schema: "s", Table: "t", Op: event.OpInsert, Columns: []string{"id"}, PK: []int{0},
			Row: []event.Value{{Kind: event.KindInt, Int: int64(seq*1000 + i)}}, Version: hlc.New(1, 0, 1)})
	}
	return t
}

// newTopic creates a topic of the given partitions on the shared test
// broker (skipping in -short mode) and returns its configuration, name and
// partition count.
func newTopic(t *testing.T, partitions int) (KafkaConfig, string, int) {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test")
	}
	broker := testenv.SharedBroker(t)
	topic := testenv.Topic(t)
	kc := KafkaConfig{Brokers: []string{broker.Addr}, Partitions: partitions}
	parts, err := EnsureTopic(context.Background(), kc, topic)
	if err != nil {
		t.Fatal(err)
	}
	return kc, topic, parts
}

// TestSourcePublishesAndCheckpoints: every non-empty transaction becomes one
// message; the checkpoint lands on the last complete transaction, never on
// a fragment; empty transactions only move the checkpoint.
func TestSourcePublishesAndCheckpoints(t *testing.T) {
	kc, topic, parts := newTopic(t, 1)
	ctx := context.Background()
	r := &scriptedReader{txns: []event.Txn{
		txn(1, 0, true, 3),
		txn(2, 0, false, 2), txn(2, 1, true, 2), // a fragmented transaction
		txn(3, 0, true, 0), // empty (DDL, filtered): position only
		txn(4, 0, true, 1),
	}}
	store, err := checkpoint.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	prod := NewProducer(kc, topic, parts)
	defer prod.Close()
	src := NewSource(SourceConfig{Topic: topic, CheckpointInterval: 10 * time.Millisecond}, r, prod, store, zaptest.NewLogger(t))
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- src.Run(runCtx) }()
	testenv.WaitFor(t, 30*time.Second, "checkpoint at the last transaction", func() bool {
		p, ok, _ := store.Position()
		return ok && p.GTIDSet == "1-101-4"
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := src.Stats().MessagesPublished.Load(); got != 4 {
		t.Fatalf("published %d messages, want 4 (3 transactions, one in 2 fragments; the empty one publishes nothing)", got)
	}
	// The messages are in the topic, in order, decodable.
	kr := kafka.NewReader(kafka.ReaderConfig{Brokers: kc.Brokers, Topic: topic, Partition: 0, MaxWait: 100 * time.Millisecond})
	defer kr.Close()
	var got []string
	for range 4 {
		m, err := kr.FetchMessage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		tx, err := event.Decode(m.Value)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%s/%d", tx.GTID, tx.Fragment))
	}
	want := []string{"1-101-1/0", "1-101-2/0", "1-101-2/1", "1-101-4/0"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("topic holds %v, want %v", got, want)
	}

	// A restart resumes from the checkpoint.
	src2 := NewSource(SourceConfig{Topic: topic}, r, prod, store, zaptest.NewLogger(t))
	runCtx, cancel = context.WithCancel(ctx)
	go func() { done <- src2.Run(runCtx) }()
	testenv.WaitFor(t, 10*time.Second, "second run started", func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return len(r.froms) == 2
	})
	cancel()
	<-done
	if r.froms[1].GTIDSet != "1-101-4" {
		t.Fatalf("second run started from %v, want the checkpoint 1-101-4", r.froms[1])
	}
}

// TestSourceLanesKeepPartitionOrder: with one produce lane per partition
// (acknowledged out of order across partitions), every partition holds its
// tenants' messages in binlog order, the checkpoint reaches the last
// transaction only once all were acknowledged, and the stages are
// reported once per published transaction.
func TestSourceLanesKeepPartitionOrder(t *testing.T) {
	kc, topic, parts := newTopic(t, 4)
	ctx := context.Background()
	tenants := []string{"a", "b", "c", "d", "e"}
	const n = 60
	r := &scriptedReader{}
	want := make(map[int][]string) // partition → GTIDs in order
	for i := 1; i <= n; i++ {
		tx := txn(i, 0, true, 1+i%3)
		tx.Tenant = tenants[i%len(tenants)]
		r.txns = append(r.txns, tx)
		p := PartitionFor([]byte(tx.Tenant), parts)
		want[p] = append(want[p], tx.GTID)
	}
	store, err := checkpoint.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	prod := NewProducer(kc, topic, parts)
	defer prod.Close()
	var mu sync.Mutex
	stages := map[string]int{}
	src := NewSource(SourceConfig{Topic: topic, CheckpointInterval: 10 * time.Millisecond, MaxBatchMessages: 2,
		Stage: func(stage string, _ int, _ time.Duration) { mu.Lock(); stages[stage]++; mu.Unlock() },
	}, r, prod, store, zaptest.NewLogger(t))
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- src.Run(runCtx) }()
	last := fmt.Sprintf("1-101-%d", n)
	testenv.WaitFor(t, 30*time.Second, "checkpoint at the last transaction", func() bool {
		p, ok, _ := store.Position()
		return ok && p.GTIDSet == last
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := src.Stats().MessagesPublished.Load(); got != n {
		t.Fatalf("published %d messages, want %d", got, n)
	}
	mu.Lock()
	if stages["read"] != n || stages["acked"] != n {
		t.Errorf("stages reported %v, want read and acked %d times each", stages, n)
	}
	mu.Unlock()
	for p := range parts {
		kr := kafka.NewReader(kafka.ReaderConfig{Brokers: kc.Brokers, Topic: topic, Partition: p, MaxWait: 100 * time.Millisecond})
		var got []string
		for range want[p] {
			m, err := kr.FetchMessage(ctx)
			if err != nil {
				t.Fatal(err)
			}
			tx, err := event.Decode(m.Value)
			if err != nil {
				t.Fatal(err)
			}
			if PartitionFor(m.Key, parts) != p {
				t.Errorf("partition %d holds a message keyed %q", p, m.Key)
			}
			got = append(got, tx.GTID)
		}
		kr.Close()
		if fmt.Sprint(got) != fmt.Sprint(want[p]) {
			t.Errorf("partition %d holds %v, want %v", p, got, want[p])
		}
	}
}

// TestEnsureTopicConcurrent: replicators starting together create the same
// topic at once (each as its own or as a peer's); every one of them must
// come back with the topic's partitions, never 0 (an applier with no
// partitions never gets ready, a producer with none divides by zero).
func TestEnsureTopicConcurrent(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	broker := testenv.SharedBroker(t)
	kc := KafkaConfig{Brokers: []string{broker.Addr}, Partitions: 4, ReplicationFactor: 1}
	for round := range 5 {
		topic := fmt.Sprintf("tandem-test-ensure-%d-%d", time.Now().UnixNano(), round)
		var wg sync.WaitGroup
		got := make([]int, 8)
		errs := make([]error, 8)
		for i := range got {
			wg.Add(1)
			go func() {
				defer wg.Done()
				got[i], errs[i] = EnsureTopic(context.Background(), kc, topic)
			}()
		}
		wg.Wait()
		for i := range got {
			if errs[i] != nil || got[i] != 4 {
				t.Fatalf("round %d, caller %d: EnsureTopic = %d, %v; want 4 partitions", round, i, got[i], errs[i])
			}
		}
	}
}

// batchSink records the messages of every batch it applies.
type batchSink struct {
	mu      sync.Mutex
	batches [][]int64 // offsets of each batch's transactions
}

func (s *batchSink) Apply(_ context.Context, b sink.Batch) (sink.Result, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var offs []int64
	for off := b.FirstOffset; off < b.NextOffset; off++ {
		offs = append(offs, off)
	}
	s.batches = append(s.batches, offs)
	return sink.Result{Applied: len(b.Txns)}, nil
}

func (s *batchSink) Offsets(context.Context, string) (map[int]int64, error) {
	return map[int]int64{0: 0}, nil
}

func (s *batchSink) count() (batches, msgs int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, b := range s.batches {
		msgs += len(b)
	}
	return len(s.batches), msgs
}

// TestApplierBatchBytes: a round of a partition stops at MaxBatchBytes of
// messages, so a later message waits behind about that much, whatever the
// row and transaction bounds allow.
func TestApplierBatchBytes(t *testing.T) {
	kc, topic, _ := newTopic(t, 1)
	ctx := context.Background()
	// 20 messages of one 100 kB row each, all in Kafka before the
	// applier starts, so each round could take them all but for the
	// byte bound.
	prod := NewProducer(kc, topic, 1)
	defer prod.Close()
	var msgs []Message
	for i := range 20 {
		tx := txn(i+1, 0, true, 1)
		tx.Changes[0].Columns = append(tx.Changes[0].Columns, "pad")
		tx.Changes[0].Row = append(tx.Changes[0].Row, event.Value{Kind: event.KindString, Bytes: make([]byte, 100_000)})
		v, err := event.Encode(nil, &tx)
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, Message{Key: []byte("k"), Value: v})
	}
	if err := prod.ProducePartition(ctx, 0, msgs); err != nil {
		t.Fatal(err)
	}
	s := &batchSink{}
	a := NewApplier(ApplierConfig{Kafka: kc, Topic: topic, Origin: 1, MaxBatchBytes: 250_000}, s, nil, zaptest.NewLogger(t))
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- a.Run(runCtx) }()
	testenv.WaitFor(t, 30*time.Second, "all 20 messages applied", func() bool {
		_, n := s.count()
		return n == 20
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, b := range s.batches {
		// The round stops once it holds 250 kB: at most 3 messages.
		if len(b) > 3 {
			t.Errorf("a batch of %d messages of 100 kB (offsets %v); want at most 3 under MaxBatchBytes 250 kB", len(b), b)
		}
	}
}

func TestNewSASL(t *testing.T) {
	for _, m := range []string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"} {
		mech, err := NewSASL(m, "u", "p")
		if err != nil || mech.Name() != m {
			t.Errorf("NewSASL(%s) = %v, %v", m, mech, err)
		}
	}
	if _, err := NewSASL("GSSAPI", "u", "p"); err == nil || !strings.Contains(err.Error(), "allowed PLAIN, SCRAM-SHA-256, SCRAM-SHA-512") {
		t.Errorf("NewSASL(GSSAPI) error %v", err)
	}
}
